//! How much of the underlay's MTU is left for the containers.
//!
//! Docker gives overlay containers `eth0` MTU = (`com.docker.network.driver.mtu`
//! or 1500) − 50, observed 1450: the inner frame's IP packet must fit in the
//! underlay packet after the outer headers, and VXLAN must not rely on the
//! underlay fragmenting (the kernel sends with DF clear, but fragments are
//! slow and a receiver with a UDP socket reassembles them at a cost).

/// What VXLAN over IPv4 adds in front of the inner IP packet: the inner
/// Ethernet header (14) travels inside, plus outer IPv4 (20), UDP (8) and
/// VXLAN (8). The outer Ethernet header does not count against an IP MTU.
pub const OVERHEAD_IPV4: u16 = 14 + 20 + 8 + 8;

/// The underlay MTU assumed when none is configured (Ethernet).
pub const DEFAULT_UNDERLAY_MTU: u16 = 1500;

/// The containers' MTU on an overlay by default: 1450.
pub const DEFAULT_MTU: u16 = DEFAULT_UNDERLAY_MTU - OVERHEAD_IPV4;

/// The smallest MTU IPv4 allows (RFC 791: every host must take 68 bytes).
pub const MIN_IPV4_MTU: u16 = 68;

/// The overlay MTU for an underlay MTU, or `None` when what is left is
/// below IPv4's minimum (so a bad network option fails instead of
/// creating a network nothing can cross).
#[must_use]
pub const fn overlay_mtu(underlay_mtu: u16) -> Option<u16> {
    match underlay_mtu.checked_sub(OVERHEAD_IPV4) {
        Some(m) if m >= MIN_IPV4_MTU => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_figures() {
        assert_eq!(DEFAULT_MTU, 1450);
        assert_eq!(overlay_mtu(1500), Some(1450));
        assert_eq!(overlay_mtu(9000), Some(8950));
        assert_eq!(overlay_mtu(118), Some(68));
        assert_eq!(overlay_mtu(117), None);
        assert_eq!(overlay_mtu(10), None);
    }
}
