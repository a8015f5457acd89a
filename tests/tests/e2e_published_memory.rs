//! A published port under bulk traffic keeps the daemon's memory bounded:
//! `iperf3` from 127.0.0.1 to a port published by a sandbox, through the
//! host connector, and the daemon's resident memory (`/proc/PID/status`)
//! read afterwards. The daemon's host namespace is one the test creates,
//! so the published port is private to it.
//!
//! Needs root, `ip`, `nsenter` and `iperf3`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vswitch_tests::{Daemon, NamedNetns, prerequisites, run_ok, unique, wait_for};

/// Data pushed through the published port. Before the connector's buffers
/// were bounded, 100 MB left the daemon about 500 MB larger.
const BYTES: &str = "200M";

/// Far above what the daemon needs (about 50 MB idle, 8 MiB per open
/// connection), far below what a frame buffer per segment costs.
const RSS_LIMIT_KB: u64 = 250 * 1024;

/// The `iperf3` server in the sandbox, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn bulk_through_a_published_port_keeps_the_daemons_memory_bounded() {
    if !prerequisites(&["ip", "nsenter", "iperf3"]) {
        return;
    }
    let host = NamedNetns::new(&unique("vsmh"));
    let mut d = Daemon::start_in_netns(host.name(), &[]);
    let pid = d.pid().expect("the daemon runs");
    let (net, sb) = (unique("vsmn"), unique("vsms"));
    d.network(&net, &[]);
    d.vsctl_ok(&["sandbox", "create", "-p", "15299:5201", &sb]);
    d.adopt_sandboxes(&[sb.as_str()]);
    d.vsctl_ok(&["network", "connect", &net, &sb]);
    let _server = Server(
        Command::new("ip")
            .args(["netns", "exec", &sb, "iperf3", "-s", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server runs"),
    );
    wait_for(
        Duration::from_secs(10),
        || run_ok("ip", &["netns", "exec", &sb, "ss", "-Hltn"]).contains(":5201"),
        "the iperf3 server listens",
    );
    let before = rss_kb(pid);
    let out = run_ok(
        "ip",
        &[
            "netns",
            "exec",
            host.name(),
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            "15299",
            "-n",
            BYTES,
        ],
    );
    assert!(out.contains("receiver"), "iperf3 completed: {out}");
    let after = rss_kb(pid);
    eprintln!("daemon RSS {before} kB before, {after} kB after {BYTES}");
    assert!(
        after < RSS_LIMIT_KB,
        "the daemon grew from {before} kB to {after} kB for {BYTES} through a published port"
    );
    drop(d);
}
