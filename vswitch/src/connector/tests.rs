//! Packet-level tests of the host connector, without root: the container is
//! a smoltcp endpoint whose frames are offered to the connector as a
//! datapath worker would offer them, and which reads what the connector
//! writes to its port (a datagram socket pair with a virtio-net header,
//! as a TAP). The "outside" is a socket on loopback, which these tests
//! (only) let the connector reach.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use super::{HostConnector, HostLink};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::{MacAddr, NetworkId, PortId};
use crate::port::datagram::{DatagramPort, recv_frame};
use crate::publish::{HostSocket, Publication, PublishedPortSink};
use crate::switch::{
    DropReason, External, Gateway, NetworkConfig, PortConfig, PortRole, SwitchConfig,
};

const NET: NetworkId = NetworkId(1);
const OTHER: NetworkId = NetworkId(2);
const PORT: PortId = PortId(3);
const GW: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
const C_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
const C_MAC: MacAddr = MacAddr([0x02, 0x42, 172, 30, 0, 2]);
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0xaa, 0, 0, 1]);

/// How long a wait goes on before the test fails rather than hangs. Not
/// a measure: the tests wait for what they check, however slow a loaded
/// machine is, and speed is the benchmarks' business.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn config(internal: bool, masquerade: bool) -> Arc<SwitchConfig> {
    let net = NetworkConfig {
        gateway: Some(Gateway {
            mac: GW_MAC,
            ip: GW,
        }),
        external: Some(External {
            subnet: (GW, 16),
            internal,
            masquerade,
        }),
        ..NetworkConfig::new(NET)
    };
    let other = NetworkConfig {
        gateway: Some(Gateway {
            mac: MacAddr([0x02, 0x42, 0xbb, 0, 0, 1]),
            ip: Ipv4Addr::new(172, 31, 0, 1),
        }),
        external: Some(External {
            subnet: (Ipv4Addr::new(172, 31, 0, 0), 16),
            internal: false,
            masquerade: true,
        }),
        ..NetworkConfig::new(OTHER)
    };
    let port = PortConfig {
        id: PORT,
        network: NET,
        role: PortRole::Container {
            mac: C_MAC,
            ipv4: Some(C_IP),
        },
    };
    Arc::new(SwitchConfig::new(1, [net, other], [port]).unwrap())
}

/// A connector thread with one container port; loopback counts as outside.
fn connector(internal: bool, masquerade: bool) -> (HostConnector, UnixDatagram) {
    started(1, &config(internal, masquerade))
}

/// A connector of `shards` threads with one container port; loopback
/// counts as outside.
fn sharded(shards: usize) -> (HostConnector, UnixDatagram) {
    started(shards, &config(false, true))
}

/// `shards` connector threads under `config`, with one container port.
fn started(shards: usize, config: &Arc<SwitchConfig>) -> (HostConnector, UnixDatagram) {
    let (inners, handle) =
        HostConnector::sharded(nat::conntrack::Config::default(), shards).unwrap();
    for mut inner in inners {
        inner.view.loopback_is_outside = true;
        std::thread::spawn(move || inner.run());
    }
    let (port, peer) = DatagramPort::pair().unwrap();
    handle.add_port(PORT, Arc::new(port)).unwrap();
    handle.set_config(config).unwrap();
    // A round trip: the configuration is in force before any frame.
    handle.port_stats().unwrap();
    peer.set_nonblocking(true).unwrap();
    (handle, peer)
}

/// The container's side of the wire: frames to the connector through its
/// link, frames from it through the datagram socket.
struct Wire {
    link: HostLink,
    peer: UnixDatagram,
    /// Frames the connector wrote, with their headers, for inspection.
    seen: Vec<(VnetHdr, Vec<u8>)>,
    /// The container's MTU: its SYN's (and SYN-ACK's) MSS is this less 40.
    mtu: usize,
}

impl Wire {
    /// How many of the frames written were TCP super-frames (longer than
    /// a 1500-byte MTU) cut at MSS 1460.
    fn super_frames(&self) -> usize {
        self.seen
            .iter()
            .filter(|(v, f)| {
                v.gso_type == VnetHdr::GSO_TCPV4 && v.gso_size == 1460 && f.len() > 1514
            })
            .count()
    }
}

struct RxTok(Vec<u8>);
struct TxTok<'a>(&'a HostLink);

impl smoltcp::phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; 14 + len];
        frame[0..6].copy_from_slice(&GW_MAC.0);
        frame[6..12].copy_from_slice(&C_MAC.0);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let r = f(&mut frame[14..]);
        let mut buf = PacketBuf::from_frame(&frame).unwrap();
        // What the switch does for a frame to the gateway's MAC.
        let _ = self.0.offer(PORT, &mut buf);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxTok, TxTok<'_>)> {
        let (vnet, mut frame) = recv_frame(&self.peer).ok()?;
        assert_eq!(&frame[0..6], &C_MAC.0, "addressed to the container");
        assert_eq!(&frame[6..12], &GW_MAC.0, "from the gateway");
        if vnet.needs_csum() {
            // What the container's kernel does with a partial checksum:
            // the field holds the pseudo-header sum; the sum from
            // `csum_start` to the end completes it.
            let start = usize::from(vnet.csum_start);
            let field = start + usize::from(vnet.csum_offset);
            let c = !smoltcp::wire::checksum::data(&frame[start..]);
            frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
        }
        self.seen.push((vnet, frame.clone()));
        Some((RxTok(frame[14..].to_vec()), TxTok(&self.link)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxTok<'_>> {
        Some(TxTok(&self.link))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        let mut sums = ChecksumCapabilities::default();
        // Every checksum the connector wrote is verified.
        sums.tcp = Checksum::Both;
        sums.ipv4 = Checksum::Both;
        caps.checksum = sums;
        caps
    }
}

/// The container: a TCP/IP endpoint at `C_IP` with a default route via
/// the gateway.
struct Container {
    iface: Interface,
    sockets: SocketSet<'static>,
    wire: Wire,
    epoch: Instant,
}

impl Container {
    fn new(handle: &HostConnector, peer: UnixDatagram) -> Self {
        Self::with_mtu(handle, peer, 65_000)
    }

    fn with_mtu(handle: &HostConnector, peer: UnixDatagram, mtu: usize) -> Self {
        let mut wire = Wire {
            link: handle.link(),
            peer,
            seen: Vec::new(),
            mtu,
        };
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut wire,
            smoltcp::time::Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(C_IP), 16)).unwrap());
        iface.routes_mut().add_default_ipv4_route(GW).unwrap();
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            wire,
            epoch: Instant::now(),
        }
    }

    fn poll(&mut self) {
        let now = smoltcp::time::Instant::from_micros(
            i64::try_from(self.epoch.elapsed().as_micros()).unwrap(),
        );
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }

    /// Polls until `cond` holds (or panics after [`HANG_GUARD`]).
    fn until(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out: {what}");
            self.poll();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// A socket connecting to `dst:port` from `sport`.
    fn connect(&mut self, dst: Ipv4Addr, port: u16, sport: u16) -> smoltcp::iface::SocketHandle {
        let h = self.sockets.add(Self::socket());
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(
                self.iface.context(),
                IpEndpoint::new(IpAddress::Ipv4(dst), port),
                sport,
            )
            .unwrap();
        h
    }

    /// A connection to `127.0.0.1:dport` from `sport` that has sent `data`
    /// and seen it acknowledged: the socket, and the connector's last ACK
    /// (its next sequence number and how far it acknowledged the data).
    fn sent_and_acknowledged(
        &mut self,
        dport: u16,
        sport: u16,
        data: &[u8],
    ) -> (smoltcp::iface::SocketHandle, u32, u32) {
        let h = self.connect(Ipv4Addr::LOCALHOST, dport, sport);
        self.until("connected", |c| c.state(h) == tcp::State::Established);
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .send_slice(data)
            .unwrap();
        self.until("acknowledged", |c| {
            c.sockets.get::<tcp::Socket>(h).send_queue() == 0
        });
        let (seq, acked, _) = self
            .wire
            .seen
            .iter()
            .rev()
            .find_map(|(_, f)| tcp_fields(f))
            .expect("an ACK from the connector");
        (h, seq, acked)
    }

    /// The TCP header of the first frame the connector sent that `pick`
    /// accepts.
    fn first_tcp_header(
        &self,
        pick: impl Fn(&etherparse::TcpSlice<'_>) -> bool,
    ) -> Option<etherparse::TcpHeader> {
        self.wire.seen.iter().find_map(|(_, f)| {
            let (_, rest) = etherparse::Ethernet2Header::from_slice(f).ok()?;
            let ip = etherparse::Ipv4Slice::from_slice(rest).ok()?;
            let tcp = etherparse::TcpSlice::from_slice(ip.payload().payload).ok()?;
            pick(&tcp).then(|| tcp.to_header())
        })
    }

    /// A socket listening on `port`.
    fn listen(&mut self, port: u16) -> smoltcp::iface::SocketHandle {
        let h = self.sockets.add(Self::socket());
        self.sockets.get_mut::<tcp::Socket>(h).listen(port).unwrap();
        h
    }

    /// The state of socket `h`.
    fn state(&self, h: smoltcp::iface::SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(h).state()
    }

    /// Moves what socket `h` has received to the end of `into`.
    fn read_into(&mut self, h: smoltcp::iface::SocketHandle, into: &mut Vec<u8>) {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() {
            s.recv(|b| {
                into.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
    }

    fn socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
        )
    }
}

/// Test data: byte `i` of a stream that repeats every `m` bytes.
fn pattern(i: usize, m: usize) -> u8 {
    u8::try_from(i % m).unwrap_or(0)
}

fn drops(handle: &HostConnector, reason: DropReason) -> u64 {
    handle
        .port_stats()
        .unwrap()
        .into_iter()
        .find(|(p, _)| *p == PORT)
        .map_or(0, |(_, s)| s.drops.get(reason))
}

#[test]
fn tcp_egress_carries_data_both_ways_from_the_containers_port() {
    let (handle, peer) = connector(false, true);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut c = Container::new(&handle, peer);
    let sport = 40_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let h = c.connect(Ipv4Addr::LOCALHOST, server_addr.port(), sport);
    // The outside: reads 300 KB, answers with 500 KB.
    let outside = std::thread::spawn(move || {
        let (mut s, from) = server.accept().unwrap();
        let mut got = vec![0u8; 300_000];
        s.read_exact(&mut got).unwrap();
        let answer: Vec<u8> = (0..500_000).map(|i| pattern(i, 251)).collect();
        s.write_all(&answer).unwrap();
        (from, got)
    });
    c.until("connected", |c| c.state(h) == tcp::State::Established);
    let sent: Vec<u8> = (0..300_000).map(|i| pattern(i, 241)).collect();
    let mut at = 0;
    let mut got = Vec::new();
    c.until("500 KB back", |c| {
        let s = c.sockets.get_mut::<tcp::Socket>(h);
        if at < sent.len() && s.can_send() {
            at += s.send_slice(&sent[at..]).unwrap();
        }
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        got.len() >= 500_000
    });
    let (from, outside_got) = outside.join().unwrap();
    assert_eq!(outside_got, sent, "the outside got the container's bytes");
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == pattern(i, 251)),
        "the container got the outside's bytes in order"
    );
    assert_eq!(from.port(), sport, "the container's source port is kept");
    // Large answers arrive as super-frames cut at the container's MSS.
    assert!(c.wire.super_frames() > 0, "no GSO super-frame was written");
    // The flow is in the table, both tuples, with counters.
    let flows = handle.flows().snapshot(Instant::now(), |_| true);
    let f = flows
        .iter()
        .find(|f| f.original.src_port == sport)
        .expect("flow listed");
    assert_eq!(f.original.src, std::net::IpAddr::V4(C_IP));
    assert_eq!(f.reply.dst_port, sport);
    assert!(f.packets[0] > 0 && f.packets[1] > 0);
    assert!(f.bytes[1] > 500_000);
    assert!(f.assured);
    // The container closes; the connection ends both ways.
    c.sockets.get_mut::<tcp::Socket>(h).close();
    c.until("closed", |c| {
        matches!(
            c.state(h),
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
        )
    });
    handle.shutdown();
}

/// An egress connection takes the timestamps the container offers, as
/// the remote server would behind a kernel NAT, and echoes them.
#[test]
fn an_egress_connection_negotiates_the_containers_timestamps() {
    let (handle, peer) = connector(false, true);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut c = Container::new(&handle, peer);
    let sport = 30_000 + u16::try_from(std::process::id() % 5_000).unwrap();
    let h = c.connect(Ipv4Addr::LOCALHOST, port, sport);
    c.sockets
        .get_mut::<tcp::Socket>(h)
        .set_tsval_generator(Some(|| 7_777));
    let outside = std::thread::spawn(move || server.accept().unwrap().0);
    c.until("connected", |c| c.state(h) == tcp::State::Established);
    let syn_ack = c
        .first_tcp_header(|t| t.syn() && t.ack())
        .expect("the connector's SYN-ACK");
    assert!(
        syn_ack.options_iterator().any(|o| matches!(
            o,
            Ok(etherparse::TcpOptionElement::Timestamp(v, 7_777)) if v != 0
        )),
        "the SYN-ACK does not echo the container's timestamp: {:?}",
        syn_ack.options
    );
    drop(outside.join().unwrap());
    handle.shutdown();
}

#[test]
fn tcp_to_a_closed_port_is_reset() {
    let (handle, peer) = connector(false, true);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut c = Container::new(&handle, peer);
    let h = c.connect(Ipv4Addr::LOCALHOST, port, 41_000);
    c.until("reset", |c| c.state(h) == tcp::State::Closed);
    handle.shutdown();
}

/// A SYN the container sends to `dst` (built by hand, so no handshake is
/// needed to see it dropped).
fn syn_frame(dst: Ipv4Addr, dport: u16) -> PacketBuf {
    syn_frame_from(42_000, dst, dport)
}

/// The container's SYN from its port `sport`.
fn syn_frame_from(sport: u16, dst: Ipv4Addr, dport: u16) -> PacketBuf {
    let b = etherparse::PacketBuilder::ethernet2(C_MAC.0, GW_MAC.0)
        .ipv4(C_IP.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 64_000)
        .syn();
    let mut f = Vec::new();
    b.write(&mut f, &[]).unwrap();
    PacketBuf::from_frame(&f).unwrap()
}

fn wait_drops(handle: &HostConnector, reason: DropReason, n: u64) {
    let deadline = Instant::now() + HANG_GUARD;
    while drops(handle, reason) < n {
        assert!(Instant::now() < deadline, "{reason:?} not counted");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn policy_drops_are_counted_per_reason() {
    // --internal: nothing beyond the host.
    let (handle, _peer) = connector(true, true);
    let link = handle.link();
    link.offer(PORT, &mut syn_frame(Ipv4Addr::LOCALHOST, 9))
        .unwrap();
    wait_drops(&handle, DropReason::Internal, 1);
    // Another network's container.
    link.offer(PORT, &mut syn_frame(Ipv4Addr::new(172, 31, 0, 9), 80))
        .unwrap();
    wait_drops(&handle, DropReason::InterNetwork, 1);
    assert!(handle.flows().is_empty(), "no flow made for a dropped SYN");
    handle.shutdown();

    // enable_ip_masquerade=false.
    let (handle, _peer) = connector(false, false);
    handle
        .link()
        .offer(PORT, &mut syn_frame(Ipv4Addr::LOCALHOST, 9))
        .unwrap();
    wait_drops(&handle, DropReason::MasqueradeDisabled, 1);
    handle.shutdown();
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let (handle, _peer) = connector(false, true);
    let link = handle.link();
    let mut f = syn_frame(Ipv4Addr::LOCALHOST, 9).frame().to_vec();
    f.truncate(30);
    link.offer(PORT, &mut PacketBuf::from_frame(&f).unwrap())
        .unwrap();
    // Spoofed source: another address than the port's.
    let mut spoof = syn_frame(Ipv4Addr::LOCALHOST, 9).frame().to_vec();
    spoof[14 + 15] = 99;
    link.offer(PORT, &mut PacketBuf::from_frame(&spoof).unwrap())
        .unwrap();
    wait_drops(&handle, DropReason::HostUnsupported, 1);
    wait_drops(&handle, DropReason::SrcIpSpoofed, 1);
    // Still serving.
    assert!(handle.port_stats().is_ok());
    handle.shutdown();
}

fn udp_frame(dst: SocketAddrV4, sport: u16, payload: &[u8]) -> PacketBuf {
    let b = etherparse::PacketBuilder::ethernet2(C_MAC.0, GW_MAC.0)
        .ipv4(C_IP.octets(), dst.ip().octets(), 64)
        .udp(sport, dst.port());
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    PacketBuf::from_frame(&f).unwrap()
}

/// The next frame the connector writes to the container.
fn next_frame(peer: &UnixDatagram) -> (VnetHdr, Vec<u8>) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match recv_frame(peer) {
            Ok(x) => return x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no frame from the connector");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn udp_egress_round_trip_keeps_the_port_and_tracks_the_flow() {
    let (handle, peer) = connector(false, true);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = match server.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => unreachable!(),
    };
    let sport = 43_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    handle
        .link()
        .offer(PORT, &mut udp_frame(dst, sport, b"hello"))
        .unwrap();
    server.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut b = [0u8; 64];
    let (n, from) = server.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"hello");
    assert_eq!(from.port(), sport, "source port kept");
    server.send_to(b"world!", from).unwrap();
    let (_, f) = next_frame(&peer);
    let (eth, rest) = etherparse::Ethernet2Header::from_slice(&f).unwrap();
    assert_eq!(eth.destination, C_MAC.0);
    let ip = etherparse::Ipv4Slice::from_slice(rest).unwrap();
    assert_eq!(ip.header().source_addr(), *dst.ip());
    assert_eq!(ip.header().destination_addr(), C_IP);
    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).unwrap();
    assert_eq!(udp.source_port(), dst.port());
    assert_eq!(udp.destination_port(), sport);
    assert_eq!(udp.payload(), b"world!");
    let sum = udp
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
        .unwrap();
    assert_eq!(udp.checksum(), sum, "UDP checksum");
    let flows = handle.flows().snapshot(Instant::now(), |_| true);
    let f = flows.iter().find(|f| f.original.src_port == sport).unwrap();
    assert_eq!(f.state.to_string(), "REPLIED");
    assert_eq!(f.packets, [1, 1]);
    handle.shutdown();
}

#[test]
fn published_tcp_from_loopback_is_carried_from_the_gateway() {
    let (handle, peer) = connector(false, true);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 80);
    let mut c = Container::new(&handle, peer);
    let h = c.listen(80);
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        b
    });
    c.until("accepted", |c| c.state(h) == tcp::State::Established);
    let remote = c.sockets.get::<tcp::Socket>(h).remote_endpoint().unwrap();
    assert_eq!(
        remote.addr,
        IpAddress::Ipv4(GW),
        "a loopback client is seen as the gateway"
    );
    let mut got = Vec::new();
    c.until("request", |c| {
        c.read_into(h, &mut got);
        got.len() >= 4
    });
    assert_eq!(got, b"ping");
    c.sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(b"pong")
        .unwrap();
    c.until("answer sent", |c| {
        c.sockets.get::<tcp::Socket>(h).send_queue() == 0
    });
    assert_eq!(&client.join().unwrap(), b"pong");
    handle.detach(&publication.port);
    handle.shutdown();
}

/// A container that asks for the usual MSS (MTU 1500) still gets a
/// published connection's data as super-frames cut at that MSS, as an
/// egress connection's: the endpoint is not held to 1460-byte segments.
#[test]
fn published_tcp_data_reaches_the_container_as_super_frames_cut_at_its_mss() {
    let (handle, peer) = connector(false, true);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 80);
    let mut c = Container::with_mtu(&handle, peer, 1500);
    let h = c.listen(80);
    const LEN: usize = 256 << 10;
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| pattern(i, 251)).collect();
        s.write_all(&data).unwrap();
        s
    });
    let mut got = Vec::new();
    c.until("the client's data", |c| {
        c.read_into(h, &mut got);
        got.len() >= LEN
    });
    assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i, 251)));
    // The SYN carries a timestamp, so the container's kernel takes it
    // even on a pair it holds in TIME_WAIT.
    let syn = c
        .first_tcp_header(|t| t.syn() && !t.ack())
        .expect("the connector's SYN to the container");
    assert!(
        syn.options_iterator().any(|o| matches!(
            o,
            Ok(etherparse::TcpOptionElement::Timestamp(v, _)) if v != 0
        )),
        "no timestamp in the SYN: {:?}",
        syn.options
    );
    let supers: Vec<_> = c
        .wire
        .seen
        .iter()
        .filter(|(_, f)| f.len() > 14 + 1500)
        .collect();
    assert!(!supers.is_empty(), "no frame larger than the MTU");
    for (vnet, f) in supers {
        assert!(vnet.is_gso(), "a {}-byte frame without GSO", f.len());
        assert_eq!(vnet.gso_size, 1460, "cut at the container's MSS");
    }
    drop(client.join().unwrap());
    handle.detach(&publication.port);
    handle.shutdown();
}

#[test]
fn published_tcp_bulk_uses_super_frames_and_a_bounded_set_of_buffers() {
    let (handle, peer) = connector(false, true);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 5201);
    // A container on a 1500-byte MTU: its SYN-ACK says MSS 1460.
    let mut c = Container::with_mtu(&handle, peer, 1500);
    // A 128 KiB window: what the connector may send at once fits in the
    // datagram socket standing for the port (a TAP queues 1,000 frames).
    let h = c.sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 128 << 10]),
        tcp::SocketBuffer::new(vec![0; 4 << 10]),
    ));
    c.sockets.get_mut::<tcp::Socket>(h).listen(5201).unwrap();
    const LEN: usize = 6 << 20;
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| pattern(i, 239)).collect();
        s.write_all(&data).unwrap();
    });
    let mut got = 0usize;
    let mut in_order = true;
    c.until("the client's bytes", |c| {
        let s = c.sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() {
            s.recv(|b| {
                in_order &= b
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == pattern(got + i, 239));
                got += b.len();
                (b.len(), ())
            })
            .unwrap();
        }
        got >= LEN
    });
    client.join().unwrap();
    assert!(in_order, "the container got the client's bytes in order");
    // Bulk toward the container goes as super-frames cut at its MSS, as on
    // the egress path, not as one frame per MSS.
    assert!(
        c.wire.super_frames() > 0,
        "no GSO super-frame was written on the published path"
    );
    assert!(
        c.wire.seen.len() < LEN / 1460 / 4,
        "{} frames for {LEN} bytes",
        c.wire.seen.len()
    );
    // Every buffer the connector wrote with is back in its pools, and
    // there are no more of them than it started with.
    let held = handle.buffers().unwrap();
    assert!(
        held <= super::OUT_BUFFERS + super::tcp::STACK_BUFFERS,
        "the connector holds {held} frame buffers after {} frames",
        c.wire.seen.len()
    );
    handle.detach(&publication.port);
    handle.shutdown();
}

#[test]
fn published_udp_reaches_the_container_and_its_answer_the_client() {
    let (handle, peer) = connector(false, true);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host_port = sock.local_addr().unwrap().port();
    let publication = publication(nat::spec::Proto::Udp, 81, Ipv4Addr::LOCALHOST, host_port);
    handle.attach(publication, HostSocket::Udp(sock));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(HANG_GUARD)).unwrap();
    client.send_to(b"q", ("127.0.0.1", host_port)).unwrap();
    let (_, f) = next_frame(&peer);
    let ip = etherparse::Ipv4Slice::from_slice(&f[14..]).unwrap();
    assert_eq!(
        ip.header().source_addr(),
        GW,
        "loopback client seen as the gateway"
    );
    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).unwrap();
    assert_eq!(udp.destination_port(), 81);
    assert_eq!(udp.payload(), b"q");
    // The container answers the address it saw.
    let mut answer = {
        let b = etherparse::PacketBuilder::ethernet2(C_MAC.0, GW_MAC.0)
            .ipv4(C_IP.octets(), GW.octets(), 64)
            .udp(81, udp.source_port());
        let mut v = Vec::new();
        b.write(&mut v, b"a").unwrap();
        PacketBuf::from_frame(&v).unwrap()
    };
    handle.link().offer(PORT, &mut answer).unwrap();
    let mut b = [0u8; 8];
    let (n, from) = client.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"a");
    assert_eq!(
        from.port(),
        host_port,
        "the answer leaves from the published port"
    );
    handle.shutdown();
}

#[test]
fn removing_the_port_purges_its_flows() {
    let (handle, _peer) = connector(false, true);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = match server.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => unreachable!(),
    };
    handle
        .link()
        .offer(PORT, &mut udp_frame(dst, 44_444, b"x"))
        .unwrap();
    server.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut b = [0u8; 4];
    server.recv_from(&mut b).unwrap();
    assert_eq!(handle.flows().len(), 1);
    handle.remove_port(PORT).unwrap();
    assert!(handle.flows().is_empty(), "the endpoint's flows are purged");
    handle.shutdown();
}

#[test]
fn the_fuzz_entry_survives_truncated_and_corrupted_frames() {
    let dst = SocketAddrV4::new(Ipv4Addr::new(10, 231, 0, 2), 53);
    let seeds = [
        syn_frame(Ipv4Addr::new(10, 231, 0, 2), 80).frame().to_vec(),
        udp_frame(dst, 40_000, b"hello").frame().to_vec(),
    ];
    for seed in &seeds {
        for len in 0..=seed.len() {
            super::fuzz_frame(&seed[..len]);
        }
        for i in 0..seed.len() {
            for flip in [0x01, 0x0f, 0x80, 0xff] {
                let mut f = seed.clone();
                f[i] ^= flip;
                super::fuzz_frame(&f);
            }
        }
    }
}

/// The control plane closes a binding and may bind the same port again
/// in the same request (a rollback, a reconnect): the connector must have
/// closed its socket by the time `detach` returns.
#[test]
fn a_detached_port_can_be_bound_again_at_once() {
    let (handle, _peer) = connector(false, true);
    let localhost = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
    for proto in [nat::spec::Proto::Tcp, nat::spec::Proto::Udp] {
        let host_port = match crate::publish::open_host_socket(localhost, proto, 0).unwrap() {
            HostSocket::Tcp(l) => l.local_addr().unwrap().port(),
            HostSocket::Udp(s) => s.local_addr().unwrap().port(),
        };
        let publication = publication(proto, 80, Ipv4Addr::LOCALHOST, host_port);
        for round in 0..20 {
            let socket = crate::publish::open_host_socket(localhost, proto, host_port)
                .unwrap_or_else(|e| panic!("{proto:?} round {round}: bind again: {e}"));
            handle.attach(publication, socket);
            handle.detach(&publication.port);
        }
    }
}

#[test]
fn hairpin_a_container_reaches_its_own_published_port_through_the_host() {
    let (handle, peer) = connector(false, true);
    let (_, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 80);
    let mut c = Container::new(&handle, peer);
    let server = c.listen(80);
    let client = c.connect(Ipv4Addr::LOCALHOST, host_port, 45_000);
    carry_through_the_host(
        &mut c,
        (client, server),
        b"hairpin",
        "through loopback: the gateway",
    );
    // One flow out (container → host socket), one in (published → container).
    assert_eq!(handle.flows().len(), 2);
    handle.shutdown();
}

/// A publication of the container's `proto` port `container_port` on
/// `host_ip:host_port`.
fn publication(
    proto: nat::spec::Proto,
    container_port: u16,
    host_ip: Ipv4Addr,
    host_port: u16,
) -> Publication {
    Publication {
        network: NET,
        container: SocketAddrV4::new(C_IP, container_port),
        gateway: GW,
        port: nat::alloc::PublishedPort {
            container_port,
            proto,
            host_ip: std::net::IpAddr::V4(host_ip),
            host_port,
        },
    }
}

/// Publishes the container's TCP `container_port` on `host_ip` (loopback,
/// or every address as `-p P:80` binds) at a port the host picks: the
/// publication and that port.
fn publish_tcp(
    handle: &HostConnector,
    host_ip: Ipv4Addr,
    container_port: u16,
) -> (Publication, u16) {
    let listener = TcpListener::bind((host_ip, 0)).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let publication = publication(nat::spec::Proto::Tcp, container_port, host_ip, host_port);
    handle.attach(publication, HostSocket::Tcp(listener));
    (publication, host_port)
}

/// Waits until the container's `client` reached its own `server`
/// through the host, checks that `server` sees it from the gateway
/// (`why`), and carries `data` from one to the other.
fn carry_through_the_host(
    c: &mut Container,
    (client, server): (smoltcp::iface::SocketHandle, smoltcp::iface::SocketHandle),
    data: &[u8],
    why: &str,
) {
    c.until("both ends up", |c| {
        c.state(client) == tcp::State::Established && c.state(server) == tcp::State::Established
    });
    let seen = c
        .sockets
        .get::<tcp::Socket>(server)
        .remote_endpoint()
        .unwrap();
    assert_eq!(seen.addr, IpAddress::Ipv4(GW), "{why}");
    c.sockets
        .get_mut::<tcp::Socket>(client)
        .send_slice(data)
        .unwrap();
    let mut got = Vec::new();
    c.until("data through the host and back", |c| {
        c.read_into(server, &mut got);
        got.len() >= data.len()
    });
    assert_eq!(got, data);
}

#[test]
fn the_gateway_address_reaches_a_port_published_on_every_address() {
    let (handle, peer) = connector(false, true);
    // Bound on every address as `-p P:80` binds; only loopback carries
    // the test's traffic.
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::UNSPECIFIED, 80);
    let mut c = Container::new(&handle, peer);
    let server = c.listen(80);
    let client = c.connect(GW, host_port, 45_001);
    carry_through_the_host(
        &mut c,
        (client, server),
        b"via gw",
        "seen from the gateway, as docker-proxy",
    );
    let flows = handle.flows().snapshot(Instant::now(), |_| true);
    let out = flows
        .iter()
        .find(|f| f.original.src_port == 45_001)
        .expect("the container's flow to its gateway");
    assert_eq!(out.original.dst, std::net::IpAddr::V4(GW));
    assert_eq!(out.original.dst_port, host_port);
    assert_eq!(
        (out.reply.src, out.reply.src_port),
        (std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), host_port),
        "carried through the host's loopback"
    );
    assert!(
        flows.iter().any(|f| f.original.dst_port == host_port
            && f.original.dst == std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "and accepted on the published port, with the address it reached"
    );
    handle.detach(&publication.port);
    handle.shutdown();
}

#[test]
fn the_gateway_address_reaches_the_hosts_own_service() {
    let (handle, peer) = connector(false, true);
    // The packet-level tests' host address is loopback.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, from) = service.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"world").unwrap();
        (b, from)
    });
    let mut c = Container::new(&handle, peer);
    let client = c.connect(GW, port, 45_002);
    c.until("connected", |c| c.state(client) == tcp::State::Established);
    c.sockets
        .get_mut::<tcp::Socket>(client)
        .send_slice(b"hello")
        .unwrap();
    let mut got = Vec::new();
    c.until("the service's answer", |c| {
        c.read_into(client, &mut got);
        got.len() >= 5
    });
    assert_eq!(got, b"world");
    let (asked, from) = server.join().unwrap();
    assert_eq!(&asked, b"hello");
    assert_eq!(from.port(), 45_002, "the container's source port kept");
    let flows = handle.flows().snapshot(Instant::now(), |_| true);
    let f = flows
        .iter()
        .find(|f| f.original.src_port == 45_002)
        .unwrap();
    assert_eq!(f.original.dst, std::net::IpAddr::V4(GW));
    assert_eq!(f.reply.src_port, port);
    handle.shutdown();
}

#[test]
fn udp_to_the_gateway_address_reaches_the_host_and_answers_from_the_gateway() {
    let (handle, peer) = connector(false, true);
    let service = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    handle
        .link()
        .offer(
            PORT,
            &mut udp_frame(SocketAddrV4::new(GW, port), 43_999, b"ask"),
        )
        .unwrap();
    service.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut b = [0u8; 16];
    let (n, from) = service.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"ask");
    service.send_to(b"answer", from).unwrap();
    let (_, f) = next_frame(&peer);
    let (_, rest) = etherparse::Ethernet2Header::from_slice(&f).unwrap();
    let ip = etherparse::Ipv4Slice::from_slice(rest).unwrap();
    assert_eq!(
        ip.header().source_addr(),
        GW,
        "the answer comes from the gateway"
    );
    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).unwrap();
    assert_eq!(udp.source_port(), port);
    assert_eq!(udp.destination_port(), 43_999);
    assert_eq!(udp.payload(), b"answer");
    handle.shutdown();
}

#[test]
fn an_internal_network_reaches_the_host_through_its_gateway_but_no_published_port() {
    let (handle, _peer) = connector(true, true);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::UNSPECIFIED, 80);
    handle
        .link()
        .offer(PORT, &mut syn_frame(GW, host_port))
        .unwrap();
    wait_drops(&handle, DropReason::Internal, 1);
    assert!(handle.flows().is_empty(), "no flow for a dropped SYN");
    // The host's own service (not published) is reached, as Docker's
    // INPUT lets an internal network reach its gateway.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    // A source port the host can bind now, so that the connector keeps
    // it: a fixed one may still be in TIME_WAIT from an earlier run, or
    // bound by another test of this binary.
    let sport = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    handle
        .link()
        .offer(PORT, &mut syn_frame_from(sport, GW, port))
        .unwrap();
    service.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    let from = loop {
        match service.accept() {
            Ok((_, from)) => break from,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the host's service was not reached"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(from.port(), sport, "the SYN's source port");
    assert_eq!(drops(&handle, DropReason::Internal), 1);
    handle.detach(&publication.port);
    handle.shutdown();
}

/// Asserts that the host client's next read finds its connection reset.
#[track_caller]
fn assert_reset(client: &mut TcpStream) {
    client.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut b = [0u8; 8];
    let read = client.read(&mut b);
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client's connection is reset: {read:?}"
    );
}

#[test]
fn releasing_a_published_port_resets_its_accepted_connections() {
    let (handle, peer) = connector(false, true);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 80);
    let mut c = Container::new(&handle, peer);
    let server = c.listen(80);
    let mut client = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    client.write_all(b"x").unwrap();
    c.until("accepted", |c| c.state(server) == tcp::State::Established);
    handle.detach(&publication.port);
    c.until("reset toward the container", |c| {
        c.state(server) == tcp::State::Listen || c.state(server) == tcp::State::Closed
    });
    assert_reset(&mut client);
    handle.shutdown();
}

#[test]
fn frames_are_handed_over_by_ownership_and_kept_when_the_queue_is_full() {
    // A connector that never runs: its queue only fills.
    let (inner, handle) = HostConnector::new(nat::conntrack::Config::default()).unwrap();
    let link = handle.link();
    let mut slot = syn_frame(Ipv4Addr::LOCALHOST, 9);
    let sent = slot.frame().to_vec();
    link.offer(PORT, &mut slot).unwrap();
    assert!(slot.is_empty(), "the worker's slot holds an empty buffer");
    let got = inner.frames.try_recv().unwrap();
    assert_eq!(got.port, PORT);
    assert_eq!(got.buf.frame(), &sent[..], "the frame moved, unchanged");
    // A buffer the connector gave back is the one the next offer leaves.
    inner.recycle.send(got.buf).unwrap();
    let mut slot = syn_frame(Ipv4Addr::LOCALHOST, 10);
    link.offer(PORT, &mut slot).unwrap();
    assert!(slot.is_empty());
    assert!(inner.frames.len() == 1 && handle.link().shards[0].recycle.is_empty());
    for _ in 1..super::QUEUE {
        link.offer(PORT, &mut syn_frame(Ipv4Addr::LOCALHOST, 11))
            .unwrap();
    }
    let mut slot = syn_frame(Ipv4Addr::LOCALHOST, 12);
    assert_eq!(link.offer(PORT, &mut slot), Err(DropReason::HostBusy));
    assert_eq!(
        slot.frame(),
        syn_frame(Ipv4Addr::LOCALHOST, 12).frame(),
        "a refused frame stays in its slot"
    );
}

/// A TCP frame from `src:sport` to `dst:dport` (headers only).
fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

#[test]
fn a_connections_segments_both_ways_pick_the_same_shard_and_connections_spread() {
    let a = Ipv4Addr::new(172, 30, 0, 2);
    let b = Ipv4Addr::new(10, 1, 2, 3);
    let mut used = [0usize; 3];
    for sport in 40_000..40_300u16 {
        let out = super::shard_of_frame(&tcp_frame(a, sport, b, 80), 3);
        let back = super::shard_of_frame(&tcp_frame(b, 80, a, sport), 3);
        assert_eq!(out, back, "both directions of {sport} on one shard");
        assert_eq!(out, super::shard_of_quad(b, 80, a, sport, 3));
        used[out] += 1;
    }
    assert!(
        used.iter().all(|&n| n > 50),
        "300 connections spread over 3 shards: {used:?}"
    );
    // One shard: no parsing, always 0.
    assert_eq!(super::shard_of_frame(&tcp_frame(a, 1, b, 2), 1), 0);
}

#[test]
fn what_is_not_a_first_tcp_fragment_goes_to_the_first_shard() {
    let a = Ipv4Addr::new(172, 30, 0, 2);
    let b = Ipv4Addr::new(10, 1, 2, 3);
    // A port pair whose connection is not shard 0's.
    let sport = (1..u16::MAX)
        .find(|&p| super::shard_of_quad(a, p, b, 53, 4) != 0)
        .unwrap();
    let tcp = tcp_frame(a, sport, b, 53);
    assert_ne!(super::shard_of_frame(&tcp, 4), 0);
    let mut udp = tcp.clone();
    udp[23] = 17;
    assert_eq!(super::shard_of_frame(&udp, 4), 0, "UDP");
    let mut icmp = tcp.clone();
    icmp[23] = 1;
    assert_eq!(super::shard_of_frame(&icmp, 4), 0, "ICMP");
    let mut frag = tcp.clone();
    frag[21] = 0x10;
    assert_eq!(super::shard_of_frame(&frag, 4), 0, "a later fragment");
    let mut arp = tcp.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(super::shard_of_frame(&arp, 4), 0, "not IPv4");
    for cut in 0..tcp.len() {
        let _ = super::shard_of_frame(&tcp[..cut], 4);
    }
    assert_eq!(super::shard_of_frame(&tcp[..37], 4), 0, "truncated ports");
}

/// Source ports whose connections to `server` fall on each of `shards`.
fn ports_per_shard(server: std::net::SocketAddr, shards: usize, per: usize) -> Vec<u16> {
    let ip = Ipv4Addr::LOCALHOST;
    // Below the ephemeral range and apart from the other tests' fixed
    // ports (40,000–63,000), which run at the same time on the same host.
    let base = 20_000 + u16::try_from(std::process::id() % 8_000).unwrap();
    let mut ports = Vec::new();
    for shard in 0..shards {
        let mut n = 0;
        for p in base..base + 2_000 {
            if n < per && super::shard_of_quad(C_IP, p, ip, server.port(), shards) == shard {
                ports.push(p);
                n += 1;
            }
        }
    }
    ports
}

#[test]
fn with_two_shards_egress_connections_on_each_carry_data_and_are_all_listed() {
    let (handle, peer) = sharded(2);
    assert_eq!(handle.shards(), 2);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let sports = ports_per_shard(server_addr, 2, 2);
    assert_eq!(sports.len(), 4);
    let n = sports.len();
    // The outside: echoes 100 KB on each connection.
    let outside = std::thread::spawn(move || {
        let mut from = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let (mut s, peer) = server.accept().unwrap();
            from.push(peer.port());
            threads.push(std::thread::spawn(move || {
                let mut got = vec![0u8; 100_000];
                s.read_exact(&mut got).unwrap();
                s.write_all(&got).unwrap();
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        from
    });
    let mut c = Container::new(&handle, peer);
    let mut socks = Vec::new();
    for &sport in &sports {
        let h = c.connect(Ipv4Addr::LOCALHOST, server_addr.port(), sport);
        socks.push(h);
    }
    let sent: Vec<u8> = (0..100_000).map(|i| pattern(i, 239)).collect();
    let mut at = vec![0usize; n];
    let mut got = vec![Vec::new(); n];
    c.until("every echo back", |c| {
        for (k, &h) in socks.iter().enumerate() {
            let s = c.sockets.get_mut::<tcp::Socket>(h);
            if at[k] < sent.len() && s.can_send() {
                at[k] += s.send_slice(&sent[at[k]..]).unwrap();
            }
            while s.can_recv() {
                s.recv(|b| {
                    got[k].extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
        }
        got.iter().all(|g| g.len() >= sent.len())
    });
    for g in &got {
        assert_eq!(g, &sent, "each connection's bytes came back in order");
    }
    let mut from = outside.join().unwrap();
    from.sort_unstable();
    let mut want = sports.clone();
    want.sort_unstable();
    assert_eq!(from, want, "every source port kept");
    // Every connection, whatever its shard, in the one flow table.
    let flows = handle.flows().snapshot(Instant::now(), |_| true);
    for sport in &sports {
        assert!(
            flows
                .iter()
                .any(|f| f.original.src_port == *sport && f.assured),
            "flow from {sport} listed"
        );
    }
    // The counters are the sum of both shards': every frame the container
    // read is counted once.
    c.until("the counters account for every frame", |c| {
        let tx = handle
            .port_stats()
            .unwrap()
            .into_iter()
            .find(|(p, _)| *p == PORT)
            .map_or(0, |(_, s)| s.tx_packets);
        tx == u64::try_from(c.wire.seen.len()).unwrap()
    });
    handle.shutdown();
}

#[test]
fn with_two_shards_published_connections_are_dealt_out_and_a_release_resets_all() {
    let (handle, peer) = sharded(2);
    let (publication, host_port) = publish_tcp(&handle, Ipv4Addr::LOCALHOST, 80);
    let mut c = Container::new(&handle, peer);
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for k in 0..4u8 {
        let h = c.listen(80);
        servers.push(h);
        let mut client = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
        client.write_all(&[k]).unwrap();
        clients.push(client);
        c.until("accepted", |c| c.state(h) == tcp::State::Established);
    }
    // Seen from the gateway, from ports on both shards.
    let mut shards = std::collections::BTreeSet::new();
    for &h in &servers {
        let remote = c.sockets.get::<tcp::Socket>(h).remote_endpoint().unwrap();
        assert_eq!(remote.addr, IpAddress::Ipv4(GW));
        shards.insert(super::shard_of_quad(C_IP, 80, GW, remote.port, 2));
    }
    assert_eq!(shards.len(), 2, "connections on both shards");
    // Each connection carries its own byte both ways.
    for (k, &h) in servers.iter().enumerate() {
        let mut b = Vec::new();
        c.until("request", |c| {
            c.read_into(h, &mut b);
            !b.is_empty()
        });
        assert_eq!(b, [u8::try_from(k).unwrap()]);
    }
    assert!(
        handle
            .flows()
            .snapshot(Instant::now(), |_| true)
            .iter()
            .filter(|f| f.original.dst_port == host_port)
            .count()
            == 4,
        "every published connection listed"
    );
    handle.detach(&publication.port);
    c.until("every connection reset toward the container", |c| {
        servers
            .iter()
            .all(|&h| matches!(c.state(h), tcp::State::Listen | tcp::State::Closed))
    });
    for mut client in clients {
        assert_reset(&mut client);
    }
    handle.shutdown();
}

/// A data segment from the container as its kernel would retransmit it.
fn data_frame(sport: u16, dport: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp_frame(C_IP, sport, Ipv4Addr::LOCALHOST, dport);
    f[0..6].copy_from_slice(&GW_MAC.0);
    f[6..12].copy_from_slice(&C_MAC.0);
    f.extend_from_slice(payload);
    let total = u16::try_from(f.len() - 14).unwrap();
    super::frame::ipv4(
        &mut f[14..34],
        C_IP,
        Ipv4Addr::LOCALHOST,
        smoltcp::wire::IpProtocol::Tcp,
        payload.len() + 20,
    );
    assert_eq!(u16::from_be_bytes([f[16], f[17]]), total);
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18; // ACK, PSH
    f[48..50].copy_from_slice(&1024u16.to_be_bytes());
    f
}

/// The TCP header's fields of a frame the connector wrote: (seq, ack,
/// SACK blocks).
type Sacks = [Option<(u32, u32)>; 3];

fn tcp_fields(frame: &[u8]) -> Option<(u32, u32, Sacks)> {
    let ip = smoltcp::wire::Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
        return None;
    }
    let p = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
    let mut sacks = [None; 3];
    let mut opts = p.options();
    while !opts.is_empty() {
        let (rest, opt) = smoltcp::wire::TcpOption::parse(opts).ok()?;
        if let smoltcp::wire::TcpOption::SackRange(r) = opt {
            sacks = r;
        }
        if matches!(opt, smoltcp::wire::TcpOption::EndOfList) {
            break;
        }
        opts = rest;
    }
    Some((
        p.seq_number().0.cast_unsigned(),
        p.ack_number().0.cast_unsigned(),
        sacks,
    ))
}

#[test]
fn data_the_container_sends_twice_is_reported_with_a_dsack_block_and_delivered_once() {
    let (handle, peer) = connector(false, true);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let dport = server.local_addr().unwrap().port();
    let outside = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut c = Container::new(&handle, peer);
    let sport = 21_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let sent: Vec<u8> = (0..1000).map(|i| pattern(i, 239)).collect();
    let (h, seq, acked) = c.sent_and_acknowledged(dport, sport, &sent);
    // The container sends its last 100 bytes again, as after a tail loss
    // probe that fired too early.
    let before = c.wire.seen.len();
    let mut dup =
        PacketBuf::from_frame(&data_frame(sport, dport, acked - 100, seq, &sent[900..])).unwrap();
    c.wire.link.offer(PORT, &mut dup).unwrap();
    c.until("the answer to the duplicate", |c| {
        c.wire.seen[before..]
            .iter()
            .filter_map(|(_, f)| tcp_fields(f))
            .any(|(_, ack, sacks)| ack == acked && sacks[0] == Some((acked - 100, acked)))
    });
    // Data the container has not sent twice carries no D-SACK block.
    let before = c.wire.seen.len();
    c.sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(&sent[..10])
        .unwrap();
    c.until("acknowledged", |c| {
        c.sockets.get::<tcp::Socket>(h).send_queue() == 0
    });
    assert!(
        c.wire.seen[before..]
            .iter()
            .filter_map(|(_, f)| tcp_fields(f))
            .all(|(_, _, sacks)| sacks[0].is_none()),
        "a D-SACK block without a duplicate"
    );
    c.sockets.get_mut::<tcp::Socket>(h).close();
    c.until("closed", |c| {
        matches!(
            c.sockets.get::<tcp::Socket>(h).state(),
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
        )
    });
    let got = outside.join().unwrap();
    let mut want = sent.clone();
    want.extend_from_slice(&sent[..10]);
    assert_eq!(got, want, "the duplicate reached the outside once");
    handle.shutdown();
}

#[test]
fn a_copy_that_arrives_before_its_original_is_acknowledged_is_reported_with_a_dsack_block() {
    let (handle, peer) = connector(false, true);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let dport = server.local_addr().unwrap().port();
    let outside = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut got = vec![0u8; 1100];
        s.read_exact(&mut got).map(|()| got)
    });
    let mut c = Container::new(&handle, peer);
    let sport = 21_000 + u16::try_from(std::process::id() % 20_000).unwrap() + 1;
    let sent: Vec<u8> = (0..1000).map(|i| pattern(i, 241)).collect();
    let (h, seq, acked) = c.sent_and_acknowledged(dport, sport, &sent);
    // 100 new bytes and, right behind them, the same segment again (a
    // probe that fired while the original waited for the connector): the
    // copy starts before what the connector has, though not before what
    // it has acknowledged yet.
    let more: Vec<u8> = (0..100).map(|i| pattern(i, 17)).collect();
    let before = c.wire.seen.len();
    for _ in 0..2 {
        let mut f = PacketBuf::from_frame(&data_frame(sport, dport, acked, seq, &more)).unwrap();
        c.wire.link.offer(PORT, &mut f).unwrap();
    }
    let end = acked.wrapping_add(100);
    c.until("the answer to the copy", |c| {
        c.wire.seen[before..]
            .iter()
            .filter_map(|(_, f)| tcp_fields(f))
            .any(|(_, ack, sacks)| ack == end && sacks[0] == Some((acked, end)))
    });
    let got = outside
        .join()
        .unwrap()
        .expect("the outside read 1,100 bytes");
    let mut want = sent;
    want.extend_from_slice(&more);
    assert_eq!(got, want, "the copy reached the outside once");
    c.sockets.get_mut::<tcp::Socket>(h).abort();
    handle.shutdown();
}
