//! What an operator sees of a running `vswitchd`: `/metrics` checked by
//! `promtool`, read with `curl` on the API socket and over TCP.
//!
//! Each test starts its own daemon and creates and removes its own
//! namespaces. They need root, `ip`, `ping`, `curl` and `promtool`.

use std::io::Write;
use std::process::{Command, Stdio};

use vswitch_tests::{Daemon, prerequisites, unique};

/// `GET /metrics` on the daemon's API socket, with curl.
fn scrape_socket(d: &Daemon) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://vswitchd/metrics")
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("metrics are UTF-8")
}

/// Feeds `text` to `promtool check metrics`, which fails on anything that
/// is not valid exposition format or breaks Prometheus' naming rules.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample whose line starts with `name{` and contains
/// every one of `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|kv| l.contains(kv)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic() {
    if !prerequisites(&["ip", "ss", "ping", "curl", "promtool"]) {
        return;
    }
    let mut d = Daemon::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let net = unique("mnet");
    d.network(&net, &["--subnet", "10.231.0.0/24"]);
    let (web, db) = (unique("mweb"), unique("mdb"));
    d.sandbox(&web, &[&net]);
    d.sandbox(&db, &[&net]);

    let before = scrape_socket(&d);
    promtool_check(&before);
    let web_label = format!("sandbox=\"{web}\"");
    let net_label = format!("network=\"{net}\"");
    let rx_before = sample(
        &before,
        "vswitch_port_rx_packets_total",
        &[&web_label, &net_label],
    )
    .expect("web's port has an rx counter");

    assert!(d.ping(&web, "10.231.0.3", 5), "web reaches db");
    // A spoofed source from web: dropped and counted under its reason.
    d.exec(
        &web,
        &[
            "sh",
            "-c",
            "orig=$(cat /sys/class/net/eth0/address); \
             ip link set eth0 address 02:00:00:00:00:99 && ping -c 2 -W 1 10.231.0.3; \
             ip link set eth0 address $orig",
        ],
    );

    let after = scrape_socket(&d);
    promtool_check(&after);
    let rx_after = sample(
        &after,
        "vswitch_port_rx_packets_total",
        &[&web_label, &net_label],
    )
    .expect("web's rx counter");
    assert!(
        rx_after >= rx_before + 5,
        "web's rx moved from {rx_before} to {rx_after}"
    );
    let db_label = format!("sandbox=\"{db}\"");
    let db_tx = sample(&after, "vswitch_port_tx_packets_total", &[&db_label]).unwrap();
    assert!(db_tx >= 5, "db received the echo requests: {db_tx}");
    let spoofed = sample(
        &after,
        "vswitch_port_dropped_total",
        &[&web_label, "reason=\"src_mac_spoofed\""],
    )
    .unwrap_or(0);
    assert!(spoofed >= 1, "spoofed frames counted:\n{after}");
    assert!(sample(&after, "vswitch_fdb_entries", &[]).unwrap() >= 2);
    assert!(after.contains("# TYPE vswitch_fdb_evictions_total counter"));
    assert!(after.contains("# TYPE vswitch_dns_queries_total counter"));

    // The same over TCP (--metrics-listen, port chosen by the kernel and
    // logged; found here from the daemon's listening sockets).
    let pid = d.pid().expect("daemon runs").to_string();
    let ss = Command::new("ss")
        .args(["-Htlnp"])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&ss.stdout);
    let addr = text
        .lines()
        .find(|l| l.contains(&format!("pid={pid},")))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("the daemon listens on TCP")
        .to_owned();
    let out = Command::new("curl")
        .args(["-sS", "--fail", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl over TCP");
    let tcp = String::from_utf8_lossy(&out.stdout).into_owned();
    promtool_check(&tcp);
    assert!(
        sample(&tcp, "vswitch_port_rx_packets_total", &[&web_label]).unwrap() >= rx_after,
        "TCP shows the same counters"
    );
}

fn now_secs() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

#[test]
fn events_show_a_sandbox_created_then_connected_in_order() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let mut d = Daemon::start();
    let since = now_secs();
    // Live: follow from before the changes; --since makes the start race
    // free (kept events and the live queue are taken together).
    let mut follow = Command::new(vswitch_tests::bin_dir().join("vsctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["events", "--format", "json", "--since", &since])
        .stdout(Stdio::piped())
        .spawn()
        .expect("vsctl events runs");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let net = unique("enet");
    d.network(&net, &["--subnet", "10.232.0.0/24"]);
    let sb = unique("esb");
    d.sandbox(&sb, &[&net]);

    let mut seen: Vec<(String, String, String)> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen
        .iter()
        .any(|(t, a, _)| t == "network" && a == "connect")
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no connect event within 10 s; saw {seen:?}");
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON event per line");
        let attrs = &v["Actor"]["Attributes"];
        let who = attrs["container"]
            .as_str()
            .or_else(|| attrs["name"].as_str())
            .unwrap_or_default()
            .to_owned();
        seen.push((
            v["Type"].as_str().unwrap_or_default().to_owned(),
            v["Action"].as_str().unwrap_or_default().to_owned(),
            who,
        ));
    }
    let _ = Command::new("kill").arg(follow.id().to_string()).status();
    let _ = follow.wait();
    let _ = reader.join();
    let expected = vec![
        ("network".to_owned(), "create".to_owned(), net.clone()),
        ("sandbox".to_owned(), "create".to_owned(), sb.clone()),
        ("network".to_owned(), "connect".to_owned(), sb.clone()),
    ];
    assert_eq!(seen, expected, "events in order");

    // Replay, Docker's text form, ending at --until.
    let until = now_secs();
    let text = d.vsctl_ok(&["events", "--since", &since, "--until", &until]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(" network create ") && lines[0].contains(&format!("name={net}")));
    assert!(lines[1].contains(" sandbox create ") && lines[1].contains(&format!("name={sb}")));
    assert!(
        lines[2].contains(" network connect ") && lines[2].contains(&format!("container={sb}"))
    );

    // A refused request publishes nothing.
    assert!(
        !d.vsctl(&["network", "connect", &net, "no-such-sandbox"])
            .status
            .success()
    );
    d.vsctl_ok(&["sandbox", "rm", &sb]);
    let text = d.vsctl_ok(&["events", "--since", &until, "--until", &now_secs()]);
    assert!(!text.contains("no-such-sandbox"), "{text}");
    assert!(
        text.contains(" network disconnect ") || text.contains(" sandbox destroy "),
        "{text}"
    );
}

/// `vsctl --format json trace ARGS…`, parsed.
fn trace(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--format", "json", "trace"];
    all.extend_from_slice(args);
    serde_json::from_str(&d.vsctl_ok(&all)).expect("trace answers JSON")
}

fn verdict(t: &serde_json::Value) -> (String, String) {
    (
        t["Verdict"].as_str().unwrap_or_default().to_owned(),
        t["Reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn output_sandboxes(t: &serde_json::Value) -> Vec<String> {
    t["Outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["Sandbox"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a trace must not change: every port's counters, and the FDB's
/// entries (port, network, MAC; ages move by themselves).
fn counters_and_fdb(d: &Daemon) -> (serde_json::Value, Vec<String>) {
    let ports: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["--format", "json", "show-ports"])).unwrap();
    let fdb: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["--format", "json", "show-fdb"])).unwrap();
    let mut rows: Vec<String> = fdb
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r["Port"], r["Network"], r["MacAddress"]))
        .collect();
    rows.sort();
    (ports, rows)
}

#[test]
fn trace_explains_each_verdict_and_changes_nothing() {
    if !prerequisites(&["ip", "sysctl"]) {
        return;
    }
    let mut d = Daemon::start();
    let (front, quiet, back) = (unique("tfr"), unique("tqu"), unique("tbk"));
    d.network(&front, &["--subnet", "10.233.0.0/24"]);
    d.network(
        &quiet,
        &[
            "--subnet",
            "10.234.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
        ],
    );
    d.network(&back, &["--subnet", "10.235.0.0/24"]);
    let (web, db, x, y, z) = (
        unique("tweb"),
        unique("tdb"),
        unique("tx"),
        unique("ty"),
        unique("tz"),
    );
    d.sandbox(&web, &[&front]);
    d.sandbox(&db, &[&front]);
    d.sandbox(&x, &[&quiet]);
    d.sandbox(&y, &[&quiet]);
    d.sandbox(&z, &[&back]);
    // No background traffic (IPv6 router solicitations, MLD) may move the
    // counters while the test compares them.
    for s in [&web, &db, &x, &y, &z] {
        d.exec(s, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        d.exec(
            s,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = counters_and_fdb(&d);

    // Two sandboxes on one network: out of db's port, named.
    let t = trace(&d, &[&web, "--dst", "10.233.0.3"]);
    assert_eq!(verdict(&t), ("output".to_owned(), String::new()), "{t:#}");
    assert_eq!(output_sandboxes(&t), vec![db.clone()]);
    assert_eq!(t["Ingress"]["Sandbox"], web.as_str());
    let frame = t["Frame"].as_str().unwrap().to_owned();
    // The same frame given exactly: the ingress is found by its source MAC.
    let again = trace(&d, &["--frame", &frame]);
    assert_eq!(verdict(&again), verdict(&t));
    assert_eq!(again["Ingress"]["Sandbox"], web.as_str());
    // TCP to a port, through the same decisions.
    let tcp = trace(
        &d,
        &[
            &format!("{web}:eth0"),
            "--dst",
            "10.233.0.3",
            "--proto",
            "tcp",
            "--dport",
            "5432",
        ],
    );
    assert_eq!(output_sandboxes(&tcp), vec![db.clone()]);

    // ICC off.
    let t = trace(&d, &[&x, "--dst", "10.234.0.3"]);
    assert_eq!(
        verdict(&t),
        ("drop".to_owned(), "icc_disabled".to_owned()),
        "{t:#}"
    );

    // Two networks: isolation.
    let t = trace(&d, &[&web, "--dst", "10.235.0.2"]);
    assert_eq!(
        verdict(&t),
        ("drop".to_owned(), "isolation".to_owned()),
        "{t:#}"
    );
    assert!(
        t.to_string().contains(&z),
        "the report names the other sandbox: {t:#}"
    );

    // The gateway answers locally.
    let t = trace(&d, &[&web, "--dst", "10.233.0.1"]);
    assert_eq!(
        verdict(&t),
        ("local".to_owned(), "gateway".to_owned()),
        "{t:#}"
    );
    assert_eq!(output_sandboxes(&t), vec![web.clone()]);

    // An unknown MAC: flooded to the network's other ports.
    let t = trace(&d, &[&web, "--dst", "02:42:de:ad:be:ef"]);
    assert_eq!(
        verdict(&t),
        ("flood".to_owned(), "unknown_destination".to_owned()),
        "{t:#}"
    );
    assert_eq!(output_sandboxes(&t), vec![db.clone()]);

    // Spoofed sources.
    let t = trace(&d, &[&web, "--dst", "10.233.0.3", "--src", "10.233.0.99"]);
    assert_eq!(
        verdict(&t),
        ("drop".to_owned(), "src_ip_spoofed".to_owned()),
        "{t:#}"
    );
    let t = trace(
        &d,
        &[&web, "--dst", "10.233.0.3", "--src", "02:42:0a:e9:00:63"],
    );
    assert_eq!(
        verdict(&t),
        ("drop".to_owned(), "src_mac_spoofed".to_owned()),
        "{t:#}"
    );

    // The text form names the output port by sandbox.
    let text = d.vsctl_ok(&["trace", &web, "--dst", "10.233.0.3"]);
    assert!(
        text.contains(&format!("verdict: output to {db}:eth0")),
        "{text}"
    );

    // Bad requests are refused with a message.
    let bad = d.vsctl(&["trace", &web, "--dst", "not-an-address"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither an IPv4 address nor a MAC"));
    assert!(!d.vsctl(&["trace", "--frame", "zz"]).status.success());

    // Nothing moved: no counter, no FDB entry.
    let after = counters_and_fdb(&d);
    assert_eq!(before.0, after.0, "a trace moved a counter");
    assert_eq!(before.1, after.1, "a trace changed the FDB");
    // While real traffic does move them (the comparison can fail).
    assert!(d.ping(&web, "10.233.0.3", 1));
    assert_ne!(counters_and_fdb(&d).0, before.0);
}

#[test]
fn json_logs_name_the_sandbox_and_network_of_a_warning() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let dir = std::env::temp_dir().join(unique("vswitch-log-"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr.log");
    let socket = dir.join("s.sock");
    // A ports namespace of the test's own, removed at the end.
    let port_netns = unique("vslogports");
    let mut child = Command::new(vswitch_tests::bin_dir().join("vswitchd"))
        .arg("--state-dir")
        .arg(&dir)
        .arg("--socket")
        .arg(&socket)
        .arg("--port-netns")
        .arg(&port_netns)
        .args(["--log-format", "json", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("vswitchd starts");
    vswitch_tests::wait_for(
        std::time::Duration::from_secs(10),
        || socket.exists(),
        "the API socket",
    );
    let vsctl = |args: &[&str]| {
        Command::new(vswitch_tests::bin_dir().join("vsctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        !vsctl(&["network", "connect", "bridge", "nosuchbox"])
            .status
            .success()
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = Command::new("ip")
        .args(["netns", "del", &port_netns])
        .status();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "vswitchd ready"),
        "{text}"
    );
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["message"] == "request failed and was rolled back")
        .unwrap_or_else(|| panic!("no warning for the refused connect:\n{text}"));
    assert_eq!(warning["sandbox"], "nosuchbox");
    assert_eq!(warning["network"], "bridge");
    assert_eq!(warning["request"], "network connect");
}

/// `tshark -r FILE -T fields -e …` lines.
fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-r".to_owned(),
        file.display().to_string(),
        "-T".to_owned(),
        "fields".to_owned(),
    ];
    for f in fields {
        args.push("-e".to_owned());
        args.push((*f).to_owned());
    }
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn capture_writes_pcapng_that_tshark_reads_and_filters_in_userspace() {
    if !prerequisites(&["ip", "ping", "tshark"]) {
        return;
    }
    let mut d = Daemon::start();
    let net = unique("cnet");
    d.network(&net, &["--subnet", "10.236.0.0/24"]);
    let (web, db) = (unique("cweb"), unique("cdb"));
    d.sandbox(&web, &[&net]);
    d.sandbox(&db, &[&net]);
    let dir = std::env::temp_dir().join(unique("vswitch-cap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let (icmp_file, all_file) = (dir.join("icmp.pcapng"), dir.join("all.pcapng"));
    let start = |file: &std::path::Path, args: &[&str]| {
        Command::new(vswitch_tests::bin_dir().join("vsctl"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["capture", &web, "-w"])
            .arg(file)
            .args(args)
            .spawn()
            .expect("vsctl capture runs")
    };
    let mut icmp = start(&icmp_file, &["--count", "10", "icmp"]);
    let mut all = start(&all_file, &["--count", "3", "arp"]);
    // The captures are attached once the daemon has answered their
    // request; a burst of pings after a moment finds them in place, and
    // an emptied neighbour table makes web ARP for db first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.exec(&web, &["ip", "neigh", "flush", "all"]);
    assert!(d.ping(&web, "10.236.0.3", 8));
    let wait = |child: &mut std::process::Child, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{what} failed");
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{what} did not end with its count");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait(&mut icmp, "capture icmp");
    // Only two ARP frames went by (request, reply): end the ARP capture.
    let _ = Command::new("kill").arg(all.id().to_string()).status();
    let _ = all.wait();

    let lines = tshark_fields(&icmp_file, &["ip.src", "ip.dst", "icmp.type", "arp.opcode"]);
    assert_eq!(lines.len(), 10, "{lines:?}");
    let (requests, replies) = lines.iter().fold((0, 0), |(q, r), l| {
        let f: Vec<&str> = l.split('\t').collect();
        assert!(f[3].is_empty(), "an ARP frame passed the icmp filter: {l}");
        match (f[0], f[1], f[2]) {
            ("10.236.0.2", "10.236.0.3", "8") => (q + 1, r),
            ("10.236.0.3", "10.236.0.2", "0") => (q, r + 1),
            _ => panic!("unexpected packet {l}"),
        }
    });
    assert_eq!((requests, replies), (5, 5));
    // The ARP exchange did happen while the icmp capture ran.
    let arp = tshark_fields(&all_file, &["arp.opcode"]);
    assert!(
        arp.iter().any(|l| l == "1") && arp.iter().any(|l| l == "2"),
        "{arp:?}"
    );

    // A bad filter and an unknown sandbox are refused.
    let bad = d.vsctl(&["capture", &web, "--count", "1", "not a valid (("]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid filter"));
    assert!(
        !d.vsctl(&["capture", "nosuchbox", "--count", "1"])
            .status
            .success()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
