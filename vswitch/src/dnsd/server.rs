//! The DNS thread's loop: sockets, their tokens, and carrying out the
//! resolver's [`Outcome`]s. TCP clients are in [`clients`], upstream dials
//! and their replies in [`upstream`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, TryRecvError};
use dns::{Client, ForwardId, Outcome, Reply, Resolver, SandboxId, Transmit, Transport};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use rand::SeedableRng;
use rand::rngs::{StdRng, SysRng};

use super::{Command, DnsdConfig, DnsdError, DnsdStats, Listening, TCP_IDLE};
use crate::netconf::Netlink;
use crate::netns::{Netns, run_in};
use clients::TcpClient;
use upstream::{DialError, Route, UpstreamKey, UpstreamTcp};

mod clients;
mod upstream;

/// Token of the mailbox's waker; socket tokens count up from 1.
const WAKER: Token = Token(0);

/// Reads from one socket per wake-up before the others get a turn; a
/// socket with more is served again before the next wait.
const BATCH: usize = 64;

/// The largest DNS message (and UDP payload) there is.
const MAX_MESSAGE: usize = 65_535;

/// Bytes of replies a TCP client may leave unread before it is dropped.
const MAX_TCP_BACKLOG: usize = 256 * 1024;

/// What the thread counted about its sockets (the resolver counts the
/// DNS side).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Replies that could not be sent (UDP send error, TCP client gone or
    /// too far behind, message too big to frame).
    pub reply_errors: u64,
    /// TCP connections closed at once because the sandbox had
    /// [`MAX_TCP_CLIENTS`](super::MAX_TCP_CLIENTS) already.
    pub tcp_refused: u64,
    /// TCP clients disconnected for being idle.
    pub tcp_idle_closed: u64,
    /// TCP clients disconnected for a protocol or socket error.
    pub tcp_errors: u64,
    /// Upstream sockets that could not be opened or sent on.
    pub dial_errors: u64,
    /// Forward attempts answered SERVFAIL instead of dialled, because
    /// [`DnsdConfig::max_upstream_sockets`] were open.
    pub upstream_refused: u64,
    /// Datagrams on an upstream socket that answer no attempt in flight
    /// (late, or forged by whoever can reach the socket).
    pub upstream_stray: u64,
    /// Receive errors on the listeners.
    pub receive_errors: u64,
}

#[derive(Debug)]
enum Sock {
    Udp {
        sandbox: SandboxId,
        socket: UdpSocket,
    },
    Listener {
        sandbox: SandboxId,
        listener: TcpListener,
    },
    Client(TcpClient),
    /// A sandbox's (or the host's) socket to one upstream, shared by every
    /// forward to it.
    UpstreamUdp {
        socket: UdpSocket,
    },
    UpstreamTcp(UpstreamTcp),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Self::Udp { socket, .. } | Self::UpstreamUdp { socket, .. } => socket,
            Self::Listener { listener, .. } => listener,
            Self::Client(c) => &mut c.stream,
            Self::UpstreamTcp(u) => &mut u.stream,
        }
    }
}

/// One sandbox's listeners.
#[derive(Debug)]
struct SandboxSocks {
    /// Kept open to dial upstreams from inside it.
    netns: Netns,
    udp: Token,
    listener: Token,
    clients: HashMap<SocketAddr, Token>,
}

/// The DNS thread's state.
#[derive(Debug)]
pub(super) struct Server {
    config: DnsdConfig,
    /// The namespace the thread runs in, returned to after each dial from
    /// a sandbox.
    home: Netns,
    poll: Poll,
    inbox: Receiver<Command>,
    resolver: Resolver<StdRng>,
    socks: HashMap<Token, Sock>,
    next_token: usize,
    sandboxes: HashMap<SandboxId, SandboxSocks>,
    /// Where each forward attempt in flight waits for its reply.
    forwards: HashMap<ForwardId, Route>,
    /// The UDP socket of each (sandbox, upstream), made on first use.
    shared: HashMap<UpstreamKey, Token>,
    /// UDP attempts in flight by (socket, transaction id on the wire): the
    /// attempt and the id the resolver gave it.
    udp_pending: HashMap<(Token, u16), (ForwardId, u16)>,
    /// TCP upstream connections open.
    tcp_upstreams: usize,
    /// Transaction ids on shared sockets.
    ids: StdRng,
    /// Sockets that still had data when their batch ran out.
    again: Vec<Token>,
    buf: Vec<u8>,
    stats: ServerStats,
}

fn rng() -> StdRng {
    StdRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        // No system randomness: answers are still shuffled and ids still
        // vary, only predictably.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        StdRng::seed_from_u64(u64::from(nanos) ^ u64::from(std::process::id()))
    })
}

impl Server {
    pub(super) fn new(
        config: DnsdConfig,
        inbox: Receiver<Command>,
    ) -> io::Result<(Self, mio::Waker)> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let resolver = Resolver::new(Default::default(), config.resolver, rng());
        let home = Netns::current().map_err(io::Error::other)?;
        Ok((
            Self {
                config,
                home,
                poll,
                inbox,
                resolver,
                socks: HashMap::new(),
                next_token: 1,
                sandboxes: HashMap::new(),
                forwards: HashMap::new(),
                shared: HashMap::new(),
                udp_pending: HashMap::new(),
                tcp_upstreams: 0,
                ids: rng(),
                again: Vec::new(),
                buf: vec![0; MAX_MESSAGE],
                stats: ServerStats::default(),
            },
            waker,
        ))
    }

    /// Runs until [`Command::Shutdown`] or until every handle is gone.
    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.again.is_empty() {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(std::time::Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let mut ready: Vec<(Token, bool, bool)> = std::mem::take(&mut self.again)
                .into_iter()
                .map(|t| (t, true, false))
                .collect();
            ready.extend(events.iter().filter(|e| e.token() != WAKER).map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable() || e.is_error(),
                )
            }));
            for (token, readable, writable) in ready {
                self.process_event(now, token, readable, writable);
            }
            loop {
                match self.inbox.try_recv() {
                    Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Ok(command) => self.handle_command(command),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            for outcome in self.resolver.handle_timeout(now) {
                self.carry_out(now, outcome);
            }
            self.expire_clients(now);
        }
    }

    /// The earliest of the resolver's deadline and the TCP clients' idle
    /// deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let idle = self
            .socks
            .values()
            .filter_map(|s| match s {
                Sock::Client(c) => c.last_active.checked_add(TCP_IDLE),
                _ => None,
            })
            .min();
        match (self.resolver.poll_timeout(), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SetRecords(records) => self.resolver.set_records(records),
            Command::AddSandbox {
                sandbox,
                netns,
                done,
            } => {
                let result = self.add_sandbox(sandbox, &netns);
                if let Err(e) = &result {
                    tracing::warn!(%sandbox, netns = %netns.display(), error = %e, "dns listeners not opened");
                }
                let _ = done.send(result);
            }
            Command::RemoveSandbox(sandbox, ack) => {
                self.remove_sandbox(sandbox);
                let _ = ack.send(());
            }
            Command::Stats(reply) => {
                let _ = reply.send(DnsdStats {
                    resolver: self.resolver.stats().clone(),
                    server: self.stats.clone(),
                    sandboxes: self.sandboxes.len(),
                    tcp_clients: self
                        .socks
                        .values()
                        .filter(|s| matches!(s, Sock::Client(_)))
                        .count(),
                    upstream_sockets: self.shared.len() + self.tcp_upstreams,
                });
            }
            // Handled by the loop.
            Command::Shutdown => {}
        }
    }

    fn register(&mut self, mut sock: Sock, interest: Interest) -> io::Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(sock.source(), token, interest)?;
        self.socks.insert(token, sock);
        Ok(token)
    }

    fn close(&mut self, token: Token) -> Option<Sock> {
        let mut sock = self.socks.remove(&token)?;
        let _ = self.poll.registry().deregister(sock.source());
        Some(sock)
    }

    fn add_sandbox(&mut self, sandbox: SandboxId, path: &Path) -> Result<Listening, DnsdError> {
        if let Some(s) = self.sandboxes.get(&sandbox) {
            let local = |t: &Token| match self.socks.get(t) {
                Some(Sock::Udp { socket, .. }) => socket.local_addr().ok(),
                Some(Sock::Listener { listener, .. }) => listener.local_addr().ok(),
                _ => None,
            };
            if let (Some(udp), Some(tcp)) = (local(&s.udp), local(&s.listener)) {
                return Ok(Listening { udp, tcp });
            }
        }
        let netns = Netns::open(path)?;
        let listen = self.config.listen;
        if listen.ip().is_loopback() {
            Netlink::in_netns(&netns)?.set_up("lo", true)?;
        }
        let bind_err = |source| DnsdError::Bind {
            addr: listen,
            source,
        };
        let (udp, listener) = run_in(&netns, || {
            let udp = std::net::UdpSocket::bind(listen)?;
            udp.set_nonblocking(true)?;
            // The TCP listener takes the UDP socket's port, so that with
            // port 0 both end up on the same one.
            let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
            tcp.set_nonblocking(true)?;
            Ok::<_, io::Error>((udp, tcp))
        })?
        .map_err(bind_err)?;
        let listening = Listening {
            udp: udp.local_addr().map_err(bind_err)?,
            tcp: listener.local_addr().map_err(bind_err)?,
        };
        let udp = self
            .register(
                Sock::Udp {
                    sandbox,
                    socket: UdpSocket::from_std(udp),
                },
                Interest::READABLE,
            )
            .map_err(bind_err)?;
        let listener = match self.register(
            Sock::Listener {
                sandbox,
                listener: TcpListener::from_std(listener),
            },
            Interest::READABLE,
        ) {
            Ok(t) => t,
            Err(e) => {
                self.close(udp);
                return Err(bind_err(e));
            }
        };
        // Replacing an entry whose sockets were unusable closes them.
        self.remove_sandbox(sandbox);
        self.sandboxes.insert(
            sandbox,
            SandboxSocks {
                netns,
                udp,
                listener,
                clients: HashMap::new(),
            },
        );
        tracing::debug!(%sandbox, udp = %listening.udp, tcp = %listening.tcp, "dns listening");
        Ok(listening)
    }

    /// Closes a sandbox's listeners and clients. Forwards it has in flight
    /// run to their end; their replies find no socket and are dropped.
    fn remove_sandbox(&mut self, sandbox: SandboxId) {
        let Some(s) = self.sandboxes.remove(&sandbox) else {
            return;
        };
        self.close(s.udp);
        self.close(s.listener);
        for token in s.clients.into_values() {
            self.close(token);
        }
        let gone: Vec<(UpstreamKey, Token)> = self
            .shared
            .iter()
            .filter(|(k, _)| k.sandbox == Some(sandbox))
            .map(|(k, t)| (*k, *t))
            .collect();
        for (key, token) in gone {
            self.shared.remove(&key);
            self.udp_pending.retain(|(t, _), _| *t != token);
            self.close(token);
        }
    }

    fn process_event(&mut self, now: Instant, token: Token, readable: bool, writable: bool) {
        let kind = match self.socks.get(&token) {
            None => return,
            Some(Sock::Udp { .. }) => 0,
            Some(Sock::Listener { .. }) => 1,
            Some(Sock::Client(_)) => 2,
            Some(Sock::UpstreamUdp { .. }) => 3,
            Some(Sock::UpstreamTcp(_)) => 4,
        };
        match (kind, readable, writable) {
            (0, true, _) => self.read_udp(now, token),
            (1, true, _) => self.accept(now, token),
            (2, r, w) => {
                if w {
                    self.flush_client(token);
                }
                if r {
                    self.read_client(now, token);
                }
            }
            (3, true, _) => self.read_upstream_udp(now, token),
            (4, r, w) => self.upstream_tcp_ready(now, token, r, w),
            _ => {}
        }
    }

    /// Queries on a sandbox's UDP socket.
    fn read_udp(&mut self, now: Instant, token: Token) {
        for _ in 0..BATCH {
            let Some(Sock::Udp { sandbox, socket }) = self.socks.get(&token) else {
                return;
            };
            let sandbox = *sandbox;
            let (n, peer) = match socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.stats.receive_errors += 1;
                    return;
                }
            };
            let client = Client {
                sandbox,
                addr: peer,
            };
            let bytes = self.buf.get(..n).unwrap_or_default();
            let outcome = self
                .resolver
                .handle_query(now, client, Transport::Udp, bytes);
            self.carry_out(now, outcome);
        }
        self.again.push(token);
    }

    /// Carries out what the resolver decided, and what follows from it
    /// (a dial that fails moves the query to its next upstream).
    fn carry_out(&mut self, now: Instant, outcome: Outcome) {
        let mut queue = vec![outcome];
        while let Some(outcome) = queue.pop() {
            if let Some(id) = outcome.close {
                self.end_forward(id);
            }
            match outcome.send {
                None => {}
                Some(Transmit::Reply(reply)) => self.reply(reply),
                Some(Transmit::Forward(forward)) => {
                    let id = forward.id;
                    match self.dial(forward) {
                        Ok(()) => {}
                        Err(DialError::Full) => {
                            self.stats.upstream_refused += 1;
                            queue.push(self.resolver.refuse(id));
                        }
                        Err(DialError::Io(e)) => {
                            tracing::debug!(forward = %id, error = %e, "dns: upstream not reached");
                            self.stats.dial_errors += 1;
                            queue.push(self.resolver.handle_upstream_error(now, id));
                        }
                    }
                }
            }
        }
    }

    /// Sends a reply to its client.
    fn reply(&mut self, reply: Reply) {
        let Some(s) = self.sandboxes.get(&reply.client.sandbox) else {
            self.stats.reply_errors += 1;
            return;
        };
        match reply.transport {
            Transport::Udp => {
                let sent = match self.socks.get(&s.udp) {
                    Some(Sock::Udp { socket, .. }) => {
                        socket.send_to(&reply.bytes, reply.client.addr).is_ok()
                    }
                    _ => false,
                };
                if !sent {
                    self.stats.reply_errors += 1;
                }
            }
            Transport::Tcp => {
                let Some(&token) = s.clients.get(&reply.client.addr) else {
                    self.stats.reply_errors += 1;
                    return;
                };
                let queued = match self.socks.get_mut(&token) {
                    Some(Sock::Client(c)) => {
                        dns::tcp::push_frame(&mut c.output, &reply.bytes, MAX_TCP_BACKLOG)
                    }
                    _ => false,
                };
                if queued {
                    self.flush_client(token);
                } else {
                    self.stats.reply_errors += 1;
                }
            }
        }
    }
}
