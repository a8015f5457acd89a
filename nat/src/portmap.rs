//! The published ports as a lookup for the packet and connection path:
//! which container serves a host address, protocol and port.
//!
//! Built by the control thread from the bindings it published and swapped
//! in whole (an `Arc`), so a worker reads it without a lock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::alloc::PublishedPort;
use crate::flow::NetworkId;
use crate::spec::Proto;

/// Where a published port leads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Target {
    /// The container's network.
    pub network: NetworkId,
    /// The container's address on it.
    pub addr: IpAddr,
    /// The container port.
    pub port: u16,
}

/// Host (address, protocol, port) → container.
#[derive(Clone, Debug, Default)]
pub struct PortMap {
    map: HashMap<(IpAddr, Proto, u16), Target, foldhash::fast::RandomState>,
}

impl PortMap {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a binding. A binding for the same host address, protocol and
    /// port replaces the previous one (the allocator prevents that in
    /// practice).
    pub fn insert(&mut self, published: &PublishedPort, network: NetworkId, addr: IpAddr) {
        self.map.insert(
            (
                published.host_ip.to_canonical(),
                published.proto,
                published.host_port,
            ),
            Target {
                network,
                addr,
                port: published.container_port,
            },
        );
    }

    /// Removes a binding.
    pub fn remove(&mut self, published: &PublishedPort) -> Option<Target> {
        self.map.remove(&(
            published.host_ip.to_canonical(),
            published.proto,
            published.host_port,
        ))
    }

    /// The container serving a packet to `dst`:`port`: a binding on that
    /// exact address wins over one on the wildcard of its family
    /// (`0.0.0.0` for IPv4, `::` for IPv6). `dst` must be a host address;
    /// deciding that is the caller's business.
    #[must_use]
    pub fn lookup(&self, dst: IpAddr, proto: Proto, port: u16) -> Option<Target> {
        let dst = dst.to_canonical();
        let wildcard = match dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.map
            .get(&(dst, proto, port))
            .or_else(|| self.map.get(&(wildcard, proto, port)))
            .copied()
    }

    /// Whether `addr`:`port` of a container on `network` is published
    /// (for [`crate::policy::to_container`]).
    #[must_use]
    pub fn publishes(&self, network: NetworkId, addr: IpAddr, proto: Proto, port: u16) -> bool {
        self.map.iter().any(|(&(_, p, _), t)| {
            p == proto && t.network == network && t.addr == addr && t.port == port
        })
    }

    /// Number of bindings.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(ip: &str, proto: Proto, host_port: u16, container_port: u16) -> PublishedPort {
        PublishedPort {
            container_port,
            proto,
            host_ip: ip.parse().unwrap(),
            host_port,
        }
    }

    #[test]
    fn exact_addresses_win_over_the_wildcard_of_their_family() {
        let c1: IpAddr = "172.17.0.2".parse().unwrap();
        let c2: IpAddr = "172.17.0.3".parse().unwrap();
        let mut m = PortMap::new();
        m.insert(
            &published("0.0.0.0", Proto::Tcp, 18080, 80),
            NetworkId(1),
            c1,
        );
        m.insert(
            &published("127.0.0.1", Proto::Tcp, 18081, 81),
            NetworkId(1),
            c2,
        );
        m.insert(&published("::", Proto::Udp, 18082, 82), NetworkId(1), c2);

        let any_host: IpAddr = "192.0.2.2".parse().unwrap();
        let t = m.lookup(any_host, Proto::Tcp, 18080).unwrap();
        assert_eq!((t.addr, t.port), (c1, 80));
        assert_eq!(m.lookup(any_host, Proto::Udp, 18080), None);
        assert_eq!(m.lookup(any_host, Proto::Tcp, 18081), None);
        assert_eq!(
            m.lookup("127.0.0.1".parse().unwrap(), Proto::Tcp, 18081)
                .unwrap()
                .addr,
            c2
        );
        // `::` serves IPv6 destinations only.
        assert_eq!(m.lookup(any_host, Proto::Udp, 18082), None);
        assert!(
            m.lookup("::1".parse().unwrap(), Proto::Udp, 18082)
                .is_some()
        );

        assert!(m.publishes(NetworkId(1), c1, Proto::Tcp, 80));
        assert!(!m.publishes(NetworkId(1), c1, Proto::Tcp, 81));
        assert!(!m.publishes(NetworkId(2), c1, Proto::Tcp, 80));
        assert_eq!(
            m.remove(&published("0.0.0.0", Proto::Tcp, 18080, 80))
                .map(|t| t.addr),
            Some(c1)
        );
        assert_eq!(m.lookup(any_host, Proto::Tcp, 18080), None);
        assert_eq!(m.len(), 2);
    }
}
