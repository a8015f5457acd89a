//! The DNS thread's loop: sockets, their tokens, and carrying out the
//! resolver's [`Outcome`]s.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, TryRecvError};
use dns::{
    Client, DialFrom, Forward, ForwardId, Outcome, Reply, Resolver, SandboxId, Transmit, Transport,
};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use rand::SeedableRng;
use rand::rngs::{StdRng, SysRng};

use super::{Command, DnsdConfig, DnsdError, DnsdStats, Listening, MAX_TCP_CLIENTS, TCP_IDLE};
use crate::netconf::Netlink;
use crate::netns::{Netns, run_in};

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
    /// [`MAX_TCP_CLIENTS`] already.
    pub tcp_refused: u64,
    /// TCP clients disconnected for being idle.
    pub tcp_idle_closed: u64,
    /// TCP clients disconnected for a protocol or socket error.
    pub tcp_errors: u64,
    /// Upstream sockets that could not be opened or sent on.
    pub dial_errors: u64,
    /// Receive errors on the listeners.
    pub receive_errors: u64,
}

/// A TCP connection from a client in a sandbox.
#[derive(Debug)]
struct TcpClient {
    sandbox: SandboxId,
    peer: SocketAddr,
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    last_active: Instant,
}

/// A TCP connection to an upstream for one forward attempt.
#[derive(Debug)]
struct UpstreamTcp {
    id: ForwardId,
    stream: TcpStream,
    output: Vec<u8>,
    input: Vec<u8>,
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
    UpstreamUdp {
        id: ForwardId,
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
    poll: Poll,
    inbox: Receiver<Command>,
    resolver: Resolver<StdRng>,
    socks: HashMap<Token, Sock>,
    next_token: usize,
    sandboxes: HashMap<SandboxId, SandboxSocks>,
    forwards: HashMap<ForwardId, Token>,
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
        Ok((
            Self {
                config,
                poll,
                inbox,
                resolver,
                socks: HashMap::new(),
                next_token: 1,
                sandboxes: HashMap::new(),
                forwards: HashMap::new(),
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
                    upstream_sockets: self.forwards.len(),
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

    /// New TCP clients of a sandbox.
    fn accept(&mut self, now: Instant, token: Token) {
        for _ in 0..BATCH {
            let Some(Sock::Listener { sandbox, listener }) = self.socks.get(&token) else {
                return;
            };
            let sandbox = *sandbox;
            let (stream, peer) = match listener.accept() {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: try again later
                    // rather than spin.
                    tracing::warn!(%sandbox, error = %e, "dns: accept failed");
                    self.stats.receive_errors += 1;
                    return;
                }
            };
            let full = self
                .sandboxes
                .get(&sandbox)
                .is_none_or(|s| s.clients.len() >= MAX_TCP_CLIENTS);
            if full {
                self.stats.tcp_refused += 1;
                continue;
            }
            let client = TcpClient {
                sandbox,
                peer,
                stream,
                input: Vec::new(),
                output: Vec::new(),
                last_active: now,
            };
            match self.register(
                Sock::Client(client),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(t) => {
                    if let Some(s) = self.sandboxes.get_mut(&sandbox) {
                        s.clients.insert(peer, t);
                    }
                }
                Err(_) => self.stats.tcp_errors += 1,
            }
        }
        self.again.push(token);
    }

    fn close_client(&mut self, token: Token) {
        if let Some(Sock::Client(c)) = self.close(token)
            && let Some(s) = self.sandboxes.get_mut(&c.sandbox)
            && s.clients.get(&c.peer) == Some(&token)
        {
            s.clients.remove(&c.peer);
        }
    }

    /// Reads what a TCP client sent and handles each complete message.
    fn read_client(&mut self, now: Instant, token: Token) {
        let mut messages = Vec::new();
        let mut closed = false;
        let (sandbox, peer) = {
            let Some(Sock::Client(c)) = self.socks.get_mut(&token) else {
                return;
            };
            let mut reads = 0;
            loop {
                if reads == BATCH || c.input.len() > 2 * (MAX_MESSAGE + 2) {
                    self.again.push(token);
                    break;
                }
                reads += 1;
                match c.stream.read(&mut self.buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.input
                            .extend_from_slice(self.buf.get(..n).unwrap_or_default());
                        c.last_active = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.stats.tcp_errors += 1;
                        closed = true;
                        break;
                    }
                }
            }
            while let Some(message) = dns::tcp::take_frame(&mut c.input) {
                messages.push(message);
            }
            (c.sandbox, c.peer)
        };
        let client = Client {
            sandbox,
            addr: peer,
        };
        for message in messages {
            let outcome = self
                .resolver
                .handle_query(now, client, Transport::Tcp, &message);
            self.carry_out(now, outcome);
        }
        if closed {
            // Replies already written stay in the kernel's buffer; a
            // client that closed its side wants nothing more.
            self.close_client(token);
        }
    }

    /// Writes a TCP client's pending replies until the socket is full.
    fn flush_client(&mut self, token: Token) {
        let failed = {
            let Some(Sock::Client(c)) = self.socks.get_mut(&token) else {
                return;
            };
            write_out(&mut c.stream, &mut c.output).is_err()
        };
        if failed {
            self.stats.tcp_errors += 1;
            self.close_client(token);
        }
    }

    /// Disconnects idle TCP clients, unless a query of theirs is being
    /// forwarded.
    fn expire_clients(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .socks
            .iter()
            .filter_map(|(t, s)| match s {
                Sock::Client(c) if c.last_active.checked_add(TCP_IDLE)? <= now => Some(*t),
                _ => None,
            })
            .collect();
        if expired.is_empty() {
            return;
        }
        let busy: HashSet<Client> = self
            .resolver
            .pending()
            .into_iter()
            .filter(|p| p.transport == Transport::Tcp)
            .map(|p| p.client)
            .collect();
        for token in expired {
            let Some(Sock::Client(c)) = self.socks.get_mut(&token) else {
                continue;
            };
            let client = Client {
                sandbox: c.sandbox,
                addr: c.peer,
            };
            if busy.contains(&client) {
                c.last_active = now;
            } else {
                self.stats.tcp_idle_closed += 1;
                self.close_client(token);
            }
        }
    }

    /// Carries out what the resolver decided, and what follows from it
    /// (a dial that fails moves the query to its next upstream).
    fn carry_out(&mut self, now: Instant, outcome: Outcome) {
        let mut queue = vec![outcome];
        while let Some(outcome) = queue.pop() {
            if let Some(id) = outcome.close
                && let Some(token) = self.forwards.remove(&id)
            {
                self.close(token);
            }
            match outcome.send {
                None => {}
                Some(Transmit::Reply(reply)) => self.reply(reply),
                Some(Transmit::Forward(forward)) => {
                    let id = forward.id;
                    if let Err(e) = self.dial(forward) {
                        tracing::debug!(forward = %id, error = %e, "dns: upstream not reached");
                        self.stats.dial_errors += 1;
                        queue.push(self.resolver.handle_upstream_error(now, id));
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

    /// Opens a socket for one forward attempt, in the namespace the
    /// upstream is dialled from, and sends the query.
    fn dial(&mut self, f: Forward) -> io::Result<()> {
        let addr = f.upstream.addr;
        let netns = match f.upstream.dial_from {
            DialFrom::Host => None,
            DialFrom::Sandbox => Some(
                &self
                    .sandboxes
                    .get(&f.sandbox)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "sandbox is gone"))?
                    .netns,
            ),
        };
        let sock = match f.transport {
            Transport::Udp => {
                let open = || {
                    let any: SocketAddr = if addr.is_ipv4() {
                        (Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let socket = std::net::UdpSocket::bind(any)?;
                    socket.connect(addr)?;
                    socket.set_nonblocking(true)?;
                    socket.send(&f.bytes)?;
                    Ok::<_, io::Error>(socket)
                };
                let socket = match netns {
                    Some(ns) => run_in(ns, open).map_err(io::Error::other)??,
                    None => open()?,
                };
                Sock::UpstreamUdp {
                    id: f.id,
                    socket: UdpSocket::from_std(socket),
                }
            }
            Transport::Tcp => {
                let len = u16::try_from(f.bytes.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
                let stream = match netns {
                    Some(ns) => {
                        run_in(ns, || TcpStream::connect(addr)).map_err(io::Error::other)??
                    }
                    None => TcpStream::connect(addr)?,
                };
                let mut output = Vec::with_capacity(f.bytes.len() + 2);
                output.extend_from_slice(&len.to_be_bytes());
                output.extend_from_slice(&f.bytes);
                Sock::UpstreamTcp(UpstreamTcp {
                    id: f.id,
                    stream,
                    output,
                    input: Vec::new(),
                })
            }
        };
        let token = self.register(sock, Interest::READABLE | Interest::WRITABLE)?;
        self.forwards.insert(f.id, token);
        Ok(())
    }

    /// An upstream's UDP reply.
    fn read_upstream_udp(&mut self, now: Instant, token: Token) {
        for _ in 0..BATCH {
            let Some(Sock::UpstreamUdp { id, socket }) = self.socks.get(&token) else {
                return;
            };
            let id = *id;
            let outcome = match socket.recv(&mut self.buf) {
                Ok(n) => {
                    let bytes = self.buf.get(..n).unwrap_or_default();
                    self.resolver.handle_upstream(now, id, bytes)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP unreachable, mostly: the upstream is not there.
                Err(_) => self.resolver.handle_upstream_error(now, id),
            };
            self.carry_out(now, outcome);
        }
        self.again.push(token);
    }

    /// An upstream TCP connection is connected, writable or readable.
    fn upstream_tcp_ready(&mut self, now: Instant, token: Token, readable: bool, writable: bool) {
        let mut replies = Vec::new();
        let (id, failed) = {
            let Some(Sock::UpstreamTcp(u)) = self.socks.get_mut(&token) else {
                return;
            };
            let mut failed = matches!(u.stream.take_error(), Ok(Some(_)) | Err(_));
            // Connected once the peer address is known (mio's rule for a
            // non-blocking connect).
            let connected = !failed && u.stream.peer_addr().is_ok();
            if connected && writable && write_out(&mut u.stream, &mut u.output).is_err() {
                failed = true;
            }
            if connected && readable && !failed {
                loop {
                    match u.stream.read(&mut self.buf) {
                        Ok(0) => {
                            failed = true;
                            break;
                        }
                        Ok(n) => u
                            .input
                            .extend_from_slice(self.buf.get(..n).unwrap_or_default()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                    if u.input.len() > MAX_MESSAGE + 2 {
                        break;
                    }
                }
                while let Some(reply) = dns::tcp::take_frame(&mut u.input) {
                    replies.push(reply);
                }
            }
            (u.id, failed && replies.is_empty())
        };
        for reply in replies {
            let outcome = self.resolver.handle_upstream(now, id, &reply);
            self.carry_out(now, outcome);
        }
        // A connection that failed before it delivered a reply: the
        // attempt failed (if it is still open; a reply may have ended it).
        if failed && self.forwards.get(&id) == Some(&token) {
            let outcome = self.resolver.handle_upstream_error(now, id);
            self.carry_out(now, outcome);
        }
    }
}

/// Writes as much of `output` as the socket takes, removing what was
/// written. `Ok` also when the socket is full (the rest waits for the
/// next writable event).
fn write_out(stream: &mut TcpStream, output: &mut Vec<u8>) -> io::Result<()> {
    while !output.is_empty() {
        match stream.write(output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
