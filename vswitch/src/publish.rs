//! Published ports on the host side: the listening sockets behind `-p`,
//! and the seam to whatever serves them.
//!
//! ```text
//!  vswitch-control: Controller::apply ── nat::publish(…, &mut HostBinder)
//!        │                                   │ bind(): a real socket, kept pending
//!        │                                   │ unbind(): closed (or detached, if live)
//!        ▼
//!  Effect::PublishPorts (after the endpoint's device exists)
//!        │ HostPorts::attach: the pending socket ──► PublishedPortSink::attach
//!        ▼
//!  batch saved ──► HostPorts::commit      request or save failed ──► HostPorts::rollback_to
//! ```
//!
//! The sockets are opened by the control thread while it plans the request,
//! so `address already in use` and `cannot assign requested address` come
//! from the kernel and are reported with Docker's texts (docker-reference
//! §4.5) before anything else of the request is done. A socket is handed to
//! the [`PublishedPortSink`] only once the endpoint it leads to exists; the
//! sink owns it from then on and gives it up on [`PublishedPortSink::detach`].
//!
//! As Docker's proxy, an IPv6 socket on `::` is IPv6-only, so `0.0.0.0:P`
//! and `[::]:P` are two sockets that can be held by different owners.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::Arc;

use nat::alloc::{BindError, Binder, PublishedPort};
use nat::spec::Proto;
use parking_lot::Mutex;

use crate::ids::NetworkId;

/// A published port's host socket, already bound and listening.
#[derive(Debug)]
pub enum HostSocket {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(UdpSocket),
}

/// Where a published port leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The network of the endpoint that publishes it.
    pub network: NetworkId,
    /// The endpoint's address and the container port.
    pub container: SocketAddrV4,
    /// The network's gateway (the source a container sees for clients whose
    /// address it cannot route back to, docker-reference §4.4).
    pub gateway: Ipv4Addr,
    /// The binding as `docker port` shows it.
    pub port: PublishedPort,
}

/// Whoever serves published ports (the host connector).
pub trait PublishedPortSink: Send + Sync {
    /// Starts serving `publication` on `socket`; the sink owns the socket.
    fn attach(&self, publication: Publication, socket: HostSocket);
    /// Stops serving the port and closes its socket before it returns:
    /// the control plane may bind the same port again right after (a
    /// rollback, a reconnect in the same request).
    fn detach(&self, port: &PublishedPort);
}

/// The sink of a daemon that does not carry traffic for published ports:
/// it keeps each socket open, so the port stays reserved on the host and a
/// TCP client's connection is completed by the kernel (and then waits in
/// the listen queue).
#[derive(Debug, Default)]
pub struct HoldSink {
    held: Mutex<HashMap<PublishedPort, (Publication, HostSocket)>>,
}

impl HoldSink {
    /// A sink holding nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ports it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.lock().is_empty()
    }
}

impl PublishedPortSink for HoldSink {
    fn attach(&self, publication: Publication, socket: HostSocket) {
        self.held
            .lock()
            .insert(publication.port, (publication, socket));
    }

    fn detach(&self, port: &PublishedPort) {
        self.held.lock().remove(port);
    }
}

/// Opens the host socket for one binding, as Docker's proxy does: a TCP
/// listener or a UDP socket on exactly `ip:port`, IPv6-only for an IPv6
/// address, `SO_REUSEADDR` on TCP (so a restart is not refused by the
/// previous run's connections in `TIME_WAIT`).
///
/// # Errors
///
/// What the kernel said, as [`BindError`]; SCTP is refused as
/// `protocol not supported` (no sink serves it).
pub fn open_host_socket(ip: IpAddr, proto: Proto, port: u16) -> Result<HostSocket, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let domain = Domain::for_address(addr);
    let (ty, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Sctp => return Err(BindError::ProtocolNotSupported),
    };
    let socket = Socket::new(domain, ty.cloexec(), Some(protocol)).map_err(bind_error)?;
    if ip.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_error)?;
    }
    if proto == Proto::Tcp {
        socket.set_reuse_address(true).map_err(bind_error)?;
    }
    socket.bind(&addr.into()).map_err(bind_error)?;
    Ok(match proto {
        Proto::Udp => HostSocket::Udp(socket.into()),
        _ => {
            socket.listen(1024).map_err(bind_error)?;
            HostSocket::Tcp(socket.into())
        }
    })
}

/// The kernel's error as Go prints it (lower-case `strerror`).
fn bind_error(e: io::Error) -> BindError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => BindError::AddrInUse,
        Some(libc::EADDRNOTAVAIL) => BindError::AddrNotAvailable,
        Some(libc::EPROTONOSUPPORT) => BindError::ProtocolNotSupported,
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            BindError::Other(
                chars
                    .next()
                    .map(|c| c.to_lowercase().chain(chars).collect())
                    .unwrap_or_default(),
            )
        }
        None => BindError::Other(e.to_string()),
    }
}

/// A point the published ports can be taken back to: changes planned
/// after it are undone and the sockets opened for them closed. Changes are
/// planned one at a time, so each one's sockets follow the ones before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    journal: usize,
    pending: usize,
}

/// One change to the live set since the last commit, so it can be undone.
#[derive(Debug)]
enum Change {
    Attached(PublishedPort),
    Detached(Publication),
}

#[derive(Debug, Default)]
struct Inner {
    /// Sockets opened while planning the current request, not yet attached.
    pending: Vec<(IpAddr, Proto, u16, HostSocket)>,
    /// What the sink serves, by host address, protocol and port.
    live: HashMap<(IpAddr, Proto, u16), Publication>,
    /// Changes since the last [`HostPorts::commit`].
    journal: Vec<Change>,
}

/// The daemon's published ports: the [`Binder`] the controller publishes
/// through, the sockets between planning and attachment, and the sink.
pub struct HostPorts {
    sink: Arc<dyn PublishedPortSink>,
    inner: Mutex<Inner>,
}

impl core::fmt::Debug for HostPorts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("HostPorts")
            .field("pending", &inner.pending.len())
            .field("live", &inner.live.len())
            .field("journal", &inner.journal.len())
            .finish_non_exhaustive()
    }
}

fn key(p: &PublishedPort) -> (IpAddr, Proto, u16) {
    (p.host_ip, p.proto, p.host_port)
}

impl HostPorts {
    /// Published ports served by `sink`.
    #[must_use]
    pub fn new(sink: Arc<dyn PublishedPortSink>) -> Self {
        Self {
            sink,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The [`Binder`] for one request's planning.
    #[must_use]
    pub const fn binder(&self) -> HostBinder<'_> {
        HostBinder(self)
    }

    /// Hands a publication's socket to the sink: the one opened while
    /// planning, or a new one (at restart, or when undoing a removal).
    ///
    /// # Errors
    ///
    /// The kernel's refusal when a new socket had to be opened.
    pub fn attach(&self, publication: Publication) -> Result<(), BindError> {
        let (ip, proto, port) = key(&publication.port);
        let mut inner = self.inner.lock();
        let socket = match inner
            .pending
            .iter()
            .position(|(i, p, n, _)| (*i, *p, *n) == (ip, proto, port))
        {
            // In order: a later mark's sockets stay after an earlier one's.
            Some(at) => inner.pending.remove(at).3,
            None => open_host_socket(ip, proto, port)?,
        };
        if let Some(old) = inner.live.insert((ip, proto, port), publication) {
            // Replaced (an undo racing a redo): the sink drops the old one.
            self.sink.detach(&old.port);
        }
        self.sink.attach(publication, socket);
        inner.journal.push(Change::Attached(publication.port));
        Ok(())
    }

    /// Stops serving a live port.
    pub fn detach(&self, port: &PublishedPort) {
        let mut inner = self.inner.lock();
        Self::detach_locked(&self.sink, &mut inner, port);
    }

    fn detach_locked(sink: &Arc<dyn PublishedPortSink>, inner: &mut Inner, port: &PublishedPort) {
        if let Some(publication) = inner.live.remove(&key(port)) {
            sink.detach(&publication.port);
            inner.journal.push(Change::Detached(publication));
        }
    }

    /// A point [`Self::rollback_to`] can return to.
    #[must_use]
    pub fn mark(&self) -> Mark {
        let inner = self.inner.lock();
        Mark {
            journal: inner.journal.len(),
            pending: inner.pending.len(),
        }
    }

    /// Undoes every change after `mark`, newest first: ports attached are
    /// detached, ports detached are bound and attached again (a port another
    /// process took meanwhile is logged and stays lost). Sockets opened
    /// after the mark are closed.
    pub fn rollback_to(&self, mark: Mark) {
        let mut inner = self.inner.lock();
        inner.pending.truncate(mark.pending);
        while inner.journal.len() > mark.journal {
            let Some(change) = inner.journal.pop() else {
                break;
            };
            match change {
                Change::Attached(port) => {
                    if inner.live.remove(&key(&port)).is_some() {
                        self.sink.detach(&port);
                    }
                }
                Change::Detached(publication) => {
                    let (ip, proto, port) = key(&publication.port);
                    match open_host_socket(ip, proto, port) {
                        Ok(socket) => {
                            inner.live.insert((ip, proto, port), publication);
                            self.sink.attach(publication, socket);
                        }
                        Err(e) => tracing::error!(
                            port = %publication.port, error = %e,
                            "published port lost while undoing a request"
                        ),
                    }
                }
            }
        }
    }

    /// Makes the changes so far final.
    pub fn commit(&self) {
        let mut inner = self.inner.lock();
        inner.pending.clear();
        inner.journal.clear();
    }

    /// How many ports the sink serves.
    #[must_use]
    pub fn live(&self) -> usize {
        self.inner.lock().live.len()
    }
}

/// [`HostPorts`] as the allocator's [`Binder`]: `bind` opens a real socket
/// and keeps it until the request's [`crate::control::Effect::PublishPorts`]
/// attaches it; `unbind` closes a pending socket, or detaches a live port
/// (a removal), journalled so a failed request restores it.
#[derive(Debug)]
pub struct HostBinder<'a>(&'a HostPorts);

impl Binder for HostBinder<'_> {
    fn bind(&mut self, ip: IpAddr, proto: Proto, port: u16) -> Result<(), BindError> {
        let socket = open_host_socket(ip, proto, port)?;
        self.0.inner.lock().pending.push((ip, proto, port, socket));
        Ok(())
    }

    fn unbind(&mut self, ip: IpAddr, proto: Proto, port: u16) {
        let mut inner = self.0.inner.lock();
        if let Some(at) = inner
            .pending
            .iter()
            .position(|(i, p, n, _)| (*i, *p, *n) == (ip, proto, port))
        {
            inner.pending.remove(at);
            return;
        }
        let live = inner.live.get(&(ip, proto, port)).map(|p| p.port);
        if let Some(published) = live {
            HostPorts::detach_locked(&self.0.sink, &mut inner, &published);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, TcpStream};

    fn published(ip: IpAddr, port: u16) -> PublishedPort {
        PublishedPort {
            container_port: 80,
            proto: Proto::Tcp,
            host_ip: ip,
            host_port: port,
        }
    }

    fn publication(p: PublishedPort) -> Publication {
        Publication {
            network: NetworkId(1),
            container: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            port: p,
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral loopback port")
    }

    #[test]
    fn a_held_port_refuses_a_second_bind_with_the_kernels_error() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port();
        let first = open_host_socket(lo, Proto::Tcp, port).expect("first bind");
        assert_eq!(
            open_host_socket(lo, Proto::Tcp, port).unwrap_err(),
            BindError::AddrInUse
        );
        drop(first);
        open_host_socket(lo, Proto::Tcp, port).expect("free again once closed");
    }

    #[test]
    fn an_address_that_is_not_local_cannot_be_assigned() {
        let err = open_host_socket(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), Proto::Udp, 18099)
            .unwrap_err();
        assert_eq!(err, BindError::AddrNotAvailable);
        assert_eq!(
            open_host_socket(IpAddr::V6(Ipv6Addr::LOCALHOST), Proto::Sctp, 1).unwrap_err(),
            BindError::ProtocolNotSupported
        );
    }

    #[test]
    fn attach_hands_the_pending_socket_and_rollback_closes_it() {
        let sink = Arc::new(HoldSink::new());
        let ports = HostPorts::new(Arc::clone(&sink) as Arc<dyn PublishedPortSink>);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port();
        let mark = ports.mark();
        ports.binder().bind(lo, Proto::Tcp, port).expect("bind");
        ports
            .attach(publication(published(lo, port)))
            .expect("attach");
        assert_eq!(sink.len(), 1);
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("the kernel accepts");
        ports.rollback_to(mark);
        assert!(sink.is_empty());
        assert_eq!(ports.live(), 0);
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect_err("closed after the rollback");
    }

    #[test]
    fn a_removal_undone_listens_again() {
        let sink = Arc::new(HoldSink::new());
        let ports = HostPorts::new(Arc::clone(&sink) as Arc<dyn PublishedPortSink>);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port();
        ports
            .attach(publication(published(lo, port)))
            .expect("attach");
        ports.commit();
        let mark = ports.mark();
        ports.binder().unbind(lo, Proto::Tcp, port);
        assert!(sink.is_empty(), "unbinding a live port detaches it");
        // The port is free for the same request to bind again.
        ports.binder().bind(lo, Proto::Tcp, port).expect("rebind");
        ports.rollback_to(mark);
        assert_eq!(sink.len(), 1);
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("listening again");
    }
}
