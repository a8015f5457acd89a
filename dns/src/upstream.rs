//! Upstream servers and where they are dialled from.

use std::net::SocketAddr;

/// The network namespace a forwarded query leaves from (docker-reference
/// §6.2). The resolver only says which; the daemon opens the socket there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialFrom {
    /// The host's namespace: loopback servers from the host's resolv.conf
    /// (a local systemd-resolved or dnsmasq), which the container cannot
    /// reach from its own namespace.
    Host,
    /// The sandbox's own namespace: every other server, and every `--dns`
    /// value even if it is a loopback address. The upstream sees the
    /// container's address, and on an internal network it is unreachable.
    Sandbox,
}

/// One upstream server of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Where to send (Docker always uses port 53).
    pub addr: SocketAddr,
    /// Which namespace to dial it from.
    pub dial_from: DialFrom,
}

impl Upstream {
    /// The standard DNS port, the only one Docker dials.
    pub const PORT: u16 = 53;
}
