//! Published ports end to end (docker-reference §4): `-p`, `-P` with
//! `--expose`, `vsctl port`, `sandbox inspect`, Docker's failure texts,
//! restart after `kill -9`, `host_binding_ipv4`.
//!
//! Each test runs its daemon in a network namespace of its own, so the
//! host ports it binds (18080–18099, 18100+, the ephemeral range from
//! 32768) are private to the test: no other process can hold them, and the
//! first dynamic port of a fresh daemon is the range's start.

use std::net::TcpListener;
use std::process::Output;

use serde_json::Value;
use vswitch_tests::{Daemon, NamedNetns, prerequisites, unique};

/// The daemon's namespace, with the kernel's default ephemeral range set
/// explicitly (it is per namespace), and the daemon in it.
fn setup() -> (NamedNetns, Daemon) {
    let host = NamedNetns::new(&unique("vsph"));
    let set = host.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=32768 60999",
    ]);
    assert!(set.status.success(), "sysctl: {set:?}");
    let d = Daemon::start_in_netns(host.name(), &[]);
    (host, d)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The listening sockets of the namespace, as `ss` prints local addresses.
fn listening(ns: &NamedNetns, proto: &str) -> Vec<String> {
    let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
    let out = ns.exec(&["ss", flag]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

fn port_lines(d: &Daemon, sandbox: &str) -> Vec<String> {
    d.vsctl_ok(&["port", sandbox])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn inspect(d: &Daemon, sandbox: &str) -> Value {
    let v: Value =
        serde_json::from_str(&d.vsctl_ok(&["sandbox", "inspect", sandbox])).expect("JSON");
    v[0].clone()
}

/// Creates a sandbox with `args`, registered for removal, and connects it.
fn create(d: &mut Daemon, name: &str, args: &[&str], network: &str) -> Output {
    let mut all = vec!["sandbox", "create"];
    all.extend_from_slice(args);
    all.push(name);
    d.vsctl_ok(&all);
    d.adopt_sandboxes(&[name]);
    d.vsctl(&["network", "connect", network, name])
}

#[test]
fn published_ports_listen_and_show_as_docker_shows_them() {
    if !prerequisites(&["ip", "ss", "sysctl", "nsenter"]) {
        return;
    }
    let (host, mut d) = setup();
    d.network("n1", &[]);
    let web = unique("vspw");
    let out = create(
        &mut d,
        &web,
        &[
            "-p",
            "18080:80",
            "-p",
            "127.0.0.1:18081:81/udp",
            "-p",
            "18082-18084:82-84",
        ],
        "n1",
    );
    assert!(out.status.success(), "connect: {:?}", text(&out));
    assert_eq!(
        port_lines(&d, &web),
        [
            "80/tcp -> 0.0.0.0:18080",
            "80/tcp -> [::]:18080",
            "81/udp -> 127.0.0.1:18081",
            "82/tcp -> 0.0.0.0:18082",
            "82/tcp -> [::]:18082",
            "83/tcp -> 0.0.0.0:18083",
            "83/tcp -> [::]:18083",
            "84/tcp -> 0.0.0.0:18084",
            "84/tcp -> [::]:18084",
        ]
    );
    assert_eq!(
        d.vsctl_ok(&["port", &web, "80"]),
        "0.0.0.0:18080\n[::]:18080\n"
    );
    assert_eq!(d.vsctl_ok(&["port", &web, "81/udp"]), "127.0.0.1:18081\n");
    let (_, err) = text(&d.vsctl(&["port", &web, "81"]));
    assert_eq!(
        err.trim(),
        format!("Error: No public port '81' published for {web}")
    );

    // Real sockets on the host: TCP listeners on both families, UDP on
    // loopback only, and the kernel completes a connection.
    let tcp = listening(&host, "tcp");
    for want in ["0.0.0.0:18080", "[::]:18080", "0.0.0.0:18083", "[::]:18084"] {
        assert!(tcp.contains(&want.to_owned()), "{want} not in {tcp:?}");
    }
    assert!(listening(&host, "udp").contains(&"127.0.0.1:18081".to_owned()));
    let connect = host.exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080"]);
    assert!(connect.status.success(), "connect: {connect:?}");

    // Inspect: what was asked and what is in place, in Docker's shapes.
    let v = inspect(&d, &web);
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([
            {"HostIp": "0.0.0.0", "HostPort": "18080"},
            {"HostIp": "::", "HostPort": "18080"}
        ])
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["81/udp"],
        serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "18081"}])
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["80/tcp"],
        serde_json::json!([{"HostIp": "", "HostPort": "18080"}])
    );

    // Dynamic ports on a fresh daemon: the range's start, then the next;
    // v4 and v6 are allocated separately. `-P` takes every exposed port.
    for (name, want) in [("a", "32768"), ("b", "32769")] {
        let sb = unique(&format!("vsp{name}"));
        assert!(create(&mut d, &sb, &["-p", "85"], "n1").status.success());
        assert_eq!(
            port_lines(&d, &sb),
            [
                format!("85/tcp -> 0.0.0.0:{want}"),
                format!("85/tcp -> [::]:{want}")
            ]
        );
    }
    let all = unique("vspP");
    let out = create(
        &mut d,
        &all,
        &["--expose", "99", "--expose", "98/udp", "-P"],
        "n1",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        port_lines(&d, &all),
        [
            "98/udp -> 0.0.0.0:32768",
            "98/udp -> [::]:32768",
            "99/tcp -> 0.0.0.0:32770",
            "99/tcp -> [::]:32770",
        ]
    );
    // Exposed without -P: listed in inspect, published nowhere.
    let quiet = unique("vspq");
    assert!(
        create(&mut d, &quiet, &["--expose", "97"], "n1")
            .status
            .success()
    );
    assert!(port_lines(&d, &quiet).is_empty());
    assert_eq!(
        inspect(&d, &quiet)["NetworkSettings"]["Ports"],
        serde_json::json!({"97/tcp": null})
    );

    // Removing the sandbox closes its sockets.
    d.vsctl_ok(&["sandbox", "rm", &web]);
    let tcp = listening(&host, "tcp");
    assert!(!tcp.iter().any(|a| a.ends_with(":18080")), "{tcp:?}");
    assert!(!listening(&host, "udp").contains(&"127.0.0.1:18081".to_owned()));
    drop(d);
}

/// Runs a connect that must fail with `cause` inside Docker's wrapper, and
/// checks that nothing changed: the sandbox publishes nothing and is not
/// on the network, and the host listens exactly as before.
fn refused(d: &Daemon, host: &NamedNetns, sandbox: &str, network: &str, cause: &str) {
    let before_net = d.vsctl_ok(&["network", "inspect", network]);
    let before_tcp = listening(host, "tcp");
    let out = d.vsctl(&["network", "connect", network, sandbox]);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "connect {sandbox} succeeded");
    let prefix = format!(
        "Error response from daemon: driver failed programming external connectivity on endpoint {sandbox} ("
    );
    assert!(err.starts_with(&prefix), "{err:?}");
    assert!(err.trim_end().ends_with(&format!("): {cause}")), "{err:?}");
    assert!(port_lines(d, sandbox).is_empty());
    assert_eq!(d.vsctl_ok(&["network", "inspect", network]), before_net);
    let mut after = listening(host, "tcp");
    let mut before = before_tcp;
    after.sort();
    before.sort();
    assert_eq!(after, before, "the host's listeners changed");
}

#[test]
fn failures_give_dockers_texts_and_change_nothing() {
    if !prerequisites(&["ip", "ss", "sysctl", "nsenter"]) {
        return;
    }
    let (host, mut d) = setup();
    d.network("n1", &[]);
    let holder = unique("vsph");
    assert!(
        create(&mut d, &holder, &["-p", "18100:80"], "n1")
            .status
            .success()
    );
    let v6 = unique("vsp6");
    assert!(
        create(&mut d, &v6, &["-p", "[::]:18102:80"], "n1")
            .status
            .success()
    );
    // Another process's listener on 18095, inside the daemon's namespace.
    let other = host.run(|| TcpListener::bind("0.0.0.0:18095").expect("a foreign listener"));

    let cases: [(&[&str], &str); 7] = [
        (
            &["-p", "18100:80"],
            "Bind for 0.0.0.0:18100 failed: port is already allocated",
        ),
        (
            &["-p", "18101:80", "-p", "18101:81"],
            "Bind for 0.0.0.0:18101 failed: port is already allocated",
        ),
        (
            &["-p", "18095:80"],
            "Error starting userland proxy: listen tcp4 0.0.0.0:18095: bind: address already in use",
        ),
        (
            &["-p", "127.0.0.1:18100:80"],
            "Error starting userland proxy: listen tcp4 127.0.0.1:18100: bind: address already in use",
        ),
        (
            &["-p", "18102:80"],
            "Bind for :::18102 failed: port is already allocated",
        ),
        (
            &["-p", "1.2.3.4:18099:80"],
            "Error starting userland proxy: listen tcp4 1.2.3.4:18099: bind: cannot assign requested address",
        ),
        (
            &["-p", "18098:80/sctp"],
            "Error starting userland proxy: protocol not supported",
        ),
    ];
    for (i, (args, cause)) in cases.iter().enumerate() {
        let sb = unique(&format!("vspf{i}x"));
        let mut all = vec!["sandbox", "create"];
        all.extend_from_slice(args);
        all.push(&sb);
        d.vsctl_ok(&all);
        d.adopt_sandboxes(&[&sb]);
        refused(&d, &host, &sb, "n1", cause);
    }
    // The v4 half of the refused `-p 18102:80` was rolled back.
    assert!(!listening(&host, "tcp").contains(&"0.0.0.0:18102".to_owned()));
    drop(other);

    // `-p` texts the parser refuses (§4.1): usage errors, nothing created.
    let before = d.vsctl_ok(&["sandbox", "ls"]);
    for (spec, message) in [
        ("80/xyz", "invalid proto: xyz"),
        ("70000:80", "invalid hostPort: 70000"),
        ("abc:80", "invalid hostPort: abc"),
        ("80:abc", "invalid containerPort: abc"),
        ("80-79:80-79", "invalid containerPort: 80-79"),
        ("1.2.3:80:80", "invalid IP address: 1.2.3"),
        (
            "18097-18098:80-82",
            "invalid ranges specified for container and host Ports: 80-82 and 18097-18098",
        ),
    ] {
        let name = unique("vspbad");
        let out = d.vsctl(&["sandbox", "create", "-p", spec, &name]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "-p {spec} accepted");
        assert!(err.contains(message), "-p {spec}: {err:?}");
    }
    assert_eq!(d.vsctl_ok(&["sandbox", "ls"]), before);
    drop(d);
}

#[test]
fn a_dynamic_port_held_by_another_process_is_retried_with_the_next() {
    if !prerequisites(&["ip", "ss", "sysctl", "nsenter"]) {
        return;
    }
    let (host, mut d) = setup();
    d.network("n1", &[]);
    let other = host.run(|| TcpListener::bind("0.0.0.0:32768").expect("a foreign listener"));
    let sb = unique("vspr");
    assert!(create(&mut d, &sb, &["-p", "85"], "n1").status.success());
    // The v4 table skipped the held port; the v6 one (IPv6-only socket)
    // did not need to.
    assert_eq!(
        port_lines(&d, &sb),
        ["85/tcp -> 0.0.0.0:32769", "85/tcp -> [::]:32768"]
    );
    drop(other);
    drop(d);
}

#[test]
fn bindings_listen_again_after_kill_9_and_follow_host_binding_ipv4() {
    if !prerequisites(&["ip", "ss", "sysctl", "nsenter"]) {
        return;
    }
    let (host, mut d) = setup();
    d.network("n1", &[]);
    d.network(
        "lo1",
        &[
            "-o",
            "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
        ],
    );
    d.network("in1", &["--internal"]);
    let web = unique("vspk");
    assert!(
        create(
            &mut d,
            &web,
            &["-p", "18090:80", "-p", "18091:91/udp", "-p", "86"],
            "n1"
        )
        .status
        .success()
    );
    let local = unique("vspl");
    assert!(
        create(&mut d, &local, &["-p", "18092:80"], "lo1")
            .status
            .success()
    );
    assert_eq!(port_lines(&d, &local), ["80/tcp -> 127.0.0.1:18092"]);
    assert!(
        d.vsctl_ok(&["network", "inspect", "lo1"])
            .contains("\"com.docker.network.bridge.host_binding_ipv4\": \"127.0.0.1\"")
    );
    // An internal network gives no external connectivity: nothing published.
    let inside = unique("vspi");
    assert!(
        create(&mut d, &inside, &["-p", "18093:80"], "in1")
            .status
            .success()
    );
    assert!(port_lines(&d, &inside).is_empty());
    assert!(!listening(&host, "tcp").contains(&"0.0.0.0:18093".to_owned()));

    let before = (port_lines(&d, &web), port_lines(&d, &local));
    d.kill9();
    assert!(!listening(&host, "tcp").contains(&"0.0.0.0:18090".to_owned()));
    d.spawn();
    // The daemon binds every published port before it opens its API
    // socket, so they listen as soon as `spawn` sees the socket.
    let tcp = listening(&host, "tcp");
    for want in ["0.0.0.0:18090", "[::]:18090", "127.0.0.1:18092"] {
        assert!(tcp.contains(&want.to_owned()), "{want} not in {tcp:?}");
    }
    assert!(listening(&host, "udp").contains(&"0.0.0.0:18091".to_owned()));
    assert_eq!((port_lines(&d, &web), port_lines(&d, &local)), before);
    // Allocations survived too: the same explicit port is refused.
    let again = unique("vspa");
    d.vsctl_ok(&["sandbox", "create", "-p", "18090:80", &again]);
    d.adopt_sandboxes(&[&again]);
    refused(
        &d,
        &host,
        &again,
        "n1",
        "Bind for 0.0.0.0:18090 failed: port is already allocated",
    );
    // Disconnecting releases them.
    d.vsctl_ok(&["network", "disconnect", "n1", &web]);
    assert!(port_lines(&d, &web).is_empty());
    let tcp = listening(&host, "tcp");
    assert!(!tcp.iter().any(|a| a.ends_with(":18090")), "{tcp:?}");
    drop(d);
}
