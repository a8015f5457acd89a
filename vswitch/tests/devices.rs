//! The device layer against the real kernel: TAP and `AF_PACKET` ports,
//! named network namespaces, netlink configuration.
//!
//! The test plays the gateway through a port whose other side is a
//! namespace configured like a container: ARP, ping, and a hand-made TCP
//! connection over which TSO super-frames must cross whole both ways.
//!
//! These tests need root, `/dev/net/tun` and iproute2's `ip` (used only to
//! check results). Without them a test prints why and passes, except under
//! `CI=true`, where it fails. Every test works in namespaces it creates
//! (names carry the process id), sends frames only inside them, and removes
//! everything it made through guards that run even when it fails. The one
//! device made in the host namespace (the persistence test) stays down and
//! carries no traffic.

#[path = "../../tests/src/ci.rs"]
#[allow(dead_code, unreachable_pub)]
mod ci;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
    TcpOptionElement, TransportSlice,
};
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::ids::{MacAddr, PortId};
use vswitch::netconf::{EndpointConfig, NetconfError, Netlink};
use vswitch::netns::{Netns, NetnsError, run_in};
use vswitch::port::{PacketSocketPort, PortError, PortIo, RxBatch, TapIo, TapPort};

/// How long to wait for the kernel in the namespace to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Whether the test can run here. Without root, `/dev/net/tun` or `ip` it
/// skips with a message, or fails when `CI=true`.
fn privileged(test: &str) -> bool {
    let missing = if !nix::unistd::Uid::effective().is_root() {
        Some("root")
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the ip command (iproute2)")
    } else {
        None
    };
    ci::can_run(test, missing)
}

/// A name unique to this process and test: `{prefix}{pid}{tag}`.
fn unique(prefix: &str, tag: &str) -> String {
    format!("{prefix}{}{tag}", std::process::id())
}

/// Deletes a named namespace on drop; the namespace's devices go with it.
struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    fn create(tag: &str) -> (Self, Netns) {
        let name = unique("vswt-", &format!("-{tag}"));
        let netns = Netns::create(&name).expect("create namespace");
        (Self { name }, netns)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        match Netns::delete(&self.name) {
            Ok(()) => {}
            Err(NetnsError::Remove { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => eprintln!("cleanup: {err}"),
        }
    }
}

/// Deletes a link of the host namespace on drop, if it is still there.
struct HostLinkGuard {
    name: String,
}

impl Drop for HostLinkGuard {
    fn drop(&mut self) {
        let result = Netlink::new().and_then(|mut nl| {
            if nl.link_exists(&self.name)? {
                nl.delete_link(&self.name)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            eprintln!("cleanup: {err}");
        }
    }
}

/// Runs `ip` with `args` and returns its output; it must succeed.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `ip` with `args` succeeds.
fn ip_succeeds(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip")
        .status
        .success()
}

/// The test network 10.250.`subnet`.0/24: the gateway (played by the test,
/// through the port) is .1, the endpoint in the namespace .2.
#[derive(Clone, Copy)]
struct Net {
    subnet: u8,
}

impl Net {
    const fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 1)
    }
    const fn endpoint(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 2)
    }
    const fn gateway_mac(self) -> MacAddr {
        MacAddr([0x02, 0x42, 10, 250, self.subnet, 1])
    }
    const fn endpoint_mac(self) -> MacAddr {
        MacAddr([0x02, 0x42, 10, 250, self.subnet, 2])
    }
    fn config(self) -> EndpointConfig {
        EndpointConfig {
            name: "eth0".to_owned(),
            mac: self.endpoint_mac(),
            address: self.endpoint(),
            prefix_len: 24,
            mtu: 1400,
            gateway: Some(self.gateway()),
            txqueuelen: Some(500),
        }
    }
}

fn arp_request(net: Net) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: net.gateway_mac().0,
        sender_ipv4: net.gateway().octets(),
        target_mac: [0; 6],
        target_ipv4: net.endpoint().octets(),
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(net.gateway_mac().0, [0xff; 6])
        .arp(arp.into())
        .write(&mut out)
        .expect("write to a Vec");
    out
}

fn echo_request(net: Net, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(net.gateway_mac().0, net.endpoint_mac().0)
        .ipv4(net.gateway().octets(), net.endpoint().octets(), 64)
        .icmpv4_echo_request(id, seq)
        .write(&mut out, data)
        .expect("write to a Vec");
    out
}

/// Sends `frame` with an empty virtio-net header (nothing left to offload).
fn send(port: &mut dyn PortIo, frame: &[u8]) {
    let buf = PacketBuf::from_frame(frame).expect("frame fits");
    port.send(&buf).expect("send");
}

/// How often [`ask`] repeats a question that got no answer.
const RESEND_EVERY: Duration = Duration::from_millis(200);

/// Sends `question` and reads frames until one satisfies `want`, sending
/// the question again every [`RESEND_EVERY`] as a real client would, and
/// failing after [`ANSWER_WITHIN`]. Repeating matters: for a moment after
/// a TAP gains a reader (or a link comes up) the kernel has not yet noticed
/// the carrier and drops what the namespace sends. Frames sent by the
/// gateway MAC (our own) must never come back.
fn ask(
    port: &mut dyn PortIo,
    net: Net,
    question: &[u8],
    what: &str,
    want: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, VnetHdr) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut next_send = Instant::now();
    let mut buf = PacketBuf::new();
    let mut others = Vec::new();
    loop {
        if Instant::now() >= next_send {
            send(port, question);
            next_send += RESEND_EVERY;
        }
        match port.recv(&mut buf) {
            Ok(()) => {
                let frame = buf.frame();
                assert_ne!(
                    frame.get(6..12),
                    Some(&net.gateway_mac().0[..]),
                    "our own transmission was read back"
                );
                if want(frame) {
                    return (frame.to_vec(), buf.vnet);
                }
                others.push(frame.len());
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no {what} within {ANSWER_WITHIN:?}; other frames seen (lengths): {others:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("recv: {err}"),
        }
    }
}

/// Like [`ask`] for an answer to something already sent once, that must
/// not be repeated.
fn wait_for(
    port: &mut dyn PortIo,
    net: Net,
    what: &str,
    want: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, VnetHdr) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut buf = PacketBuf::new();
    loop {
        match port.recv(&mut buf) {
            Ok(()) if want(buf.frame()) => return (buf.frame().to_vec(), buf.vnet),
            Ok(()) => assert_ne!(
                buf.frame().get(6..12),
                Some(&net.gateway_mac().0[..]),
                "our own transmission was read back"
            ),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no {what} within {ANSWER_WITHIN:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("recv: {err}"),
        }
    }
}

fn is_arp_reply(net: Net, frame: &[u8]) -> bool {
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let Some(NetSlice::Arp(arp)) = packet.net else {
        return false;
    };
    arp.operation() == ArpOperation::REPLY
        && arp.sender_protocol_addr() == net.endpoint().octets()
        && arp.target_protocol_addr() == net.gateway().octets()
}

fn is_echo_reply(net: Net, id: u16, frame: &[u8]) -> bool {
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let (Some(NetSlice::Ipv4(ipv4)), Some(TransportSlice::Icmpv4(icmp))) =
        (packet.net, packet.transport)
    else {
        return false;
    };
    ipv4.header().source_addr() == net.endpoint()
        && matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(echo) if echo.id == id)
}

/// A header fit for a frame the kernel's stack made for a small packet:
/// nothing to segment, and a pending checksum (if any) inside the frame.
fn assert_sensible(hdr: &VnetHdr, frame: &[u8]) {
    assert!(
        !hdr.is_gso(),
        "small frame marked for segmentation: {hdr:?}"
    );
    assert_eq!(hdr.gso_size, 0, "{hdr:?}");
    if hdr.needs_csum() {
        let end = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2;
        assert!(end <= frame.len(), "checksum beyond the frame: {hdr:?}");
    }
}

/// Plays the gateway through `port`: ARP for the endpoint, then ping it,
/// and checks the kernel in the namespace answers both.
fn exchange(port: &mut dyn PortIo, net: Net, id: u16) {
    let (reply, hdr) = ask(port, net, &arp_request(net), "arp reply", |f| {
        is_arp_reply(net, f)
    });
    assert_eq!(&reply[0..6], &net.gateway_mac().0, "arp reply destination");
    assert_eq!(&reply[6..12], &net.endpoint_mac().0, "arp reply source");
    assert_sensible(&hdr, &reply);
    assert!(
        !hdr.needs_csum(),
        "arp has no checksum to complete: {hdr:?}"
    );

    let data = b"vswitch device test";
    let (reply, hdr) = ask(
        port,
        net,
        &echo_request(net, id, 1, data),
        "echo reply",
        |f| is_echo_reply(net, id, f),
    );
    assert_eq!(&reply[0..6], &net.gateway_mac().0, "echo reply destination");
    assert_sensible(&hdr, &reply);
    let packet = SlicedPacket::from_ethernet(&reply).expect("parsed above");
    let Some(TransportSlice::Icmpv4(icmp)) = packet.transport else {
        unreachable!("checked by is_echo_reply");
    };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id, seq: 1 })
    );
    assert_eq!(icmp.payload(), data);
}

/// The TCP port the endpoint listens on, and the one the gateway side uses.
const SERVER_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;
/// The MSS the gateway side announces: the endpoint's MTU less 40.
const MSS: u16 = 1360;

/// A TCP segment from the gateway side to the endpoint's listener.
fn tcp_to_endpoint(net: Net, seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(net.gateway_mac().0, net.endpoint_mac().0)
        .ipv4(net.gateway().octets(), net.endpoint().octets(), 64)
        .tcp(CLIENT_PORT, SERVER_PORT, seq, u16::MAX);
    if syn {
        builder = builder
            .syn()
            .options(&[TcpOptionElement::MaximumSegmentSize(MSS)])
            .expect("the MSS option fits");
    }
    if let Some(ack) = ack {
        builder = builder.ack(ack);
    }
    if !payload.is_empty() {
        builder = builder.psh();
    }
    let mut out = Vec::new();
    builder.write(&mut out, payload).expect("write to a Vec");
    out
}

/// The TCP header of a segment from the endpoint's listener, with its
/// payload length.
fn tcp_from_endpoint(net: Net, frame: &[u8]) -> Option<(etherparse::TcpSlice<'_>, usize)> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ipv4)) = &packet.net else {
        return None;
    };
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
        return None;
    };
    (ipv4.header().source_addr() == net.endpoint() && tcp.source_port() == SERVER_PORT)
        .then(|| (tcp.clone(), tcp.payload().len()))
}

/// A TCP super-frame from the gateway side to the endpoint carrying
/// `payload`, to be cut in [`MSS`]-byte segments, with the checksum field
/// holding the folded pseudo-header sum that the segmentation completes (as
/// a guest with TSO sends it).
fn super_frame(net: Net, seq: u32, ack: u32, payload: &[u8]) -> PacketBuf {
    let mut frame = tcp_to_endpoint(net, seq, Some(ack), false, payload);
    let tcp_len = u32::try_from(frame.len() - 34).unwrap();
    let [g0, g1, g2, g3] = net.gateway().octets();
    let [e0, e1, e2, e3] = net.endpoint().octets();
    let mut sum = u32::from(u16::from_be_bytes([g0, g1]))
        + u32::from(u16::from_be_bytes([g2, g3]))
        + u32::from(u16::from_be_bytes([e0, e1]))
        + u32::from(u16::from_be_bytes([e2, e3]))
        + 6
        + tcp_len;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let partial = u16::try_from(sum).unwrap();
    frame[34 + 16..34 + 18].copy_from_slice(&partial.to_be_bytes());
    let mut buf = PacketBuf::from_frame(&frame).unwrap();
    buf.vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: MSS,
        csum_start: 34,
        csum_offset: 16,
    };
    buf
}

/// Opens a TCP connection by hand to a listener inside `ct`, sends it one
/// TCP super-frame (4000 bytes, to be cut in 1360-byte segments, checksum
/// left partial, as a guest with TSO sends), checks the listener reads it
/// whole, and checks the listener's reply of 64 KiB comes out of the port
/// as super-frames described by the virtio-net header.
fn tcp_super_frames_both_ways(port: &mut dyn PortIo, net: Net, ct: &Netns) {
    const ISS: u32 = 1_000_000;
    let request: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let listener = run_in(ct, || TcpListener::bind((net.endpoint(), SERVER_PORT)))
        .unwrap()
        .expect("listen in the namespace");
    let expected = request.clone();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        listener.set_nonblocking(false)?;
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(ANSWER_WITHIN))?;
        stream.set_write_timeout(Some(ANSWER_WITHIN))?;
        let mut got = vec![0; expected.len()];
        stream.read_exact(&mut got)?;
        assert!(got == expected, "the super-frame's payload arrived altered");
        // One write: the kernel queues what fits and sends what the
        // window allows; nobody acknowledges the rest.
        let _ = stream.write(&vec![0x5a; 64 * 1024])?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    });

    let syn = tcp_to_endpoint(net, ISS, None, true, &[]);
    let (syn_ack, _) = ask(port, net, &syn, "syn-ack", |f| {
        tcp_from_endpoint(net, f).is_some_and(|(tcp, _)| tcp.syn() && tcp.ack())
    });
    let (tcp, _) = tcp_from_endpoint(net, &syn_ack).expect("matched above");
    assert_eq!(tcp.acknowledgment_number(), ISS + 1);
    let their_next = tcp.sequence_number().wrapping_add(1);
    send(
        port,
        &tcp_to_endpoint(net, ISS + 1, Some(their_next), false, &[]),
    );

    let buf = super_frame(net, ISS + 1, their_next, &request);
    port.send(&buf).expect("the device takes a super-frame");

    let (data, hdr) = wait_for(port, net, "tcp super-frame", |f| {
        tcp_from_endpoint(net, f).is_some_and(|(_, len)| len > usize::from(MSS))
    });
    let (_, len) = tcp_from_endpoint(net, &data).expect("matched above");
    assert_eq!(
        hdr.gso_type & !VnetHdr::GSO_ECN,
        VnetHdr::GSO_TCPV4,
        "{hdr:?}"
    );
    assert!(hdr.needs_csum(), "{hdr:?}");
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16), "{hdr:?}");
    assert!(hdr.gso_size > 0 && hdr.gso_size <= MSS, "{hdr:?}");
    assert_eq!(usize::from(hdr.hdr_len), data.len() - len, "{hdr:?}");
    assert!(len > 2 * usize::from(hdr.gso_size), "{len} bytes, {hdr:?}");

    server
        .join()
        .expect("the listener thread panicked")
        .expect("the listener's socket calls");
}

/// Checks with `ip` that eth0 in `ns` is configured as `net.config()` says.
fn assert_configured(ns: &str, net: Net, kind: &str) {
    let link = ip(&["-n", ns, "-d", "link", "show", "eth0"]);
    for expected in [
        "mtu 1400".to_owned(),
        "qlen 500".to_owned(),
        format!("link/ether {}", net.endpoint_mac()),
        kind.to_owned(),
    ] {
        assert!(link.contains(&expected), "no {expected:?} in\n{link}");
    }
    assert!(
        link.contains("<BROADCAST,MULTICAST,UP"),
        "eth0 not up:\n{link}"
    );
    let lo = ip(&["-n", ns, "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "lo not up:\n{lo}");
    let addr = ip(&["-n", ns, "-4", "addr", "show", "dev", "eth0"]);
    let expected = format!(
        "inet {}/24 brd 10.250.{}.255 scope global eth0",
        net.endpoint(),
        net.subnet
    );
    assert!(addr.contains(&expected), "no {expected:?} in\n{addr}");
    let routes = ip(&["-n", ns, "-4", "route", "show"]);
    let expected = format!("default via {} dev eth0", net.gateway());
    assert!(routes.contains(&expected), "no {expected:?} in\n{routes}");
}

#[test]
fn netns_create_list_enter_and_delete_round_trip() {
    if !privileged("netns_create_list_enter_and_delete_round_trip") {
        return;
    }
    let (guard, ns) = NetnsGuard::create("rt");
    let name = guard.name.clone();
    let listed = |name: &str| {
        ip(&["netns", "list"])
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name))
    };
    assert!(listed(&name), "ip netns list does not show {name}");
    assert_eq!(ns.name(), Some(name.as_str()));
    assert!(matches!(
        Netns::create(&name),
        Err(NetnsError::CreateFile { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
    ));

    // Code run in the namespace sees only its loopback; the caller's
    // thread stays where it was.
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let links = run_in(&ns, || Netlink::new().and_then(|mut nl| nl.link_names()))
        .unwrap()
        .unwrap();
    assert_eq!(links, ["lo"]);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        before
    );
    let again = Netns::open_named(&name).unwrap();
    let mut nl = Netlink::in_netns(&again).unwrap();
    assert_eq!(nl.link_names().unwrap(), ["lo"]);
    assert!(matches!(
        Netns::open("/proc/self/ns/uts"),
        Err(NetnsError::NotNetns { .. })
    ));

    drop((ns, again, nl));
    Netns::delete(&name).unwrap();
    assert!(!listed(&name), "ip netns list still shows {name}");
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(matches!(
        Netns::delete(&name),
        Err(NetnsError::Remove { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
    drop(guard);
}

#[test]
fn tap_endpoint_is_configured_and_answers_arp_and_ping() {
    if !privileged("tap_endpoint_is_configured_and_answers_arp_and_ping") {
        return;
    }
    let net = Net { subnet: 1 };
    let (sw_guard, sw) = NetnsGuard::create("tsw");
    let (ct_guard, ct) = NetnsGuard::create("tct");
    let tap = unique("vt", "t");

    let mut port = run_in(&sw, || TapPort::create(&tap)).unwrap().unwrap();
    assert_eq!(port.name(), tap);
    let mut nl = Netlink::in_netns(&sw).unwrap();
    nl.configure_endpoint(&ct, &tap, &net.config()).unwrap();
    assert!(
        !nl.link_exists(&tap).unwrap(),
        "tap still in the switch namespace"
    );
    assert_eq!(port.current_name().unwrap(), "eth0");

    assert_configured(
        &ct_guard.name,
        net,
        "tun type tap pi off vnet_hdr on persist on",
    );
    let mut in_ct = Netlink::in_netns(&ct).unwrap();
    assert_eq!(in_ct.link_names().unwrap(), ["lo", "eth0"]);
    assert!(matches!(
        in_ct.delete_link("nonexistent0"),
        Err(NetconfError::DeleteLink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV)
    ));

    exchange(&mut port, net, 0x1001);
    tcp_super_frames_both_ways(&mut port, net, &ct);

    // Nothing reads the TAP now: what the sandbox sends beyond the device's
    // queue (txqueuelen 500) is dropped by the kernel, and counted.
    let port = port.watch_kernel_drops(ct.path(), "eth0");
    let before = port.kernel_dropped();
    let sender = run_in(&ct, || PacketSocketPort::open("eth0"))
        .unwrap()
        .unwrap();
    let frame = PacketBuf::from_frame(&arp_request(net)).unwrap();
    let mut sent = 0u64;
    for _ in 0..3000 {
        if sender.send(&frame).is_ok() {
            sent += 1;
        }
    }
    let dropped = port.kernel_dropped() - before;
    assert!(
        dropped > 0 && dropped <= sent,
        "{dropped} counted as dropped of {sent} sent to an unread TAP"
    );
    assert!(matches!(
        in_ct.tx_dropped("nonexistent0"),
        Err(NetconfError::LinkStats { .. })
    ));
    drop((port, sender, nl, in_ct, sw, ct));
    drop((ct_guard, sw_guard));
}

#[test]
fn veth_endpoint_answers_arp_and_ping_through_a_packet_socket() {
    if !privileged("veth_endpoint_answers_arp_and_ping_through_a_packet_socket") {
        return;
    }
    let net = Net { subnet: 2 };
    let (sw_guard, sw) = NetnsGuard::create("vsw");
    let (ct_guard, ct) = NetnsGuard::create("vct");
    let host_end = unique("vt", "h");
    let peer = unique("vt", "p");

    let mut nl = Netlink::in_netns(&sw).unwrap();
    nl.create_veth(&host_end, &peer).unwrap();
    assert!(matches!(
        nl.create_veth(&host_end, &peer),
        Err(NetconfError::CreateVeth { source, .. }) if source.raw_os_error() == Some(libc::EEXIST)
    ));
    nl.configure_endpoint(&ct, &peer, &net.config()).unwrap();
    nl.set_arp(&host_end, false).unwrap();
    nl.set_up(&host_end, true).unwrap();
    assert_configured(&ct_guard.name, net, "veth");
    let host_link = ip(&["-n", &sw_guard.name, "link", "show", &host_end]);
    assert!(host_link.contains("NOARP"), "arp still on:\n{host_link}");

    let mut port = run_in(&sw, || PacketSocketPort::open(&host_end))
        .unwrap()
        .unwrap();
    assert_eq!(port.index(), nl.link_index(&host_end).unwrap());
    exchange(&mut port, net, 0x2002);
    tcp_super_frames_both_ways(&mut port, net, &ct);

    assert!(matches!(
        run_in(&sw, || PacketSocketPort::open("nonexistent0")).unwrap(),
        Err(PortError::LinkIndex { .. })
    ));
    drop((port, nl, sw, ct));
    drop((ct_guard, sw_guard));
}

#[test]
fn a_packet_socket_port_queues_a_window_of_gso_frames_without_loss() {
    if !privileged("a_packet_socket_port_queues_a_window_of_gso_frames_without_loss") {
        return;
    }
    // 48 frames of 60 KB: about 2.9 MB, fourteen times the kernel's default
    // socket buffer (net.core.rmem_default, 208 KiB), which would keep three.
    const FRAMES: usize = 48;
    let net = Net { subnet: 4 };
    let (_sw_guard, sw) = NetnsGuard::create("vsq");
    let receiver_end = unique("vq", "r");
    let sender_end = unique("vq", "s");
    let mut nl = Netlink::in_netns(&sw).unwrap();
    nl.create_veth(&receiver_end, &sender_end).unwrap();
    for end in [&receiver_end, &sender_end] {
        nl.set_arp(end, false).unwrap();
        nl.set_up(end, true).unwrap();
    }
    let receiver = run_in(&sw, || PacketSocketPort::open(&receiver_end))
        .unwrap()
        .unwrap();
    let sender = run_in(&sw, || PacketSocketPort::open(&sender_end))
        .unwrap()
        .unwrap();

    let payload = vec![0x6b; 60_000];
    for i in 0..FRAMES {
        let seq = u32::try_from(i * payload.len()).unwrap();
        let buf = super_frame(net, seq, 1, &payload);
        sender.send(&buf).expect("the veth takes a super-frame");
    }
    // Nothing was read while the burst went out; now all of it must be there.
    let mut received = 0;
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + ANSWER_WITHIN;
    while received < FRAMES && Instant::now() < deadline {
        match receiver.recv(&mut buf) {
            Ok(()) if buf.len() > payload.len() => received += 1,
            Ok(()) => {} // an IPv6 router solicitation or the like
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("receive failed: {e}"),
        }
    }
    assert_eq!(received, FRAMES, "super-frames lost in the socket buffer");
}

#[test]
fn an_overflowed_packet_socket_counts_what_the_kernel_dropped() {
    if !privileged("an_overflowed_packet_socket_counts_what_the_kernel_dropped") {
        return;
    }
    // 600 frames of 60 KB: about 36 MB, twice the socket's 16 MiB buffer,
    // sent while nothing reads.
    const FRAMES: usize = 600;
    let net = Net { subnet: 5 };
    let (_sw_guard, sw) = NetnsGuard::create("vso");
    let receiver_end = unique("vo", "r");
    let sender_end = unique("vo", "s");
    let mut nl = Netlink::in_netns(&sw).unwrap();
    nl.create_veth(&receiver_end, &sender_end).unwrap();
    for end in [&receiver_end, &sender_end] {
        nl.set_arp(end, false).unwrap();
        nl.set_up(end, true).unwrap();
    }
    let receiver = run_in(&sw, || PacketSocketPort::open(&receiver_end))
        .unwrap()
        .unwrap();
    let sender = run_in(&sw, || PacketSocketPort::open(&sender_end))
        .unwrap()
        .unwrap();
    assert_eq!(receiver.kernel_dropped(), 0);

    let payload = vec![0x5a; 60_000];
    let mut sent = 0;
    let deadline = Instant::now() + ANSWER_WITHIN;
    while sent < FRAMES && Instant::now() < deadline {
        let seq = u32::try_from(sent * payload.len()).unwrap();
        match sender.send(&super_frame(net, seq, 1, &payload)) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
    assert_eq!(sent, FRAMES);
    let mut received = 0;
    let mut buf = PacketBuf::new();
    loop {
        match receiver.recv(&mut buf) {
            Ok(()) if buf.len() > payload.len() => received += 1,
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("receive failed: {e}"),
        }
    }
    let dropped = receiver.kernel_dropped();
    assert!(received < FRAMES, "the buffer held all {FRAMES} frames");
    assert!(
        dropped >= (FRAMES - received) as u64,
        "{received} received, {dropped} counted as dropped of {FRAMES}"
    );
    // Reading the kernel's counter resets it; the port keeps the total.
    assert_eq!(receiver.kernel_dropped(), dropped);
}

#[test]
fn persistent_tap_is_reopened_and_destroy_removes_it() {
    if !privileged("persistent_tap_is_reopened_and_destroy_removes_it") {
        return;
    }
    let name = unique("vt", "r");
    let guard = HostLinkGuard { name: name.clone() };
    let sysfs = Path::new("/sys/class/net").join(&name);

    // Opening never creates.
    assert!(matches!(
        TapPort::open(&name),
        Err(PortError::TapNotFound { .. })
    ));
    assert!(!sysfs.exists(), "open created {name}");

    let port = TapPort::create(&name).unwrap();
    assert!(matches!(
        TapPort::create(&name),
        Err(PortError::OpenTap { source, .. }) if source.raw_os_error() == Some(libc::EBUSY)
    ));
    drop(port);
    assert!(sysfs.exists(), "{name} did not persist");
    let link = ip(&["-d", "link", "show", &name]);
    assert!(
        link.contains("tun type tap pi off vnet_hdr on persist on"),
        "{link}"
    );

    let port = TapPort::open(&name).unwrap();
    assert_eq!(port.current_name().unwrap(), name);
    drop(port);
    let port = TapPort::open(&name).unwrap();
    port.destroy().unwrap();
    let deadline = Instant::now() + ANSWER_WITHIN;
    while sysfs.exists() {
        assert!(Instant::now() < deadline, "{name} survived destroy");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!ip_succeeds(&["link", "show", &name]));
    assert!(matches!(
        TapPort::open(&name),
        Err(PortError::TapNotFound { .. })
    ));
    drop(guard);
}

#[test]
fn tap_reattached_inside_the_namespace_still_carries_frames() {
    if !privileged("tap_reattached_inside_the_namespace_still_carries_frames") {
        return;
    }
    let net = Net { subnet: 3 };
    let (sw_guard, sw) = NetnsGuard::create("asw");
    let (ct_guard, ct) = NetnsGuard::create("act");
    let tap = unique("vt", "a");

    let mut port = run_in(&sw, || TapPort::create(&tap)).unwrap().unwrap();
    Netlink::in_netns(&sw)
        .unwrap()
        .configure_endpoint(&ct, &tap, &net.config())
        .unwrap();
    exchange(&mut port, net, 0x3001);

    // A daemon restart: the descriptor closes, the device and its
    // configuration stay, and the new daemon attaches where it now lives.
    drop(port);
    assert!(ip_succeeds(&["-n", &ct_guard.name, "link", "show", "eth0"]));
    let mut port = run_in(&ct, || TapPort::open("eth0")).unwrap().unwrap();
    exchange(&mut port, net, 0x3002);
    assert_configured(&ct_guard.name, net, "persist on");

    port.destroy().unwrap();
    let mut in_ct = Netlink::in_netns(&ct).unwrap();
    let deadline = Instant::now() + ANSWER_WITHIN;
    while in_ct.link_exists("eth0").unwrap() {
        assert!(Instant::now() < deadline, "eth0 survived destroy");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop((in_ct, sw, ct));
    drop((ct_guard, sw_guard));
}

/// A TAP port seen through its batch calls only: each `recv` is a
/// `recv_batch` of one slot and each `send` a `send_batch` of one frame,
/// so the helpers above exercise the io_uring path ([`TapIo::Uring`]).
#[derive(Debug)]
struct Batched(TapPort);

impl PortIo for Batched {
    fn recv(&self, buf: &mut PacketBuf) -> std::io::Result<()> {
        let mut batch = RxBatch::new(1);
        let result = self.0.recv_batch(PortId(1), &mut batch);
        if let Some(e) = batch.rx_errors().first() {
            panic!("receive error on port {e}");
        }
        let (bufs, _) = batch.frames_mut();
        match bufs.first_mut() {
            Some(got) => {
                std::mem::swap(buf, got);
                Ok(())
            }
            None => Err(result
                .err()
                .unwrap_or_else(|| std::io::ErrorKind::WouldBlock.into())),
        }
    }

    fn send(&self, buf: &PacketBuf) -> std::io::Result<()> {
        let out = self.0.send_batch(&[buf]);
        match out.error {
            Some(e) => Err(e),
            None if out.sent == 1 => Ok(()),
            None => Err(std::io::ErrorKind::WriteZero.into()),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.raw_fd()
    }
}

/// The sequence number of an echo reply from the endpoint with `id`.
fn echo_reply_seq(net: Net, id: u16, frame: &[u8]) -> Option<u16> {
    if !is_echo_reply(net, id, frame) {
        return None;
    }
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    match packet.transport {
        Some(TransportSlice::Icmpv4(icmp)) => match icmp.icmp_type() {
            Icmpv4Type::EchoReply(echo) => Some(echo.seq),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn tap_over_io_uring_carries_super_frames_whole_and_a_burst_in_order() {
    if !privileged("tap_over_io_uring_carries_super_frames_whole_and_a_burst_in_order") {
        return;
    }
    if let Err(e) = vswitch::port::uring::probe() {
        // The port would fall back to system calls, which the other tests
        // cover; a CI machine must have io_uring (this fails there).
        let missing = format!("io_uring ({e})");
        let _ = ci::can_run(
            "tap_over_io_uring_carries_super_frames_whole_and_a_burst_in_order",
            Some(&missing),
        );
        return;
    }
    let net = Net { subnet: 5 };
    let (sw_guard, sw) = NetnsGuard::create("usw");
    let (ct_guard, ct) = NetnsGuard::create("uct");
    let tap = unique("vt", "u");

    let tap = run_in(&sw, || TapPort::create(&tap)).unwrap().unwrap();
    assert_eq!(tap.io(), TapIo::Uring, "io_uring is the default");
    Netlink::in_netns(&sw)
        .unwrap()
        .configure_endpoint(&ct, tap.name(), &net.config())
        .unwrap();
    let mut port = Batched(tap);
    exchange(&mut port, net, 0x5001);
    tcp_super_frames_both_ways(&mut port, net, &ct);

    // A burst of 200 echo requests in one send_batch (four io_uring calls
    // of up to 64 writes), then the replies read in batches of 64: all
    // arrive, in the order sent, several per call.
    let id = 0x5002;
    let requests: Vec<PacketBuf> = (1..=200)
        .map(|seq| PacketBuf::from_frame(&echo_request(net, id, seq, b"burst")).unwrap())
        .collect();
    let refs: Vec<&PacketBuf> = requests.iter().collect();
    let out = port.0.send_batch(&refs);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.sent, 200);
    let mut seqs = Vec::new();
    let mut most_in_one_call = 0;
    let mut batch = RxBatch::new(64);
    let deadline = Instant::now() + ANSWER_WITHIN;
    while seqs.len() < 200 {
        assert!(
            Instant::now() < deadline,
            "{} of 200 echo replies within {ANSWER_WITHIN:?}",
            seqs.len()
        );
        batch.clear();
        match port.0.recv_batch(PortId(1), &mut batch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv_batch: {e}"),
        }
        assert!(batch.rx_errors().is_empty());
        most_in_one_call = most_in_one_call.max(batch.len());
        seqs.extend(
            batch
                .frames()
                .iter()
                .filter_map(|f| echo_reply_seq(net, id, f.frame())),
        );
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u16>>());
    assert!(
        most_in_one_call > 1,
        "never more than one frame per receive call"
    );

    // Syscalls, chosen explicitly, move the same frames.
    let mut port = Batched(port.0.with_io(TapIo::Syscalls));
    exchange(&mut port, net, 0x5003);
    drop((port, sw, ct));
    drop((ct_guard, sw_guard));
}
