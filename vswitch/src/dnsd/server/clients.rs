//! TCP clients in the sandboxes: accepting (at most [`MAX_TCP_CLIENTS`]
//! per sandbox), reading length-prefixed queries, writing replies back
//! within [`MAX_TCP_BACKLOG`], and closing idle ones.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use dns::{Client, SandboxId, Transport};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{BATCH, MAX_MESSAGE, Server, Sock};
use crate::dnsd::{MAX_TCP_CLIENTS, TCP_IDLE};

/// A TCP connection from a client in a sandbox.
#[derive(Debug)]
pub(super) struct TcpClient {
    pub(super) sandbox: SandboxId,
    pub(super) peer: SocketAddr,
    pub(super) stream: TcpStream,
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    pub(super) last_active: Instant,
}

/// Writes as much of `output` as the socket takes, removing what was
/// written. `Ok` also when the socket is full (the rest waits for the
/// next writable event).
pub(super) fn write_out(stream: &mut TcpStream, output: &mut Vec<u8>) -> io::Result<()> {
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

impl Server {
    /// New TCP clients of a sandbox.
    pub(super) fn accept(&mut self, now: Instant, token: Token) {
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

    pub(super) fn close_client(&mut self, token: Token) {
        if let Some(Sock::Client(c)) = self.close(token)
            && let Some(s) = self.sandboxes.get_mut(&c.sandbox)
            && s.clients.get(&c.peer) == Some(&token)
        {
            s.clients.remove(&c.peer);
        }
    }

    /// Reads what a TCP client sent and handles each complete message.
    pub(super) fn read_client(&mut self, now: Instant, token: Token) {
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
    pub(super) fn flush_client(&mut self, token: Token) {
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
    pub(super) fn expire_clients(&mut self, now: Instant) {
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
}
