//! A container is hostile: what it sends must not reach the host, disturb
//! its neighbours or exhaust the daemon. Each test crafts frames inside a
//! sandbox (a packet socket on its `eth0`) and checks what arrives where.
//!
//! They need root, `ip` and `ping`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use etherparse::PacketBuilder;
use vswitch::buf::PacketBuf;
use vswitch::netns::{Netns, run_in};
use vswitch::port::PacketSocketPort;
use vswitch::port::PortIo;
use vswitch_tests::{Daemon, prerequisites, run_ok, unique};

/// Docker's MAC for a bridge address.
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Sends raw Ethernet frames out of `ifname` inside `sandbox`.
fn send_frames(sandbox: &str, ifname: &str, frames: &[Vec<u8>]) {
    let ns = Netns::open_named(sandbox).expect("sandbox namespace");
    run_in(&ns, || {
        let port = PacketSocketPort::open(ifname).expect("packet socket in the sandbox");
        for frame in frames {
            let mut buf = PacketBuf::new();
            buf.set_frame(frame).expect("frame fits");
            port.send(&buf).expect("frame sent");
        }
    })
    .expect("enter the sandbox");
}

/// A UDP socket bound inside `sandbox` (or in the host's namespace).
fn udp_listener(sandbox: Option<&str>, addr: SocketAddr) -> UdpSocket {
    let bind = move || {
        let s = UdpSocket::bind(addr).expect("bind a listener");
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        s
    };
    match sandbox {
        Some(name) => run_in(&Netns::open_named(name).expect("namespace"), bind).expect("enter"),
        None => bind(),
    }
}

fn received(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

fn udp4(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40_000, port)
        .write(&mut out, b"hostile")
        .expect("frame");
    out
}

fn udp6(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src.octets(), dst.octets(), 255)
        .udp(40_000, port)
        .write(&mut out, b"hostile")
        .expect("frame");
    out
}

/// The host namespace's first global IPv4 address.
fn host_ipv4() -> Ipv4Addr {
    let out = run_ok("ip", &["-o", "-4", "addr", "show", "scope", "global"]);
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("the host has a global IPv4 address")
}

/// Every link-local IPv6 address in the host's namespace.
fn host_link_locals() -> Vec<Ipv6Addr> {
    let out = run_ok("ip", &["-o", "-6", "addr", "show", "scope", "link"]);
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok())
        })
        .collect()
}

#[test]
fn veth_container_frames_never_reach_a_host_socket() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    let (a, b) = (unique("vsha"), unique("vshb"));
    for s in [&a, &b] {
        d.vsctl_ok(&["sandbox", "create", s]);
        d.vsctl_ok(&["network", "connect", "--port-kind", "veth", "bridge", s]);
    }
    d.adopt_sandboxes(&[&a, &b]);
    let (ip_a, ip_b) = (Ipv4Addr::new(172, 17, 0, 2), Ipv4Addr::new(172, 17, 0, 3));
    assert!(d.ping(&a, "172.17.0.3", 1), "a reaches b");
    // The kernel gives an interface its link-local address after DAD.
    std::thread::sleep(Duration::from_secs(2));

    // Control: a crafted frame with a's true addresses reaches b's socket,
    // so the frames below are well formed and really sent.
    let in_b = udp_listener(Some(&b), (Ipv4Addr::UNSPECIFIED, 7001).into());
    send_frames(
        &a,
        "eth0",
        &[udp4(mac_of(ip_b), mac_of(ip_a), ip_a, ip_b, 7001)],
    );
    assert_eq!(
        received(&in_b).as_deref(),
        Some(&b"hostile"[..]),
        "control frame"
    );

    // IPv4 to the host's own address, with a forged and with a's source,
    // broadcast at L2 so whatever interface carries it takes it in.
    let host4 = udp_listener(None, (Ipv4Addr::UNSPECIFIED, 7002).into());
    let target = host_ipv4();
    let forged = Ipv4Addr::new(10, 66, 0, 9);
    send_frames(
        &a,
        "eth0",
        &[
            udp4([0xff; 6], mac_of(ip_a), forged, target, 7002),
            udp4([0xff; 6], mac_of(ip_a), ip_a, target, 7002),
        ],
    );
    let got4 = received(&host4);

    // IPv6 to all nodes and to every link-local address of the host.
    let host6 = udp_listener(None, (Ipv6Addr::UNSPECIFIED, 7003).into());
    let src6: Ipv6Addr = "fe80::42:acff:fe11:2".parse().expect("address");
    let mut frames = vec![udp6(
        [0x33, 0x33, 0, 0, 0, 1],
        mac_of(ip_a),
        src6,
        "ff02::1".parse().expect("address"),
        7003,
    )];
    for ll in host_link_locals() {
        frames.push(udp6([0xff; 6], mac_of(ip_a), src6, ll, 7003));
    }
    send_frames(&a, "eth0", &frames);
    let got6 = received(&host6);
    assert!(
        got4.is_none() && got6.is_none(),
        "frames from a container reached host sockets: IPv4 {got4:?}, IPv6 {got6:?}"
    );
}
