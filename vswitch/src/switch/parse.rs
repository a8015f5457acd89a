//! Parse once: the headers every stage of the pipeline decides on, read from
//! the frame a single time into a small `Copy` struct.
//!
//! Ingress checks, the gateway, and the stages to come (NAT's flow lookup,
//! encapsulation, `vsctl trace`) all read a [`ParsedFrame`] instead of
//! re-walking the bytes. Parsing goes through smoltcp's checked views
//! (`EthernetFrame`, `ArpPacket`, `Ipv4Packet`, `Ipv6Packet`), so every
//! length is validated by one well-kept implementation, and the constants
//! (EtherTypes, IP protocols, header lengths) are smoltcp's. Only the VLAN
//! TPIDs are defined here: smoltcp has no 802.1Q.
//!
//! The struct records what a decision needs and where the headers are
//! (offsets), never a borrow of the frame, so a stage can rewrite the frame
//! in place with the offsets it was given (the gateway's replies, NAT's
//! address rewrite with [`super::checksum`]).
//!
//! Extending it: a new protocol is a new [`L3`] variant (the enum is
//! `non_exhaustive`) or a new field of an existing one, filled in
//! [`ParsedFrame::parse`]; a truncated or inconsistent header of a protocol
//! the switch knows is [`L3::Malformed`], which container ports drop and
//! uplinks forward untouched.

use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ETHERNET_HEADER_LEN, EthernetFrame, EthernetProtocol,
    IPV6_HEADER_LEN, IpProtocol, Ipv4Packet, Ipv6Packet, TCP_HEADER_LEN, UDP_HEADER_LEN,
};

use super::action::DropReason;
use crate::buf::VnetHdr;
use crate::ids::MacAddr;

/// TPIDs of 802.1Q and 802.1ad tags, and the pre-standard QinQ one (smoltcp
/// has no VLAN support, so these are the switch's own).
pub const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Length of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// The headers of one frame, as far as the switch looks into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The EtherType field after the addresses (a VLAN TPID for tagged
    /// frames).
    pub ethertype: EthernetProtocol,
    /// The network layer.
    pub l3: L3,
    /// The virtio-net header the frame arrived with: pending segmentation
    /// and checksum offloads.
    pub vnet: VnetHdr,
    /// Frame length in bytes, headers included.
    pub len: usize,
}

/// What follows the Ethernet header. The L3 header starts at
/// [`ETHERNET_HEADER_LEN`] (tagged frames are not looked into).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum L3 {
    /// Not looked into yet ([`ParsedFrame::parse_ethernet`]): a frame
    /// between uplinks is switched on its Ethernet header alone, so its
    /// network layer is read only when a stage asks
    /// ([`ParsedFrame::ensure_l3`]).
    Unparsed,
    /// An EtherType the switch does not look into.
    Other,
    /// An 802.1Q/802.1ad tagged frame; the inner frame is not parsed.
    Vlan,
    /// ARP for IPv4 over Ethernet.
    Arp(Arp),
    /// IPv4.
    Ipv4(Ipv4),
    /// IPv6 (the fixed header; extension headers are not walked).
    Ipv6(Ipv6),
    /// ARP, IPv4 or IPv6 whose header is truncated or inconsistent with the
    /// frame's length (or ARP for something other than IPv4 over Ethernet).
    Malformed,
}

/// An ARP packet's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Request, reply, or another operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address (0.0.0.0 in a probe, RFC 5227).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// An IPv4 header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// Time to live.
    pub ttl: u8,
    /// Header length in bytes (IHL × 4).
    pub header_len: u16,
    /// The total length field: header and payload, without Ethernet padding.
    pub total_len: u16,
    /// A fragment (more fragments set, or a non-zero offset).
    pub fragment: bool,
    /// The TCP or UDP header, in the first fragment only and when whole.
    pub l4: Option<L4>,
}

/// An IPv6 fixed header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The fixed header's next header.
    pub next_header: IpProtocol,
    /// Hop limit.
    pub hop_limit: u8,
    /// The payload length field.
    pub payload_len: u16,
    /// The TCP or UDP header when it directly follows the fixed header.
    pub l4: Option<L4>,
}

/// A TCP or UDP header's ports and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    /// Offset of the header from the start of the frame.
    pub offset: u16,
    /// Header length: TCP's data offset × 4, or 8 for UDP.
    pub header_len: u16,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl L4 {
    /// Offset from the start of the frame of the L4 checksum field.
    #[must_use]
    pub const fn checksum_offset(&self, protocol: IpProtocol) -> Option<usize> {
        let at = self.offset as usize;
        match protocol {
            IpProtocol::Tcp => Some(at + 16),
            IpProtocol::Udp => Some(at + 6),
            _ => None,
        }
    }
}

impl ParsedFrame {
    /// Parses `frame`, which arrived with `vnet`: the Ethernet header and
    /// the network layer.
    ///
    /// # Errors
    /// [`DropReason::Runt`] when the frame is shorter than an Ethernet
    /// header. Anything inside that is wrong is [`L3::Malformed`], so the
    /// caller decides by port role whether it matters.
    pub fn parse(frame: &[u8], vnet: VnetHdr) -> Result<Self, DropReason> {
        let mut parsed = Self::parse_ethernet(frame, vnet)?;
        parsed.ensure_l3(frame);
        Ok(parsed)
    }

    /// Parses the Ethernet header of `frame` only, leaving
    /// [`L3::Unparsed`]: what switching between uplinks needs, at a
    /// fraction of the cost of the whole parse.
    ///
    /// # Errors
    /// [`DropReason::Runt`] when the frame is shorter than an Ethernet
    /// header.
    #[inline]
    pub fn parse_ethernet(frame: &[u8], vnet: VnetHdr) -> Result<Self, DropReason> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Runt)?;
        Ok(Self {
            dst: MacAddr(eth.dst_addr().0),
            src: MacAddr(eth.src_addr().0),
            ethertype: eth.ethertype(),
            l3: L3::Unparsed,
            vnet,
            len: frame.len(),
        })
    }

    /// Parses the network layer of `frame` (the frame this was parsed
    /// from) if it is still [`L3::Unparsed`]; a frame is never parsed
    /// twice.
    #[inline]
    pub fn ensure_l3(&mut self, frame: &[u8]) {
        if !matches!(self.l3, L3::Unparsed) {
            return;
        }
        let payload = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
        self.l3 = match self.ethertype {
            EthernetProtocol::Arp => parse_arp(payload),
            EthernetProtocol::Ipv4 => parse_ipv4(payload),
            EthernetProtocol::Ipv6 => parse_ipv6(payload),
            EthernetProtocol::Unknown(t) if VLAN_TPIDS.contains(&t) => L3::Vlan,
            EthernetProtocol::Unknown(_) => L3::Other,
        };
    }

    /// Whether the frame carries an 802.1Q/802.1ad tag (known from the
    /// Ethernet header alone).
    #[must_use]
    pub fn is_vlan(&self) -> bool {
        matches!(self.ethertype, EthernetProtocol::Unknown(t) if VLAN_TPIDS.contains(&t))
    }

    /// The EtherType as a number (for traces and counters).
    #[must_use]
    pub fn ethertype_u16(&self) -> u16 {
        u16::from(self.ethertype)
    }

    /// Whether the frame is ARP (well-formed or not).
    #[must_use]
    pub fn is_arp(&self) -> bool {
        self.ethertype == EthernetProtocol::Arp
    }

    /// The TCP or UDP header, over IPv4 or IPv6.
    #[must_use]
    pub const fn l4(&self) -> Option<L4> {
        match self.l3 {
            L3::Ipv4(Ipv4 { l4, .. }) | L3::Ipv6(Ipv6 { l4, .. }) => l4,
            _ => None,
        }
    }

    /// Length of the Ethernet, IP and L4 headers each segment of a GSO
    /// super-frame repeats, or `None` when they cannot be known (no GSO
    /// type the switch supports, or no whole L4 header).
    #[must_use]
    pub fn segment_header_len(&self) -> Option<usize> {
        let l4 = self.l4()?;
        let l4_len = match self.vnet.gso_type & !VnetHdr::GSO_ECN {
            VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6 => usize::from(l4.header_len),
            VnetHdr::GSO_UDP | VnetHdr::GSO_UDP_L4 => UDP_HEADER_LEN,
            _ => return None,
        };
        Some(usize::from(l4.offset) + l4_len)
    }
}

fn parse_arp(payload: &[u8]) -> L3 {
    let Ok(arp) = ArpPacket::new_checked(payload) else {
        return L3::Malformed;
    };
    let ipv4_over_ethernet = arp.hardware_type() == ArpHardware::Ethernet
        && arp.protocol_type() == EthernetProtocol::Ipv4
        && arp.hardware_len() == 6
        && arp.protocol_len() == 4;
    if !ipv4_over_ethernet {
        return L3::Malformed;
    }
    // The lengths were checked above, so every address field is whole.
    let mac = |b: &[u8]| MacAddr::from_slice(b).unwrap_or_default();
    let ip = |b: &[u8]| <[u8; 4]>::try_from(b).map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from);
    L3::Arp(Arp {
        operation: arp.operation(),
        sender_mac: mac(arp.source_hardware_addr()),
        sender_ip: ip(arp.source_protocol_addr()),
        target_mac: mac(arp.target_hardware_addr()),
        target_ip: ip(arp.target_protocol_addr()),
    })
}

fn parse_ipv4(payload: &[u8]) -> L3 {
    let Ok(ip) = Ipv4Packet::new_checked(payload) else {
        return L3::Malformed;
    };
    if ip.version() != 4 {
        return L3::Malformed;
    }
    let header_len = u16::from(ip.header_len());
    let fragment = ip.more_frags() || ip.frag_offset() != 0;
    let protocol = ip.next_header();
    let l4 = if fragment {
        None
    } else {
        // `new_checked` guaranteed header_len <= total_len <= payload.len().
        let body = payload
            .get(usize::from(header_len)..usize::from(ip.total_len()))
            .unwrap_or_default();
        parse_l4(
            body,
            protocol,
            ETHERNET_HEADER_LEN + usize::from(header_len),
        )
    };
    L3::Ipv4(Ipv4 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol,
        ttl: ip.hop_limit(),
        header_len,
        total_len: ip.total_len(),
        fragment,
        l4,
    })
}

fn parse_ipv6(payload: &[u8]) -> L3 {
    let Ok(ip) = Ipv6Packet::new_checked(payload) else {
        return L3::Malformed;
    };
    if ip.version() != 6 {
        return L3::Malformed;
    }
    let next_header = ip.next_header();
    let body = payload
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(ip.payload_len()))
        .unwrap_or_default();
    L3::Ipv6(Ipv6 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        next_header,
        hop_limit: ip.hop_limit(),
        payload_len: ip.payload_len(),
        l4: parse_l4(body, next_header, ETHERNET_HEADER_LEN + IPV6_HEADER_LEN),
    })
}

/// The TCP or UDP header at the start of `body`, found at `offset` in the
/// frame, when it is whole.
fn parse_l4(body: &[u8], protocol: IpProtocol, offset: usize) -> Option<L4> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]));
    let header_len = match protocol {
        IpProtocol::Tcp => {
            let doff = usize::from(*body.get(12)? >> 4) * 4;
            if doff < TCP_HEADER_LEN || doff > body.len() {
                return None;
            }
            doff
        }
        IpProtocol::Udp if body.len() >= UDP_HEADER_LEN => UDP_HEADER_LEN,
        _ => return None,
    };
    Some(L4 {
        offset: u16::try_from(offset).ok()?,
        header_len: u16::try_from(header_len).ok()?,
        src_port: be16(0)?,
        dst_port: be16(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn parse(frame: &[u8]) -> ParsedFrame {
        ParsedFrame::parse(frame, VnetHdr::default()).unwrap()
    }

    #[test]
    fn a_runt_is_refused() {
        assert_eq!(
            ParsedFrame::parse(&[0; 13], VnetHdr::default()),
            Err(DropReason::Runt)
        );
    }

    #[test]
    fn udp_over_ipv4_gives_addresses_ports_and_offsets() {
        let b = PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 33)
            .udp(1234, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"abc").unwrap();
        let p = parse(&f);
        assert_eq!(p.src, MacAddr(A));
        assert_eq!(p.dst, MacAddr(B));
        let L3::Ipv4(ip) = p.l3 else {
            panic!("{:?}", p.l3)
        };
        assert_eq!(ip.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ip.dst, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ip.protocol, IpProtocol::Udp);
        assert_eq!(ip.ttl, 33);
        assert!(!ip.fragment);
        let l4 = ip.l4.unwrap();
        assert_eq!(
            (l4.src_port, l4.dst_port, l4.offset, l4.header_len),
            (1234, 53, 34, 8)
        );
        assert_eq!(l4.checksum_offset(IpProtocol::Udp), Some(40));
    }

    #[test]
    fn tcp_over_ipv6_gives_the_data_offset() {
        let b = PacketBuilder::ethernet2(A, B)
            .ipv6([1; 16], [2; 16], 64)
            .tcp(80, 443, 7, 1000);
        let mut f = Vec::new();
        b.write(&mut f, b"x").unwrap();
        let p = parse(&f);
        let L3::Ipv6(ip) = p.l3 else {
            panic!("{:?}", p.l3)
        };
        assert_eq!(ip.next_header, IpProtocol::Tcp);
        let l4 = ip.l4.unwrap();
        assert_eq!(
            (l4.src_port, l4.dst_port, l4.offset, l4.header_len),
            (80, 443, 54, 20)
        );
    }

    #[test]
    fn truncated_headers_are_malformed_and_unknown_ethertypes_other() {
        let b = PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, b"abcdef").unwrap();
        assert_eq!(parse(&f[..30]).l3, L3::Malformed);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&arp[..20]).l3, L3::Malformed);
        let mut other = f.clone();
        other[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(parse(&other).l3, L3::Other);
        let mut vlan = f;
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse(&vlan).l3, L3::Vlan);
        assert!(parse(&vlan).is_vlan() && !parse(&other).is_vlan());
    }

    #[test]
    fn the_ethernet_header_alone_leaves_l3_for_later_and_parses_it_once() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, b"abcdefgh")
            .unwrap();
        let mut p = ParsedFrame::parse_ethernet(&f, VnetHdr::default()).unwrap();
        assert_eq!((p.src, p.dst, p.l3), (MacAddr(A), MacAddr(B), L3::Unparsed));
        p.ensure_l3(&f);
        assert_eq!(p, parse(&f));
        // Already parsed: another frame's bytes are not looked at.
        p.ensure_l3(&f[..20]);
        assert_eq!(p, parse(&f));
    }

    #[test]
    fn a_fragment_has_no_l4_header() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, b"abcdefgh")
            .unwrap();
        f[14 + 6] |= 0x20; // more fragments
        let L3::Ipv4(ip) = parse(&f).l3 else { panic!() };
        assert!(ip.fragment);
        assert_eq!(ip.l4, None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..200)) {
            let _ = ParsedFrame::parse(&bytes, VnetHdr::default());
        }
    }
}
