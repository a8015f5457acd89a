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
    let won = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "one create wins: {outcomes:?}");
    for o in outcomes.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already exists"), "{err}");
    }
    for d in &hosts {
        for n in [&net, &other_a, &other_b] {
            wait_for(
                Duration::from_secs(10),
                || d.vsctl(&["network", "inspect", n]).status.success(),
                "the network on every host",
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
    for d in &hosts {
        for n in [&other_a, &other_b] {
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
    // the test's namespaces), never answered with the dead address.
    let (_, out) = dig(
        &hosts[0],
        c0,
        &["+short", "+time=1", "+tries=1", "@127.0.0.11", c1],
    );
    assert!(
        !out.contains(&addrs[1][0]),
        "a dead host's names go too: {out}"
    );

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
        !unique_addrs.contains(&late_addr) && !late_addr.is_empty(),
        "{late_addr} is new"
    );
    wait_for(
        Duration::from_secs(10),
        || vteps(&hosts[0], &net).contains(&(u.addr(2), "host2".to_owned(), 4)),
        "host0 sees host2's fourth endpoint",
    );
    assert!(
        hosts[0].ping(c0, &late_addr, 3),
        "host0 → the new container"
    );
    eprintln!("e2e_etcd took {:?}", started.elapsed());
}
