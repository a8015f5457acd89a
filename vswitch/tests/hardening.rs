//! A hostile container at the packet level: link-local control frames,
//! IPv6 where there is none, router advertisements, neighbour spoofing,
//! floods and forged offload metadata. Frames are built with etherparse.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use etherparse::{Icmpv6Type, PacketBuilder};
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{
    Action, DropReason, FdbConfig, FloodLimit, NetworkConfig, PortConfig, PortRole, Switch,
    SwitchConfig,
};
use vswitch::testing::SwitchHarness;

const V6: NetworkId = NetworkId(9);
const P: PortId = PortId(1);
const Q: PortId = PortId(2);
const UP: PortId = PortId(3);

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 10, 0, 0, n])
}

/// The link-local address a container derives from its MAC.
fn ll(n: u8) -> Ipv6Addr {
    format!("fe80::42:aff:fe00:{n:x}").parse().unwrap()
}

/// A network with IPv6: containers P (…:1) and Q (…:2), and an uplink.
fn v6_net(limit: FloodLimit) -> SwitchConfig {
    let port = |id, n| PortConfig {
        id,
        network: V6,
        role: PortRole::Container {
            mac: mac(n),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, n)),
        },
    };
    SwitchConfig::new(
        1,
        [NetworkConfig {
            ipv6: true,
            flood_limit: limit,
            ..NetworkConfig::new(V6)
        }],
        [
            port(P, 1),
            port(Q, 2),
            PortConfig {
                id: UP,
                network: V6,
                role: PortRole::Uplink,
            },
        ],
    )
    .unwrap()
}

fn icmpv6(
    src_mac: MacAddr,
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    t: Icmpv6Type,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6(t)
        .write(&mut out, body)
        .unwrap();
    out
}

fn udp6(src_mac: MacAddr, dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(1000, 2000)
        .write(&mut out, b"v6")
        .unwrap();
    out
}

const ALL_NODES: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A Router Advertisement: hop limit, flags, lifetime 1800 s, no options.
fn ra(from: MacAddr, src: Ipv6Addr) -> Vec<u8> {
    icmpv6(
        from,
        ALL_NODES,
        src,
        "ff02::1".parse().unwrap(),
        Icmpv6Type::Unknown {
            type_u8: 134,
            code_u8: 0,
            bytes5to8: [64, 0, 0x07, 0x08],
        },
        &[0; 8],
    )
}

/// A Neighbor Advertisement for `target`, with a target link-layer option
/// naming `option_mac`.
fn na(from: MacAddr, src: Ipv6Addr, target: Ipv6Addr, option_mac: MacAddr) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&option_mac.0);
    icmpv6(
        from,
        ALL_NODES,
        src,
        "ff02::1".parse().unwrap(),
        Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0x20, 0, 0, 0],
        },
        &body,
    )
}

fn drop_count(h: &SwitchHarness, port: PortId, reason: DropReason) -> u64 {
    h.switch.stats().port(port).drops.get(reason)
}

#[test]
fn link_local_control_frames_are_never_forwarded() {
    let mut h = SwitchHarness::new(topology());
    for port in [A, UPLINK] {
        let src = if port == A {
            mac_of(A)
        } else {
            MacAddr([2, 0, 0, 0, 0, 0x77])
        };
        for last in [0x00, 0x02, 0x03, 0x0e] {
            let dst = MacAddr([1, 0x80, 0xc2, 0, 0, last]);
            let d = h.inject(port, &eth(src, dst, 0x88cc, &[0; 46]));
            assert_eq!(d.action, Action::Drop(DropReason::LinkLocalControl));
            assert!(d.out.is_empty());
        }
    }
    assert_eq!(drop_count(&h, A, DropReason::LinkLocalControl), 4);
    // Just past the reserved range, an ordinary group address floods.
    let d = h.inject(
        A,
        &eth(
            mac_of(A),
            MacAddr([1, 0x80, 0xc2, 0, 0, 0x10]),
            0x88b5,
            &[0; 46],
        ),
    );
    assert_eq!(d.ports(), [B, C, UPLINK]);
}

#[test]
fn ipv6_is_dropped_and_counted_on_an_ipv4_only_network() {
    let mut h = SwitchHarness::new(topology());
    let ll_a: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
    let frames = [
        udp6(mac_of(A), ALL_NODES, ll_a, "ff02::1".parse().unwrap()),
        udp6(
            mac_of(A),
            mac_of(B).0,
            ll_a,
            "fe80::42:acff:fe11:3".parse().unwrap(),
        ),
        ra(mac_of(A), ll_a),
        eth(mac_of(A), mac_of(B), 0x86dd, &[0x60, 0, 0]),
    ];
    for f in &frames {
        let d = h.inject(A, f);
        assert_eq!(d.action, Action::Drop(DropReason::Ipv6Disabled));
    }
    assert_eq!(drop_count(&h, A, DropReason::Ipv6Disabled), 4);
    // IPv4 on the same port is untouched.
    assert_eq!(h.inject(A, &udp_between(A, B)).ports(), [B]);
}

#[test]
fn router_advertisements_and_redirects_from_containers_are_dropped() {
    let mut h = SwitchHarness::new(v6_net(FloodLimit::DEFAULT));
    let d = h.inject(P, &ra(mac(1), ll(1)));
    assert_eq!(d.action, Action::Drop(DropReason::RouterAdvertisement));
    assert!(d.out.is_empty());

    // The same RA behind a destination options header (RFC 7113 evasion).
    let mut hidden = ra(mac(1), ll(1));
    let ip = 14;
    hidden[ip + 6] = 60; // next header: destination options
    let icmp = hidden.split_off(ip + 40);
    hidden.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]); // → ICMPv6, PadN
    hidden.extend_from_slice(&icmp);
    let plen = u16::try_from(hidden.len() - ip - 40).unwrap();
    hidden[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    let d = h.inject(P, &hidden);
    assert_eq!(d.action, Action::Drop(DropReason::RouterAdvertisement));

    let redirect = icmpv6(
        mac(1),
        mac(2).0,
        ll(1),
        ll(2),
        Icmpv6Type::Unknown {
            type_u8: 137,
            code_u8: 0,
            bytes5to8: [0; 4],
        },
        &[0; 32],
    );
    assert_eq!(
        h.inject(P, &redirect).action,
        Action::Drop(DropReason::Redirect)
    );
    assert_eq!(drop_count(&h, P, DropReason::RouterAdvertisement), 2);

    // A trusted uplink may carry the network's real router.
    assert_eq!(
        h.inject(UP, &ra(MacAddr([2, 0, 0, 0, 0, 0x99]), ll(0x99)))
            .ports(),
        [P, Q]
    );
}

#[test]
fn neighbour_discovery_and_ipv6_sources_are_checked_against_the_port() {
    let mut h = SwitchHarness::new(v6_net(FloodLimit::DEFAULT));
    // Its own address and MAC: delivered.
    assert_eq!(
        h.inject(P, &na(mac(1), ll(1), ll(1), mac(1))).ports(),
        [Q, UP]
    );
    // Claiming the neighbour's address, or another MAC for its own.
    let d = h.inject(P, &na(mac(1), ll(1), ll(2), mac(1)));
    assert_eq!(d.action, Action::Drop(DropReason::NeighborSpoofed));
    let d = h.inject(P, &na(mac(1), ll(1), ll(1), mac(2)));
    assert_eq!(d.action, Action::Drop(DropReason::NeighborSpoofed));
    // The neighbour's source address.
    let d = h.inject(P, &udp6(mac(1), mac(2).0, ll(2), ll(2)));
    assert_eq!(d.action, Action::Drop(DropReason::SrcIpSpoofed));
    // `::` only for duplicate address detection.
    let dad = icmpv6(
        mac(1),
        [0x33, 0x33, 0xff, 0, 0, 1],
        Ipv6Addr::UNSPECIFIED,
        "ff02::1:ff00:1".parse().unwrap(),
        Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        },
        &ll(1).octets(),
    );
    assert_eq!(h.inject(P, &dad).ports(), [Q, UP]);
    let d = h.inject(P, &udp6(mac(1), mac(2).0, Ipv6Addr::UNSPECIFIED, ll(2)));
    assert_eq!(d.action, Action::Drop(DropReason::SrcIpSpoofed));
    // A global address with the port's interface identifier is its own.
    let global: Ipv6Addr = "fd00::42:aff:fe00:1".parse().unwrap();
    assert_eq!(
        h.inject(P, &udp6(mac(1), mac(2).0, global, ll(2))).ports(),
        [Q]
    );
    assert_eq!(drop_count(&h, P, DropReason::NeighborSpoofed), 2);
    assert_eq!(drop_count(&h, P, DropReason::SrcIpSpoofed), 2);
}

#[test]
fn floods_are_rate_limited_per_port_and_counted() {
    let limit = FloodLimit { rate: 10, burst: 5 };
    let mut h = SwitchHarness::new(v6_net(limit));
    let unknown = |n: u8| {
        udp(
            mac(1),
            MacAddr([2, 0, 0, 0, 9, n]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 99),
            b"x",
        )
    };
    let flooded = |h: &mut SwitchHarness, count: u8| {
        (0..count)
            .filter(|&n| !h.inject(P, &unknown(n)).out.is_empty())
            .count()
    };
    assert_eq!(flooded(&mut h, 20), 5, "the burst");
    assert_eq!(drop_count(&h, P, DropReason::FloodRateLimited), 15);
    h.advance(Duration::from_millis(500));
    assert_eq!(flooded(&mut h, 20), 5, "half a second at 10/s");
    // Another port has its own bucket; known unicast is never limited.
    assert_eq!(
        h.inject(
            Q,
            &udp(
                mac(2),
                MacAddr([2, 0, 0, 0, 9, 1]),
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 99),
                b"x"
            )
        )
        .out
        .len(),
        2
    );
    let to_q = udp(
        mac(1),
        mac(2),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        b"x",
    );
    for _ in 0..20 {
        assert_eq!(h.inject(P, &to_q).ports(), [Q]);
    }
    // Uplinks are trusted links and not limited.
    for n in 0..20 {
        let f = eth(
            MacAddr([2, 0, 0, 0, 0, 0x77]),
            MacAddr([2, 0, 0, 0, 8, n]),
            0x0800,
            &[0; 46],
        );
        assert_eq!(h.inject(UP, &f).out.len(), 2);
    }
}

fn process_with(vnet: VnetHdr, frame: &[u8]) -> (Action, VnetHdr) {
    let mut sw = Switch::new(FdbConfig::default());
    let now = Instant::now();
    sw.apply_config(now, Arc::new(topology()));
    let mut buf = PacketBuf::from_frame(frame).unwrap();
    buf.vnet = vnet;
    let action = sw.process(now, A, &mut buf);
    (action, buf.vnet)
}

#[test]
fn vnet_headers_are_checked_and_cleaned_at_ingress() {
    let frame = udp_between(A, B);
    // UDP checksum: starts at the UDP header (14 + 20), field at +6.
    let partial = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM | VnetHdr::F_DATA_VALID,
        csum_start: 34,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let (action, vnet) = process_with(partial, &frame);
    assert_eq!(action, Action::Output(B));
    assert_eq!(
        vnet.flags,
        VnetHdr::F_NEEDS_CSUM,
        "DATA_VALID is not passed on"
    );
    assert_eq!((vnet.csum_start, vnet.csum_offset), (34, 6));

    // A partial checksum aimed elsewhere (at the IPv4 header, say).
    let wrong = VnetHdr {
        csum_start: 14,
        csum_offset: 10,
        ..partial
    };
    assert_eq!(
        process_with(wrong, &frame).0,
        Action::Drop(DropReason::BadVnetHeader)
    );
    // TCP segmentation asked for a UDP packet.
    let gso = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 100,
        hdr_len: 42,
        ..partial
    };
    assert_eq!(
        process_with(gso, &frame).0,
        Action::Drop(DropReason::BadVnetHeader)
    );
}
