//! Endpoint MAC addresses derived from IPv4 addresses, as Docker derives them.
//!
//! Docker gives each endpoint the MAC `02:42` followed by the four bytes of
//! its IPv4 address on that network (`LN/netutils/utils.go`
//! `GenerateMACFromIP`, docker-reference §2): `172.17.0.2` becomes
//! `02:42:ac:11:00:02`. `02` sets the locally-administered bit and clears the
//! multicast bit, so the MAC cannot clash with a vendor's. The switch has its
//! own MAC type; this module deals in plain bytes.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The two bytes every Docker-derived MAC starts with.
pub const DOCKER_MAC_PREFIX: [u8; 2] = [0x02, 0x42];

/// The MAC Docker gives an endpoint whose IPv4 address is `address`.
pub fn mac_from_ipv4(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    let [p0, p1] = DOCKER_MAC_PREFIX;
    [p0, p1, a, b, c, d]
}

/// `mac` in Docker's text form: six lower-case hex pairs joined by colons.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut text = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_examples() {
        for (ip, mac) in [
            ("172.17.0.2", "02:42:ac:11:00:02"),
            ("10.77.0.128", "02:42:0a:4d:00:80"),
            ("10.0.1.2", "02:42:0a:00:01:02"),
        ] {
            assert_eq!(format_mac(mac_from_ipv4(ip.parse().unwrap())), mac);
        }
    }

    #[test]
    fn derived_macs_are_unicast_and_locally_administered() {
        let mac = mac_from_ipv4(Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
    }
}
