//! ICMP errors about translated flows (destination unreachable, time
//! exceeded, parameter problem): the error quotes the header of a packet
//! as it was sent, after translation, so both the error's destination and
//! the quoted header must be translated back, or path-MTU discovery and
//! `traceroute` break behind the gateway. This is nf_nat's
//! `nf_nat_icmp_reply_translation`.
//!
//! The quoted datagram is usually cut short (RFC 792 guarantees its IP
//! header and 8 bytes), so it is parsed without trusting its length field,
//! and its transport checksum is updated only when the quote contains it.
//! The ICMP checksum covers the quote, and is updated for every word that
//! changes in it.

use std::net::{IpAddr, Ipv4Addr};

use smoltcp::wire::{IpProtocol, Ipv4Packet};

use crate::flow::{FlowKey, FlowProto, NetworkId};
use crate::rewrite::adjust;
use crate::wire::WireError;

/// Where the parts of an ICMP error sit in an IPv4 packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IcmpErrorMeta {
    /// Outer source (the router or host that reports).
    pub outer_src: Ipv4Addr,
    /// Outer destination (the sender of the quoted packet).
    pub outer_dst: Ipv4Addr,
    /// Offset of the ICMP header.
    pub icmp_offset: usize,
    /// Offset of the quoted IP header.
    pub inner_offset: usize,
    /// Offset of the quoted transport header.
    pub inner_l4_offset: usize,
    /// The quoted packet's protocol.
    pub inner_proto: FlowProto,
    /// Quoted source.
    pub inner_src: Ipv4Addr,
    /// Quoted destination.
    pub inner_dst: Ipv4Addr,
    /// Quoted source port (ICMP: echo identifier).
    pub inner_src_port: u16,
    /// Quoted destination port (ICMP: echo identifier).
    pub inner_dst_port: u16,
}

fn read16(p: &[u8], at: usize) -> Result<u16, WireError> {
    match p.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(WireError::Truncated),
    }
}

fn addr(p: &[u8], at: usize) -> Result<Ipv4Addr, WireError> {
    match p.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ok(Ipv4Addr::new(a, b, c, d)),
        _ => Err(WireError::Truncated),
    }
}

impl IcmpErrorMeta {
    /// Parses an IPv4 packet carrying an ICMP destination unreachable (3),
    /// time exceeded (11) or parameter problem (12) that quotes a TCP, UDP
    /// or ICMP echo packet.
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything else.
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        if packet.first().is_some_and(|b| b >> 4 != 4) {
            return Err(WireError::NotIpv4);
        }
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| WireError::Truncated)?;
        if ip.frag_offset() != 0 {
            return Err(WireError::Fragment);
        }
        if ip.next_header() != IpProtocol::Icmp {
            return Err(WireError::Protocol(u8::from(ip.next_header())));
        }
        let packet = packet
            .get(..usize::from(ip.total_len()))
            .ok_or(WireError::Truncated)?;
        let icmp_offset = usize::from(ip.header_len());
        let kind = *packet.get(icmp_offset).ok_or(WireError::Truncated)?;
        if !matches!(kind, 3 | 11 | 12) {
            return Err(WireError::IcmpType(kind));
        }
        let inner_offset = icmp_offset + 8;
        let vihl = *packet.get(inner_offset).ok_or(WireError::Truncated)?;
        let inner_hl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || inner_hl < 20 {
            return Err(WireError::NotIpv4);
        }
        // A quoted fragment other than the first carries no ports.
        if read16(packet, inner_offset + 6)? & 0x1fff != 0 {
            return Err(WireError::Fragment);
        }
        let inner_l4_offset = inner_offset + inner_hl;
        let inner_proto = match *packet.get(inner_offset + 9).ok_or(WireError::Truncated)? {
            6 => FlowProto::Tcp,
            17 => FlowProto::Udp,
            1 => FlowProto::Icmp,
            other => return Err(WireError::Protocol(other)),
        };
        let (inner_src_port, inner_dst_port) = match inner_proto {
            FlowProto::Tcp | FlowProto::Udp => (
                read16(packet, inner_l4_offset)?,
                read16(packet, inner_l4_offset + 2)?,
            ),
            FlowProto::Icmp => {
                let t = *packet.get(inner_l4_offset).ok_or(WireError::Truncated)?;
                if !matches!(t, 0 | 8) {
                    return Err(WireError::IcmpType(t));
                }
                let id = read16(packet, inner_l4_offset + 4)?;
                (id, id)
            }
        };
        Ok(Self {
            outer_src: ip.src_addr(),
            outer_dst: ip.dst_addr(),
            icmp_offset,
            inner_offset,
            inner_l4_offset,
            inner_proto,
            inner_src: addr(packet, inner_offset + 12)?,
            inner_dst: addr(packet, inner_offset + 16)?,
            inner_src_port,
            inner_dst_port,
        })
    }

    /// The key the flow table knows this error's flow by: the quoted
    /// packet's, reversed, since the error travels back towards its sender.
    #[must_use]
    pub fn flow_key(&self, network: NetworkId) -> FlowKey {
        FlowKey::new(
            network,
            self.inner_proto,
            IpAddr::V4(self.inner_dst),
            self.inner_dst_port,
            IpAddr::V4(self.inner_src),
            self.inner_src_port,
        )
    }
}

/// Writes one 16-bit word of the ICMP payload and folds the change into
/// the ICMP checksum.
fn set16(p: &mut [u8], at: usize, new: u16, icmp: &mut u16) -> Result<(), WireError> {
    let old = read16(p, at)?;
    if old != new {
        *icmp = adjust(*icmp, old, new);
        p[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
    Ok(())
}

fn words(a: Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

/// Translates an ICMP error in place: `to` is the tuple a packet of the
/// error's flow must carry in the error's direction (a
/// [`Tracked::rewrite_to`](crate::conntrack::Tracked::rewrite_to) for
/// [`IcmpErrorMeta::flow_key`]). The outer destination becomes `to.dst`;
/// the quoted header becomes `to` reversed; the outer source follows when
/// the error comes from the flow's peer itself. Every checksum on the way
/// (outer IP, ICMP, quoted IP, quoted transport when quoted) is updated
/// incrementally.
///
/// # Errors
///
/// [`WireError::NotIpv4`] for an IPv6 `to`; [`WireError::Truncated`] when
/// `meta` does not describe `packet`.
pub fn rewrite_icmp_error(
    packet: &mut [u8],
    meta: &IcmpErrorMeta,
    to: &FlowKey,
) -> Result<(), WireError> {
    let (IpAddr::V4(new_src), IpAddr::V4(new_dst)) = (to.src, to.dst) else {
        return Err(WireError::NotIpv4);
    };
    // Bounds first, so a failure writes nothing.
    read16(packet, meta.inner_l4_offset + 4)?;
    read16(packet, meta.icmp_offset + 2)?;
    let mut icmp = read16(packet, meta.icmp_offset + 2)?;
    let inner = meta.inner_offset;
    let l4 = meta.inner_l4_offset;
    let mut inner_ip = read16(packet, inner + 10)?;
    let l4_csum_at = match meta.inner_proto {
        FlowProto::Tcp => l4 + 16,
        FlowProto::Udp => l4 + 6,
        FlowProto::Icmp => l4 + 2,
    };
    let quoted = read16(packet, l4_csum_at).ok();
    let mut l4_csum = quoted.unwrap_or(0);
    let udp_none = meta.inner_proto == FlowProto::Udp && l4_csum == 0;
    let pseudo = meta.inner_proto != FlowProto::Icmp;

    // The quoted header: source <- to.dst, destination <- to.src.
    for (at, old, new) in [
        (inner + 12, meta.inner_src, new_dst),
        (inner + 16, meta.inner_dst, new_src),
    ] {
        for (i, (o, n)) in words(old).into_iter().zip(words(new)).enumerate() {
            if o != n {
                inner_ip = adjust(inner_ip, o, n);
                if pseudo {
                    l4_csum = adjust(l4_csum, o, n);
                }
                set16(packet, at + 2 * i, n, &mut icmp)?;
            }
        }
    }
    let ports: &[(usize, u16, u16)] = match meta.inner_proto {
        FlowProto::Tcp | FlowProto::Udp => &[
            (l4, meta.inner_src_port, to.dst_port),
            (l4 + 2, meta.inner_dst_port, to.src_port),
        ],
        FlowProto::Icmp => &[(l4 + 4, meta.inner_src_port, to.dst_port)],
    };
    for &(at, old, new) in ports {
        if old != new {
            l4_csum = adjust(l4_csum, old, new);
            set16(packet, at, new, &mut icmp)?;
        }
    }
    set16(packet, inner + 10, inner_ip, &mut icmp)?;
    if quoted.is_some() && !udp_none {
        let l4_csum = if meta.inner_proto == FlowProto::Udp && l4_csum == 0 {
            0xffff
        } else {
            l4_csum
        };
        set16(packet, l4_csum_at, l4_csum, &mut icmp)?;
    }
    packet[meta.icmp_offset + 2..meta.icmp_offset + 4].copy_from_slice(&icmp.to_be_bytes());

    // The outer header; the ICMP checksum does not cover it.
    let mut outer = read16(packet, 10)?;
    let from_peer = meta.outer_src == meta.inner_dst;
    for (at, old, new, apply) in [
        (16, meta.outer_dst, new_dst, true),
        (12, meta.outer_src, new_src, from_peer),
    ] {
        if !apply {
            continue;
        }
        for (i, (o, n)) in words(old).into_iter().zip(words(new)).enumerate() {
            if o != n {
                outer = adjust(outer, o, n);
                packet[at + 2 * i..at + 2 * i + 2].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
    packet[10..12].copy_from_slice(&outer.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::NetworkId;
    use etherparse::{Icmpv4Header, Icmpv4Type, Ipv4Header, PacketBuilder, UdpHeader};

    /// A port-unreachable from `router` to `to`, quoting `quoted` (a whole
    /// IPv4 packet) cut to its IP header and `keep` bytes.
    fn unreachable(router: [u8; 4], to: [u8; 4], quoted: &[u8], keep: usize) -> Vec<u8> {
        let (ip, _) = Ipv4Header::from_slice(quoted).unwrap();
        let cut = &quoted[..ip.header_len() + keep];
        let mut out = Vec::new();
        PacketBuilder::ipv4(router, to, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut out, cut)
            .unwrap();
        out
    }

    fn checks(p: &[u8]) {
        let (ip, rest) = Ipv4Header::from_slice(p).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "outer ip");
        let (icmp, quote) = Icmpv4Header::from_slice(rest).unwrap();
        let want = Icmpv4Header::with_checksum(icmp.icmp_type.clone(), quote).checksum;
        assert_eq!(icmp.checksum, want, "icmp");
        let (inner, _) = Ipv4Header::from_slice(quote).unwrap();
        assert_eq!(
            inner.header_checksum,
            inner.calc_header_checksum(),
            "inner ip"
        );
    }

    #[test]
    fn an_error_about_a_masqueraded_udp_flow_goes_back_to_the_container() {
        // The container 172.18.0.2:5000 sent to 192.0.2.1:53 as
        // 192.0.2.2:6000; the router 198.51.100.1 reports it.
        let mut sent = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(6000, 53)
            .write(&mut sent, b"query")
            .unwrap();
        let mut p = unreachable([198, 51, 100, 1], [192, 0, 2, 2], &sent, 13);
        let meta = IcmpErrorMeta::parse(&p).unwrap();
        let key = meta.flow_key(NetworkId(0));
        assert_eq!(
            key.to_string(),
            "net=n0 src=192.0.2.1 dst=192.0.2.2 sport=53 dport=6000"
        );
        let to = FlowKey::new(
            NetworkId(1),
            FlowProto::Udp,
            Ipv4Addr::new(192, 0, 2, 1).into(),
            53,
            Ipv4Addr::new(172, 18, 0, 2).into(),
            5000,
        );
        rewrite_icmp_error(&mut p, &meta, &to).unwrap();
        checks(&p);
        let again = IcmpErrorMeta::parse(&p).unwrap();
        assert_eq!(again.outer_dst, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(
            again.outer_src,
            Ipv4Addr::new(198, 51, 100, 1),
            "a router stays"
        );
        assert_eq!(
            (again.inner_src, again.inner_src_port),
            (Ipv4Addr::new(172, 18, 0, 2), 5000)
        );
        assert_eq!(
            (again.inner_dst, again.inner_dst_port),
            (Ipv4Addr::new(192, 0, 2, 1), 53)
        );
        // The whole quoted UDP datagram was kept: its checksum must be right.
        let quote = &p[again.inner_offset..];
        let (inner, rest) = Ipv4Header::from_slice(quote).unwrap();
        let (udp, data) = UdpHeader::from_slice(rest).unwrap();
        assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&inner, data).unwrap());
    }

    #[test]
    fn an_error_from_the_peer_itself_has_its_source_translated_too() {
        // A published port: the client 203.0.113.9 reached 192.0.2.2:18080,
        // which is 172.18.0.5:80; the container's answer came back to the
        // client as 192.0.2.2:18080 and the client reports it.
        let mut sent = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 2], [203, 0, 113, 9], 64)
            .tcp(18080, 40000, 1, 1000)
            .ack(1)
            .write(&mut sent, b"")
            .unwrap();
        let mut p = unreachable([203, 0, 113, 9], [192, 0, 2, 2], &sent, 8);
        let meta = IcmpErrorMeta::parse(&p).unwrap();
        let to = FlowKey::new(
            NetworkId(1),
            FlowProto::Tcp,
            Ipv4Addr::new(203, 0, 113, 9).into(),
            40000,
            Ipv4Addr::new(172, 18, 0, 5).into(),
            80,
        );
        rewrite_icmp_error(&mut p, &meta, &to).unwrap();
        checks(&p);
        let again = IcmpErrorMeta::parse(&p).unwrap();
        assert_eq!(again.outer_dst, Ipv4Addr::new(172, 18, 0, 5));
        assert_eq!(again.outer_src, Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(
            (again.inner_src, again.inner_src_port),
            (Ipv4Addr::new(172, 18, 0, 5), 80)
        );
        // Only 8 quoted bytes: the TCP checksum is not there to update.
        assert_eq!(p.len(), 20 + 8 + 20 + 8);
    }

    #[test]
    fn echo_quotes_and_bad_input_are_handled() {
        let mut sent = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 2], [192, 0, 2, 1], 1)
            .icmpv4_echo_request(61000, 1)
            .write(&mut sent, b"ping")
            .unwrap();
        let mut p = unreachable([198, 51, 100, 1], [192, 0, 2, 2], &sent, 12);
        p[20] = 11; // time exceeded
        let sum = read16(&p, 22).unwrap();
        p[22..24].copy_from_slice(&adjust(sum, 0x0303, 0x0b03).to_be_bytes());
        let meta = IcmpErrorMeta::parse(&p).unwrap();
        assert_eq!(meta.inner_proto, FlowProto::Icmp);
        let to = FlowKey::icmp(
            NetworkId(1),
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(172, 18, 0, 2).into(),
            7,
        );
        rewrite_icmp_error(&mut p, &meta, &to).unwrap();
        checks(&p);
        let again = IcmpErrorMeta::parse(&p).unwrap();
        assert_eq!(
            (again.inner_src, again.inner_src_port),
            (Ipv4Addr::new(172, 18, 0, 2), 7)
        );

        for n in 0..p.len() {
            let _ = IcmpErrorMeta::parse(&p[..n]);
        }
        let mut echo = p.clone();
        echo[20] = 8;
        assert_eq!(IcmpErrorMeta::parse(&echo), Err(WireError::IcmpType(8)));
        let mut gre = p.clone();
        gre[28 + 9] = 47;
        assert_eq!(IcmpErrorMeta::parse(&gre), Err(WireError::Protocol(47)));
    }
}
