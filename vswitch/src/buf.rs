//! Packet buffers: one frame, room in front for tunnel headers, room behind
//! for a whole GSO super-frame, and the offload metadata that came with it.
//!
//! A userspace copy between two TAPs moves about 2 Gbit/s of TCP when every
//! 1500-byte segment is a separate frame, and about 12.6 Gbit/s when the
//! kernel's TSO/GSO super-frames cross whole. So a [`PacketBuf`] holds up to
//! 64 KiB plus headers and carries the virtio-net header ([`VnetHdr`]) that
//! describes the segmentation still to be done; the switch treats such a
//! frame as one frame.
//!
//! Buffers are allocated once and recycled through a [`BufPool`], so the
//! per-frame path never allocates.

/// Bytes reserved in front of every received frame.
///
/// A VXLAN outer header over IPv6 is 70 bytes (Ethernet 14, IPv6 40, UDP 8,
/// VXLAN 8; over IPv4 it is 50) and a VLAN tag 4 more. 74 leaves room for
/// both, and since 74 ≡ 2 (mod 4) the IP header after the 14-byte Ethernet
/// header starts 4-byte aligned, as the kernel's `NET_IP_ALIGN` arranges.
pub const HEADROOM: usize = 74;

/// The largest frame a buffer holds: a 64 KiB IP packet (the most a GSO
/// super-frame can carry) behind an Ethernet header and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_535 + 14 + 4;

/// Everything a buffer needs: headroom plus the largest frame.
const STORAGE_LEN: usize = HEADROOM + MAX_FRAME_LEN;

/// The virtio-net header (`struct virtio_net_hdr`, virtio spec §5.1.6) that
/// TAP (`IFF_VNET_HDR`) and AF_PACKET (`PACKET_VNET_HDR`) put in front of
/// each frame: which offloads are still pending on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`: what segmentation the frame still needs.
    pub gso_type: u8,
    /// Length of the headers each segment repeats (Ethernet to L4).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where the checksum to fill starts, from the Ethernet header.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Size of the header on the wire (without `num_buffers`).
    pub const LEN: usize = 10;
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    pub const GSO_NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP`.
    pub const GSO_UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    pub const GSO_TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`.
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into `gso_type`.
    pub const GSO_ECN: u8 = 0x80;

    /// Whether the frame is a super-frame still to be segmented.
    #[must_use]
    pub const fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// Whether the L4 checksum is partial and must be completed on the way out.
    #[must_use]
    pub const fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// Reads the header in native byte order, as a TAP without
    /// `TUNSETVNETLE`/`TUNSETVNETBE` writes it.
    #[must_use]
    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Writes the header in native byte order.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// The frame does not fit in a packet buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the {max}-byte buffer")]
pub struct FrameTooLong {
    /// Length of the frame offered.
    pub len: usize,
    /// What a buffer holds.
    pub max: usize,
}

/// One frame in a fixed, reusable allocation.
///
/// The frame occupies `storage[head..head + len]`; `head` starts at
/// [`HEADROOM`] and moves down when a tunnel header is pushed in front, so
/// encapsulation never copies the payload.
pub struct PacketBuf {
    storage: Box<[u8]>,
    head: usize,
    len: usize,
    /// Offloads pending on this frame.
    pub vnet: VnetHdr,
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("head", &self.head)
            .field("len", &self.len)
            .field("vnet", &self.vnet)
            .finish_non_exhaustive()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// Allocates an empty buffer. Done at start-up, never per frame.
    #[must_use]
    pub fn new() -> Self {
        Self {
            storage: vec![0; STORAGE_LEN].into_boxed_slice(),
            head: HEADROOM,
            len: 0,
            vnet: VnetHdr::default(),
        }
    }

    /// A buffer holding a copy of `frame`, for tests and tools.
    ///
    /// # Errors
    /// [`FrameTooLong`] when `frame` exceeds [`MAX_FRAME_LEN`].
    pub fn from_frame(frame: &[u8]) -> Result<Self, FrameTooLong> {
        let mut buf = Self::new();
        buf.set_frame(frame)?;
        Ok(buf)
    }

    /// The frame.
    #[must_use]
    pub fn frame(&self) -> &[u8] {
        &self.storage[self.head..self.head + self.len]
    }

    /// The frame, for rewriting in place.
    #[must_use]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.head..self.head + self.len]
    }

    /// Frame length in bytes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no frame.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    #[must_use]
    pub const fn headroom(&self) -> usize {
        self.head
    }

    /// Forgets the frame and its metadata, restoring full headroom.
    pub fn clear(&mut self) {
        self.head = HEADROOM;
        self.len = 0;
        self.vnet = VnetHdr::default();
    }

    /// The space a receive call fills: everything after the headroom. Call
    /// [`PacketBuf::set_received`] with the byte count afterwards.
    #[must_use]
    pub fn rx_space(&mut self) -> &mut [u8] {
        self.head = HEADROOM;
        &mut self.storage[HEADROOM..]
    }

    /// The space a receive call fills when the device writes a virtio-net
    /// header in front of the frame: the header's bytes at the end of the
    /// headroom, then [`PacketBuf::rx_space`], so one contiguous read takes
    /// both (one buffer where two iovecs cost the kernel an import and a
    /// segment walk per read). Read the header back with
    /// [`PacketBuf::received_vnet_bytes`].
    #[must_use]
    pub fn rx_space_with_vnet(&mut self) -> &mut [u8] {
        self.head = HEADROOM;
        &mut self.storage[HEADROOM - VnetHdr::LEN..]
    }

    /// The virtio-net header bytes a receive into
    /// [`PacketBuf::rx_space_with_vnet`] left in front of the frame.
    #[must_use]
    pub fn received_vnet_bytes(&self) -> [u8; VnetHdr::LEN] {
        let mut hdr = [0; VnetHdr::LEN];
        hdr.copy_from_slice(&self.storage[HEADROOM - VnetHdr::LEN..HEADROOM]);
        hdr
    }

    /// Records that a receive call wrote `len` bytes into [`PacketBuf::rx_space`].
    /// A count beyond the space (which a correct kernel never reports) is
    /// clamped rather than trusted.
    pub fn set_received(&mut self, len: usize) {
        self.head = HEADROOM;
        self.len = len.min(MAX_FRAME_LEN);
    }

    /// Replaces the content with a copy of `frame`.
    ///
    /// # Errors
    /// [`FrameTooLong`] when `frame` exceeds [`MAX_FRAME_LEN`]; the buffer is
    /// then left empty.
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<(), FrameTooLong> {
        self.clear();
        if frame.len() > MAX_FRAME_LEN {
            return Err(FrameTooLong {
                len: frame.len(),
                max: MAX_FRAME_LEN,
            });
        }
        self.storage[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.len = frame.len();
        Ok(())
    }

    /// Shortens the frame to `len` bytes (no effect if it is shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Grows the frame by `n` bytes at the front (for an outer header) and
    /// returns them, or `None` when the headroom is too small.
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let head = self.head.checked_sub(n)?;
        self.head = head;
        self.len += n;
        Some(&mut self.storage[head..head + n])
    }

    /// Removes `n` bytes from the front (after decapsulation), or returns
    /// `None` when the frame is shorter than that.
    pub fn pull_front(&mut self, n: usize) -> Option<()> {
        if n > self.len {
            return None;
        }
        self.head += n;
        self.len -= n;
        Some(())
    }
}

/// A free list of [`PacketBuf`]s, filled once at start-up.
///
/// The datapath takes a buffer per received frame and gives it back after
/// transmission; when the list is empty the caller stops reading (the kernel
/// queues, then drops, as it would for a slow consumer) instead of
/// allocating.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<PacketBuf>,
}

impl BufPool {
    /// A pool of `count` buffers.
    #[must_use]
    pub fn new(count: usize) -> Self {
        Self {
            free: (0..count).map(|_| PacketBuf::new()).collect(),
        }
    }

    /// A cleared buffer, or `None` when all are in use.
    pub fn take(&mut self) -> Option<PacketBuf> {
        let mut buf = self.free.pop()?;
        buf.clear();
        Some(buf)
    }

    /// Returns a buffer to the pool.
    pub fn give(&mut self, buf: PacketBuf) {
        self.free.push(buf);
    }

    /// Buffers currently free.
    #[must_use]
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_front_without_copying_the_payload() {
        let mut buf = PacketBuf::from_frame(&[1, 2, 3, 4]).unwrap();
        let outer = buf.push_front(50).unwrap();
        outer.fill(0xee);
        assert_eq!(buf.len(), 54);
        assert_eq!(&buf.frame()[50..], &[1, 2, 3, 4]);
        assert_eq!(buf.headroom(), HEADROOM - 50);
        buf.pull_front(50).unwrap();
        assert_eq!(buf.frame(), &[1, 2, 3, 4]);
        assert!(buf.pull_front(5).is_none());
    }

    #[test]
    fn headroom_fits_an_ipv6_vxlan_header_and_a_vlan_tag_but_no_more() {
        let mut buf = PacketBuf::from_frame(&[0; 60]).unwrap();
        assert!(buf.push_front(70 + 4).is_some());
        assert!(buf.push_front(1).is_none());
        assert_eq!(buf.len(), 60 + 74);
    }

    #[test]
    fn ip_header_is_four_byte_aligned_after_an_ethernet_header() {
        assert_eq!((HEADROOM + 14) % 4, 0);
    }

    #[test]
    fn a_whole_gso_super_frame_fits_and_a_larger_one_is_refused() {
        let big = vec![0u8; MAX_FRAME_LEN];
        assert!(PacketBuf::from_frame(&big).is_ok());
        let too_big = vec![0u8; MAX_FRAME_LEN + 1];
        let err = PacketBuf::from_frame(&too_big).unwrap_err();
        assert_eq!(err.len, MAX_FRAME_LEN + 1);
    }

    #[test]
    fn received_length_is_clamped_to_the_buffer() {
        let mut buf = PacketBuf::new();
        let space = buf.rx_space().len();
        assert_eq!(space, MAX_FRAME_LEN);
        buf.set_received(usize::MAX);
        assert_eq!(buf.len(), MAX_FRAME_LEN);
    }

    #[test]
    fn vnet_header_round_trips() {
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&hdr.to_bytes()), hdr);
        assert!(hdr.is_gso());
        assert!(hdr.needs_csum());
        assert!(!VnetHdr::default().is_gso());
    }

    #[test]
    fn pool_recycles_cleared_buffers() {
        let mut pool = BufPool::new(2);
        let mut a = pool.take().unwrap();
        let _b = pool.take().unwrap();
        assert!(pool.take().is_none());
        a.set_frame(&[9; 10]).unwrap();
        a.vnet.gso_type = VnetHdr::GSO_TCPV4;
        pool.give(a);
        let again = pool.take().unwrap();
        assert!(again.is_empty());
        assert!(!again.vnet.is_gso());
        assert_eq!(again.headroom(), HEADROOM);
    }
}
