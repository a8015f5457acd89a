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
