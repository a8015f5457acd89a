//! The etcd control plane, for real: three "hosts" are network namespaces
//! on an underlay the test builds (a hub namespace with a kernel bridge,
//! for the underlay only), each running `vswitchd --vtep ADDR --etcd URL`,
//! and a fourth runs the etcd the test starts (Debian's `etcd-server`, on
//! a data directory removed at the end).
//!
//! Needs root, `ip`, `nsenter`, `ping`, `dig`, `ss` and `etcd`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vswitch_tests::{Daemon, Underlay, dig, prerequisites, run, unique, wait_for};

/// The lease's time to live the hosts run with: short, so the test is.
const TTL: u64 = 3;

/// The test's etcd, in its own namespace of the underlay; stopped by pid
/// and its data directory removed on drop.
struct Etcd {
    netns: String,
    addr: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Etcd {
    fn start(netns: &str, addr: &str) -> Self {
        let mut e = Self {
            netns: netns.to_owned(),
            addr: addr.to_owned(),
            dir: std::env::temp_dir().join(unique("vswitch-etcd-")),
            child: None,
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://{}:2379", self.addr)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = "http://127.0.0.1:2380";
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcd", "--name", "e2e"])
            .arg("--data-dir")
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                &format!("e2e={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let ns = self.netns.clone();
        wait_for(
            Duration::from_secs(20),
            || {
                String::from_utf8_lossy(&run("ip", &["netns", "exec", &ns, "ss", "-ltn"]).stdout)
                    .contains(":2379")
            },
            "etcd listening",
        );
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) etcd: requests sent while
    /// it is frozen are all answered once it thaws, so two hosts' claims
    /// then run side by side.
    fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("etcd runs").id();
        // `ip netns exec` runs etcd in its own process (exec'd).
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let out = run("kill", &[signal, &pid.to_string()]);
        assert!(out.status.success(), "kill {signal} {pid}: {out:?}");
    }

    /// Stops etcd (SIGKILL, as a crash); its data stays for a restart.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host_daemon(u: &Underlay, i: usize, etcd: &str) -> Daemon {
    let vtep = u.addr(i);
    let name = format!("host{i}");
    let ttl = TTL.to_string();
    Daemon::start_in(
        Some(&u.host(i)),
        &[
            "--vtep",
            &vtep,
            "--etcd",
            etcd,
            "--etcd-ttl",
            &ttl,
            "--vtep-name",
            &name,
        ],
    )
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

/// `show-vteps NETWORK` as (VTEP, host, endpoints) rows.
fn vteps(d: &Daemon, network: &str) -> BTreeSet<(String, String, u64)> {
    let out = d.vsctl(&["--format", "json", "show-vteps", network]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["Vtep"].as_str().unwrap_or_default().to_owned(),
                r["Host"].as_str().unwrap_or_default().to_owned(),
                r["Endpoints"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The `IPAMConfig` of `sandbox`'s first endpoint, as `sandbox inspect`
/// shows it (Docker's: `null` unless `--ip` was given).
fn ipam_config(d: &Daemon, sandbox: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["sandbox", "inspect", sandbox])).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Endpoints"][0].get("IPAMConfig").cloned()
}

fn inspect(d: &Daemon, network: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.vsctl_ok(&["network", "inspect", network])).unwrap();
    // `network inspect` prints Docker's array.
    if v.is_array() { v[0].clone() } else { v }
}

#[test]
fn three_hosts_share_overlays_through_etcd() {
    if !prerequisites(&["ip", "nsenter", "ping", "dig", "ss", "etcd"]) {
        return;
    }
    let started = Instant::now();
    let u = Underlay::new("ed", 78, 4);
    let mut etcd = Etcd::start(&u.host(3), &u.addr(3));
    let url = etcd.url();
    let mut hosts: Vec<Daemon> = (0..3).map(|i| host_daemon(&u, i, &url)).collect();

    // The same network created on every host at once: one create wins
    // (names are cluster-wide, as in Docker's global scope), and the
    // network appears on every host with one VNI and subnet. Two other
    // networks created at once on two hosts: different VNIs and subnets.
    let net = unique("edn");
    let (other_a, other_b) = (unique("eda"), unique("edb"));
    // First, pairs of overlapping subnets (a /16 on host0, a /24 inside
    // it on host1) sent while etcd is frozen, so each pair's claims read
    // the cluster before either commits: one of each pair is refused all
    // the same. Each has a VNI of its own (creates that pick theirs take
    // the same lowest free one and conflict on it anyway).
    let overlapping: Vec<[(String, String, String); 2]> = (1..=4)
        .map(|k| {
            [
                (
                    unique("edw"),
                    format!("10.{}.0.0/16", 90 + k),
                    format!("{}", 6000 + 2 * k),
                ),
                (
                    unique("edn"),
                    format!("10.{}.1.0/24", 90 + k),
                    format!("{}", 6001 + 2 * k),
                ),
            ]
        })
        .collect();
    let create = |d: &Daemon, name: &str, subnet: &str, vni: &str| {
        let vni = format!("com.docker.network.driver.overlay.vxlanid_list={vni}");
        d.vsctl(&[
            "network", "create", "-d", "overlay", "--subnet", subnet, "-o", &vni, name,
        ])
    };
    let overlap_outcomes: Vec<[std::process::Output; 2]> = std::thread::scope(|s| {
        etcd.freeze(true);
        let pairs: Vec<_> = overlapping
            .iter()
            .map(
                |[(wide, wide_net, wide_vni), (narrow, narrow_net, narrow_vni)]| {
                    let (h0, h1) = (&hosts[0], &hosts[1]);
                    let w = s.spawn(move || create(h0, wide, wide_net, wide_vni));
                    let n = s.spawn(move || create(h1, narrow, narrow_net, narrow_vni));
                    (w, n)
                },
            )
            .collect();
        // Every claim is waiting for etcd (each host's client sends one
        // at a time, and the first is sent at once).
        std::thread::sleep(Duration::from_millis(500));
        etcd.freeze(false);
        pairs
            .into_iter()
            .map(|(w, n)| [w.join().unwrap(), n.join().unwrap()])
            .collect()
    });
    let outcomes: Vec<std::process::Output> = std::thread::scope(|s| {
        let creates: Vec<_> = hosts
            .iter()
            .map(|d| {
                let net = net.clone();
                s.spawn(move || {
                    d.vsctl(&["network", "create", "-d", "overlay", "--attachable", &net])
                })
            })
            .collect();
        let (h0, h1) = (&hosts[0], &hosts[1]);
        let a = other_a.clone();
        let b = other_b.clone();
        s.spawn(move || h0.vsctl_ok(&["network", "create", "-d", "overlay", &a]));
        s.spawn(move || h1.vsctl_ok(&["network", "create", "-d", "overlay", &b]));
        creates.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut overlap_winners = Vec::new();
    for (pair, outcome) in overlapping.iter().zip(&overlap_outcomes) {
        let won: Vec<usize> = (0..2).filter(|i| outcome[*i].status.success()).collect();
        assert_eq!(won.len(), 1, "one of {pair:?} is refused: {outcome:?}");
        let lost = 1 - won[0];
        let err = String::from_utf8_lossy(&outcome[lost].stderr);
        assert!(err.contains("overlaps"), "{err}");
        overlap_winners.push((won[0], pair[won[0]].0.clone()));
    }
    let won = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "one create wins: {outcomes:?}");
    for o in outcomes.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already exists"), "{err}");
    }
    for (i, d) in hosts.iter().enumerate() {
        for n in [&net, &other_a, &other_b] {
            wait_for(
                Duration::from_secs(10),
                || d.vsctl(&["network", "inspect", n]).status.success(),
                &format!("network {n} on host{i}"),
            );
        }
    }
    let shape = |v: &serde_json::Value| {
        (
            v["IPAM"]["Config"][0]["Subnet"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            v["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            v["Attachable"].as_bool().unwrap_or_default(),
        )
    };
    let first = shape(&inspect(&hosts[0], &net));
    assert!(
        !first.0.is_empty() && !first.1.is_empty() && first.2,
        "{first:?}"
    );
    for d in &hosts[1..] {
        assert_eq!(shape(&inspect(d, &net)), first, "one network everywhere");
    }
    let a = shape(&inspect(&hosts[2], &other_a));
    let b = shape(&inspect(&hosts[2], &other_b));
    let all = [&first, &a, &b];
    let subnets: BTreeSet<&String> = all.iter().map(|s| &s.0).collect();
    let vnis: BTreeSet<&String> = all.iter().map(|s| &s.1).collect();
    assert_eq!(
        (subnets.len(), vnis.len()),
        (3, 3),
        "distinct subnets and VNIs: {all:?}"
    );
    // Removed on one host, removed everywhere.
    hosts[1].vsctl_ok(&["network", "rm", &other_a]);
    hosts[0].vsctl_ok(&["network", "rm", &other_b]);
    for (host, name) in &overlap_winners {
        hosts[*host].vsctl_ok(&["network", "rm", name]);
    }
    let removed: Vec<&String> = [&other_a, &other_b]
        .into_iter()
        .chain(overlap_winners.iter().map(|(_, n)| n))
        .collect();
    for d in &hosts {
        for n in &removed {
            wait_for(
                Duration::from_secs(10),
                || !d.vsctl(&["network", "inspect", n]).status.success(),
                "the network gone from every host",
            );
        }
    }
    for d in &mut hosts {
        d.adopt_networks(&[&net]);
    }

    // Three containers per host, all created at once: nine distinct
    // addresses.
    let names: Vec<Vec<String>> = (0..3)
        .map(|_| (0..3).map(|_| unique("edc")).collect())
        .collect();
    std::thread::scope(|s| {
        for (d, mine) in hosts.iter().zip(&names) {
            for c in mine {
                let net = net.clone();
                s.spawn(move || {
                    d.vsctl_ok(&["sandbox", "create", c]);
                    d.vsctl_ok(&["network", "connect", &net, c]);
                });
            }
        }
    });
    for (d, mine) in hosts.iter_mut().zip(&names) {
        let refs: Vec<&str> = mine.iter().map(String::as_str).collect();
        d.adopt_sandboxes(&refs);
    }
    let addrs: Vec<Vec<String>> = hosts
        .iter()
        .zip(&names)
        .map(|(d, mine)| mine.iter().map(|c| eth0_addr(d, c)).collect())
        .collect();
    let unique_addrs: BTreeSet<&String> = addrs.iter().flatten().collect();
    assert_eq!(
        unique_addrs.len(),
        9,
        "addresses unique across hosts: {addrs:?}"
    );
    assert!(!unique_addrs.contains(&String::new()), "{addrs:?}");

    // Every host sees the two others, each with its three endpoints.
    for (i, d) in hosts.iter().enumerate() {
        let want: BTreeSet<(String, String, u64)> = (0..3)
            .filter(|j| *j != i)
            .map(|j| (u.addr(j), format!("host{j}"), 3))
            .collect();
        wait_for(
            Duration::from_secs(10),
            || vteps(d, &net) == want,
            "show-vteps to agree",
        );
    }

    // Across hosts by address, and by name through the embedded DNS.
    let (c0, c1, c2) = (&names[0][0], &names[1][0], &names[2][0]);
    assert!(hosts[0].ping(c0, &addrs[1][0], 3), "host0 → host1");
    assert!(hosts[2].ping(c2, &addrs[0][0], 3), "host2 → host0");
    for (target, addr) in [(c1, &addrs[1][0]), (c2, &addrs[2][0])] {
        let (ok, out) = dig(&hosts[0], c0, &["+short", "@127.0.0.11", target]);
        assert!(
            ok && out.trim() == addr.as_str(),
            "{target} → {out:?}, want {addr}"
        );
    }
    assert!(
        hosts[0]
            .exec(c0, &["ping", "-c", "1", "-W", "2", c1])
            .status
            .success(),
        "ping by name"
    );
    // Docker's Peers: this host, then the two others, by name.
    let peers: BTreeSet<(String, String)> = inspect(&hosts[0], &net)["Peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["Name"].as_str().unwrap_or_default().to_owned(),
                p["IP"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> =
        (0..3).map(|j| (format!("host{j}"), u.addr(j))).collect();
    assert_eq!(peers, want);
    // The remote container's MAC (02:42 and its address) is forwarded to
    // its host's VTEP.
    let ip: std::net::Ipv4Addr = addrs[1][0].parse().unwrap();
    let o = ip.octets();
    let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    let fdb: serde_json::Value =
        serde_json::from_str(&hosts[0].vsctl_ok(&["--format", "json", "show-fdb", &net])).unwrap();
    let row = fdb
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["MacAddress"].as_str() == Some(mac.as_str()))
        .unwrap_or_else(|| panic!("{mac} not in show-fdb: {fdb}"));
    assert_eq!(row["Vtep"].as_str(), Some(u.addr(1).as_str()));

    // A host that dies: its endpoints leave the others within the TTL.
    hosts[1].kill9();
    let killed = Instant::now();
    for d in [&hosts[0], &hosts[2]] {
        wait_for(
            Duration::from_secs(TTL + 5),
            || !vteps(d, &net).iter().any(|v| v.0 == u.addr(1)),
            "host1's VTEP gone",
        );
    }
    let gone_after = killed.elapsed();
    eprintln!("host1's entries gone everywhere after {gone_after:?} (TTL {TTL} s)");
    // The name is no longer local: forwarded upstream (none answers in
    // the test's namespaces), never answered with the dead address. The
    // embedded DNS learns it from the control thread, after the VTEP
    // table: within a moment of it.
    wait_for(
        Duration::from_secs(3),
        || {
            let (_, out) = dig(
                &hosts[0],
                c0,
                &["+short", "+time=1", "+tries=1", "@127.0.0.11", c1],
            );
            !out.contains(&addrs[1][0])
        },
        "a dead host's names to go too",
    );
    // And its addresses: they were held under its lease, so another host
    // may take one at once, here as a `--ip`; the others reach it there.
    let reuse = unique("edr");
    hosts[0].vsctl_ok(&["sandbox", "create", &reuse]);
    hosts[0].adopt_sandboxes(&[&reuse]);
    hosts[0].vsctl_ok(&["network", "connect", "--ip", &addrs[1][0], &net, &reuse]);
    assert_eq!(eth0_addr(&hosts[0], &reuse), addrs[1][0]);
    assert!(
        hosts[2].ping(c2, &addrs[1][0], 3),
        "host2 → the dead host's address, now on host0"
    );
    // Docker's IPAMConfig: the given `--ip`, null for an address the
    // cluster picked.
    assert_eq!(
        ipam_config(&hosts[0], &reuse),
        Some(serde_json::json!({ "IPv4Address": addrs[1][0] }))
    );
    assert_eq!(ipam_config(&hosts[0], c0), Some(serde_json::Value::Null));
    let mut live: BTreeSet<String> = addrs[0].iter().chain(&addrs[2]).cloned().collect();
    live.insert(addrs[1][0].clone());
    // host1 comes back after its lease expired: the addresses nobody took
    // are its own again; the one host0 took stays host0's, and host1's
    // container that still holds it is not published.
    hosts[1].spawn();
    wait_for(
        Duration::from_secs(15),
        || vteps(&hosts[0], &net).contains(&(u.addr(1), "host1".to_owned(), 2)),
        "host1 back with two endpoints",
    );
    assert!(hosts[2].ping(c2, &addrs[1][1], 3), "host2 → host1 again");
    assert!(
        hosts[2].ping(c2, &addrs[1][0], 2),
        "the address host0 took still leads there"
    );
    live.extend(addrs[1][1..].iter().cloned());

    // etcd gone: traffic flows, cluster changes fail cleanly.
    etcd.stop();
    assert!(hosts[0].ping(c0, &addrs[2][0], 3), "pings without etcd");
    let late = unique("edl");
    hosts[2].vsctl_ok(&["sandbox", "create", &late]);
    hosts[2].adopt_sandboxes(&[&late]);
    let out = hosts[2].vsctl(&["network", "connect", &net, &late]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("etcd"), "{err}");
    assert_eq!(eth0_addr(&hosts[2], &late), "", "no half-made endpoint");
    assert!(hosts[0].ping(c0, &addrs[2][1], 2), "still flowing");

    // etcd back: the hosts re-sync on their own, and changes work again.
    etcd.spawn();
    wait_for(
        Duration::from_secs(15),
        || {
            hosts[2]
                .vsctl(&["network", "connect", &net, &late])
                .status
                .success()
        },
        "connect once etcd is back",
    );
    let late_addr = eth0_addr(&hosts[2], &late);
    assert!(
        !live.contains(&late_addr) && !late_addr.is_empty(),
        "{late_addr} is new"
    );
    live.insert(late_addr.clone());
    wait_for(
        Duration::from_secs(10),
        || vteps(&hosts[0], &net).contains(&(u.addr(2), "host2".to_owned(), 4)),
        "host0 sees host2's fourth endpoint",
    );
    assert!(
        hosts[0].ping(c0, &late_addr, 3),
        "host0 → the new container"
    );
    // The hosts' address claims moved to their new leases: once the
    // leases of before etcd's restart have expired, the addresses in use
    // are still taken.
    std::thread::sleep(Duration::from_secs(TTL + 2));
    let later = unique("edm");
    hosts[0].vsctl_ok(&["sandbox", "create", &later]);
    hosts[0].adopt_sandboxes(&[&later]);
    hosts[0].vsctl_ok(&["network", "connect", &net, &later]);
    let later_addr = eth0_addr(&hosts[0], &later);
    assert!(
        !live.contains(&later_addr) && !later_addr.is_empty(),
        "{later_addr} is not one in use: {live:?}"
    );
    eprintln!("e2e_etcd took {:?}", started.elapsed());
}
