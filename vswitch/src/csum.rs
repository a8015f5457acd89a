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

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), without the final complement.
#[must_use]
pub fn data(data: &[u8]) -> u16 {
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
