//! The embedded DNS server's thread: the sockets around the sans-IO
//! [`dns::Resolver`] (docker-reference §6).
//!
//! ```text
//!  daemon (under its lock)                     dns thread (mio Poll)
//!  ───────────────────────                     ─────────────────────
//!  model ─► records::build ─► Arc<Records> ─► SetRecords ─► Resolver::set_records
//!  sandbox gets a user-network endpoint ────► AddSandbox ─► UDP + TCP 127.0.0.11:53
//!  sandbox removed / no user network left ──► RemoveSandbox   bound inside its netns
//!
//!  query on a sandbox's socket ─► handle_query ─► Outcome ─► reply on that socket
//!                                                       └──► forward: a fresh socket
//!  upstream reply / error ─► handle_upstream(_error)        per attempt, opened in
//!  timer (poll_timeout) ───► handle_timeout                 the host netns or the
//!                                                           sandbox's (run_in)
//! ```
//!
//! - One thread serves every sandbox. Its [`Dnsd`] handle is a mailbox (a
//!   channel plus a `mio::Waker`, as the datapath's): [`Dnsd::set_records`]
//!   swaps the whole record store, [`Dnsd::add_sandbox`] and
//!   [`Dnsd::remove_sandbox`] wait until the thread has bound or closed the
//!   sandbox's sockets.
//! - The listeners are bound to 127.0.0.11 port **53** directly inside the
//!   sandbox's namespace (Docker binds random ports and DNATs port 53 to
//!   them with iptables; vswitch installs no firewall rules). 127.0.0.0/8
//!   is a local route on `lo` as soon as `lo` is up, so the address needs
//!   no configuring; the thread brings `lo` up to be sure.
//! - TCP: two-byte length framing, at most [`MAX_TCP_CLIENTS`] connections
//!   per sandbox (more are closed at once), a connection idle for
//!   [`TCP_IDLE`] with no query of its own being forwarded is closed (as
//!   aardvark-dns does).
//! - Nothing read from a socket can panic the thread: the bytes go to the
//!   resolver, which counts and drops what it cannot use; socket errors are
//!   counted in [`ServerStats`] and the socket concerned is closed.
//!
//! [`records`] derives the record store and each sandbox's resolv.conf
//! from the controller's model; the daemon keeps them in step with it.

pub mod records;
mod server;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use dns::{Records, SandboxId, Stats};

use crate::netconf::NetconfError;
use crate::netns::NetnsError;

pub use server::ServerStats;

/// Where the embedded server listens inside every sandbox.
pub const LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    dns::resolv_conf::EMBEDDED_DNS,
    53,
));

/// TCP connections one sandbox may hold open to the server.
pub const MAX_TCP_CLIENTS: usize = 16;

/// How long the control thread waits for the DNS thread to act on a
/// command (opening a sandbox's listeners enters its namespace and binds
/// two sockets: milliseconds).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP client that sent nothing for this long, and has no query being
/// forwarded, is disconnected.
pub const TCP_IDLE: Duration = Duration::from_secs(3);

/// Settings of the DNS thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsdConfig {
    /// The address bound in each sandbox ([`LISTEN`]; tests use port 0).
    pub listen: SocketAddr,
    /// The resolver's tunables (Docker's by default).
    pub resolver: dns::ResolverConfig,
}

impl Default for DnsdConfig {
    fn default() -> Self {
        Self {
            listen: LISTEN,
            resolver: dns::ResolverConfig::default(),
        }
    }
}

/// Why a sandbox's listeners could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsdError {
    /// The sandbox's namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `lo` could not be brought up in the namespace.
    #[error("bringing lo up: {0}")]
    Loopback(#[from] NetconfError),
    /// Binding or registering a socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The DNS thread has stopped.
    #[error("the dns thread has stopped")]
    Stopped,
}

/// The addresses a sandbox's listeners were bound to (the configured
/// address, with the port the kernel chose when it was 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The UDP socket's address.
    pub udp: SocketAddr,
    /// The TCP listener's address.
    pub tcp: SocketAddr,
}

/// What the DNS thread counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsdStats {
    /// The resolver's counters.
    pub resolver: Stats,
    /// The thread's own counters (sockets).
    pub server: ServerStats,
    /// Sandboxes with listeners.
    pub sandboxes: usize,
    /// TCP clients connected.
    pub tcp_clients: usize,
    /// Upstream sockets open.
    pub upstream_sockets: usize,
}

/// Something for the DNS thread to do.
#[derive(Debug)]
pub enum Command {
    /// Answer from this store from now on.
    SetRecords(Arc<Records>),
    /// Open the listeners of `sandbox` inside the namespace at `netns`;
    /// the result is sent on `done`. A sandbox that has them already is
    /// left as it is.
    AddSandbox {
        /// The sandbox, as the records name it.
        sandbox: SandboxId,
        /// Its namespace file.
        netns: PathBuf,
        /// Where the result goes.
        done: Sender<Result<Listening, DnsdError>>,
    },
    /// Close the listeners and TCP clients of `sandbox` (and let go of its
    /// namespace), then acknowledge on the sender.
    RemoveSandbox(SandboxId, Sender<()>),
    /// Answer with the counters.
    Stats(Sender<DnsdStats>),
    /// Leave the loop.
    Shutdown,
}

/// The handle on the DNS thread, cloneable.
#[derive(Clone, Debug)]
pub struct Dnsd {
    tx: Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl Dnsd {
    /// Starts the DNS thread with no records and no sandboxes.
    ///
    /// # Errors
    /// When the poll instance, its waker or the thread cannot be created.
    pub fn spawn(config: DnsdConfig) -> io::Result<(Self, JoinHandle<io::Result<()>>)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (server, waker) = server::Server::new(config, rx)?;
        let thread = std::thread::Builder::new()
            .name("dns".to_owned())
            .spawn(move || server.run())?;
        Ok((
            Self {
                tx,
                waker: Arc::new(waker),
            },
            thread,
        ))
    }

    /// Queues `command` and wakes the thread.
    ///
    /// # Errors
    /// `BrokenPipe` when the thread has exited.
    pub fn send(&self, command: Command) -> io::Result<()> {
        self.tx
            .send(command)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "dns thread has stopped"))?;
        self.waker.wake()
    }

    /// Sends a command and waits for its answer, at most [`ASK_TIMEOUT`].
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> io::Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(make(tx))?;
        rx.recv_timeout(ASK_TIMEOUT).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the dns thread did not answer within {} s",
                    ASK_TIMEOUT.as_secs()
                ),
            ),
            crossbeam_channel::RecvTimeoutError::Disconnected => {
                io::Error::new(io::ErrorKind::BrokenPipe, "dns thread has stopped")
            }
        })
    }

    /// Replaces the record store.
    ///
    /// # Errors
    /// `BrokenPipe` when the thread has exited.
    pub fn set_records(&self, records: Arc<Records>) -> io::Result<()> {
        self.send(Command::SetRecords(records))
    }

    /// Opens `sandbox`'s listeners inside the namespace at `netns` and
    /// waits until they are bound.
    ///
    /// # Errors
    /// When the namespace cannot be entered, `lo` cannot be brought up or
    /// a socket cannot be bound; [`DnsdError::Stopped`].
    pub fn add_sandbox(
        &self,
        sandbox: SandboxId,
        netns: impl Into<PathBuf>,
    ) -> Result<Listening, DnsdError> {
        let netns = netns.into();
        self.ask(|done| Command::AddSandbox {
            sandbox,
            netns,
            done,
        })
        .map_err(|_| DnsdError::Stopped)?
    }

    /// Closes `sandbox`'s sockets and waits until they are closed.
    ///
    /// # Errors
    /// `BrokenPipe` when the thread has exited.
    pub fn remove_sandbox(&self, sandbox: SandboxId) -> io::Result<()> {
        self.ask(|ack| Command::RemoveSandbox(sandbox, ack))
    }

    /// The counters.
    ///
    /// # Errors
    /// `BrokenPipe` when the thread has exited.
    pub fn stats(&self) -> io::Result<DnsdStats> {
        self.ask(Command::Stats)
    }

    /// Asks the thread to stop.
    pub fn shutdown(&self) {
        let _ = self.send(Command::Shutdown);
    }
}

#[cfg(test)]
#[path = "../../../tests/src/ci.rs"]
#[allow(dead_code, unreachable_pub)]
mod ci;

#[cfg(test)]
mod tests {
    use super::ci;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};

    use dns::{DialFrom, Endpoint, Network, NetworkId, Sandbox, Upstream};

    use super::*;

    /// A query for `name` (one label) of type `qtype`, id 0x4242, RD set.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.push(u8::try_from(name.len()).unwrap());
        q.extend_from_slice(name.as_bytes());
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    /// The reply to `query`: NOERROR, one A record 192.0.2.7.
    fn upstream_reply(query: &[u8]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        r
    }

    fn tcp_ask(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let len = u16::try_from(q.len()).unwrap();
        s.write_all(&len.to_be_bytes()).unwrap();
        s.write_all(q).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut reply).unwrap();
        reply
    }

    /// A TCP client that sends a runt frame and half a frame, then leaves.
    fn tcp_frame_garbage(addr: SocketAddr) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[0, 1, 0xff, 0x10, 0x00, 1, 2]).unwrap();
    }

    /// The thread in the test's own namespace, on 127.0.0.1 with a port
    /// the kernel picks, and a fake upstream on 127.0.0.1 dialled from the
    /// host: local answers and forwards over UDP and TCP. Entering a
    /// namespace needs root; skipped without.
    #[test]
    fn answers_and_forwards_over_udp_and_tcp() {
        if !ci::can_run(
            "answers_and_forwards_over_udp_and_tcp",
            (!nix::unistd::geteuid().is_root()).then_some("root"),
        ) {
            return;
        }
        let upstream_udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let upstream_addr = upstream_udp.local_addr().unwrap();
        let upstream_tcp = TcpListener::bind(upstream_addr).unwrap();

        let mut records = Records::new();
        records
            .add_network(
                NetworkId(1),
                Network {
                    name: "net".to_owned(),
                    internal: false,
                    ipv6: false,
                },
            )
            .unwrap();
        let sid = SandboxId(7);
        records
            .add_sandbox(
                sid,
                Sandbox {
                    upstreams: vec![Upstream {
                        addr: upstream_addr,
                        dial_from: DialFrom::Host,
                    }],
                    ..Sandbox::default()
                },
            )
            .unwrap();
        records
            .add_endpoint(Endpoint {
                sandbox: sid,
                network: NetworkId(1),
                name: "web".to_owned(),
                aliases: vec![],
                short_id: "0123456789ab".to_owned(),
                hostname: None,
                ipv4: Ipv4Addr::new(10, 9, 0, 2),
                ipv6: None,
            })
            .unwrap();

        let (dnsd, thread) = Dnsd::spawn(DnsdConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            ..DnsdConfig::default()
        })
        .unwrap();
        dnsd.set_records(Arc::new(records)).unwrap();
        let at = dnsd.add_sandbox(sid, "/proc/self/ns/net").unwrap();
        assert_eq!(dnsd.add_sandbox(sid, "/proc/self/ns/net").unwrap(), at);

        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1500];

        // Garbage first (from another socket: it may get a FORMERR):
        // counted, and the thread goes on.
        let junk = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        junk.send_to(&[1, 2, 3], at.udp).unwrap();
        junk.send_to(&[0xff; 40], at.udp).unwrap();
        tcp_frame_garbage(at.tcp);

        // A local name over UDP and TCP.
        client.send_to(&query("web", 1), at.udp).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(buf[..2], [0x42, 0x42]);
        assert_eq!(buf[n - 4..n], [10, 9, 0, 2]);
        let reply = tcp_ask(at.tcp, &query("web", 1));
        assert_eq!(reply[reply.len() - 4..], [10, 9, 0, 2]);

        // Forwarded over UDP: the upstream sees our id, the client its own.
        client.send_to(&query("other", 1), at.udp).unwrap();
        upstream_udp
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (n, from) = upstream_udp.recv_from(&mut buf).unwrap();
        upstream_udp
            .send_to(&upstream_reply(&buf[..n]), from)
            .unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(buf[..2], [0x42, 0x42]);
        assert_eq!(buf[n - 4..n], [192, 0, 2, 7]);

        // Forwarded over TCP.
        let server = std::thread::spawn(move || {
            let (mut s, _) = upstream_tcp.accept().unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut q).unwrap();
            let r = upstream_reply(&q);
            s.write_all(&u16::try_from(r.len()).unwrap().to_be_bytes())
                .unwrap();
            s.write_all(&r).unwrap();
        });
        let reply = tcp_ask(at.tcp, &query("other", 1));
        assert_eq!(reply[..2], [0x42, 0x42]);
        assert_eq!(reply[reply.len() - 4..], [192, 0, 2, 7]);
        server.join().unwrap();

        let stats = dnsd.stats().unwrap();
        assert_eq!(stats.sandboxes, 1);
        assert_eq!(stats.resolver.local_replies, 2);
        assert_eq!(stats.resolver.relayed, 2);
        assert!(stats.resolver.drops.total() + stats.resolver.formerr >= 2);

        dnsd.remove_sandbox(sid).unwrap();
        assert_eq!(dnsd.stats().unwrap().sandboxes, 0);
        dnsd.shutdown();
        thread.join().unwrap().unwrap();
    }
}
