//! A sandbox's own `--dns`, `--dns-search`, `--dns-option` and
//! `--hostname` (docker-reference §2, §6.2–§6.4), with real `dig`.
//!
//! The sandbox's two upstreams are fake resolvers this test binary runs
//! inside two sandboxes of the same network (started with `ip netns exec`
//! on its ignored helper test), so forwarded queries travel the real path,
//! from the client sandbox's own address, and never leave the test's
//! namespaces. Each fake logs what it is asked, and from where; how it
//! answers depends on the query's first label, one token per upstream
//! (`sf-ok.test`: the first says SERVFAIL, the second answers).

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vswitch_tests::{Daemon, TempFile, dig, prerequisites, unique};

const FAKE_ENV: &str = "VSWITCH_E2E_MATRIX_UPSTREAM";

/// A fake upstream process and the queries it logged (`NAME TYPE SOURCE`).
struct Fake {
    child: Child,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    /// Starts fake number `index` (1 or 2) on `addr`:53 inside `sandbox`.
    fn start(sandbox: &str, addr: &str, index: usize) -> Self {
        let exe = std::env::current_exe().expect("the test knows its own path");
        let mut child = Command::new("ip")
            .args(["netns", "exec", sandbox])
            .arg(exe)
            .args([
                "--exact",
                "matrix_upstream",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FAKE_ENV, format!("{addr},{index}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the fake upstream starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("matrix upstream ready") {
                    let _ = ready_tx.send(());
                } else if let Some(rest) = line.strip_prefix("seen ") {
                    log.lock().expect("log lock").push(rest.to_owned());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake upstream did not start");
        Self { child, seen }
    }

    /// Whether it was asked for `name` (of any type), and from where.
    fn asked(&self, name: &str) -> Vec<String> {
        self.seen
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.split(' ').next() == Some(name))
            .cloned()
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test: the fake upstream run by [`Fake::start`] inside a sandbox.
#[test]
#[ignore = "helper process of the sandbox dns tests, started by them inside a namespace"]
fn matrix_upstream() {
    let Ok(config) = std::env::var(FAKE_ENV) else {
        return;
    };
    let (addr, index) = config.split_once(',').expect("ADDR,INDEX");
    let index: usize = index.parse().expect("an index");
    let socket = UdpSocket::bind((addr, 53)).expect("port 53 in the sandbox");
    println!("matrix upstream ready");
    let _ = std::io::stdout().flush();
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((name, qtype, end)) = buf.get(..n).and_then(question) else {
            continue;
        };
        println!("seen {name} {qtype} {}", peer.ip());
        let _ = std::io::stdout().flush();
        let behaviour = name
            .split('.')
            .next()
            .and_then(|label| label.split('-').nth(index - 1))
            .unwrap_or("ok");
        if let Some(reply) = answer(&buf[..n], end, qtype, behaviour, index) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// The question's name (lower case), type and end offset.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

/// `ok`: NOERROR, and for A 192.0.2.INDEX; `sf`: SERVFAIL; `nx`: NXDOMAIN;
/// `anx`: authoritative NXDOMAIN; `sil`: no reply.
fn answer(q: &[u8], end: usize, qtype: u16, behaviour: &str, index: usize) -> Option<Vec<u8>> {
    let (aa, rcode) = match behaviour {
        "sil" => return None,
        "sf" => (0, 2),
        "nx" => (0, 3),
        "anx" => (0x04, 3),
        _ => (0, 0),
    };
    let with_a = rcode == 0 && qtype == 1;
    let mut reply = q.get(..2)?.to_vec();
    reply.extend_from_slice(&[0x80 | aa | (q.get(2)? & 1), 0x80 | rcode]);
    reply.extend_from_slice(&[0, 1, 0, u8::from(with_a), 0, 0, 0, 0]);
    reply.extend_from_slice(q.get(12..end)?);
    if with_a {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2]);
        reply.push(u8::try_from(index).ok()?);
    }
    Some(reply)
}

/// `dig @127.0.0.11` in `sandbox` with a client timeout of `secs`: whether
/// a reply came, its status line's status, whether `aa` was set, and the
/// answers.
fn ask(
    d: &Daemon,
    sandbox: &str,
    name: &str,
    qtype: &str,
    secs: u32,
) -> Option<(String, bool, String)> {
    let time = format!("+time={secs}");
    let (ok, out) = dig(d, sandbox, &["+tries=1", &time, "@127.0.0.11", qtype, name]);
    if !ok {
        return None;
    }
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let aa = out
        .lines()
        .find(|l| l.contains(";; flags:"))
        .is_some_and(|l| {
            l.split(';')
                .nth(2)
                .is_some_and(|f| f.split_whitespace().any(|w| w == "aa"))
        });
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tIN\tA\t"))
        .filter_map(|l| l.split_whitespace().last())
        .collect::<Vec<_>>()
        .join(",");
    Some((status, aa, answers))
}

#[test]
fn a_sandboxs_own_dns_settings_drive_its_resolv_conf_and_upstreams() {
    if !prerequisites(&["ip", "dig"]) {
        return;
    }
    // The daemon's own upstream is an address nothing answers on.
    let host = TempFile::new("search daemon.test\nnameserver 10.236.0.253\n");
    let mut d = Daemon::start_with(&["--resolv-conf", host.path()]);
    let net = unique("sdn");
    d.network(&net, &["--subnet", "10.236.0.0/24"]);
    let (u1, u2, client, peer, plain) = (
        unique("sdu"),
        unique("sdv"),
        unique("sdc"),
        unique("sdp"),
        unique("sdq"),
    );
    for (sb, ip) in [(&u1, "10.236.0.250"), (&u2, "10.236.0.251")] {
        d.vsctl_ok(&["sandbox", "create", sb]);
        d.adopt_sandboxes(&[sb]);
        d.vsctl_ok(&["network", "connect", "--ip", ip, &net, sb]);
    }
    d.vsctl_ok(&[
        "sandbox",
        "create",
        "--dns",
        "10.236.0.250",
        "--dns",
        "10.236.0.251",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "--hostname",
        "myhost",
        &client,
    ]);
    d.adopt_sandboxes(&[&client]);
    d.vsctl_ok(&["network", "connect", "--ip", "10.236.0.10", &net, &client]);
    d.sandbox(&peer, &[&net]);
    d.sandbox(&plain, &[&net]);
    let f1 = Fake::start(&u1, "10.236.0.250", 1);
    let f2 = Fake::start(&u2, "10.236.0.251", 2);

    // resolv.conf: the sandbox's values replace the daemon's; ndots given,
    // so no ndots:0. A sandbox without flags keeps the daemon's.
    let conf = |sb: &str| {
        std::fs::read_to_string(format!("/etc/netns/{sb}/resolv.conf")).unwrap_or_default()
    };
    assert_eq!(
        conf(&client),
        "search example.com\nnameserver 127.0.0.11\noptions ndots:2\n"
    );
    assert_eq!(
        conf(&plain),
        "search daemon.test\nnameserver 127.0.0.11\noptions ndots:0\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["sandbox", "inspect", &client])).expect("JSON");
    assert_eq!(
        v[0]["HostConfig"]["Dns"],
        serde_json::json!(["10.236.0.250", "10.236.0.251"])
    );
    assert_eq!(v[0]["Config"]["Hostname"], "myhost");

    // --hostname resolves to the sandbox on its networks, and is an alias.
    assert_eq!(
        ask(&d, &peer, "myhost", "A", 3).map(|r| r.2),
        Some("10.236.0.10".to_owned())
    );
    let aliases = &v[0]["Endpoints"][0]["Aliases"];
    assert_eq!(
        aliases.as_array().and_then(|a| a.last()),
        Some(&"myhost".into())
    );

    // §6.4 over the real path.
    let r = ask(&d, &client, "ok-ok.test", "A", 3).expect("a reply");
    assert_eq!((r.0.as_str(), r.2.as_str()), ("NOERROR", "192.0.2.1"));
    assert_eq!(f1.asked("ok-ok.test"), ["ok-ok.test 1 10.236.0.10"]);
    assert!(f2.asked("ok-ok.test").is_empty());

    let r = ask(&d, &client, "sf-ok.test", "A", 3).expect("a reply");
    assert_eq!(r.2, "192.0.2.2", "SERVFAIL, then the next upstream");
    let r = ask(&d, &client, "nx-ok.test", "A", 3).expect("a reply");
    assert_eq!(
        r.2, "192.0.2.2",
        "non-authoritative NXDOMAIN, then the next"
    );
    let r = ask(&d, &client, "anx-ok.test", "A", 3).expect("a reply");
    assert_eq!(
        (r.0.as_str(), r.1),
        ("NXDOMAIN", true),
        "authoritative NXDOMAIN is final"
    );
    let r = ask(&d, &client, "sf-sf.test", "A", 3).expect("a reply");
    assert_eq!(r.0, "SERVFAIL", "the last reply is relayed");

    let started = Instant::now();
    let r = ask(&d, &client, "sil-ok.test", "A", 8).expect("a reply after the timeout");
    assert_eq!(r.2, "192.0.2.2");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the second upstream is asked only after the first timed out"
    );
    assert!(
        ask(&d, &client, "sf-sil.test", "A", 6).is_none(),
        "a timeout last means no reply"
    );
    // Every forward came from the client's own address.
    for name in ["sf-ok.test", "nx-ok.test", "sil-ok.test"] {
        assert_eq!(f2.asked(name), [format!("{name} 1 10.236.0.10")]);
    }
    assert!(f2.asked("anx-ok.test").is_empty(), "#2 never asked");

    // The ndots rule: with ndots set, a dotless A/AAAA name that is not
    // local is answered empty and not forwarded; other types go out.
    let r = ask(&d, &client, "single", "A", 3).expect("a reply");
    assert_eq!((r.0.as_str(), r.2.as_str()), ("NOERROR", ""));
    assert!(f1.asked("single").is_empty());
    assert!(ask(&d, &client, "single", "MX", 3).is_some());
    assert_eq!(f1.asked("single"), ["single 15 10.236.0.10"]);

    // On the default bridge (no embedded server) the values are the file.
    let bridged = unique("sdb");
    d.vsctl_ok(&[
        "sandbox",
        "create",
        "--dns",
        "10.236.0.250",
        "--dns-search",
        "bridge.test",
        &bridged,
    ]);
    d.adopt_sandboxes(&[&bridged]);
    d.vsctl_ok(&["network", "connect", "bridge", &bridged]);
    assert_eq!(
        conf(&bridged),
        "search bridge.test\nnameserver 10.236.0.250\n"
    );

    // Bad values are refused with Docker's texts and create nothing.
    for (args, message) in [
        (
            &["--dns-option", "ndots:x"][..],
            "invalid number for ndots option: x",
        ),
        (&["--hostname=-bad"][..], "invalid hostname format: -bad"),
    ] {
        let name = unique("sdbad");
        let mut all = vec!["sandbox", "create"];
        all.extend_from_slice(args);
        all.push(&name);
        let out = d.vsctl(&all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{err}");
        assert!(!d.vsctl_ok(&["sandbox", "ls"]).contains(&name));
    }
    drop((f1, f2));
}
