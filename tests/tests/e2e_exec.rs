//! `vsctl exec` and `vsctl run` enter a sandbox as `ip netns exec` does:
//! the program sees the sandbox's `/etc/netns/NAME` files (its resolv.conf
//! pointing at the embedded DNS) and its own `/sys`.
//!
//! The daemon's upstream (`--resolv-conf`) is a TEST-NET address no
//! sandbox has a route to; only local names are asked.

use std::collections::BTreeSet;

use vswitch_tests::{Daemon, prerequisites, unique};

#[test]
fn exec_and_run_resolve_names_through_the_sandboxs_resolv_conf() {
    if !prerequisites(&["ip", "ping", "getent"]) {
        return;
    }
    let resolv = std::env::temp_dir().join(unique("vswitch-resolv-"));
    std::fs::write(&resolv, "nameserver 198.51.100.53\n").expect("resolv.conf");
    let mut d = Daemon::start_with(&["--resolv-conf", resolv.to_str().expect("utf-8")]);
    let (net, web, db, tmp) = (
        unique("vsxn"),
        unique("vsxw"),
        unique("vsxd"),
        unique("vsxt"),
    );
    d.network(&net, &[]);
    d.sandbox(&web, &[&net]);
    d.sandbox(&db, &[&net]);
    d.adopt_sandboxes(&[&tmp]);

    let out = d.vsctl(&["exec", &web, "--", "getent", "hosts", &db]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "getent hosts {db} failed: {text}{stderr}"
    );
    assert!(text.contains(&db), "{text}");

    let out = d.vsctl(&["exec", &web, "--", "cat", "/etc/resolv.conf"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nameserver 127.0.0.11"),
        "exec sees the sandbox's resolv.conf"
    );

    // Its /sys is the sandbox's: the same interfaces `ip link` shows.
    let out = d.vsctl(&["exec", &web, "--", "ls", "/sys/class/net"]);
    let sys: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let links = d.exec(&web, &["ip", "-o", "link"]);
    let ip: BTreeSet<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    assert_eq!(sys, ip, "/sys/class/net inside exec");

    let out = d.vsctl(&[
        "run", "--rm", "--name", &tmp, "--net", &net, "--", "ping", "-c1", "-W2", &db,
    ]);
    assert!(
        out.status.success(),
        "run … ping -c1 {db}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(d);
    let _ = std::fs::remove_file(&resolv);
}
