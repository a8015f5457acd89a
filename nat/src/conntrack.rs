//! The flow table: nf_conntrack's bookkeeping, shared by every datapath
//! worker.
//!
//! # Design
//!
//! A flow has two keys: the *original* tuple (its first packet) and the
//! *reply* tuple (what an answer looks like after translation). Both must
//! find the flow from any worker, because the reply of a container's flow
//! can be read by whichever worker serves the uplink or the host connector.
//!
//! The table is split into shards, each a `parking_lot::Mutex` around a
//! slab of flows and a hash index from key to slot. A key's shard is chosen
//! by a *symmetric* hash of the tuple (equal for a key and its reverse), so both
//! directions of an untranslated flow share one shard. A flow lives in the
//! shard of its original key; its reply key is indexed in the reply key's
//! own shard with a pointer (shard, slot) back to the owner. A packet takes
//! one shard lock, or two in sequence (never nested) when it arrives on a
//! translated reply key; the lock is held only for a hash lookup and a few
//! stores, and with 64 shards per core two workers rarely meet on one.
//! Inserting and removing a flow lock its (at most two) shards together, in
//! ascending order, so the two index entries always agree.
//!
//! Alternatives rejected: a single-owner table with the other workers
//! handing reply packets over through rings (one hop and a queue per reply
//! packet, and a worker that stalls stalls every flow it owns); a lock-free
//! map (epoch reclamation and much more code, for contention a sharded
//! mutex already avoids); a read-write lock per shard (every packet updates
//! counters and timestamps, so every access is a write).
//!
//! Expiry is driven by the caller's `now`: a lookup ignores a flow whose
//! deadline has passed (lazily, without waiting for a sweep), and
//! [`FlowTable::expire`] removes at most a given number of expired flows
//! per call, so a timer tick never stalls a worker on a million entries.
//!
//! The table holds at most [`Config::capacity`] flows. A flow over the cap
//! is refused and counted; flows already in the table are never evicted to
//! make room, so an established connection survives a flood of new ones.

use core::fmt;
use core::hash::{BuildHasher, Hasher};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::flow::{Direction, FlowKey, FlowProto, NetworkId};
use crate::tcp::{self, TcpFlags, TcpState, TcpTimeouts, Transition};

/// Slots examined to reclaim expired flows when the table is full.
const FULL_SWEEP_BUDGET: usize = 256;

/// Timeouts per protocol, nf_conntrack's defaults unless configured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// TCP, per state.
    pub tcp: TcpTimeouts,
    /// `nf_conntrack_udp_timeout`: 30 s until a reply has been seen.
    pub udp: Duration,
    /// `nf_conntrack_udp_timeout_stream`: 120 s once a flow has been
    /// answered and is older than [`udp_stream_after`](Self::udp_stream_after).
    pub udp_stream: Duration,
    /// The age after which an answered UDP flow counts as a stream (2 s in
    /// the kernel, so a single DNS exchange keeps the short timeout).
    pub udp_stream_after: Duration,
    /// `nf_conntrack_icmp_timeout`: 30 s.
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: TcpTimeouts::default(),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            udp_stream_after: Duration::from_secs(2),
            icmp: Duration::from_secs(30),
        }
    }
}

/// How a [`FlowTable`] is sized and behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Config {
    /// The most flows held at once (`nf_conntrack_max`).
    pub capacity: usize,
    /// Number of shards (rounded up to a power of two, at least 1).
    pub shards: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// `nf_conntrack_tcp_loose`: whether a TCP flow may start with a bare
    /// ACK (picked up mid-stream, for instance after a restart).
    pub tcp_loose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: 262_144,
            shards: 256,
            timeouts: Timeouts::default(),
            tcp_loose: true,
        }
    }
}

/// A flow's handle: stays valid while the flow lives, and never names a
/// later flow that reuses its slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnId {
    shard: u32,
    slot: u32,
    generation: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}.{}", self.shard, self.slot, self.generation)
    }
}

/// What the flow table needs to know about one packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PacketInfo {
    /// TCP flags (ignored for UDP and ICMP).
    pub tcp_flags: TcpFlags,
    /// Bytes counted for the packet (the IP datagram, as conntrack counts).
    pub len: u32,
}

/// A flow's protocol state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlowState {
    /// TCP, with nf_conntrack's state.
    Tcp(TcpState),
    /// UDP; `replied` once a packet went the reply way.
    Udp {
        /// Whether a reply was seen.
        replied: bool,
    },
    /// ICMP echo; `replied` once an echo reply was seen.
    Icmp {
        /// Whether a reply was seen.
        replied: bool,
    },
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(s) => s.fmt(f),
            Self::Udp { replied: true } | Self::Icmp { replied: true } => f.write_str("REPLIED"),
            Self::Udp { replied: false } | Self::Icmp { replied: false } => {
                f.write_str("UNREPLIED")
            }
        }
    }
}

/// How a tracked packet fits its flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fit {
    /// A valid packet: state updated, timeout restarted, counted.
    Valid,
    /// Passes but changes nothing (nf_conntrack's `sIG`).
    Ignored,
    /// Does not fit the TCP state (nf_conntrack's `sIV`): nothing changed;
    /// the caller decides whether to drop it. Counted in [`Stats`].
    Invalid,
}

/// The outcome of a packet that belongs to a flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Tracked {
    /// The flow.
    pub id: ConnId,
    /// Which way the packet travels.
    pub direction: Direction,
    /// The tuple the packet must carry when it leaves: for a packet in the
    /// original direction, the reversed reply tuple; for a reply, the
    /// reversed original tuple. Equal to the packet's key when the flow is
    /// not translated.
    pub rewrite_to: FlowKey,
    /// The flow's state after this packet.
    pub state: FlowState,
    /// How the packet fits.
    pub fit: Fit,
    /// The value given at creation (a socket token, an endpoint).
    pub cookie: u64,
}

/// A flow to create.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NewFlow {
    /// The first packet's tuple.
    pub original: FlowKey,
    /// The tuple its replies will carry (after translation).
    pub reply: FlowKey,
    /// Opaque to the table; handed back with every [`Tracked`].
    pub cookie: u64,
}

/// Why a flow was not created. The packet that asked should be dropped
/// (and counted under the reason) or, for a clash, retried with another
/// translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The table holds [`Config::capacity`] flows.
    #[error("flow table full")]
    TableFull,
    /// The first packet cannot start a flow (a TCP segment that is not a
    /// SYN, or a bare ACK with `tcp_loose` off).
    #[error("packet cannot start a flow")]
    NotInitial,
    /// The original and reply tuples disagree on the protocol, or are equal.
    #[error("original and reply tuples are inconsistent")]
    Inconsistent,
    /// A live flow already uses the original tuple.
    #[error("a flow already has this tuple")]
    Exists(ConnId),
    /// A live flow already uses the reply tuple (a translation clash: pick
    /// another port).
    #[error("reply tuple already in use")]
    ReplyInUse(ConnId),
}

/// Counters, read without locks.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Stats {
    /// Flows in the table (live or awaiting removal).
    pub entries: usize,
    /// Flows created.
    pub created: u64,
    /// Flows refused because the table was full.
    pub refused_full: u64,
    /// Flows refused because their first packet cannot start one.
    pub refused_not_initial: u64,
    /// Flows refused because a tuple was in use.
    pub refused_clash: u64,
    /// Flows removed after their timeout.
    pub expired: u64,
    /// Flows removed by a purge.
    pub purged: u64,
    /// Packets that did not fit their flow's TCP state.
    pub invalid_packets: u64,
}

/// One flow as an operator sees it (`vsctl show-conntrack`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowInfo {
    /// Handle.
    pub id: ConnId,
    /// Original tuple.
    pub original: FlowKey,
    /// Reply tuple.
    pub reply: FlowKey,
    /// State.
    pub state: FlowState,
    /// Time since creation.
    pub age: Duration,
    /// Time left before expiry.
    pub expires_in: Duration,
    /// Packets original, reply.
    pub packets: [u64; 2],
    /// Bytes original, reply.
    pub bytes: [u64; 2],
    /// nf_conntrack's `ASSURED`: the flow saw traffic both ways (TCP: the
    /// handshake completed).
    pub assured: bool,
    /// The creator's cookie.
    pub cookie: u64,
}

impl fmt::Display for FlowInfo {
    /// `conntrack -L`'s line: protocol, seconds left, state, both tuples
    /// with their counters, `[ASSURED]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} packets={} bytes={} {} packets={} bytes={}",
            self.original.proto,
            self.expires_in.as_secs(),
            self.state,
            self.original,
            self.packets[0],
            self.bytes[0],
            self.reply,
            self.packets[1],
            self.bytes[1],
        )?;
        if self.assured {
            f.write_str(" [ASSURED]")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Conn {
    original: FlowKey,
    reply: FlowKey,
    state: FlowState,
    created: Instant,
    expires: Instant,
    packets: [u64; 2],
    bytes: [u64; 2],
    seen_reply: bool,
    assured: bool,
    cookie: u64,
}

impl Conn {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    fn info(&self, id: ConnId, now: Instant) -> FlowInfo {
        FlowInfo {
            id,
            original: self.original,
            reply: self.reply,
            state: self.state,
            age: now.saturating_duration_since(self.created),
            expires_in: self.expires.saturating_duration_since(now),
            packets: self.packets,
            bytes: self.bytes,
            assured: self.assured,
            cookie: self.cookie,
        }
    }

    fn count(&mut self, dir: Direction, len: u32) {
        let i = dir.index();
        self.packets[i] = self.packets[i].wrapping_add(1);
        self.bytes[i] = self.bytes[i].wrapping_add(u64::from(len));
    }

    /// Applies one packet: nf_conntrack's `tcp_packet`, `udp_packet` and
    /// `icmp_packet`, minus window tracking.
    fn update(&mut self, t: &Timeouts, now: Instant, dir: Direction, pkt: PacketInfo) -> Fit {
        let reply = dir == Direction::Reply;
        match self.state {
            FlowState::Tcp(old) => match tcp::transition(old, reply, pkt.tcp_flags) {
                Transition::Ignore => Fit::Ignored,
                Transition::Invalid => Fit::Invalid,
                Transition::To(new) => {
                    let syn_only = pkt.tcp_flags.contains(TcpFlags::SYN)
                        && !pkt.tcp_flags.contains(TcpFlags::ACK);
                    if !reply && syn_only && matches!(old, TcpState::TimeWait | TcpState::Close) {
                        // RFC 1122 reopen: the kernel kills the old entry
                        // and starts a new one for the same tuple.
                        self.seen_reply = false;
                        self.assured = false;
                        self.created = now;
                        self.packets = [0; 2];
                        self.bytes = [0; 2];
                    }
                    self.count(dir, pkt.len);
                    if reply && !self.seen_reply && pkt.tcp_flags.contains(TcpFlags::RST) {
                        // The only answer was a RST: nothing was established,
                        // so the kernel deletes the entry at once.
                        self.state = FlowState::Tcp(TcpState::Close);
                        self.expires = now;
                        return Fit::Valid;
                    }
                    if reply {
                        self.seen_reply = true;
                    }
                    if self.seen_reply
                        && matches!(old, TcpState::SynRecv | TcpState::Established)
                        && new == TcpState::Established
                    {
                        self.assured = true;
                    }
                    let mut timeout = t.tcp.for_state(new);
                    if !self.seen_reply && new == TcpState::Established {
                        timeout = timeout.min(t.tcp.unacknowledged);
                    }
                    self.state = FlowState::Tcp(new);
                    self.expires = now + timeout;
                    Fit::Valid
                }
            },
            FlowState::Udp { .. } => {
                self.count(dir, pkt.len);
                if reply {
                    self.seen_reply = true;
                }
                let timeout = if self.seen_reply
                    && now.saturating_duration_since(self.created) >= t.udp_stream_after
                {
                    self.assured = true;
                    t.udp_stream
                } else {
                    t.udp
                };
                self.state = FlowState::Udp {
                    replied: self.seen_reply,
                };
                self.expires = now + timeout;
                Fit::Valid
            }
            FlowState::Icmp { .. } => {
                self.count(dir, pkt.len);
                if reply {
                    self.seen_reply = true;
                }
                self.state = FlowState::Icmp {
                    replied: self.seen_reply,
                };
                self.expires = now + t.icmp;
                Fit::Valid
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Index {
    /// This key is the original tuple of the flow in `slot` of this shard.
    Original { slot: u32 },
    /// This key is the reply tuple of the flow in `slot` of `shard`.
    Reply { shard: u32, slot: u32 },
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<FlowKey, Index, foldhash::fast::RandomState>,
    sweep_at: usize,
}

impl Shard {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            sweep_at: 0,
        }
    }

    fn conn(&self, slot: u32, generation: Option<u32>) -> Option<&Conn> {
        let s = self.slots.get(slot as usize)?;
        if generation.is_some_and(|g| g != s.generation) {
            return None;
        }
        s.conn.as_ref()
    }

    fn conn_mut(&mut self, slot: u32) -> Option<(&mut Conn, u32)> {
        let s = self.slots.get_mut(slot as usize)?;
        let g = s.generation;
        s.conn.as_mut().map(|c| (c, g))
    }
}

/// Two shard guards taken in ascending order, addressed by role: the
/// owner of a flow (`a`) and the shard of its reply key (`b`), which may be
/// the same shard.
struct Pair<'t> {
    a: MutexGuard<'t, Shard>,
    b: Option<MutexGuard<'t, Shard>>,
}

impl Pair<'_> {
    fn a(&mut self) -> &mut Shard {
        &mut self.a
    }

    fn b(&mut self) -> &mut Shard {
        match &mut self.b {
            Some(b) => b,
            None => &mut self.a,
        }
    }
}

/// The connection-tracking table. `Sync`: share it behind an `Arc` between
/// every datapath worker and the control thread.
#[derive(Debug)]
pub struct FlowTable {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
    config: Config,
    len: AtomicUsize,
    sweep_shard: AtomicUsize,
    created: AtomicU64,
    refused_full: AtomicU64,
    refused_not_initial: AtomicU64,
    refused_clash: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
    invalid_packets: AtomicU64,
}

impl FlowTable {
    /// An empty table.
    #[must_use]
    pub fn new(config: Config) -> Self {
        let n = config.shards.max(1).next_power_of_two().min(1 << 16);
        Self {
            shards: (0..n).map(|_| Mutex::new(Shard::new())).collect(),
            mask: n - 1,
            hasher: foldhash::fast::RandomState::default(),
            config,
            len: AtomicUsize::new(0),
            sweep_shard: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_not_initial: AtomicU64::new(0),
            refused_clash: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            purged: AtomicU64::new(0),
            invalid_packets: AtomicU64::new(0),
        }
    }

    /// The configuration the table was built with.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Flows in the table, including expired ones not yet swept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the table holds no flow.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.len(),
            created: self.created.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            refused_not_initial: self.refused_not_initial.load(Ordering::Relaxed),
            refused_clash: self.refused_clash.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
            invalid_packets: self.invalid_packets.load(Ordering::Relaxed),
        }
    }

    fn shard_of(&self, key: &FlowKey) -> usize {
        let mut h = self.hasher.build_hasher();
        key.hash_symmetric(&mut h);
        // Only the low bits are kept, so the truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        let i = h.finish() as usize & self.mask;
        i
    }

    fn lock_pair(&self, a: usize, b: usize) -> Pair<'_> {
        if a == b {
            Pair {
                a: self.shards[a].lock(),
                b: None,
            }
        } else if a < b {
            let ga = self.shards[a].lock();
            let gb = self.shards[b].lock();
            Pair { a: ga, b: Some(gb) }
        } else {
            let gb = self.shards[b].lock();
            let ga = self.shards[a].lock();
            Pair { a: ga, b: Some(gb) }
        }
    }

    /// Finds the flow a key belongs to and runs `f` on it under its shard's
    /// lock. Expired flows are not found.
    fn with_conn<R>(
        &self,
        now: Instant,
        key: &FlowKey,
        f: impl FnOnce(&mut Conn, ConnId, Direction) -> R,
    ) -> Option<R> {
        let s = self.shard_of(key);
        let mut guard = self.shards[s].lock();
        let (owner, slot, dir) = match *guard.index.get(key)? {
            Index::Original { slot } => (s, slot, Direction::Original),
            Index::Reply { shard, slot } => (shard as usize, slot, Direction::Reply),
        };
        if owner != s {
            drop(guard);
            guard = self.shards.get(owner)?.lock();
        }
        let (conn, generation) = guard.conn_mut(slot)?;
        let matches = match dir {
            Direction::Original => conn.original == *key,
            Direction::Reply => conn.reply == *key,
        };
        if !matches || !conn.is_live(now) {
            return None;
        }
        let id = ConnId {
            shard: u32::try_from(owner).ok()?,
            slot,
            generation,
        };
        Some(f(conn, id, dir))
    }

    /// Finds the flow `key` belongs to, in either direction, without
    /// changing it.
    #[must_use]
    pub fn lookup(&self, now: Instant, key: &FlowKey) -> Option<(ConnId, Direction)> {
        self.with_conn(now, key, |_, id, dir| (id, dir))
    }

    /// The flow's current view.
    #[must_use]
    pub fn get(&self, now: Instant, id: ConnId) -> Option<FlowInfo> {
        let guard = self.shards.get(id.shard as usize)?.lock();
        let conn = guard.conn(id.slot, Some(id.generation))?;
        conn.is_live(now).then(|| conn.info(id, now))
    }

    /// Accounts a packet to the flow its key belongs to (either direction)
    /// and advances the flow's state. `None` when no live flow has this key:
    /// the caller decides whether the packet may [`create`](Self::create)
    /// one.
    ///
    /// Takes one shard lock (two in sequence on a translated reply) and
    /// allocates nothing.
    pub fn track(&self, now: Instant, key: &FlowKey, pkt: PacketInfo) -> Option<Tracked> {
        let timeouts = &self.config.timeouts;
        let tracked = self.with_conn(now, key, |conn, id, direction| {
            let fit = conn.update(timeouts, now, direction, pkt);
            let rewrite_to = match direction {
                Direction::Original => conn.reply.reversed(),
                Direction::Reply => conn.original.reversed(),
            };
            Tracked {
                id,
                direction,
                rewrite_to,
                state: conn.state,
                fit,
                cookie: conn.cookie,
            }
        })?;
        if tracked.fit == Fit::Invalid {
            self.invalid_packets.fetch_add(1, Ordering::Relaxed);
        }
        Some(tracked)
    }

    /// Creates a flow for a packet no flow has (see [`track`](Self::track))
    /// and accounts that packet to it.
    ///
    /// An expired flow holding either tuple is removed first. Over the
    /// capacity the flow is refused and counted, and no existing flow is
    /// touched.
    ///
    /// # Errors
    ///
    /// [`Refused`] says why; each reason has its counter in [`Stats`].
    pub fn create(&self, now: Instant, new: NewFlow, pkt: PacketInfo) -> Result<Tracked, Refused> {
        let NewFlow {
            original,
            reply,
            cookie,
        } = new;
        if original.proto != reply.proto || original == reply {
            return Err(Refused::Inconsistent);
        }
        let state = match original.proto {
            FlowProto::Tcp => {
                let Some(s) = tcp::initial_state(pkt.tcp_flags, self.config.tcp_loose) else {
                    self.refused_not_initial.fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::NotInitial);
                };
                FlowState::Tcp(s)
            }
            FlowProto::Udp => FlowState::Udp { replied: false },
            FlowProto::Icmp => FlowState::Icmp { replied: false },
        };
        let so = self.shard_of(&original);
        let sr = self.shard_of(&reply);
        // An expired holder of a tuple is removed, then the insert retried;
        // each round removes one flow, and there are at most two holders.
        for _ in 0..3 {
            let mut pair = self.lock_pair(so, sr);
            let holder = |shard: &Shard, me: usize, key: &FlowKey| -> Option<ConnId> {
                let (owner, slot) = match *shard.index.get(key)? {
                    Index::Original { slot } => (me, slot),
                    Index::Reply { shard, slot } => (shard as usize, slot),
                };
                let generation = if owner == me {
                    shard.slots.get(slot as usize)?.generation
                } else {
                    // Resolved under the owner's lock by `remove_if_expired`.
                    u32::MAX
                };
                Some(ConnId {
                    shard: u32::try_from(owner).ok()?,
                    slot,
                    generation,
                })
            };
            let orig_holder = holder(pair.a(), so, &original);
            let reply_holder = holder(pair.b(), sr, &reply);
            if orig_holder.is_some() || reply_holder.is_some() {
                drop(pair);
                let mut removed = 0;
                for id in [orig_holder, reply_holder].into_iter().flatten() {
                    if self.remove_if(id, |c| !c.is_live(now)).is_some() {
                        removed += 1;
                    }
                }
                if removed > 0 {
                    self.expired.fetch_add(removed, Ordering::Relaxed);
                    continue;
                }
                self.refused_clash.fetch_add(1, Ordering::Relaxed);
                let (orig_holder, reply_holder) = (
                    orig_holder.map(|id| self.resolve(id)),
                    reply_holder.map(|id| self.resolve(id)),
                );
                return Err(match (orig_holder, reply_holder) {
                    (Some(id), _) => Refused::Exists(id),
                    (None, Some(id)) => Refused::ReplyInUse(id),
                    (None, None) => Refused::Inconsistent,
                });
            }
            if self.len.fetch_add(1, Ordering::Relaxed) >= self.config.capacity {
                self.len.fetch_sub(1, Ordering::Relaxed);
                // Expired flows not yet swept still count; reclaim a few
                // (a bounded amount of work) before refusing.
                drop(pair);
                if self.expire(now, FULL_SWEEP_BUDGET) > 0 {
                    continue;
                }
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::TableFull);
            }
            let mut conn = Conn {
                original,
                reply,
                state,
                created: now,
                expires: now,
                packets: [0; 2],
                bytes: [0; 2],
                seen_reply: false,
                assured: false,
                cookie,
            };
            // The first packet takes the state machine from "none" into the
            // initial state; replaying it as a packet of the new state only
            // refreshes the timeout and counts it.
            let fit = conn.update(&self.config.timeouts, now, Direction::Original, pkt);
            let shard = pair.a();
            let slot = match shard.free.pop() {
                Some(slot) => slot,
                None => {
                    let Ok(slot) = u32::try_from(shard.slots.len()) else {
                        self.len.fetch_sub(1, Ordering::Relaxed);
                        self.refused_full.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::TableFull);
                    };
                    shard.slots.push(Slot::default());
                    slot
                }
            };
            let entry = &mut shard.slots[slot as usize];
            let generation = entry.generation;
            let state = conn.state;
            entry.conn = Some(conn);
            shard.index.insert(original, Index::Original { slot });
            let owner = u32::try_from(so).map_err(|_| Refused::Inconsistent)?;
            pair.b()
                .index
                .insert(reply, Index::Reply { shard: owner, slot });
            self.created.fetch_add(1, Ordering::Relaxed);
            let id = ConnId {
                shard: owner,
                slot,
                generation,
            };
            return Ok(Tracked {
                id,
                direction: Direction::Original,
                rewrite_to: reply.reversed(),
                state,
                fit,
                cookie,
            });
        }
        self.refused_clash.fetch_add(1, Ordering::Relaxed);
        Err(Refused::Inconsistent)
    }

    /// Fills in the generation of an id found through another shard's
    /// index (see `create`).
    fn resolve(&self, id: ConnId) -> ConnId {
        if id.generation != u32::MAX {
            return id;
        }
        let generation = self
            .shards
            .get(id.shard as usize)
            .and_then(|s| s.lock().slots.get(id.slot as usize).map(|s| s.generation))
            .unwrap_or(u32::MAX);
        ConnId { generation, ..id }
    }

    /// Removes the flow `id` names (any generation when `id.generation` is
    /// `u32::MAX`) if `pred` holds for it, taking its two shards in order.
    fn remove_if(&self, id: ConnId, pred: impl Fn(&Conn) -> bool) -> Option<FlowKey> {
        let owner = id.shard as usize;
        let reply_shard = {
            let guard = self.shards.get(owner)?.lock();
            let generation = (id.generation != u32::MAX).then_some(id.generation);
            let conn = guard.conn(id.slot, generation)?;
            self.shard_of(&conn.reply)
        };
        let mut pair = self.lock_pair(owner, reply_shard);
        let shard = pair.a();
        let entry = shard.slots.get_mut(id.slot as usize)?;
        if id.generation != u32::MAX && entry.generation != id.generation {
            return None;
        }
        // The flow may have changed between the two lock acquisitions; its
        // reply key cannot, but check it still lives where we locked.
        let conn = entry.conn.as_ref()?;
        if !pred(conn) || self.shard_of(&conn.reply) != reply_shard {
            return None;
        }
        let conn = entry.conn.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        if entry.generation == u32::MAX {
            entry.generation = 0;
        }
        shard.free.push(id.slot);
        shard.index.remove(&conn.original);
        let b = pair.b();
        if matches!(b.index.get(&conn.reply), Some(Index::Reply { shard, slot }) if *shard as usize == owner && *slot == id.slot)
        {
            b.index.remove(&conn.reply);
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(conn.original)
    }

    /// Removes the flow now (an endpoint's socket closed, an operator's
    /// delete). Returns whether it existed.
    pub fn remove(&self, id: ConnId) -> bool {
        let removed = self.remove_if(id, |_| true).is_some();
        if removed {
            self.purged.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes expired flows, examining at most `budget` slots, and returns
    /// how many it removed. Call it from a timer with a budget the caller
    /// can afford per tick; successive calls resume where the last stopped
    /// and cover the whole table.
    pub fn expire(&self, now: Instant, budget: usize) -> usize {
        let n = self.shards.len();
        let mut examined = 0;
        let mut removed = 0;
        let mut found: Vec<ConnId> = Vec::new();
        for _ in 0..n {
            if examined >= budget {
                break;
            }
            let s = self.sweep_shard.fetch_add(1, Ordering::Relaxed) & self.mask;
            {
                let mut guard = self.shards[s].lock();
                let shard = &mut *guard;
                let len = shard.slots.len();
                let mut at = shard.sweep_at.min(len);
                while at < len && examined < budget {
                    let slot = &shard.slots[at];
                    if slot.conn.as_ref().is_some_and(|c| !c.is_live(now)) {
                        found.push(ConnId {
                            shard: u32::try_from(s).unwrap_or(u32::MAX),
                            slot: u32::try_from(at).unwrap_or(u32::MAX),
                            generation: slot.generation,
                        });
                    }
                    at += 1;
                    examined += 1;
                }
                shard.sweep_at = if at >= len { 0 } else { at };
                if at < len {
                    // Come back to this shard first next time.
                    self.sweep_shard.fetch_sub(1, Ordering::Relaxed);
                }
            }
            for id in found.drain(..) {
                if self.remove_if(id, |c| !c.is_live(now)).is_some() {
                    removed += 1;
                }
            }
        }
        self.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Removes every flow for which `pred` holds, returning how many. Walks
    /// the whole table: a control-plane operation, not a per-packet one.
    pub fn purge(&self, pred: impl Fn(&FlowKey, &FlowKey) -> bool) -> usize {
        let mut ids = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let guard = shard.lock();
            for (i, slot) in guard.slots.iter().enumerate() {
                if let Some(c) = &slot.conn
                    && pred(&c.original, &c.reply)
                {
                    ids.push(ConnId {
                        shard: u32::try_from(s).unwrap_or(u32::MAX),
                        slot: u32::try_from(i).unwrap_or(u32::MAX),
                        generation: slot.generation,
                    });
                }
            }
        }
        let removed = ids
            .into_iter()
            .filter(|&id| {
                self.remove_if(id, |c| pred(&c.original, &c.reply))
                    .is_some()
            })
            .count();
        self.purged.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Removes every flow in which `addr` appears in any position of either
    /// tuple, as Docker does when an endpoint loses external connectivity
    /// (docker-reference §5), so a container that reuses the address does
    /// not inherit stale translations.
    pub fn purge_address(&self, addr: IpAddr) -> usize {
        self.purge(|o, r| o.involves(addr) || r.involves(addr))
    }

    /// Removes every flow seen on `network` (either tuple), for a network's
    /// removal.
    pub fn purge_network(&self, network: NetworkId) -> usize {
        self.purge(|o, r| o.network == network || r.network == network)
    }

    /// Every live flow for which `filter` holds, for `vsctl show-conntrack`.
    /// Locks one shard at a time, so the datapath keeps running while a
    /// large table is listed.
    #[must_use]
    pub fn snapshot(&self, now: Instant, filter: impl Fn(&FlowInfo) -> bool) -> Vec<FlowInfo> {
        let mut out = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let guard = shard.lock();
            for (i, slot) in guard.slots.iter().enumerate() {
                let Some(c) = &slot.conn else { continue };
                if !c.is_live(now) {
                    continue;
                }
                let id = ConnId {
                    shard: u32::try_from(s).unwrap_or(u32::MAX),
                    slot: u32::try_from(i).unwrap_or(u32::MAX),
                    generation: slot.generation,
                };
                let info = c.info(id, now);
                if filter(&info) {
                    out.push(info);
                }
            }
        }
        out.sort_by_key(|i| (i.original.network, i.original));
        out
    }
}
