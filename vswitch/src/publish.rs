//! The seam between the control plane, which allocates and binds published
//! ports (`-p`, `-P`), and the host connector, which serves them.
//!
//! The control thread binds each host socket itself (so a bind failure is
//! the request's error, with Docker's text, and nothing is half-made) and
//! hands it over already listening; the connector only accepts and carries.

/// A published port's host socket, already bound and listening.
#[derive(Debug)]
pub enum HostSocket {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A UDP socket bound to the host address and port.
    Udp(std::net::UdpSocket),
}

/// Where a published port leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The container's network.
    pub network: crate::ids::NetworkId,
    /// The container's address and port.
    pub container: std::net::SocketAddrV4,
    /// The network's gateway address: the source a client with no
    /// address the container could answer (loopback) is carried from.
    pub gateway: std::net::Ipv4Addr,
    /// The binding, as `vsctl port` shows it.
    pub port: nat::alloc::PublishedPort,
}

/// Whoever serves published ports (the host connector).
pub trait PublishedPortSink: Send + Sync {
    /// Starts serving `socket` for `publication`.
    fn attach(&self, publication: Publication, socket: HostSocket);
    /// Stops serving the binding `port` and closes its socket. TCP
    /// connections already accepted run to their end; UDP flows through it
    /// end at once.
    fn detach(&self, port: &nat::alloc::PublishedPort);
}
