//! Address and port translation in place, with incremental checksum
//! updates (RFC 1624), so a translated packet costs a few stores instead of
//! a pass over its payload — a 64 KiB GSO super-frame as cheaply as a SYN.
//!
//! The transport checksum field means one of two things:
//!
//! - [`L4Checksum::Complete`]: the finished checksum of the segment. Both
//!   address changes (through the pseudo-header) and port or identifier
//!   changes update it. A UDP checksum of 0 ("none", RFC 768) stays 0, and
//!   a UDP result of 0 is sent as 0xffff.
//! - [`L4Checksum::Partial`]: a frame whose virtio-net header says
//!   `NEEDS_CSUM` carries only the folded pseudo-header sum, not
//!   complemented; the device (or software segmentation) sums the segment
//!   into it later. Only address changes update it; a port is part of the
//!   segment the device will sum. This is what Linux's
//!   `inet_proto_csum_replace4` does for `CHECKSUM_PARTIAL`.
//!
//! The IPv4 header checksum is always complete.

use std::net::Ipv4Addr;

use crate::flow::{FlowKey, FlowProto};
use crate::wire::{Ipv4Meta, WireError};

/// What the transport checksum field holds (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum L4Checksum {
    /// The finished checksum.
    Complete,
    /// The pseudo-header sum of a `NEEDS_CSUM` frame.
    Partial,
}

/// Updates a complemented Internet checksum for one 16-bit word changing
/// from `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[must_use]
pub const fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = (!checksum) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[must_use]
pub const fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

fn adjust_field(field: u16, mode: L4Checksum, old: u16, new: u16) -> u16 {
    match mode {
        L4Checksum::Complete => adjust(field, old, new),
        // The field holds the sum itself: add in the non-complemented domain.
        L4Checksum::Partial => !adjust(!field, old, new),
    }
}

fn read16(p: &[u8], at: usize) -> Result<u16, WireError> {
    match p.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(WireError::Truncated),
    }
}

fn write16(p: &mut [u8], at: usize, v: u16) -> Result<(), WireError> {
    p.get_mut(at..at + 2)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn words(a: Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

/// Rewrites the packet's source and destination (address and port; the
/// identifier for ICMP echo) to `src`/`dst`, updating the IPv4 and
/// transport checksums incrementally, and `meta` to match. Fields that do
/// not change are not touched.
///
/// `packet` starts at the IPv4 header and `meta` is its parse.
///
/// # Errors
///
/// [`WireError::Truncated`] when `meta` does not describe `packet` (nothing
/// is written then).
pub fn rewrite(
    packet: &mut [u8],
    meta: &mut Ipv4Meta,
    mode: L4Checksum,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Result<(), WireError> {
    let l4 = meta.l4_offset;
    let csum_at = l4
        + match meta.proto {
            FlowProto::Tcp => 16,
            FlowProto::Udp => 6,
            FlowProto::Icmp => 2,
        };
    // Check every offset before the first write, so an error leaves the
    // packet as it was.
    read16(packet, 10)?;
    read16(packet, 18)?;
    read16(packet, l4 + 6)?;
    let mut ip_csum = read16(packet, 10)?;
    let mut l4_csum = read16(packet, csum_at)?;
    let udp_none = meta.proto == FlowProto::Udp && mode == L4Checksum::Complete && l4_csum == 0;
    let pseudo = meta.proto != FlowProto::Icmp;

    for (at, old, new) in [(12, meta.src, src.0), (16, meta.dst, dst.0)] {
        if old == new {
            continue;
        }
        for (i, (o, n)) in words(old).into_iter().zip(words(new)).enumerate() {
            ip_csum = adjust(ip_csum, o, n);
            if pseudo {
                l4_csum = adjust_field(l4_csum, mode, o, n);
            }
            write16(packet, at + 2 * i, n)?;
        }
    }
    let ports: &[(usize, u16, u16)] = match meta.proto {
        FlowProto::Tcp | FlowProto::Udp => {
            &[(l4, meta.src_port, src.1), (l4 + 2, meta.dst_port, dst.1)]
        }
        // One identifier: the request's source side, the reply's
        // destination side, carry the same value.
        FlowProto::Icmp if meta.icmp_reply => &[(l4 + 4, meta.dst_port, dst.1)],
        FlowProto::Icmp => &[(l4 + 4, meta.src_port, src.1)],
    };
    for &(at, old, new) in ports {
        if old != new {
            if mode == L4Checksum::Complete {
                l4_csum = adjust(l4_csum, old, new);
            }
            write16(packet, at, new)?;
        }
    }
    if udp_none {
        l4_csum = 0;
    } else if meta.proto == FlowProto::Udp && mode == L4Checksum::Complete && l4_csum == 0 {
        l4_csum = 0xffff;
    }
    write16(packet, 10, ip_csum)?;
    write16(packet, csum_at, l4_csum)?;
    meta.src = src.0;
    meta.dst = dst.0;
    match meta.proto {
        FlowProto::Tcp | FlowProto::Udp => {
            meta.src_port = src.1;
            meta.dst_port = dst.1;
        }
        FlowProto::Icmp => {
            let id = if meta.icmp_reply { dst.1 } else { src.1 };
            meta.src_port = id;
            meta.dst_port = id;
        }
    }
    Ok(())
}

/// Rewrites the packet to carry `to` (a [`Tracked::rewrite_to`]).
///
/// # Errors
///
/// [`WireError::NotIpv4`] when `to` holds IPv6 addresses, else as
/// [`rewrite`].
///
/// [`Tracked::rewrite_to`]: crate::conntrack::Tracked::rewrite_to
pub fn rewrite_to(
    packet: &mut [u8],
    meta: &mut Ipv4Meta,
    mode: L4Checksum,
    to: &FlowKey,
) -> Result<(), WireError> {
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (to.src, to.dst) else {
        return Err(WireError::NotIpv4);
    };
    rewrite(packet, meta, mode, (src, to.src_port), (dst, to.dst_port))
}

/// Source NAT: replaces the source address and port (identifier for an
/// echo request).
///
/// # Errors
///
/// As [`rewrite`].
pub fn snat(
    packet: &mut [u8],
    meta: &mut Ipv4Meta,
    mode: L4Checksum,
    addr: Ipv4Addr,
    port: u16,
) -> Result<(), WireError> {
    let dst = (meta.dst, meta.dst_port);
    rewrite(packet, meta, mode, (addr, port), dst)
}

/// Destination NAT: replaces the destination address and port
/// (identifier for an echo reply).
///
/// # Errors
///
/// As [`rewrite`].
pub fn dnat(
    packet: &mut [u8],
    meta: &mut Ipv4Meta,
    mode: L4Checksum,
    addr: Ipv4Addr,
    port: u16,
) -> Result<(), WireError> {
    let src = (meta.src, meta.src_port);
    rewrite(packet, meta, mode, src, (addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader,
    };
    use proptest::prelude::*;

    /// An independent IPv4 packet (no Ethernet header) from etherparse.
    fn build(
        proto: FlowProto,
        src: [u8; 4],
        sp: u16,
        dst: [u8; 4],
        dp: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let ip = PacketBuilder::ipv4(src, dst, 64);
        let mut out = Vec::new();
        match proto {
            FlowProto::Tcp => ip.tcp(sp, dp, 1000, 65535).ack(5).write(&mut out, payload),
            FlowProto::Udp => ip.udp(sp, dp).write(&mut out, payload),
            FlowProto::Icmp => ip.icmpv4_echo_request(sp, 9).write(&mut out, payload),
        }
        .unwrap();
        out
    }

    fn field_at(meta: &Ipv4Meta) -> usize {
        meta.l4_offset
            + match meta.proto {
                FlowProto::Tcp => 16,
                FlowProto::Udp => 6,
                FlowProto::Icmp => 2,
            }
    }

    /// Equal as one's-complement numbers (0 and 0xffff are both zero).
    fn same_ones(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    /// Both checksums recomputed from scratch by etherparse.
    fn recomputed(p: &[u8]) -> (u16, u16) {
        let (ip, rest) = Ipv4Header::from_slice(p).unwrap();
        let payload = &rest[..usize::from(ip.total_len) - ip.header_len()];
        let l4 = match ip.protocol {
            IpNumber::TCP => {
                let (tcp, data) = TcpHeader::from_slice(payload).unwrap();
                tcp.calc_checksum_ipv4(&ip, data).unwrap()
            }
            IpNumber::UDP => {
                let (udp, data) = UdpHeader::from_slice(payload).unwrap();
                udp.calc_checksum_ipv4(&ip, data).unwrap()
            }
            _ => {
                let (icmp, data) = Icmpv4Header::from_slice(payload).unwrap();
                let t = Icmpv4Header::with_checksum(icmp.icmp_type.clone(), data);
                assert!(matches!(
                    t.icmp_type,
                    Icmpv4Type::EchoRequest(_) | Icmpv4Type::EchoReply(_)
                ));
                t.checksum
            }
        };
        (ip.calc_header_checksum(), l4)
    }

    fn stored(p: &[u8], meta: &Ipv4Meta) -> (u16, u16) {
        (read16(p, 10).unwrap(), read16(p, field_at(meta)).unwrap())
    }

    /// The folded pseudo-header sum a `NEEDS_CSUM` frame carries.
    fn pseudo_sum(p: &[u8]) -> u16 {
        let (ip, _) = Ipv4Header::from_slice(p).unwrap();
        let len = u32::from(ip.total_len) - u32::try_from(ip.header_len()).unwrap();
        let mut sum = u32::from(ip.protocol.0) + len;
        for w in words(ip.source.into())
            .into_iter()
            .chain(words(ip.destination.into()))
        {
            sum += u32::from(w);
        }
        fold(sum)
    }

    #[test]
    fn snat_and_dnat_match_a_full_recomputation_for_each_protocol() {
        for proto in [FlowProto::Tcp, FlowProto::Udp, FlowProto::Icmp] {
            let mut p = build(
                proto,
                [172, 18, 0, 2],
                40000,
                [192, 0, 2, 1],
                80,
                b"payload!",
            );
            let mut m = Ipv4Meta::parse(&p).unwrap();
            assert_eq!(stored(&p, &m), recomputed(&p), "{proto} fixture");
            snat(
                &mut p,
                &mut m,
                L4Checksum::Complete,
                Ipv4Addr::new(192, 0, 2, 2),
                61000,
            )
            .unwrap();
            assert_eq!(stored(&p, &m), recomputed(&p), "{proto} snat");
            let again = Ipv4Meta::parse(&p).unwrap();
            assert_eq!(again, m, "{proto}: meta follows the rewrite");
            assert_eq!(again.src, Ipv4Addr::new(192, 0, 2, 2));
            assert_eq!(again.src_port, 61000);
            if proto != FlowProto::Icmp {
                dnat(
                    &mut p,
                    &mut m,
                    L4Checksum::Complete,
                    Ipv4Addr::new(10, 9, 8, 7),
                    8080,
                )
                .unwrap();
                assert_eq!(stored(&p, &m), recomputed(&p), "{proto} dnat");
                assert_eq!(Ipv4Meta::parse(&p).unwrap().dst_port, 8080);
            }
        }
    }

    #[test]
    fn partial_checksums_follow_addresses_but_not_ports() {
        for proto in [FlowProto::Tcp, FlowProto::Udp] {
            let mut p = build(
                proto,
                [172, 18, 0, 2],
                40000,
                [192, 0, 2, 1],
                80,
                &[7; 3000],
            );
            let mut m = Ipv4Meta::parse(&p).unwrap();
            let at = field_at(&m);
            let seed = pseudo_sum(&p);
            write16(&mut p, at, seed).unwrap();
            snat(
                &mut p,
                &mut m,
                L4Checksum::Partial,
                Ipv4Addr::new(192, 0, 2, 2),
                61000,
            )
            .unwrap();
            assert_eq!(read16(&p, at).unwrap(), pseudo_sum(&p), "{proto}");
            assert_eq!(read16(&p, 10).unwrap(), recomputed(&p).0);
            // What the device does next: sum the segment over the seed.
            let l4 = &p[m.l4_offset..];
            let mut sum = 0u32;
            for c in l4.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            let finished = !fold(sum);
            let finished = if proto == FlowProto::Udp && finished == 0 {
                0xffff
            } else {
                finished
            };
            write16(&mut p, at, finished).unwrap();
            assert_eq!(stored(&p, &m), recomputed(&p), "{proto} after the device");
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut p = build(FlowProto::Udp, [10, 0, 0, 1], 5000, [10, 0, 0, 2], 53, b"q");
        let mut m = Ipv4Meta::parse(&p).unwrap();
        write16(&mut p, m.l4_offset + 6, 0).unwrap();
        snat(
            &mut p,
            &mut m,
            L4Checksum::Complete,
            Ipv4Addr::new(1, 2, 3, 4),
            6000,
        )
        .unwrap();
        assert_eq!(read16(&p, m.l4_offset + 6).unwrap(), 0);
        assert_eq!(read16(&p, 10).unwrap(), recomputed(&p).0);
    }

    #[test]
    fn echo_replies_have_their_identifier_rewritten_on_the_way_back() {
        let mut p = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .icmpv4_echo_reply(61000, 3)
            .write(&mut p, b"pong")
            .unwrap();
        let mut m = Ipv4Meta::parse(&p).unwrap();
        dnat(
            &mut p,
            &mut m,
            L4Checksum::Complete,
            Ipv4Addr::new(172, 18, 0, 2),
            7,
        )
        .unwrap();
        assert_eq!(stored(&p, &m), recomputed(&p));
        let again = Ipv4Meta::parse(&p).unwrap();
        assert_eq!(
            (again.dst, again.src_port),
            (Ipv4Addr::new(172, 18, 0, 2), 7)
        );
    }

    #[test]
    fn a_meta_that_does_not_fit_the_packet_writes_nothing() {
        let p = build(FlowProto::Tcp, [10, 0, 0, 1], 1, [10, 0, 0, 2], 2, b"");
        let mut m = Ipv4Meta::parse(&p).unwrap();
        let mut short = p[..30].to_vec();
        let before = short.clone();
        assert_eq!(
            snat(
                &mut short,
                &mut m,
                L4Checksum::Complete,
                Ipv4Addr::new(9, 9, 9, 9),
                9
            ),
            Err(WireError::Truncated)
        );
        assert_eq!(short, before);
    }

    #[test]
    fn incremental_update_handles_a_stored_negative_zero() {
        assert_eq!(adjust(0xffff, 0x0800, 0x0000), 0x0800);
        assert_eq!(adjust(0x1234, 0xabcd, 0xabcd), 0x1234);
    }

    proptest! {
        #[test]
        fn translate_then_reverse_is_identity_and_checksums_stay_right(
            proto in prop_oneof![Just(FlowProto::Tcp), Just(FlowProto::Udp), Just(FlowProto::Icmp)],
            src in any::<[u8; 4]>(), sp in any::<u16>(), dst in any::<[u8; 4]>(), dp in any::<u16>(),
            nsrc in any::<[u8; 4]>(), nsp in any::<u16>(), ndst in any::<[u8; 4]>(), ndp in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let original = build(proto, src, sp, dst, dp, &payload);
            let mut p = original.clone();
            let mut m = Ipv4Meta::parse(&p).unwrap();
            let ndp = if proto == FlowProto::Icmp { nsp } else { ndp };
            rewrite(&mut p, &mut m, L4Checksum::Complete, (nsrc.into(), nsp), (ndst.into(), ndp)).unwrap();
            let (ip, l4) = recomputed(&p);
            prop_assert_eq!(read16(&p, 10).unwrap(), ip);
            let stored_l4 = read16(&p, field_at(&m)).unwrap();
            // 0 and 0xffff are the same one's-complement value; UDP sends 0xffff.
            prop_assert!(same_ones(stored_l4, l4), "stored {:04x} recomputed {:04x}", stored_l4, l4);
            let dp_back = if proto == FlowProto::Icmp { sp } else { dp };
            rewrite(&mut p, &mut m, L4Checksum::Complete, (src.into(), sp), (dst.into(), dp_back)).unwrap();
            let (ip2, l42) = recomputed(&p);
            prop_assert_eq!(read16(&p, 10).unwrap(), ip2);
            let back = read16(&p, field_at(&m)).unwrap();
            prop_assert!(same_ones(back, l42), "stored {:04x} recomputed {:04x}", back, l42);
            // Header bytes are back; a checksum may differ only as 0 vs 0xffff.
            let at = field_at(&m);
            prop_assert_eq!(&p[..10], &original[..10]);
            prop_assert_eq!(&p[12..at], &original[12..at]);
            prop_assert_eq!(&p[at + 2..], &original[at + 2..]);
        }
    }
}
