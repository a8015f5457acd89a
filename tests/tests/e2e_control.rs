//! The control plane under stress, against a real `vswitchd`: running out
//! of descriptors, reads during a slow change, a crash at every step of a
//! request, a datapath worker that dies, adopted namespaces whose process
//! exits, and the modes of the state files.
//!
//! Tests that look at the host's devices and mounts take [`HOST`], so no
//! other test of this file creates devices meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vswitch_tests::{Daemon, prerequisites, run, run_ok, unique, wait_for};

static HOST: Mutex<()> = Mutex::new(());

fn host_lock() -> std::sync::MutexGuard<'static, ()> {
    HOST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Host links whose names the daemon gives its devices.
fn daemon_links() -> Vec<String> {
    run_ok("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("vst") || n.starts_with("vsv") || n.starts_with("vsp"))
        .collect()
}

/// Links inside a named namespace, `lo` aside.
fn links_in(netns: &str) -> Vec<String> {
    let out = run("ip", &["-n", netns, "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n != "lo")
        .collect()
}

fn mounts_mentioning(what: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

#[test]
fn state_directory_and_database_are_private() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let d = Daemon::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&d.state_dir), 0o700);
    assert_eq!(mode(&d.state_dir.join("vswitch.redb")), 0o600);
}

#[test]
fn api_comes_back_after_running_out_of_descriptors() {
    if !prerequisites(&["ip", "prlimit"]) {
        return;
    }
    let d = Daemon::start();
    let pid = d.pid().expect("running").to_string();
    let limits = run_ok(
        "prlimit",
        &[
            "--pid",
            &pid,
            "--nofile",
            "--output",
            "SOFT,HARD",
            "--noheadings",
        ],
    );
    let mut it = limits.split_whitespace();
    let (soft, hard) = (it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
    assert_eq!(
        soft, hard,
        "the daemon raises its soft limit to the hard one"
    );

    run_ok("prlimit", &["--pid", &pid, &format!("--nofile=30:{hard}")]);
    let clients: Vec<_> = (0..60)
        .map(|_| {
            Command::new(vswitch_tests::bin_dir().join("vsctl"))
                .arg("--socket")
                .arg(&d.socket)
                .args(["network", "ls"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("vsctl starts")
        })
        .collect();
    for mut c in clients {
        let _ = c.wait();
    }
    run_ok(
        "prlimit",
        &["--pid", &pid, &format!("--nofile={soft}:{hard}")],
    );
    let restored = Instant::now();
    wait_for(
        Duration::from_secs(1),
        || d.vsctl(&["network", "ls"]).status.success(),
        "network ls to work again within a second of the limit being restored",
    );
    eprintln!("api back after {:?}", restored.elapsed());
    assert!(d.vsctl_ok(&["network", "ls"]).contains("bridge"));
}

#[test]
fn reads_do_not_wait_for_a_slow_change() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let _host = host_lock();
    let mut d = Daemon::start();
    d.kill9();
    d.set_env("VSWITCHD_TEST_SLOW_ATTACH_MS", Some("8000"));
    d.spawn();
    let sb = unique("vsr");
    d.sandbox(&sb, &[]);
    std::thread::scope(|s| {
        let connect = s.spawn(|| d.vsctl(&["network", "connect", "bridge", &sb]));
        std::thread::sleep(Duration::from_millis(300));
        for read in [
            &["show-fdb"][..],
            &["show-ports"],
            &["network", "ls"],
            &["network", "inspect", "bridge"],
            &["sandbox", "ls"],
            &["dns", "show"],
        ] {
            let at = Instant::now();
            let out = d.vsctl(read);
            let took = at.elapsed();
            assert!(
                out.status.success(),
                "vsctl {read:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !connect.is_finished(),
                "vsctl {read:?} was answered only after the change in progress"
            );
            eprintln!("vsctl {read:?} during a slow connect: {took:?}");
        }
        let out = connect.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert_eq!(links_in(&sb), ["eth0"]);
}

#[test]
fn a_dead_worker_stops_the_daemon() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let mut d = Daemon::start();
    d.kill9();
    d.set_env("VSWITCHD_TEST_STOP_WORKER_MS", Some("300"));
    d.spawn();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon exits when a datapath worker ends");
    assert!(!status.success(), "exit status {status}");
    assert!(!d.socket.exists(), "the API socket is removed");
    // Restart is lossless: the state is there.
    d.set_env("VSWITCHD_TEST_STOP_WORKER_MS", None);
    d.spawn();
    assert!(d.vsctl_ok(&["network", "ls"]).contains("bridge"));
}

/// Runs `args` with the daemon set to crash at `point`, restarts it, and
/// returns whether the request had been committed.
fn crash_at(d: &mut Daemon, point: &str, args: &[&str]) {
    d.kill9();
    d.set_env("VSWITCHD_TEST_CRASH_AT", Some(point));
    d.spawn();
    let out = d.vsctl(args);
    assert!(!out.status.success(), "{point}: vsctl {args:?} succeeded");
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon died");
    assert!(!status.success());
    d.set_env("VSWITCHD_TEST_CRASH_AT", None);
    d.spawn();
}

#[test]
fn a_crash_at_any_step_leaves_no_orphans() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let _host = host_lock();
    let mut d = Daemon::start();
    let before = daemon_links();

    for point in ["intent-written", "netns-created", "effects-done", "saved"] {
        let sb = unique("vsk");
        d.adopt_sandboxes(&[&sb]);
        crash_at(&mut d, point, &["sandbox", "create", &sb]);
        let committed = point == "saved";
        let listed = d.vsctl_ok(&["sandbox", "ls"]).contains(&sb);
        assert_eq!(listed, committed, "{point}: sandbox listed");
        let ns = std::path::Path::new("/run/netns").join(&sb);
        assert_eq!(ns.exists(), committed, "{point}: /run/netns/{sb}");
        if !committed {
            assert!(
                mounts_mentioning(&format!("/run/netns/{sb}")).is_empty(),
                "{point}: mount left"
            );
            d.vsctl_ok(&["sandbox", "create", &sb]);
        }
        d.vsctl_ok(&["network", "connect", "bridge", &sb]);
        assert!(d.ping(&sb, "172.17.0.1", 1), "{point}: the sandbox works");
        d.vsctl_ok(&["sandbox", "rm", &sb]);
        assert!(!ns.exists());
    }

    for kind in ["tap", "veth"] {
        for point in [
            "intent-written",
            "device-created",
            "device-configured",
            "effects-done",
            "saved",
        ] {
            let sb = unique("vsk");
            d.sandbox(&sb, &[]);
            crash_at(
                &mut d,
                point,
                &["network", "connect", "--port-kind", kind, "bridge", &sb],
            );
            let committed = point == "saved";
            let inspect = d.vsctl_ok(&["sandbox", "inspect", &sb]);
            assert_eq!(
                inspect.contains("eth0"),
                committed,
                "{kind} {point}: {inspect}"
            );
            let mut links = daemon_links();
            let inside = links_in(&sb);
            if committed {
                assert_eq!(inside, ["eth0"], "{kind} {point}");
            } else {
                assert!(
                    inside.is_empty(),
                    "{kind} {point}: left in the sandbox: {inside:?}"
                );
                links.retain(|l| !before.contains(l));
                assert!(
                    links.is_empty(),
                    "{kind} {point}: left on the host: {links:?}"
                );
                d.vsctl_ok(&["network", "connect", "--port-kind", kind, "bridge", &sb]);
            }
            assert!(
                d.ping(&sb, "172.17.0.1", 1),
                "{kind} {point}: the endpoint works"
            );
            d.vsctl_ok(&["sandbox", "rm", &sb]);
            let mut links = daemon_links();
            links.retain(|l| !before.contains(l));
            assert!(links.is_empty(), "{kind} {point}: left after rm: {links:?}");
        }
    }
}

#[test]
fn adopted_namespaces_are_held_by_handle() {
    if !prerequisites(&["ip", "unshare", "mkfifo"]) {
        return;
    }
    let _host = host_lock();
    let mut d = Daemon::start();

    // A process's namespace: adopted, connected, then the process exits.
    let mut proc = Command::new("unshare")
        .args(["-n", "sleep", "600"])
        .spawn()
        .expect("unshare runs");
    let path = format!("/proc/{}/ns/net", proc.id());
    wait_for(
        Duration::from_secs(5),
        || std::fs::read_link(&path).ok() != std::fs::read_link("/proc/self/ns/net").ok(),
        "the process to enter its namespace",
    );
    let sb = unique("vsa");
    d.vsctl_ok(&["sandbox", "create", "--netns", &path, &sb]);
    d.adopt_sandboxes(&[&sb]);
    d.vsctl_ok(&["network", "connect", "bridge", &sb]);
    let net_arg = format!("--net={path}");
    let inside = run_ok("nsenter", &[&net_arg, "ip", "-o", "link"]);
    assert!(inside.contains("eth0"), "{inside}");
    let _ = proc.kill();
    let _ = proc.wait();
    let shown = d.vsctl_ok(&["sandbox", "inspect", &sb]);
    assert!(shown.contains("\"NetnsGone\": true"), "{shown}");
    let out = d.vsctl(&["network", "create", "vsn-gone"]);
    assert!(out.status.success());
    let out = d.vsctl(&["network", "connect", "vsn-gone", &sb]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is gone"));
    d.vsctl_ok(&["sandbox", "rm", &sb]);
    d.vsctl_ok(&["network", "rm", "vsn-gone"]);

    // A path that names another namespace later (as a reused PID does):
    // nothing is configured in the new one.
    let ns = unique("vsa");
    run_ok("ip", &["netns", "add", &ns]);
    let sb = unique("vsa");
    let nspath = format!("/run/netns/{ns}");
    d.vsctl_ok(&["sandbox", "create", "--netns", &nspath, &sb]);
    d.adopt_sandboxes(&[&sb]);
    run_ok("ip", &["netns", "del", &ns]);
    run_ok("ip", &["netns", "add", &ns]);
    let out = d.vsctl(&["network", "connect", "bridge", &sb]);
    assert!(
        !out.status.success(),
        "connected through a path that leads elsewhere"
    );
    assert!(links_in(&ns).is_empty(), "configured the wrong namespace");
    assert!(d.vsctl_ok(&["sandbox", "ls"]).contains("(gone)"));
    // The daemon's handle is gone with the sandbox.
    d.vsctl_ok(&["sandbox", "rm", &sb]);
    assert!(mounts_mentioning(&d.state_dir.join("netns").to_string_lossy()).is_empty());
    run_ok("ip", &["netns", "del", &ns]);

    // Not a namespace: refused at once, even a FIFO nobody writes to.
    let fifo = d.state_dir.join("fifo");
    run_ok("mkfifo", &[fifo.to_str().unwrap()]);
    let at = Instant::now();
    let out = d.vsctl(&[
        "sandbox",
        "create",
        "--netns",
        fifo.to_str().unwrap(),
        &unique("vsa"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a network namespace"));
    assert!(
        at.elapsed() < Duration::from_secs(5),
        "the FIFO blocked the daemon"
    );
    // The host's own namespace (this test runs in it, as the daemon
    // does): refused unless the daemon allows it.
    let host = format!("/proc/{}/ns/net", std::process::id());
    let out = d.vsctl(&["sandbox", "create", "--netns", &host, &unique("vsa")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host's network namespace"));
    assert!(!d.vsctl_ok(&["sandbox", "ls"]).contains(&host));
}

#[test]
fn concurrent_changes_are_all_committed() {
    if !prerequisites(&["ip"]) {
        return;
    }
    let _host = host_lock();
    let mut d = Daemon::start();
    let names: Vec<String> = (0..16).map(|_| unique("vsc")).collect();
    d.adopt_sandboxes(&names.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::scope(|s| {
        let d = &d;
        let all: Vec<_> = names
            .iter()
            .map(|n| {
                s.spawn(move || {
                    d.vsctl_ok(&["sandbox", "create", n]);
                    d.vsctl_ok(&["network", "connect", "bridge", n]);
                })
            })
            .collect();
        for t in all {
            t.join().unwrap();
        }
    });
    // Acknowledged means saved: a crash right after loses none of them.
    d.kill9();
    d.spawn();
    let listed = d.vsctl_ok(&["sandbox", "ls"]);
    for n in &names {
        assert!(listed.contains(n.as_str()), "{n} lost: {listed}");
        assert_eq!(links_in(n), ["eth0"], "{n}");
        // IPv4-only networks: no IPv6 on the endpoint, as Docker does, so
        // no link-local traffic flooded at each start.
        let v6 = run_ok("ip", &["-n", n, "-6", "-o", "addr", "show", "dev", "eth0"]);
        assert!(v6.trim().is_empty(), "{n}: {v6}");
    }
}

/// Whether process `pid` has the kernel's CPU-latency request device open
/// (the request lives exactly as long as that descriptor).
fn holds_cpu_latency_request(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
        dir.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target == std::path::Path::new(CPU_LATENCY_DEVICE))
        })
    })
}

const CPU_LATENCY_DEVICE: &str = "/dev/cpu_dma_latency";

#[test]
fn the_low_latency_mode_keeps_idle_cpus_polling_while_it_runs() {
    if !prerequisites(&[]) {
        return;
    }
    let missing =
        (!std::path::Path::new(CPU_LATENCY_DEVICE).exists()).then_some(CPU_LATENCY_DEVICE);
    if !vswitch_tests::can_run("the CPU-latency request test", missing) {
        return;
    }
    let fast = Daemon::start_with(&["--busy-poll", "always", "--datapath-threads", "1"]);
    let pid = fast.pid().expect("running");
    assert!(
        holds_cpu_latency_request(pid),
        "`--busy-poll always` holds no CPU-latency request"
    );
    // Reading the device gives the kernel's current target: the strictest
    // request held, which the daemon's makes 0 µs (idle CPUs poll).
    let mut target = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(CPU_LATENCY_DEVICE).expect("open for reading"),
        &mut target,
    )
    .expect("read the target");
    assert_eq!(i32::from_ne_bytes(target), 0);

    let default = Daemon::start();
    assert!(
        !holds_cpu_latency_request(default.pid().expect("running")),
        "the default policy holds a CPU-latency request"
    );
    let opted_out = Daemon::start_with(&[
        "--busy-poll",
        "always",
        "--datapath-threads",
        "1",
        "--cpu-latency-qos",
        "off",
    ]);
    assert!(!holds_cpu_latency_request(
        opted_out.pid().expect("running")
    ));
    let asked = Daemon::start_with(&["--cpu-latency-qos", "on"]);
    assert!(holds_cpu_latency_request(asked.pid().expect("running")));
}
