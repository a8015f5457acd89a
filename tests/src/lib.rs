//! Workspace-level end-to-end tests: a real `vswitchd`, network namespaces
//! created and removed by each test, and real clients (ping, dig, iperf3).
//!
//! These tests need root and a few tools. Without them a test is skipped
//! with a message, except under `CI=true`, where a missing prerequisite is a
//! failure: CI must never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod ci;
pub use ci::{can_run, in_ci};

/// Checks that the test can run: root and the named tools. Returns `false`
/// (after printing why) when it should be skipped; panics under CI.
#[must_use]
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root".to_owned());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push((*tool).to_owned());
        }
    }
    let missing = missing.join(", ");
    can_run(
        "this end-to-end test",
        (!missing.is_empty()).then_some(missing.as_str()),
    )
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A short name unique to this process and call, for namespaces, networks
/// and sandboxes (interface names are limited to 15 bytes).
#[must_use]
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where cargo put this workspace's binaries (the directory above the test
/// executable's `deps/`).
#[must_use]
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe
        .parent()
        .expect("test executables live in target/<profile>/deps");
    deps.parent().expect("deps has a parent").to_owned()
}

/// Runs a command and returns its output, whatever the exit status.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command and panics with its stderr unless it succeeds.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `vswitchd` with its own state directory and socket, killed and cleaned
/// up when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// The namespace holding the daemon's veth host ends, removed on drop.
    pub port_netns: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The network namespace the daemon runs in (`None`: the test's own).
    netns: Option<String>,
    sandboxes: Vec<String>,
    networks: Vec<String>,
}

impl Daemon {
    /// Starts a daemon on a fresh state directory.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a daemon on a fresh state directory with extra `vswitchd`
    /// arguments (kept for [`Daemon::spawn`]).
    #[must_use]
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_configured(None, args)
    }

    /// Starts a daemon whose own network namespace is the named namespace
    /// `netns` (entered with `nsenter --net`, so mounts stay shared): its
    /// published ports, ephemeral range and host addresses are that
    /// namespace's, private to the test.
    #[must_use]
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Self {
        Self::start_configured(Some(netns.to_owned()), args)
    }

    /// Starts a daemon whose host network namespace is `netns` (a name
    /// under `/run/netns`) when given, the test's own otherwise: what the
    /// daemon sees as the host's addresses and routes are that namespace's,
    /// and no host socket it opens is in the test machine's namespace.
    #[must_use]
    pub fn start_in(netns: Option<&str>, args: &[&str]) -> Self {
        Self::start_configured(netns.map(str::to_owned), args)
    }

    fn start_configured(netns: Option<String>, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("vswitch-e2e-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut d = Self {
            child: None,
            socket: dir.join("vswitchd.sock"),
            state_dir: dir,
            port_netns: unique("vsports"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            netns,
            sandboxes: Vec::new(),
            networks: Vec::new(),
        };
        d.spawn();
        d
    }

    /// Starts (or restarts) the process on the same state directory.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(bin_dir().join("vswitchd"));
                c
            }
            None => Command::new(bin_dir().join("vswitchd")),
        };
        let child = command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("info")
            .arg("--port-netns")
            .arg(&self.port_netns)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (the binaries are built by `cargo test --workspace`)",
                    bin_dir().join("vswitchd").display()
                )
            });
        self.child = Some(child);
        wait_for(
            Duration::from_secs(10),
            || self.socket.exists(),
            "the API socket",
        );
    }

    /// Sets an environment variable for the next [`Daemon::spawn`] (the
    /// daemon's test hooks are enabled this way); `None` removes it.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// The running process's id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `limit` for the process to exit on its own and returns
    /// its status (`None` if it is still running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `vsctl` against this daemon.
    pub fn vsctl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("vsctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("vsctl runs")
    }

    /// Runs `vsctl` and panics with its stderr unless it succeeds.
    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            out.status.success(),
            "vsctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a network, removed again on drop.
    pub fn network(&mut self, name: &str, extra: &[&str]) {
        let mut args = vec!["network", "create"];
        args.extend_from_slice(extra);
        args.push(name);
        self.vsctl_ok(&args);
        self.networks.push(name.to_owned());
    }

    /// Creates a sandbox (a namespace visible to `ip netns`) connected to
    /// `networks` in order, removed again on drop.
    pub fn sandbox(&mut self, name: &str, networks: &[&str]) {
        self.vsctl_ok(&["sandbox", "create", name]);
        self.sandboxes.push(name.to_owned());
        for net in networks {
            self.vsctl_ok(&["network", "connect", net, name]);
        }
    }

    /// Records networks created outside [`Daemon::network`], so they are
    /// removed on drop too.
    pub fn adopt_networks(&mut self, names: &[&str]) {
        self.networks.extend(names.iter().map(|n| (*n).to_owned()));
    }

    /// Records sandboxes created outside [`Daemon::sandbox`], so they are
    /// removed on drop too.
    pub fn adopt_sandboxes(&mut self, names: &[&str]) {
        self.sandboxes.extend(names.iter().map(|n| (*n).to_owned()));
    }

    /// Runs a command inside a sandbox's namespace.
    pub fn exec(&self, sandbox: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", sandbox];
        args.extend_from_slice(cmd);
        run("ip", &args)
    }

    /// Whether `count` pings from `sandbox` to `addr` all come back.
    pub fn ping(&self, sandbox: &str, addr: &str, count: u32) -> bool {
        let count = count.to_string();
        self.exec(
            sandbox,
            &["ping", "-c", &count, "-i", "0.2", "-W", "2", addr],
        )
        .status
        .success()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            for s in self.sandboxes.clone() {
                let _ = self.vsctl(&["sandbox", "rm", &s]);
            }
            for n in self.networks.clone() {
                let _ = self.vsctl(&["network", "rm", &n]);
            }
            if let Some(child) = &self.child {
                let _ = Command::new("kill").arg(child.id().to_string()).status();
            }
            if let Some(mut child) = self.child.take() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Whatever the daemon did not remove (it crashed, or the test
        // failed half-way) is removed here, so no test leaves devices.
        for s in &self.sandboxes {
            let _ = Command::new("ip").args(["netns", "del", s]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.port_netns])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Polls `cond` until it holds or `limit` passes (then panics naming `what`).
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Interface names in the host namespace of the given kind (`bridge`,
/// `vxlan`), to assert that vswitch creates none.
#[must_use]
pub fn host_links_of_kind(kind: &str) -> Vec<String> {
    let out = run_ok("ip", &["-o", "link", "show", "type", kind]);
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The host's iptables and nftables rules, as text, to compare before and
/// after a test.
#[must_use]
pub fn firewall_rules() -> String {
    let mut all = String::new();
    for (prog, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        if let Ok(out) = Command::new(prog).args(args).output() {
            // Counters and timestamps change on their own; rules do not.
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if !line.starts_with('#') && !line.starts_with(':') {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
    }
    all
}

/// Whether `path` exists (for devices under /sys/class/net).
#[must_use]
pub fn exists(path: impl AsRef<Path>) -> bool {
    path.as_ref().exists()
}

/// A file with given contents, removed on drop (a host resolv.conf for the
/// daemon, for instance).
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a new file in the temporary directory.
    #[must_use]
    pub fn new(contents: &str) -> Self {
        let path = std::env::temp_dir().join(unique("vswitch-resolv-"));
        std::fs::write(&path, contents).expect("temp file");
        Self(path)
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dig ARGS` inside `sandbox`; returns whether it got a reply, and its
/// output.
pub fn dig(d: &Daemon, sandbox: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["dig"];
    cmd.extend_from_slice(args);
    let out = d.exec(sandbox, &cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A named network namespace (`ip netns add`) with its loopback up,
/// deleted on drop.
#[derive(Debug)]
pub struct NamedNetns(String);

impl NamedNetns {
    /// Creates `name`.
    #[must_use]
    pub fn new(name: &str) -> Self {
        run_ok("ip", &["netns", "add", name]);
        let ns = Self(name.to_owned());
        run_ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Runs a command inside it.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", &self.0];
        args.extend_from_slice(cmd);
        run("ip", &args)
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it
    /// opens belong to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("the namespace file opens");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            f()
        })
        .join()
        .expect("the namespace thread ran")
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The underlay of a multi-host test: a hub namespace with a bridge, and
/// hosts as namespaces each with one veth `u0` on it, addressed
/// `192.168.NET.(i+1)/24`. Removed on drop, after the daemons declared
/// later (and so dropped first).
#[derive(Debug)]
pub struct Underlay {
    prefix: String,
    net: u8,
    names: Vec<String>,
}

impl Underlay {
    /// `hosts` hosts on `192.168.net.0/24`, namespaces named after `tag`.
    pub fn new(tag: &str, net: u8, hosts: usize) -> Self {
        let prefix = unique(tag);
        let hub = format!("{prefix}hub");
        let mut u = Self {
            prefix: prefix.clone(),
            net,
            names: vec![hub.clone()],
        };
        run_ok("ip", &["netns", "add", &hub]);
        run_ok("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run_ok("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = u.host(i);
            run_ok("ip", &["netns", "add", &ns]);
            u.names.push(ns.clone());
            let end = format!("{prefix}v{i}");
            run_ok(
                "ip",
                &[
                    "link", "add", &end, "type", "veth", "peer", "name", "u0", "netns", &ns,
                ],
            );
            run_ok("ip", &["link", "set", &end, "netns", &hub]);
            run_ok(
                "ip",
                &["-n", &hub, "link", "set", &end, "master", "br0", "up"],
            );
            let addr = format!("{}/24", u.addr(i));
            run_ok("ip", &["-n", &ns, "addr", "add", &addr, "dev", "u0"]);
            run_ok("ip", &["-n", &ns, "link", "set", "u0", "up"]);
            run_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        u
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// Host `i`'s underlay address.
    pub fn addr(&self, i: usize) -> String {
        format!("192.168.{}.{}", self.net, i + 1)
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
