//! Encapsulation and decapsulation, frame in and frames out, checked
//! against etherparse as an independent encoder and decoder.

use std::net::Ipv4Addr;
use std::time::Instant;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IpNumber, Ipv4Header,
    PacketBuilder, SlicedPacket, TransportSlice, UdpHeader,
};
use fabric::arp::ArpVerdict;
use fabric::decap::{DecapConfig, DropReason};
use fabric::encap::{DfPolicy, EncapError, OUTER_LEN};
use fabric::vtep::{NetworkConfig, TableConfig};
use fabric::{
    Decapsulator, EncapConfig, Encapsulator, EthernetAddress, PeerEvent, RemoteEndpoint, SliceBuf,
    Vni, VtepTable,
};
use proptest::prelude::*;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const NEXT_HOP: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const C1: [u8; 6] = [0x02, 0x42, 10, 0, 0, 2];
const C2: [u8; 6] = [0x02, 0x42, 10, 0, 0, 3];

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

/// A UDP datagram from C1 (10.0.0.2) to C2 (10.0.0.3), `len` bytes in all.
fn inner_udp(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let payload = vec![0x5a; len - 42];
    PacketBuilder::ethernet2(C1, C2)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
        .udp(40000, 53)
        .write(&mut v, &payload)
        .unwrap();
    assert_eq!(v.len(), len);
    v
}

fn vxlan_header(vni: u32) -> [u8; 8] {
    let b = vni.to_be_bytes();
    [0x08, 0, 0, 0, b[1], b[2], b[3], 0]
}

/// The outer frame as etherparse writes it, field by field.
#[derive(Clone)]
struct Outer {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    df: bool,
    more_frags: bool,
    proto: IpNumber,
    sport: u16,
    dport: u16,
    udp_checksum: bool,
    payload: Vec<u8>,
}

impl Outer {
    fn new(payload: Vec<u8>) -> Self {
        Self {
            src: REMOTE,
            dst: LOCAL,
            ident: 0,
            df: false,
            more_frags: false,
            proto: IpNumber::UDP,
            sport: 50000,
            dport: 4789,
            udp_checksum: false,
            payload,
        }
    }

    fn vxlan(vni: u32, inner: &[u8]) -> Self {
        let mut p = vxlan_header(vni).to_vec();
        p.extend_from_slice(inner);
        Self::new(p)
    }

    fn build(&self) -> Vec<u8> {
        let udp_len = u16::try_from(8 + self.payload.len()).unwrap();
        let mut ip = Ipv4Header::new(
            udp_len,
            64,
            self.proto,
            self.src.octets(),
            self.dst.octets(),
        )
        .unwrap();
        ip.identification = self.ident;
        ip.dont_fragment = self.df;
        ip.more_fragments = self.more_frags;
        ip.header_checksum = ip.calc_header_checksum();
        let mut udp = UdpHeader {
            source_port: self.sport,
            destination_port: self.dport,
            length: udp_len,
            checksum: 0,
        };
        if self.udp_checksum {
            udp.checksum = udp.calc_checksum_ipv4(&ip, &self.payload).unwrap();
        }
        let eth = Ethernet2Header {
            source: NEXT_HOP,
            destination: LOCAL_MAC,
            ether_type: EtherType::IPV4,
        };
        let mut v = eth.to_bytes().to_vec();
        v.extend_from_slice(&ip.to_bytes());
        v.extend_from_slice(&udp.to_bytes());
        v.extend_from_slice(&self.payload);
        v
    }
}

fn encapsulator(df: DfPolicy) -> Encapsulator {
    let mut c = EncapConfig::new(LOCAL, EthernetAddress(LOCAL_MAC));
    c.df = df;
    c.flow_seed = 0x1234_5678;
    Encapsulator::new(c)
}

/// A table where REMOTE is a VTEP of learning network 4096 and of
/// control-plane network 4097 (which has C1 behind REMOTE).
fn table() -> VtepTable {
    let mut t = VtepTable::new(TableConfig {
        local_vtep: Some(LOCAL),
        ..TableConfig::default()
    });
    t.add_network(NetworkConfig::learning(vni(4096)));
    t.add_network(NetworkConfig::control_plane(vni(4097)));
    let now = Instant::now();
    t.apply(
        now,
        &PeerEvent::VtepUp {
            vtep: REMOTE,
            name: "host-b".into(),
        },
    )
    .unwrap();
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4096),
            vtep: REMOTE,
        },
    )
    .unwrap();
    let ep = RemoteEndpoint {
        vni: vni(4097),
        mac: EthernetAddress(C1),
        ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        vtep: REMOTE,
    };
    t.apply(now, &PeerEvent::EndpointAdd(ep)).unwrap();
    t
}

/// What the encapsulator should write, from etherparse.
fn expected_encap(enc: &Encapsulator, vni_: u32, inner: &[u8], ident: u16, df: bool) -> Vec<u8> {
    let mut o = Outer::vxlan(vni_, inner);
    o.src = LOCAL;
    o.dst = REMOTE;
    o.ident = ident;
    o.df = df;
    o.sport = enc.flows().source_port(inner);
    let mut v = o.build();
    // Outer Ethernet from us to the next hop.
    v[0..6].copy_from_slice(&NEXT_HOP);
    v[6..12].copy_from_slice(&LOCAL_MAC);
    v
}

fn encap_buf(enc: &Encapsulator, t: &fabric::OuterTemplate, vni_: u32, inner: &[u8]) -> Vec<u8> {
    let mut storage = vec![0u8; 128 + inner.len()];
    let mut buf = SliceBuf::with_frame(&mut storage, inner).unwrap();
    enc.encapsulate(t, vni(vni_), &mut buf).unwrap();
    fabric::Headroom::frame(&buf).to_vec()
}

#[test]
fn encap_is_byte_exact_with_etherparse() {
    let enc = encapsulator(DfPolicy::Unset);
    let t = enc.template(REMOTE, EthernetAddress(NEXT_HOP));
    for (i, len) in [60usize, 64, 1514, 9014].into_iter().enumerate() {
        let inner = inner_udp(len);
        let got = encap_buf(&enc, &t, 4097, &inner);
        let ident = u16::try_from(i).unwrap();
        assert_eq!(
            got,
            expected_encap(&enc, 4097, &inner, ident, false),
            "{len}-byte inner frame"
        );
    }
    // DF set: identification zero, as for atomic datagrams.
    let enc = encapsulator(DfPolicy::Set);
    let t = enc.template(REMOTE, EthernetAddress(NEXT_HOP));
    let inner = inner_udp(100);
    for _ in 0..2 {
        assert_eq!(
            encap_buf(&enc, &t, 0xab_cdef, &inner),
            expected_encap(&enc, 0xab_cdef, &inner, 0, true)
        );
    }
}

#[test]
fn encap_into_matches_in_place_and_errors_are_clear() {
    let enc = encapsulator(DfPolicy::Set);
    let t = enc.template(REMOTE, EthernetAddress(NEXT_HOP));
    let inner = inner_udp(64);
    let mut out = [0u8; 200];
    let n = enc.encapsulate_into(&t, vni(7), &inner, &mut out).unwrap();
    assert_eq!(&out[..n], &encap_buf(&enc, &t, 7, &inner)[..]);
    assert_eq!(
        enc.encapsulate_into(&t, vni(7), &inner, &mut out[..100]),
        Err(EncapError::OutputTooSmall {
            need: 114,
            have: 100
        })
    );
    let mut storage = vec![0u8; 64 + 49];
    let mut buf = SliceBuf::with_frame(&mut storage, &inner).unwrap();
    assert_eq!(
        enc.encapsulate(&t, vni(7), &mut buf),
        Err(EncapError::NoHeadroom)
    );
    assert_eq!(
        fabric::Headroom::frame(&buf),
        &inner[..],
        "a refused frame is left as it was"
    );
    let mut storage = vec![0u8; 100];
    let mut buf = SliceBuf::with_frame(&mut storage, &inner[..13]).unwrap();
    assert_eq!(
        enc.encapsulate(&t, vni(7), &mut buf),
        Err(EncapError::InnerTooShort { len: 13 })
    );
    let big = vec![0u8; fabric::encap::MAX_INNER_LEN + 1];
    let mut out = vec![0u8; big.len() + 64];
    assert_eq!(
        enc.encapsulate_into(&t, vni(7), &big, &mut out),
        Err(EncapError::InnerTooLong { len: big.len() })
    );
}

#[test]
fn decap_accepts_what_etherparse_encodes() {
    let mut t = table();
    let mut d = Decapsulator::new(DecapConfig {
        local_ip: Some(LOCAL),
        ..DecapConfig::default()
    });
    let inner = inner_udp(200);
    for udp_checksum in [false, true] {
        let mut o = Outer::vxlan(4097, &inner);
        o.udp_checksum = udp_checksum;
        let frame = o.build();
        let got = d.decap_frame(&mut t, Instant::now(), &frame).unwrap();
        assert_eq!(got.vni, vni(4097));
        assert_eq!(got.vtep, REMOTE);
        assert_eq!(&frame[got.inner], &inner[..]);
    }
    // In place, with Ethernet padding behind a short outer frame cut off.
    let small = &inner_udp(60)[..];
    let mut frame = Outer::vxlan(4096, &small[..14]).build();
    frame.extend_from_slice(&[0xee; 4]);
    let mut storage = frame.clone();
    let len = storage.len();
    let mut buf = SliceBuf::new(&mut storage, 0, len).unwrap();
    assert_eq!(
        d.decap_in_place(&mut t, Instant::now(), &mut buf),
        Ok((vni(4096), REMOTE))
    );
    assert_eq!(fabric::Headroom::frame(&buf), &small[..14]);
    // A datagram from a UDP socket.
    let mut payload = vxlan_header(4097).to_vec();
    payload.extend_from_slice(&inner);
    let got = d
        .decap_datagram(&mut t, Instant::now(), REMOTE, &payload)
        .unwrap();
    assert_eq!(&payload[got.inner], &inner[..]);
    assert_eq!(d.drops().total(), 0);
}

/// A frame that hits `reason`, and the decapsulator config to use.
fn case(reason: DropReason) -> (Vec<u8>, DecapConfig) {
    let inner = inner_udp(100);
    let ok = Outer::vxlan(4097, &inner);
    let cfg = DecapConfig::default();
    let with = |f: &dyn Fn(&mut Outer)| {
        let mut o = ok.clone();
        f(&mut o);
        o.build()
    };
    let frame = match reason {
        DropReason::OuterTruncated => ok.build()[..13].to_vec(),
        DropReason::OuterNotIpv4 => {
            let mut f = ok.build();
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f
        }
        DropReason::OuterIpMalformed => {
            let mut f = ok.build();
            f.truncate(14 + 30); // total length now exceeds the packet
            f
        }
        DropReason::OuterIpChecksum => {
            let mut f = ok.build();
            f[14 + 10] ^= 0x01;
            f
        }
        DropReason::OuterFragment => with(&|o| o.more_frags = true),
        DropReason::OuterNotUdp => with(&|o| o.proto = IpNumber::TCP),
        DropReason::OuterNotLocal => {
            return (
                with(&|o| o.dst = Ipv4Addr::new(192, 0, 2, 77)),
                DecapConfig {
                    local_ip: Some(LOCAL),
                    ..cfg
                },
            );
        }
        DropReason::OuterUdpMalformed => {
            let mut f = ok.build();
            f[34 + 4..34 + 6].copy_from_slice(&7u16.to_be_bytes()); // UDP length below its header
            f
        }
        DropReason::OuterUdpChecksum => {
            let mut f = with(&|o| o.udp_checksum = true);
            let last = f.len() - 1;
            f[last] ^= 0xff;
            f
        }
        DropReason::WrongPort => with(&|o| o.dport = 4790),
        DropReason::HeaderTruncated => with(&|o| o.payload.truncate(7)),
        DropReason::MissingIFlag => with(&|o| o.payload[0] = 0),
        DropReason::ReservedBits => with(&|o| o.payload[7] = 1),
        DropReason::UnknownVni => with(&|o| o.payload[6] = 9),
        DropReason::UnknownVtep => with(&|o| o.src = STRANGER),
        DropReason::InnerTruncated => with(&|o| o.payload.truncate(8 + 13)),
        DropReason::InnerTooLong => with(&|o| o.payload.resize(8 + 1469, 0)),
        DropReason::InnerBadSource => with(&|o| o.payload[8 + 6] = 0x03),
        DropReason::SourceNotOwned => with(&|o| o.payload[8 + 11] = 0x99), // a MAC nobody published
    };
    (frame, cfg)
}

#[test]
fn every_drop_reason_is_counted() {
    let mut names = std::collections::HashSet::new();
    for reason in DropReason::ALL {
        assert!(
            names.insert(reason.as_str()),
            "duplicate name {}",
            reason.as_str()
        );
        let (frame, cfg) = case(reason);
        let mut t = table();
        let mut d = Decapsulator::new(cfg);
        assert_eq!(
            d.decap_frame(&mut t, Instant::now(), &frame),
            Err(reason),
            "{}",
            reason.as_str()
        );
        assert_eq!(d.drops().get(reason), 1, "{}", reason.as_str());
        assert_eq!(d.drops().total(), 1, "{}", reason.as_str());
        // Drops after the outer headers are charged to a known sender.
        let charged = t
            .snapshot(Instant::now(), None)
            .iter()
            .map(|s| s.stats.drops)
            .sum::<u64>();
        let past_outer = reason as usize >= DropReason::HeaderTruncated as usize;
        let known_sender = reason != DropReason::UnknownVtep;
        assert_eq!(
            charged,
            u64::from(past_outer && known_sender),
            "{}",
            reason.as_str()
        );
    }
    assert_eq!(names.len(), DropReason::COUNT);
}

#[test]
fn learning_network_learns_and_control_plane_network_checks_owner() {
    let mut t = table();
    let mut d = Decapsulator::default();
    let now = Instant::now();
    let inner = inner_udp(80); // source C1
    d.decap_frame(&mut t, now, &Outer::vxlan(4096, &inner).build())
        .unwrap();
    assert_eq!(t.lookup(now, vni(4096), EthernetAddress(C1)), Some(REMOTE));
    // In 4097 the control plane places C1 behind REMOTE: from REMOTE it
    // passes, from another member VTEP it is a spoof.
    d.decap_frame(&mut t, now, &Outer::vxlan(4097, &inner).build())
        .unwrap();
    let other = Ipv4Addr::new(192, 0, 2, 3);
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: other,
        },
    )
    .unwrap();
    let mut o = Outer::vxlan(4097, &inner);
    o.src = other;
    assert_eq!(
        d.decap_frame(&mut t, now, &o.build()),
        Err(DropReason::SourceNotOwned)
    );
}

#[test]
fn arp_suppression_replies_in_place_byte_exact() {
    let t = table();
    let requester_ip = [10, 0, 0, 9];
    let requester_mac = [0x02, 0x42, 10, 0, 0, 9];
    let arp = |op, smac, sip, tmac, tip| ArpEthIpv4Packet {
        operation: op,
        sender_mac: smac,
        sender_ipv4: sip,
        target_mac: tmac,
        target_ipv4: tip,
    };
    let frame = |dst, src, a: ArpEthIpv4Packet| {
        let mut v = Ethernet2Header {
            source: src,
            destination: dst,
            ether_type: EtherType::ARP,
        }
        .to_bytes()
        .to_vec();
        v.extend_from_slice(&a.to_bytes());
        v.resize(60, 0); // minimum frame, zero padded, as a kernel sends it
        v
    };
    let request = frame(
        [0xff; 6],
        requester_mac,
        arp(
            ArpOperation::REQUEST,
            requester_mac,
            requester_ip,
            [0; 6],
            [10, 0, 0, 2],
        ),
    );
    let mut f = request.clone();
    assert_eq!(
        t.suppress_arp(vni(4097), &mut f),
        ArpVerdict::Replied {
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: EthernetAddress(C1)
        }
    );
    let reply = frame(
        requester_mac,
        C1,
        arp(
            ArpOperation::REPLY,
            C1,
            [10, 0, 0, 2],
            requester_mac,
            requester_ip,
        ),
    );
    assert_eq!(f, reply);

    // Unknown address, other network, gratuitous ARP, a reply, not ARP,
    // truncated: untouched.
    let mut f = request.clone();
    assert_eq!(
        t.suppress_arp(vni(4096), &mut f),
        ArpVerdict::Unknown(Ipv4Addr::new(10, 0, 0, 2))
    );
    assert_eq!(f, request);
    let gratuitous = frame(
        [0xff; 6],
        C2,
        arp(
            ArpOperation::REQUEST,
            C2,
            [10, 0, 0, 2],
            [0; 6],
            [10, 0, 0, 2],
        ),
    );
    let not_arp = inner_udp(60);
    for mut other in [gratuitous, reply.clone(), not_arp, request[..40].to_vec()] {
        let before = other.clone();
        assert_eq!(
            t.suppress_arp(vni(4097), &mut other),
            ArpVerdict::NotARequest
        );
        assert_eq!(other, before);
    }
}

#[test]
fn head_end_replication_sends_one_copy_per_vtep() {
    let mut t = table();
    let now = Instant::now();
    let vteps = [Ipv4Addr::new(192, 0, 2, 4), Ipv4Addr::new(192, 0, 2, 3)];
    for v in vteps {
        t.apply(
            now,
            &PeerEvent::Join {
                vni: vni(4096),
                vtep: v,
            },
        )
        .unwrap();
    }
    let list = t.flood_list(vni(4096)).to_vec();
    assert_eq!(
        list,
        [
            REMOTE,
            Ipv4Addr::new(192, 0, 2, 3),
            Ipv4Addr::new(192, 0, 2, 4)
        ]
    );
    let enc = encapsulator(DfPolicy::Unset);
    let mut broadcast = inner_udp(64);
    broadcast[..6].fill(0xff);
    let mut out = [0u8; 256];
    for v in &list {
        let tmpl = enc.template(*v, EthernetAddress(NEXT_HOP));
        let n = enc
            .encapsulate_into(&tmpl, vni(4096), &broadcast, &mut out)
            .unwrap();
        t.record_tx(*v, broadcast.len());
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().destination_addr(), *v);
        assert_eq!(&out[OUTER_LEN..n], &broadcast[..]);
    }
    for s in t.snapshot(now, Some(vni(4096))) {
        assert_eq!(
            (s.stats.tx_packets, s.stats.tx_bytes),
            (1, 64),
            "{}",
            s.vtep
        );
    }
}

proptest! {
    #[test]
    fn encap_then_decap_gives_back_frame_and_vni(
        body in proptest::collection::vec(any::<u8>(), 14..=1468usize),
        src in any::<[u8; 6]>(),
        v in 0u32..=Vni::MAX,
        headroom in 50usize..80,
        df in any::<bool>(),
    ) {
        let mut inner = body;
        inner[6..12].copy_from_slice(&src);
        inner[6] &= 0xfe; // unicast
        inner[11] |= 1; // not zero
        let enc = encapsulator(if df { DfPolicy::Set } else { DfPolicy::Unset });
        let tmpl = enc.template(LOCAL, EthernetAddress(NEXT_HOP));
        let mut storage = vec![0u8; headroom + inner.len()];
        let mut buf = SliceBuf::with_frame(&mut storage, &inner).unwrap();
        enc.encapsulate(&tmpl, vni(v), &mut buf).unwrap();
        let wire = fabric::Headroom::frame(&buf).to_vec();

        // etherparse agrees on every outer field.
        let p = SlicedPacket::from_ethernet(&wire).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        let h = ip.header().to_header();
        prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
        prop_assert_eq!(usize::from(h.total_len), wire.len() - 14);
        prop_assert_eq!(h.dont_fragment, df);
        let Some(TransportSlice::Udp(udp)) = &p.transport else { panic!("not UDP") };
        prop_assert_eq!(udp.destination_port(), 4789);
        prop_assert!((32768..61000).contains(&udp.source_port()));
        prop_assert_eq!(udp.checksum(), 0);
        prop_assert_eq!(udp.payload(), &wire[42..]);

        // And decapsulation gives the frame back, here as if looped back
        // to our own address from LOCAL.
        let mut t = VtepTable::new(TableConfig::default());
        t.add_network(NetworkConfig::learning(vni(v)));
        t.apply(Instant::now(), &PeerEvent::Join { vni: vni(v), vtep: LOCAL }).unwrap();
        let mut d = Decapsulator::new(DecapConfig { local_ip: Some(LOCAL), ..DecapConfig::default() });
        let mut storage2 = wire.clone();
        let len = storage2.len();
        let mut rx = SliceBuf::new(&mut storage2, 0, len).unwrap();
        prop_assert_eq!(d.decap_in_place(&mut t, Instant::now(), &mut rx), Ok((vni(v), LOCAL)));
        prop_assert_eq!(fabric::Headroom::frame(&rx), &inner[..]);
    }

    #[test]
    fn decap_never_panics_on_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        header in any::<bool>(),
    ) {
        // Half the cases start with a valid outer header so the fuzzing
        // gets past the first checks.
        let frame = if header {
            let mut o = Outer::new(bytes.clone());
            o.payload = bytes;
            o.build()
        } else {
            bytes
        };
        let mut t = table();
        let mut d = Decapsulator::default();
        let now = Instant::now();
        match d.decap_frame(&mut t, now, &frame) {
            Ok(got) => prop_assert!(got.inner.end <= frame.len() && got.inner.len() >= 14),
            Err(r) => prop_assert_eq!(d.drops().get(r), 1),
        }
        let _ = d.decap_datagram(&mut t, now, REMOTE, &frame);
    }
}

#[test]
fn ip_header_shorter_than_20_bytes_is_malformed() {
    let mut frame = Outer::vxlan(4097, &inner_udp(100)).build();
    frame[14] = 0x44; // IHL 4: 16 bytes
    let mut t = table();
    let mut d = Decapsulator::default();
    assert_eq!(
        d.decap_frame(&mut t, Instant::now(), &frame),
        Err(DropReason::OuterIpMalformed)
    );
}
