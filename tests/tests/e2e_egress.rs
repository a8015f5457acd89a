//! External connectivity through the host connector, for real: a daemon
//! whose "host" is a namespace the test creates, an "outside" namespace
//! behind a veth whose host end carries the host's address, and real
//! clients (`curl`, `ping`, a UDP exchange) in the sandboxes. No traffic
//! leaves the namespaces the test made, and the host needs no iptables
//! rule, no `ip_forward`, no proxy: the test checks none appeared.
//!
//! Needs root, `ip`, `nsenter`, `curl`, `ping` and `python3` (the servers
//! in the outside namespace report the address they saw).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vswitch_tests::{Daemon, firewall_rules, prerequisites, run, run_ok, unique, wait_for};

const HOST_IP: &str = "10.231.0.1";
const OUTSIDE_IP: &str = "10.231.0.2";

/// The host and outside namespaces and the servers in the outside one,
/// removed on drop.
struct World {
    host: String,
    outside: String,
    servers: Vec<Child>,
}

impl World {
    fn new() -> Self {
        let host = unique("vseh");
        let outside = unique("vseo");
        run_ok("ip", &["netns", "add", &host]);
        run_ok("ip", &["netns", "add", &outside]);
        let w = Self {
            host,
            outside,
            servers: Vec::new(),
        };
        let (a, b) = (unique("vsh"), unique("vso"));
        run_ok(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        run_ok("ip", &["link", "set", &a, "netns", &w.host]);
        run_ok("ip", &["link", "set", &b, "netns", &w.outside]);
        for (ns, dev, ip) in [(&w.host, &a, HOST_IP), (&w.outside, &b, OUTSIDE_IP)] {
            run_ok(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        w
    }

    /// Starts a server in the outside namespace (a Python program).
    fn serve(&mut self, program: &str) {
        let ns = self.outside.clone();
        self.serve_in(&ns, program);
    }

    /// Starts a server in namespace `ns` (a Python program), stopped on
    /// drop.
    fn serve_in(&mut self, ns: &str, program: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", program])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        self.servers.push(child);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["netns", "del", &self.outside]);
        let _ = run("ip", &["netns", "del", &self.host]);
    }
}

/// An HTTP server answering every GET with the client address it saw.
const HTTP: &str = r"
import http.server as h
class H(h.BaseHTTPRequestHandler):
    def do_GET(s):
        b = s.client_address[0].encode()
        s.send_response(200)
        s.send_header('Content-Length', str(len(b)))
        s.end_headers()
        s.wfile.write(b)
    def log_message(s, *a): pass
h.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
";

/// A UDP server answering each datagram with the client address it saw.
const UDP: &str = r"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 5300))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(('%s:%d' % a).encode(), a)
";

/// A UDP client: one datagram to port 5300, prints the answer.
fn udp_client(dst: &str) -> String {
    udp_client_to(dst, 5300)
}

fn udp_client_to(dst: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'hi',('{dst}',{port}))\nprint(s.recvfrom(2048)[0].decode())"
    )
}

fn curl(d: &Daemon, sandbox: &str) -> (bool, String) {
    let out = d.exec(
        sandbox,
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            &format!("http://{OUTSIDE_IP}:8080/"),
        ],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The drop counter `reason` of the sandbox's port in `show-ports --json`.
fn drops(d: &Daemon, sandbox: &str, reason: &str) -> u64 {
    let ports: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["--format", "json", "show-ports"])).expect("JSON");
    ports
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["Sandbox"] == sandbox)
        .map(|p| p["Drops"][reason].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn egress_reaches_the_outside_from_the_hosts_address() {
    if !prerequisites(&["ip", "nsenter", "curl", "ping", "python3"]) {
        return;
    }
    let rules_before = firewall_rules();
    let mut w = World::new();
    w.serve(HTTP);
    w.serve(UDP);
    // Three connector shards, whatever the machine's cores.
    let mut d = Daemon::start_in(Some(&w.host), &["--connector-threads", "3"]);
    let net = unique("vsen");
    d.network(&net, &[]);
    let sb = unique("vses");
    d.sandbox(&sb, &[&net]);
    wait_for(
        Duration::from_secs(10),
        || {
            run("ip", &["netns", "exec", &w.outside, "ss", "-ltn"])
                .stdout
                .windows(5)
                .any(|x| x == b":8080")
        },
        "the HTTP server",
    );

    let (ok, body) = curl(&d, &sb);
    assert!(ok, "curl from the container to the outside");
    assert_eq!(body, HOST_IP, "the outside sees the host's address");

    let out = d.exec(&sb, &["python3", "-c", &udp_client(OUTSIDE_IP)]);
    assert!(out.status.success(), "UDP answer: {out:?}");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.trim().starts_with(&format!("{HOST_IP}:")),
        "the UDP server sees the host's address: {seen}"
    );

    assert!(d.ping(&sb, OUTSIDE_IP, 2), "ping to the outside");

    let ct = d.vsctl_ok(&["show-conntrack", "--sandbox", &sb]);
    for proto in ["tcp", "udp", "icmp"] {
        assert!(
            ct.lines()
                .any(|l| l.starts_with(proto) && l.contains(OUTSIDE_IP)),
            "{proto} flow listed:\n{ct}"
        );
    }
    assert!(ct.contains("[ASSURED]"), "the TCP flow completed:\n{ct}");
    let json: serde_json::Value = serde_json::from_str(&d.vsctl_ok(&[
        "--format",
        "json",
        "show-conntrack",
        "--network",
        &net,
    ]))
    .expect("JSON");
    let tcp = json
        .as_array()
        .and_then(|a| a.iter().find(|f| f["Protocol"] == "tcp"))
        .expect("a TCP flow");
    assert_eq!(tcp["Sandbox"], sb.as_str());
    assert_eq!(
        tcp["Reply"]["Dst"], HOST_IP,
        "translated to the host's address"
    );
    let icmp = json
        .as_array()
        .and_then(|a| a.iter().find(|f| f["Protocol"] == "icmp"))
        .expect("an ICMP flow");
    assert_eq!(
        icmp["Reply"]["Dst"], HOST_IP,
        "an echo's reply tuple names the host's address"
    );

    // Removing the endpoint purges its flows.
    d.vsctl_ok(&["network", "disconnect", &net, &sb]);
    let after = d.vsctl_ok(&["--format", "json", "show-conntrack", "--network", &net]);
    assert_eq!(after.trim(), "[]", "flows left after disconnect: {after}");

    assert_eq!(
        firewall_rules(),
        rules_before,
        "no firewall rule was added on the host"
    );
}

#[test]
fn internal_and_masquerade_off_never_leave() {
    if !prerequisites(&["ip", "nsenter", "curl", "ping", "python3"]) {
        return;
    }
    let mut w = World::new();
    w.serve(HTTP);
    let mut d = Daemon::start_in(Some(&w.host), &[]);
    let internal = unique("vsei");
    d.network(&internal, &["--internal"]);
    let nomasq = unique("vsem");
    d.network(
        &nomasq,
        &["-o", "com.docker.network.bridge.enable_ip_masquerade=false"],
    );
    let (si, sm) = (unique("vsi"), unique("vsm"));
    d.sandbox(&si, &[&internal]);
    d.sandbox(&sm, &[&nomasq]);
    wait_for(
        Duration::from_secs(10),
        || {
            run("ip", &["netns", "exec", &w.outside, "ss", "-ltn"])
                .stdout
                .windows(5)
                .any(|x| x == b":8080")
        },
        "the HTTP server",
    );

    assert!(!curl(&d, &si).0, "--internal reached the outside");
    assert!(!d.ping(&si, OUTSIDE_IP, 1), "--internal pinged the outside");
    assert!(drops(&d, &si, "internal") >= 2, "internal drops counted");

    assert!(!curl(&d, &sm).0, "masquerade off reached the outside");
    assert!(
        drops(&d, &sm, "masquerade_disabled") >= 1,
        "masquerade_disabled drops counted"
    );

    // Networks are isolated: a container of one cannot reach the other's.
    let other = d.exec(&sm, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    let sm_ip = String::from_utf8_lossy(&other.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_owned();
    assert!(!sm_ip.is_empty());
    assert!(!d.ping(&si, &sm_ip, 1), "reached another network");
    assert!(
        drops(&d, &si, "inter_network") >= 1,
        "inter_network counted"
    );

    let ct = d.vsctl_ok(&["--format", "json", "show-conntrack"]);
    assert_eq!(ct.trim(), "[]", "a dropped packet made a flow: {ct}");
}
