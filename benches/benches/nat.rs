//! NAT per packet and per operation, one core, no I/O.
//!
//! - `conntrack/track_*`: one packet accounted to an established,
//!   masqueraded TCP flow found by its original or its reply tuple, in a
//!   table of 1k or 1M flows (256 shards); the keys are visited in a
//!   shuffled order so the table is not all in cache.
//! - `conntrack/create_remove`: a flow created and removed in a table of
//!   1M flows.
//! - `engine/*`: a 1514-byte TCP frame through `nat::process` (parse,
//!   track, rewrite with incremental checksums), including the copy of the
//!   frame into a receive buffer, for a known flow in each direction.
//! - `rewrite/*`: source NAT of that frame in place, complete and partial
//!   (`NEEDS_CSUM`) checksums.
//! - `alloc/dynamic`: a dynamic host port reserved and released.
//! - `spec/parse`: one `-p` argument parsed.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use nat::{
    Config, FlowKey, FlowProto, FlowState, FlowTable, Ipv4Meta, L4Checksum, NetworkId, NewFlow,
    PacketInfo, PortAllocator, PortRange, PortSpec, Proto, TcpFlags, TcpState, masquerade, process,
    rewrite,
};

const NET: NetworkId = NetworkId(1);
const UPLINK: NetworkId = NetworkId(0);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn flow(i: u32) -> NewFlow {
    let c = Ipv4Addr::from(0xac12_0000 | (i >> 14));
    let r = Ipv4Addr::new(198, 51, 100, 7);
    // 16384 ports per container address: every flow distinct.
    let sport = 32768 + u16::try_from(i & 0x3fff).expect("masked to 14 bits");
    let original = FlowKey::new(NET, FlowProto::Tcp, c.into(), sport, r.into(), 443);
    // One host address per container address keeps every reply distinct.
    let host = Ipv4Addr::from(0xc000_0000 | (i >> 14));
    let reply = FlowKey::new(UPLINK, FlowProto::Tcp, r.into(), 443, host.into(), sport);
    NewFlow {
        original,
        reply,
        cookie: u64::from(i),
    }
}

fn established(n: u32, now: Instant) -> (FlowTable, Vec<NewFlow>) {
    let table = FlowTable::new(Config {
        capacity: 2_000_000,
        ..Config::default()
    });
    let syn = PacketInfo {
        tcp_flags: TcpFlags::SYN,
        len: 60,
    };
    let mut flows = Vec::with_capacity(n as usize);
    for i in 0..n {
        let f = flow(i);
        table
            .create(now, f, syn)
            .expect("distinct flows under the cap");
        let synack = PacketInfo {
            tcp_flags: TcpFlags(0x12),
            len: 60,
        };
        let ack = PacketInfo {
            tcp_flags: TcpFlags::ACK,
            len: 52,
        };
        table.track(now, &f.reply, synack).expect("just created");
        let t = table.track(now, &f.original, ack).expect("just created");
        assert_eq!(t.state, FlowState::Tcp(TcpState::Established));
        flows.push(f);
    }
    // A fixed shuffle (xorshift), so each run visits the same order.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..flows.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % (i as u64 + 1)).expect("below len");
        flows.swap(i, j);
    }
    (table, flows)
}

fn conntrack(c: &mut Criterion) {
    let mut group = c.benchmark_group("conntrack");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let ack = PacketInfo {
        tcp_flags: TcpFlags::ACK,
        len: 1500,
    };
    for n in [1_000u32, 1_000_000] {
        let (table, flows) = established(n, now);
        for (name, reply) in [("track_original", false), ("track_reply", true)] {
            let mut i = 0;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    let f = &flows[i % flows.len()];
                    i += 1;
                    let key = if reply { &f.reply } else { &f.original };
                    black_box(table.track(now, black_box(key), ack))
                });
            });
        }
        if n == 1_000_000 {
            let extra = flow(n + 1);
            let syn = PacketInfo {
                tcp_flags: TcpFlags::SYN,
                len: 60,
            };
            group.bench_function(BenchmarkId::new("create_remove", n), |b| {
                b.iter(|| {
                    let t = table
                        .create(now, black_box(extra), syn)
                        .expect("free tuple");
                    table.remove(t.id)
                });
            });
        }
    }
    group.finish();
}

fn frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .tcp(sp, dp, 1, 65535)
        .ack(1)
        .write(&mut out, &[0x5a; 1460])
        .expect("writing to a Vec");
    out
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let (table, _) = established(1_000, now);
    let ports = PortRange::new(32768, 60999).expect("ordered");
    let masq = |k: &FlowKey, a: u16| Some(masquerade(k, UPLINK, HOST.into(), ports, a));
    let mut out = frame([172, 18, 0, 2], 40000, [198, 51, 100, 7], 443);
    let mut syn = out.clone();
    syn[14 + 20 + 13] = 0x02;
    // The flow, created by a SYN and completed.
    let _ = process(&table, now, NET, &mut syn, L4Checksum::Complete, masq);
    let back = frame([198, 51, 100, 7], 443, HOST.octets(), 40000);
    let mut synack = back.clone();
    synack[14 + 20 + 13] = 0x12;
    let _ = process(&table, now, UPLINK, &mut synack, L4Checksum::Complete, masq);
    let template = out.clone();
    group.bench_function("egress_1514", |b| {
        b.iter(|| {
            out.copy_from_slice(&template);
            black_box(process(
                &table,
                now,
                NET,
                black_box(&mut out),
                L4Checksum::Complete,
                masq,
            ))
        });
    });
    let mut buf = back.clone();
    group.bench_function("reply_1514", |b| {
        b.iter(|| {
            buf.copy_from_slice(&back);
            black_box(process(
                &table,
                now,
                UPLINK,
                black_box(&mut buf),
                L4Checksum::Complete,
                |_, _| None,
            ))
        });
    });
    group.finish();
}

fn rewrites(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite");
    group.throughput(Throughput::Elements(1));
    for (name, mode) in [
        ("snat_complete", L4Checksum::Complete),
        ("snat_partial", L4Checksum::Partial),
    ] {
        let mut f = frame([172, 18, 0, 2], 40000, [198, 51, 100, 7], 443);
        let mut meta = Ipv4Meta::parse(&f[14..]).expect("a valid frame");
        let addrs = [(Ipv4Addr::new(172, 18, 0, 2), 40000), (HOST, 50000)];
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                k ^= 1;
                let dst = (meta.dst, meta.dst_port);
                rewrite(&mut f[14..], &mut meta, mode, addrs[k], dst)
            });
        });
    }
    group.finish();
}

fn control(c: &mut Criterion) {
    let mut group = c.benchmark_group("control");
    group.throughput(Throughput::Elements(1));
    let mut alloc = PortAllocator::new(PortRange::new(32768, 60999).expect("ordered"));
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    group.bench_function("alloc_dynamic", |b| {
        b.iter(|| {
            let p = alloc.request(any, Proto::Tcp, None).expect("a free port");
            alloc.release(any, Proto::Tcp, p);
        });
    });
    group.bench_function("spec_parse", |b| {
        b.iter(|| black_box("127.0.0.1:18082-18084:82-84/udp").parse::<PortSpec>());
    });
    group.finish();
}

criterion_group!(benches, conntrack, engine, rewrites, control);
criterion_main!(benches);
