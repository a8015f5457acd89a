//! Bad requests to a real `vswitchd`: each gets Docker's error text, a
//! non-zero `vsctl` exit, and changes nothing.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use vswitch_tests::{Daemon, prerequisites, unique};

/// Everything an operator can see of the daemon's state.
fn state(d: &Daemon) -> String {
    let mut all = d.vsctl_ok(&["network", "ls"]);
    all += &d.vsctl_ok(&["network", "inspect", "bridge", "n1"]);
    all += &d.vsctl_ok(&["sandbox", "ls"]);
    all
}

fn refused(d: &Daemon, args: &[&str], message: &str) {
    let out = d.vsctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vsctl {} succeeded", args.join(" "));
    assert!(
        stderr.contains(message),
        "vsctl {}: expected {message:?}, got {stderr:?}",
        args.join(" ")
    );
}

fn raw_http(socket: &std::path::Path, request: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("daemon socket");
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn bad_requests_get_dockers_errors_and_change_nothing() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let mut d = Daemon::start();
    d.network("n1", &[]);
    let sb = unique("vse");
    d.sandbox(&sb, &["n1"]);
    let before = state(&d);
    let n1_id = d
        .vsctl_ok(&["network", "inspect", "n1"])
        .split("\"Id\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("inspect shows an Id")
        .to_owned();

    refused(
        &d,
        &["network", "create", "--subnet", "10.0.0.300/24", "bad"],
        "invalid CIDR address: 10.0.0.300/24",
    );
    refused(
        &d,
        &["network", "create", "n1"],
        "network with name n1 already exists",
    );
    refused(
        &d,
        &["network", "inspect", "nope"],
        "Error: No such network: nope",
    );
    refused(
        &d,
        &["network", "connect", "nope", &sb],
        "network nope not found",
    );
    refused(
        &d,
        &["network", "create", "--subnet", "172.18.5.0/24", "overlap"],
        "Pool overlaps with other one on this address space",
    );
    refused(
        &d,
        &["network", "rm", "n1"],
        &format!("error while removing network: network n1 id {n1_id} has active endpoints"),
    );
    refused(
        &d,
        &["network", "rm", "bridge"],
        "bridge is a pre-defined network and cannot be removed",
    );
    refused(
        &d,
        &["network", "connect", "--alias", "x", "bridge", &sb],
        "network-scoped alias is supported only for containers in user defined networks",
    );
    // Every refusal is Docker's CLI form.
    refused(
        &d,
        &["network", "rm", "nope"],
        "Error response from daemon: network nope not found",
    );

    let body = "{\"Name\": \"x\", ";
    let reply = raw_http(
        &d.socket,
        &format!(
            "POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("\"message\""), "{reply}");

    let reply = raw_http(&d.socket, "GARBAGE\r\n\r\n");
    assert!(!reply.starts_with("HTTP/1.1 2"), "{reply}");

    assert_eq!(
        state(&d),
        before,
        "a refused request changed the daemon's state"
    );
    // And the daemon still works.
    d.network("n2", &[]);
}
