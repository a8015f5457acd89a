//! Software GSO and checksum completion: what the kernel would have done for
//! a port that cannot take offloads.
//!
//! Containers hand the switch TSO/GSO super-frames (up to 64 KiB) whose L4
//! checksum is only partial ([`VnetHdr::F_NEEDS_CSUM`]). That is the fast
//! case as long as the frame leaves through another port that accepts them.
//! When it must leave through one that does not, [`complete_checksum`]
//! finishes the checksum of a single frame in place, and [`Segmenter`] (or
//! its wrapper [`segment`]) cuts a super-frame into wire-sized frames the way
//! Linux's `inet_gso_segment`/`ipv6_gso_segment` with `tcp_gso_segment` and
//! `__udp_gso_segment` do, each with complete IP and L4 checksums and no
//! offload pending.
//!
//! # Why this shape
//!
//! - **Validate everything, then emit.** All header parsing happens in
//!   [`Segmenter::new`]; once it succeeds nothing can fail, so a malformed
//!   super-frame is dropped whole (one counter increment) and never leaves
//!   half-sent. Nothing from the wire is trusted: `hdr_len` is ignored
//!   (Linux fills it with the linear length, not the header length),
//!   header lengths are measured from the frame, and the IP length field,
//!   not the frame length, bounds the packet, so Ethernet padding never
//!   becomes payload.
//! - **The caller owns the buffers.** Each segment is written into a
//!   [`PacketBuf`] the caller provides, so the per-segment path copies
//!   headers and payload once and allocates nothing. [`Segmenter::next_into`]
//!   is a lending, iterator-like step rather than an [`Iterator`] because
//!   the output lives in the caller's buffer: a datapath that sends
//!   immediately reuses one buffer, one that batches (`sendmmsg`) takes a
//!   fresh buffer from its pool per segment, and either can stop early when
//!   the port's queue is full. [`segment`] is the one-buffer loop with a
//!   callback for the common case.
//! - **Segments are written at the buffer's full headroom** and handed over
//!   as `&mut PacketBuf`, so the receiver of a segment can still push a VLAN
//!   tag or a tunnel header in front without copying it again.
//! - **Checksums are computed from scratch**, pseudo-header included, from
//!   the addresses in the frame; the partial sum the sender left in the L4
//!   checksum field, and `csum_start`/`csum_offset`, are not needed, so a
//!   super-frame without [`VnetHdr::F_NEEDS_CSUM`] is handled the same way.
//!
//! # What is not supported
//!
//! - [`VnetHdr::GSO_UDP`] (UFO: one UDP datagram split into IP fragments) is
//!   refused with [`GsoError::Ufo`]: Linux removed UFO from its sockets in
//!   4.14 and only virtio guests still announce it.
//! - IPv6 extension headers, IPv4 fragments, stacked VLAN tags (QinQ) and
//!   tunnelled (encapsulated) super-frames are refused with an error.
//! - UDP GSO super-frames of more than [`UDP_MAX_SEGMENTS`] segments are
//!   refused, as Linux refuses them when they are built; TCP super-frames are
//!   not limited beyond their 64 KiB, so the work per frame is bounded by
//!   the 64 KiB divided by `gso_size` (a 1-byte `gso_size` yields some 65 000
//!   tiny segments, as it would in the kernel).

use core::ops::Range;

use smoltcp::wire::{self, EthernetProtocol, IpProtocol, checksum};

use crate::buf::{MAX_FRAME_LEN, PacketBuf, VnetHdr};

/// The most segments a UDP GSO super-frame may carry (Linux's
/// `UDP_MAX_SEGMENTS`; a sender cannot build a larger one).
pub const UDP_MAX_SEGMENTS: usize = 128;

/// Ethernet header length without a VLAN tag.
const ETH_LEN: usize = wire::ETHERNET_HEADER_LEN;
/// An 802.1Q tag.
const VLAN_LEN: usize = crate::switch::parse::VLAN_TAG_LEN;
/// `ETH_P_8021Q` (smoltcp has no VLAN constant).
const ETHERTYPE_VLAN: u16 = crate::switch::parse::VLAN_TPIDS[0];
/// The fixed IPv6 header.
const IPV6_LEN: usize = wire::IPV6_HEADER_LEN;
/// The shortest IPv4 header.
const IPV4_MIN_LEN: usize = wire::IPV4_HEADER_LEN;
/// The shortest TCP header.
const TCP_MIN_LEN: usize = wire::TCP_HEADER_LEN;
/// The UDP header.
const UDP_LEN: usize = wire::UDP_HEADER_LEN;
/// Offset of the checksum in the UDP header: where `csum_offset` points for
/// UDP, whose zero checksum means "none".
const UDP_CSUM_OFFSET: u16 = 6;
/// Offset of the checksum in the TCP header.
const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;
/// TCP flag bits cleared on all but the last segment (`FIN`, `PSH`).
const TCP_FIN_PSH: u8 = 0x01 | 0x08;
/// TCP flag bit cleared on all but the first segment (`CWR`).
const TCP_CWR: u8 = 0x80;

/// Why a frame could not be segmented or checksummed. Every variant means
/// the frame is dropped; the datapath counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// [`segment`] was given a frame with no GSO pending.
    #[error("frame has no GSO pending")]
    NotGso,
    /// [`complete_checksum`] was given a super-frame, whose checksum only
    /// means something after segmentation (Linux's `skb_checksum_help`
    /// refuses those too).
    #[error("cannot complete the checksum of a GSO super-frame")]
    SuperFrame,
    /// `GSO_UDP` (UFO, IP fragmentation of one datagram) is not supported.
    #[error("UDP fragmentation offload (GSO_UDP) is not supported")]
    Ufo,
    /// A `gso_type` that virtio does not define.
    #[error("unknown GSO type {0:#04x}")]
    UnknownGsoType(u8),
    /// `gso_size` is zero.
    #[error("GSO size is zero")]
    ZeroGsoSize,
    /// The frame exceeds [`MAX_FRAME_LEN`] (only a caller passing its own
    /// slice can cause this).
    #[error("frame of {0} bytes exceeds the largest frame")]
    FrameTooLong(usize),
    /// The frame ends inside the Ethernet header or its VLAN tag.
    #[error("frame truncated in the Ethernet header")]
    TruncatedEthernet,
    /// The EtherType is neither IPv4 nor IPv6 (after at most one 802.1Q tag).
    #[error("unsupported EtherType {0:#06x}")]
    UnsupportedEthertype(u16),
    /// The IP version does not fit the GSO type (`TCPV4` over IPv6, or the
    /// reverse) or the version nibble contradicts the EtherType.
    #[error("IP version does not match the GSO type or EtherType")]
    IpVersionMismatch,
    /// The frame ends inside the IP header.
    #[error("frame truncated in the IP header")]
    TruncatedIpHeader,
    /// The IPv4 header length (IHL) is below 5 words.
    #[error("bad IPv4 header length {0} words")]
    BadIpv4HeaderLength(u8),
    /// The IP length field is shorter than the headers it covers or longer
    /// than the frame.
    #[error("IP length {ip_len} inconsistent with a frame of {frame_len} bytes")]
    BadIpLength {
        /// Bytes from the IP header to the end of the packet, per the header.
        ip_len: usize,
        /// Bytes from the IP header to the end of the frame.
        frame_len: usize,
    },
    /// The IPv4 packet is a fragment.
    #[error("IPv4 fragment")]
    Ipv4Fragment,
    /// The IPv6 header is followed by an extension header.
    #[error("IPv6 extension header {0}")]
    Ipv6ExtensionHeader(u8),
    /// The transport protocol does not fit the GSO type.
    #[error("transport protocol {0} does not match the GSO type")]
    TransportMismatch(u8),
    /// The packet ends inside the TCP header.
    #[error("packet truncated in the TCP header")]
    TruncatedTcpHeader,
    /// The TCP data offset is below 5 words.
    #[error("bad TCP data offset {0} words")]
    BadTcpDataOffset(u8),
    /// The packet ends inside the UDP header.
    #[error("packet truncated in the UDP header")]
    TruncatedUdpHeader,
    /// A UDP GSO super-frame would yield more than [`UDP_MAX_SEGMENTS`].
    #[error("UDP GSO super-frame of {0} segments")]
    TooManySegments(usize),
    /// `csum_start` lies beyond the frame.
    #[error("checksum start {start} beyond a frame of {len} bytes")]
    CsumStartBeyondFrame {
        /// `csum_start`.
        start: usize,
        /// Frame length.
        len: usize,
    },
    /// The checksum field (`csum_start + csum_offset`, two bytes) does not
    /// fit in the frame.
    #[error("checksum field at {at} beyond a frame of {len} bytes")]
    CsumFieldBeyondFrame {
        /// `csum_start + csum_offset`.
        at: usize,
        /// Frame length.
        len: usize,
    },
}

/// Finishes the partial L4 checksum of a frame that needs no segmentation,
/// in place, as Linux's `skb_checksum_help` does: the one's-complement sum
/// from `csum_start` to the end of the frame (which already holds the
/// pseudo-header sum in its checksum field) is complemented and stored at
/// `csum_start + csum_offset`.
///
/// A zero result is stored as `0xffff` when `csum_offset` points at a UDP
/// checksum (offset 6), where zero would mean "no checksum"; elsewhere the
/// two are equivalent to a receiver and the plain result is kept.
///
/// Does nothing when the header does not ask for it
/// ([`VnetHdr::F_NEEDS_CSUM`] unset). The caller then clears the flag (the
/// frame leaves with `VnetHdr::default()`).
///
/// # Errors
/// [`GsoError::SuperFrame`] for a frame still to be segmented, and
/// [`GsoError::CsumStartBeyondFrame`] or [`GsoError::CsumFieldBeyondFrame`]
/// when the offsets point outside the frame. The frame is unchanged then.
pub fn complete_checksum(frame: &mut [u8], vnet: &VnetHdr) -> Result<(), GsoError> {
    if let Some((at, sum)) = partial_checksum(frame, vnet)? {
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(())
}

/// What [`complete_checksum`] would store, and where, without touching the
/// frame: for a sender that cannot write into it (a frame shared by a
/// flood) and writes the checksum into its own copy of the headers, the
/// payload sent from where it lies. `None` when the header does not ask
/// for a checksum.
///
/// # Errors
/// As [`complete_checksum`].
pub fn partial_checksum(frame: &[u8], vnet: &VnetHdr) -> Result<Option<(usize, u16)>, GsoError> {
    if !vnet.needs_csum() {
        return Ok(None);
    }
    if vnet.is_gso() {
        return Err(GsoError::SuperFrame);
    }
    let len = frame.len();
    let start = usize::from(vnet.csum_start);
    let at = start + usize::from(vnet.csum_offset);
    let Some(covered) = frame.get(start..) else {
        return Err(GsoError::CsumStartBeyondFrame { start, len });
    };
    if at + 2 > len {
        return Err(GsoError::CsumFieldBeyondFrame { at, len });
    }
    let mut sum = !crate::csum::data(covered);
    if sum == 0 && vnet.csum_offset == UDP_CSUM_OFFSET {
        sum = 0xffff;
    }
    Ok(Some((at, sum)))
}

/// Cuts the GSO super-frame in `src` into frames of at most
/// `src.vnet.gso_size` payload bytes, writing each into `out` and passing
/// it to `emit` before the next overwrites it. Each segment carries
/// `VnetHdr::default()`. Returns the number of segments emitted.
///
/// # Errors
/// Any [`GsoError`] from [`Segmenter::new`]; nothing is emitted then.
pub fn segment(
    src: &PacketBuf,
    out: &mut PacketBuf,
    mut emit: impl FnMut(&mut PacketBuf),
) -> Result<usize, GsoError> {
    let mut segmenter = Segmenter::new(src.frame(), &src.vnet)?;
    let count = segmenter.segments();
    while segmenter.next_into(out) {
        emit(out);
    }
    Ok(count)
}

/// Which transport the super-frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// Where the headers of a validated super-frame lie.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the L4 header (end of the IP header).
    l4: usize,
    /// Offset of the L4 payload (end of all headers every segment repeats).
    payload: usize,
    /// End of the IP packet per its length field (trailing bytes excluded).
    end: usize,
    /// IPv4 (else IPv6).
    ipv4: bool,
    /// TCP or UDP.
    transport: Transport,
}

/// A validated GSO super-frame, handing out its segments one at a time.
///
/// ```
/// # use vswitch::buf::PacketBuf;
/// # use vswitch::gso::{GsoError, Segmenter};
/// # fn send(_: &PacketBuf) {}
/// # fn f(src: &PacketBuf, out: &mut PacketBuf) -> Result<(), GsoError> {
/// let mut segments = Segmenter::new(src.frame(), &src.vnet)?;
/// while segments.next_into(out) {
///     send(out);
/// }
/// # Ok(()) }
/// ```
pub struct Segmenter<'a> {
    frame: &'a [u8],
    layout: Layout,
    /// Payload bytes per segment.
    mss: u16,
    /// Segments in all.
    count: usize,
    /// Segments written so far.
    done: usize,
    /// Offset in `frame` of the next segment's payload.
    next: usize,
    /// IPv4 identification of the first segment.
    ip_id: u16,
    /// TCP sequence number of the next segment.
    seq: u32,
}

impl core::fmt::Debug for Segmenter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Segmenter")
            .field("frame_len", &self.frame.len())
            .field("layout", &self.layout)
            .field("mss", &self.mss)
            .field("count", &self.count)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a> Segmenter<'a> {
    /// Checks a super-frame and its virtio-net header and measures its
    /// headers. `vnet.hdr_len`, `csum_start` and `csum_offset` are not used.
    ///
    /// A super-frame whose payload fits in one segment (or is empty) yields
    /// one frame, with its checksums completed.
    ///
    /// # Errors
    /// A [`GsoError`] naming the first thing wrong: no or an unsupported GSO
    /// type, a zero `gso_size`, a truncated or inconsistent header, an IPv4
    /// fragment, an IPv6 extension header, a transport that does not match
    /// the GSO type, or too many UDP segments.
    pub fn new(frame: &'a [u8], vnet: &VnetHdr) -> Result<Self, GsoError> {
        let (want_v4, want_v6, transport) = match vnet.gso_type & !VnetHdr::GSO_ECN {
            VnetHdr::GSO_NONE => return Err(GsoError::NotGso),
            VnetHdr::GSO_TCPV4 => (true, false, Transport::Tcp),
            VnetHdr::GSO_TCPV6 => (false, true, Transport::Tcp),
            VnetHdr::GSO_UDP_L4 => (true, true, Transport::Udp),
            VnetHdr::GSO_UDP => return Err(GsoError::Ufo),
            other => return Err(GsoError::UnknownGsoType(other)),
        };
        if vnet.gso_size == 0 {
            return Err(GsoError::ZeroGsoSize);
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(GsoError::FrameTooLong(frame.len()));
        }

        let (ethertype, l3) = match be16(frame, 12) {
            Some(ETHERTYPE_VLAN) => (be16(frame, 16), ETH_LEN + VLAN_LEN),
            t => (t, ETH_LEN),
        };
        let ethertype = ethertype.ok_or(GsoError::TruncatedEthernet)?;
        let ipv4 = match EthernetProtocol::from(ethertype) {
            EthernetProtocol::Ipv4 if want_v4 => true,
            EthernetProtocol::Ipv6 if want_v6 => false,
            EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => {
                return Err(GsoError::IpVersionMismatch);
            }
            _ => return Err(GsoError::UnsupportedEthertype(ethertype)),
        };
        let (l4, end, proto) = if ipv4 {
            parse_ipv4(frame, l3)?
        } else {
            parse_ipv6(frame, l3)?
        };
        let payload = match (transport, IpProtocol::from(proto)) {
            (Transport::Tcp, IpProtocol::Tcp) => {
                if l4 + TCP_MIN_LEN > end {
                    return Err(GsoError::TruncatedTcpHeader);
                }
                let doff = frame[l4 + 12] >> 4;
                if doff < 5 {
                    return Err(GsoError::BadTcpDataOffset(doff));
                }
                let payload = l4 + 4 * usize::from(doff);
                if payload > end {
                    return Err(GsoError::TruncatedTcpHeader);
                }
                payload
            }
            (Transport::Udp, IpProtocol::Udp) => {
                if l4 + UDP_LEN > end {
                    return Err(GsoError::TruncatedUdpHeader);
                }
                l4 + UDP_LEN
            }
            (_, _) => return Err(GsoError::TransportMismatch(proto)),
        };

        let mss = usize::from(vnet.gso_size);
        let count = (end - payload).div_ceil(mss).max(1);
        if transport == Transport::Udp && count > UDP_MAX_SEGMENTS {
            return Err(GsoError::TooManySegments(count));
        }
        // Both lie inside headers measured above.
        let ip_id = if ipv4 { be16(frame, l3 + 4) } else { None };
        let seq = if transport == Transport::Tcp {
            be32(frame, l4 + 4)
        } else {
            None
        };
        Ok(Self {
            frame,
            layout: Layout {
                l3,
                l4,
                payload,
                end,
                ipv4,
                transport,
            },
            mss: vnet.gso_size,
            count,
            done: 0,
            next: payload,
            ip_id: ip_id.unwrap_or(0),
            seq: seq.unwrap_or(0),
        })
    }

    /// How many segments the super-frame yields in all.
    #[must_use]
    pub const fn segments(&self) -> usize {
        self.count
    }

    /// How many segments are still to come.
    #[must_use]
    pub const fn remaining(&self) -> usize {
        self.count - self.done
    }

    /// Length of the headers every segment repeats (Ethernet to L4), as
    /// measured from the frame.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        self.layout.payload
    }

    /// The payload bytes of every segment but the last (`gso_size`).
    #[must_use]
    pub const fn mss(&self) -> usize {
        self.mss as usize
    }

    /// Writes the next segment into `out` (replacing its content, with full
    /// headroom and `VnetHdr::default()`), or returns `false` when all have
    /// been written.
    pub fn next_into(&mut self, out: &mut PacketBuf) -> bool {
        let hlen = self.layout.payload;
        let frame = self.frame;
        // The headers are at most the frame, which `new` checked against
        // `MAX_FRAME_LEN`, the size of the receive space.
        let buf = out.rx_space();
        let Some(payload) = self.next_headers_into(&mut buf[..hlen]) else {
            return false;
        };
        let total = hlen + payload.len();
        buf[hlen..total].copy_from_slice(&frame[payload]);
        out.set_received(total);
        out.vnet = VnetHdr::default();
        true
    }

    /// Writes the headers of the next segment into `head` (its first
    /// [`Segmenter::header_len`] bytes) and returns where the segment's
    /// payload lies in the super-frame: the segment is those headers
    /// followed by that slice, checksums complete. A sender with
    /// scatter-gather I/O sends the two as they are, so the payload is
    /// read once, by the checksum, and copied once, by the kernel.
    /// Returns `None` when all segments have been written, or when `head`
    /// is shorter than the headers (nothing is consumed then).
    pub fn next_headers_into(&mut self, head: &mut [u8]) -> Option<Range<usize>> {
        let Layout {
            l3,
            l4,
            payload: hlen,
            end,
            ipv4,
            transport,
        } = self.layout;
        if self.done == self.count || head.len() < hlen {
            return None;
        }
        let first = self.done == 0;
        self.done += 1;
        let last = self.done == self.count;

        // The payload left is at most 64 KiB, as the IP length field bounds it.
        let seg = u16::try_from(end - self.next).map_or(self.mss, |left| left.min(self.mss));
        let seg_len = usize::from(seg);
        let total = hlen + seg_len;
        let range = self.next..self.next + seg_len;
        let body = &self.frame[range.clone()];
        let buf = &mut head[..hlen];
        buf.copy_from_slice(&self.frame[..hlen]);
        self.next += seg_len;

        // Every length below is bounded by the 16-bit IP length field.
        let l4_len = u16::try_from(total - l4).unwrap_or(u16::MAX);
        if ipv4 {
            let ip_len = u16::try_from(total - l3).unwrap_or(u16::MAX);
            put16(buf, l3 + 2, ip_len);
            put16(buf, l3 + 4, self.ip_id);
            self.ip_id = self.ip_id.wrapping_add(1);
            put16(buf, l3 + 10, 0);
            put16(buf, l3 + 10, !crate::csum::data(&buf[l3..l4]));
        } else {
            put16(buf, l3 + 4, l4_len);
        }

        let (proto, csum_at) = match transport {
            Transport::Tcp => {
                put32(buf, l4 + 4, self.seq);
                self.seq = self.seq.wrapping_add(u32::from(seg));
                let mut flags = buf[l4 + TCP_FLAGS_OFFSET];
                if !last {
                    flags &= !TCP_FIN_PSH;
                }
                if !first {
                    flags &= !TCP_CWR;
                }
                buf[l4 + TCP_FLAGS_OFFSET] = flags;
                (u8::from(IpProtocol::Tcp), l4 + TCP_CSUM_OFFSET)
            }
            Transport::Udp => {
                put16(buf, l4 + 4, l4_len);
                (u8::from(IpProtocol::Udp), l4 + usize::from(UDP_CSUM_OFFSET))
            }
        };
        put16(buf, csum_at, 0);
        let addrs = if ipv4 {
            &buf[l3 + 12..l3 + 20]
        } else {
            &buf[l3 + 8..l3 + IPV6_LEN]
        };
        // The L4 header is a whole number of 16-bit words (TCP: of 32-bit
        // words; UDP: 8 bytes), so the sum of the header and the sum of the
        // payload combine into the sum of the segment.
        let pseudo = checksum::combine(&[crate::csum::data(addrs), u16::from(proto), l4_len]);
        let mut sum = !checksum::combine(&[
            pseudo,
            crate::csum::data(&buf[l4..hlen]),
            crate::csum::data(body),
        ]);
        if sum == 0 && transport == Transport::Udp {
            sum = 0xffff;
        }
        put16(buf, csum_at, sum);
        Some(range)
    }
}

/// Checks an IPv4 header at `l3`; returns the L4 offset, the packet end and
/// the protocol.
fn parse_ipv4(frame: &[u8], l3: usize) -> Result<(usize, usize, u8), GsoError> {
    let header = frame
        .get(l3..l3 + IPV4_MIN_LEN)
        .ok_or(GsoError::TruncatedIpHeader)?;
    if header[0] >> 4 != 4 {
        return Err(GsoError::IpVersionMismatch);
    }
    let ihl = header[0] & 0x0f;
    let ip_hlen = 4 * usize::from(ihl);
    if ip_hlen < IPV4_MIN_LEN {
        return Err(GsoError::BadIpv4HeaderLength(ihl));
    }
    if l3 + ip_hlen > frame.len() {
        return Err(GsoError::TruncatedIpHeader);
    }
    let ip_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let frame_len = frame.len() - l3;
    if ip_len < ip_hlen || ip_len > frame_len {
        return Err(GsoError::BadIpLength { ip_len, frame_len });
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return Err(GsoError::Ipv4Fragment);
    }
    Ok((l3 + ip_hlen, l3 + ip_len, header[9]))
}

/// Checks an IPv6 header at `l3`; returns the L4 offset, the packet end and
/// the next header, which must be the transport.
fn parse_ipv6(frame: &[u8], l3: usize) -> Result<(usize, usize, u8), GsoError> {
    let header = frame
        .get(l3..l3 + IPV6_LEN)
        .ok_or(GsoError::TruncatedIpHeader)?;
    if header[0] >> 4 != 6 {
        return Err(GsoError::IpVersionMismatch);
    }
    let ip_len = IPV6_LEN + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let frame_len = frame.len() - l3;
    if ip_len > frame_len {
        return Err(GsoError::BadIpLength { ip_len, frame_len });
    }
    let next = header[6];
    if is_ipv6_extension(next) {
        return Err(GsoError::Ipv6ExtensionHeader(next));
    }
    Ok((l3 + IPV6_LEN, l3 + ip_len, next))
}

/// Whether an IPv6 next-header value names an extension header (RFC 8200
/// §4, the IANA "IPv6 Extension Header Types" registry).
const fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

/// The big-endian 16-bit word at `at`, if the frame holds it.
fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The big-endian 32-bit word at `at`, if the frame holds it.
fn be32(frame: &[u8], at: usize) -> Option<u32> {
    let b = frame.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Stores a big-endian 16-bit word at `at`.
fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Stores a big-endian 32-bit word at `at`.
fn put32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}
