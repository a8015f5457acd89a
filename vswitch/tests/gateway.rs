//! The virtual gateway: ARP replies and ICMP echo replies, byte for byte.

mod common;

use common::*;
use vswitch::ids::MacAddr;
use vswitch::switch::{Action, DropReason, TraceEvent};
use vswitch::testing::SwitchHarness;

const GW_IP: [u8; 4] = [172, 17, 0, 1];

fn gw_ip() -> std::net::Ipv4Addr {
    GW_IP.into()
}

#[test]
fn answers_a_broadcast_arp_request_for_the_gateway() {
    let mut h = SwitchHarness::new(topology());
    let (d, trace) = h.inject_traced(A, &arp_request(mac_of(A), addr_of(A), gw_ip()));
    assert_eq!(d.action, Action::Reply(A));
    let expected = arp(GW_MAC, mac_of(A), 2, GW_MAC, gw_ip(), mac_of(A), addr_of(A));
    assert_eq!(d.out, vec![(A, expected)]);
    assert!(trace.events.contains(&TraceEvent::GatewayArpReply));
}

#[test]
fn answers_a_unicast_arp_refresh_and_an_arp_probe() {
    let mut h = SwitchHarness::new(topology());
    let refresh = arp(mac_of(B), GW_MAC, 1, mac_of(B), addr_of(B), GW_MAC, gw_ip());
    let d = h.inject(B, &refresh);
    assert_eq!(
        d.out,
        vec![(
            B,
            arp(GW_MAC, mac_of(B), 2, GW_MAC, gw_ip(), mac_of(B), addr_of(B))
        )]
    );

    // A probe (sender 0.0.0.0) for the gateway's address gets the reply
    // Linux sends: target address 0.0.0.0.
    let probe = arp(
        mac_of(C),
        MacAddr::BROADCAST,
        1,
        mac_of(C),
        ip(0, 0, 0, 0),
        MacAddr::ZERO,
        gw_ip(),
    );
    let d = h.inject(C, &probe);
    assert_eq!(
        d.out,
        vec![(
            C,
            arp(
                GW_MAC,
                mac_of(C),
                2,
                GW_MAC,
                gw_ip(),
                mac_of(C),
                ip(0, 0, 0, 0)
            )
        )]
    );
}

#[test]
fn each_network_answers_only_for_its_own_gateway() {
    let mut h = SwitchHarness::new(topology());
    // D on n1 asks for bridge's gateway address: not its gateway, so the
    // request is an ordinary broadcast on n1.
    let d = h.inject(D, &arp_request(mac_of(D), addr_of(D), gw_ip()));
    assert_eq!(d.ports(), vec![E, UPLINK1]);
    let d = h.inject(D, &arp_request(mac_of(D), addr_of(D), ip(172, 18, 0, 1)));
    assert_eq!(
        d.out,
        vec![(
            D,
            arp(
                GW1_MAC,
                mac_of(D),
                2,
                GW1_MAC,
                ip(172, 18, 0, 1),
                mac_of(D),
                addr_of(D)
            )
        )]
    );
}

#[test]
fn arp_for_other_hosts_is_switched_not_answered() {
    let mut h = SwitchHarness::new(topology());
    let d = h.inject(A, &arp_request(mac_of(A), addr_of(A), addr_of(B)));
    assert_eq!(d.ports(), vec![B, C, UPLINK]);
    // An ARP reply addressed to the gateway MAC is not for us to answer.
    let reply = arp(mac_of(A), GW_MAC, 2, mac_of(A), addr_of(A), GW_MAC, gw_ip());
    assert_eq!(
        h.inject(A, &reply).action,
        Action::Drop(DropReason::NoRoute)
    );
}

#[test]
fn answers_ping_to_the_gateway_with_a_valid_reply() {
    let mut h = SwitchHarness::new(topology());
    let data: Vec<u8> = (0..56u8).collect();
    let request = echo_request(mac_of(A), GW_MAC, addr_of(A), gw_ip(), 0x1234, 7, &data);
    let (d, trace) = h.inject_traced(A, &request);
    assert_eq!(d.action, Action::Reply(A));
    assert!(trace.events.contains(&TraceEvent::GatewayEchoReply));
    let expected = echo_reply(GW_MAC, mac_of(A), gw_ip(), addr_of(A), 0x1234, 7, &data);
    assert_eq!(d.out, vec![(A, expected.clone())]);

    // Independently of the byte comparison, both checksums verify.
    let sliced = etherparse::SlicedPacket::from_ethernet(&d.out[0].1).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ipv4)) = sliced.net else {
        panic!("not IPv4")
    };
    let hdr = ipv4.header().to_header();
    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = sliced.transport else {
        panic!("not ICMP")
    };
    let icmp_hdr = icmp.header();
    assert_eq!(
        icmp_hdr.checksum,
        icmp_hdr.icmp_type.calc_checksum(icmp.payload())
    );
}

#[test]
fn answers_odd_length_pings_and_requests_with_any_ttl() {
    let mut h = SwitchHarness::new(topology());
    for (ttl, len) in [(1u8, 0usize), (255, 1), (17, 1471)] {
        let data = vec![0xa5; len];
        let b = etherparse::PacketBuilder::ethernet2(mac_of(B).0, GW_MAC.0)
            .ipv4(addr_of(B).octets(), GW_IP, ttl)
            .icmpv4_echo_request(9, 9);
        let mut request = Vec::new();
        b.write(&mut request, &data).unwrap();
        let d = h.inject(B, &request);
        let expected = echo_reply(GW_MAC, mac_of(B), gw_ip(), addr_of(B), 9, 9, &data);
        assert_eq!(d.out, vec![(B, expected)], "ttl {ttl} len {len}");
    }
}

#[test]
fn bad_checksums_to_the_gateway_are_dropped() {
    let mut h = SwitchHarness::new(topology());
    let good = echo_request(mac_of(A), GW_MAC, addr_of(A), gw_ip(), 1, 1, b"abcd");
    let mut bad_ip = good.clone();
    bad_ip[14 + 10] ^= 0xff;
    assert_eq!(
        h.inject(A, &bad_ip).action,
        Action::Drop(DropReason::BadChecksum)
    );
    let mut bad_icmp = good.clone();
    let last = bad_icmp.len() - 1;
    bad_icmp[last] ^= 0xff;
    assert_eq!(
        h.inject(A, &bad_icmp).action,
        Action::Drop(DropReason::BadChecksum)
    );
    assert_eq!(
        h.switch.stats().port(A).drops.get(DropReason::BadChecksum),
        2
    );
}

#[test]
fn fragments_and_other_traffic_to_the_gateway_go_nowhere_yet() {
    let mut h = SwitchHarness::new(topology());
    // A first fragment of a large ping: the gateway does not reassemble.
    let mut iph = etherparse::Ipv4Header::new(
        0,
        64,
        etherparse::IpNumber::ICMP,
        addr_of(A).octets(),
        GW_IP,
    )
    .unwrap();
    iph.dont_fragment = false;
    iph.more_fragments = true;
    let builder = etherparse::PacketBuilder::ethernet2(mac_of(A).0, GW_MAC.0)
        .ip(etherparse::IpHeaders::Ipv4(iph, Default::default()))
        .icmpv4_echo_request(1, 1);
    let mut frag = Vec::new();
    builder.write(&mut frag, &[0; 64]).unwrap();
    assert_eq!(frag[14 + 6] & 0x20, 0x20, "MF set");
    assert_eq!(
        h.inject(A, &frag).action,
        Action::Drop(DropReason::Fragment)
    );

    // UDP to the gateway address, and traffic routed through the gateway
    // to elsewhere: the L3 stage has nothing for them yet.
    let to_gw = udp(mac_of(A), GW_MAC, addr_of(A), gw_ip(), b"x");
    let (d, trace) = h.inject_traced(A, &to_gw);
    assert_eq!(d.action, Action::Drop(DropReason::NoRoute));
    assert!(trace.events.contains(&TraceEvent::ToL3));
    let routed = udp(mac_of(A), GW_MAC, addr_of(A), ip(192, 0, 2, 1), b"x");
    assert_eq!(
        h.inject(A, &routed).action,
        Action::Drop(DropReason::NoRoute)
    );
    // A container on another network: isolation, not routing.
    let across = udp(mac_of(A), GW_MAC, addr_of(A), addr_of(D), b"x");
    assert_eq!(
        h.inject(A, &across).action,
        Action::Drop(DropReason::NoRoute)
    );
    assert_eq!(h.switch.stats().port(A).drops.get(DropReason::NoRoute), 3);
}

#[test]
fn truncated_ipv4_to_the_gateway_is_malformed() {
    let mut h = SwitchHarness::new(topology());
    let mut request = echo_request(mac_of(A), GW_MAC, addr_of(A), gw_ip(), 1, 1, b"abcd");
    request.truncate(14 + 19);
    assert_eq!(
        h.inject(A, &request).action,
        Action::Drop(DropReason::Malformed)
    );
}
