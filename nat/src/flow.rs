//! What identifies a flow: the 5-tuple, scoped by the network it was seen on.
//!
//! Two containers on different networks may use the same private addresses
//! (a subnet can be reused after a network is removed, and overlay networks
//! overlap freely), so a bare 5-tuple is ambiguous inside one daemon. Every
//! key therefore carries the [`NetworkId`] of the side it was seen on; the
//! host side of a translated flow uses the network the daemon reserves for
//! its uplink or host connector.

use core::fmt;
use core::hash::{Hash, Hasher};
use std::net::IpAddr;

/// A network as the flow table sees it: a small number the daemon maps its
/// own network ids to, so keys stay small and `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NetworkId(pub u32);

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The transport protocols the flow table tracks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum FlowProto {
    /// TCP, with nf_conntrack's state machine.
    Tcp,
    /// UDP: 30 s, 120 s once both directions were seen.
    Udp,
    /// ICMP echo: the identifier takes the place of both ports.
    Icmp,
}

impl FlowProto {
    /// The name `conntrack -L` prints.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }
}

impl fmt::Display for FlowProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One direction of a flow: network, protocol, source and destination.
///
/// For ICMP echo the identifier is stored as both `src_port` and
/// `dst_port`, so that [`FlowKey::reversed`] of a request is exactly the
/// key of its reply and a rewrite of "the port" on either direction means
/// the identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FlowKey {
    /// The network the packet was seen on.
    pub network: NetworkId,
    /// Transport protocol.
    pub proto: FlowProto,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: echo identifier).
    pub dst_port: u16,
}

impl FlowKey {
    /// A TCP or UDP key.
    #[must_use]
    pub const fn new(
        network: NetworkId,
        proto: FlowProto,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> Self {
        Self {
            network,
            proto,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// An ICMP echo key: the identifier fills both port slots.
    #[must_use]
    pub const fn icmp(network: NetworkId, src: IpAddr, dst: IpAddr, ident: u16) -> Self {
        Self::new(network, FlowProto::Icmp, src, ident, dst, ident)
    }

    /// The key a packet going the other way on the same network, untranslated,
    /// would have.
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            network: self.network,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// Whether `addr` appears as either endpoint.
    #[must_use]
    pub fn involves(&self, addr: IpAddr) -> bool {
        self.src == addr || self.dst == addr
    }

    /// A hash that is the same for a key and its [`reversed`](Self::reversed)
    /// key, so both directions of an untranslated flow land in the same shard
    /// of the flow table and one lock covers them.
    pub(crate) fn hash_symmetric<H: Hasher>(&self, state: &mut H) {
        let a = (self.src, self.src_port);
        let b = (self.dst, self.dst_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.network.hash(state);
        self.proto.hash(state);
        lo.hash(state);
        hi.hash(state);
    }
}

impl fmt::Display for FlowKey {
    /// `conntrack -L`'s tuple notation: `src=… dst=… sport=… dport=…`
    /// (`id=…` for ICMP), preceded by the network.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net={} src={} dst={}", self.network, self.src, self.dst)?;
        match self.proto {
            FlowProto::Icmp => write!(f, " id={}", self.src_port),
            FlowProto::Tcp | FlowProto::Udp => {
                write!(f, " sport={} dport={}", self.src_port, self.dst_port)
            }
        }
    }
}

/// Which way a packet goes relative to the packet that created its flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Same way as the first packet (nf_conntrack's `IP_CT_DIR_ORIGINAL`).
    Original,
    /// The other way (`IP_CT_DIR_REPLY`).
    Reply,
}

impl Direction {
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Original => 0,
            Self::Reply => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::BuildHasher;
    use std::net::Ipv4Addr;

    fn key() -> FlowKey {
        FlowKey::new(
            NetworkId(1),
            FlowProto::Tcp,
            Ipv4Addr::new(172, 18, 0, 2).into(),
            40000,
            Ipv4Addr::new(192, 0, 2, 1).into(),
            80,
        )
    }

    #[test]
    fn reversing_twice_is_identity_and_icmp_reverses_to_its_reply() {
        let k = key();
        assert_ne!(k.reversed(), k);
        assert_eq!(k.reversed().reversed(), k);
        let echo = FlowKey::icmp(
            NetworkId(1),
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
            7,
        );
        let reply = FlowKey::icmp(
            NetworkId(1),
            Ipv4Addr::new(10, 0, 0, 2).into(),
            Ipv4Addr::new(10, 0, 0, 1).into(),
            7,
        );
        assert_eq!(echo.reversed(), reply);
    }

    #[test]
    fn symmetric_hash_is_equal_for_both_directions_only() {
        let s = foldhash::fast::FixedState::with_seed(7);
        let h = |k: &FlowKey| {
            let mut st = s.build_hasher();
            k.hash_symmetric(&mut st);
            st.finish()
        };
        let k = key();
        assert_eq!(h(&k), h(&k.reversed()));
        let mut other = k;
        other.src_port = 40001;
        assert_ne!(h(&k), h(&other));
        let mut other_net = k;
        other_net.network = NetworkId(2);
        assert_ne!(h(&k), h(&other_net));
    }

    #[test]
    fn displays_like_conntrack() {
        assert_eq!(
            key().to_string(),
            "net=n1 src=172.18.0.2 dst=192.0.2.1 sport=40000 dport=80"
        );
    }
}
