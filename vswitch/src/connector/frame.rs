//! Frames the connector writes to containers: Ethernet from the gateway,
//! IPv4 headers with full checksums, UDP and ICMP echo replies, and the
//! offload header of TCP segments the userspace stack produced.

use std::net::Ipv4Addr;

use smoltcp::wire::IpProtocol;
use smoltcp::wire::checksum as sum;

use super::Endpoint;
use crate::buf::{PacketBuf, VnetHdr};
use crate::switch::checksum;

/// Ethernet header length.
pub(crate) const ETH: usize = 14;
/// IPv4 header length (no options).
pub(crate) const IP: usize = 20;
/// TTL of packets the connector originates.
const TTL: u8 = 64;

/// Writes the Ethernet header: from the gateway to the endpoint.
pub(crate) fn ethernet(frame: &mut [u8], ep: &Endpoint) {
    frame[0..6].copy_from_slice(&ep.mac.0);
    frame[6..12].copy_from_slice(&ep.gateway.mac.0);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
}

/// Writes a 20-byte IPv4 header with its checksum.
pub(crate) fn ipv4(h: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload: usize) {
    let total = u16::try_from(IP + payload).unwrap_or(u16::MAX);
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    h[8] = TTL;
    h[9] = u8::from(proto);
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum::full(&h[..IP]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The uncomplemented pseudo-header sum a partial checksum starts from.
pub(crate) fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, len: usize) -> u16 {
    sum::pseudo_header_v4(&src, &dst, proto, u32::try_from(len).unwrap_or(u32::MAX))
}

/// A UDP datagram from `src` to the endpoint's `dst`, checksummed.
/// `None` when the payload does not fit a buffer.
pub(crate) fn udp(
    buf: &mut PacketBuf,
    ep: &Endpoint,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Option<()> {
    let len = 8 + payload.len();
    let total = ETH + IP + len;
    if IP + len > usize::from(u16::MAX) {
        return None;
    }
    let space = buf.rx_space();
    let f = space.get_mut(..total)?;
    ethernet(f, ep);
    ipv4(&mut f[ETH..ETH + IP], src.0, dst.0, IpProtocol::Udp, len);
    let u = &mut f[ETH + IP..];
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    u[8..len].copy_from_slice(payload);
    let c = !sum::combine(&[
        pseudo(src.0, dst.0, IpProtocol::Udp, len),
        sum::data(&u[..len]),
    ]);
    // 0 means "no checksum" in UDP; its equivalent is all ones.
    let c = if c == 0 { 0xffff } else { c };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    buf.set_received(total);
    buf.vnet = VnetHdr::default();
    Some(())
}

/// An ICMP message (`icmp`: type, code, checksum, rest, as received) from
/// `src` to the endpoint at `dst`, with the echo identifier set to `ident`
/// and the checksum recomputed.
pub(crate) fn icmp(
    buf: &mut PacketBuf,
    ep: &Endpoint,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp: &[u8],
    ident: u16,
) -> Option<()> {
    let total = ETH + IP + icmp.len();
    if icmp.len() < 8 || IP + icmp.len() > usize::from(u16::MAX) {
        return None;
    }
    let space = buf.rx_space();
    let f = space.get_mut(..total)?;
    ethernet(f, ep);
    ipv4(
        &mut f[ETH..ETH + IP],
        src,
        dst,
        IpProtocol::Icmp,
        icmp.len(),
    );
    let m = &mut f[ETH + IP..];
    m.copy_from_slice(icmp);
    m[2..4].copy_from_slice(&[0, 0]);
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    let c = checksum::full(m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    buf.set_received(total);
    buf.vnet = VnetHdr::default();
    Some(())
}

/// Prepares a TCP segment the userspace stack wrote after the Ethernet
/// header (checksum field zero): the partial checksum for the device to
/// complete, and, when it carries more than `mss` bytes, the GSO fields so
/// the container's stack takes it as one super-frame. Returns the TCP
/// header's offset and flags, or `None` for a packet that is not TCP.
pub(crate) fn tcp_offload(buf: &mut PacketBuf, mss: u16) -> Option<(usize, u8)> {
    let f = buf.frame_mut();
    let ihl = usize::from(f.get(ETH)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*f.get(ETH + 2)?, *f.get(ETH + 3)?]));
    if f.get(ETH + 9).copied() != Some(u8::from(IpProtocol::Tcp)) || total < ihl + 20 {
        return None;
    }
    let src = Ipv4Addr::new(f[ETH + 12], f[ETH + 13], f[ETH + 14], f[ETH + 15]);
    let dst = Ipv4Addr::new(f[ETH + 16], f[ETH + 17], f[ETH + 18], f[ETH + 19]);
    let l4 = ETH + ihl;
    let doff = usize::from(*f.get(l4 + 12)? >> 4) * 4;
    let flags = *f.get(l4 + 13)?;
    let tcp_len = total - ihl;
    let p = pseudo(src, dst, IpProtocol::Tcp, tcp_len);
    f.get_mut(l4 + 16..l4 + 18)?
        .copy_from_slice(&p.to_be_bytes());
    let payload = tcp_len.saturating_sub(doff);
    let mut vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: u16::try_from(l4).ok()?,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    if payload > usize::from(mss) {
        vnet.gso_type = VnetHdr::GSO_TCPV4;
        vnet.gso_size = mss;
        vnet.hdr_len = u16::try_from(l4 + doff).ok()?;
    }
    buf.vnet = vnet;
    Some((l4, flags))
}

/// The TCP options of the segment at `l4` of `packet`, as (kind, bytes
/// including kind and length); stops at the end-of-list option or at an
/// option whose length does not fit.
fn tcp_options(packet: &[u8], l4: usize) -> impl Iterator<Item = (u8, &[u8])> {
    let doff = packet.get(l4 + 12).map_or(0, |b| usize::from(b >> 4) * 4);
    let opts = packet
        .get(l4 + 20..(l4 + doff).min(packet.len()))
        .unwrap_or_default();
    let mut at = 0;
    core::iter::from_fn(move || {
        loop {
            match *opts.get(at)? {
                0 => return None,
                1 => at += 1,
                kind => {
                    let len = usize::from(*opts.get(at + 1)?);
                    let o = opts.get(at..at + len).filter(|_| len >= 2)?;
                    at += len;
                    return Some((kind, o));
                }
            }
        }
    })
}

/// Whether the SYN or SYN-ACK at `l4` of `packet` permits SACK (RFC 2018):
/// only then may the endpoint's segments carry SACK blocks.
pub(crate) fn sack_permitted(packet: &[u8], l4: usize) -> bool {
    tcp_options(packet, l4).any(|(kind, o)| kind == 4 && o.len() == 2)
}

/// The sequence space `[seq, end)` the data of the TCP segment at `l4` of
/// the IPv4 `packet` occupies; `None` for a segment without data.
pub(crate) fn data_span(packet: &[u8], l4: usize) -> Option<(u32, u32)> {
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let doff = usize::from(*packet.get(l4 + 12)? >> 4) * 4;
    let payload = total.checked_sub(l4 + doff).filter(|&n| n > 0)?;
    let seq = u32::from_be_bytes(packet.get(l4 + 4..l4 + 8)?.try_into().ok()?);
    Some((seq, seq.wrapping_add(u32::try_from(payload).ok()?)))
}

/// Whether sequence number `a` comes before `b`, modulo 2^32 (RFC 9293
/// §3.4).
pub(crate) const fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The duplicate part of the container's data at `(seq, end)` (its
/// [`data_span`]), by `taken`, the end of the in-order data the endpoint
/// already has: `[seq, min(end, taken))` when the data starts before it,
/// for a D-SACK block.
pub(crate) const fn duplicate_part((seq, end): (u32, u32), taken: u32) -> Option<(u32, u32)> {
    if !seq_before(seq, taken) {
        return None;
    }
    Some((seq, if seq_before(end, taken) { end } else { taken }))
}

/// Adds a D-SACK block (RFC 2883: the first SACK block reports data
/// received twice) to the pure ACK the endpoint wrote after the Ethernet
/// header of `buf`, before [`tcp_offload`] sums it: the container's stack
/// then knows its retransmission (a tail loss probe fired while the
/// connector waited for a core) was not needed and undoes the congestion
/// window cut, which CUBIC otherwise keeps. SACK blocks the endpoint put
/// there follow as far as the option space allows; other options stay.
/// `None` (the frame unchanged) for a segment that carries data or whose
/// headers do not parse.
pub(crate) fn add_dsack(buf: &mut PacketBuf, block: (u32, u32)) -> Option<()> {
    let f = buf.frame();
    let ihl = usize::from(f.get(ETH)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*f.get(ETH + 2)?, *f.get(ETH + 3)?]));
    let l4 = ETH + ihl;
    let doff = usize::from(*f.get(l4 + 12)? >> 4) * 4;
    if ihl < IP
        || doff < 20
        || total != ihl + doff
        || f.len() < l4 + doff
        || f.get(ETH + 9).copied() != Some(u8::from(IpProtocol::Tcp))
    {
        return None;
    }
    let mut opts = [0u8; 40];
    let mut n = 0;
    let mut blocks = [(0u32, 0u32); 4];
    let mut nb = 0;
    for (kind, o) in tcp_options(&f[ETH..], ihl) {
        if kind == 5 {
            for b in o.get(2..).unwrap_or_default().chunks_exact(8) {
                let l = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let r = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                if nb < blocks.len() && (l, r) != block {
                    blocks[nb] = (l, r);
                    nb += 1;
                }
            }
        } else {
            opts.get_mut(n..n + o.len())?.copy_from_slice(o);
            n += o.len();
        }
    }
    let fit = (opts.len().checked_sub(n + 4)? / 8).min(1 + nb);
    if fit == 0 {
        return None;
    }
    opts[n..n + 4].copy_from_slice(&[1, 1, 5, u8::try_from(2 + 8 * fit).ok()?]);
    n += 4;
    for (l, r) in core::iter::once(block)
        .chain(blocks[..nb].iter().copied())
        .take(fit)
    {
        opts[n..n + 4].copy_from_slice(&l.to_be_bytes());
        opts[n + 4..n + 8].copy_from_slice(&r.to_be_bytes());
        n += 8;
    }
    // Padded with end-of-list bytes to whole words, never shorter than
    // what was there.
    let old = doff - 20;
    let new = n.div_ceil(4).max(old.div_ceil(4)) * 4;
    let grow = new - old;
    buf.truncate(l4 + doff);
    if grow > 0 {
        buf.push_front(grow)?;
        buf.frame_mut().copy_within(grow..grow + l4 + 20, 0);
    }
    let f = buf.frame_mut();
    f.get_mut(l4 + 20..l4 + 20 + new)?
        .copy_from_slice(&opts[..new]);
    f[l4 + 12] = (u8::try_from((20 + new) / 4).ok()? << 4) | (f[l4 + 12] & 0x0f);
    let total = u16::try_from(total + grow).ok()?;
    f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let c = checksum::full(&f[ETH..ETH + ihl]);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{Ipv4Packet, TcpOption, TcpPacket};

    use super::*;

    /// [`duplicate_part`] of the data segment at `l4` of `packet`.
    fn duplicate_range(packet: &[u8], l4: usize, taken: u32) -> Option<(u32, u32)> {
        duplicate_part(data_span(packet, l4)?, taken)
    }

    /// A pure ACK as the endpoint writes it: Ethernet (left zero), IPv4,
    /// TCP with `opts`.
    fn ack(opts: &[u8]) -> PacketBuf {
        let tcp = 20 + opts.len();
        let mut f = vec![0u8; ETH + IP + tcp];
        ipv4(
            &mut f[ETH..ETH + IP],
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(172, 30, 0, 2),
            IpProtocol::Tcp,
            tcp,
        );
        let t = &mut f[ETH + IP..];
        t[0..2].copy_from_slice(&80u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&7u32.to_be_bytes());
        t[8..12].copy_from_slice(&5000u32.to_be_bytes());
        t[12] = u8::try_from(tcp / 4).unwrap() << 4;
        t[13] = 0x10;
        t[20..].copy_from_slice(opts);
        PacketBuf::from_frame(&f).unwrap()
    }

    /// (SACK blocks, timestamp, seq, ack) of the frame, its IPv4 header
    /// checked.
    fn parse(buf: &PacketBuf) -> (Sacks, Option<(u32, u32)>, u32, u32) {
        let ip = Ipv4Packet::new_checked(&buf.frame()[ETH..]).unwrap();
        assert!(ip.verify_checksum(), "IPv4 checksum");
        assert_eq!(usize::from(ip.total_len()), buf.len() - ETH);
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.payload().is_empty());
        let (mut sacks, mut ts) = ([None; 3], None);
        let mut opts = t.options();
        while !opts.is_empty() {
            let (rest, o) = TcpOption::parse(opts).unwrap();
            match o {
                TcpOption::SackRange(r) => sacks = r,
                TcpOption::TimeStamp { tsval, tsecr } => ts = Some((tsval, tsecr)),
                TcpOption::EndOfList => break,
                _ => {}
            }
            opts = rest;
        }
        (
            sacks,
            ts,
            t.seq_number().0.cast_unsigned(),
            t.ack_number().0.cast_unsigned(),
        )
    }

    type Sacks = [Option<(u32, u32)>; 3];

    const TS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3];

    #[test]
    fn a_dsack_block_goes_first_and_other_options_stay() {
        let mut buf = ack(&TS);
        add_dsack(&mut buf, (4900, 5000)).unwrap();
        let (sacks, ts, seq, acked) = parse(&buf);
        assert_eq!(sacks, [Some((4900, 5000)), None, None]);
        assert_eq!(ts, Some((9, 3)));
        assert_eq!((seq, acked), (7, 5000));
    }

    #[test]
    fn the_endpoints_sack_blocks_follow_the_dsack_block_as_far_as_they_fit() {
        let mut opts = TS.to_vec();
        opts.extend_from_slice(&[1, 1, 5, 18]);
        for (l, r) in [(6000u32, 7000u32), (8000, 9000)] {
            opts.extend_from_slice(&l.to_be_bytes());
            opts.extend_from_slice(&r.to_be_bytes());
        }
        let mut buf = ack(&opts);
        add_dsack(&mut buf, (4000, 4100)).unwrap();
        let (sacks, ts, _, _) = parse(&buf);
        // 12 bytes of timestamp, 4 of SACK header: room for 3 blocks.
        assert_eq!(
            sacks,
            [Some((4000, 4100)), Some((6000, 7000)), Some((8000, 9000))]
        );
        assert_eq!(ts, Some((9, 3)));
    }

    #[test]
    fn a_segment_with_data_or_not_tcp_is_left_alone() {
        let mut buf = ack(&TS);
        let mut f = buf.frame().to_vec();
        f.extend_from_slice(b"data");
        let total = u16::try_from(f.len() - ETH).unwrap();
        f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
        buf.set_frame(&f).unwrap();
        assert!(add_dsack(&mut buf, (1, 2)).is_none());
        assert_eq!(buf.frame(), &f[..]);
        f[ETH + 9] = 17;
        buf.set_frame(&f).unwrap();
        assert!(add_dsack(&mut buf, (1, 2)).is_none());
        assert!(add_dsack(&mut PacketBuf::from_frame(&f[..ETH + 10]).unwrap(), (1, 2)).is_none());
    }

    #[test]
    fn a_duplicate_is_what_starts_before_the_acknowledged_number_modulo_2_32() {
        // An IPv4 packet with a 20-byte TCP header and `len` bytes.
        let seg = |seq: u32, len: usize| {
            let mut p = vec![0u8; IP + 20 + len];
            ipv4(
                &mut p[..IP],
                Ipv4Addr::new(172, 30, 0, 2),
                Ipv4Addr::new(10, 0, 0, 1),
                IpProtocol::Tcp,
                20 + len,
            );
            p[IP + 4..IP + 8].copy_from_slice(&seq.to_be_bytes());
            p[IP + 12] = 5 << 4;
            p
        };
        assert_eq!(duplicate_range(&seg(900, 100), IP, 1000), Some((900, 1000)));
        assert_eq!(duplicate_range(&seg(950, 100), IP, 1000), Some((950, 1000)));
        assert_eq!(duplicate_range(&seg(800, 100), IP, 1000), Some((800, 900)));
        assert_eq!(duplicate_range(&seg(1000, 100), IP, 1000), None);
        assert_eq!(duplicate_range(&seg(900, 0), IP, 1000), None);
        // Across the wrap of the sequence space.
        let s = u32::MAX - 49;
        assert_eq!(duplicate_range(&seg(s, 100), IP, 50), Some((s, 50)));
        assert_eq!(duplicate_range(&seg(10, 100), IP, u32::MAX - 5), None);
        assert_eq!(duplicate_range(&seg(1, 1)[..IP + 10], IP, 5), None);
    }

    #[test]
    fn sack_permitted_is_read_from_the_syns_options() {
        let with = ack(&[2, 4, 5, 180, 4, 2, 1, 1]);
        assert!(sack_permitted(&with.frame()[ETH..], IP));
        let without = ack(&[2, 4, 5, 180]);
        assert!(!sack_permitted(&without.frame()[ETH..], IP));
        // A length that runs past the header ends the list.
        let broken = ack(&[2, 40, 4, 2]);
        assert!(!sack_permitted(&broken.frame()[ETH..], IP));
    }
}
