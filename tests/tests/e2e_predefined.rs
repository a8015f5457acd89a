//! Docker's pre-defined networks `host` and `none` beside `bridge`
//! (docker-reference §8): listed and inspected as Docker shows them, never
//! removable, `none` gives loopback only, `host` the daemon's own
//! namespace, mixing them with other networks refused with Docker's
//! texts, all of it across a `kill -9`.

use serde_json::Value;
use vswitch_tests::{Daemon, NamedNetns, prerequisites, unique};

fn refused(d: &Daemon, args: &[&str], message: &str) {
    let out = d.vsctl(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vsctl {} succeeded", args.join(" "));
    assert_eq!(
        err.trim(),
        format!("Error response from daemon: {message}"),
        "vsctl {}",
        args.join(" ")
    );
}

fn inspect(d: &Daemon, net: &str) -> Value {
    let v: Value = serde_json::from_str(&d.vsctl_ok(&["network", "inspect", net])).expect("JSON");
    v[0].clone()
}

fn netns_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn host_and_none_are_there_as_in_docker() {
    if !prerequisites(&["ip", "nsenter", "readlink"]) {
        return;
    }
    let host = NamedNetns::new(&unique("vsdh"));
    let mut d = Daemon::start_in_netns(host.name(), &[]);
    d.network("n1", &[]);

    let ls = d.vsctl_ok(&["network", "ls"]);
    let rows: Vec<Vec<&str>> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().skip(1).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["bridge", "bridge", "local"],
            ["host", "host", "local"],
            ["n1", "bridge", "local"],
            ["none", "null", "local"],
        ]
    );
    let ids: Vec<String> = ["host", "none"]
        .iter()
        .map(|n| inspect(&d, n)["Id"].as_str().expect("an Id").to_owned())
        .collect();
    assert!(ids.iter().all(|id| id.len() == 64));
    for name in ["host", "none", "bridge"] {
        refused(
            &d,
            &["network", "rm", name],
            &format!("{name} is a pre-defined network and cannot be removed"),
        );
    }

    // `none`: loopback only, and no other network.
    let lonely = unique("vsdn");
    d.vsctl_ok(&["sandbox", "create", "--network", "none", &lonely]);
    d.adopt_sandboxes(&[&lonely]);
    let links = d.exec(&lonely, &["ip", "-o", "link"]);
    let names: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(names, ["lo"]);
    let none_conflict = "container cannot be connected to multiple networks with one of the networks in private (none) mode";
    refused(&d, &["network", "connect", "n1", &lonely], none_conflict);
    let entry = &inspect(&d, "none")["Containers"];
    let entry = entry.as_object().expect("Containers is an object");
    assert_eq!(entry.len(), 1);
    let (_, c) = entry.iter().next().expect("one container");
    assert_eq!(c["Name"], lonely.as_str());
    assert_eq!(c["IPv4Address"], "");
    assert_eq!(c["EndpointID"].as_str().map(str::len), Some(64));

    // `host`: the daemon's namespace, no interface or address of its own.
    let shared = unique("vsds");
    d.vsctl_ok(&["sandbox", "create", "--network", "host", &shared]);
    d.adopt_sandboxes(&[&shared]);
    let daemon_ns = netns_of(&host.exec(&["readlink", "/proc/self/ns/net"]));
    let inside = netns_of(&d.vsctl(&["exec", &shared, "--", "readlink", "/proc/self/ns/net"]));
    assert_eq!(inside, daemon_ns);
    let v: Value =
        serde_json::from_str(&d.vsctl_ok(&["sandbox", "inspect", &shared])).expect("JSON");
    assert_eq!(v[0]["Endpoints"], serde_json::json!([]));
    let host_conflict =
        "container cannot be disconnected from host network or connected to host network";
    refused(&d, &["network", "connect", "n1", &shared], host_conflict);
    refused(
        &d,
        &["network", "disconnect", "host", &shared],
        host_conflict,
    );

    // A sandbox on a network cannot join host or none.
    let joined = unique("vsdj");
    d.sandbox(&joined, &["n1"]);
    refused(&d, &["network", "connect", "host", &joined], host_conflict);
    refused(&d, &["network", "connect", "none", &joined], none_conflict);

    // Everything is still so after a crash.
    let before: Vec<Value> = ["host", "none"].iter().map(|n| inspect(&d, n)).collect();
    d.kill9();
    d.spawn();
    let after: Vec<Value> = ["host", "none"].iter().map(|n| inspect(&d, n)).collect();
    assert_eq!(after, before);
    refused(&d, &["network", "connect", "n1", &lonely], none_conflict);
    let inside = netns_of(&d.vsctl(&["exec", &shared, "--", "readlink", "/proc/self/ns/net"]));
    assert_eq!(inside, daemon_ns);

    // Leaving none frees the sandbox for other networks.
    d.vsctl_ok(&["network", "disconnect", "none", &lonely]);
    d.vsctl_ok(&["network", "connect", "n1", &lonely]);
    assert_eq!(inspect(&d, "none")["Containers"], serde_json::json!({}));
    drop(d);
}
