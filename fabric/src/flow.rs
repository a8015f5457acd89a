//! The outer UDP source port: a hash of the inner flow.
//!
//! Underlay routers and NICs spread traffic over paths and queues by the
//! outer 5-tuple; between two VTEPs only the UDP source port varies, so it
//! must carry the inner flow's entropy (RFC 7348 §5), and one inner flow
//! must always get the same port so it is never reordered. The kernel
//! (`udp_flow_src_port`) hashes the inner L3 addresses and L4 ports, falls
//! back to the Ethernet addresses when there is no IP, and scales the hash
//! into the local port range; this module does the same, with a keyed hash
//! (foldhash) whose seed the caller chooses, so flows cannot be steered onto
//! one underlay path from outside.

use core::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

/// A half-open range of UDP source ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// A source port range that is empty or starts at port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid UDP source port range {start}..{end}")]
pub struct BadPortRange {
    /// First port asked for.
    pub start: u16,
    /// One past the last.
    pub end: u16,
}

impl PortRange {
    /// The kernel's default `ip_local_port_range` (32768–60999), which the
    /// vxlan driver uses when no `srcport` range is configured.
    pub const KERNEL_DEFAULT: Self = Self {
        start: 32768,
        end: 61000,
    };

    /// `start..end`; port 0 is not a port, and the range must not be empty.
    pub const fn new(start: u16, end: u16) -> Result<Self, BadPortRange> {
        if start == 0 || start >= end {
            Err(BadPortRange { start, end })
        } else {
            Ok(Self { start, end })
        }
    }

    /// First port.
    #[must_use]
    pub const fn start(&self) -> u16 {
        self.start
    }

    /// One past the last port.
    #[must_use]
    pub const fn end(&self) -> u16 {
        self.end
    }

    /// Scales a 32-bit hash into the range as the kernel does: the upper
    /// bits decide, after mixing the low half into them, so a hash whose
    /// entropy is in its low bits still spreads.
    #[must_use]
    pub fn pick(&self, hash: u32) -> u16 {
        let h = u64::from(hash ^ (hash << 16));
        let span = u64::from(self.end - self.start);
        // h < 2^32, so (h * span) >> 32 < span, which fits in a u16.
        let off = u16::try_from((h * span) >> 32).unwrap_or(0);
        self.start + off
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::KERNEL_DEFAULT
    }
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Hashes inner frames into outer source ports.
#[derive(Clone, Debug)]
pub struct FlowHasher {
    state: FixedState,
    range: PortRange,
}

impl FlowHasher {
    /// A hasher with the caller's seed (pick it at random once per
    /// process) and port range.
    #[must_use]
    pub const fn new(seed: u64, range: PortRange) -> Self {
        Self {
            state: FixedState::with_seed(seed),
            range,
        }
    }

    /// The source port for an inner Ethernet frame.
    #[must_use]
    pub fn source_port(&self, frame: &[u8]) -> u16 {
        self.range.pick(self.hash(frame))
    }

    /// The flow hash of an inner Ethernet frame.
    ///
    /// IPv4 and IPv6 (behind at most one VLAN tag): addresses, protocol and,
    /// for TCP, UDP, SCTP and UDP-Lite, the ports, except on fragments,
    /// which carry no ports after the first, so all fragments of a packet
    /// hash alike. Anything else, or a truncated header: the Ethernet
    /// addresses and type. Never reads out of bounds.
    #[must_use]
    pub fn hash(&self, frame: &[u8]) -> u32 {
        let mut h = self.state.build_hasher();
        if !hash_l3(&mut h, frame) {
            let mut l2 = [0u8; 16];
            let n = frame.len().min(14);
            l2[..n].copy_from_slice(&frame[..n]);
            h.write_u128(u128::from_ne_bytes(l2));
        }
        let v = h.finish();
        #[expect(
            clippy::cast_possible_truncation,
            reason = "folding a 64-bit hash into 32 bits"
        )]
        let folded = (v ^ (v >> 32)) as u32;
        folded
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Feeds the L3/L4 key; `false` when the frame is not IP or too short.
fn hash_l3(h: &mut impl Hasher, frame: &[u8]) -> bool {
    let Some(mut ethertype) = be16(frame, 12) else {
        return false;
    };
    let mut l3 = 14;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(t) = be16(frame, 16) else {
            return false;
        };
        ethertype = t;
        l3 = 18;
    }
    let Some(ip) = frame.get(l3..) else {
        return false;
    };
    match ethertype {
        ETH_P_IPV4 => {
            let Some(hdr) = ip.get(..20) else {
                return false;
            };
            let ihl = usize::from(hdr[0] & 0x0f) * 4;
            if hdr[0] >> 4 != 4 || ihl < 20 {
                return false;
            }
            let proto = hdr[9];
            let fragment = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff != 0;
            h.write_u64(u64::from_ne_bytes([
                hdr[12], hdr[13], hdr[14], hdr[15], hdr[16], hdr[17], hdr[18], hdr[19],
            ]));
            write_l4(h, proto, if fragment { None } else { ip.get(ihl..) });
            true
        }
        ETH_P_IPV6 => {
            let Some(hdr) = ip.get(..40) else {
                return false;
            };
            let mut addrs = [0u8; 32];
            addrs.copy_from_slice(&hdr[8..40]);
            h.write(&addrs);
            // Extension headers are not walked: a flow with them hashes on
            // addresses alone, which still keeps it in order.
            write_l4(h, hdr[6], ip.get(40..));
            true
        }
        _ => false,
    }
}

fn write_l4(h: &mut impl Hasher, proto: u8, l4: Option<&[u8]>) {
    let ports = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => l4
            .and_then(|b| b.get(..4))
            .map_or(0, |p| u32::from_ne_bytes([p[0], p[1], p[2], p[3]])),
        _ => 0,
    };
    h.write_u64(u64::from(proto) << 32 | u64::from(ports));
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(sport: u16, dport: u16, src: [u8; 4]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [10, 0, 0, 2], 64)
            .udp(sport, dport);
        let mut v = Vec::new();
        b.write(&mut v, &[0u8; 20]).unwrap();
        v
    }

    #[test]
    fn kernel_range_and_scaling() {
        let r = PortRange::default();
        assert_eq!((r.start(), r.end()), (32768, 61000));
        assert_eq!(r.pick(0), 32768);
        assert_eq!(r.pick(0x8000_0000), 32768 + 28232 / 2);
        assert_eq!(
            r.pick(0xffff_0000),
            60999,
            "the top of the hash reaches the last port"
        );
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(10, 10).is_err());
        let one = PortRange::new(5000, 5001).unwrap();
        assert_eq!(one.pick(0xdead_beef), 5000);
    }

    #[test]
    fn same_flow_same_port_and_flows_spread() {
        let h = FlowHasher::new(7, PortRange::default());
        assert_eq!(
            h.source_port(&udp(1000, 53, [10, 0, 0, 1])),
            h.source_port(&udp(1000, 53, [10, 0, 0, 1]))
        );
        let mut ports: Vec<u16> = (0..256)
            .map(|p| h.source_port(&udp(1000 + p, 53, [10, 0, 0, 1])))
            .collect();
        ports
            .iter()
            .for_each(|p| assert!((32768..61000).contains(p)));
        ports.sort_unstable();
        ports.dedup();
        assert!(
            ports.len() > 200,
            "256 flows got only {} ports",
            ports.len()
        );
        // The source address is part of the key too.
        let by_addr: std::collections::HashSet<u16> = (0..64)
            .map(|i| h.source_port(&udp(1000, 53, [10, 0, 1, i])))
            .collect();
        assert!(by_addr.len() > 48);
    }

    #[test]
    fn fragments_ignore_ports_and_non_ip_uses_macs() {
        let h = FlowHasher::new(1, PortRange::default());
        let mut a = udp(1, 2, [10, 0, 0, 1]);
        let mut b = udp(3, 4, [10, 0, 0, 1]);
        assert_ne!(h.hash(&a), h.hash(&b));
        for f in [&mut a, &mut b] {
            f[14 + 6] = 0x20; // more fragments
        }
        assert_eq!(
            h.hash(&a),
            h.hash(&b),
            "fragments of one packet must not be reordered"
        );
        let mut arp = [0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let base = h.hash(&arp);
        arp[20] = 1; // ARP body: not part of the key
        assert_eq!(h.hash(&arp), base);
        arp[11] = 9; // source MAC: part of it
        assert_ne!(h.hash(&arp), base);
        // Truncated and empty frames hash without panicking.
        for n in 0..a.len() {
            let _ = h.hash(&a[..n]);
        }
    }

    #[test]
    fn seed_changes_hash() {
        let f = udp(1000, 53, [10, 0, 0, 1]);
        assert_ne!(
            FlowHasher::new(1, PortRange::default()).hash(&f),
            FlowHasher::new(2, PortRange::default()).hash(&f)
        );
    }
}
