//! Upstream dials, opened from the sandbox's namespace (or the host's) on
//! the DNS thread itself, and the replies read from them.
//!
//! Over UDP each sandbox has one socket per upstream, made on its first
//! forward and kept until the sandbox goes: a flood of queries costs
//! pending entries, not descriptors. Each attempt on it gets a transaction
//! id unused on that socket (rewritten on the way out and back), so replies
//! find their attempt. Over TCP each attempt has its own connection, as a
//! TCP client has. Either way the sockets open never exceed
//! [`DnsdConfig::max_upstream_sockets`](crate::dnsd::DnsdConfig::max_upstream_sockets).

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use dns::{DialFrom, Forward, ForwardId, SandboxId, Transport};
use mio::Interest;
use mio::Token;
use mio::net::{TcpStream, UdpSocket};
use nix::sched::CloneFlags;
use rand::RngExt;

use super::clients::write_out;
use super::{BATCH, MAX_MESSAGE, Server, Sock};
use crate::netns::Netns;

/// Which socket a UDP forward goes out of: the asking sandbox's (or, for an
/// upstream dialled from the host, the host's) to one upstream address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct UpstreamKey {
    /// `None` for the host's namespace.
    pub(super) sandbox: Option<SandboxId>,
    /// The upstream.
    pub(super) addr: SocketAddr,
}

/// Where a forward attempt in flight waits for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// On a shared UDP socket, under this transaction id.
    Udp(Token, u16),
    /// On its own TCP connection.
    Tcp(Token),
}

/// Why an attempt was not sent.
#[derive(Debug)]
pub(super) enum DialError {
    /// No socket may be opened (the cap), or no transaction id is free.
    Full,
    /// The socket could not be opened or sent on.
    Io(io::Error),
}

impl From<io::Error> for DialError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A TCP connection to an upstream for one forward attempt.
#[derive(Debug)]
pub(super) struct UpstreamTcp {
    pub(super) id: ForwardId,
    pub(super) stream: TcpStream,
    pub(super) output: Vec<u8>,
    pub(super) input: Vec<u8>,
}

/// Runs `f` with the calling thread inside `netns`, then puts the thread
/// back in `home`.
///
/// Upstream sockets are dialled from inside a sandbox; entering its
/// namespace on the DNS thread itself costs two `setns` calls, where a
/// helper thread per dial cost a thread creation (and, under a flood,
/// thousands of them).
pub(super) fn inside<T>(
    home: &Netns,
    netns: &Netns,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    nix::sched::setns(netns.fd(), CloneFlags::CLONE_NEWNET)?;
    let result = f();
    if let Err(e) = nix::sched::setns(home.fd(), CloneFlags::CLONE_NEWNET) {
        // Every later socket would be opened in the sandbox: stop here, so
        // a service manager restarts the daemon.
        tracing::error!(error = %e, "dns: cannot return to the daemon's network namespace");
        std::process::abort();
    }
    result
}

impl Server {
    /// Sends one forward attempt: on the shared UDP socket to its upstream
    /// (opened on first use), or on a new TCP connection.
    pub(super) fn dial(&mut self, f: Forward) -> Result<(), DialError> {
        let addr = f.upstream.addr;
        let sandbox = match f.upstream.dial_from {
            DialFrom::Host => None,
            DialFrom::Sandbox => Some(f.sandbox),
        };
        if sandbox.is_some_and(|s| !self.sandboxes.contains_key(&s)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "sandbox is gone").into());
        }
        match f.transport {
            Transport::Udp => self.send_udp(UpstreamKey { sandbox, addr }, f),
            Transport::Tcp => {
                if self.shared.len() + self.tcp_upstreams >= self.config.max_upstream_sockets {
                    return Err(DialError::Full);
                }
                let len = u16::try_from(f.bytes.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
                let stream = match sandbox.and_then(|s| self.sandboxes.get(&s)) {
                    Some(s) => inside(&self.home, &s.netns, || TcpStream::connect(addr))?,
                    None => TcpStream::connect(addr)?,
                };
                let mut output = Vec::with_capacity(f.bytes.len() + 2);
                output.extend_from_slice(&len.to_be_bytes());
                output.extend_from_slice(&f.bytes);
                let sock = Sock::UpstreamTcp(UpstreamTcp {
                    id: f.id,
                    stream,
                    output,
                    input: Vec::new(),
                });
                let token = self.register(sock, Interest::READABLE | Interest::WRITABLE)?;
                self.tcp_upstreams += 1;
                self.forwards.insert(f.id, Route::Tcp(token));
                Ok(())
            }
        }
    }

    /// The shared UDP socket for `key`, opened now if it is not yet.
    fn shared_socket(&mut self, key: UpstreamKey) -> Result<Token, DialError> {
        if let Some(&token) = self.shared.get(&key) {
            return Ok(token);
        }
        if self.shared.len() + self.tcp_upstreams >= self.config.max_upstream_sockets {
            return Err(DialError::Full);
        }
        let open = || {
            let any: SocketAddr = if key.addr.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = std::net::UdpSocket::bind(any)?;
            socket.connect(key.addr)?;
            socket.set_nonblocking(true)?;
            Ok::<_, io::Error>(socket)
        };
        let socket = match key.sandbox.and_then(|s| self.sandboxes.get(&s)) {
            Some(s) => inside(&self.home, &s.netns, open)?,
            None => open()?,
        };
        let sock = Sock::UpstreamUdp {
            socket: UdpSocket::from_std(socket),
        };
        let token = self.register(sock, Interest::READABLE)?;
        self.shared.insert(key, token);
        Ok(token)
    }

    /// Sends a UDP attempt under a transaction id free on its socket.
    fn send_udp(&mut self, key: UpstreamKey, mut f: Forward) -> Result<(), DialError> {
        let token = self.shared_socket(key)?;
        let Some(resolver_id) = f.bytes.first_chunk::<2>().map(|b| u16::from_be_bytes(*b)) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no header").into());
        };
        // At most `max_pending` ids are taken of 65,536: a free one is
        // found in a try or two.
        let wire_id = (0..32)
            .map(|_| self.ids.random::<u16>())
            .find(|id| !self.udp_pending.contains_key(&(token, *id)))
            .ok_or(DialError::Full)?;
        if let Some(head) = f.bytes.first_chunk_mut::<2>() {
            *head = wire_id.to_be_bytes();
        }
        let Some(Sock::UpstreamUdp { socket, .. }) = self.socks.get(&token) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "socket gone").into());
        };
        socket.send(&f.bytes)?;
        self.udp_pending
            .insert((token, wire_id), (f.id, resolver_id));
        self.forwards.insert(f.id, Route::Udp(token, wire_id));
        Ok(())
    }

    /// Forgets a forward attempt that is over: its transaction id on a
    /// shared socket, or its TCP connection.
    pub(super) fn end_forward(&mut self, id: ForwardId) {
        match self.forwards.remove(&id) {
            Some(Route::Udp(token, wire_id)) => {
                self.udp_pending.remove(&(token, wire_id));
            }
            Some(Route::Tcp(token)) if self.close(token).is_some() => {
                self.tcp_upstreams = self.tcp_upstreams.saturating_sub(1);
            }
            Some(Route::Tcp(_)) | None => {}
        }
    }

    /// Replies on a shared UDP socket.
    pub(super) fn read_upstream_udp(&mut self, now: Instant, token: Token) {
        for _ in 0..BATCH {
            let Some(Sock::UpstreamUdp { socket, .. }) = self.socks.get(&token) else {
                return;
            };
            match socket.recv(&mut self.buf) {
                Ok(n) => {
                    let wire_id = self
                        .buf
                        .first_chunk::<2>()
                        .filter(|_| n >= 2)
                        .map(|b| u16::from_be_bytes(*b));
                    let Some(&(id, resolver_id)) =
                        wire_id.and_then(|w| self.udp_pending.get(&(token, w)))
                    else {
                        self.stats.upstream_stray += 1;
                        continue;
                    };
                    if let Some(head) = self.buf.first_chunk_mut::<2>() {
                        *head = resolver_id.to_be_bytes();
                    }
                    let bytes = self.buf.get(..n).unwrap_or_default();
                    let outcome = self.resolver.handle_upstream(now, id, bytes);
                    self.carry_out(now, outcome);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP unreachable, mostly: the upstream is not there, for
                // every attempt waiting on this socket.
                Err(_) => {
                    let failed: Vec<ForwardId> = self
                        .udp_pending
                        .iter()
                        .filter(|((t, _), _)| *t == token)
                        .map(|(_, (id, _))| *id)
                        .collect();
                    for id in failed {
                        let outcome = self.resolver.handle_upstream_error(now, id);
                        self.carry_out(now, outcome);
                    }
                }
            }
        }
        self.again.push(token);
    }

    /// An upstream TCP connection is connected, writable or readable.
    pub(super) fn upstream_tcp_ready(
        &mut self,
        now: Instant,
        token: Token,
        readable: bool,
        writable: bool,
    ) {
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
        if failed && self.forwards.get(&id) == Some(&Route::Tcp(token)) {
            let outcome = self.resolver.handle_upstream_error(now, id);
            self.carry_out(now, outcome);
        }
    }
}
