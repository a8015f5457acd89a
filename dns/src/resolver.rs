//! The resolver: queries in, replies and forwards out, time as a parameter.
//!
//! One [`Resolver`] serves every sandbox. The daemon reads a query from a
//! sandbox's 127.0.0.11 socket and calls [`Resolver::handle_query`]; the
//! returned [`Outcome`] says what to send where. Forwarded queries come
//! back through [`Resolver::handle_upstream`] (a reply),
//! [`Resolver::handle_upstream_error`] (the daemon could not dial or send)
//! or [`Resolver::handle_timeout`] (the clock passed
//! [`Resolver::poll_timeout`]).
//!
//! # Forwarding (docker-reference §6.4)
//!
//! Up to three upstreams are tried in order, each over the client's own
//! transport and with a 4 s deadline. NOERROR and authoritative NXDOMAIN
//! are relayed at once; any other reply is kept as "the last reply" and
//! the next upstream is tried. A timeout clears the last reply. When the
//! list is exhausted the last reply is relayed, or nothing at all.
//!
//! # Transaction ids
//!
//! Each attempt goes out under a fresh random transaction id (drawn from
//! the resolver's RNG); every other byte of the client's query, its EDNS
//! OPT included, is forwarded unchanged. A reply is accepted only if it
//! carries that id, and is relayed with the client's own id put back, the
//! rest of its bytes unchanged. The random id makes a blind spoofed reply
//! unlikely to be accepted, and lets the daemon share sockets if it wants;
//! the client cannot tell the difference.
//!
//! # Sockets, as the daemon should hold them
//!
//! Docker dials a fresh connection per attempt. The daemon does the same:
//! for each [`Forward`] it opens a socket in the namespace
//! [`Upstream::dial_from`] names, sends [`Forward::bytes`] (over TCP with
//! the two-byte length prefix; all bytes here are bare DNS messages), and
//! passes whatever comes back to `handle_upstream` with the
//! [`ForwardId`]. It closes the socket when an [`Outcome::close`] names
//! that id.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{MessageType, Query};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

use crate::ids::{ForwardId, SandboxId};
use crate::name::{self, PtrName};
use crate::records::{Family, Lookup, Records};
use crate::stats::{DropReason, Stats};
use crate::upstream::Upstream;
use crate::wire::{self, Parsed, Verdict};

/// How a query reached us; forwards use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// One message of a TCP connection (without its length prefix).
    Tcp,
}

/// Who asked: the sandbox whose listener received the query, and the
/// client's address in that sandbox's namespace (for TCP, the peer of the
/// connection the reply goes back on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// The asking sandbox: its networks scope the answer.
    pub sandbox: SandboxId,
    /// The client's source address and port.
    pub addr: SocketAddr,
}

/// Tunables, defaulting to Docker's constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// How long one upstream has to answer (Docker: 4 s).
    pub upstream_timeout: Duration,
    /// How many of a sandbox's upstreams are tried (Docker: 3).
    pub max_upstreams: usize,
    /// Forwarded queries one sandbox may have in flight; more are dropped
    /// (Docker: 1024).
    pub max_in_flight: usize,
    /// Forwarded queries all sandboxes together may have in flight. Past
    /// it a query is answered SERVFAIL at once and counted in
    /// [`Stats::over_capacity`], so many sandboxes at their own cap cannot
    /// exhaust the daemon (Docker has no such cap).
    pub max_pending: usize,
    /// The longest query that is forwarded, in bytes: what a pending query
    /// holds is bounded by this (the query, and an earlier upstream's reply
    /// kept only when it is no longer). Real queries are a few hundred
    /// bytes; a longer one is answered SERVFAIL and counted.
    pub max_forward_len: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(4),
            max_upstreams: 3,
            max_in_flight: 1024,
            max_pending: 4096,
            max_forward_len: 4096,
        }
    }
}

/// A reply for a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Where it goes.
    pub client: Client,
    /// Over what: the query's own transport.
    pub transport: Transport,
    /// The DNS message.
    pub bytes: Vec<u8>,
}

/// One attempt at an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Give this back with the reply.
    pub id: ForwardId,
    /// The sandbox the query came from (whose namespace to dial from when
    /// [`Upstream::dial_from`] says so).
    pub sandbox: SandboxId,
    /// The server, and the namespace to dial it from.
    pub upstream: Upstream,
    /// The client's transport.
    pub transport: Transport,
    /// The client's query with our transaction id.
    pub bytes: Vec<u8>,
}

/// Something to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Answer a client.
    Reply(Reply),
    /// Ask an upstream.
    Forward(Forward),
}

/// What one input led to. Every field may be empty: a query answered
/// locally has only `send`; a reply that ends a forward has `send` (or
/// `dropped`) and `close`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Outcome {
    /// The message to send, if any.
    pub send: Option<Transmit>,
    /// An attempt that is over: close its socket, ignore anything else it
    /// receives.
    pub close: Option<ForwardId>,
    /// Set when the input ended in nothing being sent to the client; the
    /// reason has been counted.
    pub dropped: Option<DropReason>,
}

impl Outcome {
    fn reply(client: Client, transport: Transport, bytes: Vec<u8>) -> Self {
        Self {
            send: Some(Transmit::Reply(Reply {
                client,
                transport,
                bytes,
            })),
            ..Self::default()
        }
    }

    fn drop_only(reason: DropReason) -> Self {
        Self {
            dropped: Some(reason),
            ..Self::default()
        }
    }

    /// The reply, if this outcome sends one.
    #[must_use]
    pub fn reply_bytes(&self) -> Option<&[u8]> {
        match &self.send {
            Some(Transmit::Reply(r)) => Some(&r.bytes),
            _ => None,
        }
    }

    /// The forward, if this outcome sends one.
    #[must_use]
    pub fn forward(&self) -> Option<&Forward> {
        match &self.send {
            Some(Transmit::Forward(f)) => Some(f),
            _ => None,
        }
    }
}

/// A query being forwarded: which attempt it is on, and what it has
/// received so far.
#[derive(Clone, Debug)]
struct Pending {
    client: Client,
    transport: Transport,
    /// The client's query, bytes as received.
    query: Vec<u8>,
    client_id: u16,
    /// Our transaction id for the current attempt.
    upstream_id: u16,
    upstreams: Vec<Upstream>,
    /// Index in `upstreams` of the current attempt.
    attempt: usize,
    /// The last reply that sent us on to the next upstream (Docker's
    /// `resp`); cleared by a timeout or garbage.
    last_reply: Option<Vec<u8>>,
    deadline: Instant,
    started: Instant,
}

/// A forwarded query in flight, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingView {
    /// The current attempt.
    pub id: ForwardId,
    /// Who asked.
    pub client: Client,
    /// Over what.
    pub transport: Transport,
    /// The upstream being asked now.
    pub upstream: Upstream,
    /// Which upstream of the list (0-based).
    pub attempt: usize,
    /// Whether an earlier upstream's reply is kept to be relayed if the
    /// others fail.
    pub has_last_reply: bool,
    /// When the current attempt times out.
    pub deadline: Instant,
    /// When the client's query arrived.
    pub started: Instant,
}

/// The embedded DNS server's logic, for every sandbox at once.
///
/// `R` is the random number generator behind answer shuffling and
/// upstream transaction ids; seed it to make a run reproducible.
pub struct Resolver<R = StdRng> {
    records: Arc<Records>,
    config: ResolverConfig,
    rng: R,
    pending: HashMap<ForwardId, Pending>,
    deadlines: BTreeSet<(Instant, ForwardId)>,
    in_flight: HashMap<SandboxId, usize>,
    next_id: u64,
    stats: Stats,
}

impl<R> fmt::Debug for Resolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Resolver<R> {
    /// A resolver answering from `records`.
    pub fn new(records: Arc<Records>, config: ResolverConfig, rng: R) -> Self {
        Self {
            records,
            config,
            rng,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            stats: Stats::default(),
        }
    }

    /// Replaces the records wholesale (aardvark's reload). Forwards in
    /// flight keep the upstream list they started with.
    pub fn set_records(&mut self, records: Arc<Records>) {
        self.records = records;
    }

    /// The records being answered from.
    #[must_use]
    pub fn records(&self) -> &Arc<Records> {
        &self.records
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Forwarded queries in flight for `sandbox`.
    #[must_use]
    pub fn in_flight(&self, sandbox: SandboxId) -> usize {
        self.in_flight.get(&sandbox).copied().unwrap_or(0)
    }

    /// Every forward in flight, oldest first.
    #[must_use]
    pub fn pending(&self) -> Vec<PendingView> {
        let mut out: Vec<_> = self
            .pending
            .iter()
            .filter_map(|(&id, p)| {
                Some(PendingView {
                    id,
                    client: p.client,
                    transport: p.transport,
                    upstream: *p.upstreams.get(p.attempt)?,
                    attempt: p.attempt,
                    has_last_reply: p.last_reply.is_some(),
                    deadline: p.deadline,
                    started: p.started,
                })
            })
            .collect();
        out.sort_by_key(|v| (v.started, v.id));
        out
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the
    /// earliest attempt deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Handles one query from `client`, received over `transport`.
    ///
    /// Local names are answered at once; everything else is forwarded to
    /// the sandbox's first upstream. Malformed input never panics: it gets
    /// a FORMERR or, where Docker stays silent, nothing (counted).
    pub fn handle_query(
        &mut self,
        now: Instant,
        client: Client,
        transport: Transport,
        bytes: &[u8],
    ) -> Outcome {
        self.stats.queries += 1;
        let query = match wire::parse_query(bytes) {
            Parsed::Message(m) => m,
            Parsed::Runt => return self.drop(DropReason::Runt),
            Parsed::FormErr(Some(reply)) => {
                self.stats.formerr += 1;
                return Outcome::reply(client, transport, reply);
            }
            Parsed::FormErr(None) => return self.drop(DropReason::Unencodable),
        };
        if query.message_type == MessageType::Response {
            return self.drop(DropReason::NotAQuery);
        }
        let Some(question) = query.queries.first() else {
            return self.drop(DropReason::NoQuestion);
        };
        let records = Arc::clone(&self.records);
        let Some(sandbox) = records.sandbox(client.sandbox) else {
            return self.drop(DropReason::UnknownSandbox);
        };
        let text = name::text(question.name());
        let qtype = question.query_type();
        let answers = match self.local_answers(&records, client.sandbox, question, &text) {
            Ok(answers) => answers,
            Err(reason) => return self.drop(reason),
        };

        // The ndots rule (docker-reference §6.4): with ndots set by the
        // user, a single-label A/AAAA name that is not local is answered
        // with an empty NOERROR so the client goes on to its search list.
        let answers = answers.or_else(|| {
            (matches!(qtype, RecordType::A | RecordType::AAAA)
                && sandbox.ndots_set
                && !text.contains('.'))
            .then(Vec::new)
        });

        if let Some(answers) = answers {
            let limit = wire::reply_limit(&query, transport);
            return match wire::local_reply(&query, answers, limit, transport) {
                Some(bytes) => {
                    self.stats.local_replies += 1;
                    Outcome::reply(client, transport, bytes)
                }
                None => self.drop(DropReason::Unencodable),
            };
        }

        let upstreams: Vec<Upstream> = sandbox
            .upstreams
            .iter()
            .take(self.config.max_upstreams)
            .copied()
            .collect();
        if upstreams.is_empty() {
            return self.drop(DropReason::NoUpstreams);
        }
        if self.pending.len() >= self.config.max_pending
            || bytes.len() > self.config.max_forward_len
        {
            self.stats.over_capacity += 1;
            return match wire::servfail(&query) {
                Some(reply) => Outcome::reply(client, transport, reply),
                None => self.drop(DropReason::Unencodable),
            };
        }
        let in_flight = self.in_flight.entry(client.sandbox).or_default();
        if *in_flight >= self.config.max_in_flight {
            return self.drop(DropReason::TooManyInFlight);
        }
        *in_flight += 1;
        self.stats.forwarded += 1;
        let pending = Pending {
            client,
            transport,
            query: bytes.to_vec(),
            client_id: query.id,
            upstream_id: 0,
            upstreams,
            attempt: 0,
            last_reply: None,
            deadline: now,
            started: now,
        };
        self.attempt(now, pending, None)
    }

    /// What Docker answers locally for `question` (docker-reference
    /// §6.3): `Ok(None)` means "not ours, forward"; `Ok(Some(vec![]))` an
    /// empty NOERROR; `Err` a query dropped without a reply.
    fn local_answers(
        &mut self,
        records: &Records,
        sandbox: SandboxId,
        question: &Query,
        text: &str,
    ) -> Result<Option<Vec<Record>>, DropReason> {
        let qname = question.name();
        let family = match question.query_type() {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            // "Implicit MX" (RFC 5321 §5.1): a known name gets an empty
            // NOERROR so mail clients fall back to its A/AAAA records.
            RecordType::MX => {
                let known = [Family::V4, Family::V6]
                    .into_iter()
                    .any(|f| matches!(records.lookup(sandbox, text, f), Lookup::Found(_)));
                return Ok(known.then(Vec::new));
            }
            RecordType::PTR => {
                let fqdn = format!("{text}.");
                let PtrName::Key(key) = name::ptr_key(&fqdn) else {
                    return Err(DropReason::MalformedPtr);
                };
                let Some(target) = records.lookup_ptr(sandbox, key) else {
                    return Ok(None);
                };
                let target = Name::from_labels(target.split('.').map(str::as_bytes))
                    .map_err(|_| DropReason::Unencodable)?;
                return Ok(Some(vec![Record::from_rdata(
                    qname.clone(),
                    wire::TTL,
                    RData::PTR(PTR(target)),
                )]));
            }
            // SRV answers exist only for swarm services, which we do not
            // have; everything else is always forwarded.
            _ => return Ok(None),
        };
        Ok(match records.lookup(sandbox, text, family) {
            Lookup::Found(mut ips) => {
                ips.shuffle(&mut self.rng);
                Some(
                    ips.into_iter()
                        .map(|ip| {
                            let data = match ip {
                                IpAddr::V4(v4) => RData::A(A(v4)),
                                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                            };
                            Record::from_rdata(qname.clone(), wire::TTL, data)
                        })
                        .collect(),
                )
            }
            Lookup::Ipv6Miss => Some(Vec::new()),
            Lookup::NotFound => None,
        })
    }

    /// Handles what the upstream of attempt `id` sent back.
    ///
    /// NOERROR and authoritative NXDOMAIN are relayed to the client; other
    /// replies send the query on to the next upstream. A reply that does
    /// not carry the id we sent is ignored (the attempt keeps waiting); a
    /// reply to an attempt that is over is dropped.
    pub fn handle_upstream(&mut self, now: Instant, id: ForwardId, bytes: &[u8]) -> Outcome {
        let Some(p) = self.pending.get(&id) else {
            self.stats.drops.bump(DropReason::LateReply);
            return Outcome {
                close: Some(id),
                dropped: Some(DropReason::LateReply),
                send: None,
            };
        };
        if wire::id_of(bytes) != Some(p.upstream_id) {
            return self.drop(DropReason::UpstreamIdMismatch);
        }
        let Some(mut p) = self.take(id) else {
            return self.drop(DropReason::LateReply);
        };
        match wire::judge_upstream(bytes) {
            Verdict::Relay => {
                self.stats.relayed += 1;
                let bytes = wire::with_id(bytes, p.client_id);
                self.finish(&p);
                let mut out = Outcome::reply(p.client, p.transport, bytes);
                out.close = Some(id);
                out
            }
            Verdict::Next => {
                self.stats.upstream_retries += 1;
                // Kept to be relayed if the others fail, within the bound
                // on what a pending query holds.
                p.last_reply = (bytes.len() <= self.config.max_forward_len).then(|| bytes.to_vec());
                self.attempt_next(now, p, id, DropReason::NoUpstreamReply)
            }
            Verdict::Garbage => {
                self.stats.upstream_malformed += 1;
                p.last_reply = None;
                self.attempt_next(now, p, id, DropReason::NoUpstreamReply)
            }
        }
    }

    /// Handles a failure to dial or send attempt `id` (connection refused,
    /// no route, namespace gone). As in Docker, the query moves on to the
    /// next upstream and an earlier reply is still kept.
    pub fn handle_upstream_error(&mut self, now: Instant, id: ForwardId) -> Outcome {
        let Some(p) = self.take(id) else {
            self.stats.drops.bump(DropReason::LateReply);
            return Outcome {
                close: Some(id),
                dropped: Some(DropReason::LateReply),
                send: None,
            };
        };
        self.stats.upstream_errors += 1;
        self.attempt_next(now, p, id, DropReason::NoUpstreamReply)
    }

    /// Ends the query of attempt `id` with SERVFAIL because the daemon has
    /// no room to send it (its cap on upstream sockets is reached), counted
    /// in [`Stats::over_capacity`].
    pub fn refuse(&mut self, id: ForwardId) -> Outcome {
        let Some(p) = self.take(id) else {
            self.stats.drops.bump(DropReason::LateReply);
            return Outcome {
                close: Some(id),
                dropped: Some(DropReason::LateReply),
                send: None,
            };
        };
        self.finish(&p);
        self.stats.over_capacity += 1;
        let mut out = match wire::servfail_bytes(&p.query) {
            Some(reply) => Outcome::reply(p.client, p.transport, reply),
            None => self.drop(DropReason::Unencodable),
        };
        out.close = Some(id);
        out
    }

    /// Expires every attempt whose deadline is at or before `now`: each
    /// moves on to its next upstream, or, if it was the last, ends with
    /// nothing sent (Docker's timeout clears the last reply).
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let Some(mut p) = self.take(id) else {
                // A deadline always has its entry; drop a stray one.
                self.deadlines.pop_first();
                continue;
            };
            self.stats.upstream_timeouts += 1;
            p.last_reply = None;
            out.push(self.attempt_next(now, p, id, DropReason::UpstreamTimeout));
        }
        out
    }

    /// Removes attempt `id` from the tables.
    fn take(&mut self, id: ForwardId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    /// Moves a query whose attempt `done` is over to its next upstream, or
    /// ends it: the last reply is relayed, or nothing is sent and
    /// `reason` is counted.
    fn attempt_next(
        &mut self,
        now: Instant,
        mut p: Pending,
        done: ForwardId,
        reason: DropReason,
    ) -> Outcome {
        p.attempt += 1;
        if p.attempt < p.upstreams.len() {
            return self.attempt(now, p, Some(done));
        }
        self.finish(&p);
        let mut out = match p.last_reply.take() {
            Some(reply) => {
                self.stats.relayed += 1;
                Outcome::reply(p.client, p.transport, wire::with_id(&reply, p.client_id))
            }
            None => self.drop(reason),
        };
        out.close = Some(done);
        out
    }

    /// Sends `p` to its current upstream under a fresh id.
    fn attempt(&mut self, now: Instant, mut p: Pending, done: Option<ForwardId>) -> Outcome {
        let Some(&upstream) = p.upstreams.get(p.attempt) else {
            // Unreachable by construction: callers check the index.
            self.finish(&p);
            let mut out = self.drop(DropReason::NoUpstreams);
            out.close = done;
            return out;
        };
        let id = ForwardId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        p.upstream_id = self.rng.random();
        p.deadline = now.checked_add(self.config.upstream_timeout).unwrap_or(now);
        let forward = Forward {
            id,
            sandbox: p.client.sandbox,
            upstream,
            transport: p.transport,
            bytes: wire::with_id(&p.query, p.upstream_id),
        };
        self.stats.upstream_attempts += 1;
        self.deadlines.insert((p.deadline, id));
        self.pending.insert(id, p);
        Outcome {
            send: Some(Transmit::Forward(forward)),
            close: done,
            dropped: None,
        }
    }

    /// A forwarded query is over: release its in-flight slot.
    fn finish(&mut self, p: &Pending) {
        if let Some(n) = self.in_flight.get_mut(&p.client.sandbox) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&p.client.sandbox);
            }
        }
    }

    fn drop(&mut self, reason: DropReason) -> Outcome {
        self.stats.drops.bump(reason);
        Outcome::drop_only(reason)
    }
}
