//! Frame-in, frames-out tests of the switching pipeline: learning, aging,
//! moves, caps, flooding scope, isolation, ICC, anti-spoofing, size checks.

mod common;

use std::time::Duration;

use common::*;
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::ids::{MacAddr, PortId};
use vswitch::switch::{Action, DropReason, FdbConfig, FloodScope, Learned, Origin, TraceEvent};
use vswitch::testing::SwitchHarness;

fn harness() -> SwitchHarness {
    SwitchHarness::new(topology())
}

fn remote(n: u8) -> MacAddr {
    MacAddr([0x02, 0xaa, 0, 0, 0, n])
}

fn drops(h: &SwitchHarness, port: PortId, reason: DropReason) -> u64 {
    h.switch.stats().port(port).drops.get(reason)
}

#[test]
fn unknown_unicast_floods_the_network_and_never_the_ingress() {
    let mut h = harness();
    let frame = udp(remote(1), remote(2), ip(10, 0, 0, 1), ip(10, 0, 0, 2), b"x");
    let d = h.inject(UPLINK, &frame);
    assert_eq!(
        d.action,
        Action::Flood {
            network: BRIDGE,
            except: UPLINK,
            scope: FloodScope::All
        }
    );
    assert_eq!(d.ports(), vec![A, B, C]);
    for (_, bytes) in &d.out {
        assert_eq!(bytes, &frame, "flooded frames are unchanged");
    }
}

#[test]
fn a_learned_source_becomes_a_known_unicast_destination() {
    let mut h = harness();
    // A's reply to a remote host it has not heard from floods...
    let to_remote = udp(mac_of(A), remote(9), addr_of(A), ip(10, 0, 0, 9), b"x");
    assert_eq!(h.inject(A, &to_remote).ports(), vec![B, C, UPLINK]);
    // ...until the remote host speaks from the uplink.
    let from_remote = udp(remote(9), mac_of(A), ip(10, 0, 0, 9), addr_of(A), b"y");
    let d = h.inject(UPLINK, &from_remote);
    assert_eq!(d.action, Action::Output(A));
    assert_eq!(d.out, vec![(A, from_remote)]);
    let d = h.inject(A, &to_remote);
    assert_eq!(d.out, vec![(UPLINK, to_remote)]);
}

#[test]
fn containers_are_known_from_configuration_before_they_speak() {
    let mut h = harness();
    let d = h.inject(A, &udp_between(A, B));
    assert_eq!(d.action, Action::Output(B));
    let rows = h.switch.fdb().snapshot(h.now());
    let b_row = rows
        .iter()
        .find(|r| r.mac == mac_of(B))
        .expect("static entry for B");
    assert_eq!(
        (b_row.port, b_row.network, b_row.origin, b_row.age),
        (B, BRIDGE, Origin::Static, None)
    );
}

#[test]
fn learned_entries_age_out_at_exactly_the_configured_time() {
    let mut h = harness();
    h.inject(
        UPLINK,
        &udp(remote(1), mac_of(A), ip(10, 0, 0, 1), addr_of(A), b"x"),
    );
    let to_remote = udp(mac_of(A), remote(1), addr_of(A), ip(10, 0, 0, 1), b"x");

    h.advance(Duration::from_secs(299));
    assert_eq!(h.inject(A, &to_remote).action, Action::Output(UPLINK));
    // A frame *to* a MAC does not keep it alive, only frames from it.
    h.advance(Duration::from_secs(1));
    let d = h.inject(A, &to_remote);
    assert!(
        matches!(d.action, Action::Flood { .. }),
        "aged out after 300 s: {:?}",
        d.action
    );
    h.switch.expire(h.now());
    assert!(
        h.switch
            .fdb()
            .snapshot(h.now())
            .iter()
            .all(|r| r.mac != remote(1))
    );
}

#[test]
fn aging_time_is_configurable() {
    let fdb = FdbConfig {
        max_age: Duration::from_secs(10),
        ..FdbConfig::default()
    };
    let mut h = SwitchHarness::with_fdb(topology(), fdb);
    h.inject(
        UPLINK,
        &udp(remote(1), mac_of(A), ip(10, 0, 0, 1), addr_of(A), b"x"),
    );
    let to_remote = udp(mac_of(A), remote(1), addr_of(A), ip(10, 0, 0, 1), b"x");
    h.advance(Duration::from_millis(9_999));
    assert_eq!(h.inject(A, &to_remote).action, Action::Output(UPLINK));
    h.advance(Duration::from_millis(1));
    assert!(matches!(
        h.inject(A, &to_remote).action,
        Action::Flood { .. }
    ));
}

#[test]
fn a_mac_that_moves_is_followed_and_counted() {
    let config = {
        use vswitch::switch::{NetworkConfig, PortConfig, PortRole, SwitchConfig};
        let up = |id| PortConfig {
            id: PortId(id),
            network: BRIDGE,
            role: PortRole::Uplink,
        };
        SwitchConfig::new(1, [NetworkConfig::new(BRIDGE)], [up(1), up(2), up(3)]).unwrap()
    };
    let mut h = SwitchHarness::new(config);
    let from_x = udp(remote(1), remote(2), ip(10, 0, 0, 1), ip(10, 0, 0, 2), b"x");
    h.inject(PortId(1), &from_x);
    let (_, trace) = h.inject_traced(PortId(2), &from_x);
    assert!(trace.events.contains(&TraceEvent::Learned {
        mac: remote(1),
        outcome: Learned::Moved { from: PortId(1) }
    }));
    let to_x = udp(remote(2), remote(1), ip(10, 0, 0, 2), ip(10, 0, 0, 1), b"y");
    assert_eq!(h.inject(PortId(3), &to_x).action, Action::Output(PortId(2)));
    assert_eq!(h.switch.fdb().stats().moved, 1);
}

#[test]
fn a_mac_flood_from_one_port_evicts_only_that_ports_entries() {
    let fdb = FdbConfig {
        max_entries: 16,
        max_per_port: 8,
        ..FdbConfig::default()
    };
    let mut h = SwitchHarness::with_fdb(topology(), fdb);
    // A quiet host behind n1's uplink.
    h.inject(
        UPLINK1,
        &udp(remote(200), mac_of(D), ip(10, 0, 0, 200), addr_of(D), b"x"),
    );
    // Ten thousand random sources on bridge's uplink.
    for i in 0..10_000u32 {
        let b = i.to_be_bytes();
        let src = MacAddr([0x02, 0xbb, b[0], b[1], b[2], b[3]]);
        h.inject(
            UPLINK,
            &udp(
                src,
                MacAddr::BROADCAST,
                ip(10, 0, 0, 1),
                ip(10, 0, 0, 255),
                b"x",
            ),
        );
        assert!(h.switch.fdb().port_len(UPLINK) <= 8);
        assert!(h.switch.fdb().learned_len() <= 16);
    }
    let to_quiet = udp(mac_of(D), remote(200), addr_of(D), ip(10, 0, 0, 200), b"y");
    assert_eq!(
        h.inject(D, &to_quiet).action,
        Action::Output(UPLINK1),
        "quiet port's entry survived"
    );
    assert!(h.switch.fdb().stats().evicted_port_cap >= 9_990);
    // Endpoints' static entries are never evicted.
    assert_eq!(h.inject(B, &udp_between(B, A)).action, Action::Output(A));
}

#[test]
fn broadcast_stays_inside_its_network() {
    let mut h = harness();
    let bcast = udp(
        mac_of(D),
        MacAddr::BROADCAST,
        addr_of(D),
        ip(172, 18, 255, 255),
        b"x",
    );
    assert_eq!(h.inject(D, &bcast).ports(), vec![E, UPLINK1]);
    let mcast = udp(
        mac_of(A),
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]),
        addr_of(A),
        ip(224, 0, 0, 251),
        b"x",
    );
    assert_eq!(h.inject(A, &mcast).ports(), vec![B, C, UPLINK]);
}

#[test]
fn a_container_cannot_reach_a_mac_on_another_network() {
    let mut h = harness();
    // D (n1) addresses A's MAC directly: A is unknown on n1, so the frame
    // floods n1 only, and A never sees it.
    let d = h.inject(D, &udp(mac_of(D), mac_of(A), addr_of(D), addr_of(A), b"x"));
    assert_eq!(d.ports(), vec![E, UPLINK1]);
    // The same MAC learned on two networks stays two separate entries.
    h.inject(
        UPLINK,
        &udp(remote(7), mac_of(A), ip(10, 0, 0, 7), addr_of(A), b"x"),
    );
    let d = h.inject(
        D,
        &udp(mac_of(D), remote(7), addr_of(D), ip(10, 0, 0, 7), b"x"),
    );
    assert_eq!(d.ports(), vec![E, UPLINK1]);
}

#[test]
fn icc_off_blocks_container_to_container_but_not_arp_or_the_gateway() {
    let mut h = harness();
    let d = h.inject(F, &udp_between(F, G));
    assert_eq!(d.action, Action::Drop(DropReason::IccDisabled));
    assert!(d.out.is_empty());
    let bcast = udp(
        mac_of(F),
        MacAddr::BROADCAST,
        addr_of(F),
        ip(172, 19, 255, 255),
        b"x",
    );
    assert_eq!(
        h.inject(F, &bcast).action,
        Action::Drop(DropReason::IccDisabled)
    );
    assert_eq!(drops(&h, F, DropReason::IccDisabled), 2);

    // ARP between the two still resolves, as on Docker's bridge.
    let who_has_g = arp_request(mac_of(F), addr_of(F), addr_of(G));
    assert_eq!(h.inject(F, &who_has_g).ports(), vec![G]);

    // And the gateway answers.
    let ping = echo_request(
        mac_of(F),
        GW2_MAC,
        addr_of(F),
        ip(172, 19, 0, 1),
        1,
        1,
        b"abc",
    );
    assert_eq!(h.inject(F, &ping).action, Action::Reply(F));

    // ICC on networks is unaffected.
    assert_eq!(h.inject(A, &udp_between(A, B)).action, Action::Output(B));
}

#[test]
fn a_container_may_not_send_from_another_mac() {
    let mut h = harness();
    let spoofed = udp(mac_of(B), mac_of(C), addr_of(A), addr_of(C), b"x");
    let d = h.inject(A, &spoofed);
    assert_eq!(d.action, Action::Drop(DropReason::SrcMacSpoofed));
    // Nothing was learned from it: B is still behind its own port.
    assert_eq!(h.inject(C, &udp_between(C, B)).action, Action::Output(B));
    assert_eq!(drops(&h, A, DropReason::SrcMacSpoofed), 1);
}

#[test]
fn a_container_may_not_send_ipv4_from_another_address() {
    let mut h = harness();
    let spoofed = udp(mac_of(A), mac_of(C), addr_of(B), addr_of(C), b"x");
    assert_eq!(
        h.inject(A, &spoofed).action,
        Action::Drop(DropReason::SrcIpSpoofed)
    );
    let zero = udp(mac_of(A), mac_of(C), ip(0, 0, 0, 0), addr_of(C), b"x");
    assert_eq!(
        h.inject(A, &zero).action,
        Action::Drop(DropReason::SrcIpSpoofed)
    );
}

#[test]
fn arp_sender_fields_are_checked_but_probes_pass() {
    let mut h = harness();
    // Sender IP of another container: an ARP-cache poisoning attempt.
    let poison = arp(
        mac_of(A),
        MacAddr::BROADCAST,
        2,
        mac_of(A),
        addr_of(B),
        MacAddr::ZERO,
        addr_of(C),
    );
    assert_eq!(
        h.inject(A, &poison).action,
        Action::Drop(DropReason::SrcIpSpoofed)
    );
    // Sender MAC differs from the Ethernet source.
    let sha = arp(
        mac_of(A),
        MacAddr::BROADCAST,
        1,
        mac_of(B),
        addr_of(A),
        MacAddr::ZERO,
        addr_of(C),
    );
    assert_eq!(
        h.inject(A, &sha).action,
        Action::Drop(DropReason::SrcMacSpoofed)
    );
    // RFC 5227 probe: sender address 0.0.0.0.
    let probe = arp(
        mac_of(A),
        MacAddr::BROADCAST,
        1,
        mac_of(A),
        ip(0, 0, 0, 0),
        MacAddr::ZERO,
        addr_of(A),
    );
    assert_eq!(h.inject(A, &probe).ports(), vec![B, C, UPLINK]);
    // A truncated ARP packet.
    let mut short = arp_request(mac_of(A), addr_of(A), addr_of(B));
    short.truncate(14 + 20);
    assert_eq!(
        h.inject(A, &short).action,
        Action::Drop(DropReason::Malformed)
    );
    assert_eq!(h.switch.stats().drops().get(DropReason::SrcIpSpoofed), 1);
    assert_eq!(h.switch.stats().drops().get(DropReason::SrcMacSpoofed), 1);
    assert_eq!(h.switch.stats().drops().get(DropReason::Malformed), 1);
}

#[test]
fn uplinks_are_not_held_to_one_address() {
    let mut h = harness();
    let d = h.inject(
        UPLINK,
        &udp(remote(1), mac_of(A), ip(8, 8, 8, 8), addr_of(A), b"x"),
    );
    assert_eq!(d.action, Action::Output(A));
}

#[test]
fn vlan_tagged_frames_from_containers_are_dropped() {
    let mut h = harness();
    let mut tagged = vec![0x00, 0x05, 0x08, 0x00];
    tagged.extend_from_slice(&udp_between(A, B)[14..]);
    let frame = eth(mac_of(A), mac_of(B), 0x8100, &tagged);
    assert_eq!(
        h.inject(A, &frame).action,
        Action::Drop(DropReason::VlanTagged)
    );
}

#[test]
fn group_and_zero_source_macs_are_dropped() {
    let mut h = harness();
    for src in [
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
    ] {
        let d = h.inject(
            UPLINK,
            &udp(src, mac_of(A), ip(10, 0, 0, 1), addr_of(A), b"x"),
        );
        assert_eq!(d.action, Action::Drop(DropReason::InvalidSrcMac), "{src}");
    }
    assert_eq!(h.switch.fdb().learned_len(), 0);
}

#[test]
fn runts_are_dropped_and_counted() {
    let mut h = harness();
    for len in [0, 1, 13] {
        let d = h.inject(A, &udp_between(A, B)[..len]);
        assert_eq!(d.action, Action::Drop(DropReason::Runt));
    }
    assert_eq!(drops(&h, A, DropReason::Runt), 3);
    assert_eq!(h.switch.stats().port(A).rx_packets, 3);
}

#[test]
fn frames_beyond_the_network_mtu_are_dropped() {
    let mut h = harness();
    // bridge: MTU 1500. A 1500-byte IP packet passes, 1501 does not.
    let fits = udp(
        mac_of(A),
        mac_of(B),
        addr_of(A),
        addr_of(B),
        &[0; 1500 - 28],
    );
    assert_eq!(fits.len(), 1514);
    assert_eq!(h.inject(A, &fits).action, Action::Output(B));
    let over = udp(
        mac_of(A),
        mac_of(B),
        addr_of(A),
        addr_of(B),
        &[0; 1501 - 28],
    );
    assert_eq!(
        h.inject(A, &over).action,
        Action::Drop(DropReason::Oversize)
    );
    // ICC-off network: MTU 1400.
    let over = udp(
        mac_of(F),
        GW2_MAC,
        addr_of(F),
        ip(172, 19, 0, 1),
        &[0; 1401 - 28],
    );
    assert_eq!(
        h.inject(F, &over).action,
        Action::Drop(DropReason::Oversize)
    );
    assert_eq!(drops(&h, A, DropReason::Oversize), 1);
    assert_eq!(drops(&h, F, DropReason::Oversize), 1);
}

/// A TSO super-frame: one TCP segment of `payload` bytes to be cut into
/// `mss`-byte segments.
fn tso_frame(payload: usize, mss: u16) -> PacketBuf {
    let builder = etherparse::PacketBuilder::ethernet2(mac_of(A).0, mac_of(B).0)
        .ipv4(addr_of(A).octets(), addr_of(B).octets(), 64)
        .tcp(40000, 5201, 1, 65535);
    let mut frame = Vec::new();
    builder.write(&mut frame, &vec![0u8; payload]).unwrap();
    let mut buf = PacketBuf::from_frame(&frame).unwrap();
    buf.vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        // Linux reports the linear part here, not the header length.
        hdr_len: 1000,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    buf
}

#[test]
fn a_gso_super_frame_passes_whole_when_its_segments_fit_the_mtu() {
    let mut h = harness();
    // 14 + 20 + 20 + 1460 = 1514: segments exactly at MTU 1500.
    let d = h.inject_buf(A, tso_frame(60_000, 1460));
    assert_eq!(d.action, Action::Output(B));
    assert_eq!(d.out[0].1.len(), 60_054);
    let d = h.inject_buf(A, tso_frame(60_000, 1461));
    assert_eq!(d.action, Action::Drop(DropReason::Oversize));
    let d = h.inject_buf(A, tso_frame(60_000, 0));
    assert_eq!(
        d.action,
        Action::Drop(DropReason::Oversize),
        "a zero segment size is nonsense"
    );
}

#[test]
fn known_unicast_back_to_its_own_port_is_dropped() {
    let mut h = harness();
    h.inject(
        UPLINK,
        &udp(remote(1), mac_of(A), ip(10, 0, 0, 1), addr_of(A), b"x"),
    );
    let d = h.inject(
        UPLINK,
        &udp(remote(2), remote(1), ip(10, 0, 0, 2), ip(10, 0, 0, 1), b"x"),
    );
    assert_eq!(d.action, Action::Drop(DropReason::SamePort));
}

#[test]
fn frames_on_unknown_ports_are_dropped_and_counted() {
    let mut h = harness();
    let d = h.inject(PortId(77), &udp_between(A, B));
    assert_eq!(d.action, Action::Drop(DropReason::UnknownPort));
    assert_eq!(h.switch.stats().drops().get(DropReason::UnknownPort), 1);
}

#[test]
fn port_counters_follow_traffic() {
    let mut h = harness();
    let frame = udp_between(A, B);
    for _ in 0..3 {
        h.inject(A, &frame);
    }
    h.inject(A, &frame[..5]);
    let a = h.switch.stats().port(A);
    let b = h.switch.stats().port(B);
    assert_eq!((a.rx_packets, a.rx_bytes), (4, 3 * frame.len() as u64 + 5));
    assert_eq!((b.tx_packets, b.tx_bytes), (3, 3 * frame.len() as u64));
    assert_eq!(a.drops.total(), 1);
    assert_eq!(
        a.drops.nonzero().collect::<Vec<_>>(),
        vec![(DropReason::Runt, 1)]
    );
}

#[test]
fn removing_a_port_forgets_its_entries_and_counters() {
    use vswitch::switch::{NetworkConfig, PortConfig, PortRole, SwitchConfig};
    let mut h = harness();
    h.inject(
        UPLINK,
        &udp(remote(1), mac_of(A), ip(10, 0, 0, 1), addr_of(A), b"x"),
    );
    let cfg = topology();
    let kept: Vec<PortConfig> = cfg.ports().filter(|p| p.id != UPLINK).copied().collect();
    let nets: Vec<NetworkConfig> = cfg.networks().cloned().collect();
    h.reconfigure(SwitchConfig::new(2, nets, kept).unwrap());
    assert!(
        h.switch
            .fdb()
            .snapshot(h.now())
            .iter()
            .all(|r| r.port != UPLINK)
    );
    assert_eq!(h.switch.stats().port(UPLINK).rx_packets, 0);
    let d = h.inject(
        A,
        &udp(mac_of(A), remote(1), addr_of(A), ip(10, 0, 0, 1), b"x"),
    );
    assert_eq!(
        d.ports(),
        vec![B, C],
        "the removed uplink is no longer a flood target"
    );
    let _ = PortRole::Uplink;
}

#[test]
fn the_trace_records_each_decision() {
    let mut h = harness();
    let (d, trace) = h.inject_traced(A, &udp_between(A, B));
    assert_eq!(d.action, Action::Output(B));
    let expected = vec![
        TraceEvent::Received {
            port: A,
            len: udp_between(A, B).len(),
        },
        TraceEvent::IngressChecked {
            network: BRIDGE,
            src: mac_of(A),
            dst: mac_of(B),
            ethertype: 0x0800,
        },
        TraceEvent::Learned {
            mac: mac_of(A),
            outcome: Learned::Refreshed,
        },
        TraceEvent::Lookup {
            mac: mac_of(B),
            port: Some(B),
        },
        TraceEvent::Decided(Action::Output(B)),
    ];
    assert_eq!(trace.events, expected);
    let text = trace.to_string();
    assert!(text.contains("lookup 02:42:ac:11:00:03: at p2"), "{text}");

    let (_, trace) = h.inject_traced(A, &udp(mac_of(B), mac_of(C), addr_of(A), addr_of(C), b""));
    assert_eq!(
        &trace.events[1..],
        &[
            TraceEvent::Dropped(DropReason::SrcMacSpoofed),
            TraceEvent::Decided(Action::Drop(DropReason::SrcMacSpoofed))
        ]
    );
}

#[test]
fn a_batch_leaves_each_port_whole_and_in_order_across_send_chunks() {
    let mut h = harness();
    // The remote host speaks first, so it is a known destination.
    let hello = udp(remote(7), mac_of(A), ip(10, 0, 0, 7), addr_of(A), b"hi");
    assert_eq!(h.inject(UPLINK, &hello).action, Action::Output(A));
    // 240 frames from A, to B, C and the remote host in turn: 80 for each,
    // more than a send call takes (64), interleaved in one batch.
    let dests = [
        (B, mac_of(B), addr_of(B)),
        (C, mac_of(C), addr_of(C)),
        (UPLINK, remote(7), ip(10, 0, 0, 7)),
    ];
    let frames: Vec<(PortId, Vec<u8>)> = (0..240u16)
        .map(|k| {
            let (_, mac, ip) = dests[usize::from(k % 3)];
            let f = udp(mac_of(A), mac, addr_of(A), ip, &k.to_be_bytes());
            (A, f)
        })
        .collect();
    let out = h.inject_batch(&frames);
    assert_eq!(out.len(), 240, "every frame leaves once");
    // Ports in the order of their first frame, each port's frames in the
    // order they came.
    let mut order = Vec::new();
    for (k, (port, bytes)) in out.iter().enumerate() {
        if order.last() != Some(port) {
            order.push(*port);
        }
        let i = k % 80;
        let expected = dests.iter().position(|d| d.0 == *port).unwrap();
        let seq = u16::try_from(i * 3 + expected).unwrap();
        assert_eq!(&bytes[bytes.len() - 2..], &seq.to_be_bytes(), "port {port}");
    }
    assert_eq!(order, vec![B, C, UPLINK]);
    assert_eq!(h.switch.stats().port(B).tx_packets, 80);
}

#[test]
fn loading_a_batch_s_fdb_entries_learns_and_counts_nothing() {
    let mut h = harness();
    let frame = udp(remote(3), remote(4), ip(10, 0, 0, 3), ip(10, 0, 0, 4), b"x");
    let buf = PacketBuf::from_frame(&frame).unwrap();
    let (entries, rx) = (h.switch.fdb().len(), h.switch.stats().port(UPLINK));
    h.switch.prefetch(UPLINK, &buf);
    h.switch.prefetch(PortId(999), &buf);
    h.switch
        .prefetch(UPLINK, &PacketBuf::from_frame(&frame[..5]).unwrap());
    assert_eq!(h.switch.fdb().len(), entries, "nothing learned");
    assert_eq!(h.switch.stats().port(UPLINK), rx, "nothing counted");
    // The frame is then decided as if never loaded: its source is new.
    let d = h.inject(UPLINK, &frame);
    assert!(matches!(d.action, Action::Flood { .. }));
    assert_eq!(h.switch.fdb().len(), entries + 1);
}
