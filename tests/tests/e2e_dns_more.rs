//! More of the embedded DNS of a real `vswitchd` (docker-reference §6):
//! glibc through the generated resolv.conf, shared aliases, UDP truncation,
//! an upstream that never answers, and garbage on the listeners.
//!
//! Every daemon is given its own host resolv.conf (`--resolv-conf`) whose
//! nameserver is an address on a test network: either nothing has it, or a
//! socket this test bound inside one of its sandboxes reads and ignores
//! what it gets. No query ever leaves the test's namespaces.

use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use vswitch::netns::{Netns, run_in};
use vswitch_tests::{Daemon, TempFile, dig, prerequisites, unique};

/// A daemon whose only upstream is `upstream` (port 53), after its host
/// resolv.conf (bind in that order, so the daemon is dropped first).
fn daemon(upstream: &str) -> (TempFile, Daemon) {
    let host = TempFile::new(&format!("nameserver {upstream}\n"));
    let d = Daemon::start_with(&["--resolv-conf", host.path()]);
    (host, d)
}

/// `dig +time=2 +tries=1 +short @127.0.0.11 ARGS` inside `sandbox`, one
/// line per answer; panics unless dig got a reply.
fn short(d: &Daemon, sandbox: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+time=2", "+tries=1", "+short", "@127.0.0.11"];
    all.extend_from_slice(args);
    let (ok, out) = dig(d, sandbox, &all);
    assert!(
        ok,
        "dig {} in {sandbox} got no reply: {out}",
        args.join(" ")
    );
    out.lines().map(str::to_owned).collect()
}

/// A UDP socket on `addr`:53 inside `sandbox` whose thread reads and
/// ignores everything, counting datagrams, until dropped.
struct BlackHole {
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start(sandbox: &str, addr: Ipv4Addr) -> Self {
        let ns = Netns::open_named(sandbox).expect("the sandbox's namespace");
        // A socket keeps the namespace it was created in.
        let socket = run_in(&ns, || UdpSocket::bind((addr, 53)))
            .expect("entering the sandbox")
            .expect("port 53 in the sandbox");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv_from(&mut buf).is_ok() {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn glibc_resolves_names_and_aliases_through_the_generated_resolv_conf() {
    if !prerequisites(&["ip", "dig", "getent"]) {
        return;
    }
    let (_host, mut d) = daemon("10.235.0.250");
    let net = unique("dg");
    d.network(&net, &["--subnet", "10.235.0.0/24"]);
    let (a, b) = (unique("dga"), unique("dgb"));
    d.sandbox(&a, &[&net]);
    d.vsctl_ok(&["sandbox", "create", &b]);
    d.adopt_sandboxes(&[&b]);
    d.vsctl_ok(&["network", "connect", "--alias", "api", &net, &b]);

    let resolv =
        String::from_utf8_lossy(&d.exec(&a, &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");

    for name in [b.as_str(), "api", "API"] {
        let out = d.exec(&a, &["getent", "hosts", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "getent hosts {name}: {text}");
        let addr = text.split_whitespace().next().unwrap_or_default();
        assert_eq!(addr, "10.235.0.3", "getent hosts {name}: {text}");
    }
    let out = d.exec(&b, &["getent", "hosts", &a]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("10.235.0.2 "), "{text}");
    // getaddrinfo too (`ahostsv4`), as most programs resolve.
    let out = d.exec(&a, &["getent", "ahostsv4", "api"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("10.235.0.3 "), "{text}");
}

#[test]
fn a_shared_alias_returns_every_address_in_varying_order() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let (_host, mut d) = daemon("10.236.0.250");
    let net = unique("dh");
    d.network(&net, &["--subnet", "10.236.0.0/24"]);
    let sbs: Vec<String> = (0..3).map(|_| unique("dhs")).collect();
    for sb in &sbs {
        d.vsctl_ok(&["sandbox", "create", sb]);
        d.adopt_sandboxes(&[sb]);
        d.vsctl_ok(&["network", "connect", "--alias", "shared", &net, sb]);
    }
    let want: HashSet<String> = ["10.236.0.2", "10.236.0.3", "10.236.0.4"]
        .map(str::to_owned)
        .into();
    let mut orders = HashSet::new();
    for _ in 0..20 {
        let answer = short(&d, &sbs[0], &["shared"]);
        assert_eq!(answer.len(), 3, "{answer:?}");
        assert_eq!(answer.iter().cloned().collect::<HashSet<_>>(), want);
        orders.insert(answer);
    }
    assert!(orders.len() >= 2, "always the same order: {orders:?}");

    // `vsctl dns show` shows what the resolver answered from.
    let views = vswitch::api::Client::new(&d.socket)
        .dns(Some(&net))
        .expect("GET /v1/dns");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].network, net);
    let shared = views[0]
        .names
        .iter()
        .find(|n| n.name == "shared")
        .expect("the shared alias");
    assert_eq!(shared.kinds, ["alias"]);
    assert_eq!(
        shared.addresses.iter().cloned().collect::<HashSet<_>>(),
        want
    );
    assert_eq!(views[0].endpoints.len(), 3);
    assert_eq!(views[0].ptr.len(), 3);
    let json = d.vsctl_ok(&["--format", "json", "dns", "show", &net]);
    assert!(json.contains("\"Name\": \"shared\""), "{json}");
    assert!(
        json.contains(&format!("\"Name\": \"{}.{net}.\"", sbs[1])),
        "{json}"
    );
    let table = d.vsctl_ok(&["dns", "show"]);
    assert!(
        table.contains(&format!("10.236.0.2   {}.{net}.", sbs[0])),
        "{table}"
    );
    assert!(table.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols == [
            net.as_str(),
            "shared",
            "alias",
            "10.236.0.2,10.236.0.3,10.236.0.4",
        ]
    }));
}

#[test]
fn udp_answers_are_truncated_at_512_bytes_and_tcp_has_them_all() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let (_host, mut d) = daemon("10.237.0.250");
    let net = unique("dt");
    d.network(&net, &["--subnet", "10.237.0.0/24"]);
    let sbs: Vec<String> = (0..26).map(|_| unique("dts")).collect();
    for sb in &sbs {
        d.vsctl_ok(&["sandbox", "create", sb]);
        d.adopt_sandboxes(&[sb]);
        d.vsctl_ok(&[
            "network",
            "connect",
            "--port-kind",
            "tap",
            "--alias",
            "many",
            &net,
            sb,
        ]);
    }
    let (ok, out) = dig(
        &d,
        &sbs[0],
        &[
            "+time=2",
            "+tries=1",
            "+noedns",
            "+ignore",
            "@127.0.0.11",
            "many",
        ],
    );
    assert!(ok, "{out}");
    let flags = out
        .lines()
        .find(|l| l.contains(";; flags:"))
        .unwrap_or_else(|| panic!("no flags line: {out}"));
    let flags = flags
        .split(";; flags:")
        .nth(1)
        .and_then(|f| f.split(';').next())
        .unwrap_or_default();
    assert!(flags.split_whitespace().any(|f| f == "tc"), "{out}");
    assert!(out.contains(" ANSWER: 24,"), "{out}");
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .count();
    assert_eq!(answers, 24, "{out}");

    let all = short(&d, &sbs[0], &["+tcp", "many"]);
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (26, 26), "{all:?}");
    for i in 2..28 {
        assert!(all.contains(&format!("10.237.0.{i}")), "{all:?}");
    }
    // Without +ignore, dig retries over TCP by itself.
    assert_eq!(short(&d, &sbs[1], &["+noedns", "many"]).len(), 26);
}

#[test]
fn an_upstream_that_never_answers_times_out_and_local_names_still_resolve() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let (_host, mut d) = daemon("10.238.0.250");
    let net = unique("du");
    d.network(&net, &["--subnet", "10.238.0.0/24"]);
    let (a, b, up) = (unique("dua"), unique("dub"), unique("duu"));
    d.sandbox(&a, &[&net]);
    d.sandbox(&b, &[&net]);
    d.vsctl_ok(&["sandbox", "create", &up]);
    d.adopt_sandboxes(&[&up]);
    d.vsctl_ok(&["network", "connect", "--ip", "10.238.0.250", &net, &up]);
    let hole = BlackHole::start(&up, Ipv4Addr::new(10, 238, 0, 250));

    let (ok, out) = dig(
        &d,
        &a,
        &["+time=1", "+tries=1", "@127.0.0.11", "example.com"],
    );
    assert!(!ok, "answered: {out}");
    assert!(out.contains("timed out"), "{out}");
    // The query did go upstream (dialled from the sandbox, over the switch).
    vswitch_tests::wait_for(
        Duration::from_secs(5),
        || hole.seen() >= 1,
        "the forwarded query",
    );
    // The server is not stuck on the pending forward.
    assert_eq!(short(&d, &a, &[&b]), ["10.238.0.3"]);
    assert_eq!(short(&d, &b, &["+tcp", &a]), ["10.238.0.2"]);
    let (ok, out) = dig(
        &d,
        &a,
        &["+time=1", "+tries=1", "+tcp", "@127.0.0.11", "example.org"],
    );
    assert!(!ok, "answered: {out}");
    assert_eq!(short(&d, &a, &[&b]), ["10.238.0.3"]);
}

/// xorshift64*: random enough bytes, reproducible from the seed printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// A well-formed A query for `name`.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("short labels"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn garbage_on_udp_and_tcp_leaves_the_server_answering() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    // Nothing has the upstream's address: what happens to parse as a
    // query is forwarded into the void.
    let (_host, mut d) = daemon("10.239.0.250");
    let net = unique("dr");
    d.network(&net, &["--subnet", "10.239.0.0/24"]);
    let (a, b) = (unique("dra"), unique("drb"));
    d.sandbox(&a, &[&net]);
    d.sandbox(&b, &[&net]);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |t| t.as_secs())
        | 1;
    eprintln!("garbage seed {seed}");
    let valid = query(&b);
    let ns = Netns::open_named(&a).expect("the sandbox's namespace");
    let (udp_sent, tcp_chunks) = run_in(&ns, move || {
        let mut rng = Rng(seed);
        let server = (Ipv4Addr::new(127, 0, 0, 11), 53);
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a udp socket");
        let mut sent = 0usize;
        for i in 0..10_000 {
            let packet = match i % 3 {
                // Pure noise, of any length up to a jumbo datagram.
                0 => {
                    let len = rng.below(1500);
                    rng.bytes(len)
                }
                // A real query with a few bytes flipped, or cut short.
                1 => {
                    let mut p = valid.clone();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(p.len());
                        p[at] = rng.bytes(1)[0];
                    }
                    p.truncate(1 + rng.below(p.len()));
                    p
                }
                // A plausible header (one question), then noise.
                _ => {
                    let mut p = vec![0x99, 0x99, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
                    let len = rng.below(300);
                    p.extend(rng.bytes(len));
                    p
                }
            };
            if socket.send_to(&packet, server).is_ok() {
                sent += 1;
            }
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Some of it was answered (FORMERR, or a reply to what parsed).
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut replies = 0usize;
        let mut buf = [0u8; 4096];
        while socket.recv(&mut buf).is_ok() {
            replies += 1;
        }
        assert!(replies > 0, "no reply to any of {sent} datagrams");
        let mut chunks = 0usize;
        for _ in 0..60 {
            let Ok(mut s) = TcpStream::connect(server) else {
                continue;
            };
            for _ in 0..5 {
                let chunk = match rng.below(3) {
                    0 => {
                        let len = rng.below(700);
                        rng.bytes(len)
                    }
                    // A length prefix that promises more than follows.
                    1 => {
                        let mut c = u16::try_from(rng.below(65_536))
                            .unwrap_or(u16::MAX)
                            .to_be_bytes()
                            .to_vec();
                        let len = rng.below(100);
                        c.extend(rng.bytes(len));
                        c
                    }
                    // A framed, corrupted query.
                    _ => {
                        let mut q = valid.clone();
                        let at = rng.below(q.len());
                        q[at] ^= 0xff;
                        let mut c = u16::try_from(q.len())
                            .expect("short")
                            .to_be_bytes()
                            .to_vec();
                        c.extend(q);
                        c
                    }
                };
                if s.write_all(&chunk).is_err() {
                    break;
                }
                chunks += 1;
            }
            drop(s);
        }
        (sent, chunks)
    })
    .expect("entering the sandbox");
    assert!(udp_sent > 9_000, "only {udp_sent} datagrams sent");
    assert!(tcp_chunks >= 200, "only {tcp_chunks} tcp chunks sent");

    // Still answering, over both transports, from both sandboxes.
    assert_eq!(short(&d, &a, &[&b]), ["10.239.0.3"]);
    assert_eq!(short(&d, &a, &["+tcp", &b]), ["10.239.0.3"]);
    assert_eq!(short(&d, &b, &[&a]), ["10.239.0.2"]);
    assert_eq!(
        short(&d, &a, &["-x", "10.239.0.3"]),
        [format!("{b}.{net}.")]
    );
    // And the daemon itself is alive.
    let ls = d.vsctl_ok(&["network", "ls"]);
    assert!(ls.contains(&net), "{ls}");
}
