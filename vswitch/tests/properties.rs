//! Properties that must hold for any traffic, checked on random frames.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{Action, Fdb, FdbConfig};
use vswitch::testing::SwitchHarness;

const PORTS: [PortId; 9] = [A, B, C, UPLINK, D, E, UPLINK1, F, G];

/// A frame from a random source (a container's own, a spoofed one or a
/// remote host) to a random destination, of a random kind.
fn any_frame() -> impl Strategy<Value = (PortId, Vec<u8>)> {
    let macs = prop::sample::select(vec![
        mac_of(A),
        mac_of(B),
        mac_of(D),
        mac_of(F),
        mac_of(G),
        MacAddr([2, 0xaa, 0, 0, 0, 1]),
        MacAddr([2, 0xaa, 0, 0, 0, 2]),
        GW_MAC,
        GW1_MAC,
        GW2_MAC,
        MacAddr::BROADCAST,
        MacAddr([1, 0, 0x5e, 0, 0, 1]),
    ]);
    let ips = prop::sample::select(vec![
        addr_of(A),
        addr_of(B),
        addr_of(D),
        addr_of(F),
        ip(172, 17, 0, 1),
        ip(172, 18, 0, 1),
        ip(172, 19, 0, 1),
        ip(10, 0, 0, 1),
        ip(0, 0, 0, 0),
    ]);
    (
        prop::sample::select(PORTS.to_vec()),
        macs.clone(),
        macs,
        ips.clone(),
        ips,
        0u8..4,
        0usize..1600,
    )
        .prop_map(|(port, src, dst, sip, dip, kind, len)| {
            let frame = match kind {
                0 => udp(src, dst, sip, dip, &vec![0x5a; len]),
                1 => arp(src, dst, 1, src, sip, MacAddr::ZERO, dip),
                2 => echo_request(src, dst, sip, dip, 1, 1, &vec![0; len % 200]),
                _ => eth(src, dst, 0x88b5, &vec![0; len]),
            };
            (port, frame)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A forwarded frame never leaves by its ingress port (only the
    /// gateway's own replies go back there) and never reaches a port of
    /// another network.
    #[test]
    fn frames_stay_in_their_network_and_never_return_to_their_ingress(
        frames in prop::collection::vec((any_frame(), 0u64..400), 1..60)
    ) {
        let mut h = SwitchHarness::new(topology());
        let network_of = |p: PortId| h.switch.config().port(p).map(|c| c.network);
        let networks: Vec<Option<NetworkId>> = PORTS.iter().map(|&p| network_of(p)).collect();
        for ((ingress, frame), wait) in frames {
            h.advance(Duration::from_secs(wait));
            let d = h.inject(ingress, &frame);
            let home = networks[PORTS.iter().position(|&p| p == ingress).unwrap()];
            for (port, _) in &d.out {
                let there = networks[PORTS.iter().position(|p| p == port).unwrap()];
                prop_assert_eq!(there, home, "{:?} left {} by {}", d.action, ingress, port);
                if *port == ingress {
                    prop_assert!(matches!(d.action, Action::Reply(_)), "{:?}", d.action);
                }
            }
            if let Action::Reply(p) = d.action {
                prop_assert_eq!(p, ingress);
            }
        }
    }

    /// However many sources arrive, the table stays within its caps.
    #[test]
    fn the_fdb_never_exceeds_its_caps(
        max_entries in 1usize..40,
        max_per_port in 1usize..12,
        events in prop::collection::vec((0u32..6, 0u16..300, 0u64..200), 1..400)
    ) {
        let mut fdb = Fdb::new(FdbConfig { max_age: Duration::from_secs(300), max_entries, max_per_port });
        let mut now = std::time::Instant::now();
        for (port, m, wait) in events {
            now += Duration::from_secs(wait);
            let [hi, lo] = m.to_be_bytes();
            fdb.learn(now, NetworkId(u32::from(m % 2)), MacAddr([2, 0, 0, 0, hi, lo]), PortId(port));
            prop_assert!(fdb.learned_len() <= max_entries);
            for p in 0..6 {
                prop_assert!(fdb.port_len(PortId(p)) <= max_per_port);
            }
            if m % 7 == 0 {
                fdb.expire(now);
            }
            let total: usize = (0..6).map(|p| fdb.port_len(PortId(p))).sum();
            prop_assert_eq!(total, fdb.learned_len());
        }
    }

    /// Whatever bytes arrive, with whatever offload metadata, on whatever
    /// port, the switch decides without panicking.
    #[test]
    fn random_bytes_never_panic(
        port in 0u32..12,
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        vnet in (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()),
    ) {
        let mut h = SwitchHarness::new(topology());
        let mut buf = PacketBuf::from_frame(&bytes).unwrap();
        buf.vnet = VnetHdr { flags: vnet.0, gso_type: vnet.1, hdr_len: vnet.2, gso_size: vnet.3, ..VnetHdr::default() };
        let _ = h.inject_buf(PortId(port), buf);
    }

    /// Random bytes behind a valid Ethernet header from a container's own
    /// MAC (so the frame gets past the source check into ARP, IPv4 and the
    /// gateway) never panic either.
    #[test]
    fn random_payloads_from_a_container_never_panic(
        to_gateway in any::<bool>(),
        ethertype in prop::sample::select(vec![0x0800u16, 0x0806, 0x86dd, 0x8100]),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut h = SwitchHarness::new(topology());
        let dst = if to_gateway { GW_MAC } else { MacAddr::BROADCAST };
        let _ = h.inject(A, &eth(mac_of(A), dst, ethertype, &payload));
        let _ = h.inject(UPLINK, &eth(MacAddr([2, 0xaa, 0, 0, 0, 1]), dst, ethertype, &payload));
    }
}
