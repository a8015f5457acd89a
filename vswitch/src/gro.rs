//! Software GRO: TCP segments of one flow that arrived one after another
//! (a train of VXLAN datagrams the kernel coalesced with `UDP_GRO`, or
//! consecutive datagrams of one receive batch) merged back into one
//! super-frame for a port that takes offloads.
//!
//! The sending host's TCP stack hands its switch 64 KiB super-frames, which
//! must be cut into wire-sized segments to cross the underlay; on the
//! receiving host each segment would otherwise cost the container's port a
//! write and its stack a trip through IP and TCP. Merged, the train costs
//! one of each, as the kernel's own GRO arranges for a NIC.
//!
//! # What is merged
//!
//! The rules are the kernel's `tcp_gro_receive`, a little stricter, and the
//! merged frame must be exactly what the sender's segmentation would cut
//! back into the same segments:
//!
//! - untagged Ethernet, IPv4 without options or fragmentation, TCP; the
//!   same Ethernet header, TOS, TTL, DF bit and addresses; the same ports,
//!   acknowledgement, window, urgent pointer and TCP options (byte for
//!   byte, timestamps included);
//! - flags `ACK`, or `ACK|PSH` on the last segment only: a segment with
//!   `SYN`, `FIN`, `RST`, `URG`, `ECE` or `CWR` travels alone;
//! - a payload in every segment, each continuing the sequence where the one
//!   before ended, all as long as the first (the MSS) but the last, which
//!   may be shorter and then ends the super-frame;
//! - a correct IPv4 header checksum and TCP checksum in every segment:
//!   the merged frame leaves with a partial checksum
//!   ([`VnetHdr::F_NEEDS_CSUM`]), which the receiving stack trusts, so a
//!   segment damaged on the way must never be merged (it travels alone,
//!   and the container's stack drops it);
//! - at most 64 KiB of IP packet.
//!
//! Anything else (IPv6, UDP, a frame whose IP length disagrees with its
//! size, a hole in the sequence, another flow in between) ends the
//! super-frame being built, and the frame travels as it came.
//!
//! # Shape
//!
//! [`Merge`] decides, a segment at a time, without touching the bytes;
//! [`merge_in_place`] and [`merge_into`] then move the payloads behind the
//! first segment's headers (in the buffer the train arrived in, or into
//! another) and [`Merge::finish`] fixes the IPv4 length and checksum and
//! the TCP pseudo-header sum and returns the virtio-net header
//! ([`VnetHdr::GSO_TCPV4`], `gso_size` the MSS).

use std::ops::Range;

use smoltcp::wire::checksum;

use crate::buf::{HEADROOM, MAX_FRAME_LEN, PacketBuf, VnetHdr};

/// Ethernet header, untagged.
const ETH_LEN: usize = 14;
/// IPv4 header without options.
const IP_LEN: usize = 20;
/// Where the TCP header starts.
const L4: usize = ETH_LEN + IP_LEN;
/// [`L4`] as the virtio-net header stores it.
const L4_U16: u16 = 34;
const _: () = assert!(L4_U16 as usize == L4);
/// TCP flags.
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// The largest IPv4 packet.
const MAX_IP_LEN: usize = 65_535;
/// Segments in one super-frame at most (the kernel's `MAX_SKB_FRAGS`-bound
/// GRO stops near there too; a 1,400-byte MSS reaches the 64 KiB first).
pub const MAX_SEGMENTS: usize = 64;

/// One segment that may take part in a merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// Ethernet, IPv4 and TCP headers.
    hdr_len: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses `frame` as a TCP/IPv4 segment that may be merged, checksums
/// verified; `None` for anything else.
fn segment(frame: &[u8]) -> Option<Segment> {
    if be16(frame, 12)? != 0x0800 {
        return None;
    }
    let ip = frame.get(ETH_LEN..)?;
    // Version 4, no options; not a fragment (MF clear, offset zero); TCP.
    if *ip.first()? != 0x45 || be16(ip, 6)? & 0x3fff != 0 || *ip.get(9)? != 6 {
        return None;
    }
    // The IP length must be the frame's: padding or a short frame would
    // otherwise become payload, or payload be lost.
    let total = usize::from(be16(ip, 2)?);
    if total != ip.len() {
        return None;
    }
    if !cfg!(fuzzing) && crate::csum::data(ip.get(..IP_LEN)?) != 0xffff {
        return None;
    }
    let tcp = ip.get(IP_LEN..)?;
    let doff = usize::from(*tcp.get(12)? >> 4) * 4;
    if doff < 20 || doff >= tcp.len() {
        return None;
    }
    let flags = *tcp.get(13)?;
    if flags & !PSH != ACK {
        return None;
    }
    let l4_len = u16::try_from(tcp.len()).ok()?;
    let pseudo = checksum::combine(&[crate::csum::data(ip.get(12..20)?), 6, l4_len]);
    if !cfg!(fuzzing) && checksum::combine(&[pseudo, crate::csum::data(tcp)]) != 0xffff {
        return None;
    }
    Some(Segment {
        hdr_len: L4 + doff,
        seq: be32(tcp, 4)?,
        payload: tcp.len() - doff,
        psh: flags & PSH != 0,
    })
}

/// Whether two segments' headers agree where a merge needs them equal:
/// Ethernet; IPv4 TOS, DF, TTL, protocol, addresses; TCP ports,
/// acknowledgement, data offset, flags but `PSH`, window, urgent pointer
/// and options.
fn same_flow(a: &[u8], b: &[u8], hdr_len: usize) -> bool {
    let (Some(a), Some(b)) = (a.get(..hdr_len), b.get(..hdr_len)) else {
        return false;
    };
    let t = L4;
    a[..ETH_LEN] == b[..ETH_LEN]
        && a[ETH_LEN + 1] == b[ETH_LEN + 1]
        && a[ETH_LEN + 6] & 0x40 == b[ETH_LEN + 6] & 0x40
        && a[ETH_LEN + 8..ETH_LEN + 10] == b[ETH_LEN + 8..ETH_LEN + 10]
        && a[ETH_LEN + 12..L4] == b[ETH_LEN + 12..L4]
        && a[t..t + 4] == b[t..t + 4]
        && a[t + 8..t + 13] == b[t + 8..t + 13]
        && a[t + 13] & !PSH == b[t + 13] & !PSH
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 18..hdr_len] == b[t + 18..hdr_len]
}

/// A super-frame being planned: the segments pushed so far merge into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merge {
    first: Segment,
    last: Segment,
    count: usize,
    payload: usize,
}

impl Merge {
    /// Starts a super-frame with `frame`, or `None` when `frame` cannot
    /// take part in one (it then travels alone).
    #[must_use]
    pub fn start(frame: &[u8]) -> Option<Self> {
        let s = segment(frame)?;
        Some(Self {
            first: s,
            last: s,
            count: 1,
            payload: s.payload,
        })
    }

    /// Adds `frame` when it continues the super-frame whose first segment
    /// is `first` (the frame [`Merge::start`] was given); `false` leaves the
    /// merge as it was, and the caller ends it.
    pub fn push(&mut self, first: &[u8], frame: &[u8]) -> bool {
        // A shorter segment, or PSH, ended the super-frame.
        if self.last.psh || self.last.payload != self.first.payload || self.count >= MAX_SEGMENTS {
            return false;
        }
        if frame.len() < self.first.hdr_len
            || IP_LEN
                + (self.first.hdr_len - L4)
                + self.payload
                + (frame.len() - self.first.hdr_len)
                > MAX_IP_LEN
        {
            return false;
        }
        if !same_flow(first, frame, self.first.hdr_len) {
            return false;
        }
        let Some(s) = segment(frame) else {
            return false;
        };
        if s.hdr_len != self.first.hdr_len
            || s.payload > self.first.payload
            || s.seq
                != self
                    .last
                    .seq
                    .wrapping_add(u32::try_from(self.last.payload).unwrap_or(u32::MAX))
        {
            return false;
        }
        self.last = s;
        self.count += 1;
        self.payload += s.payload;
        true
    }

    /// Segments merged.
    #[must_use]
    pub const fn count(&self) -> usize {
        self.count
    }

    /// The merged frame's length.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.first.hdr_len + self.payload
    }

    /// Whether the merge holds no payload (never: every segment has some).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.payload == 0
    }

    /// Where the payload of a pushed segment `frame` starts in it.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        self.first.hdr_len
    }

    /// Fixes the headers of `frame`, the first segment's headers followed by
    /// every segment's payload, and returns its virtio-net header: a
    /// partial TCP checksum and, for more than one segment, TCP
    /// segmentation at the MSS. A frame of one segment is left untouched,
    /// with no offload pending.
    #[must_use]
    pub fn finish(&self, frame: &mut [u8]) -> VnetHdr {
        if self.count < 2 || frame.len() != self.len() {
            return VnetHdr::default();
        }
        let ip_len = frame.len() - ETH_LEN;
        let l4_len = frame.len() - L4;
        // Both fit: `push` kept the IP packet within 64 KiB.
        let ip_len16 = u16::try_from(ip_len).unwrap_or(u16::MAX);
        let l4_len16 = u16::try_from(l4_len).unwrap_or(u16::MAX);
        frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&ip_len16.to_be_bytes());
        frame[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let ip_sum = !crate::csum::data(&frame[ETH_LEN..L4]);
        frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip_sum.to_be_bytes());
        if self.last.psh {
            frame[L4 + 13] |= PSH;
        }
        let pseudo = checksum::combine(&[crate::csum::data(&frame[ETH_LEN + 12..L4]), 6, l4_len16]);
        frame[L4 + 16..L4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: u16::try_from(self.first.hdr_len).unwrap_or(u16::MAX),
            gso_size: u16::try_from(self.first.payload).unwrap_or(u16::MAX),
            csum_start: L4_U16,
            csum_offset: 16,
        }
    }
}

/// Builds the frame of `segments` (ranges of `buf`'s frame, in order, the
/// first one's headers kept, the others' payloads moved behind it) in
/// `buf` itself, which then holds only that frame, with its virtio-net
/// header. `merge` is what planned them (`None`: one frame, unmerged).
/// Ranges outside the frame are skipped.
pub fn merge_in_place(buf: &mut PacketBuf, segments: &[Range<usize>], merge: Option<&Merge>) {
    merge_in_place_with_tail(buf, segments, &[], &[], merge);
}

/// [`merge_in_place`], the super-frame then continued by the payloads of
/// `tail_segments`, ranges of `tail` (the next train of the same flow,
/// received into another buffer): a sender's 64 KiB super-frame crosses
/// the underlay as two `UDP_SEGMENT` sends, hence two trains, and leaves
/// here as one frame again. The tail is copied; `buf` must be as a receive
/// call filled it (its frame at the start of its space), which the merged
/// frame may then outgrow. A tail range that does not fit is skipped, as
/// is the whole tail of a buffer that was not filled by a receive.
pub fn merge_in_place_with_tail(
    buf: &mut PacketBuf,
    segments: &[Range<usize>],
    tail: &[u8],
    tail_segments: &[Range<usize>],
    merge: Option<&Merge>,
) {
    let Some(first) = segments.first().cloned() else {
        buf.truncate(0);
        return;
    };
    let len = buf.len();
    let tail_segments = if buf.headroom() == HEADROOM {
        tail_segments
    } else {
        &[]
    };
    if first.end > len || first.start > first.end {
        buf.truncate(0);
        return;
    }
    // The frame and the space after it (see `PacketBuf::rx_space`).
    let space = buf.rx_space();
    let hdr = merge.map_or(0, Merge::header_len);
    let mut end = first.end;
    for r in &segments[1..] {
        let from = r.start + hdr;
        // Sources lie after `end` (the segments are in order and headers
        // are dropped), so the move only overwrites consumed bytes.
        if from < end || r.end > len || from > r.end {
            continue;
        }
        space.copy_within(from..r.end, end);
        end += r.end - from;
    }
    for r in tail_segments {
        let (Some(part), Some(to)) = (
            tail.get(r.start + hdr..r.end),
            space.get_mut(end..end + r.end.saturating_sub(r.start + hdr)),
        ) else {
            continue;
        };
        to.copy_from_slice(part);
        end += part.len();
    }
    let vnet = {
        let merged = &mut space[first.start..end];
        merge.map_or_else(VnetHdr::default, |m| m.finish(merged))
    };
    buf.set_received(end);
    let _ = buf.pull_front(first.start);
    buf.vnet = vnet;
}

/// [`merge_in_place`] from `src` (a received train) into `out`.
pub fn merge_into(
    out: &mut PacketBuf,
    src: &[u8],
    segments: &[Range<usize>],
    merge: Option<&Merge>,
) {
    let hdr = merge.map_or(0, Merge::header_len);
    let space = out.rx_space();
    let mut len = 0;
    for (i, r) in segments.iter().enumerate() {
        let from = if i == 0 { r.start } else { r.start + hdr };
        let Some(part) = src.get(from..r.end) else {
            continue;
        };
        let Some(to) = space.get_mut(len..len + part.len()) else {
            break;
        };
        to.copy_from_slice(part);
        len += part.len();
    }
    out.set_received(len.min(MAX_FRAME_LEN));
    let vnet = merge.map_or_else(VnetHdr::default, |m| m.finish(out.frame_mut()));
    out.vnet = vnet;
}
