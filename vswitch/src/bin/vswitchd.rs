//! `vswitchd`: the vswitch daemon.
//!
//! Runs the datapath, the embedded DNS and the control API on its embedded
//! defaults: state in `/var/lib/vswitch`, API on
//! `/run/vswitch/vswitchd.sock`, Docker's default `bridge` network
//! (172.17.0.0/16) created on first start, upstream DNS servers from
//! `/etc/resolv.conf`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;
use vswitch::api::{ApiServer, Backend};
use vswitch::control::{ControllerConfig, PortKind};
use vswitch::daemon::dns_sync::{DnsPaths, DnsSync, HOST_RESOLV_CONF};
use vswitch::daemon::hooks::Hooks;
use vswitch::daemon::lock::StateLock;
use vswitch::daemon::{Daemon, DaemonConfig};
use vswitch::datapath::{
    BusyPoll, CpuLatencyQos, CpuLatencyRequest, Datapath, DatapathConfig, Hold, TRAFFIC_HOLD,
    TrafficGate, WorkerConfig,
};
use vswitch::dnsd::{Dnsd, DnsdConfig};
use vswitch::switch::FdbConfig;

/// A userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Where the state database lives; one daemon per directory.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The control API's unix socket.
    #[arg(long, default_value = "/run/vswitch/vswitchd.sock")]
    socket: PathBuf,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Datapath threads; by default one per available core (one per two
    /// with --busy-poll always).
    #[arg(long)]
    datapath_threads: Option<usize>,
    /// The datapath's latency policy. A number is how long, in
    /// microseconds (0 to 10000000), a worker keeps polling its ports after
    /// the last frame it moved before it sleeps: the default (50) costs an
    /// idle daemon no CPU. `always` is the low-latency mode: workers never
    /// sleep, each takes a whole core, and no frame waits for a thread to
    /// wake; unless --datapath-threads says otherwise, it runs one worker
    /// per two cores.
    #[arg(long, value_name = "MICROSECONDS|always", default_value_t = BusyPoll::DEFAULT)]
    busy_poll: BusyPoll,
    /// Whether the daemon asks the kernel, through a CPU-latency request
    /// (/dev/cpu_dma_latency), to keep idle CPUs polling instead of
    /// halting, so that a thread woken by a frame (a worker, the
    /// application a reply is for) runs at once. `auto`: while the daemon
    /// runs with --busy-poll always, where it removes most of what the
    /// mode still adds to a round trip on a virtual machine; not
    /// otherwise. `on`: while the daemon runs. `traffic`: while frames
    /// move, until 10 ms pass without one. The cost is the machine's: every
    /// idle CPU polls while the request holds.
    #[arg(
        long,
        value_enum,
        value_name = "auto|on|traffic|off",
        default_value = "auto"
    )]
    cpu_latency_qos: QosArg,
    /// How long, in microseconds, the host connector keeps polling after
    /// the last frame or host socket event it handled before it sleeps.
    /// The default (200) spares the datapath workers a wakeup of the
    /// connector between the super-frames of a bulk transfer; 0 makes it
    /// sleep at once, leaving those cycles to other threads.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    connector_busy_poll: u64,
    /// Host connector threads (shards). Each TCP connection lives on one,
    /// chosen by a symmetric hash of its addresses and ports; UDP and ICMP
    /// are the first's. More than one lets several connections use more
    /// than one core, which only pays where cores are left over: the
    /// datapath workers (one per core) and the applications need them too.
    /// By default half the available cores, at least one (one on 2 cores,
    /// where a second shard measured no gain).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    connector_threads: Option<u16>,
    /// Device kind of endpoints whose connect request names none.
    #[arg(long, value_enum, default_value = "tap")]
    port_kind: KindArg,
    /// How TAP ports move frames: `uring` reads a batch, and writes a
    /// port's queue, with one io_uring call (falling back to `syscalls`
    /// where io_uring is unavailable); `syscalls` makes one read or write
    /// system call per frame.
    #[arg(long, value_enum, default_value = "uring")]
    tap_io: TapIoArg,
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
    /// Frames per second each container port may flood (unknown unicast,
    /// broadcast, multicast); the excess is dropped and counted as
    /// `flood_rate_limited`.
    #[arg(long, default_value_t = vswitch::switch::FloodLimit::DEFAULT.rate)]
    flood_rate: u32,
    /// Frames a container port may flood at once before the rate applies.
    #[arg(long, default_value_t = vswitch::switch::FloodLimit::DEFAULT.burst)]
    flood_burst: u32,
    /// The network namespace (`ip netns` name) that holds the host ends of
    /// veth ports, out of the host's sight; created on first use.
    #[arg(long, default_value = vswitch::daemon::effects::DEFAULT_PORT_NETNS)]
    port_netns: String,
    /// Option written into sandboxes' resolv.conf, e.g. `ndots:2` (repeatable).
    #[arg(long = "dns-option", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Allow `sandbox create --netns` to adopt the daemon's own (the
    /// host's) network namespace, which is refused by default.
    #[arg(long)]
    allow_host_netns: bool,
    /// Also serve `GET /metrics` (Prometheus text) on this TCP address,
    /// e.g. `127.0.0.1:9477`; the API socket always serves it.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines as text for people, or one JSON object per line for a
    /// log pipeline (fields as keys: sandbox, network, error...).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// This host's underlay address: its VTEP, where the overlay
    /// networks' VXLAN socket listens. Without it, overlay networks are
    /// refused.
    #[arg(long, value_name = "ADDR")]
    vtep: Option<std::net::Ipv4Addr>,
    /// The VXLAN UDP port (the same on every host).
    #[arg(long, value_name = "PORT", default_value_t = fabric::wire::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    vxlan_port: u16,
    /// The static peer file (TOML): the other hosts' VTEPs and, optionally,
    /// the overlay networks' VNIs and pinned endpoints. Needs --vtep.
    #[arg(long, value_name = "FILE", requires = "vtep")]
    peers: Option<PathBuf>,
    /// The etcd control plane: the client URL(s) of an etcd v3 cluster
    /// (repeatable, e.g. `http://192.0.2.10:2379`). Overlay networks, their
    /// addresses and every host's endpoints are then cluster-wide. Needs
    /// --vtep; excludes --peers.
    #[arg(long, value_name = "URL", requires = "vtep", conflicts_with = "peers")]
    etcd: Vec<String>,
    /// The time to live of this host's etcd lease, in seconds: how long
    /// its entries outlive it on the other hosts if it dies.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=3600))]
    etcd_ttl: u64,
    /// This host's name as other hosts show it; by default the host name.
    #[arg(long, value_name = "NAME")]
    vtep_name: Option<String>,
    /// Serve Docker's network and IPAM plugin protocol, so that `docker
    /// network create -d vswitch --ipam-driver vswitch` uses this switch.
    /// `auto`: only when /run/docker/plugins exists and the state directory
    /// is the default one, and never over a socket another process answers
    /// on; `--docker-plugin` alone means `on`.
    #[arg(long, value_enum, default_value = "auto", num_args = 0..=1,
          require_equals = true, default_missing_value = "on", value_name = "MODE")]
    docker_plugin: PluginArg,
    /// The plugin's socket; Docker knows the plugin by the file's name
    /// (`vswitch.sock` → `-d vswitch`).
    #[arg(long, default_value = vswitch::docker::DEFAULT_SOCKET)]
    docker_plugin_socket: PathBuf,
    /// The Docker Engine API socket of the dockerd using the plugin, asked
    /// (after each join, off the plugin's path) for the container's name,
    /// which the sandbox then takes.
    #[arg(long, default_value = vswitch::docker::DEFAULT_ENGINE_SOCKET, value_name = "PATH")]
    docker_api_socket: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PluginArg {
    Auto,
    On,
    Off,
}

/// The state directory of the host's default daemon.
const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";

/// Docker's directory of plugin sockets.
const DOCKER_PLUGIN_DIR: &str = "/run/docker/plugins";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TapIoArg {
    Uring,
    Syscalls,
}

/// The TAP I/O asked for, or system calls when io_uring cannot be used.
fn tap_io(arg: TapIoArg) -> vswitch::port::TapIo {
    match arg {
        TapIoArg::Syscalls => vswitch::port::TapIo::Syscalls,
        TapIoArg::Uring => match vswitch::port::uring::probe() {
            Ok(()) => vswitch::port::TapIo::Uring,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; TAP ports use one system call per frame");
                vswitch::port::TapIo::Syscalls
            }
        },
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum QosArg {
    Auto,
    On,
    Traffic,
    Off,
}

impl From<QosArg> for CpuLatencyQos {
    fn from(arg: QosArg) -> Self {
        match arg {
            QosArg::Auto => Self::Auto,
            QosArg::On => Self::On,
            QosArg::Traffic => Self::Traffic,
            QosArg::Off => Self::Off,
        }
    }
}

/// What `--cpu-latency-qos` holds: a request for the daemon's life, or a
/// gate for the workers to open while frames move. Failing to open the
/// device stops the daemon when the request was asked for by name, and is
/// a warning when it comes with the low-latency mode.
enum CpuLatency {
    None,
    /// Kept for its drop, which ends the request.
    Held {
        _request: CpuLatencyRequest,
    },
    Gate(Arc<TrafficGate>),
}

fn cpu_latency(arg: QosArg, busy_poll: BusyPoll) -> Result<CpuLatency, Box<dyn std::error::Error>> {
    let qos = CpuLatencyQos::from(arg);
    match qos.hold(busy_poll == BusyPoll::Always) {
        Hold::Never => Ok(CpuLatency::None),
        Hold::WhileTraffic => {
            let gate = TrafficGate::open(TRAFFIC_HOLD)?;
            tracing::info!(hold = ?TRAFFIC_HOLD, "idle CPUs poll while frames move (CPU-latency request of 0 µs)");
            Ok(CpuLatency::Gate(Arc::new(gate)))
        }
        Hold::Always => match CpuLatencyRequest::hold() {
            Ok(request) => {
                tracing::info!(
                    "idle CPUs poll while the daemon runs (CPU-latency request of 0 µs)"
                );
                Ok(CpuLatency::Held { _request: request })
            }
            Err(e) if qos == CpuLatencyQos::Auto => {
                tracing::warn!(error = %e, "idle CPUs may halt: a reply's wakeup of its application costs more");
                Ok(CpuLatency::None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KindArg {
    Tap,
    Veth,
}

fn main() -> ExitCode {
    fixed_mmap_threshold();
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vswitchd: invalid --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves every allocation of 1 MiB or more with its own mapping, for the
/// life of the process.
///
/// The host connector gives each TCP connection 4 MiB buffers each way,
/// zeroed. glibc serves an allocation that large with a fresh mapping
/// (already zero, its pages faulted in only where data is written), until
/// the first such block is freed: it then raises its threshold (up to
/// 32 MiB) and serves the next ones from the heap, which it must clear
/// byte by byte. Measured with `benches/scripts/publish-compare.sh`, that
/// clearing (8 MiB per connection) was most of the connector's time and
/// held published ports to a few hundred connections per second, and the
/// freed blocks kept the heap at gigabytes. A fixed threshold keeps the
/// first behaviour.
fn fixed_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes the allocator's tuning; it is called
        // before any other thread exists.
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    }
}

/// How often the supervisor looks at signals and threads.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);

/// How long shutdown waits for a thread before leaving without it.
const JOIN_LIMIT: Duration = Duration::from_secs(5);

/// Raises the soft limit on open descriptors to the hard limit: each
/// endpoint holds a descriptor, and a service manager's usual soft limit
/// (1024) would otherwise cap the host at about that many endpoints.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// A thread the supervisor watches: if it ends before shutdown, the daemon
/// is no longer whole, and exits.
struct Watched {
    name: String,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Watched {
    fn new(name: impl Into<String>, handle: JoinHandle<std::io::Result<()>>) -> Self {
        Self {
            name: name.into(),
            handle,
        }
    }
}

/// The overlay's underlay socket and, with `--etcd`, the cluster client
/// (not started yet).
type Overlay = (
    Option<Arc<vswitch::overlay::Underlay>>,
    Option<Arc<vswitch::cluster::Cluster>>,
);

/// Opens the underlay socket when `--vtep` is given.
fn open_overlay(args: &Args) -> Result<Overlay, Box<dyn std::error::Error>> {
    let Some(local) = args.vtep else {
        return Ok((None, None));
    };
    let peers = match &args.peers {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the peer file {}: {e}", path.display()))?;
            Some(
                fabric::peer_file::PeerFile::parse(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let name = match &args.vtep_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let cluster = (!args.etcd.is_empty()).then(|| {
        vswitch::cluster::Cluster::new(vswitch::cluster::ClusterConfig {
            endpoints: args.etcd.clone(),
            vtep: local,
            name: name.clone(),
            ttl: Duration::from_secs(args.etcd_ttl),
        })
    });
    let underlay = vswitch::overlay::Underlay::open(vswitch::overlay::OverlayConfig {
        local,
        port: args.vxlan_port,
        name,
        peers,
        source: cluster.as_ref().map(|c| c.source()),
    })?;
    tracing::info!(vtep = %underlay.local(), "VXLAN underlay socket open");
    Ok((Some(underlay), cluster))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let _lock = StateLock::acquire(&args.state_dir)?;
    let (overlay, cluster) = open_overlay(args)?;
    let cluster_thread = match (&cluster, &overlay) {
        (Some(c), Some(u)) => Some(c.start(Arc::clone(u))?),
        _ => None,
    };
    let signals = Signals::new([SIGTERM, SIGINT])?;
    raise_fd_limit();
    let hooks = Hooks::from_env();

    // Held until the daemon exits; the kernel drops it with the file.
    let cpu_latency = cpu_latency(args.cpu_latency_qos, args.busy_poll)?;
    let threads = args.datapath_threads.unwrap_or_else(|| {
        let cores = thread::available_parallelism().map_or(1, std::num::NonZero::get);
        // Workers that never sleep take their cores whole: leave half to
        // the sandboxes, whose stacks answer in the workers' writes but
        // whose processes need a core to run (README: one spinning worker
        // of two cores answered a ping faster than two).
        if args.busy_poll == BusyPoll::Always {
            (cores / 2).max(1)
        } else {
            cores
        }
    });
    let (mut datapath, workers) = Datapath::spawn_with(DatapathConfig {
        workers: threads,
        worker: WorkerConfig {
            fdb: FdbConfig::default(),
            busy_poll: args.busy_poll,
        },
    })?;
    let (connector, connector_threads) = vswitch::connector::HostConnector::spawn(
        nat::conntrack::Config::default(),
        std::time::Duration::from_micros(args.connector_busy_poll),
        args.connector_threads.map_or_else(
            || thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            usize::from,
        ),
    )?;
    datapath.attach_host(connector.clone())?;
    if let CpuLatency::Gate(gate) = &cpu_latency {
        datapath.attach_cpu_latency_gate(gate)?;
    }

    let run_dir = args
        .socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let config = DaemonConfig {
        state_dir: args.state_dir.clone(),
        controller: ControllerConfig {
            default_port_kind: match args.port_kind {
                KindArg::Tap => PortKind::Tap,
                KindArg::Veth => PortKind::Veth,
            },
            handle_dir: run_dir.join("netns"),
            flood_limit: vswitch::switch::FloodLimit {
                rate: args.flood_rate,
                burst: args.flood_burst,
            },
            overlay: overlay.is_some(),
            overlay_vnis: overlay.as_ref().map(|u| u.named_vnis()).unwrap_or_default(),
            ephemeral_ports: ephemeral_ports(),
            host_ipv6: host_ipv6(),
            ..ControllerConfig::default()
        },
        allow_host_netns: args.allow_host_netns,
        hooks,
        overlay,
        cluster: cluster.clone(),
        // The connector serves the published ports the control plane binds.
        port_sink: Arc::new(connector),
        tap_io: tap_io(args.tap_io),
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
    let port_netns = vswitch::daemon::effects::open_port_netns(&args.port_netns)?;
    let (daemon, control_thread) = Daemon::start(config, datapath.clone(), port_netns, Some(dns))?;
    let daemon = Arc::new(daemon);
    let mut server = ApiServer::bind(&args.socket)?;
    let stop_api = server.shutdown_handle();
    let backend: Arc<dyn Backend> = daemon.clone();
    let api_thread = thread::Builder::new()
        .name("vswitch-api".to_owned())
        .spawn(move || {
            server.run(backend);
            Ok(())
        })?;
    let plugin = start_plugin(args, &backend_of(&daemon))?;
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let source_daemon = Arc::clone(&daemon);
            let source: vswitch::metrics::http::Source =
                Arc::new(move || source_daemon.metrics().map_err(|e| e.to_string()));
            let (server, thread) = vswitch::metrics::http::MetricsServer::spawn(addr, source)
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics");
            Some((server, thread))
        }
        None => None,
    };
    tracing::info!(socket = %args.socket.display(), state = %args.state_dir.display(), "vswitchd ready");

    let mut watched = vec![
        Watched::new("vswitch-control", control_thread),
        Watched::new("vswitch-api", api_thread),
        Watched::new("dns", dns_thread),
    ];
    for (i, t) in connector_threads.into_iter().enumerate() {
        let name = if i == 0 {
            "host-connector".to_owned()
        } else {
            format!("host-connector-{i}")
        };
        watched.push(Watched::new(name, t));
    }
    let metrics_server = metrics.map(|(server, thread)| {
        watched.push(Watched::new("vswitch-metrics", thread));
        server
    });
    let stop_plugin = plugin.map(|(stop, thread)| {
        watched.push(Watched::new("vswitch-plugin", thread));
        stop
    });
    if let Some(t) = cluster_thread {
        watched.push(Watched::new("vswitch-etcd", t));
    }
    for (i, w) in workers.into_iter().enumerate() {
        watched.push(Watched::new(format!("datapath-{i}"), w));
    }
    let outcome = supervise(signals, &watched, &datapath, hooks);

    stop_api.shutdown();
    if let Some(stop) = &stop_plugin {
        stop.shutdown();
    }
    if let Some(m) = &metrics_server {
        m.shutdown();
    }
    daemon.shutdown();
    if let Some(c) = &cluster {
        // Revokes the lease: this host's entries leave the other hosts now
        // rather than after the lease's time to live.
        c.shutdown();
    }
    datapath.shutdown();
    dnsd.shutdown();
    let deadline = Instant::now() + JOIN_LIMIT;
    for w in watched {
        while !w.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if !w.handle.is_finished() {
            tracing::warn!(thread = %w.name, "did not stop in time; leaving without it");
            continue;
        }
        match w.handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(thread = %w.name, error = %e, "stopped with an error"),
            Err(_) => tracing::error!(thread = %w.name, "panicked"),
        }
    }
    // Persistent TAPs, the namespaces and their resolv.conf files stay: a
    // restarted daemon reattaches to them and reopens the DNS listeners,
    // and the containers keep their addresses and routes.
    outcome
}

fn backend_of(daemon: &Arc<Daemon>) -> Arc<dyn Backend> {
    daemon.clone()
}

/// Starts the Docker plugin's socket and thread when `--docker-plugin`
/// asks for it (see the flag for `auto`).
/// The plugin's stop handle and thread.
type PluginThread = (
    vswitch::docker::PluginShutdown,
    JoinHandle<std::io::Result<()>>,
);

fn start_plugin(
    args: &Args,
    backend: &Arc<dyn Backend>,
) -> Result<Option<PluginThread>, Box<dyn std::error::Error>> {
    use vswitch::docker::{Plugin, PluginMode, PluginServer, state::state_file};
    let mode = match args.docker_plugin {
        PluginArg::Off => PluginMode::Off,
        PluginArg::On => PluginMode::On,
        PluginArg::Auto => PluginMode::Auto,
    };
    let wanted = match mode {
        PluginMode::Off => false,
        PluginMode::On => true,
        PluginMode::Auto => {
            Path::new(DOCKER_PLUGIN_DIR).is_dir() && args.state_dir == Path::new(DEFAULT_STATE_DIR)
        }
    };
    if !wanted {
        return Ok(None);
    }
    let mut server = match PluginServer::bind(&args.docker_plugin_socket, mode == PluginMode::On) {
        Ok(s) => s,
        Err(e) if mode == PluginMode::Auto => {
            tracing::warn!(error = %e, "docker plugin not served");
            return Ok(None);
        }
        Err(e) => return Err(format!("docker plugin: {e}").into()),
    };
    let plugin = Plugin::new(Arc::clone(backend), Some(state_file(&args.state_dir)))?
        .with_host_networks(Box::new(vswitch::docker::host_networks))
        .with_publisher(Arc::new(vswitch::docker::ControlPlane::new(Arc::clone(
            backend,
        ))))
        .with_namer(vswitch::docker::Namer::start(
            args.docker_api_socket.clone(),
            Arc::clone(backend),
        )?);
    if let Err(e) = plugin.reconcile() {
        tracing::error!(error = %e, "docker plugin: state not reconciled with the switch");
    }
    let plugin = Arc::new(plugin);
    let stop = server.shutdown_handle();
    tracing::info!(socket = %server.path().display(), "serving the docker plugin");
    let thread = thread::Builder::new()
        .name("vswitch-plugin".to_owned())
        .spawn(move || {
            server.run(&plugin);
            Ok(())
        })?;
    Ok(Some((stop, thread)))
}

/// Waits for a signal (a clean shutdown) or for a thread to end before its
/// time (an error: the process must not stay half alive, and a restart is
/// lossless).
fn supervise(
    mut signals: Signals,
    watched: &[Watched],
    datapath: &Datapath,
    hooks: Hooks,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut worker_stopped = false;
    loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!(signal = sig, "shutting down");
            return Ok(());
        }
        if let Some(w) = watched.iter().find(|w| w.handle.is_finished()) {
            tracing::error!(thread = %w.name, "a daemon thread ended unexpectedly; exiting so the service manager restarts the daemon");
            return Err(format!("thread {} ended unexpectedly", w.name).into());
        }
        if let Some(after) = hooks.stop_worker_after
            && !worker_stopped
            && started.elapsed() >= after
        {
            tracing::warn!("test hook: stopping datapath worker 0");
            datapath.stop_worker(0);
            worker_stopped = true;
        }
        thread::sleep(SUPERVISE_EVERY);
    }
}

/// Whether the kernel opens IPv6 sockets (it does not when booted with
/// `ipv6.disable=1`); published ports are then bound on IPv4 only.
fn host_ipv6() -> bool {
    let ok = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).is_ok();
    if !ok {
        tracing::warn!("no IPv6 on this host: published ports are bound on IPv4 only");
    }
    ok
}

/// Dynamic host ports come from the kernel's ephemeral range, as Docker's
/// (docker-reference §4.2): `ip_local_port_range` of the daemon's network
/// namespace, or 49153–65535 when it cannot be read.
fn ephemeral_ports() -> nat::spec::PortRange {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    match std::fs::read_to_string(PATH)
        .map_err(|e| e.to_string())
        .and_then(|text| nat::alloc::parse_ephemeral_range(&text).map_err(|e| e.to_string()))
    {
        Ok(range) => range,
        Err(e) => {
            tracing::warn!(path = PATH, error = %e, "using the fallback ephemeral port range");
            nat::alloc::FALLBACK_EPHEMERAL
        }
    }
}
