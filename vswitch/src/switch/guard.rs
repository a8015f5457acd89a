//! What a hostile container must not do on the wire, beyond sending as
//! someone else ([`super::ingress`]): talk to the link's control protocols,
//! run IPv6 where there is none or act as its router or its neighbours'
//! neighbour cache, flood the network, or hand another container's kernel
//! offload metadata it would trust.
//!
//! - `01:80:c2:00:00:00/28` (STP, LACP, LLDP, 802.1X, pause frames) is never
//!   forwarded, from any port, as a Linux bridge never forwards it.
//! - On a network without IPv6, IPv6 from a container is dropped. On one
//!   with IPv6: the source must be the port's own (`::` only for duplicate
//!   address detection, or an address whose interface identifier is the
//!   port MAC's modified EUI-64, link-local or not); Router Advertisements
//!   and Redirects are dropped (RA guard, RFC 6105), hidden behind
//!   extension headers or not; a Neighbor Advertisement may claim only the
//!   port's addresses and MAC, a Neighbor Solicitation only its MAC.
//! - Each container port may flood (unknown unicast, broadcast, multicast)
//!   at most [`FloodLimit`] frames per second, a token bucket driven by the
//!   time the caller passes in.
//! - The virtio-net header of a container's frame is checked against the
//!   frame: a GSO type must match the packet, a partial checksum must point
//!   at its TCP or UDP checksum, and "checksum already verified" is
//!   cleared (it is the receiver's to say, and would make another
//!   container's kernel skip verifying a corrupt packet).

use core::net::Ipv6Addr;
use std::time::{Duration, Instant};

use smoltcp::wire::{ETHERNET_HEADER_LEN, EthernetProtocol, IpProtocol};

use super::action::DropReason;
use super::parse::{L3, ParsedFrame};
use crate::buf::VnetHdr;
use crate::ids::MacAddr;

/// Whether `dst` is one of the IEEE 802.1 link-local group addresses
/// (`01:80:c2:00:00:0X`): one masked comparison of the address as a word,
/// which every frame pays, where six byte tests compiled to some thirty
/// instructions.
#[must_use]
pub(crate) const fn is_link_local_control(dst: MacAddr) -> bool {
    dst.as_word() & 0xf0ff_ffff_ffff == 0x00c2_8001
}

/// ICMPv6 message types the guard looks at.
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
/// Neighbor Discovery options: source and target link-layer address.
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
/// Length of the IPv6 fixed header.
const IPV6_HEADER_LEN: usize = 40;
/// Extension headers walked before giving up (and dropping).
const MAX_EXTENSION_HEADERS: usize = 8;

/// The modified EUI-64 interface identifier of `mac` (RFC 4291 §2.5.1).
fn eui64(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// Whether a container port with `mac` may use `addr` as its own.
fn owns(mac: MacAddr, addr: Ipv6Addr) -> bool {
    addr.octets()[8..] == eui64(mac) && !addr.is_multicast()
}

/// Checks IPv6 from a container port with `mac`, on a network that
/// carries IPv6 (`ipv6`) or not.
pub(crate) fn check_ipv6(
    frame: &[u8],
    parsed: &ParsedFrame,
    mac: MacAddr,
    ipv6: bool,
) -> Result<(), DropReason> {
    if parsed.ethertype != EthernetProtocol::Ipv6 {
        return Ok(());
    }
    if !ipv6 {
        return Err(DropReason::Ipv6Disabled);
    }
    let L3::Ipv6(ip) = parsed.l3 else {
        return Err(DropReason::Malformed);
    };
    let packet = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
    let icmp = match upper_layer(packet, ip.next_header) {
        Upper::Found(IpProtocol::Icmpv6, at) => packet.get(at..),
        Upper::Found(..) | Upper::LaterFragment => None,
        Upper::Unreadable => return Err(DropReason::Malformed),
    };
    let icmp_type = icmp.and_then(|m| m.first().copied());
    if ip.src.is_unspecified() {
        // Only duplicate address detection sends from `::`.
        if icmp_type != Some(ND_NEIGHBOR_SOLICIT) && icmp_type != Some(ND_ROUTER_SOLICIT) {
            return Err(DropReason::SrcIpSpoofed);
        }
    } else if !owns(mac, ip.src) {
        return Err(DropReason::SrcIpSpoofed);
    }
    let Some(icmp) = icmp else {
        return Ok(());
    };
    match icmp_type {
        Some(ND_ROUTER_ADVERT) => Err(DropReason::RouterAdvertisement),
        Some(ND_REDIRECT) => Err(DropReason::Redirect),
        Some(ND_NEIGHBOR_ADVERT) => {
            // Type, code, checksum, flags: 8 bytes; then the target.
            let target = icmp
                .get(8..24)
                .and_then(|t| <[u8; 16]>::try_from(t).ok())
                .map(Ipv6Addr::from)
                .ok_or(DropReason::Malformed)?;
            if !owns(mac, target) {
                return Err(DropReason::NeighborSpoofed);
            }
            check_nd_options(icmp.get(24..).unwrap_or_default(), ND_OPT_TARGET_LL, mac)
        }
        Some(ND_NEIGHBOR_SOLICIT) => {
            check_nd_options(icmp.get(24..).unwrap_or_default(), ND_OPT_SOURCE_LL, mac)
        }
        Some(ND_ROUTER_SOLICIT) => {
            check_nd_options(icmp.get(8..).unwrap_or_default(), ND_OPT_SOURCE_LL, mac)
        }
        _ => Ok(()),
    }
}

/// Checks that every link-layer address option of kind `kind` names `mac`.
fn check_nd_options(mut options: &[u8], kind: u8, mac: MacAddr) -> Result<(), DropReason> {
    while let [t, len, ..] = *options {
        let size = usize::from(len) * 8;
        if size == 0 || size > options.len() {
            return Err(DropReason::Malformed);
        }
        if t == kind && options.get(2..8) != Some(&mac.0[..]) {
            return Err(DropReason::NeighborSpoofed);
        }
        options = &options[size..];
    }
    Ok(())
}

/// Where an IPv6 packet's upper layer starts.
enum Upper {
    /// The protocol, at this offset from the IPv6 header.
    Found(IpProtocol, usize),
    /// A fragment other than the first: it carries no upper-layer header.
    LaterFragment,
    /// The extension header chain is truncated or too long.
    Unreadable,
}

/// Walks the extension headers (hop-by-hop, routing, fragment, destination
/// options), so an RA behind them is still seen.
fn upper_layer(packet: &[u8], first: IpProtocol) -> Upper {
    let mut next = first;
    let mut at = IPV6_HEADER_LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let (Some(&nh), Some(&len)) = (packet.get(at), packet.get(at + 1)) else {
                    return Upper::Unreadable;
                };
                next = IpProtocol::from(nh);
                at += (usize::from(len) + 1) * 8;
            }
            IpProtocol::Ipv6Frag => {
                let Some(h) = packet.get(at..at + 8) else {
                    return Upper::Unreadable;
                };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if offset != 0 {
                    return Upper::LaterFragment;
                }
                next = IpProtocol::from(h[0]);
                at += 8;
            }
            other => {
                return if at <= packet.len() {
                    Upper::Found(other, at)
                } else {
                    Upper::Unreadable
                };
            }
        }
    }
    Upper::Unreadable
}

/// A per-port flood budget: `rate` frames per second on average, up to
/// `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimit {
    /// Frames per second refilled.
    pub rate: u32,
    /// The bucket's size.
    pub burst: u32,
}

impl FloodLimit {
    /// The default: ample for ARP, DHCP, mDNS and the unknown unicast that
    /// follows an FDB entry's expiry, far below what a flood costs every
    /// other port of the network.
    pub const DEFAULT: Self = Self {
        rate: 2000,
        burst: 4000,
    };
}

impl Default for FloodLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One port's token bucket, in thousandths of a frame so slow rates refill
/// smoothly.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FloodBucket {
    milli_tokens: u64,
    last: Option<Instant>,
}

impl FloodBucket {
    /// Takes one frame's token at `now`; `false` when the bucket is empty.
    pub(crate) fn take(&mut self, now: Instant, limit: FloodLimit) -> bool {
        let cap = u64::from(limit.burst) * 1000;
        let refill = match self.last {
            None => cap,
            Some(last) => {
                let elapsed = now
                    .saturating_duration_since(last)
                    .min(Duration::from_secs(3600));
                // rate × elapsed, in thousandths: ≤ 2^32 × 3.6e12 / 1e6.
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                u64::from(limit.rate).saturating_mul(micros) / 1000
            }
        };
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
        self.last = Some(now.max(self.last.unwrap_or(now)));
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// Checks and cleans the virtio-net header of a container's frame.
pub(crate) fn sanitize_vnet(vnet: &mut VnetHdr, parsed: &ParsedFrame) -> Result<(), DropReason> {
    vnet.flags &= !VnetHdr::F_DATA_VALID;
    let (protocol, l4) = match parsed.l3 {
        L3::Ipv4(ip) => (ip.protocol, ip.l4),
        L3::Ipv6(ip) => (ip.next_header, ip.l4),
        _ => (IpProtocol::Unknown(0xff), None),
    };
    if vnet.needs_csum() {
        let at = l4.and_then(|l4| l4.checksum_offset(protocol));
        let expected = l4
            .zip(at)
            .map(|(l4, at)| (l4.offset, at - usize::from(l4.offset)));
        let given = (vnet.csum_start, usize::from(vnet.csum_offset));
        if expected != Some(given) {
            return Err(DropReason::BadVnetHeader);
        }
    }
    if vnet.is_gso() {
        let ok = match (vnet.gso_type & !VnetHdr::GSO_ECN, parsed.l3, protocol) {
            (VnetHdr::GSO_TCPV4, L3::Ipv4(_), IpProtocol::Tcp)
            | (VnetHdr::GSO_TCPV6, L3::Ipv6(_), IpProtocol::Tcp)
            | (
                VnetHdr::GSO_UDP | VnetHdr::GSO_UDP_L4,
                L3::Ipv4(_) | L3::Ipv6(_),
                IpProtocol::Udp,
            ) => l4.is_some() && vnet.gso_size != 0,
            _ => false,
        };
        if !ok {
            return Err(DropReason::BadVnetHeader);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_control_is_the_sixteen_ieee_addresses() {
        for last in 0..=0x0f {
            assert!(is_link_local_control(MacAddr([1, 0x80, 0xc2, 0, 0, last])));
        }
        assert!(!is_link_local_control(MacAddr([1, 0x80, 0xc2, 0, 0, 0x10])));
        assert!(!is_link_local_control(MacAddr([1, 0, 0x5e, 0, 0, 1])));
        assert!(!is_link_local_control(MacAddr([0xff; 6])));
        // The same bytes without the group bit, and each byte off by one.
        assert!(!is_link_local_control(MacAddr([0, 0x80, 0xc2, 0, 0, 0])));
        for i in 0..5 {
            let mut m = [1, 0x80, 0xc2, 0, 0, 0];
            m[i] ^= 0x04;
            assert!(!is_link_local_control(MacAddr(m)), "{m:x?}");
        }
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let limit = FloodLimit { rate: 10, burst: 5 };
        let mut b = FloodBucket::default();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| b.take(t0, limit)).count(), 5);
        // 10 per second: one token per 100 ms.
        let t1 = t0 + Duration::from_millis(350);
        assert_eq!((0..8).filter(|_| b.take(t1, limit)).count(), 3);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.take(t2, limit)).count(), 5);
        // Time going backwards refills nothing.
        assert!(!b.take(t0, limit));
    }

    #[test]
    fn eui64_follows_rfc_4291() {
        let mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        let ll: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
        assert!(owns(mac, ll));
        let other: Ipv6Addr = "fe80::42:acff:fe11:3".parse().unwrap();
        assert!(!owns(mac, other));
    }
}
