//! Docker on vswitch, against a real Docker engine: the test starts its own
//! containerd and dockerd (own data root, exec root, pid file and socket
//! under a temporary directory; `--bridge=none`, so no docker0), imports a
//! busybox image made from the `busybox-static` binary, and runs one
//! scenario twice — `-d bridge` and `-d <vswitch plugin> --ipam-driver
//! <vswitch plugin>` — comparing what a user sees: `docker network
//! inspect`'s IPAM config, container addresses, MACs, gateways and routes,
//! pings by name, alias and address, `--internal`, `enable_icc=false`,
//! isolation between networks, `network connect`/`disconnect` of a running
//! container, the error texts for an overlapping subnet and a duplicate
//! `--ip`, and `-p 18080:80`: reached from the host's loopback and from an
//! outside namespace (behind a veth whose host end carries a host address)
//! with the client address the container saw (a CGI of busybox's httpd
//! reports it), its `docker port` lines (`vsctl port` on the vswitch side:
//! dockerd never shows a remote driver's port map), the error for a host
//! port already taken, and egress: a container reaches a server in the
//! outside namespace, which sees the host's address, and a container of an
//! `--internal` network does not.
//!
//! Differences that are deliberate (and listed in the README): Docker
//! prefixes a remote driver's errors with `remote: `; an automatic subnet
//! may differ (vswitch's own `bridge` network holds 172.17.0.0/16, which
//! this engine, without docker0, gives its first network).
//!
//! On the vswitch side it also asserts that `show-ports`, `show-fdb`,
//! `show-conntrack` and `sandbox ls` name Docker's containers (vswitchd
//! learns the names from this engine's API socket), that the host gains no
//! iptables or nftables rule, no kernel bridge and no `docker-proxy`, and
//! that after a
//! `kill -9` of vswitchd under running containers they ping again (the time
//! is printed), `docker network inspect` is unchanged and the published
//! port is served again. dockerd runs with `--live-restore` and is then
//! restarted under the running containers: a ping between two of them runs
//! throughout without a loss, `docker network inspect` is unchanged, names
//! and the published port still answer, a container that ended while
//! dockerd was away is cleaned up when it is back (its port and address
//! freed), and `docker run` on the network works again. On restart dockerd
//! asks a remote driver only `Plugin.Activate` and the capabilities: the
//! plugin's IPAM answers `RequiresRequestReplay: false`, its allocations
//! being stored, so dockerd replays no pool or address request.
//!
//! Only one dockerd runs on the machine at a time: the test holds an
//! exclusive lock on `/run/lock/vswitch-e2e-docker.lock`. Whatever happens,
//! it removes its containers, networks, bridges, mounts and directories,
//! the outside namespace and its veth, stops both daemons by pid, and puts back the iptables/nftables state,
//! `ip_forward` and `br_netfilter` as it found them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vswitch_tests::{
    Daemon, NamedNetns, firewall_rules, host_links_of_kind, prerequisites, run, run_ok, unique,
};

const LOCK: &str = "/run/lock/vswitch-e2e-docker.lock";

/// What dockerd and containerd make outside their roots whatever their
/// flags (the trust key, the plugin and shim socket directories), children
/// first: removed after the test when they were not there before.
const DAEMON_LEFTOVERS: [&str; 6] = [
    "/etc/docker/key.json",
    "/etc/docker",
    "/run/docker/plugins",
    "/run/docker",
    "/run/containerd/s",
    "/run/containerd",
];

/// The host's firewall and forwarding state, put back on drop.
struct HostState {
    iptables: String,
    tables: BTreeSet<String>,
    ip_forward: String,
    bridge_nf: bool,
    absent: Vec<&'static str>,
}

fn nft_tables() -> BTreeSet<String> {
    String::from_utf8_lossy(&run("nft", &["list", "tables"]).stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_owned)
        .collect()
}

impl HostState {
    fn snapshot() -> Self {
        Self {
            iptables: String::from_utf8_lossy(&run("iptables-save", &[]).stdout).into_owned(),
            tables: nft_tables(),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            bridge_nf: Path::new("/proc/sys/net/bridge").exists(),
            absent: DAEMON_LEFTOVERS
                .into_iter()
                .filter(|p| !Path::new(p).exists())
                .collect(),
        }
    }

    fn restore(&self) {
        // Tables dockerd made did not exist before: they go whole.
        for table in nft_tables().difference(&self.tables) {
            let mut args = vec!["delete", "table"];
            args.extend(table.split_whitespace());
            let _ = run("nft", &args);
        }
        if !self.iptables.trim().is_empty() {
            let mut child = Command::new("iptables-restore")
                .stdin(Stdio::piped())
                .spawn()
                .expect("iptables-restore runs");
            if let Some(stdin) = child.stdin.as_mut() {
                use std::io::Write;
                let _ = stdin.write_all(self.iptables.as_bytes());
            }
            let _ = child.wait();
        }
        if !self.ip_forward.is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.ip_forward);
        }
        if !self.bridge_nf && Path::new("/proc/sys/net/bridge").exists() {
            let _ = run("modprobe", &["-r", "br_netfilter"]);
        }
        for path in &self.absent {
            // A directory goes only when empty: what others put there stays.
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.restore();
    }
}

/// containerd and dockerd of this test, stopped and cleaned up on drop.
struct Engine {
    dir: PathBuf,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    bridges_before: BTreeSet<String>,
}

/// The host's address on the veth toward the outside namespace, and the
/// outside's, in a /30 of their own (the third octet from the pid, so two
/// machines' runs never meet; one run at a time per host, by the lock).
fn outside_addresses() -> (String, String) {
    let x = std::process::id() % 250;
    (format!("10.236.{x}.1"), format!("10.236.{x}.2"))
}

/// The outside server's port (in the outside namespace only).
const OUTSIDE_PORT: u16 = 18081;

/// A namespace outside the host, behind a veth whose host end carries a
/// host address: a remote client of published ports, and a remote server
/// (HTTP on [`OUTSIDE_PORT`], answering each client with the address it
/// came from) for containers' egress. The server stops and the namespace
/// goes (with the veth) on drop.
struct Outside {
    ns: NamedNetns,
    host_ip: String,
    ip: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

/// Serves, on a thread inside the namespace at `netns`, `GET` on
/// `ip:OUTSIDE_PORT` with the client's address, until `stop`.
fn outside_server(
    netns: String,
    ip: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let (bound, ready) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("the outside namespace opens");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the outside namespace");
        let listener =
            std::net::TcpListener::bind((ip.as_str(), OUTSIDE_PORT)).expect("the outside server");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let _ = bound.send(());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut request = [0u8; 1024];
                    let _ = s.read(&mut request);
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{}\n",
                        peer.ip()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the outside server listens");
    server
}

impl Outside {
    fn new() -> Self {
        let ns = NamedNetns::new(&unique("vsdo"));
        let (host_ip, ip) = outside_addresses();
        let (a, b) = (unique("vdh"), unique("vdo"));
        run_ok(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        run_ok("ip", &["link", "set", &b, "netns", ns.name()]);
        run_ok("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &a]);
        run_ok("ip", &["link", "set", &a, "up"]);
        run_ok(
            "ip",
            &[
                "-n",
                ns.name(),
                "addr",
                "add",
                &format!("{ip}/30"),
                "dev",
                &b,
            ],
        );
        run_ok("ip", &["-n", ns.name(), "link", "set", &b, "up"]);
        let stop = std::sync::Arc::default();
        let server = outside_server(
            format!("/run/netns/{}", ns.name()),
            ip.clone(),
            std::sync::Arc::clone(&stop),
        );
        Self {
            ns,
            host_ip,
            ip,
            stop,
            server: Some(server),
        }
    }
}

impl Engine {
    /// Starts the engine with its data, sockets and logs under `dir`.
    fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("engine directory");
        let bridges_before = host_links_of_kind("bridge").into_iter().collect();
        let mut engine = Self {
            dir: dir.clone(),
            containerd: None,
            dockerd: None,
            bridges_before,
        };
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/ctd-root\"\nstate = \"{d}/ctd-state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/ctd.sock\"\n",
                d = dir.display()
            ),
        )
        .expect("containerd config");
        engine.containerd = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log(&dir, "containerd.log"))
                .spawn()
                .expect("containerd starts"),
        );
        wait(
            Duration::from_secs(20),
            || dir.join("ctd.sock").exists(),
            "containerd",
        );
        std::fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
        engine.start_dockerd();
        engine
    }

    /// Starts dockerd (with `--live-restore`: containers outlive it) and
    /// waits for its API.
    fn start_dockerd(&mut self) {
        let dir = &self.dir;
        self.dockerd = Some(
            Command::new("dockerd")
                .arg("--config-file")
                .arg(dir.join("daemon.json"))
                .arg("--containerd")
                .arg(dir.join("ctd.sock"))
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("--pidfile")
                .arg(dir.join("docker.pid"))
                .arg("-H")
                .arg(format!("unix://{}", dir.join("docker.sock").display()))
                .args(["--bridge=none", "--storage-driver", "vfs", "--live-restore"])
                .stdout(Stdio::null())
                .stderr(append_log(dir, "dockerd.log"))
                .spawn()
                .expect("dockerd starts"),
        );
        wait(
            Duration::from_secs(60),
            || self.docker(&["version"]).status.success(),
            "dockerd",
        );
    }

    /// Stops dockerd (SIGTERM, by pid) and waits for it to exit; with
    /// `--live-restore` the containers keep running.
    fn stop_dockerd(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            let _ = Command::new("kill").arg(dockerd.id().to_string()).status();
            reap(&mut dockerd, Duration::from_secs(20));
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("docker.sock").display()),
            )
            .args(args)
            .output()
            .expect("docker runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn error_line(out: &Output) -> String {
    {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().next().unwrap_or_default();
        line.replace(
            "Error response from daemon: remote: ",
            "Error response from daemon: ",
        )
    }
}

impl Engine {
    /// A busybox image from the host's static busybox.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for tool in [
            "sh", "ping", "sleep", "ip", "cat", "nslookup", "httpd", "printf", "wget", "timeout",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).expect("symlink");
        }
        // httpd's CGI: the container's host name and the client address
        // its TCP connection came from.
        let cgi = root.join("www/cgi-bin");
        std::fs::create_dir_all(&cgi).expect("cgi-bin");
        std::fs::write(
            cgi.join("peer"),
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s %s\\n' \"$(cat /etc/hostname)\" \"$REMOTE_ADDR\"\n",
        )
        .expect("the CGI script");
        std::fs::set_permissions(
            cgi.join("peer"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("the CGI script is executable");
        let tar = self.dir.join("rootfs.tar");
        let tarred = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar runs");
        assert!(tarred.success());
        self.ok(&["import", &tar.to_string_lossy(), "e2e-busybox"]);
    }

    fn stop(&mut self) {
        // Containers outlive a stopped dockerd (live-restore): one is
        // started again to remove them.
        if self.dockerd.is_none() && self.containerd.is_some() {
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.start_dockerd();
            }));
            if started.is_err() {
                eprintln!("dockerd did not start again: containers may be left running");
            }
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let _ = self.docker(&["network", "prune", "-f"]);
            let _ = Command::new("kill").arg(dockerd.id().to_string()).status();
            reap(&mut dockerd, Duration::from_secs(20));
        }
        if let Some(mut containerd) = self.containerd.take() {
            let _ = Command::new("kill")
                .arg(containerd.id().to_string())
                .status();
            reap(&mut containerd, Duration::from_secs(10));
        }
        for bridge in host_links_of_kind("bridge") {
            if !self.bridges_before.contains(&bridge) {
                let _ = run("ip", &["link", "del", &bridge]);
            }
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        ours.sort_unstable_by(|a, b| b.cmp(a));
        for m in ours {
            let _ = run("umount", &["-l", m]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name)).map_or_else(|_| Stdio::null(), Stdio::from)
}

fn append_log(dir: &Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

fn reap(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait(limit: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host's rules without nftables' packet and byte counts, which move
/// with any traffic.
fn rules() -> String {
    firewall_rules()
        .lines()
        .map(|l| match l.find("counter packets") {
            Some(i) => {
                let rest = &l[i..];
                let after = rest
                    .split_whitespace()
                    .skip(5)
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("{}counter {after}", &l[..i])
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `docker-proxy` processes of this test's dockerd (its children:
/// other engines on the host have their own).
fn docker_proxies(e: &Engine) -> usize {
    let Some(parent) = e.dockerd.as_ref().map(Child::id) else {
        return 0;
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "docker-proxy")
                && std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        == Some(parent)
                })
        })
        .count()
}

/// `ping -i 0.2` from a container's network namespace (entered from the
/// host, so it runs whatever dockerd does), stopped with SIGINT.
struct LivePing(Option<Child>);

impl LivePing {
    fn start(pid: &str, addr: &str) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ping", "-n", "-i", "0.2", "-W", "1", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsenter runs ping");
        Self(Some(child))
    }

    /// Stops it: (sent, answered).
    fn stop(mut self) -> (u32, u32) {
        let Some(child) = self.0.take() else {
            return (0, 0);
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("ping ends");
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default();
        let number = |word: &str| {
            summary
                .split(", ")
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (number("transmitted"), number("received"))
    }
}

impl Drop for LivePing {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a user sees of one run of the scenario.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    lines: Vec<String>,
}

impl Seen {
    fn push(&mut self, what: &str, value: impl std::fmt::Display) {
        self.lines.push(format!("{what}: {value}"));
    }
}

/// Creates a network for `driver` (`bridge`, or the plugin as network and
/// IPAM driver).
fn network(e: &Engine, driver: &str, name: &str, extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["network", "create", "-d", driver];
    if driver != "bridge" {
        args.extend(["--ipam-driver", driver]);
    }
    args.extend_from_slice(extra);
    args.push(name);
    let out = e.docker(&args);
    if out.status.success() {
        Ok(name.to_owned())
    } else {
        Err(error_line(&out))
    }
}

fn ipam_config(e: &Engine, net: &str) -> Value {
    let text = e.ok(&[
        "network",
        "inspect",
        net,
        "--format",
        "{{json .IPAM.Config}}",
    ]);
    serde_json::from_str(&text).expect("inspect is JSON")
}

fn container(e: &Engine, name: &str, net: &str, extra: &[&str]) -> Result<(), String> {
    let mut args = vec!["run", "-d", "--name", name, "--network", net];
    args.extend_from_slice(extra);
    args.extend(["e2e-busybox", "sleep", "600"]);
    let out = e.docker(&args);
    if out.status.success() {
        Ok(())
    } else {
        let _ = e.docker(&["rm", "-f", name]);
        Err(error_line(&out))
    }
}

/// What the outside server answered `c` (the address it saw the
/// container's connection come from), or `unreachable`.
fn egress(e: &Engine, c: &str, outside: &Outside) -> String {
    let url = format!("http://{}:{OUTSIDE_PORT}/", outside.ip);
    let out = exec(e, c, &["timeout", "3", "wget", "-q", "-O", "-", &url]);
    let body = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !body.is_empty() {
        body
    } else {
        "unreachable".to_owned()
    }
}

/// `ip/len mac gateway` as `docker inspect` shows them.
fn addressing(e: &Engine, c: &str) -> String {
    e.ok(&[
        "inspect",
        c,
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}/{{.IPPrefixLen}} {{.MacAddress}} gw={{.Gateway}}{{end}}",
    ])
}

fn exec(e: &Engine, c: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["exec", c];
    args.extend_from_slice(cmd);
    e.docker(&args)
}

fn pings(e: &Engine, from: &str, to: &str) -> bool {
    exec(e, from, &["ping", "-c", "1", "-W", "2", to])
        .status
        .success()
}

/// An error line with the endpoint's id (which differs by run) left out,
/// and `remote: ` (Docker's prefix for a remote driver's text) dropped.
fn without_endpoint_id(line: &str) -> String {
    let line = line.replace("remote: ", "");
    match line
        .find(" (")
        .and_then(|i| line[i..].find("): ").map(|j| (i, i + j)))
    {
        Some((i, j)) => format!("{}{}", &line[..i], &line[j + 1..]),
        None => line,
    }
}

/// Serves `/www` on port 80 with busybox's httpd: `GET /cgi-bin/peer`
/// answers the container's host name and the client's address as seen.
fn serve_http(e: &Engine, c: &str) {
    e.ok(&["exec", "-d", c, "httpd", "-f", "-p", "80", "-h", "/www"]);
}

/// The body of `GET /cgi-bin/peer` from `addr:port` (`<host name>
/// <client address>`), tried for a few seconds while the server starts;
/// empty when nothing answers. From the outside namespace when given, from
/// the host otherwise.
fn http_peer(from: Option<&Outside>, addr: &str, port: u16) -> String {
    let target = format!("{addr}:{port}");
    let get = move || {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = target
                .parse::<std::net::SocketAddr>()
                .map_err(std::io::Error::other)
                .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET /cgi-bin/peer HTTP/1.0\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                });
            if let Ok(text) = &got
                && let Some((head, body)) = text.split_once("\r\n\r\n")
                && head.starts_with("HTTP/1.")
                && head.contains(" 200 ")
            {
                return body.trim().to_owned();
            }
            if Instant::now() > deadline {
                return String::new();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    match from {
        Some(o) => o.ns.run(get),
        None => get(),
    }
}

/// What `c` saw of a client reaching it through a published port: its
/// client address when the answer came from `c`, `unreachable` otherwise.
fn seen_client(e: &Engine, c: &str, from: Option<&Outside>, addr: &str, port: u16) -> String {
    let hostname = e.ok(&["inspect", c, "--format", "{{.Config.Hostname}}"]);
    let body = http_peer(from, addr, port);
    match body.split_once(' ') {
        // httpd listens on `[::]`: an IPv4 client is `[::ffff:a.b.c.d]`.
        Some((h, client)) if h == hostname => client
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']')
            .to_owned(),
        _ => format!("unreachable ({body:?})"),
    }
}

/// Inside the container: eth0's address and MAC, and the routes.
fn inside(e: &Engine, c: &str) -> String {
    let addr =
        String::from_utf8_lossy(&exec(e, c, &["ip", "-o", "-4", "addr", "show", "eth0"]).stdout)
            .split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_owned();
    let link = String::from_utf8_lossy(&exec(e, c, &["cat", "/sys/class/net/eth0/address"]).stdout)
        .trim()
        .to_owned();
    let routes = String::from_utf8_lossy(&exec(e, c, &["ip", "route"]).stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    format!("{addr} {link} [{routes}]")
}

/// `docker port C [PORT]`'s lines, joined. On a vswitch network they come
/// from `vsctl port C` (the sandbox takes the container's name): dockerd
/// never shows a remote driver's port map (see the README's "What
/// differs").
fn port_lines(e: &Engine, vs: Option<&Daemon>, c: &str, port: &[&str]) -> String {
    let text = match vs {
        None => {
            let mut args = vec!["port", c];
            args.extend_from_slice(port);
            e.ok(&args)
        }
        Some(vs) => {
            wait(
                Duration::from_secs(15),
                || vs.vsctl(&["sandbox", "inspect", c]).status.success(),
                "the sandbox to take the container's name",
            );
            let mut args = vec!["port", c];
            args.extend_from_slice(port);
            vs.vsctl_ok(&args).trim().to_owned()
        }
    };
    text.replace('\n', "; ")
}

/// The endpoint's `IPAMConfig` as JSON: Docker's for container `c` on
/// network `net`, or, with `vs`, the switch's for the sandbox of `c`.
fn static_address(e: &Engine, vs: Option<&Daemon>, c: &str, net: &str) -> String {
    let Some(vs) = vs else {
        let format = format!("{{{{json (index .NetworkSettings.Networks \"{net}\").IPAMConfig}}}}");
        return e.ok(&["inspect", c, "--format", &format]).trim().to_owned();
    };
    wait(
        Duration::from_secs(15),
        || vs.vsctl(&["sandbox", "inspect", c]).status.success(),
        "the sandbox to take the container's name",
    );
    let view: Value =
        serde_json::from_str(&vs.vsctl_ok(&["sandbox", "inspect", c])).expect("inspect is JSON");
    view[0]["Endpoints"][0]["IPAMConfig"].to_string()
}

/// The scenario, for `driver` (`vs`: the vswitchd serving it); names carry
/// `tag` so the two runs never share one. Containers are left running for
/// the caller's checks.
fn scenario(e: &Engine, driver: &str, vs: Option<&Daemon>, outside: &Outside, tag: &str) -> Seen {
    let mut seen = Seen::default();
    let n = |s: &str| format!("{tag}-{s}");
    let (n1, n2, n3, n4, n5) = (n("n1"), n("auto"), n("other"), n("int"), n("noicc"));

    network(
        e,
        driver,
        &n1,
        &[
            "--subnet",
            "10.231.0.0/24",
            "--ip-range",
            "10.231.0.128/25",
            "--gateway",
            "10.231.0.1",
            "--aux-address",
            "a=10.231.0.130",
        ],
    )
    .expect("network with subnet, range, gateway, aux");
    seen.push("n1 ipam", ipam_config(e, &n1));
    network(e, driver, &n2, &[]).expect("network with a default pool");
    let auto = ipam_config(e, &n2);
    // The pool may differ (see the module docs); its shape may not.
    let subnet = auto[0]["Subnet"].as_str().unwrap_or_default().to_owned();
    let gateway = auto[0]["Gateway"].as_str().unwrap_or_default().to_owned();
    let keys: Vec<&String> = auto[0]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    seen.push("auto keys", format!("{keys:?}"));
    let pool_ok = (subnet.starts_with("172.") && subnet.ends_with(".0.0/16")
        || subnet.starts_with("192.168.") && subnet.ends_with("/20"))
        && gateway
            == format!(
                "{}1",
                subnet
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('0')
            );
    seen.push("auto pool is a default pool with its .1 gateway", pool_ok);
    seen.push(
        "overlap",
        network(e, driver, &n("overlap"), &["--subnet", "10.231.0.0/25"])
            .err()
            .unwrap_or_default(),
    );

    let c = |s: &str| format!("{tag}-{s}");
    container(e, &c("c1"), &n1, &[]).expect("c1");
    container(e, &c("c2"), &n1, &["--network-alias", "al2"]).expect("c2");
    container(e, &c("c3"), &n1, &["--ip", "10.231.0.5"]).expect("c3");
    seen.push(
        "duplicate --ip",
        container(e, &c("dup"), &n1, &["--ip", "10.231.0.5"])
            .err()
            .unwrap_or_default(),
    );
    for x in ["c1", "c2", "c3"] {
        seen.push(&format!("{x} inspect"), addressing(e, &c(x)));
        seen.push(&format!("{x} inside"), inside(e, &c(x)));
    }
    // Static only when `--ip` asked for it: Docker's record on the bridge,
    // the switch's endpoint on vswitch.
    for x in ["c1", "c3"] {
        seen.push(
            &format!("{x} IPAMConfig"),
            static_address(e, vs, &c(x), &n1),
        );
    }
    seen.push("c1 -> c2 by name", pings(e, &c("c1"), &c("c2")));
    seen.push("c1 -> al2 by alias", pings(e, &c("c1"), "al2"));
    seen.push("c1 -> c3 by address", pings(e, &c("c1"), "10.231.0.5"));
    let resolved =
        String::from_utf8_lossy(&exec(e, &c("c1"), &["ping", "-c", "1", "-W", "1", "al2"]).stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .replace(&c("c2"), "C2");
    seen.push("al2 resolves", resolved);

    network(e, driver, &n3, &["--subnet", "10.232.0.0/24"]).expect("second network");
    container(e, &c("c4"), &n3, &[]).expect("c4");
    seen.push("c4 inspect", addressing(e, &c("c4")));
    seen.push(
        "isolated: c1 -> c4 address",
        pings(e, &c("c1"), "10.232.0.2"),
    );
    seen.push("isolated: c1 -> c4 name", pings(e, &c("c1"), &c("c4")));
    // A second network for a running container: eth1, then gone again.
    e.ok(&["network", "connect", &n3, &c("c1")]);
    let eth1 = String::from_utf8_lossy(
        &exec(e, &c("c1"), &["ip", "-o", "-4", "addr", "show", "eth1"]).stdout,
    )
    .split_whitespace()
    .nth(3)
    .unwrap_or_default()
    .to_owned();
    seen.push("connected: c1 eth1", eth1);
    seen.push("connected: c1 -> c4 name", pings(e, &c("c1"), &c("c4")));
    e.ok(&["network", "disconnect", &n3, &c("c1")]);
    seen.push(
        "disconnected: c1 -> c4 address",
        pings(e, &c("c1"), "10.232.0.2"),
    );
    seen.push("disconnected: c1 inside", inside(e, &c("c1")));
    seen.push("disconnected: c1 -> c2", pings(e, &c("c1"), &c("c2")));

    // A published port, reached from the host through its loopback (the
    // container sees its gateway: docker-proxy on the bridge) and from an
    // outside namespace through the host's address (the client's own
    // address).
    container(e, &c("pub"), &n3, &["-p", "18080:80"]).expect("a container with -p");
    serve_http(e, &c("pub"));
    seen.push(
        "-p 18080:80 from the host's 127.0.0.1: the container sees",
        seen_client(e, &c("pub"), None, "127.0.0.1", 18080),
    );
    seen.push(
        "-p 18080:80 from outside to the host's address: the container sees",
        seen_client(e, &c("pub"), Some(outside), &outside.host_ip, 18080),
    );
    // Egress: a container reaches a server outside, which sees the host's
    // address (MASQUERADE on the bridge, the host connector's socket on
    // vswitch).
    seen.push(
        "c1 -> outside server: the server sees",
        egress(e, &c("c1"), outside),
    );
    seen.push("docker port", port_lines(e, vs, &c("pub"), &[]));
    seen.push("docker port 80", port_lines(e, vs, &c("pub"), &["80"]));
    let taken = container(e, &c("pub2"), &n1, &["-p", "18080:80"])
        .err()
        .unwrap_or_default();
    seen.push(
        "-p of a taken host port",
        without_endpoint_id(&taken).replace(&c("pub2"), "PUB2"),
    );

    network(e, driver, &n4, &["--internal", "--subnet", "10.233.0.0/24"])
        .expect("internal network");
    seen.push("internal ipam", ipam_config(e, &n4));
    container(e, &c("c5"), &n4, &[]).expect("c5");
    container(e, &c("c6"), &n4, &[]).expect("c6");
    seen.push("c5 inside", inside(e, &c("c5")));
    seen.push(
        "internal: c5 -> outside server",
        egress(e, &c("c5"), outside),
    );
    seen.push("internal: c5 -> c6", pings(e, &c("c5"), &c("c6")));

    network(
        e,
        driver,
        &n5,
        &[
            "--subnet",
            "10.234.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
        ],
    )
    .expect("network without icc");
    container(e, &c("c7"), &n5, &[]).expect("c7");
    container(e, &c("c8"), &n5, &[]).expect("c8");
    seen.push("no icc: c7 -> c8", pings(e, &c("c7"), "10.234.0.3"));
    seen
}

fn teardown(e: &Engine, tag: &str) {
    let ids = e.ok(&["ps", "-aq", "--filter", &format!("name={tag}-")]);
    for id in ids.split_whitespace() {
        let _ = e.docker(&["rm", "-f", id]);
    }
    for net in ["n1", "auto", "other", "int", "noicc", "overlap"] {
        let _ = e.docker(&["network", "rm", &format!("{tag}-{net}")]);
    }
}

#[test]
fn docker_runs_on_vswitch_as_on_its_bridge() {
    if !prerequisites(&[
        "containerd",
        "dockerd",
        "docker",
        "runc",
        "busybox",
        "iptables-save",
        "nft",
        "tar",
        "ip",
        "nsenter",
        "ping",
    ]) {
        return;
    }
    let _ = std::fs::create_dir_all("/run/lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .expect("lock file");
    lock.lock().expect("the docker end-to-end lock");

    let host = HostState::snapshot();
    let outside = Outside::new();
    let plugin = unique("vsw");
    let socket = format!("/run/docker/plugins/{plugin}.sock");
    // Declared before the engine, so the engine (and its containers' Leave
    // calls) goes first.
    // The engine's API socket is where vswitchd learns container names.
    let engine_dir = std::env::temp_dir().join(unique("vswitch-docker-"));
    let api = engine_dir.join("docker.sock");
    let mut vs = Daemon::start_with(&[
        "--docker-plugin=on",
        "--docker-plugin-socket",
        &socket,
        "--docker-api-socket",
        &api.to_string_lossy(),
    ]);
    let mut engine = Engine::start(engine_dir);
    engine.import_busybox();

    let bridge = scenario(&engine, "bridge", None, &outside, "b");
    teardown(&engine, "b");

    let rules_before = rules();
    let bridges = host_links_of_kind("bridge");
    let proxies = docker_proxies(&engine);
    let ours = scenario(&engine, &plugin, Some(&vs), &outside, "v");
    eprintln!(
        "bridge:\n{}\nvswitch:\n{}",
        bridge.lines.join("\n"),
        ours.lines.join("\n")
    );
    let differences: Vec<String> = bridge
        .lines
        .iter()
        .zip(&ours.lines)
        .filter(|(b, v)| b != v)
        .map(|(b, v)| format!("bridge  {b}\nvswitch {v}"))
        .collect();
    assert!(
        differences.is_empty() && bridge.lines.len() == ours.lines.len(),
        "what a user sees differs:\n{}",
        differences.join("\n")
    );
    // The comparison is not of two failures: on the bridge the container
    // sees its gateway (docker-proxy) and the outside client's address.
    assert!(
        bridge.lines.contains(&format!(
            "c1 -> outside server: the server sees: {}",
            outside.host_ip
        )),
        "on the bridge, egress reaches the outside from the host's address"
    );
    for (from, client) in [
        ("the host's 127.0.0.1", "10.232.0.1"),
        ("outside", outside.ip.as_str()),
    ] {
        let head = format!("-p 18080:80 from {from}");
        assert!(
            bridge
                .lines
                .iter()
                .any(|l| l.starts_with(&head) && l.ends_with(&format!(" sees: {client}"))),
            "on the bridge, a client from {from} is seen as {client}"
        );
    }
    assert_eq!(
        rules(),
        rules_before,
        "vswitch networks added firewall rules"
    );
    assert_eq!(
        host_links_of_kind("bridge"),
        bridges,
        "vswitch networks added a kernel bridge"
    );
    assert_eq!(
        docker_proxies(&engine),
        proxies,
        "a docker-proxy runs for a vswitch network"
    );
    let ports = vs.vsctl_ok(&["show-ports"]);
    for ip in [
        "10.231.0.128/24",
        "10.231.0.129/24",
        "10.231.0.5/24",
        "10.233.0.2/24",
    ] {
        assert!(ports.contains(ip), "show-ports lists {ip}:\n{ports}");
    }
    assert!(
        ports.contains("docker-"),
        "networks are named after Docker's ids:\n{ports}"
    );
    // The tables name Docker's containers (learned from the engine's API).
    let line_of = |table: &str, needle: &str| {
        table
            .lines()
            .find(|l| l.contains(needle))
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("{needle} missing from:\n{table}"))
    };
    for (ip, mac, name) in [
        ("10.231.0.128/24", "02:42:0a:e7:00:80", "v-c1"),
        ("10.231.0.129/24", "02:42:0a:e7:00:81", "v-c2"),
        ("10.233.0.2/24", "02:42:0a:e9:00:02", "v-c5"),
    ] {
        assert_eq!(line_of(&ports, ip)[1], name, "show-ports:\n{ports}");
        let fdb = vs.vsctl_ok(&["show-fdb"]);
        assert_eq!(line_of(&fdb, mac)[1], name, "show-fdb:\n{fdb}");
    }
    let sandboxes = vs.vsctl_ok(&["sandbox", "ls"]);
    for name in ["v-c1", "v-c2", "v-c3", "v-pub", "v-c8"] {
        assert!(
            sandboxes
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "sandbox ls lists {name}:\n{sandboxes}"
        );
    }
    // The outside client's connection to the published port, by name.
    let flows = vs.vsctl_ok(&["show-conntrack", "--sandbox", "v-pub"]);
    let flow = line_of(&flows, &format!("{}:", outside.ip));
    assert_eq!(flow[1], "v-pub", "show-conntrack:\n{flows}");

    assert_eq!(
        engine.ok(&["port", "v-pub"]),
        "",
        "dockerd now shows a remote driver's port map: update the README"
    );

    // kill -9 under running containers, then a restart.
    let before = engine.ok(&["network", "inspect", "v-n1"]);
    vs.kill9();
    let killed = Instant::now();
    vs.spawn();
    let mut resumed = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if pings(&engine, "v-c1", "10.231.0.129") {
            resumed = Some(killed.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("pings resume after vswitchd restarts");
    eprintln!(
        "pings resumed {} ms after kill -9 (restart and one docker exec included)",
        resumed.as_millis()
    );
    assert_eq!(engine.ok(&["network", "inspect", "v-n1"]), before);
    assert!(
        pings(&engine, "v-c1", "v-c2"),
        "names resolve after the restart"
    );
    assert_eq!(
        seen_client(&engine, "v-pub", Some(&outside), &outside.host_ip, 18080),
        outside.ip,
        "the published port is served again after the restart"
    );

    // dockerd restarted with --live-restore: the containers stay connected
    // (pings between them never stop), the network is unchanged, and the
    // engine uses the network again once back.
    let pid = engine.ok(&["inspect", "v-c1", "--format", "{{.State.Pid}}"]);
    let c5 = engine.ok(&["inspect", "v-c5", "--format", "{{.State.Pid}}"]);
    let live = LivePing::start(&pid, "10.231.0.129");
    std::thread::sleep(Duration::from_millis(600));
    engine.stop_dockerd();
    std::thread::sleep(Duration::from_millis(600));
    // A container that ends while dockerd is away is cleaned up when it
    // is back (Leave, DeleteEndpoint, ReleaseAddress): its port goes and
    // its address is free again.
    run_ok("kill", &["-9", &c5]);
    engine.start_dockerd();
    let (sent, received) = live.stop();
    eprintln!("across the dockerd restart: {received}/{sent} pings answered");
    assert!(
        sent >= 5 && received + 1 >= sent,
        "pings stop while dockerd restarts: {received}/{sent}"
    );
    assert_eq!(
        engine.ok(&["network", "inspect", "v-n1"]),
        before,
        "docker network inspect changed across the dockerd restart"
    );
    assert!(
        pings(&engine, "v-c1", "v-c2"),
        "names resolve after dockerd's restart"
    );
    assert_eq!(
        seen_client(&engine, "v-pub", Some(&outside), &outside.host_ip, 18080),
        outside.ip,
        "the published port is served across dockerd's restart"
    );
    wait(
        Duration::from_secs(20),
        || !vs.vsctl_ok(&["show-ports"]).contains("10.233.0.2/24"),
        "the port of a container that ended while dockerd was away to go",
    );
    container(&engine, "v-c10", "v-int", &["--ip", "10.233.0.2"])
        .expect("the address of a container that ended while dockerd was away is free");
    // New containers after both restarts get the next addresses.
    container(&engine, "v-c9", "v-n1", &[]).expect("a container after the restarts");
    assert!(pings(&engine, "v-c9", "v-c1"), "the new container pings");
    assert_eq!(
        addressing(&engine, "v-c9"),
        "10.231.0.131/24 02:42:0a:e7:00:83 gw=10.231.0.1"
    );

    teardown(&engine, "v");
    engine.stop();
    drop(vs);
    host.restore();
    assert_eq!(
        nft_tables(),
        host.tables,
        "the host's nftables tables are as before"
    );
    for path in &host.absent {
        assert!(!Path::new(path).exists(), "{path} is left behind");
    }
    drop(lock);
}
