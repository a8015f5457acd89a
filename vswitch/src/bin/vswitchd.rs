//! `vswitchd`: the vswitch daemon.
//!
//! Runs the datapath, the embedded DNS and the control API on its embedded
//! defaults: state in `/var/lib/vswitch`, API on
//! `/run/vswitch/vswitchd.sock`, Docker's default `bridge` network
//! (172.17.0.0/16) created on first start, upstream DNS servers from
//! `/etc/resolv.conf`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;
use vswitch::api::ApiServer;
use vswitch::control::{ControllerConfig, PortKind};
use vswitch::daemon::Daemon;
use vswitch::daemon::dns_sync::{DnsPaths, DnsSync, HOST_RESOLV_CONF};
use vswitch::daemon::lock::StateLock;
use vswitch::datapath::{Datapath, DatapathConfig, WorkerConfig};
use vswitch::dnsd::{Dnsd, DnsdConfig};
use vswitch::switch::FdbConfig;

/// A userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Where the state database lives; one daemon per directory.
    #[arg(long, default_value = "/var/lib/vswitch")]
    state_dir: PathBuf,
    /// The control API's unix socket.
    #[arg(long, default_value = "/run/vswitch/vswitchd.sock")]
    socket: PathBuf,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Datapath threads; by default one per available core.
    #[arg(long)]
    datapath_threads: Option<usize>,
    /// How long, in microseconds, a datapath worker keeps polling its
    /// ports after the last frame it moved before it sleeps. The default
    /// (50) costs an idle daemon no CPU; a larger value is the low-latency
    /// mode (e.g. 1000: a worker stays awake between the packets of a
    /// request-response exchange and skips the wakeup, at the cost of up
    /// to that much CPU per worker after each burst).
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    busy_poll: u64,
    /// Device kind of endpoints whose connect request names none.
    #[arg(long, value_enum, default_value = "tap")]
    port_kind: KindArg,
    /// The host resolv.conf: its IPv4 nameservers are the embedded DNS's
    /// upstreams, and sandboxes' resolv.conf files are derived from it.
    #[arg(long, default_value = HOST_RESOLV_CONF)]
    resolv_conf: PathBuf,
    /// DNS server for the embedded DNS to forward to, instead of the host's
    /// (repeatable; dialled from inside the sandbox, as Docker does).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// Search domain written into sandboxes' resolv.conf (repeatable).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// Option written into sandboxes' resolv.conf, e.g. `ndots:2` (repeatable).
    #[arg(long = "dns-option", value_name = "OPTION")]
    dns_option: Vec<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KindArg {
    Tap,
    Veth,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vswitchd: invalid --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let _lock = StateLock::acquire(&args.state_dir)?;
    let mut signals = Signals::new([SIGTERM, SIGINT])?;

    let threads = args
        .datapath_threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let (datapath, workers) = Datapath::spawn_with(DatapathConfig {
        workers: threads,
        worker: WorkerConfig {
            fdb: FdbConfig::default(),
            busy_poll: std::time::Duration::from_micros(args.busy_poll),
        },
    })?;

    let config = ControllerConfig {
        default_port_kind: match args.port_kind {
            KindArg::Tap => PortKind::Tap,
            KindArg::Veth => PortKind::Veth,
        },
        ..ControllerConfig::default()
    };
    let (dnsd, dns_thread) = Dnsd::spawn(DnsdConfig::default())?;
    let dns = DnsSync::new(
        dnsd.clone(),
        DnsPaths {
            host_resolv_conf: args.resolv_conf.clone(),
            settings: dns::resolv_conf::DnsSettings {
                servers: args.dns.clone(),
                search: args.dns_search.clone(),
                options: args.dns_option.clone(),
            },
            ..DnsPaths::default()
        },
    );
    let daemon = Daemon::start(&args.state_dir, config, datapath.clone(), Some(dns))?;
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let server = ApiServer::bind(&args.socket)?;
    let stop_api = server.shutdown_handle();
    tracing::info!(socket = %args.socket.display(), state = %args.state_dir.display(), "vswitchd ready");

    thread::scope(|s| {
        let api = s.spawn(|| server.run(&daemon));
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "shutting down");
        }
        stop_api.shutdown();
        let _ = api.join();
    });
    datapath.shutdown();
    dnsd.shutdown();
    match dns_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the dns thread failed"),
        Err(_) => return Err("the dns thread panicked".into()),
    }
    for worker in workers {
        match worker.join() {
            Ok(result) => result?,
            Err(_) => return Err("a datapath thread panicked".into()),
        }
    }
    // Persistent TAPs, the namespaces and their resolv.conf files stay: a
    // restarted daemon reattaches to them and reopens the DNS listeners,
    // and the containers keep their addresses and routes.
    Ok(())
}
