//! Sandboxes switched by a real `vswitchd`, reached with real `ping`.
//!
//! Each test starts its own daemon on its own state directory and creates
//! and removes its own namespaces. They need root, `ip` and `ping`.

use std::time::Duration;

use vswitch_tests::{
    Daemon, firewall_rules, host_links_of_kind, prerequisites, run_ok, unique, wait_for,
};

/// `ip -o -4 addr show dev eth0` inside a sandbox, as "a.b.c.d/len".
fn eth_addr(d: &Daemon, sandbox: &str, ifname: &str) -> String {
    let out = d.exec(sandbox, &["ip", "-o", "-4", "addr", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

fn link_field(d: &Daemon, sandbox: &str, ifname: &str, field: &str) -> String {
    let out = d.exec(sandbox, &["ip", "-o", "link", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != field)
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

fn two_sandboxes_on_bridge(kind: &str) {
    let mut d = Daemon::start();
    let (a, b) = (unique("vsa"), unique("vsb"));
    for s in [&a, &b] {
        d.vsctl_ok(&["sandbox", "create", s]);
        d.vsctl_ok(&["network", "connect", "--port-kind", kind, "bridge", s]);
    }
    d.adopt_sandboxes(&[&a, &b]);

    assert_eq!(eth_addr(&d, &a, "eth0"), "172.17.0.2/16");
    assert_eq!(eth_addr(&d, &b, "eth0"), "172.17.0.3/16");
    assert_eq!(
        link_field(&d, &a, "eth0", "link/ether"),
        "02:42:ac:11:00:02"
    );
    assert_eq!(
        link_field(&d, &b, "eth0", "link/ether"),
        "02:42:ac:11:00:03"
    );

    assert!(d.ping(&a, "172.17.0.3", 3), "a → b over {kind}");
    assert!(d.ping(&b, "172.17.0.2", 3), "b → a over {kind}");
    assert!(d.ping(&a, "172.17.0.1", 2), "a → gateway over {kind}");

    let fdb = d.vsctl_ok(&["show-fdb", "bridge"]);
    let port_of = |mac: &str| -> String {
        fdb.lines()
            .find(|l| l.contains(mac))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{mac} missing from show-fdb:\n{fdb}"))
            .to_owned()
    };
    let ports = d.vsctl_ok(&["show-ports"]);
    let port_for = |sandbox: &str| -> String {
        ports
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(sandbox))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{sandbox} missing from show-ports:\n{ports}"))
            .to_owned()
    };
    assert_eq!(port_of("02:42:ac:11:00:02"), port_for(&a));
    assert_eq!(port_of("02:42:ac:11:00:03"), port_for(&b));
}

#[test]
fn two_sandboxes_on_bridge_ping_each_other_over_tap() {
    if prerequisites(&["ip", "ping"]) {
        two_sandboxes_on_bridge("tap");
    }
}

#[test]
fn two_sandboxes_on_bridge_ping_each_other_over_veth() {
    if prerequisites(&["ip", "ping"]) {
        two_sandboxes_on_bridge("veth");
    }
}

#[test]
fn no_bridge_vxlan_or_firewall_rule_is_created() {
    if !prerequisites(&["ip", "ping", "iptables-save", "nft"]) {
        return;
    }
    let bridges = host_links_of_kind("bridge");
    let vxlans = host_links_of_kind("vxlan");
    let rules = firewall_rules();
    {
        let mut d = Daemon::start();
        let (a, b) = (unique("vsa"), unique("vsb"));
        d.network(
            "isol",
            &["-o", "com.docker.network.bridge.enable_icc=false"],
        );
        d.sandbox(&a, &["bridge", "isol"]);
        d.sandbox(&b, &["bridge", "isol"]);
        assert!(d.ping(&a, "172.17.0.3", 2));
        assert_eq!(
            host_links_of_kind("bridge"),
            bridges,
            "a bridge device appeared"
        );
        assert_eq!(
            host_links_of_kind("vxlan"),
            vxlans,
            "a vxlan device appeared"
        );
        assert_eq!(firewall_rules(), rules, "iptables/nftables rules changed");
    }
    assert_eq!(host_links_of_kind("bridge"), bridges);
    assert_eq!(firewall_rules(), rules);
}

#[test]
fn networks_are_isolated_and_honour_icc_and_mtu() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    d.network("n1", &[]);
    let inspect = d.vsctl_ok(&["network", "inspect", "n1"]);
    assert!(
        inspect.contains("\"Subnet\": \"172.18.0.0/16\""),
        "{inspect}"
    );

    let (on_bridge, on_n1, on_both) = (unique("vsa"), unique("vsb"), unique("vsc"));
    d.sandbox(&on_bridge, &["bridge"]);
    d.sandbox(&on_n1, &["n1"]);
    d.sandbox(&on_both, &["bridge", "n1"]);
    assert_eq!(eth_addr(&d, &on_n1, "eth0"), "172.18.0.2/16");
    assert_eq!(eth_addr(&d, &on_both, "eth1"), "172.18.0.3/16");

    assert!(!d.ping(&on_n1, "172.17.0.2", 2), "n1 must not reach bridge");
    assert!(
        !d.ping(&on_bridge, "172.18.0.2", 2),
        "bridge must not reach n1"
    );
    assert!(
        d.ping(&on_both, "172.17.0.2", 2),
        "a sandbox on both reaches bridge"
    );
    assert!(
        d.ping(&on_both, "172.18.0.2", 2),
        "a sandbox on both reaches n1"
    );

    d.network(
        "quiet",
        &[
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.driver.mtu=1400",
        ],
    );
    let (q1, q2) = (unique("vsq"), unique("vsq"));
    d.sandbox(&q1, &["quiet"]);
    d.sandbox(&q2, &["quiet"]);
    let quiet = d.vsctl_ok(&["network", "inspect", "quiet"]);
    let subnet = quiet
        .split("\"Subnet\": \"")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("quiet has a subnet")
        .to_owned();
    let base: Vec<&str> = subnet.split('.').collect();
    let addr = |host: u8| format!("{}.{}.{}.{host}", base[0], base[1], base[2]);
    assert!(
        !d.ping(&q1, &addr(3), 2),
        "ICC off blocks sandbox to sandbox"
    );
    assert!(
        d.ping(&q1, &addr(1), 2),
        "ICC off still reaches the gateway"
    );
    assert_eq!(link_field(&d, &q1, "eth0", "mtu"), "1400");
    let drops = d.vsctl_ok(&["show-ports"]);
    assert!(drops.contains("icc_disabled"), "{drops}");
}

#[test]
fn a_restart_after_kill_9_keeps_addresses_and_traffic_resumes() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    d.network("keep", &["--subnet", "10.231.0.0/24"]);
    let (a, b) = (unique("vsa"), unique("vsb"));
    d.sandbox(&a, &["keep"]);
    d.vsctl_ok(&["sandbox", "create", &b]);
    d.vsctl_ok(&["network", "connect", "--port-kind", "veth", "keep", &b]);
    d.adopt_sandboxes(&[&b]);
    let inspect_before = d.vsctl_ok(&["network", "inspect", "keep"]);
    assert!(d.ping(&a, "10.231.0.3", 2));

    // A long ping runs across the crash and the restart.
    let long = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            "ping",
            "-c",
            "80",
            "-i",
            "0.1",
            "-W",
            "1",
            "10.231.0.3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping runs");
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    d.spawn();
    let out = long.wait_with_output().expect("ping finishes");
    let text = String::from_utf8_lossy(&out.stdout);
    let received: u32 = text
        .split(", ")
        .find(|p| p.ends_with("received"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // 80 sent over 8 s; the daemon was down for about 0.5 s plus start-up.
    assert!(
        received >= 50,
        "ping did not resume after the restart:\n{text}"
    );
    // The last replies arrived after the restart.
    let last_seq: u32 = text
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(last_seq >= 75, "no replies at the end:\n{text}");

    assert_eq!(eth_addr(&d, &a, "eth0"), "10.231.0.2/24");
    assert_eq!(eth_addr(&d, &b, "eth0"), "10.231.0.3/24");
    assert_eq!(d.vsctl_ok(&["network", "inspect", "keep"]), inspect_before);
    assert!(d.ping(&b, "10.231.0.2", 2), "veth port reattached too");
}

#[test]
fn removing_a_sandbox_leaves_nothing_behind() {
    if !prerequisites(&["ip", "ping"]) {
        return;
    }
    let mut d = Daemon::start();
    let s = unique("vsr");
    // Host ends live in the daemon's ports namespace, never in the host's.
    let ports_ns = d.port_netns.clone();
    let veth_ends = || -> Vec<String> {
        run_ok("ip", &["-n", &ports_ns, "-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("vsv"))
            .collect()
    };
    let before = veth_ends();
    d.vsctl_ok(&["sandbox", "create", &s]);
    d.adopt_sandboxes(&[&s]);
    d.vsctl_ok(&["network", "connect", "--port-kind", "veth", "bridge", &s]);
    let ours: Vec<String> = veth_ends()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(ours.len(), 1, "one new veth host end: {ours:?}");
    assert!(
        !run_ok("ip", &["-o", "link"]).contains(&ours[0]),
        "the host end {} is in the host's namespace",
        ours[0]
    );
    assert!(run_ok("ip", &["netns", "list"]).contains(&s));
    d.vsctl_ok(&["sandbox", "rm", &s]);
    wait_for(
        Duration::from_secs(5),
        || !run_ok("ip", &["netns", "list"]).contains(&s),
        "namespace removal",
    );
    assert!(
        !veth_ends().contains(&ours[0]),
        "veth host end {} left behind",
        ours[0]
    );
}
