//! Frame builders for the packet-level tests. Every frame is encoded with
//! etherparse, independently of the smoltcp views the switch uses.
#![allow(dead_code, unreachable_pub)]

use std::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, PacketBuilder};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{Gateway, NetworkConfig, PortConfig, PortRole, SwitchConfig};

pub const BRIDGE: NetworkId = NetworkId(0);
pub const N1: NetworkId = NetworkId(1);
pub const NOICC: NetworkId = NetworkId(2);

/// Containers and an uplink on `bridge` (172.17/16).
pub const A: PortId = PortId(1);
pub const B: PortId = PortId(2);
pub const C: PortId = PortId(3);
pub const UPLINK: PortId = PortId(4);
/// Containers and an uplink on n1 (172.18/16).
pub const D: PortId = PortId(5);
pub const E: PortId = PortId(6);
pub const UPLINK1: PortId = PortId(7);
/// Containers on a network with ICC off and MTU 1400 (172.19/16).
pub const F: PortId = PortId(8);
pub const G: PortId = PortId(9);

pub const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0x5e, 0x00, 0x00, 0x01]);
pub const GW1_MAC: MacAddr = MacAddr([0x02, 0x42, 0x5e, 0x00, 0x00, 0x02]);
pub const GW2_MAC: MacAddr = MacAddr([0x02, 0x42, 0x5e, 0x00, 0x00, 0x03]);

/// Docker's endpoint MAC: 02:42 + the IPv4 address.
pub fn docker_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// The address of a container port in the standard topology.
pub fn addr_of(port: PortId) -> Ipv4Addr {
    match port {
        A => ip(172, 17, 0, 2),
        B => ip(172, 17, 0, 3),
        C => ip(172, 17, 0, 4),
        D => ip(172, 18, 0, 2),
        E => ip(172, 18, 0, 3),
        F => ip(172, 19, 0, 2),
        G => ip(172, 19, 0, 3),
        _ => panic!("{port} is not a container port"),
    }
}

pub fn mac_of(port: PortId) -> MacAddr {
    docker_mac(addr_of(port))
}

fn container(port: PortId, network: NetworkId) -> PortConfig {
    PortConfig {
        id: port,
        network,
        role: PortRole::Container {
            mac: mac_of(port),
            ipv4: Some(addr_of(port)),
        },
    }
}

/// Three networks: `bridge` (A, B, C, UPLINK), n1 (D, E, UPLINK1) and a
/// network with ICC off and MTU 1400 (F, G).
pub fn topology() -> SwitchConfig {
    let bridge = NetworkConfig {
        gateway: Some(Gateway {
            mac: GW_MAC,
            ip: ip(172, 17, 0, 1),
        }),
        ..NetworkConfig::new(BRIDGE)
    };
    let n1 = NetworkConfig {
        gateway: Some(Gateway {
            mac: GW1_MAC,
            ip: ip(172, 18, 0, 1),
        }),
        ..NetworkConfig::new(N1)
    };
    let noicc = NetworkConfig {
        gateway: Some(Gateway {
            mac: GW2_MAC,
            ip: ip(172, 19, 0, 1),
        }),
        icc: false,
        mtu: 1400,
        ..NetworkConfig::new(NOICC)
    };
    let uplink = |id, network| PortConfig {
        id,
        network,
        role: PortRole::Uplink,
    };
    SwitchConfig::new(
        1,
        [bridge, n1, noicc],
        [
            container(A, BRIDGE),
            container(B, BRIDGE),
            container(C, BRIDGE),
            uplink(UPLINK, BRIDGE),
            container(D, N1),
            container(E, N1),
            uplink(UPLINK1, N1),
            container(F, NOICC),
            container(G, NOICC),
        ],
    )
    .expect("the test topology is valid")
}

/// An Ethernet frame with an arbitrary payload.
pub fn eth(src: MacAddr, dst: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let hdr = Ethernet2Header {
        source: src.0,
        destination: dst.0,
        ether_type: EtherType(ethertype),
    };
    let mut out = hdr.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A UDP datagram between two hosts.
pub fn udp(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .udp(40000, 5000);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// A UDP datagram from one container port of the topology to another.
pub fn udp_between(from: PortId, to: PortId) -> Vec<u8> {
    udp(
        mac_of(from),
        mac_of(to),
        addr_of(from),
        addr_of(to),
        b"hello",
    )
}

/// An ICMP echo request.
pub fn echo_request(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    id: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .icmpv4_echo_request(id, seq);
    let mut out = Vec::new();
    builder
        .write(&mut out, data)
        .expect("writing to a Vec cannot fail");
    out
}

/// An ICMP echo reply as the gateway sends it (TTL 64).
pub fn echo_reply(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,

    id: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .icmpv4_echo_reply(id, seq);
    let mut out = Vec::new();
    builder
        .write(&mut out, data)
        .expect("writing to a Vec cannot fail");
    out
}

/// An ARP packet over Ethernet.
pub fn arp(
    eth_src: MacAddr,
    eth_dst: MacAddr,
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let pkt = ArpEthIpv4Packet {
        operation: ArpOperation(op),
        sender_mac: sha.0,
        sender_ipv4: spa.octets(),
        target_mac: tha.0,
        target_ipv4: tpa.octets(),
    };
    let builder = PacketBuilder::ethernet2(eth_src.0, eth_dst.0).arp(pkt.into());
    let mut out = Vec::new();
    builder
        .write(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// A broadcast ARP request from `sha`/`spa` asking for `tpa`.
pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(sha, MacAddr::BROADCAST, 1, sha, spa, MacAddr::ZERO, tpa)
}
