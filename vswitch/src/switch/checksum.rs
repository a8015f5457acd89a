//! Internet checksum updates (RFC 1071 sums, RFC 1624 incremental updates).

/// Updates a stored Internet checksum after one 16-bit word of the covered
/// data changed from `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m +
/// m')`), without touching the rest of the data.
#[must_use]
pub(crate) fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
        }
        !fold(sum)
    }

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
}
