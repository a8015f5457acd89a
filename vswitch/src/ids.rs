//! Typed identifiers shared by the switching core and the daemon.
//!
//! Ports and networks are dense small integers so the datapath can index
//! vectors with them instead of hashing; the newtypes keep a port from being
//! passed where a network is meant.

use core::fmt;
use core::str::FromStr;

/// A switch port: one endpoint's TAP or veth, an uplink, or a tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PortId(pub u32);

impl PortId {
    /// The position of this port in per-port tables.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A broadcast domain: one Docker network. Frames never cross between two
/// networks at layer 2.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NetworkId(pub u32);

impl NetworkId {
    /// The position of this network in per-network tables.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// An IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// `00:00:00:00:00:00`, never a valid source.
    pub const ZERO: Self = Self([0; 6]);

    /// Reads a MAC from the first six bytes of `bytes`, if there are six.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.get(..6)?.try_into().ok().map(Self)
    }

    /// The group bit: broadcast and multicast destinations are flooded.
    #[must_use]
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// `ff:ff:ff:ff:ff:ff`.
    #[must_use]
    pub const fn is_broadcast(self) -> bool {
        self.as_word() == 0xffff_ffff_ffff
    }

    /// A source address a frame may legitimately carry: not a group address
    /// and not all zeros (the Linux bridge drops the others as well).
    #[must_use]
    pub const fn is_valid_source(self) -> bool {
        !self.is_multicast() && self.as_word() != 0
    }

    /// The 48 bits in the low part of a `u64`, the first byte lowest: the
    /// six bytes as one plain load on a little-endian machine, for hashing
    /// and testing for equality, where [`MacAddr::as_u64`] costs a byte
    /// swap per use (two a frame in the FDB's keys alone).
    #[must_use]
    #[inline]
    pub const fn as_word(self) -> u64 {
        let b = self.0;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
    }

    /// The MAC whose [`MacAddr::as_word`] is the low 48 bits of `word`.
    #[must_use]
    pub const fn from_word(word: u64) -> Self {
        let b = word.to_le_bytes();
        Self([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The 48 bits in the low part of a `u64`, the first byte highest, so
    /// the numbers order as the addresses do.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six colon-separated hexadecimal octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address: {0:?}")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl From<MacAddr> for smoltcp::wire::EthernetAddress {
    fn from(mac: MacAddr) -> Self {
        Self(mac.0)
    }
}

impl From<smoltcp::wire::EthernetAddress> for MacAddr {
    fn from(mac: smoltcp::wire::EthernetAddress) -> Self {
        Self(mac.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
    }

    #[test]
    fn a_mac_word_is_injective_and_round_trips() {
        let a = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(MacAddr::from_word(a.as_word()), a);
        assert_eq!(a.as_word() >> 48, 0, "only the low 48 bits");
        // Addresses that differ in any one byte differ as words.
        for i in 0..6 {
            let mut b = a;
            b.0[i] ^= 0x80;
            assert_ne!(a.as_word(), b.as_word());
        }
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(!MacAddr([0x01, 0, 0, 0, 0, 0]).is_valid_source());
        assert!(MacAddr([0, 0, 0, 0, 0, 1]).is_valid_source());
    }

    #[test]
    fn mac_parse_rejects_bad_text() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "002:42:ac:11:00:2",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn group_and_zero_addresses_are_not_valid_sources() {
        assert!(!MacAddr::BROADCAST.is_valid_source());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_valid_source());
        assert!(MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]).is_valid_source());
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_broadcast());
    }
}
