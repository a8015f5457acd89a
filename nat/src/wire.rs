//! The headers NAT decides on, read once per packet with smoltcp's checked
//! views: addresses, ports (the echo identifier for ICMP), TCP flags and
//! where the transport header starts, so a rewrite needs no second parse.

use std::net::{IpAddr, Ipv4Addr};

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet,
    TcpPacket, UdpPacket,
};

use crate::conntrack::PacketInfo;
use crate::flow::{FlowKey, FlowProto, NetworkId};
use crate::tcp::TcpFlags;

/// Why a packet cannot be tracked; the datapath counts each reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than its headers say.
    #[error("truncated packet")]
    Truncated,
    /// Not an IPv4 packet (ethertype or version).
    #[error("not IPv4")]
    NotIpv4,
    /// A fragment after the first: it carries no ports.
    #[error("non-initial fragment")]
    Fragment,
    /// A transport protocol that is not tracked.
    #[error("untracked protocol {0}")]
    Protocol(u8),
    /// An ICMP message other than echo request or reply.
    #[error("untracked icmp type {0}")]
    IcmpType(u8),
}

/// The parsed headers of one IPv4 packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Meta {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Transport protocol.
    pub proto: FlowProto,
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: echo identifier).
    pub dst_port: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: TcpFlags,
    /// Whether an ICMP packet is an echo reply (the flow's reply way).
    pub icmp_reply: bool,
    /// Offset of the transport header from the start of the IP header.
    pub l4_offset: usize,
    /// The IP total length.
    pub total_len: u16,
}

impl Ipv4Meta {
    /// Parses an IPv4 packet (starting at its IP header).
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything that is not a whole, first-fragment,
    /// TCP/UDP/ICMP-echo IPv4 packet.
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        if packet.first().is_some_and(|b| b >> 4 != 4) {
            return Err(WireError::NotIpv4);
        }
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| WireError::Truncated)?;
        if ip.frag_offset() != 0 {
            return Err(WireError::Fragment);
        }
        let l4_offset = usize::from(ip.header_len());
        let total_len = ip.total_len();
        let l4 = packet
            .get(l4_offset..usize::from(total_len))
            .ok_or(WireError::Truncated)?;
        let (proto, src_port, dst_port, tcp_flags, icmp_reply) = match ip.next_header() {
            IpProtocol::Tcp => {
                let t = TcpPacket::new_checked(l4).map_err(|_| WireError::Truncated)?;
                let flags = l4.get(13).copied().unwrap_or(0);
                (
                    FlowProto::Tcp,
                    t.src_port(),
                    t.dst_port(),
                    TcpFlags(flags),
                    false,
                )
            }
            IpProtocol::Udp => {
                let u = UdpPacket::new_checked(l4).map_err(|_| WireError::Truncated)?;
                (
                    FlowProto::Udp,
                    u.src_port(),
                    u.dst_port(),
                    TcpFlags(0),
                    false,
                )
            }
            IpProtocol::Icmp => {
                let i = Icmpv4Packet::new_checked(l4).map_err(|_| WireError::Truncated)?;
                let reply = match i.msg_type() {
                    Icmpv4Message::EchoRequest => false,
                    Icmpv4Message::EchoReply => true,
                    other => return Err(WireError::IcmpType(u8::from(other))),
                };
                if l4.len() < 8 {
                    return Err(WireError::Truncated);
                }
                let id = i.echo_ident();
                (FlowProto::Icmp, id, id, TcpFlags(0), reply)
            }
            other => return Err(WireError::Protocol(u8::from(other))),
        };
        Ok(Self {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            proto,
            src_port,
            dst_port,
            tcp_flags,
            icmp_reply,
            l4_offset,
            total_len,
        })
    }

    /// The packet's flow key on `network`.
    #[must_use]
    pub fn key(&self, network: NetworkId) -> FlowKey {
        FlowKey::new(
            network,
            self.proto,
            IpAddr::V4(self.src),
            self.src_port,
            IpAddr::V4(self.dst),
            self.dst_port,
        )
    }

    /// What the flow table needs of the packet.
    #[must_use]
    pub fn info(&self) -> PacketInfo {
        PacketInfo {
            tcp_flags: self.tcp_flags,
            len: u32::from(self.total_len),
        }
    }
}

/// Finds the IPv4 packet in an Ethernet frame: its offset and headers.
///
/// # Errors
///
/// [`WireError::NotIpv4`] for another ethertype, else as [`Ipv4Meta::parse`].
pub fn parse_frame(frame: &[u8]) -> Result<(usize, Ipv4Meta), WireError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| WireError::Truncated)?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Err(WireError::NotIpv4);
    }
    let l3 = EthernetFrame::<&[u8]>::header_len();
    let ip = frame.get(l3..).ok_or(WireError::Truncated)?;
    Ok((l3, Ipv4Meta::parse(ip)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp(flags_syn: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([172, 18, 0, 2], [192, 0, 2, 1], 64)
            .tcp(40000, 80, 1, 65535);
        let b = if flags_syn { b.syn() } else { b.ack(7) };
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    #[test]
    fn tcp_udp_and_echo_give_their_keys() {
        let (l3, m) = parse_frame(&tcp(true)).unwrap();
        assert_eq!(l3, 14);
        assert_eq!(m.l4_offset, 20);
        assert_eq!((m.src_port, m.dst_port), (40000, 80));
        assert_eq!(m.tcp_flags, TcpFlags::SYN);
        assert_eq!(m.info().len, 20 + 20 + 5);
        assert_eq!(
            m.key(NetworkId(3)).to_string(),
            "net=n3 src=172.18.0.2 dst=192.0.2.1 sport=40000 dport=80"
        );

        let mut udp = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(53, 5353)
            .write(&mut udp, b"x")
            .unwrap();
        let (_, m) = parse_frame(&udp).unwrap();
        assert_eq!(
            (m.proto, m.src_port, m.dst_port),
            (FlowProto::Udp, 53, 5353)
        );

        let mut echo = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_reply(0x77, 1)
            .write(&mut echo, b"ping")
            .unwrap();
        let (_, m) = parse_frame(&echo).unwrap();
        assert_eq!(
            (m.proto, m.src_port, m.dst_port),
            (FlowProto::Icmp, 0x77, 0x77)
        );
        assert!(m.icmp_reply);
    }

    #[test]
    fn what_cannot_be_tracked_is_named() {
        let f = tcp(false);
        assert_eq!(parse_frame(&f[..30]), Err(WireError::Truncated));
        assert_eq!(parse_frame(&f[..14 + 20 + 10]), Err(WireError::Truncated));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_frame(&arp), Err(WireError::NotIpv4));
        let mut v6 = f.clone();
        v6[14] = 0x65;
        assert_eq!(parse_frame(&v6), Err(WireError::NotIpv4));
        let mut frag = f.clone();
        frag[14 + 7] = 1; // fragment offset 8 bytes
        assert_eq!(parse_frame(&frag), Err(WireError::Fragment));
        let mut gre = f.clone();
        gre[14 + 9] = 47;
        assert_eq!(parse_frame(&gre), Err(WireError::Protocol(47)));
        let mut unreach = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut unreach, b"")
            .unwrap();
        unreach[14 + 20] = 3;
        assert_eq!(parse_frame(&unreach), Err(WireError::IcmpType(3)));
        // Ethernet padding after the IP datagram is not part of it.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(parse_frame(&padded).unwrap().1.total_len, 45);
    }
}
