//! The embedded DNS of a real `vswitchd`, asked with real `dig` inside the
//! sandboxes (docker-reference §6).
//!
//! The daemon is given its own host resolv.conf (`--resolv-conf`), whose
//! only nameserver is a fake upstream this test runs inside a sandbox it
//! created: no query ever leaves the test's namespaces. The fake upstream
//! is this test binary itself, started with `ip netns exec` on its ignored
//! helper test; it answers every A query with 192.0.2.99, so an answer of
//! 192.0.2.99 means "forwarded, not answered locally".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};

use vswitch_tests::{Daemon, TempFile, dig, exists, prerequisites, unique};

/// Set in the environment of the fake upstream's process.
const FAKE_UPSTREAM_ENV: &str = "VSWITCH_E2E_FAKE_UPSTREAM";

/// What the fake upstream answers to every A query.
const FAKE_ANSWER: [u8; 4] = [192, 0, 2, 99];

/// The fake upstream's process, killed on drop.
struct FakeUpstream(Child);

impl FakeUpstream {
    /// Starts the fake upstream on `addr` port 53 inside `sandbox`'s
    /// namespace and waits until it is bound. (Not on 0.0.0.0: the
    /// embedded server holds 127.0.0.11:53 in every served sandbox.)
    fn start(sandbox: &str, addr: &str) -> Self {
        let exe = std::env::current_exe().expect("the test knows its own path");
        let mut child = Command::new("ip")
            .args(["netns", "exec", sandbox])
            .arg(exe)
            .args([
                "--exact",
                "fake_upstream_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FAKE_UPSTREAM_ENV, addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the fake upstream starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let up = Self(child);
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("fake upstream ready"));
        assert!(ready, "the fake upstream did not start");
        up
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test: the fake upstream (UDP and TCP), run by [`FakeUpstream::start`] inside a
/// sandbox. Without its environment variable it does nothing.
#[test]
#[ignore = "helper process of the dns tests, started by them inside a namespace"]
fn fake_upstream_server() {
    let Ok(addr) = std::env::var(FAKE_UPSTREAM_ENV) else {
        return;
    };
    let socket = UdpSocket::bind((addr.as_str(), 53)).expect("port 53 in the sandbox");
    let listener = TcpListener::bind((addr.as_str(), 53)).expect("port 53 in the sandbox");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut len = [0u8; 2];
            while stream.read_exact(&mut len).is_ok() {
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).is_err() {
                    break;
                }
                let Some(reply) = fake_answer(&query) else {
                    break;
                };
                let Ok(n) = u16::try_from(reply.len()) else {
                    break;
                };
                let _ = stream.write_all(&n.to_be_bytes());
                let _ = stream.write_all(&reply);
            }
        }
    });
    println!("fake upstream ready");
    let _ = std::io::stdout().flush();
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = buf.get(..n).and_then(fake_answer) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// NOERROR with one A record, 192.0.2.99, for an A query; NOERROR and no
/// answer for anything else.
fn fake_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = query.get(12..i + 4)?;
    let is_a = qtype == 1;
    let mut reply = query.get(..2)?.to_vec();
    // QR, RD copied; RA; NOERROR. One question, one answer or none.
    reply.extend_from_slice(&[0x80 | (query.get(2)? & 1), 0x80]);
    reply.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if is_a {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&FAKE_ANSWER);
    }
    Some(reply)
}

/// `dig +short @127.0.0.11 ARGS` inside `sandbox`, trimmed; panics unless
/// dig got a reply.
fn short(d: &Daemon, sandbox: &str, args: &[&str]) -> String {
    let mut all = vec!["+time=2", "+tries=1", "+short", "@127.0.0.11"];
    all.extend_from_slice(args);
    let (ok, out) = dig(d, sandbox, &all);
    assert!(
        ok,
        "dig {} in {sandbox} got no reply: {out}",
        args.join(" ")
    );
    out.trim().to_owned()
}

/// The sandbox's 12-hex short id, from `vsctl sandbox ls`.
fn short_id(d: &Daemon, sandbox: &str) -> String {
    let ls = d.vsctl_ok(&["sandbox", "ls"]);
    let id = ls
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(sandbox))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{sandbox} missing from sandbox ls:\n{ls}"))
        .to_owned();
    assert_eq!(id.len(), 12, "{id}");
    id
}

fn resolv_conf(d: &Daemon, sandbox: &str) -> String {
    String::from_utf8_lossy(&d.exec(sandbox, &["cat", "/etc/resolv.conf"]).stdout).into_owned()
}

#[test]
fn sandboxes_on_a_user_network_resolve_each_other_at_127_0_0_11() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let host = TempFile::new("search example.test\nnameserver 10.232.0.250\n");
    let mut d = Daemon::start_with(&["--resolv-conf", host.path()]);
    let (net, other) = (unique("dn"), unique("dn"));
    d.network(&net, &["--subnet", "10.232.0.0/24"]);
    d.network(&other, &["--subnet", "10.233.0.0/24"]);
    let (a, b, c, up, g) = (
        unique("dsa"),
        unique("dsb"),
        unique("dsc"),
        unique("dsu"),
        unique("dsg"),
    );
    d.sandbox(&a, &[&net]);
    d.vsctl_ok(&["sandbox", "create", &b]);
    d.vsctl_ok(&["sandbox", "create", &up]);
    d.adopt_sandboxes(&[&b, &up]);
    d.vsctl_ok(&["network", "connect", "--alias", "web", &net, &b]);
    d.vsctl_ok(&["network", "connect", "--ip", "10.232.0.250", &net, &up]);
    d.sandbox(&c, &[&other]);
    d.sandbox(&g, &["bridge"]);
    let _upstream = FakeUpstream::start(&up, "10.232.0.250");

    // Name, alias, short id, any case, name.network; UDP and TCP.
    assert_eq!(short(&d, &a, &[&b]), "10.232.0.3");
    assert_eq!(short(&d, &b, &[&a]), "10.232.0.2");
    assert_eq!(short(&d, &a, &["web"]), "10.232.0.3");
    assert_eq!(short(&d, &a, &[&short_id(&d, &b)]), "10.232.0.3");
    assert_eq!(short(&d, &b, &[&short_id(&d, &a)]), "10.232.0.2");
    assert_eq!(short(&d, &a, &[&b.to_uppercase()]), "10.232.0.3");
    assert_eq!(short(&d, &a, &[&format!("{b}.{net}")]), "10.232.0.3");
    assert_eq!(short(&d, &a, &["+tcp", "web"]), "10.232.0.3");

    // PTR: container.network.
    assert_eq!(short(&d, &a, &["-x", "10.232.0.3"]), format!("{b}.{net}."));

    // AAAA for a known name on a v4-only network: NOERROR, no answer.
    let (ok, out) = dig(&d, &a, &["+time=2", "+tries=1", "@127.0.0.11", "AAAA", &b]);
    assert!(ok, "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(" ANSWER: 0,"), "{out}");

    // A name on a network `a` is not on is not answered locally: it goes
    // to the upstream, which answers it itself.
    assert_eq!(short(&d, &a, &[&c]), "192.0.2.99");
    assert_eq!(short(&d, &a, &["example.com"]), "192.0.2.99");
    assert_eq!(short(&d, &a, &["+tcp", "example.com"]), "192.0.2.99");
    assert_eq!(short(&d, &c, &[&c]), "10.233.0.2");

    // The sandbox's resolv.conf is Docker's for a user network, and
    // resolvers that read it find the embedded server.
    assert_eq!(
        resolv_conf(&d, &a),
        "search example.test\nnameserver 127.0.0.11\noptions ndots:0\n"
    );
    let (ok, out) = dig(&d, &a, &["+time=2", "+tries=1", "+short", &b]);
    assert!(ok && out.trim() == "10.232.0.3", "{out}");

    // The default bridge has no embedded DNS: nothing listens, and its
    // resolv.conf is the host's without loopback servers.
    let (ok, out) = dig(
        &d,
        &g,
        &["+time=2", "+tries=1", "+short", "@127.0.0.11", &a],
    );
    assert!(!ok || out.trim().is_empty(), "{out}");
    let conf = resolv_conf(&d, &g);
    assert!(!conf.contains("127.0.0.11"), "{conf}");
    assert!(conf.contains("nameserver 10.232.0.250"), "{conf}");

    // A removed sandbox's file goes with it.
    assert!(exists(format!("/etc/netns/{a}/resolv.conf")));
    d.vsctl_ok(&["sandbox", "rm", &a]);
    assert!(!exists(format!("/etc/netns/{a}")));
}

#[test]
fn listeners_come_back_after_a_restart() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    let host = TempFile::new("nameserver 10.234.0.250\n");
    let mut d = Daemon::start_with(&["--resolv-conf", host.path()]);
    let net = unique("dn");
    d.network(&net, &["--subnet", "10.234.0.0/24"]);
    let (a, b) = (unique("dra"), unique("drb"));
    d.sandbox(&a, &[&net]);
    d.sandbox(&b, &[&net]);
    assert_eq!(short(&d, &a, &[&b]), "10.234.0.3");

    d.kill9();
    let (ok, out) = dig(
        &d,
        &a,
        &["+time=2", "+tries=1", "+short", "@127.0.0.11", &b],
    );
    assert!(
        !ok || out.trim().is_empty(),
        "answered with no daemon: {out}"
    );
    d.spawn();
    assert_eq!(short(&d, &a, &[&b]), "10.234.0.3");
    assert_eq!(short(&d, &b, &["-x", "10.234.0.2"]), format!("{a}.{net}."));

    d.vsctl_ok(&["network", "disconnect", &net, &b]);
    // Gone from the records: forwarded now, and nothing answers upstream.
    let (_, out) = dig(
        &d,
        &a,
        &["+time=2", "+tries=1", "+short", "@127.0.0.11", &b],
    );
    assert!(!out.contains("10.234.0.3"), "{out}");
    // And `b` has no user network left: back to the bridge's resolv.conf.
    assert!(!resolv_conf(&d, &b).contains("127.0.0.11"));
}
