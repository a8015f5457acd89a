//! The underlay socket without root: two hosts' VTEPs on loopback
//! addresses (127.0.0.1 and 127.0.0.2, one port), real UDP datagrams
//! between them, frames in and frames out through the ports' `PortIo`.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric::Vni;
use fabric::peer_file::PeerFile;
use vswitch::buf::PacketBuf;
use vswitch::datapath::Datapath;
use vswitch::ids::PortId;
use vswitch::overlay::{OverlayConfig, UNDERLAY_PORT, Underlay};
use vswitch::port::{PortIo, RxBatch};
use vswitch::switch::FdbConfig;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const PINNED_MAC: [u8; 6] = [0x02, 0x42, 10, 0, 0, 9];
const M1: [u8; 6] = [0x02, 0x42, 10, 0, 0, 1];

fn port() -> u16 {
    40_000 + u16::try_from(std::process::id() % 20_000).unwrap()
}

fn vni() -> Vni {
    Vni::new(4100).unwrap()
}

fn peers(port: u16) -> PeerFile {
    PeerFile::parse(&format!(
        r#"
port = {port}
[[vtep]]
name = "a"
address = "{A}"
[[vtep]]
name = "b"
address = "{B}"
[[vtep]]
name = "c"
address = "{C}"
[[network]]
vni = 4100
[[network.endpoint]]
mac = "02:42:0a:00:00:09"
ip = "10.0.0.9"
vtep = "{B}"
"#
    ))
    .unwrap()
}

fn open(local: Ipv4Addr, port: u16, name: &str) -> Arc<Underlay> {
    Underlay::open(OverlayConfig {
        local,
        port,
        name: name.to_owned(),
        peers: Some(peers(port)),
        source: None,
    })
    .unwrap()
}

fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend_from_slice(&[tag; 46]);
    f
}

/// Receives until something arrives or half a second passes.
fn receive(u: &Underlay) -> Vec<(PortId, Vec<u8>)> {
    let mut batch = RxBatch::new(8);
    let deadline = Instant::now() + Duration::from_millis(500);
    while batch.is_empty() && Instant::now() < deadline {
        let _ = u.recv_batch(UNDERLAY_PORT, &mut batch);
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (bufs, ingress) = batch.frames_mut();
    bufs.iter()
        .zip(ingress.iter())
        .map(|(b, p)| (*p, b.frame().to_vec()))
        .collect()
}

fn send(u: &Arc<Underlay>, f: &[u8]) {
    let buf = PacketBuf::from_frame(f).unwrap();
    let out = u.vni_port(vni()).send_batch(&[&buf]);
    assert_eq!(out.sent, 1, "{:?}", out.error);
}

fn tx_to(u: &Underlay, vtep: Ipv4Addr) -> u64 {
    u.vteps(None)
        .iter()
        .find(|v| v.vtep == vtep)
        .map_or(0, |v| v.stats.tx_packets)
}

#[test]
fn two_vteps_replicate_learn_answer_arp_and_refuse_strangers() {
    let port = port();
    let (a, b) = (open(A, port, "a"), open(B, port, "b"));
    let (dp, _threads) = Datapath::spawn(1, FdbConfig::default()).unwrap();
    a.sync(&dp, &[(vni(), PortId(7))]).unwrap();
    b.sync(&dp, &[(vni(), PortId(9))]).unwrap();

    // Broadcast: head-end replicated to every other VTEP of the network.
    let bcast = frame([0xff; 6], M1, 1);
    send(&a, &bcast);
    assert_eq!(receive(&b), [(PortId(9), bcast.clone())]);
    assert_eq!((tx_to(&a, B), tx_to(&a, C)), (1, 1));

    // B learned M1 behind A: a unicast reply goes to A alone.
    let reply = frame(M1, [0x02, 0x42, 10, 0, 0, 2], 2);
    send(&b, &reply);
    assert_eq!(receive(&a), [(PortId(7), reply)]);
    assert_eq!((tx_to(&b, A), tx_to(&b, C)), (1, 0));
    let learned = b.remote_macs(vni());
    assert!(
        learned
            .iter()
            .any(|m| m.mac == M1 && m.vtep == A && m.learned),
        "{learned:?}"
    );

    // Consecutive unicast frames of one size (a super-frame's segments)
    // leave in one UDP_SEGMENT call and arrive as separate datagrams, in
    // order, the shorter last one included.
    let segs: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            let mut f = frame(M1, [0x02, 0x42, 10, 0, 0, 2], 10 + i);
            f.extend_from_slice(&[i; 1000]);
            if i == 3 {
                f.truncate(300);
            }
            f
        })
        .collect();
    let bufs: Vec<PacketBuf> = segs
        .iter()
        .map(|f| PacketBuf::from_frame(f).unwrap())
        .collect();
    let refs: Vec<&PacketBuf> = bufs.iter().collect();
    assert_eq!(b.vni_port(vni()).send_batch(&refs).sent, 4);
    let mut got = Vec::new();
    while got.len() < 4 {
        let more = receive(&a);
        if more.is_empty() {
            break;
        }
        got.extend(more.into_iter().map(|(_, f)| f));
    }
    assert_eq!(got, segs);
    assert_eq!(b.stats().0.tx_gso_sends, 1);

    // ARP for the pinned endpoint's address is answered on A, and sent
    // nowhere.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&M1);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&M1);
    arp.extend_from_slice(&[10, 0, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 0, 0, 9]);
    let before = (tx_to(&a, B), tx_to(&a, C));
    send(&a, &arp);
    let got = receive(&a);
    assert_eq!(got.len(), 1, "{got:?}");
    let (p, answer) = &got[0];
    assert_eq!(*p, PortId(7));
    assert_eq!(&answer[0..6], &M1, "to the asker");
    assert_eq!(&answer[6..12], &PINNED_MAC, "from the pinned endpoint");
    assert_eq!(&answer[20..22], &[0, 2], "an ARP reply");
    assert_eq!((tx_to(&a, B), tx_to(&a, C)), before);
    assert!(receive(&b).is_empty());
    assert_eq!(a.stats().0.arp_suppressed, 1);

    // A stranger's datagram is dropped and counted, never switched.
    let stranger = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 4), 0)).unwrap();
    let mut dgram = vec![0x08, 0, 0, 0, 0, 0x10, 0x04, 0];
    dgram.extend_from_slice(&frame(M1, [0x02, 0, 0, 0, 0, 0x66], 3));
    stranger.send_to(&dgram, (A, port)).unwrap();
    assert!(receive(&a).is_empty());
    let drops = a.stats().1;
    assert!(drops.contains(&("unknown_vtep", 1)), "{drops:?}");

    // A datagram with a VNI no network has is dropped too.
    let mut other = vec![0x08, 0, 0, 0, 0, 0x20, 0, 0];
    other.extend_from_slice(&frame(M1, [0x02, 0x42, 10, 0, 0, 2], 4));
    let from_b = UdpSocket::bind((B, 0)).unwrap();
    from_b.send_to(&other, (A, port)).unwrap();
    assert!(receive(&a).is_empty());
    assert!(a.stats().1.contains(&("unknown_vni", 1)));

    // A network removed from the model is gone from the underlay.
    a.sync(&dp, &[]).unwrap();
    send(&b, &bcast);
    assert!(receive(&a).is_empty());
    dp.shutdown();
}

/// TCP/IPv4 segments of one flow, `n` of `mss` payload bytes from `seq`,
/// from M2 to M1, cut from one super-frame by the datapath's segmentation.
fn tcp_segments(sport: u16, seq: u32, n: usize, mss: u16) -> Vec<Vec<u8>> {
    use vswitch::buf::VnetHdr;
    let data: Vec<u8> = (0..n * usize::from(mss))
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(M2, M1)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .tcp(sport, 80, seq, 500)
        .ack(1)
        .write(&mut frame, &data)
        .unwrap();
    let mut src = PacketBuf::from_frame(&frame).unwrap();
    src.vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: mss,
        hdr_len: 54,
        ..VnetHdr::default()
    };
    let mut out = PacketBuf::new();
    let mut segs = Vec::new();
    vswitch::gso::segment(&src, &mut out, |b| segs.push(b.frame().to_vec())).unwrap();
    segs
}

const M2: [u8; 6] = [0x02, 0x42, 10, 0, 0, 2];

/// Sends `frames` from `from` in one batch, all taken.
fn send_all(from: &Arc<Underlay>, frames: &[Vec<u8>]) {
    let bufs: Vec<PacketBuf> = frames
        .iter()
        .map(|f| PacketBuf::from_frame(f).unwrap())
        .collect();
    let refs: Vec<&PacketBuf> = bufs.iter().collect();
    let out = from.vni_port(vni()).send_batch(&refs);
    assert_eq!(out.sent, frames.len(), "{:?}", out.error);
}

/// Receives until `want` frames arrived or half a second passes, with
/// their virtio-net headers.
fn receive_n(u: &Underlay, want: usize) -> Vec<(vswitch::buf::VnetHdr, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while got.len() < want && Instant::now() < deadline {
        // A small batch: a train that does not fit waits for the next.
        let mut batch = RxBatch::new(2);
        let _ = u.recv_batch(UNDERLAY_PORT, &mut batch);
        got.extend(batch.frames().iter().map(|b| (b.vnet, b.frame().to_vec())));
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    got
}

#[test]
fn a_train_of_tcp_segments_arrives_as_one_super_frame() {
    use vswitch::buf::VnetHdr;
    let port = port().wrapping_add(1);
    let (a, b) = (open(A, port, "a"), open(B, port, "b"));
    let (dp, _threads) = Datapath::spawn(1, FdbConfig::default()).unwrap();
    a.sync(&dp, &[(vni(), PortId(7))]).unwrap();
    b.sync(&dp, &[(vni(), PortId(9))]).unwrap();
    // B learns M1 behind A, so the segments are known unicast.
    send(&a, &frame([0xff; 6], M1, 1));
    assert_eq!(receive(&b).len(), 1);

    // One super-frame's segments: one UDP_SEGMENT send, one train on
    // receipt (UDP_GRO), one frame for the container, which cuts back
    // into the same segments.
    let segs = tcp_segments(40_000, 5000, 20, 1400);
    send_all(&b, &segs);
    let got = receive_n(&a, 1);
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|g| g.1.len()).collect::<Vec<_>>()
    );
    let (vnet, merged) = &got[0];
    assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
    assert_eq!(vnet.gso_size, 1400);
    assert!(vnet.needs_csum());
    let mut buf = PacketBuf::from_frame(merged).unwrap();
    buf.vnet = *vnet;
    let mut out = PacketBuf::new();
    let mut again = Vec::new();
    vswitch::gso::segment(&buf, &mut out, |s| again.push(s.frame().to_vec())).unwrap();
    assert_eq!(again, segs);
    let stats = a.stats().0;
    assert_eq!(
        (stats.rx_trains, stats.rx_merged, stats.rx_merged_segments),
        (1, 1, 20)
    );

    // Two flows in one batch: two runs, two trains, two super-frames, each
    // flow's bytes in order; a train longer than the receive batch (2
    // frames) waits for the next call.
    let f1 = tcp_segments(40_001, 1, 6, 1400);
    let f2 = tcp_segments(40_002, 1, 6, 1400);
    let mixed: Vec<Vec<u8>> = f1.iter().chain(&f2).cloned().collect();
    send_all(&b, &mixed);
    let got = receive_n(&a, 2);
    assert_eq!(got.len(), 2);
    for ((vnet, f), want) in got.iter().zip([&f1, &f2]) {
        assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
        // Addresses and ports: the flow, in order.
        assert_eq!(&f[26..38], &want[0][26..38]);
        assert_eq!(f.len(), 54 + 6 * 1400);
    }

    // A train whose middle segment was damaged on the way (sent here from
    // a plain socket as B's address) splits around it: the damaged one
    // travels alone, untouched.
    let mut bad = tcp_segments(40_003, 1, 5, 1400);
    bad[2][200] ^= 0x10;
    let raw = UdpSocket::bind((B, 0)).unwrap();
    let mut gso_payload = Vec::new();
    for f in &bad {
        gso_payload.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0x04, 0]);
        gso_payload.extend_from_slice(f);
    }
    send_segmented(&raw, &gso_payload, 8 + bad[0].len(), (A, port));
    let got = receive_n(&a, 3);
    let lens: Vec<usize> = got.iter().map(|g| g.1.len()).collect();
    assert_eq!(got.len(), 3, "{lens:?}");
    assert_eq!(got[1].1, bad[2]);
    assert_eq!(got[1].0, VnetHdr::default());
    assert_eq!(got[0].0.gso_type, VnetHdr::GSO_TCPV4);
    assert_eq!(got[2].0.gso_type, VnetHdr::GSO_TCPV4);
    dp.shutdown();
}

/// `frames` as one `UDP_SEGMENT` send from `raw` to A, each behind the
/// VXLAN header of [`vni`].
fn send_train(raw: &UdpSocket, frames: &[Vec<u8>], port: u16) {
    let mut payload = Vec::new();
    for f in frames {
        payload.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0x04, 0]);
        payload.extend_from_slice(f);
    }
    send_segmented(raw, &payload, 8 + frames[0].len(), (A, port));
}

/// A 64 KiB super-frame crosses the underlay as two `UDP_SEGMENT` sends
/// (one may carry 65,507 bytes), so two trains: the receiver continues the
/// first train's super-frame in the second and the container gets one
/// frame, unless the second does not continue it (a hole, a damaged
/// segment, another flow first), which then comes out as it would alone.
#[test]
fn a_super_frame_split_over_two_trains_arrives_whole() {
    use vswitch::buf::VnetHdr;
    let port = port().wrapping_add(3);
    let (a, b) = (open(A, port, "a"), open(B, port, "b"));
    let (dp, _threads) = Datapath::spawn(1, FdbConfig::default()).unwrap();
    a.sync(&dp, &[(vni(), PortId(7))]).unwrap();
    b.sync(&dp, &[(vni(), PortId(9))]).unwrap();
    // B's address, so that A takes the trains as from VTEP B.
    let raw = UdpSocket::bind((B, 0)).unwrap();
    let resegment = |vnet: VnetHdr, f: &[u8]| {
        let mut buf = PacketBuf::from_frame(f).unwrap();
        buf.vnet = vnet;
        let mut out = PacketBuf::new();
        let mut segs = Vec::new();
        vswitch::gso::segment(&buf, &mut out, |s| segs.push(s.frame().to_vec())).unwrap();
        segs
    };

    // 45 segments of 1,384 bytes: 23 in one send, 22 in the next.
    let segs = tcp_segments(40_010, 1, 45, 1384);
    send_train(&raw, &segs[..23], port);
    send_train(&raw, &segs[23..], port);
    let got = receive_n(&a, 2);
    let lens: Vec<usize> = got.iter().map(|g| g.1.len()).collect();
    assert_eq!(lens, [54 + 45 * 1384]);
    assert_eq!(got[0].0.gso_type, VnetHdr::GSO_TCPV4);
    assert_eq!(resegment(got[0].0, &got[0].1), segs);
    let stats = a.stats().0;
    assert_eq!(
        (stats.rx_trains, stats.rx_merged, stats.rx_merged_trains),
        (2, 1, 1)
    );
    assert_eq!((stats.rx_datagrams, stats.rx_merged_segments), (45, 45));

    // A hole between the trains: two frames, each cutting back into its
    // own train's segments.
    let segs = tcp_segments(40_011, 1, 30, 1384);
    send_train(&raw, &segs[..15], port);
    send_train(&raw, &segs[16..], port);
    let got = receive_n(&a, 3);
    assert_eq!(got.len(), 2);
    assert_eq!(resegment(got[0].0, &got[0].1), segs[..15]);
    assert_eq!(resegment(got[1].0, &got[1].1), segs[16..]);

    // The second train's first segment damaged: it travels alone, as it
    // came, between the two super-frames.
    let mut segs = tcp_segments(40_012, 1, 30, 1384);
    segs[15][300] ^= 0x01;
    send_train(&raw, &segs[..15], port);
    send_train(&raw, &segs[15..], port);
    let got = receive_n(&a, 4);
    assert_eq!(got.len(), 3);
    assert_eq!(resegment(got[0].0, &got[0].1), segs[..15]);
    assert_eq!((got[1].0, &got[1].1), (VnetHdr::default(), &segs[15]));
    assert_eq!(resegment(got[2].0, &got[2].1), segs[16..]);

    // Another flow's train in between: three frames, each flow whole.
    let f1 = tcp_segments(40_013, 1, 30, 1384);
    let f2 = tcp_segments(40_014, 1, 10, 1384);
    send_train(&raw, &f1[..15], port);
    send_train(&raw, &f2, port);
    send_train(&raw, &f1[15..], port);
    let got = receive_n(&a, 4);
    assert_eq!(got.len(), 3);
    assert_eq!(resegment(got[0].0, &got[0].1), f1[..15]);
    assert_eq!(resegment(got[1].0, &got[1].1), f2);
    assert_eq!(resegment(got[2].0, &got[2].1), f1[15..]);
    assert_eq!(a.stats().0.rx_merged_trains, 1);
    dp.shutdown();
}

/// One `sendmsg` with `UDP_SEGMENT` of `payload` cut every `seg` bytes.
fn send_segmented(s: &UdpSocket, payload: &[u8], seg: usize, to: (Ipv4Addr, u16)) {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, sendmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let seg = u16::try_from(seg).unwrap();
    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(to.0, to.1));
    sendmsg(
        s.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::UdpGsoSegments(&seg)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .unwrap();
}

/// A TCP/IPv4 super-frame of `n` segments of `mss` bytes from M2 to `dst`,
/// as a TAP hands it over: GSO pending, and the TCP checksum field holding
/// only the pseudo-header sum (`F_NEEDS_CSUM`); with the segments the
/// datapath's own segmentation cuts from it.
fn super_frame(dst: [u8; 6], n: usize, mss: u16) -> (PacketBuf, Vec<Vec<u8>>) {
    use vswitch::buf::VnetHdr;
    let data: Vec<u8> = (0..n * usize::from(mss))
        .map(|i| u8::try_from((i * 7) % 251).unwrap())
        .collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(M2, dst)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .tcp(40_100, 80, 77, 500)
        .ack(1)
        .psh()
        .write(&mut frame, &data)
        .unwrap();
    let pseudo = pseudo_sum(&frame);
    frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let mut src = PacketBuf::from_frame(&frame).unwrap();
    src.vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: mss,
        hdr_len: 54,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut out = PacketBuf::new();
    let mut segs = Vec::new();
    vswitch::gso::segment(&src, &mut out, |b| segs.push(b.frame().to_vec())).unwrap();
    (src, segs)
}

/// The TCP pseudo-header sum of an IPv4/TCP frame whose IP header starts
/// at 14: what a sender that offloads the checksum leaves in its field.
fn pseudo_sum(frame: &[u8]) -> u16 {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
    let l4_len = u32::from(ip.total_len()) - u32::from(ip.ihl()) * 4;
    let mut sum: u32 = 0;
    for w in frame[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    sum += 6 + l4_len;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap()
}

/// Reads datagrams from a plain socket (no `UDP_GRO`: one per read) until
/// `want` arrived or half a second passes.
fn read_datagrams(s: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < want {
        let Ok(n) = s.recv(&mut buf) else { break };
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn super_frames_are_cut_while_encapsulated_byte_exact_and_merged_back() {
    use vswitch::buf::VnetHdr;
    use vswitch::port::PortCaps;
    let port = port().wrapping_add(2);
    let (a, b) = (open(A, port, "a"), open(B, port, "b"));
    // C is a plain socket: what B sends it is read datagram by datagram.
    let c = UdpSocket::bind((C, port)).unwrap();
    let (dp, _threads) = Datapath::spawn(1, FdbConfig::default()).unwrap();
    a.sync(&dp, &[(vni(), PortId(7))]).unwrap();
    b.sync(&dp, &[(vni(), PortId(9))]).unwrap();
    // The port takes super-frames and partial checksums whole.
    assert_eq!(b.vni_port(vni()).caps(), PortCaps::OFFLOADS);

    // Unknown unicast: flooded to A and C. C gets each segment as its own
    // datagram, byte for byte what the datapath's segmentation makes
    // (headers, sequence numbers, IP ids, flags, checksums), behind the
    // VXLAN header; the super-frame itself is left as it was.
    let (sf, segs) = super_frame(M1, 46, 1400);
    let before = sf.frame().to_vec();
    let out = b.vni_port(vni()).send_batch(&[&sf]);
    assert_eq!(out.sent, 1, "{:?}", out.error);
    assert_eq!(sf.frame(), &before[..]);
    let got = read_datagrams(&c, segs.len() + 1);
    let want: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| {
            let mut d = vec![0x08, 0, 0, 0, 0, 0x10, 0x04, 0];
            d.extend_from_slice(s);
            d
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "datagrams differ from the reference segments");
    for s in &segs {
        let p = etherparse::SlicedPacket::from_ethernet(s).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP")
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), want, "an independent TCP checksum");
    }
    let stats = b.stats().0;
    // 46 segments of 1,462-byte datagrams do not fit one send (65,507
    // bytes): two sends per VTEP, of 23 each.
    assert_eq!((stats.tx_segmented, stats.tx_segments), (1, 46));
    assert_eq!(stats.tx_gso_sends, 4);
    assert_eq!(stats.tx_datagrams, 92);

    // A received the same as two trains and merged them back into one
    // super-frame that cuts into the same segments.
    let merged = receive_n(&a, 2);
    assert_eq!(merged.len(), 1);
    assert_eq!(a.stats().0.rx_merged_trains, 1);
    let mut again = Vec::new();
    for (vnet, f) in &merged {
        assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
        let mut buf = PacketBuf::from_frame(f).unwrap();
        buf.vnet = *vnet;
        let mut out = PacketBuf::new();
        vswitch::gso::segment(&buf, &mut out, |s| again.push(s.frame().to_vec())).unwrap();
    }
    assert!(again == segs, "merged frames differ from the segments");

    // A frame with only a partial checksum leaves complete; the frame
    // itself is not written to.
    let mut small = PacketBuf::from_frame(&segs[45]).unwrap();
    let field = pseudo_sum(small.frame());
    small.frame_mut()[50..52].copy_from_slice(&field.to_be_bytes());
    small.vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let before = small.frame().to_vec();
    assert_eq!(b.vni_port(vni()).send_batch(&[&small]).sent, 1);
    let got = read_datagrams(&c, 1);
    assert_eq!(got, [want[45].clone()]);
    assert_eq!(small.frame(), &before[..]);

    // Offloads that cannot be carried out are dropped and counted: UFO,
    // and a checksum field beyond the frame.
    let mut ufo = PacketBuf::from_frame(&segs[0]).unwrap();
    ufo.vnet = VnetHdr {
        gso_type: VnetHdr::GSO_UDP,
        gso_size: 100,
        ..VnetHdr::default()
    };
    let mut beyond = PacketBuf::from_frame(&segs[0][..60]).unwrap();
    beyond.vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 30,
        ..VnetHdr::default()
    };
    assert_eq!(b.vni_port(vni()).send_batch(&[&ufo, &beyond]).sent, 2);
    assert_eq!(b.stats().0.tx_bad_offload, 2);
    assert!(read_datagrams(&c, 1).is_empty());
    dp.shutdown();
}

/// A `UDP_SEGMENT` send the kernel refuses (here: every one, the socket
/// sending without UDP checksums, which segmentation offload requires)
/// goes one datagram at a time, for that send: nothing is lost, each
/// refusal is counted, and only a run of refusals turns `UDP_SEGMENT` off.
#[test]
fn a_refused_udp_segment_send_falls_back_for_that_send() {
    let port = port().wrapping_add(4);
    let (a, b) = (open(A, port, "a"), open(B, port, "b"));
    let c = UdpSocket::bind((C, port)).unwrap();
    let (dp, _threads) = Datapath::spawn(1, FdbConfig::default()).unwrap();
    a.sync(&dp, &[(vni(), PortId(7))]).unwrap();
    b.sync(&dp, &[(vni(), PortId(9))]).unwrap();
    let one: libc::c_int = 1;
    // SAFETY: the underlay's socket, open for as long as `b`, and an int
    // option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            b.raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const one).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());

    // Flooded to A and C: both get every segment.
    let (sf, segs) = super_frame(M1, 10, 1400);
    let out = b.vni_port(vni()).send_batch(&[&sf]);
    assert_eq!(out.sent, 1, "{:?}", out.error);
    let at_c = read_datagrams(&c, 11);
    let inner: Vec<&[u8]> = at_c.iter().map(|d| &d[8..]).collect();
    assert!(
        inner == segs,
        "datagrams differ from the reference segments"
    );
    let stats = b.stats().0;
    assert_eq!(
        (stats.tx_gso_refused, stats.tx_gso_sends, stats.tx_datagrams),
        (2, 0, 20)
    );
    let got = receive_n(&a, 11);
    let payload: usize = got.iter().map(|g| g.1.len() - 54).sum();
    assert_eq!(payload, 10 * 1400);

    // Refusals in a row: after the sixteenth, no more attempts.
    for _ in 0..8 {
        assert_eq!(b.vni_port(vni()).send_batch(&[&sf]).sent, 1);
    }
    let stats = b.stats().0;
    assert_eq!(stats.tx_gso_refused, 16);
    assert_eq!(stats.tx_datagrams, 9 * 20);
    assert_eq!(read_datagrams(&c, 81).len(), 80);
    dp.shutdown();
}
