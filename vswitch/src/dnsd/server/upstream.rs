//! Upstream dials: one socket per forward attempt, opened from the
//! sandbox's namespace (or the host's) on the DNS thread itself, and the
//! replies read from it.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use dns::{DialFrom, Forward, ForwardId, Transport};
use mio::Interest;
use mio::Token;
use mio::net::{TcpStream, UdpSocket};
use nix::sched::CloneFlags;

use super::clients::write_out;
use super::{BATCH, MAX_MESSAGE, Server, Sock};
use crate::netns::Netns;

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
    /// Opens a socket for one forward attempt, in the namespace the
    /// upstream is dialled from, and sends the query.
    pub(super) fn dial(&mut self, f: Forward) -> io::Result<()> {
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
                    Some(ns) => inside(&self.home, ns, open)?,
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
                    Some(ns) => inside(&self.home, ns, || TcpStream::connect(addr))?,
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
    pub(super) fn read_upstream_udp(&mut self, now: Instant, token: Token) {
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
        if failed && self.forwards.get(&id) == Some(&token) {
            let outcome = self.resolver.handle_upstream_error(now, id);
            self.carry_out(now, outcome);
        }
    }
}
