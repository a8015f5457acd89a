//! The datapath on real file descriptors (Unix datagram socket pairs), with
//! two worker threads so that ports are polled by different workers, driven
//! through its handle. No root needed.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use vswitch::buf::VnetHdr;
use vswitch::datapath::{BusyPoll, Datapath, DatapathConfig, WorkerConfig};
use vswitch::ids::PortId;
use vswitch::port::datagram::{DatagramPort, recv_frame, send_frame};
use vswitch::switch::{DropReason, FdbConfig, Origin, PortStats};

struct Running {
    datapath: Datapath,
    peers: Vec<(PortId, UnixDatagram)>,
    threads: Vec<thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(ports: &[PortId]) -> Self {
        Self::start_with(WorkerConfig::default(), ports)
    }

    /// Two workers running as `worker` says.
    fn start_with(worker: WorkerConfig, ports: &[PortId]) -> Self {
        let (datapath, threads) =
            Datapath::spawn_with(DatapathConfig { workers: 2, worker }).unwrap();
        datapath.set_config(&Arc::new(topology())).unwrap();
        let mut peers = Vec::new();
        for &id in ports {
            let (port, peer) = DatagramPort::pair().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            datapath.add_port(id, Arc::new(port)).unwrap();
            peers.push((id, peer));
        }
        Self {
            datapath,
            peers,
            threads,
        }
    }

    fn peer(&self, id: PortId) -> &UnixDatagram {
        &self
            .peers
            .iter()
            .find(|(p, _)| *p == id)
            .expect("port was started")
            .1
    }

    fn send(&self, from: PortId, frame: &[u8]) {
        send_frame(self.peer(from), &VnetHdr::default(), frame).unwrap();
    }

    fn recv(&self, at: PortId) -> Vec<u8> {
        recv_frame(self.peer(at))
            .expect("a frame arrives within 5 s")
            .1
    }

    /// Port counters once `done` holds for them (frames on a socket and
    /// queries in the mailbox are not ordered with each other).
    fn stats_when(&self, port: PortId, done: impl Fn(&PortStats) -> bool) -> PortStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.datapath.port_stats().unwrap();
            let s = stats
                .into_iter()
                .find(|(p, _)| *p == port)
                .expect("port is configured")
                .1;
            if done(&s) || std::time::Instant::now() > deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn nothing_at(&self, at: PortId) -> bool {
        let peer = self.peer(at);
        peer.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let none = recv_frame(peer).is_err();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        none
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.datapath.shutdown();
        for t in self.threads.drain(..) {
            t.join()
                .expect("worker thread panicked")
                .expect("worker loop failed");
        }
    }
}

#[test]
fn switches_unicast_and_answers_for_the_gateway() {
    let dp = Running::start(&[A, B, C]);
    let frame = udp_between(A, B);
    dp.send(A, &frame);
    assert_eq!(dp.recv(B), frame);
    assert!(dp.nothing_at(C));

    dp.send(C, &arp_request(mac_of(C), addr_of(C), ip(172, 17, 0, 1)));
    let reply = dp.recv(C);
    assert_eq!(
        reply,
        arp(
            GW_MAC,
            mac_of(C),
            2,
            GW_MAC,
            ip(172, 17, 0, 1),
            mac_of(C),
            addr_of(C)
        )
    );
}

#[test]
fn floods_carry_gso_metadata_and_inspection_answers_between_batches() {
    let dp = Running::start(&[A, B, C]);
    let bcast = udp(
        mac_of(A),
        vswitch::ids::MacAddr::BROADCAST,
        addr_of(A),
        ip(172, 17, 255, 255),
        b"x",
    );
    // A partial UDP checksum (the header starts at 14 + 20, its checksum
    // field 6 bytes in); "already verified" is the receiver's to say and
    // is cleared at ingress.
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let sent = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM | VnetHdr::F_DATA_VALID,
        ..hdr
    };
    send_frame(dp.peer(A), &sent, &bcast).unwrap();
    for at in [B, C] {
        let (got_hdr, got) = recv_frame(dp.peer(at)).unwrap();
        assert_eq!(got, bcast);
        assert_eq!(got_hdr, hdr, "the virtio-net header travels with the frame");
    }

    let fdb = dp.datapath.fdb().unwrap();
    assert!(
        fdb.iter()
            .any(|r| r.mac == mac_of(A) && r.port == A && r.origin == Origin::Static)
    );
    let stats = dp.datapath.port_stats().unwrap();
    let a = stats.iter().find(|(p, _)| *p == A).unwrap().1.clone();
    assert_eq!(a.rx_packets, 1);
    let b = stats.iter().find(|(p, _)| *p == B).unwrap().1.clone();
    assert_eq!((b.tx_packets, b.tx_bytes), (1, bcast.len() as u64));
    // Port UPLINK is configured but has no device: frames to it are
    // counted as transmit drops.
    let up = stats.iter().find(|(p, _)| *p == UPLINK).unwrap().1.clone();
    assert_eq!(up.tx_dropped, 1);
}

#[test]
fn a_burst_beyond_one_batch_is_delivered_whole_and_in_order() {
    let dp = Running::start(&[A, B]);
    let frames: Vec<Vec<u8>> = (0..200u16)
        .map(|i| {
            udp(
                mac_of(A),
                mac_of(B),
                addr_of(A),
                addr_of(B),
                &i.to_be_bytes(),
            )
        })
        .collect();
    for f in &frames {
        dp.send(A, f);
    }
    for f in &frames {
        assert_eq!(&dp.recv(B), f);
    }
}

#[test]
fn drops_are_counted_and_removed_ports_fall_silent() {
    let dp = Running::start(&[A, B]);
    dp.send(
        A,
        &udp(mac_of(B), mac_of(A), addr_of(A), addr_of(B), b"spoof"),
    );
    dp.send(A, &[0u8; 5]);
    // Garbage shorter than a virtio-net header is a runt, not a dead port.
    dp.peer(A).send(&[1, 2, 3]).unwrap();
    let a = dp.stats_when(A, |s| s.rx_packets == 3);
    assert_eq!(a.drops.get(DropReason::SrcMacSpoofed), 1);
    assert_eq!(a.drops.get(DropReason::Runt), 2);

    dp.datapath.remove_port(B).unwrap();
    dp.send(A, &udp_between(A, B));
    assert!(dp.nothing_at(B));
    // A still works after B left.
    dp.send(A, &arp_request(mac_of(A), addr_of(A), ip(172, 17, 0, 1)));
    assert_eq!(dp.recv(A)[12..14], [0x08, 0x06]);
}

#[test]
fn a_mac_learned_by_one_worker_is_forwarded_not_flooded_by_the_other() {
    // Two workers poll ports by id parity: UPLINK (4) and B (2) by one, A
    // (1) and C (3) by the other.
    let dp = Running::start(&[A, B, C, UPLINK]);
    let remote = vswitch::ids::MacAddr([0x02, 0x99, 0, 0, 0, 7]);
    let hello = udp(
        remote,
        vswitch::ids::MacAddr::BROADCAST,
        ip(172, 17, 9, 9),
        ip(172, 17, 255, 255),
        b"hello",
    );
    dp.send(UPLINK, &hello);
    for at in [A, B, C] {
        assert_eq!(dp.recv(at), hello, "the broadcast is flooded");
    }

    // A is polled by the other worker, which never saw `remote` itself.
    let to_remote = udp(mac_of(A), remote, addr_of(A), ip(172, 17, 9, 9), b"hi");
    dp.send(A, &to_remote);
    assert_eq!(dp.recv(UPLINK), to_remote);
    assert!(dp.nothing_at(B), "known unicast was flooded to B");
    assert!(dp.nothing_at(C), "known unicast was flooded to C");
    let b = dp.stats_when(B, |_| true);
    assert_eq!(b.tx_packets, 1, "B got the broadcast only");
}

#[test]
fn workers_that_never_sleep_forward_and_stop() {
    let dp = Running::start_with(
        WorkerConfig {
            busy_poll: BusyPoll::Always,
            ..WorkerConfig::default()
        },
        &[A, B, C],
    );
    for _ in 0..100 {
        let request = udp_between(A, B);
        dp.send(A, &request);
        assert_eq!(dp.recv(B), request);
        let answer = udp_between(B, A);
        dp.send(B, &answer);
        assert_eq!(dp.recv(A), answer);
    }
    // A and C are polled by one worker, B by the other; both spin.
    let frame = udp_between(C, A);
    dp.send(C, &frame);
    assert_eq!(dp.recv(A), frame);
    // Queries between batches are answered while the workers poll, and
    // shutdown (in Drop) stops them.
    assert_eq!(dp.stats_when(A, |s| s.rx_packets == 100).rx_packets, 100);
}

/// A network of `n` container ports (ids 1..=n) on 10.9.0.0/16.
fn many_ports(n: u32) -> vswitch::switch::SwitchConfig {
    use vswitch::switch::{NetworkConfig, PortConfig, PortRole, SwitchConfig};
    let ports = (1..=n).map(|p| PortConfig {
        id: PortId(p),
        network: BRIDGE,
        role: PortRole::Container {
            mac: docker_mac(many_ip(p)),
            ipv4: Some(many_ip(p)),
        },
    });
    SwitchConfig::new(1, [NetworkConfig::new(BRIDGE)], ports).unwrap()
}

fn many_ip(p: u32) -> std::net::Ipv4Addr {
    let [_, _, hi, lo] = p.to_be_bytes();
    ip(10, 9, hi, lo)
}

#[test]
fn a_burst_across_many_ports_arrives_complete_and_in_per_flow_order() {
    const PORTS: u32 = 12;
    const PER_PORT: u16 = 40;
    let (datapath, threads) = Datapath::spawn(2, FdbConfig::default()).unwrap();
    datapath.set_config(&Arc::new(many_ports(PORTS))).unwrap();
    let mut peers = Vec::new();
    for p in 1..=PORTS {
        let (port, peer) = DatagramPort::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        datapath.add_port(PortId(p), Arc::new(port)).unwrap();
        peers.push((PortId(p), peer));
    }
    let dp = Running {
        datapath,
        peers,
        threads,
    };
    // Port p sends to p+1 and p+2 alternately (two flows), sequence numbers
    // in the payload; all ports send before anything is read, so batches
    // hold frames of many ports and queues of many destinations.
    let dest = |p: u32, k: u16| (p + 1 + u32::from(k % 2) - 1) % PORTS + 1;
    for k in 0..PER_PORT {
        for p in 1..=PORTS {
            let d = dest(p, k);
            let f = udp(
                docker_mac(many_ip(p)),
                docker_mac(many_ip(d)),
                many_ip(p),
                many_ip(d),
                &k.to_be_bytes(),
            );
            dp.send(PortId(p), &f);
        }
    }
    // Each port receives PER_PORT frames: half from each of two senders.
    for d in 1..=PORTS {
        let mut last: std::collections::HashMap<[u8; 6], u16> = Default::default();
        for _ in 0..PER_PORT {
            let f = dp.recv(PortId(d));
            let src: [u8; 6] = f[6..12].try_into().unwrap();
            let seq = u16::from_be_bytes([f[f.len() - 2], f[f.len() - 1]]);
            if let Some(prev) = last.insert(src, seq) {
                assert!(seq > prev, "port {d}: {seq} after {prev} from one sender");
            }
        }
        assert_eq!(last.len(), 2, "port {d} hears from two senders");
        assert!(
            dp.nothing_at(PortId(d)),
            "port {d} got more than it was sent"
        );
    }
}

#[test]
fn a_super_frame_for_a_port_without_gso_leaves_segmented() {
    use etherparse::PacketBuilder;
    use vswitch::port::PortCaps;
    let (datapath, threads) = Datapath::spawn(2, FdbConfig::default()).unwrap();
    datapath.set_config(&Arc::new(topology())).unwrap();
    let (a, peer_a) = DatagramPort::pair().unwrap();
    let (b, peer_b) = DatagramPort::pair_with(PortCaps::NONE).unwrap();
    peer_b
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    datapath.add_port(A, Arc::new(a)).unwrap();
    datapath.add_port(B, Arc::new(b)).unwrap();
    let dp = Running {
        datapath,
        peers: vec![(A, peer_a), (B, peer_b)],
        threads,
    };
    let payload: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(mac_of(A).0, mac_of(B).0)
        .ipv4(addr_of(A).octets(), addr_of(B).octets(), 64)
        .tcp(40000, 80, 1000, 65535)
        .write(&mut frame, &payload)
        .unwrap();
    let hdr = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 54,
        ..VnetHdr::default()
    };
    send_frame(dp.peer(A), &hdr, &frame).unwrap();
    let mut got = Vec::new();
    for _ in 0..payload.len().div_ceil(1448) {
        let (h, seg) = recv_frame(dp.peer(B)).unwrap();
        assert_eq!(h, VnetHdr::default(), "segments need no offload");
        assert!(seg.len() <= 14 + 1500);
        got.extend_from_slice(&seg[54..]);
    }
    assert_eq!(got, payload);
    assert!(dp.nothing_at(B));
    let b = dp.stats_when(B, |s| s.tx_packets == 5);
    assert_eq!(b.tx_packets, 5);
}

#[test]
fn vswitchd_refuses_a_busy_poll_that_is_not_a_policy() {
    for (value, says) in [
        ("bogus", "neither a number of microseconds nor `always`"),
        ("-5", "neither a number of microseconds nor `always`"),
        ("10000001", "use `always` to never sleep"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
            .arg(format!("--busy-poll={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("--busy-poll"), "{value}: {stderr}");
        assert!(stderr.contains(says), "{value}: {stderr}");
    }
}

#[test]
fn vswitchd_refuses_a_cpu_latency_qos_it_does_not_know() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .args(["--cpu-latency-qos", "sometimes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--cpu-latency-qos"), "{stderr}");
    for value in ["auto", "on", "off"] {
        assert!(stderr.contains(value), "{value} not offered: {stderr}");
    }
}
