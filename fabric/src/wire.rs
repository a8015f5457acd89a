//! The VXLAN header (RFC 7348 §5): a checked view over a buffer, and the
//! 24-bit network identifier.
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved (24 bits)                 |
//! |        VXLAN Network Identifier (VNI)         |   Reserved    |
//! ```
//!
//! As in smoltcp's `wire` module, [`Packet`] wraps any `AsRef<[u8]>`; once
//! [`Packet::new_checked`] has passed, no accessor can panic. [`Repr`] is
//! the validated value.

use core::fmt;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// The IANA-assigned VXLAN port (RFC 7348 §5), the kernel's and Docker's
/// default; Docker's `--data-path-port` changes it, so it is configurable
/// everywhere it is used.
pub const DEFAULT_PORT: u16 = 4789;

/// The I flag: "the VNI is valid". The only flag RFC 7348 defines.
pub const FLAG_I: u8 = 0x08;

mod field {
    use core::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: Range<usize> = 1..4;
    pub(super) const VNI: Range<usize> = 4..7;
    pub(super) const RESERVED2: usize = 7;
}

/// A VXLAN network identifier: 24 bits, so a `u32` below 2^24.
///
/// A typed id so that a VNI is never confused with a network index or a
/// port number, and so that an out-of-range value cannot reach the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "u32")]
pub struct Vni(u32);

/// A value that does not fit in the VXLAN header's 24-bit VNI field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range (0..=16777215)")]
pub struct VniOutOfRange(pub u32);

impl Vni {
    /// The largest VNI, 2^24 − 1.
    pub const MAX: u32 = (1 << 24) - 1;

    /// Docker's swarm managers hand out VNIs from here upward (observed:
    /// ingress 4096, then 4097, 4098…).
    pub const DOCKER_FIRST: Self = Self(4096);

    /// Checks the range.
    pub const fn new(value: u32) -> Result<Self, VniOutOfRange> {
        if value > Self::MAX {
            Err(VniOutOfRange(value))
        } else {
            Ok(Self(value))
        }
    }

    /// The numeric value.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The three bytes of the header's VNI field, network order.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }

    /// From the header's three VNI bytes; always in range.
    #[must_use]
    pub const fn from_bytes(b: [u8; 3]) -> Self {
        Self(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniOutOfRange;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> Self {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Vni {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        Self::new(v).map_err(serde::de::Error::custom)
    }
}

/// Why a VXLAN header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("VXLAN header truncated")]
    Truncated,
    /// The I flag is clear, so the VNI field means nothing (RFC 7348 §5).
    #[error("VXLAN I flag not set")]
    MissingIFlag,
    /// A reserved bit is set.
    #[error("VXLAN reserved bits set")]
    ReservedBits,
}

/// A read/write view of a VXLAN header and the inner frame behind it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length; accessors may then
    /// panic on a short buffer. Use [`Packet::new_checked`] on received
    /// bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, HeaderError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor stays in bounds.
    pub fn check_len(&self) -> Result<(), HeaderError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(HeaderError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[must_use]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag is set.
    #[must_use]
    pub fn i_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// Whether every reserved bit (the other seven flags, the 24 bits after
    /// them and the last byte) is zero.
    #[must_use]
    pub fn reserved_clear(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::FLAGS] & !FLAG_I == 0
            && b[field::RESERVED1].iter().all(|&x| x == 0)
            && b[field::RESERVED2] == 0
    }

    /// The VNI field, whatever the I flag says.
    #[must_use]
    pub fn vni(&self) -> Vni {
        let b = self.buffer.as_ref();
        Vni::from_bytes([b[4], b[5], b[6]])
    }

    /// The inner Ethernet frame.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Zeroes the reserved bits after the flags and after the VNI.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[field::RESERVED1].fill(0);
        b[field::RESERVED2] = 0;
    }

    /// Sets the VNI field.
    pub fn set_vni(&mut self, vni: Vni) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_bytes());
    }

    /// The inner Ethernet frame, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A validated VXLAN header: all it carries is the VNI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// The network the inner frame belongs to.
    pub vni: Vni,
}

impl Repr {
    /// Validates a header.
    ///
    /// Reserved bits are refused although RFC 7348 says to ignore them on
    /// receipt: the Linux vxlan driver refuses them too (any flag it has not
    /// parsed makes the packet malformed), so a frame meant for an
    /// extension (GBP, GPE) is not silently taken for plain VXLAN, and we
    /// behave as the kernel peer does.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, HeaderError> {
        packet.check_len()?;
        if !packet.i_flag() {
            return Err(HeaderError::MissingIFlag);
        }
        if !packet.reserved_clear() {
            return Err(HeaderError::ReservedBits);
        }
        Ok(Self { vni: packet.vni() })
    }

    /// Bytes the header takes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: I flag, reserved bits zero, the VNI.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
    }

    /// The header as bytes, for templates.
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let v = self.vni.to_bytes();
        [FLAG_I, 0, 0, 0, v[0], v[1], v[2], 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7348's layout, VNI 4097 (0x001001), with a 2-byte payload.
    static PACKET: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0, 0xaa, 0xbb];

    #[test]
    fn parse_fixture() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert!(p.i_flag());
        assert!(p.reserved_clear());
        assert_eq!(p.vni().get(), 4097);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert_eq!(
            Repr::parse(&p),
            Ok(Repr {
                vni: Vni::new(4097).unwrap()
            })
        );
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = [0xffu8; 10];
        buf[8..].copy_from_slice(&[0xaa, 0xbb]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        Repr {
            vni: Vni::new(4097).unwrap(),
        }
        .emit(&mut p);
        assert_eq!(buf, PACKET);
        assert_eq!(
            Repr {
                vni: Vni::new(4097).unwrap()
            }
            .to_bytes(),
            PACKET[..8]
        );
    }

    #[test]
    fn refuses_short_unflagged_and_reserved() {
        assert_eq!(
            Packet::new_checked(&PACKET[..7]).unwrap_err(),
            HeaderError::Truncated
        );
        let mut b = PACKET;
        b[0] = 0;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(HeaderError::MissingIFlag)
        );
        for (i, bit) in [(0usize, 0x80u8), (0, 0x01), (1, 1), (3, 0x80), (7, 1)] {
            let mut b = PACKET;
            b[i] |= bit;
            assert_eq!(
                Repr::parse(&Packet::new_unchecked(&b[..])),
                Err(HeaderError::ReservedBits),
                "byte {i} bit {bit:#x}"
            );
        }
    }

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(Vni::MAX).unwrap().to_bytes(), [0xff, 0xff, 0xff]);
        assert_eq!(Vni::new(1 << 24), Err(VniOutOfRange(1 << 24)));
        assert_eq!(Vni::from_bytes([0x12, 0x34, 0x56]).get(), 0x12_3456);
    }
}
