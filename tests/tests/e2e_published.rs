//! Published ports served by the host connector, for real, and a
//! sandbox's own resolver reached through egress.
//!
//! The daemon's "host" is a namespace the test creates; an "outside"
//! namespace sits behind a veth whose host end carries the host's address.
//! Servers in the container answer each client with the address they saw,
//! so each path of the README's client-address table is checked: from the
//! outside, from the host through its own address and through 127.0.0.1,
//! from a container on another network, and from the container itself.
//! No traffic leaves the namespaces the test made.
//!
//! Needs root, `ip`, `nsenter`, `python3` and `dig`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vswitch_tests::{
    Daemon, NamedNetns, dig, firewall_rules, prerequisites, run, run_ok, unique, wait_for,
};

const HOST_IP: &str = "10.232.0.1";
const OUTSIDE_IP: &str = "10.232.0.2";
/// The published container's network, and its gateway.
const WEB_SUBNET: &str = "10.233.1.0/24";
const WEB_GATEWAY: &str = "10.233.1.1";
const WEB_IP: &str = "10.233.1.10";
const QUIET_IP: &str = "10.233.1.11";

/// The host and outside namespaces joined by a veth, and the processes
/// the test started in them, stopped and removed on drop.
struct World {
    host: NamedNetns,
    outside: NamedNetns,
    children: Vec<Child>,
}

impl World {
    fn new() -> Self {
        let host = NamedNetns::new(&unique("vsqh"));
        let outside = NamedNetns::new(&unique("vsqo"));
        let (a, b) = (unique("vqh"), unique("vqo"));
        run_ok(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        run_ok("ip", &["link", "set", &a, "netns", host.name()]);
        run_ok("ip", &["link", "set", &b, "netns", outside.name()]);
        for (ns, dev, ip) in [(&host, &a, HOST_IP), (&outside, &b, OUTSIDE_IP)] {
            run_ok(
                "ip",
                &[
                    "-n",
                    ns.name(),
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    dev,
                ],
            );
            run_ok("ip", &["-n", ns.name(), "link", "set", dev, "up"]);
        }
        Self {
            host,
            outside,
            children: Vec::new(),
        }
    }

    /// Starts `python3 -c program args…` in the namespace `ns` (a sandbox
    /// or one of the world's), stopped on drop.
    fn spawn_in(&mut self, ns: &str, program: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        self.children.push(child);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Python program serving TCP on each `(address, port)` of `tcp`, each
/// connection answered with "<client address> <port>", and UDP on every
/// address's `udp`, each datagram answered with the client's address.
fn servers(tcp: &[(&str, u16)], udp: u16) -> String {
    let tcp: Vec<String> = tcp.iter().map(|(a, p)| format!("('{a}', {p})")).collect();
    format!(
        r"
import select, socket
ls = []
for a, p in ({tcp}, ):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, p))
    s.listen(64)
    ls.append(s)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('0.0.0.0', {udp}))
while True:
    r, _, _ = select.select(ls + [u], [], [])
    for s in r:
        if s is u:
            d, a = u.recvfrom(2048)
            u.sendto(a[0].encode(), a)
        else:
            c, a = s.accept()
            c.sendall(('%s %d' % (a[0], s.getsockname()[1])).encode())
            c.close()
",
        tcp = tcp.join(", ")
    )
}

/// The container's servers: TCP 80 and 82–84, UDP 81.
fn container_servers() -> String {
    servers(
        &[
            ("0.0.0.0", 80),
            ("0.0.0.0", 82),
            ("0.0.0.0", 83),
            ("0.0.0.0", 84),
        ],
        81,
    )
}

/// The host's own services: TCP 18090 on every address and 18092 on
/// loopback only, UDP 18091.
fn host_servers() -> String {
    servers(&[("0.0.0.0", 18090), ("127.0.0.1", 18092)], 18091)
}

/// One TCP exchange with a server of [`servers`]: what it answered.
fn tcp_client(dst: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.create_connection(('{dst}',{port}),3)\ns.settimeout(3)\nb=b''\nwhile True:\n    x=s.recv(256)\n    if not x: break\n    b+=x\nprint(b.decode())"
    )
}

/// One UDP exchange: what the server answered.
fn udp_client(dst: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'hi',('{dst}',{port}))\nprint(s.recvfrom(2048)[0].decode())"
    )
}

/// Runs a Python client in the namespace `ns`: its output if it succeeded.
fn ask(ns: &str, program: &str) -> Option<String> {
    let out = run("ip", &["netns", "exec", ns, "python3", "-c", program]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether something in the namespace `ns` listens on TCP `port`.
fn listens(ns: &str, port: u16) -> bool {
    let out = run("ip", &["netns", "exec", ns, "ss", "-Hltn"]);
    let suffix = format!(":{port}");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|a| a.ends_with(&suffix))
    })
}

/// Whether the namespace `ns` has a TCP socket listening on exactly
/// `addr` (as `ss` prints it).
fn listening_on(ns: &str, addr: &str) -> bool {
    let out = run("ip", &["netns", "exec", ns, "ss", "-Hltn"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(3) == Some(addr))
}

#[test]
fn published_ports_carry_the_clients_address_on_every_path() {
    if !prerequisites(&["ip", "nsenter", "python3", "ss"]) {
        return;
    }
    let rules_before = firewall_rules();
    let mut w = World::new();
    // Three connector shards, whatever the machine's cores: connections
    // accepted on one shard are handed to the others.
    let mut d = Daemon::start_in_netns(w.host.name(), &["--connector-threads", "3"]);
    let net = unique("vsqn");
    d.network(&net, &["--subnet", WEB_SUBNET]);
    let other = unique("vsqm");
    d.network(&other, &["--subnet", "10.233.2.0/24"]);

    let (web, quiet, client) = (unique("vsqw"), unique("vsqq"), unique("vsqc"));
    d.vsctl_ok(&[
        "sandbox",
        "create",
        "-p",
        "18080:80",
        "-p",
        "18081:81/udp",
        "-p",
        "18082-18084:82-84",
        &web,
    ]);
    d.adopt_sandboxes(&[&web]);
    d.vsctl_ok(&["network", "connect", "--ip", WEB_IP, &net, &web]);
    d.vsctl_ok(&["sandbox", "create", &quiet]);
    d.adopt_sandboxes(&[&quiet]);
    d.vsctl_ok(&["network", "connect", "--ip", QUIET_IP, &net, &quiet]);
    d.sandbox(&client, &[&other]);
    w.spawn_in(&web, &container_servers(), &[]);
    w.spawn_in(&quiet, &container_servers(), &[]);
    let host = w.host.name().to_owned();
    w.spawn_in(&host, &host_servers(), &[]);
    wait_for(
        Duration::from_secs(10),
        || listens(&web, 84) && listens(&quiet, 84) && listens(&host, 18092),
        "the container and host servers",
    );

    let outside = w.outside.name().to_owned();

    // Each path of the README's client-address table: who asks, through
    // which address, and whom the container sees. Containers reach the
    // host's address through egress, which leaves from that address. A
    // gateway's address is the host's, as on Docker: a port published on
    // every address is reached through it and seen from the published
    // network's gateway (docker-proxy's view).
    for (ns, through, seen) in [
        (&outside, HOST_IP, OUTSIDE_IP),      // a remote client
        (&host, HOST_IP, HOST_IP),            // the host, through its own address
        (&host, "127.0.0.1", WEB_GATEWAY),    // the host, through loopback
        (&client, HOST_IP, HOST_IP),          // a container on another network
        (&quiet, HOST_IP, HOST_IP),           // a container on the same network
        (&web, HOST_IP, HOST_IP),             // the container itself (hairpin)
        (&quiet, WEB_GATEWAY, WEB_GATEWAY),   // through its network's gateway
        (&client, "10.233.2.1", WEB_GATEWAY), // through its own gateway
    ] {
        let answer = ask(ns, &tcp_client(through, 18080));
        assert_eq!(
            answer,
            Some(format!("{seen} 80")),
            "TCP from {ns} to {through}:18080"
        );
    }
    for (ns, through, seen) in [
        (&outside, HOST_IP, OUTSIDE_IP),
        (&host, "127.0.0.1", WEB_GATEWAY),
        (&client, HOST_IP, HOST_IP),
        (&quiet, WEB_GATEWAY, WEB_GATEWAY),
    ] {
        let answer = ask(ns, &udp_client(through, 18081));
        assert_eq!(
            answer.as_deref(),
            Some(seen),
            "UDP from {ns} to {through}:18081"
        );
    }
    // The host's own services bound to every address answer through a
    // gateway's address, from the host's address; one bound to loopback
    // only does not.
    assert_eq!(
        ask(&quiet, &tcp_client(WEB_GATEWAY, 18090)),
        Some(format!("{HOST_IP} 18090")),
        "the host's service through the gateway's address"
    );
    assert_eq!(
        ask(&quiet, &udp_client(WEB_GATEWAY, 18091)).as_deref(),
        Some(HOST_IP),
        "the host's UDP service through the gateway's address"
    );
    assert_eq!(
        ask(&quiet, &tcp_client(WEB_GATEWAY, 18092)),
        None,
        "a loopback-only service was reached through the gateway"
    );
    let ct = d.vsctl_ok(&["show-conntrack", "--sandbox", &quiet]);
    assert!(
        ct.lines().any(|l| l.starts_with("tcp")
            && l.contains(&format!("{WEB_GATEWAY}:18090"))
            && l.contains(&format!("{HOST_IP}:18090"))),
        "the flow to the gateway listed with the host's tuple:\n{ct}"
    );

    // Where the host has IPv6, `[::]:18080` is bound too; an IPv6 client
    // is carried from the gateway.
    if listening_on(&host, "[::]:18080") {
        assert_eq!(
            ask(&host, &tcp_client("::1", 18080)).as_deref(),
            Some(&*format!("{WEB_GATEWAY} 80")),
            "from the host through [::1]"
        );
    }

    // A range: each host port leads to its own container port.
    for (host_port, port) in [(18082, 82), (18083, 83), (18084, 84)] {
        assert_eq!(
            ask(&outside, &tcp_client(HOST_IP, host_port)).as_deref(),
            Some(&*format!("{OUTSIDE_IP} {port}")),
            "range port {host_port}"
        );
    }

    // The flows are listed under the sandbox, the client's address kept.
    let ct = d.vsctl_ok(&["show-conntrack", "--sandbox", &web]);
    assert!(
        ct.lines()
            .any(|l| l.starts_with("tcp") && l.contains(OUTSIDE_IP) && l.contains("18080")),
        "the outside client's flow listed:\n{ct}"
    );

    // After `kill -9` and a restart, the bindings are served again as
    // soon as the daemon's API is up (it binds them before opening it),
    // and `vsctl port` is unchanged.
    let ports_before = d.vsctl_ok(&["port", &web]);
    d.kill9();
    d.spawn();
    assert_eq!(
        ask(&outside, &tcp_client(HOST_IP, 18080)).as_deref(),
        Some(&*format!("{OUTSIDE_IP} 80")),
        "TCP from the outside after a restart"
    );
    assert_eq!(
        ask(&outside, &udp_client(HOST_IP, 18081)).as_deref(),
        Some(OUTSIDE_IP),
        "UDP from the outside after a restart"
    );
    assert_eq!(d.vsctl_ok(&["port", &web]), ports_before);

    // A container that publishes nothing cannot be reached from the
    // outside, even with a route to its subnet through the host; neither
    // can the published one on its own address (only its bindings are).
    run_ok(
        "ip",
        &["-n", &outside, "route", "add", WEB_SUBNET, "via", HOST_IP],
    );
    for (program, what) in [
        (
            tcp_client(QUIET_IP, 80),
            "a container publishing nothing was reached",
        ),
        (
            udp_client(QUIET_IP, 81),
            "a container publishing nothing was reached over UDP",
        ),
        (
            tcp_client(WEB_IP, 80),
            "a container was reached on its own address",
        ),
    ] {
        assert_eq!(ask(&outside, &program), None, "{what}");
    }
    // ... and still is through its binding.
    assert_eq!(
        ask(&outside, &tcp_client(HOST_IP, 18080)).as_deref(),
        Some(&*format!("{OUTSIDE_IP} 80")),
        "from the outside, again"
    );

    // Unpublished: the binding's socket is closed, and nothing answers.
    d.vsctl_ok(&["network", "disconnect", &net, &web]);
    assert!(!listens(&host, 18080), "18080 still bound after disconnect");
    assert_eq!(
        ask(&outside, &tcp_client(HOST_IP, 18080)),
        None,
        "reached after disconnect"
    );

    assert_eq!(
        firewall_rules(),
        rules_before,
        "no firewall rule was added on the host"
    );
}

/// A DNS server for the outside namespace: every question gets one A
/// record (10.232.0.99), and the address each query came from is appended
/// to the file named by argv[1].
const RESOLVER: &str = r"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 53))
log = open(sys.argv[1], 'a')
while True:
    d, a = s.recvfrom(4096)
    log.write(a[0] + '\n')
    log.flush()
    i = 12
    while i < len(d) and d[i]:
        i += d[i] + 1
    q = d[12:i + 5]
    head = d[:2] + b'\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00'
    ans = b'\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04' + bytes([10, 232, 0, 99])
    s.sendto(head + q + ans, a)
";

/// The `internal` drops of the sandbox's port in `show-ports --json`.
fn internal_drops(d: &Daemon, sandbox: &str) -> u64 {
    let ports: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["--format", "json", "show-ports"])).expect("JSON");
    ports
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["Sandbox"] == sandbox)
        .map(|p| p["Drops"]["internal"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn a_sandboxs_own_resolver_is_reached_through_egress_and_never_from_internal() {
    if !prerequisites(&["ip", "nsenter", "python3", "dig"]) {
        return;
    }
    let mut w = World::new();
    let log = std::env::temp_dir().join(unique("vswitch-resolver-log-"));
    std::fs::write(&log, "").expect("log file");
    let log_path = log.to_str().expect("UTF-8 path").to_owned();
    let outside = w.outside.name().to_owned();
    w.spawn_in(&outside, RESOLVER, &[&log_path]);
    wait_for(
        Duration::from_secs(10),
        || {
            let out = run("ip", &["netns", "exec", &outside, "ss", "-Hlun"]);
            String::from_utf8_lossy(&out.stdout).contains(":53 ")
        },
        "the outside resolver",
    );

    let mut d = Daemon::start_in_netns(w.host.name(), &[]);
    let net = unique("vsrn");
    d.network(&net, &["--subnet", "10.233.3.0/24"]);
    let internal = unique("vsri");
    d.network(&internal, &["--internal", "--subnet", "10.233.4.0/24"]);
    let (sb, si) = (unique("vsrs"), unique("vsrt"));
    for (name, network, ip) in [(&sb, &net, "10.233.3.10"), (&si, &internal, "10.233.4.10")] {
        d.vsctl_ok(&["sandbox", "create", "--dns", OUTSIDE_IP, name]);
        d.adopt_sandboxes(&[name]);
        d.vsctl_ok(&["network", "connect", "--ip", ip, network, name]);
    }

    // A name no container has is forwarded to the sandbox's resolver; the
    // query leaves through egress, so the resolver sees the host's address
    // and the flow is the sandbox's.
    let (ok, out) = dig(&d, &sb, &["+time=3", "+tries=1", "far.example.", "A"]);
    assert!(ok, "dig through the outside resolver: {out}");
    assert!(
        out.contains("10.232.0.99"),
        "the outside resolver's answer relayed: {out}"
    );
    let seen = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        [HOST_IP],
        "the resolver saw one query, from the host's address"
    );
    let ct = d.vsctl_ok(&["show-conntrack", "--sandbox", &sb]);
    assert!(
        ct.lines()
            .any(|l| l.starts_with("udp") && l.contains("10.233.3.10") && l.contains(OUTSIDE_IP)),
        "the forwarded query is the sandbox's flow:\n{ct}"
    );
    // An internal network forwards nothing: no answer, and the resolver
    // was never asked.
    let (_, out) = dig(&d, &si, &["+time=2", "+tries=1", "far.example.", "A"]);
    assert!(
        !out.contains("10.232.0.99"),
        "an internal network reached the outside resolver: {out}"
    );
    wait_for(
        Duration::from_secs(5),
        || internal_drops(&d, &si) >= 1,
        "the internal network's query counted as an `internal` drop",
    );
    let seen = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        seen.lines().count(),
        1,
        "the resolver was asked from an internal network: {seen}"
    );
    let _ = std::fs::remove_file(&log);
}
