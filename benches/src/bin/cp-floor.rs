//! The floor of the control plane: the kernel work of `sandbox create` +
//! `network connect --port-kind tap` and of `sandbox rm`, done by one
//! minimal loop through the same library calls `vswitchd` makes, with no
//! daemon, no API, no store and no switch.
//!
//! `benches/scripts/scale.sh` runs it beside the daemon, so what the daemon
//! adds to the kernel's share is told apart from the kernel's share.
//!
//!   cp-floor PREFIX N [inside|move]
//!
//! Creates the named namespaces `PREFIX-1` … `PREFIX-N` (IPv6 off, as the
//! daemon makes them), a persistent TAP for each, configured (MAC, MTU,
//! queue length, address, renamed `eth0`, `lo` and the device up, default
//! route); then removes them. `inside` (the default) does it as `vswitchd`
//! does: the TAP is made inside the namespace, and deleting the namespace
//! takes it. `move` does it as `vswitchd` did before: the TAP is made on
//! the host and moved in, and deleted before its namespace.
//! Prints the wall time and this process's CPU time of each phase.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vswitch::ids::MacAddr;
use vswitch::netconf::{EndpointConfig, Netlink};
use vswitch::netns::Netns;
use vswitch::port::TapPort;

fn cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
        };
        t(u.user_time()) + t(u.system_time())
    })
}

fn report(what: &str, n: u32, wall: Duration, cpu: Duration) {
    println!(
        "{what}: {:.2} s wall, {:.2} ms CPU per sandbox",
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / f64::from(n.max(1))
    );
}

/// Where the TAP is made: on the host and moved into the namespace, or
/// inside the namespace from the start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Move,
    Inside,
}

fn create(prefix: &str, i: u32, host: &mut Netlink, place: Place) -> Result<TapPort, String> {
    let name = format!("{prefix}-{i}");
    let ns = Netns::create_with(&name, || {
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
    })
    .map_err(|e| e.to_string())?;
    // Unique to this run, at most 15 characters.
    let tap_name = format!("cpf{}-{i}", std::process::id() % 100_000);
    if place == Place::Inside {
        let made = vswitch::netns::run_in(&ns, || {
            let tap = TapPort::create(&tap_name).map_err(|e| e.to_string())?;
            let nl = Netlink::new().map_err(|e| e.to_string())?;
            Ok::<_, String>((tap, nl))
        })
        .map_err(|e| e.to_string())?;
        let (tap, mut nl) = made?;
        let [a, b] = i.to_be_bytes()[2..] else {
            return Err("index".to_owned());
        };
        let configured = (|| {
            nl.set_mac(&tap_name, MacAddr([0x02, 0x42, 0xac, 0x1f, a, b]))?;
            nl.set_mtu(&tap_name, 1500)?;
            nl.set_txqueuelen(&tap_name, 1000)?;
            nl.add_ipv4_address(&tap_name, Ipv4Addr::new(172, 31, a, b), 16)?;
            nl.rename(&tap_name, "eth0")?;
            nl.set_up("lo", true)?;
            nl.set_up("eth0", true)?;
            nl.add_default_route("eth0", Ipv4Addr::new(172, 31, 255, 254))
        })();
        return match configured {
            Ok(()) => Ok(tap),
            Err(e) => {
                let _ = tap.destroy();
                Err(e.to_string())
            }
        };
    }
    let tap = TapPort::create(&tap_name).map_err(|e| e.to_string())?;
    let [a, b] = i.to_be_bytes()[2..] else {
        return Err("index".to_owned());
    };
    let config = EndpointConfig {
        name: "eth0".to_owned(),
        mac: MacAddr([0x02, 0x42, 0xac, 0x1f, a, b]),
        address: Ipv4Addr::new(172, 31, a, b),
        prefix_len: 16,
        mtu: 1500,
        gateway: Some(Ipv4Addr::new(172, 31, 255, 254)),
        txqueuelen: Some(1000),
    };
    if let Err(e) = host.configure_endpoint(&ns, &tap_name, &config) {
        // Deleting by its descriptor works wherever the device got to.
        let _ = tap.destroy();
        return Err(e.to_string());
    }
    Ok(tap)
}

fn remove(prefix: &str, i: u32, place: Place) -> Result<(), String> {
    let name = format!("{prefix}-{i}");
    if place == Place::Inside {
        // As `vswitchd` removes a sandbox: the namespace takes its devices
        // with it, in the kernel's own time.
        return Netns::delete(&name).map_err(|e| e.to_string());
    }
    let ns = Netns::open_named(&name).map_err(|e| e.to_string())?;
    let mut nl = Netlink::in_netns(&ns).map_err(|e| e.to_string())?;
    nl.delete_link("eth0").map_err(|e| e.to_string())?;
    drop(ns);
    Netns::delete(&name).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (prefix, n, place) = match args.as_slice() {
        [p, n, rest @ ..] if rest.len() <= 1 => {
            let place = match rest.first().map(String::as_str) {
                Some("move") => Place::Move,
                None | Some("inside") => Place::Inside,
                Some(other) => {
                    eprintln!("cp-floor: unknown placement {other:?} (inside, move)");
                    return ExitCode::from(2);
                }
            };
            match n.parse::<u32>() {
                Ok(n) if (1..65_000).contains(&n) => (p.clone(), n, place),
                _ => {
                    eprintln!("cp-floor: N must be 1..65000");
                    return ExitCode::from(2);
                }
            }
        }
        _ => {
            eprintln!("usage: cp-floor PREFIX N [inside|move]");
            return ExitCode::from(2);
        }
    };
    let mut host = match Netlink::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cp-floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (t0, c0) = (Instant::now(), cpu());
    let mut taps = Vec::new();
    let mut failed = None;
    for i in 1..=n {
        match create(&prefix, i, &mut host, place) {
            Ok(tap) => taps.push(tap),
            Err(e) => {
                failed = Some(format!("creating {prefix}-{i}: {e}"));
                break;
            }
        }
    }
    report("create + configure", n, t0.elapsed(), cpu() - c0);
    let made = u32::try_from(taps.len()).unwrap_or(u32::MAX);
    // The daemon keeps each TAP open; so does this loop until removal.
    drop(taps);
    let (t1, c1) = (Instant::now(), cpu());
    for i in 1..=made {
        if let Err(e) = remove(&prefix, i, place) {
            eprintln!("cp-floor: removing {prefix}-{i}: {e}");
            let _ = Netns::delete(&format!("{prefix}-{i}"));
        }
    }
    report("remove", made, t1.elapsed(), cpu() - c1);
    if let Some(e) = failed {
        eprintln!("cp-floor: {e}");
        let _ = Netns::delete(&format!("{prefix}-{}", made + 1));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
