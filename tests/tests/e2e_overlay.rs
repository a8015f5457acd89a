//! Overlay networks across hosts, for real: three "hosts" are network
//! namespaces on an underlay the test builds (a hub namespace with a
//! kernel bridge, used for the underlay only), each running its own
//! `vswitchd --vtep ... --peers FILE` (static-file control plane), plus a
//! fourth namespace with a Linux `vxlan` device, the kernel's VTEP, on the
//! same VNI and port.
//!
//! Needs root, `ip`, `bridge`, `nsenter`, `ping`, `iperf3`, `tshark` and
//! `ethtool`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vswitch_tests::{Daemon, Underlay, prerequisites, run, run_ok, unique, wait_for};

const VNI: u32 = 4242;

/// A file removed on drop, however the test ends.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A background process (iperf3 server, tshark), killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        // TERM first: tshark then stops its capture child and completes
        // the file.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    run("ip", &args)
}

fn ping_from_ns(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", addr])
        .status
        .success()
}

/// The peer file every host reads: the three vswitch hosts and the kernel
/// VTEP, and the network's VNI by name.
fn peer_file(u: &Underlay, network: &str, hosts: usize) -> vswitch_tests::TempFile {
    let mut text = String::from("# written by e2e_overlay\n");
    for i in 0..hosts {
        text.push_str(&format!(
            "[[vtep]]\nname = \"host{i}\"\naddress = \"{}\"\n\n",
            u.addr(i)
        ));
    }
    text.push_str(&format!("[[network]]\nvni = {VNI}\nname = \"{network}\"\n"));
    vswitch_tests::TempFile::new(&text)
}

/// Starts `vswitchd` on host `i` with the peer file, and creates the
/// overlay network there with that host's slice of the subnet.
fn host_daemon(u: &Underlay, i: usize, peers: &str, network: &str) -> Daemon {
    let vtep = u.addr(i);
    let name = format!("host{i}");
    let mut d = Daemon::start_in(
        Some(&u.host(i)),
        &["--vtep", &vtep, "--peers", peers, "--vtep-name", &name],
    );
    let range = format!("10.88.0.{}/26", 64 * (i + 1) % 256);
    d.network(
        network,
        &[
            "-d",
            "overlay",
            "--subnet",
            "10.88.0.0/24",
            "--gateway",
            "10.88.0.1",
            "--ip-range",
            &range,
            "--attachable",
        ],
    );
    d
}

fn eth0_addr(d: &Daemon, sandbox: &str) -> String {
    let out = d.exec(sandbox, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn containers_on_three_hosts_and_a_kernel_vtep_share_one_overlay() {
    if !prerequisites(&[
        "ip", "bridge", "nsenter", "ping", "iperf3", "tshark", "ethtool",
    ]) {
        return;
    }
    // Host 3 is the kernel's VTEP.
    let u = Underlay::new("ov", 77, 4);
    let network = unique("ovn");
    let peers = peer_file(&u, &network, 4);
    let mut hosts: Vec<Daemon> = (0..3)
        .map(|i| host_daemon(&u, i, peers.path(), &network))
        .collect();
    let sandboxes: Vec<String> = (0..3).map(|_| unique("ovc")).collect();
    for (d, s) in hosts.iter_mut().zip(&sandboxes) {
        d.sandbox(s, &[&network]);
    }
    let addrs: Vec<String> = hosts
        .iter()
        .zip(&sandboxes)
        .map(|(d, s)| eth0_addr(d, s))
        .collect();
    assert_eq!(addrs, ["10.88.0.64", "10.88.0.128", "10.88.0.192"]);

    // Docker's view of the network on each host.
    let inspect: serde_json::Value =
        serde_json::from_str(&hosts[0].vsctl_ok(&["network", "inspect", &network])).unwrap();
    let n = &inspect[0];
    assert_eq!(n["Driver"], "overlay");
    assert_eq!(
        n["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        VNI.to_string()
    );
    assert_eq!(n["Attachable"], true);
    let peer_ips: Vec<&str> = n["Peers"]
        .as_array()
        .expect("Peers")
        .iter()
        .filter_map(|p| p["IP"].as_str())
        .collect();
    assert_eq!(
        peer_ips,
        [
            "192.168.77.1",
            "192.168.77.2",
            "192.168.77.3",
            "192.168.77.4"
        ]
    );
    let mtu = hosts[0].exec(&sandboxes[0], &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1450");

    // Every container reaches every other, across hosts.
    for (i, (d, s)) in hosts.iter().zip(&sandboxes).enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                assert!(d.ping(s, addr, 2), "host{i} → host{j}");
            }
        }
    }

    // The remote MACs are known with their VTEPs, and the VTEPs with their
    // traffic.
    let fdb = hosts[0].vsctl_ok(&["show-fdb", &network]);
    for (mac, vtep) in [
        ("02:42:0a:58:00:80", "192.168.77.2"),
        ("02:42:0a:58:00:c0", "192.168.77.3"),
    ] {
        let line = fdb
            .lines()
            .find(|l| l.contains(mac))
            .unwrap_or_else(|| panic!("{mac} missing from show-fdb:\n{fdb}"));
        assert!(line.ends_with(vtep), "{line}");
    }
    let vteps: serde_json::Value =
        serde_json::from_str(&hosts[0].vsctl_ok(&["--format", "json", "show-vteps", &network]))
            .unwrap();
    for (addr, host) in [("192.168.77.2", "host1"), ("192.168.77.3", "host2")] {
        let v = vteps
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Vtep"] == addr)
            .unwrap_or_else(|| panic!("{addr} missing from show-vteps: {vteps}"));
        assert_eq!(v["Host"], host);
        assert!(v["RxPackets"].as_u64().unwrap() > 0, "{v}");
        assert!(v["TxPackets"].as_u64().unwrap() > 0, "{v}");
        assert!(v["Endpoints"].as_u64().unwrap() >= 1, "{v}");
    }

    // The kernel: a vxlan device on the same VNI and port, head-end
    // replicating to the three hosts, learning their MACs.
    let k = u.host(3);
    let vni = VNI.to_string();
    run_ok(
        "ip",
        &[
            "-n",
            &k,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            "4789",
            "local",
            &u.addr(3),
            "dev",
            "u0",
        ],
    );
    for i in 0..3 {
        run_ok(
            "bridge",
            &[
                "-n",
                &k,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                &u.addr(i),
            ],
        );
    }
    run_ok(
        "ip",
        &["-n", &k, "addr", "add", "10.88.0.250/24", "dev", "vx0"],
    );
    run_ok("ip", &["-n", &k, "link", "set", "vx0", "mtu", "1450", "up"]);
    // The underlay is veth, which never computes checksums: with offload
    // on, the kernel would send its inner TCP checksums unfinished (a
    // kernel receiver on the same machine trusts them through the packet's
    // metadata; a UDP socket's reader cannot). A NIC completes them; here
    // the kernel's vxlan device must.
    run_ok(
        "ip",
        &["netns", "exec", &k, "ethtool", "-K", "vx0", "tx", "off"],
    );

    // tshark, on the kernel host's underlay link, sees what vswitch sends.
    let pcap = Removed(std::env::temp_dir().join(format!("{}.pcap", unique("ovcap"))));
    let pcap_path = pcap.0.to_str().unwrap().to_owned();
    let capture = Bg(Command::new("ip")
        .args(["netns", "exec", &k, "tshark", "-q", "-i", "u0", "-a"])
        // Enough packets to judge, few enough to decode quickly.
        .args(["duration:30", "-c", "200", "-s", "128"])
        .args(["-f", "udp dst port 4789 and src host 192.168.77.1"])
        .args(["-w", &pcap_path])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark runs"));
    // tshark is slow to start; wait until it writes its file header.
    wait_for(
        Duration::from_secs(20),
        || std::fs::metadata(&pcap.0).is_ok_and(|m| m.len() > 0),
        "tshark to start capturing",
    );

    assert!(ping_from_ns(&k, &addrs[0]), "kernel → vswitch host0");
    assert!(
        hosts[1].ping(&sandboxes[1], "10.88.0.250", 3),
        "vswitch host1 → kernel"
    );
    assert!(
        hosts[0].ping(&sandboxes[0], "10.88.0.250", 3),
        "vswitch host0 → kernel"
    );

    // An iperf3 stream each way between the kernel's VTEP and a container.
    let server = Bg(Command::new("ip")
        .args(["netns", "exec", &k, "iperf3", "-s", "-B", "10.88.0.250"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server runs"));
    for reverse in [false, true] {
        let mut args = vec![
            "iperf3",
            "-c",
            "10.88.0.250",
            "-t",
            "2",
            "-J",
            "--connect-timeout",
            "3000",
        ];
        if reverse {
            args.push("-R");
        }
        let mut out = hosts[0].exec(&sandboxes[0], &args);
        for _ in 0..20 {
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("\"error\"") {
                break;
            }
            // The server may not listen yet.
            std::thread::sleep(Duration::from_millis(250));
            out = hosts[0].exec(&sandboxes[0], &args);
        }
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("\"error\""),
            "iperf3 (reverse: {reverse}): {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            received > 1_000_000,
            "iperf3 (reverse: {reverse}) moved {received} bytes: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    drop(server);
    drop(capture);

    // The stream left host0 as super-frames, cut while encapsulated, and
    // none was refused.
    let underlay: serde_json::Value =
        serde_json::from_str(&hosts[0].vsctl_ok(&["--format", "json", "show-underlay"])).unwrap();
    let counter = |name: &str| {
        underlay["Counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing from show-underlay: {underlay}"))
    };
    assert!(counter("tx_segmented") > 0, "{underlay}");
    assert!(
        counter("tx_segments") > counter("tx_segmented"),
        "{underlay}"
    );
    assert!(counter("tx_gso_sends") > 0, "{underlay}");
    assert_eq!(counter("tx_bad_offload"), 0, "{underlay}");
    assert!(underlay["Drops"].is_object(), "{underlay}");

    // Decoded as VXLAN with the network's VNI.
    let decoded = run_ok(
        "tshark",
        &[
            "-r",
            &pcap_path,
            "-Y",
            "vxlan",
            "-T",
            "fields",
            "-e",
            "vxlan.vni",
            "-e",
            "vxlan.flags",
        ],
    );
    drop(pcap);
    let lines: Vec<&str> = decoded.lines().collect();
    assert!(
        lines.len() >= 3,
        "tshark decoded too few VXLAN packets:\n{decoded}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.split_whitespace().next() == Some(vni.as_str())),
        "VNIs other than {VNI}:\n{decoded}"
    );

    // A host's daemon that crashes and restarts is back on the overlay:
    // the network, its VNI and the container come back from its state.
    hosts[1].kill9();
    assert!(
        hosts[0].ping(&sandboxes[0], &addrs[2], 2),
        "host0 → host2 while host1 is down"
    );
    hosts[1].spawn();
    wait_for(
        Duration::from_secs(10),
        || hosts[0].ping(&sandboxes[0], &addrs[1], 1),
        "host1's container after its daemon restarted",
    );
    assert!(hosts[1].ping(&sandboxes[1], &addrs[2], 2), "host1 → host2");
    drop(hosts);
    drop(peers);
    drop(u);
}
