//! VXLAN encapsulation and decapsulation rates, one core, no I/O.
//!
//! Encapsulation: one iteration writes the outer header into the headroom
//! of a buffer holding the inner frame (flow hash for the source port,
//! template copy, IPv4 length, identification and incremental checksum,
//! UDP length, VNI); the buffer is then reset, which costs two stores,
//! since encapsulation never touches the inner frame. Decapsulation: one
//! iteration checks a whole received frame (outer Ethernet, IPv4 header
//! checksum, UDP, VXLAN header, inner source) and the VTEP table (network,
//! member VTEP, learned source refreshed, counters). 256 flows in turn, so
//! the flow hash is not fed one frame over and over.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use fabric::decap::DecapConfig;
use fabric::vtep::{NetworkConfig, TableConfig};
use fabric::{
    Decapsulator, EncapConfig, Encapsulator, EthernetAddress, PeerEvent, SliceBuf, Vni, VtepTable,
};

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const FLOWS: usize = 256;
const HEADROOM: usize = 74;

/// A UDP frame of `len` bytes from flow `i`.
fn inner(len: usize, i: usize) -> Vec<u8> {
    let port = u16::try_from(10_000 + i).unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 2], [2, 0x42, 10, 0, 0, 3])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
        .udp(port, 5201)
        .write(&mut v, &vec![0u8; len - 42])
        .unwrap();
    v
}

fn encapsulator(local: Ipv4Addr) -> Encapsulator {
    let mut c = EncapConfig::new(local, EthernetAddress([2, 0, 0, 0, 0, 1]));
    c.flow_seed = 0x9e37_79b9_7f4a_7c15;
    Encapsulator::new(c)
}

fn encap(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan_encap");
    g.throughput(Throughput::Elements(1));
    let enc = encapsulator(LOCAL);
    let tmpl = enc.template(REMOTE, EthernetAddress([2, 0, 0, 0, 0, 2]));
    let vni = Vni::new(4096).unwrap();
    for len in [64usize, 1500] {
        let mut storage: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                let mut s = vec![0u8; HEADROOM];
                s.extend_from_slice(&inner(len, i));
                s
            })
            .collect();
        let mut bufs: Vec<SliceBuf<'_>> = storage
            .iter_mut()
            .map(|s| SliceBuf::new(s, HEADROOM, len).unwrap())
            .collect();
        let mut i = 0;
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| {
                let buf = &mut bufs[i % FLOWS];
                i += 1;
                buf.reset(HEADROOM, len).unwrap();
                enc.encapsulate(&tmpl, vni, buf).unwrap();
                black_box(&*buf);
            });
        });
    }
    g.finish();
}

fn decap(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan_decap");
    g.throughput(Throughput::Elements(1));
    // Frames as the remote VTEP sends them to us.
    let enc = encapsulator(REMOTE);
    let tmpl = enc.template(LOCAL, EthernetAddress([2, 0, 0, 0, 0, 1]));
    let vni = Vni::new(4096).unwrap();
    let now = Instant::now();
    let mut table = VtepTable::new(TableConfig {
        local_vtep: Some(LOCAL),
        ..TableConfig::default()
    });
    table.add_network(NetworkConfig::learning(vni));
    table
        .apply(
            now,
            &PeerEvent::VtepUp {
                vtep: REMOTE,
                name: "b".into(),
            },
        )
        .unwrap();
    table
        .apply(now, &PeerEvent::Join { vni, vtep: REMOTE })
        .unwrap();
    // Inner frames up to 1500 bytes: an overlay MTU of 1500 (a 9000-byte
    // underlay would allow it; the default 1450 would drop them).
    let mut d = Decapsulator::new(DecapConfig {
        local_ip: Some(LOCAL),
        ..DecapConfig::for_mtu(1500)
    });
    for len in [64usize, 1500] {
        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                let mut out = vec![0u8; len + 50];
                enc.encapsulate_into(&tmpl, vni, &inner(len, i), &mut out)
                    .unwrap();
                out
            })
            .collect();
        let mut i = 0;
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| {
                let f = &frames[i % FLOWS];
                i += 1;
                black_box(d.decap_frame(&mut table, now, black_box(f)).unwrap());
            });
        });
    }
    assert_eq!(d.drops().total(), 0);
    g.finish();
}

criterion_group!(benches, encap, decap);
criterion_main!(benches);
