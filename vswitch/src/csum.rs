//! The Internet checksum (RFC 1071) of a byte slice, as `smoltcp`'s
//! `checksum::data` computes it, 32 bits at a time.
//!
//! Every segment the overlay cuts or merges has its payload summed once
//! (on transmit to fill the TCP checksum, on receive to verify it before
//! merging), so the sum is the datapath's largest per-byte cost once the
//! copies are gone. `smoltcp` adds 16-bit words into a 32-bit accumulator;
//! here 32-bit words are added into a 64-bit one, which cannot overflow
//! for any frame and which the compiler turns into wide vector adds. The
//! one's-complement sum does not depend on the word size (RFC 1071 §2:
//! 2^16 ≡ 1 modulo 2^16 − 1, so a 32-bit word counts as its two halves)
//! nor on the byte order, as long as the result is swapped back once.
//! The result is the same as `smoltcp`'s for every input, including the
//! choice between 0x0000 and 0xffff (zero only when all bytes are zero),
//! so the two may be combined freely with `smoltcp::wire::checksum::combine`.
//!
//! The build targets the baseline x86-64 (SSE2), where each 32-bit word
//! costs an unpack and an add in 128-bit registers. The same loop compiled
//! for AVX2 takes twice the words per instruction, so on a CPU that has it
//! (detected once, at run time) that copy is used: on a host whose two
//! daemons sum every byte of a TCP stream twice (cut on one side, checked
//! on the other), it is the largest user-space cost left in the overlay's
//! profile after the kernel's copies.

#![allow(unsafe_code)]

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), without the final complement.
#[must_use]
pub fn data(data: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above (the check is a
        // load of a cached flag).
        return unsafe { avx2::data(data) };
    }
    portable(data)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    /// [`super::portable`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn data(data: &[u8]) -> u16 {
        super::portable(data)
    }
}

/// The sum for any CPU; inlined into the AVX2 copy, where the compiler
/// vectorizes it with 256-bit registers.
#[inline(always)]
#[allow(clippy::inline_always)]
fn portable(data: &[u8]) -> u16 {
    let (words, rest) = data.as_chunks::<4>();
    let mut acc: u64 = words
        .iter()
        .map(|w| u64::from(u32::from_ne_bytes(*w)))
        .sum();
    let mut rest = rest;
    if let [a, b, tail @ ..] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = tail;
    }
    if let [a] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, 0]));
    }
    // Fold with end-around carries: 64 → 33 → 32 → 17 → 16 bits.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    // At most 0xffff after the last fold.
    let folded = u16::try_from(acc).unwrap_or(u16::MAX);
    u16::to_be(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched sum (AVX2 where the CPU has it) against the
    /// baseline one, at every alignment and a range of lengths.
    #[test]
    fn dispatched_and_portable_sums_agree() {
        let bytes: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        for start in 0..8 {
            for len in (0..300).chain([1383, 1384, 1385, 4000, 4992]) {
                let s = &bytes[start..start + len];
                assert_eq!(data(s), portable(s), "start {start} len {len}");
            }
        }
        assert_eq!(data(&[0xff; 65_553]), portable(&[0xff; 65_553]));
    }
}
