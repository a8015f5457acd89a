//! Frames per second through `Switch::process`, one core, no I/O.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not
//! the wall clock: "frames per second on one core" is what is measured,
//! and on a host shared with other work the wall clock would also count
//! the time slices the other processes got. On an idle host the two agree.
//!
//! Each iteration is one frame: the copy into a pooled buffer that a receive
//! call does, the decision (ingress checks, learning the source, looking up
//! the destination) and, for floods, walking the flood list. Frames are
//! generated beforehand and received into a ring of 32 buffers, the
//! datapath's batch size.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vswitch::buf::PacketBuf;
use vswitch::datapath::BATCH;
use vswitch::ids::{MacAddr, PortId};
use vswitch::switch::{
    Action, FdbConfig, Gateway, NetworkConfig, PortConfig, PortRole, SwitchConfig,
};

mod common;

use common::{FRAMES, NET, frame64, host_mac, known_unicast_setup, switch_with};

/// The calling thread's CPU time, as a criterion measurement.
struct CpuTime;

/// Formats durations as criterion does for the wall clock.
static WALL: WallTime = WallTime;

fn thread_cpu_time() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("every Linux has a per-thread CPU clock");
    Duration::from(ts)
}

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_secs_f64() * 1e9
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

type Bench = Criterion<CpuTime>;

/// The datapath's receive buffers: a batch of pooled buffers, reused.
struct Ring {
    bufs: Vec<PacketBuf>,
    next: usize,
}

impl Ring {
    fn new() -> Self {
        Self {
            bufs: (0..32).map(|_| PacketBuf::new()).collect(),
            next: 0,
        }
    }

    /// Copies `frame` into the next buffer, as a receive call would.
    fn receive(&mut self, frame: &[u8]) -> &mut PacketBuf {
        let i = self.next;
        self.next = (i + 1) % self.bufs.len();
        let buf = &mut self.bufs[i];
        buf.rx_space()[..frame.len()].copy_from_slice(frame);
        buf.set_received(frame.len());
        buf
    }
}

/// Known unicast: 65,536 learned MACs spread over 1,024 uplink ports, each
/// frame from one random learned host to another.
fn known_unicast(c: &mut Bench) {
    let (mut sw, now, frames) = known_unicast_setup();
    let mut ring = Ring::new();

    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("known_unicast_64B_64k_macs_1024_ports", |b| {
        b.iter(|| {
            let (port, frame) = &frames[i % FRAMES];
            i += 1;
            let buf = ring.receive(frame);
            let action = sw.process(now, *port, buf);
            debug_assert!(matches!(action, Action::Output(_)));
            black_box(action)
        });
    });

    // The rejected alternative for sharing the FDB between workers: one
    // table behind a lock, taken per frame (here uncontended, its best
    // case).
    let shared = Mutex::new(sw);
    g.bench_function("known_unicast_64B_64k_macs_fdb_behind_a_mutex", |b| {
        b.iter(|| {
            let (port, frame) = &frames[i % FRAMES];
            i += 1;
            let buf = ring.receive(frame);
            let action = shared
                .lock()
                .expect("never poisoned")
                .process(now, *port, buf);
            black_box(action)
        });
    });
    g.finish();
}

/// Known unicast as the datapath runs it, per batch of 64 (see
/// [`common::BatchPath::round`]): receive into the batch's pooled buffers,
/// decide each frame, queue it with the executor, publish the batch's FDB
/// changes, flush the queues (to a device that takes everything, so no
/// system call is counted). Also with a pass that loads every frame's FDB
/// entries first (`Switch::prefetch`), which the datapath no longer runs,
/// for the record.
fn known_unicast_batch(c: &mut Bench) {
    let mut path = common::BatchPath::new(BATCH);
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, prefetch) in [
        ("known_unicast_64B_64k_macs_batch_path", false),
        ("known_unicast_64B_64k_macs_batch_path_prefetch", true),
    ] {
        g.bench_function(name, |b| b.iter(|| path.round(prefetch)));
    }
    g.finish();
}

/// Known unicast between container ports: the anti-spoofing checks (source
/// MAC, IPv4 source) run on every frame.
fn container_unicast(c: &mut Bench) {
    const PORTS: u32 = 1024;
    let addr = |p: u32| Ipv4Addr::from(0xac11_0002 + p);
    let mac = |p: u32| {
        let o = addr(p).octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    };
    let ports = (0..PORTS).map(|p| PortConfig {
        id: PortId(p),
        network: NET,
        role: PortRole::Container {
            mac: mac(p),
            ipv4: Some(addr(p)),
        },
    });
    let config = SwitchConfig::new(1, [NetworkConfig::new(NET)], ports).unwrap();
    let (mut sw, now) = switch_with(config, FdbConfig::default());
    let frames: Vec<(PortId, Vec<u8>)> = (0..4096u32)
        .map(|i| {
            let (s, d) = (i % PORTS, (i * 7 + 1) % PORTS);
            let d = if d == s { (d + 1) % PORTS } else { d };
            (PortId(s), frame64(mac(s), mac(d), addr(s), addr(d)))
        })
        .collect();
    let mut ring = Ring::new();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("container_unicast_64B_1024_ports", |b| {
        b.iter(|| {
            let (port, frame) = &frames[i % frames.len()];
            i += 1;
            let buf = ring.receive(frame);
            black_box(sw.process(now, *port, buf))
        });
    });
    g.finish();
}

/// A broadcast from one port of a nine-port network: the decision plus the
/// walk over the eight flood targets.
fn flood(c: &mut Bench) {
    let ports = (0..9).map(|p| PortConfig {
        id: PortId(p),
        network: NET,
        role: PortRole::Uplink,
    });
    let config = SwitchConfig::new(1, [NetworkConfig::new(NET)], ports).unwrap();
    let (mut sw, now) = switch_with(config, FdbConfig::default());
    let f = frame64(
        host_mac(1),
        MacAddr::BROADCAST,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    );
    let mut ring = Ring::new();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("flood_64B_to_8_ports", |b| {
        b.iter(|| {
            let action = sw.process(now, PortId(0), ring.receive(&f));
            let Action::Flood {
                network,
                except,
                scope,
            } = action
            else {
                unreachable!("a broadcast floods")
            };
            let mut n = 0;
            for p in sw.flood_targets(network, except, scope) {
                n += 1;
                black_box(p);
            }
            assert_eq!(n, 8);
        });
    });
    g.finish();
}

/// ARP requests for the gateway, answered in place. Each iteration restores
/// the request (42 bytes) first, as a fresh receive would.
fn gateway_arp(c: &mut Bench) {
    let gw = Gateway {
        mac: MacAddr([0x02, 0x42, 0, 0, 0, 1]),
        ip: Ipv4Addr::new(172, 17, 0, 1),
    };
    let net = NetworkConfig {
        gateway: Some(gw),
        ..NetworkConfig::new(NET)
    };
    let ip = Ipv4Addr::new(172, 17, 0, 2);
    let mac = MacAddr([0x02, 0x42, 172, 17, 0, 2]);
    let port = PortConfig {
        id: PortId(0),
        network: NET,
        role: PortRole::Container {
            mac,
            ipv4: Some(ip),
        },
    };
    let config = SwitchConfig::new(1, [net], [port]).unwrap();
    let (mut sw, now) = switch_with(config, FdbConfig::default());
    let request = {
        let arp = etherparse::ArpEthIpv4Packet {
            operation: etherparse::ArpOperation::REQUEST,
            sender_mac: mac.0,
            sender_ipv4: ip.octets(),
            target_mac: [0; 6],
            target_ipv4: gw.ip.octets(),
        };
        let mut out = Vec::new();
        PacketBuilder::ethernet2(mac.0, [0xff; 6])
            .arp(arp.into())
            .write(&mut out)
            .unwrap();
        out
    };
    let mut ring = Ring::new();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gateway_arp_reply", |b| {
        b.iter(|| {
            let buf = ring.receive(&request);
            let action = sw.process(now, PortId(0), buf);
            assert_eq!(action, Action::Reply(PortId(0)));
            black_box(buf.frame()[21])
        });
    });
    g.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = known_unicast, known_unicast_batch, container_unicast, flood, gateway_arp
);
criterion_main!(benches);
