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

/// Reads frames arriving on `ifname` inside `sandbox` for `window`, and
/// returns those `keep` selects.
fn capture(
    sandbox: &str,
    ifname: &str,
    window: Duration,
    keep: impl Fn(&[u8]) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let ns = Netns::open_named(sandbox).expect("sandbox namespace");
    let port = run_in(&ns, || PacketSocketPort::open(ifname))
        .expect("enter")
        .expect("packet socket");
    let started = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn({
        let ready = started.0;
        move || {
            let _ = ready.send(());
            let end = std::time::Instant::now() + window;
            let mut got = Vec::new();
            let mut buf = PacketBuf::new();
            while std::time::Instant::now() < end {
                match port.recv(&mut buf) {
                    Ok(()) if keep(buf.frame()) => got.push(buf.frame().to_vec()),
                    Ok(()) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            got
        }
    });
    let _ = started.1.recv();
    handle
}

/// An IEEE 802.1 link-local frame (`01:80:c2:00:00:0e`, LLDP) from one
/// container never reaches another; a broadcast of the same EtherType does.
#[test]
fn link_local_control_frames_are_not_delivered() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    let (a, b) = (unique("vshc"), unique("vshd"));
    d.sandbox(&a, &["bridge"]);
    d.sandbox(&b, &["bridge"]);
    let src = mac_of(Ipv4Addr::new(172, 17, 0, 2));
    let lldp = |dst: [u8; 6]| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xcc]);
        f.extend_from_slice(&[0x5a; 46]);
        f
    };
    let seen = capture(&b, "eth0", Duration::from_secs(2), |f| {
        f.get(12..14) == Some(&[0x88, 0xcc][..])
    });
    send_frames(
        &a,
        "eth0",
        &[lldp([0x01, 0x80, 0xc2, 0, 0, 0x0e]), lldp([0xff; 6])],
    );
    let seen = seen.join().expect("capture");
    let dsts: Vec<&[u8]> = seen.iter().map(|f| &f[..6]).collect();
    assert_eq!(dsts, [&[0xff; 6][..]], "only the broadcast arrives");
    let ports = d.vsctl_ok(&["show-ports", "--format", "json"]);
    assert_eq!(counter(&ports, "link_local_control"), 1, "{ports}");
}

/// The number in `"name":N` of the first entry that has one.
fn counter(json: &str, name: &str) -> u64 {
    json.split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// An unknown-unicast flood from one container reaches each other port at
/// no more than the configured rate; the excess is counted.
#[test]
fn an_unknown_unicast_flood_is_rate_limited_and_counted() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let (rate, burst) = (200u64, 50u64);
    let mut d = Daemon::start_with(&["--flood-rate", "200", "--flood-burst", "50"]);
    let (a, b, c) = (unique("vshe"), unique("vshf"), unique("vshg"));
    for s in [&a, &b, &c] {
        d.sandbox(s, &["bridge"]);
    }
    let ip_a = Ipv4Addr::new(172, 17, 0, 2);
    let nowhere = [0x02, 0, 0, 0x5e, 0x5e, 0x01];
    let is_flood = move |f: &[u8]| f.get(..6) == Some(&nowhere[..]);
    let at_b = capture(&b, "eth0", Duration::from_secs(3), is_flood);
    let at_c = capture(&c, "eth0", Duration::from_secs(3), is_flood);
    let started = std::time::Instant::now();
    let frames: Vec<Vec<u8>> = (0..3000)
        .map(|_| udp4(nowhere, mac_of(ip_a), ip_a, Ipv4Addr::new(172, 17, 9, 9), 9))
        .collect();
    send_frames(&a, "eth0", &frames);
    let (got_b, got_c) = (at_b.join().expect("b"), at_c.join().expect("c"));
    // The capture ends 3 s after it started, just before `started`.
    let window = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ceiling = burst + (rate as f64 * window).ceil() as u64;
    for (who, got) in [("b", &got_b), ("c", &got_c)] {
        let n = got.len() as u64;
        assert!(
            n <= ceiling,
            "{who} got {n} flooded frames, more than {ceiling}"
        );
        assert!(n >= burst, "{who} got {n}: not even the burst");
    }
    // Every frame the switch took from a beyond the budget is counted (a
    // loaded host may lose some before the switch reads them).
    let ports = d.vsctl_ok(&["show-ports", "--format", "json"]);
    let views: serde_json::Value = serde_json::from_str(&ports).expect("JSON");
    let view = views
        .as_array()
        .and_then(|v| v.iter().find(|p| p["Sandbox"] == a.as_str()))
        .unwrap_or_else(|| panic!("{a} missing from show-ports: {ports}"));
    let rx = view["RxPackets"].as_u64().expect("RxPackets");
    let drops = view["Drops"].as_object().expect("Drops");
    let limited = drops
        .get("flood_rate_limited")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let other: u64 = drops
        .iter()
        .filter(|(k, _)| k.as_str() != "flood_rate_limited")
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    // A few of a's own frames (ARP, IPv6 neighbour discovery) take
    // tokens too.
    let floods = rx - other;
    assert!(
        floods > ceiling,
        "only {floods} floods reached the switch: no test"
    );
    assert!(
        limited + ceiling + 16 >= floods,
        "{limited} flood_rate_limited drops counted for {floods} floods received: {ports}"
    );
}

/// A Router Advertisement (with a prefix to autoconfigure and a default
/// route) and an unsolicited Neighbor Advertisement from one container
/// change nothing in a neighbour's `ip -6 addr`, `ip -6 route` or
/// `ip -6 neigh`.
#[test]
fn router_and_neighbor_advertisements_change_nothing_in_a_neighbour() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    let (a, b) = (unique("vshh"), unique("vshi"));
    d.sandbox(&a, &["bridge"]);
    d.sandbox(&b, &["bridge"]);
    // b tries to reach fe80::dead, leaving an entry an NA could fill in.
    let _ = d.exec(&b, &["ping", "-6", "-c1", "-W1", "fe80::dead%eth0"]);
    std::thread::sleep(Duration::from_secs(1));
    let snapshot = |what: &str| {
        let out = d.exec(&b, &["ip", "-6", what, "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (addr0, route0) = (snapshot("addr"), snapshot("route"));
    let mac_a = mac_of(Ipv4Addr::new(172, 17, 0, 2));
    let ll_a: Ipv6Addr = "fe80::42:acff:fe11:2".parse().expect("address");
    let all_nodes: Ipv6Addr = "ff02::1".parse().expect("address");

    // RA: router lifetime 1800 s; options: source link-layer address,
    // prefix 2001:db8:66::/64 on-link and autonomous.
    let mut ra = vec![0u8; 8];
    ra.extend_from_slice(&[1, 1]);
    ra.extend_from_slice(&mac_a);
    ra.extend_from_slice(&[3, 4, 64, 0xc0]);
    ra.extend_from_slice(&86_400u32.to_be_bytes());
    ra.extend_from_slice(&14_400u32.to_be_bytes());
    ra.extend_from_slice(&[0; 4]);
    ra.extend_from_slice(
        &"2001:db8:66::"
            .parse::<Ipv6Addr>()
            .expect("prefix")
            .octets(),
    );
    // NA: override, target fe80::dead, target link-layer address a's MAC.
    let mut na = "fe80::dead"
        .parse::<Ipv6Addr>()
        .expect("target")
        .octets()
        .to_vec();
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&mac_a);
    let icmp = |t: u8, b5: [u8; 4], body: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(mac_a, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(ll_a.octets(), all_nodes.octets(), 255)
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: t,
                code_u8: 0,
                bytes5to8: b5,
            })
            .write(&mut out, body)
            .expect("frame");
        out
    };
    send_frames(
        &a,
        "eth0",
        &[
            icmp(134, [64, 0, 0x07, 0x08], &ra),
            icmp(136, [0x20, 0, 0, 0], &na),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let (addr1, route1, neigh1) = (snapshot("addr"), snapshot("route"), snapshot("neigh"));
    let mac_text = "02:42:ac:11:00:02";
    let changed = [
        (
            "addr",
            addr1 != addr0 || addr1.contains("2001:db8:66"),
            &addr1,
        ),
        (
            "route",
            route1 != route0 || route1.contains("default"),
            &route1,
        ),
        ("neigh", neigh1.contains(mac_text), &neigh1),
    ];
    let bad: Vec<String> = changed
        .iter()
        .filter(|(_, c, _)| *c)
        .map(|(w, _, text)| format!("ip -6 {w}:\n{text}"))
        .collect();
    assert!(bad.is_empty(), "the neighbour changed:\n{}", bad.join("\n"));
    let ports = d.vsctl_ok(&["show-ports", "--format", "json"]);
    assert!(counter(&ports, "ipv6_disabled") >= 2, "{ports}");
}

/// A DNS query for `name`, type A, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Descriptors the process `pid` has open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Twenty sandboxes each send 400 queries/s for random external names for
/// 20 s to an upstream that never answers (so every forward would hold a
/// socket for its whole 4 s timeout). The daemon stays under a fixed
/// descriptor ceiling, and a local name asked with `dig` from another
/// sandbox and `vsctl network ls` keep answering throughout.
#[test]
fn a_dns_flood_from_twenty_sandboxes_keeps_the_daemon_bounded_and_answering() {
    const SANDBOXES: usize = 20;
    const RATE: u64 = 400;
    const SECONDS: u64 = 20;
    // Over what the daemon holds before the flood (the ports, the 23
    // sandboxes' listeners, the API, the store: about 110 here), one
    // upstream socket per flooding sandbox (it has one upstream) and a
    // little slack: about 150, however many queries are in flight.
    // Whatever happens, DnsdConfig::max_upstream_sockets (512) bounds it.
    const UPSTREAM_SOCKETS: usize = SANDBOXES;
    const SLACK: usize = 16;
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let resolv = std::env::temp_dir().join(unique("vswitch-resolv-"));
    // The upstream: a sandbox of the test's network, first on it (.2).
    std::fs::write(&resolv, "nameserver 10.77.0.2\n").expect("resolv.conf");
    let mut d = Daemon::start_with(&["--resolv-conf", resolv.to_str().expect("utf-8")]);
    let pid = d.pid().expect("the daemon runs");
    let net = unique("vsdn");
    d.network(&net, &["--subnet", "10.77.0.0/24"]);
    let up = unique("vsdu");
    d.sandbox(&up, &[&net]);
    // Bound and never read: queries to it are neither answered nor refused.
    let _silent = udp_listener(Some(&up), (Ipv4Addr::new(10, 77, 0, 2), 53).into());
    let probe = unique("vsdp");
    d.sandbox(&probe, &[&net]);
    let flooders: Vec<String> = (0..SANDBOXES).map(|_| unique("vsdf")).collect();
    for s in &flooders {
        d.sandbox(s, &[&net]);
    }
    let base_fds = fd_count(pid);
    let fd_ceiling = base_fds + UPSTREAM_SOCKETS + SLACK;

    let senders: Vec<_> = flooders
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ns = Netns::open_named(s).expect("namespace");
            let socket = run_in(&ns, || {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                sock.set_nonblocking(true).expect("nonblocking");
                sock
            })
            .expect("enter");
            std::thread::spawn(move || {
                let server: SocketAddr = (Ipv4Addr::new(127, 0, 0, 11), 53).into();
                let start = std::time::Instant::now();
                let mut sent = 0u64;
                let mut buf = [0u8; 1500];
                while start.elapsed() < Duration::from_secs(SECONDS) {
                    let due = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) * RATE
                        / 1000;
                    while sent < due {
                        let name =
                            format!("r{i}x{sent}x{}.example.com", start.elapsed().as_nanos());
                        let _ = socket.send_to(
                            &dns_query(u16::try_from(sent % 65_536).unwrap_or(0), &name),
                            server,
                        );
                        sent += 1;
                    }
                    while socket.recv(&mut buf).is_ok() {}
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent
            })
        })
        .collect();

    let mut max_fds = base_fds;
    let mut checks = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(SECONDS) {
        max_fds = max_fds.max(fd_count(pid));
        let out = d.exec(
            &probe,
            &["dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", &up],
        );
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            answer,
            "10.77.0.2",
            "dig {up} during the flood ({:?} in)",
            started.elapsed()
        );
        let ls = d.vsctl(&["network", "ls"]);
        assert!(
            ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains(&net),
            "vsctl network ls during the flood"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent: u64 = senders.into_iter().map(|t| t.join().expect("sender")).sum();
    eprintln!(
        "dns flood: {sent} queries from {SANDBOXES} sandboxes, {checks} checks answered, \
         descriptors {base_fds} before, {max_fds} at most (ceiling {fd_ceiling})"
    );
    assert!(
        sent >= (SANDBOXES as u64) * RATE * SECONDS * 9 / 10,
        "only {sent} queries sent"
    );
    assert!(
        max_fds <= fd_ceiling,
        "the daemon held {max_fds} descriptors (ceiling {fd_ceiling})"
    );
    drop(d);
    let _ = std::fs::remove_file(&resolv);
}
