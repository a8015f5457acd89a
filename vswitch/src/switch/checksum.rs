//! Internet checksums (RFC 1071) and their incremental updates (RFC 1624),
//! for the two forms a checksum field can hold.
//!
//! - **Full**: the field holds the complemented sum of everything it
//!   covers, as on the wire. Changing a covered word from `m` to `m'`
//!   updates it as `HC' = ~(~HC + ~m + m')` ([`adjust`]).
//! - **Partial**: a frame whose virtio-net header has
//!   [`VnetHdr::F_NEEDS_CSUM`](crate::buf::VnetHdr::F_NEEDS_CSUM) (every
//!   TSO/GSO super-frame and most locally sent packets) carries in its L4
//!   checksum field only the *uncomplemented* sum of the pseudo-header; the
//!   payload is summed by whoever completes it. Changing an address (part
//!   of the pseudo-header) updates it as `HC' = HC + ~m + m'`
//!   ([`adjust_partial`]) — the full form's update would corrupt it.
//!
//! [`L4Checksum::of`] tells which form a frame's TCP or UDP checksum field
//! holds, and [`L4Checksum::update`] applies a change of address or port in
//! that form (leaving a UDP checksum of zero, "none", alone). NAT's address
//! and port rewrites go through it. Sums are smoltcp's
//! ([`smoltcp::wire::checksum`]).

use smoltcp::wire::checksum as sum;

use crate::buf::VnetHdr;

/// Updates a full (complemented) checksum after one 16-bit word of the
/// covered data changed from `old` to `new` (RFC 1624 eqn. 3).
#[must_use]
pub fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Updates a partial (uncomplemented pseudo-header) checksum after one
/// 16-bit word of the pseudo-header changed from `old` to `new`.
#[must_use]
pub fn adjust_partial(partial: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(partial) + u32::from(!old) + u32::from(new);
    fold(s)
}

/// The complemented Internet checksum of `data` (for an IPv4 header with
/// its checksum field zeroed, or any covered data computed whole).
#[must_use]
pub fn full(data: &[u8]) -> u16 {
    !sum::data(data)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[must_use]
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = s as u16;
    folded
}

/// Which form an L4 checksum field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Checksum {
    /// Complete, as on the wire.
    Full,
    /// UDP's "no checksum" (a zero field), which stays zero.
    UdpNone,
    /// The uncomplemented pseudo-header sum of a `NEEDS_CSUM` frame.
    Partial,
}

impl L4Checksum {
    /// The form of the checksum field at `field` (an offset from the start
    /// of the frame) holding `value`, for a frame with `vnet`; `udp` says
    /// whether the field is UDP's.
    #[must_use]
    pub fn of(vnet: &VnetHdr, field: usize, value: u16, udp: bool) -> Self {
        let partial_at = usize::from(vnet.csum_start) + usize::from(vnet.csum_offset);
        if vnet.needs_csum() && partial_at == field {
            Self::Partial
        } else if udp && value == 0 {
            Self::UdpNone
        } else {
            Self::Full
        }
    }

    /// The field's new value after the covered bytes `old` became `new`
    /// (equal lengths, an even number of bytes: an address or a port;
    /// anything else leaves the value unchanged).
    #[must_use]
    pub fn update(self, value: u16, old: &[u8], new: &[u8]) -> u16 {
        if old.len() != new.len() || !old.len().is_multiple_of(2) {
            return value;
        }
        let words = old.chunks_exact(2).zip(new.chunks_exact(2));
        match self {
            Self::UdpNone => value,
            Self::Full => {
                let v = words.fold(value, |v, (o, n)| {
                    adjust(
                        v,
                        u16::from_be_bytes([o[0], o[1]]),
                        u16::from_be_bytes([n[0], n[1]]),
                    )
                });
                // A complete UDP checksum of zero is sent as 0xffff.
                if v == 0 { 0xffff } else { v }
            }
            Self::Partial => words.fold(value, |v, (o, n)| {
                adjust_partial(
                    v,
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([n[0], n[1]]),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn incremental_update_matches_a_full_recomputation() {
        let mut data = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2,
        ];
        let before = full(&data);
        for new_ttl in [0u8, 1, 63, 64, 255] {
            let old_word = u16::from_be_bytes([data[8], data[9]]);
            let mut changed = data;
            changed[8] = new_ttl;
            let new_word = u16::from_be_bytes([changed[8], changed[9]]);
            assert_eq!(
                adjust(before, old_word, new_word),
                full(&changed),
                "ttl {new_ttl}"
            );
        }
        data[0] = 0x46;
        assert_ne!(full(&data), before);
    }

    #[test]
    fn incremental_update_handles_a_stored_negative_zero() {
        // A stored 0xffff means the covered data sums to (negative) zero;
        // taking a 0x0800 word out leaves a sum of !0x0800.
        assert_eq!(adjust(0xffff, 0x0800, 0x0000), 0x0800);
        assert_eq!(adjust(0x1234, 0xabcd, 0xabcd), 0x1234);
    }

    /// A UDP/IPv4 frame from `src`, its checksum complete (etherparse's).
    fn udp(src: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [192, 168, 7, 9], 64)
            .udp(40000, 53)
            .write(&mut f, b"some payload, odd length")
            .unwrap();
        f
    }

    const UDP_CSUM: usize = 14 + 20 + 6;

    fn field(f: &[u8]) -> u16 {
        u16::from_be_bytes([f[UDP_CSUM], f[UDP_CSUM + 1]])
    }

    #[test]
    fn a_full_l4_checksum_follows_an_address_rewrite() {
        let (old, new) = ([10, 0, 0, 1], [203, 0, 113, 77]);
        let before = udp(old);
        let kind = L4Checksum::of(&VnetHdr::default(), UDP_CSUM, field(&before), true);
        assert_eq!(kind, L4Checksum::Full);
        let updated = kind.update(field(&before), &old, &new);
        assert_eq!(updated, field(&udp(new)));
    }

    #[test]
    fn a_partial_l4_checksum_follows_an_address_rewrite_and_completes_right() {
        let (old, new) = ([10, 0, 0, 1], [203, 0, 113, 77]);
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        // What a sender with checksum offload hands over: the pseudo-header
        // sum, uncomplemented, in the field.
        let partial_of = |src: [u8; 4], frame: &[u8]| {
            let udp_len = u16::try_from(frame.len() - 34).unwrap();
            let words = [sum::data(&src), sum::data(&[192, 168, 7, 9]), 17, udp_len];
            sum::combine(&words)
        };
        let mut f = udp(old);
        let p = partial_of(old, &f);
        f[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&p.to_be_bytes());
        let kind = L4Checksum::of(&vnet, UDP_CSUM, p, true);
        assert_eq!(kind, L4Checksum::Partial);
        let updated = kind.update(p, &old, &new);
        assert_eq!(updated, partial_of(new, &f));

        // Completed as the kernel would, it equals the independent encoder's.
        f[26..30].copy_from_slice(&new);
        f[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&updated.to_be_bytes());
        crate::gso::complete_checksum(&mut f, &vnet).unwrap();
        assert_eq!(field(&f), field(&udp(new)));
    }

    #[test]
    fn a_udp_checksum_of_zero_stays_zero() {
        let kind = L4Checksum::of(&VnetHdr::default(), UDP_CSUM, 0, true);
        assert_eq!(kind, L4Checksum::UdpNone);
        assert_eq!(kind.update(0, &[1, 2, 3, 4], &[5, 6, 7, 8]), 0);
    }
}
