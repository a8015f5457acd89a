//! `vsctl`: the command-line client of `vswitchd`, shaped after the docker
//! CLI's `network` commands (same flags, same tables, same error lines).
//!
//! Exit status: 0 on success, 1 when the daemon refuses a request or cannot
//! be reached, 2 for bad arguments (clap's usage error), and for `exec` /
//! `run` the command's own status (126 if it cannot be started, 127 if it is
//! not found).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use nat::spec::PortSpec;
use serde::Serialize;
use vswitch::api::client::DEFAULT_SOCKET;
use vswitch::api::types::{
    ConnectRequest, DisconnectRequest, DnsNetworkView, Empty, EndpointIpamConfig, EndpointSettings,
    HostBinding, HostConfig, IpamConfigEntry, IpamRequest, NetworkCreateRequest,
    SandboxCreateRequest, SandboxView,
};
use vswitch::api::{Client, ClientError};
use vswitch::control::PortKind;

/// Control the vswitch daemon.
#[derive(Debug, Parser)]
#[command(name = "vsctl", version, about)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true, value_enum)]
    format: Option<Format>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// JSON, as the API answers.
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Inspect the embedded DNS.
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Show the MAC learning table, like `ovs-appctl fdb/show`.
    ShowFdb {
        /// Only this network.
        network: Option<String>,
    },
    /// Show switch ports and their counters.
    ShowPorts,
    /// Show the remote VTEPs (other hosts of the overlay networks) and
    /// their counters.
    ShowVteps {
        /// Only this overlay network.
        network: Option<String>,
    },
    /// Show this host's underlay socket: datagrams sent and received,
    /// super-frames cut and merged, and drops by reason.
    ShowUnderlay,
    /// List a sandbox's published ports, as `docker port` does
    /// (`80/tcp -> 0.0.0.0:18080`), or the host addresses of one port.
    Port {
        /// The sandbox.
        sandbox: String,
        /// Only this container port: `PORT[/PROTO]` (tcp by default).
        port: Option<String>,
    },
    /// Show the host connector's flows, like `conntrack -L`.
    ShowConntrack {
        /// Only flows of this network.
        #[arg(long)]
        network: Option<String>,
        /// Only flows of this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// Run a command inside a sandbox's network namespace.
    Exec {
        /// The sandbox.
        sandbox: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Create a sandbox, connect it to a network and run a command in it.
    Run(RunArgs),
    /// Show what the switch does with a frame from a sandbox, decision by
    /// decision (trace mode: nothing is learned, counted or sent).
    Trace {
        /// The sending sandbox, optionally with its interface
        /// (`web:eth1`); with --frame it may be left out.
        target: Option<String>,
        /// Destination: IPv4 address or MAC.
        #[arg(long)]
        dst: Option<String>,
        /// Source override: IPv4 address or MAC (a spoofed frame).
        #[arg(long)]
        src: Option<String>,
        /// Protocol of the built frame.
        #[arg(long, value_parser = ["icmp", "tcp", "udp"])]
        proto: Option<String>,
        /// Destination port (tcp default 80, udp default 53).
        #[arg(long)]
        dport: Option<u16>,
        /// An exact Ethernet frame in hex instead of a built one.
        #[arg(long, value_name = "HEX", conflicts_with_all = ["dst", "src", "proto", "dport"])]
        frame: Option<String>,
    },
    /// Capture what a port sends and receives, as pcapng (`-w -` for
    /// stdout: `vsctl capture web -w - | tshark -r -`).
    Capture {
        /// `SANDBOX[:IFACE]`, or a port number from show-ports.
        target: String,
        /// Where to write the pcapng (`-`: stdout).
        #[arg(short = 'w', value_name = "FILE", default_value = "-")]
        write: PathBuf,
        /// Stop after this many frames (after the filter).
        #[arg(long, short = 'c')]
        count: Option<u64>,
        /// A tcpdump filter expression, e.g. `icmp` or `tcp port 80`.
        #[arg(value_name = "FILTER", trailing_var_arg = true)]
        filter: Vec<String>,
    },
    /// Follow control-plane events, like `docker events`: networks and
    /// sandboxes created and removed, connects, disconnects, failed ports.
    Events {
        /// Also show the kept events since TIME: Unix seconds (`1700000000`,
        /// `1700000000.5`) or a time ago (`30s`, `10m`, `2h`).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<u64>,
        /// Stop at TIME (as for `--since`); without it, follow until
        /// interrupted.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<u64>,
    },
}

/// A `--since`/`--until` value as nanoseconds since the epoch.
fn parse_time(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos();
    let ago = |n: &str, unit: u128| -> Result<u64, String> {
        let n: u128 = n.parse().map_err(|_| format!("invalid time {s:?}"))?;
        u64::try_from(now.saturating_sub(n * unit)).map_err(|e| e.to_string())
    };
    if let Some(n) = s.strip_suffix('s') {
        return ago(n, 1_000_000_000);
    }
    if let Some(n) = s.strip_suffix('m') {
        return ago(n, 60_000_000_000);
    }
    if let Some(n) = s.strip_suffix('h') {
        return ago(n, 3_600_000_000_000);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs
        .parse()
        .map_err(|_| format!("invalid time {s:?}: Unix seconds or 30s, 10m, 2h"))?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid time {s:?}"));
    }
    let nanos: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
    secs.checked_mul(1_000_000_000)
        .and_then(|t| t.checked_add(nanos))
        .ok_or_else(|| format!("time {s:?} out of range"))
}

#[derive(Debug, Subcommand)]
enum DnsCmd {
    /// Show the records of each user-defined network, as the embedded
    /// resolver answers from them: names (container names, aliases, short
    /// ids) with their addresses, and PTR names.
    Show {
        /// Only this network.
        network: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls,
    /// Display detailed information on one or more networks.
    Inspect {
        /// Networks (name, id or id prefix).
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Networks (name, id or id prefix).
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a sandbox to a network.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// Accepted for docker compatibility; no effect.
        #[arg(short, long)]
        force: bool,
        /// The network.
        network: String,
        /// The sandbox.
        sandbox: String,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Driver to manage the network: `bridge`, or `overlay` (across hosts;
    /// needs vswitchd --vtep).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format.
    #[arg(long)]
    subnet: Option<String>,
    /// Allocate container addresses from a sub-range.
    #[arg(long)]
    ip_range: Option<String>,
    /// Gateway for the subnet.
    #[arg(long)]
    gateway: Option<String>,
    /// Auxiliary address the allocator must not hand out (name=ip).
    #[arg(long, value_name = "NAME=IP", value_parser = key_value)]
    aux_address: Vec<(String, String)>,
    /// Restrict external access to the network.
    #[arg(long)]
    internal: bool,
    /// Let standalone containers attach (Docker's flag for swarm-scoped
    /// networks; kept and shown by inspect).
    #[arg(long)]
    attachable: bool,
    /// Driver options (key=value).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = key_value)]
    opt: Vec<(String, String)>,
    /// Labels (key=value).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    label: Vec<(String, String)>,
    /// The network's name.
    name: String,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// IPv4 address.
    #[arg(long)]
    ip: Option<String>,
    /// Network-scoped alias.
    #[arg(long)]
    alias: Vec<String>,
    /// How the interface reaches the switch.
    #[arg(long, value_enum)]
    port_kind: Option<KindArg>,
    /// The network.
    network: String,
    /// The sandbox.
    sandbox: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KindArg {
    /// A TAP device.
    Tap,
    /// A veth pair.
    Veth,
}

impl From<KindArg> for PortKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Tap => Self::Tap,
            KindArg::Veth => Self::Veth,
        }
    }
}

#[derive(Debug, Subcommand)]
enum SandboxCmd {
    /// Create a sandbox.
    Create {
        /// Adopt this existing network namespace instead of creating one.
        #[arg(long, value_name = "PATH")]
        netns: Option<String>,
        /// Docker's `--network host` (the daemon's own namespace: no
        /// interface, address or port of its own) or `--network none`
        /// (loopback only); other networks are joined with `network
        /// connect`.
        #[arg(long, value_parser = ["host", "none"])]
        network: Option<String>,
        #[command(flatten)]
        ports: PortArgs,
        /// The sandbox's name.
        name: String,
    },
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls,
    /// Display detailed information on one or more sandboxes.
    Inspect {
        /// Sandboxes (name, id or id prefix).
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
    /// Remove one or more sandboxes, detaching their endpoints.
    #[command(visible_alias = "remove")]
    Rm {
        /// Sandboxes (name, id or id prefix).
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The sandbox's name.
    #[arg(long)]
    name: String,
    /// The network to connect it to.
    #[arg(long, visible_alias = "network", default_value = "bridge")]
    net: String,
    /// IPv4 address.
    #[arg(long)]
    ip: Option<String>,
    /// Network-scoped alias.
    #[arg(long)]
    alias: Vec<String>,
    /// How the interface reaches the switch.
    #[arg(long, value_enum)]
    port_kind: Option<KindArg>,
    /// Remove the sandbox when the command exits.
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    ports: PortArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Docker's port options of `docker create`/`docker run`.
#[derive(Debug, Args)]
struct PortArgs {
    /// Publish container ports to the host:
    /// `[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp|/sctp]`
    /// (IPv6 host addresses in brackets). Published when the sandbox is
    /// connected to its first network.
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = parse_publish)]
    publish: Vec<PortSpec>,
    /// Publish every exposed port to a dynamic host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port or a range of ports (`80`, `53/udp`, `8000-8010`).
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = parse_expose_arg)]
    expose: Vec<String>,
    /// A DNS server for the sandbox (repeatable), replacing the daemon's
    /// `--dns`: the embedded server's upstreams on user networks.
    #[arg(long, value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// A DNS search domain (repeatable), replacing the daemon's.
    #[arg(long, value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// A resolv.conf option (repeatable, e.g. `ndots:2`), replacing the
    /// daemon's.
    #[arg(long, value_name = "OPTION")]
    dns_option: Vec<String>,
    /// The sandbox's host name: answered by the embedded DNS and listed
    /// among its aliases on user networks.
    #[arg(long)]
    hostname: Option<String>,
}

impl PortArgs {
    /// `HostConfig` and `ExposedPorts` as the docker CLI builds them
    /// (go-connections `ParsePortSpecs`).
    /// The create request for sandbox `name`.
    fn create(
        &self,
        name: String,
        netns: Option<String>,
        mode: Option<&str>,
    ) -> SandboxCreateRequest {
        let (host_config, exposed_ports) = self.request(mode);
        SandboxCreateRequest {
            name,
            netns_path: netns,
            host_config,
            exposed_ports,
            hostname: self.hostname.clone().unwrap_or_default(),
            external: false,
        }
    }

    fn request(&self, network_mode: Option<&str>) -> (Option<HostConfig>, BTreeMap<String, Empty>) {
        let mut bindings: BTreeMap<String, Vec<HostBinding>> = BTreeMap::new();
        let mut exposed = BTreeMap::new();
        for b in self.publish.iter().flat_map(PortSpec::bindings) {
            let key = format!("{}/{}", b.container_port, b.proto);
            bindings.entry(key.clone()).or_default().push(HostBinding {
                host_ip: b.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                host_port: b.host_ports.map(|r| r.to_string()).unwrap_or_default(),
            });
            exposed.insert(key, Empty {});
        }
        for e in &self.expose {
            for (port, proto) in nat::spec::parse_expose(e).unwrap_or_default() {
                exposed.insert(format!("{port}/{proto}"), Empty {});
            }
        }
        let host_config = HostConfig {
            port_bindings: bindings,
            publish_all_ports: self.publish_all,
            network_mode: network_mode.unwrap_or_default().to_owned(),
            dns: self.dns.iter().map(ToString::to_string).collect(),
            dns_search: self.dns_search.clone(),
            dns_options: self.dns_option.clone(),
        };
        let host_config = (host_config != HostConfig::default()).then_some(host_config);
        (host_config, exposed)
    }
}

fn parse_publish(s: &str) -> Result<PortSpec, String> {
    s.parse().map_err(|e: nat::SpecError| e.to_string())
}

fn parse_expose_arg(s: &str) -> Result<String, String> {
    nat::spec::parse_expose(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.is_empty() {
        return Err(format!("invalid key=value {s:?}: empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// A failed command: what to print on stderr (one line) and the status.
struct Failure {
    message: String,
    code: u8,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self {
            message: client_message(&e),
            code: 1,
        }
    }
}

fn client_message(e: &ClientError) -> String {
    match e {
        ClientError::Daemon { message, .. } => format!("Error response from daemon: {message}"),
        ClientError::Connect { .. } | ClientError::PermissionDenied { .. } => e.to_string(),
        other => format!("Error: {other}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    let json = cli.format == Some(Format::Json);
    match run(&client, cli.command, json) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let _ = writeln!(io::stderr(), "{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(client: &Client, cmd: Cmd, json: bool) -> Result<u8, Failure> {
    let mut out = io::stdout().lock();
    match cmd {
        Cmd::Network(n) => network(client, n, json, &mut out),
        Cmd::Sandbox(s) => sandbox(client, s, json, &mut out),
        Cmd::ShowFdb { network } => {
            let rows = client.fdb(network.as_deref())?;
            if json {
                return print_json(&mut out, &rows);
            }
            // The VTEP column only when an overlay network has remote MACs.
            let overlay = rows.iter().any(|r| r.vtep.is_some());
            let mut head = row(["PORT", "SANDBOX", "NETWORK", "MAC", "AGE"]);
            if overlay {
                head.push("VTEP".to_owned());
            }
            let mut table = vec![head];
            table.extend(rows.iter().map(|r| {
                let mut cells = vec![
                    r.port.to_string(),
                    if r.sandbox.is_empty() {
                        "-".to_owned()
                    } else {
                        r.sandbox.clone()
                    },
                    r.network.clone(),
                    r.mac_address.clone(),
                    r.age.map_or_else(|| "static".to_owned(), |a| a.to_string()),
                ];
                if overlay {
                    cells.push(r.vtep.clone().unwrap_or_else(|| "-".to_owned()));
                }
                cells
            }));
            print_text(&mut out, &tabwrite(&table))
        }
        Cmd::ShowVteps { network } => {
            let rows = client.vteps(network.as_deref())?;
            if json {
                return print_json(&mut out, &rows);
            }
            let mut table = vec![row([
                "VTEP",
                "HOST",
                "NETWORKS",
                "ENDPOINTS",
                "LAST SEEN",
                "TX",
                "RX",
                "DROPS",
            ])];
            table.extend(rows.iter().map(|r| {
                vec![
                    r.vtep.clone(),
                    r.host.clone(),
                    r.networks.join(","),
                    r.endpoints.to_string(),
                    r.last_seen
                        .map_or_else(|| "never".to_owned(), |s| format!("{s}s ago")),
                    r.tx_packets.to_string(),
                    r.rx_packets.to_string(),
                    r.drops.to_string(),
                ]
            }));
            print_text(&mut out, &tabwrite(&table))
        }
        Cmd::ShowUnderlay => {
            let view = client.underlay()?;
            if json {
                return print_json(&mut out, &view);
            }
            let mut table = vec![row(["COUNTER", "VALUE"])];
            table.extend(
                view.counters
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.to_string()]),
            );
            table.extend(
                view.drops
                    .iter()
                    .map(|(k, v)| vec![format!("drop_{k}"), v.to_string()]),
            );
            print_text(
                &mut out,
                &format!("VTEP {}\n{}", view.vtep, tabwrite(&table)),
            )
        }
        Cmd::Dns(DnsCmd::Show { network }) => {
            let views = client.dns(network.as_deref())?;
            if json {
                return print_json(&mut out, &views);
            }
            print_text(&mut out, &dns_tables(&views))
        }
        Cmd::ShowConntrack { network, sandbox } => {
            let flows = client.conntrack(network.as_deref(), sandbox.as_deref())?;
            if json {
                return print_json(&mut out, &flows);
            }
            let tuple = |t: &vswitch::control::types::ConntrackTuple| {
                format!(
                    "{}:{} -> {}:{} ({})",
                    t.src, t.sport, t.dst, t.dport, t.network
                )
            };
            let mut table = vec![row([
                "PROTO", "SANDBOX", "ORIGINAL", "REPLY", "STATE", "AGE", "EXPIRES", "PACKETS",
                "BYTES",
            ])];
            table.extend(flows.iter().map(|f| {
                vec![
                    f.protocol.clone(),
                    f.sandbox.clone(),
                    tuple(&f.original),
                    tuple(&f.reply),
                    if f.assured {
                        format!("{} [ASSURED]", f.state)
                    } else {
                        f.state.clone()
                    },
                    f.age.to_string(),
                    f.expires_in.to_string(),
                    format!("{}/{}", f.packets[0], f.packets[1]),
                    format!("{}/{}", f.bytes[0], f.bytes[1]),
                ]
            }));
            print_text(&mut out, &tabwrite(&table))
        }
        Cmd::ShowPorts => {
            let ports = client.ports()?;
            if json {
                return print_json(&mut out, &ports);
            }
            let mut table = vec![row([
                "PORT",
                "SANDBOX",
                "INTERFACE",
                "NETWORK",
                "MAC",
                "IP",
                "RX-PKTS",
                "RX-BYTES",
                "TX-PKTS",
                "TX-BYTES",
                "TX-DROP",
                "KERNEL-DROP",
                "DROPS",
            ])];
            table.extend(ports.iter().map(|p| {
                let drops = if p.drops.is_empty() {
                    "-".to_owned()
                } else {
                    p.drops
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                vec![
                    p.port.to_string(),
                    p.sandbox.clone(),
                    p.interface.clone(),
                    p.network.clone(),
                    p.mac_address.clone(),
                    p.ipv4_address.clone(),
                    p.rx_packets.to_string(),
                    p.rx_bytes.to_string(),
                    p.tx_packets.to_string(),
                    p.tx_bytes.to_string(),
                    p.tx_dropped.to_string(),
                    p.kernel_dropped.to_string(),
                    drops,
                ]
            }));
            print_text(&mut out, &tabwrite(&table))
        }
        Cmd::Port { sandbox, port } => {
            let sb = client.sandbox(&sandbox)?;
            let lines = port_lines(&sb, &sandbox, port.as_deref())?;
            if json {
                return print_json(&mut out, &sb.network_settings.ports);
            }
            if lines.is_empty() {
                return Ok(0);
            }
            print_text(&mut out, &format!("{}\n", lines.join("\n")))
        }
        Cmd::Exec { sandbox, command } => {
            let sb = client.sandbox(&sandbox)?;
            drop(out);
            exec_in(&sb, &command)
        }
        Cmd::Run(args) => run_in(client, args),
        Cmd::Trace {
            target,
            dst,
            src,
            proto,
            dport,
            frame,
        } => {
            let (sandbox, interface) = match target {
                Some(t) => match t.split_once(':') {
                    Some((s, i)) => (Some(s.to_owned()), Some(i.to_owned())),
                    None => (Some(t), None),
                },
                None => (None, None),
            };
            let request = vswitch::trace::TraceRequest {
                sandbox,
                interface,
                dst,
                src,
                proto,
                dport,
                frame,
            };
            let body = serde_json::to_vec(&request).map_err(|e| Failure {
                message: format!("Error: {e}"),
                code: 1,
            })?;
            let raw = client.request("POST", "/v1/trace", Some(&body))?;
            if raw.status != 200 {
                let message = serde_json::from_slice::<serde_json::Value>(&raw.body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&raw.body).into_owned());
                return Err(Failure {
                    message: format!("Error response from daemon: {message}"),
                    code: 1,
                });
            }
            let report: vswitch::trace::TraceReport =
                serde_json::from_slice(&raw.body).map_err(|e| Failure {
                    message: format!("Error: cannot decode the daemon's answer: {e}"),
                    code: 1,
                })?;
            if json {
                return print_json(&mut out, &report);
            }
            let i = &report.ingress;
            let mut text = format!(
                "trace from {}:{} (port {}, network {})\n",
                i.sandbox, i.interface, i.port, i.network
            );
            for s in &report.steps {
                text.push_str(&format!("  {:<8} {}\n", s.stage, s.detail));
            }
            let ports: Vec<String> = report
                .outputs
                .iter()
                .map(|o| {
                    if o.sandbox.is_empty() {
                        format!("port {}", o.port)
                    } else {
                        format!("{}:{} (port {})", o.sandbox, o.interface, o.port)
                    }
                })
                .collect();
            text.push_str(&match report.verdict.as_str() {
                "output" => format!("verdict: output to {}\n", ports.join(", ")),
                "flood" => format!(
                    "verdict: flood ({}) to {}\n",
                    report.reason,
                    ports.join(", ")
                ),
                "local" => "verdict: answered locally by the gateway\n".to_owned(),
                v => format!("verdict: {v} ({})\n", report.reason),
            });
            print_text(&mut out, &text)
        }
        Cmd::Capture {
            target,
            write,
            count,
            filter,
        } => {
            let filter = filter.join(" ");
            let mut sink: Box<dyn Write> = if write.as_os_str() == "-" {
                Box::new(io::stdout().lock())
            } else {
                Box::new(File::create(&write).map_err(|e| Failure {
                    message: format!("Error: cannot create {}: {e}", write.display()),
                    code: 1,
                })?)
            };
            match client.capture(&target, count, &filter, &mut *sink) {
                Ok(_) => Ok(0),
                Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Events { since, until } => {
            let mut failed = None;
            client.events(since, until, |e| {
                let line = if json {
                    serde_json::to_string(&e).unwrap_or_default()
                } else {
                    let when = vswitch::control::rfc3339_nano(
                        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.time_nano),
                    );
                    let attrs: Vec<String> = e
                        .actor
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(
                        "{when} {} {} {} ({})",
                        e.kind,
                        e.action,
                        e.actor.id,
                        attrs.join(", ")
                    )
                };
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => true,
                    Err(err) => {
                        failed = Some(err);
                        false
                    }
                }
            })?;
            match failed {
                Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure {
                    message: format!("Error: {e}"),
                    code: 1,
                }),
                _ => Ok(0),
            }
        }
    }
}

/// `docker port`'s lines (docker/cli `port.go`): every binding as
/// `80/tcp -> 0.0.0.0:18080`, or for one port only its host addresses, in
/// natural order; an unpublished port is an error naming the sandbox as
/// the user wrote it.
fn port_lines(sb: &SandboxView, name: &str, port: Option<&str>) -> Result<Vec<String>, Failure> {
    let join = |b: &HostBinding| {
        if b.host_ip.contains(':') {
            format!("[{}]:{}", b.host_ip, b.host_port)
        } else {
            format!("{}:{}", b.host_ip, b.host_port)
        }
    };
    let ports = &sb.network_settings.ports;
    let mut out: Vec<String> = match port {
        Some(asked) => {
            let (p, proto) = asked.split_once('/').unwrap_or((asked, "tcp"));
            if p.parse::<u16>().is_err() {
                return Err(Failure {
                    message: format!(
                        "Error: invalid port ({p}): strconv.ParseUint: parsing {p:?}: invalid syntax"
                    ),
                    code: 1,
                });
            }
            match ports.get(&format!("{p}/{proto}")) {
                Some(Some(list)) if !list.is_empty() => list.iter().map(join).collect(),
                _ => {
                    return Err(Failure {
                        message: format!("Error: No public port '{asked}' published for {name}"),
                        code: 1,
                    });
                }
            }
        }
        None => ports
            .iter()
            .flat_map(|(from, list)| {
                list.iter()
                    .flatten()
                    .map(move |b| format!("{from} -> {}", join(b)))
            })
            .collect(),
    };
    out.sort_by(|a, b| natural_cmp(a, b));
    Ok(out)
}

/// Natural order (`sortorder.NaturalLess`): runs of digits compare as
/// numbers, everything else byte by byte.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (x, y) = (
                std::str::from_utf8(&a[si..i])
                    .unwrap_or("")
                    .trim_start_matches('0'),
                std::str::from_utf8(&b[sj..j])
                    .unwrap_or("")
                    .trim_start_matches('0'),
            );
            let ord = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// `dns show`: the names table, then the PTR table.
fn dns_tables(views: &[DnsNetworkView]) -> String {
    let mut names = vec![row(["NETWORK", "NAME", "KIND", "ADDRESSES"])];
    let mut ptrs = vec![row(["NETWORK", "ADDRESS", "PTR"])];
    for v in views {
        names.extend(v.names.iter().map(|n| {
            vec![
                v.network.clone(),
                n.name.clone(),
                n.kinds.join(","),
                n.addresses.join(","),
            ]
        }));
        ptrs.extend(
            v.ptr
                .iter()
                .map(|p| vec![v.network.clone(), p.address.clone(), p.name.clone()]),
        );
    }
    format!("{}\n{}", tabwrite(&names), tabwrite(&ptrs))
}

fn network(
    client: &Client,
    cmd: NetworkCmd,
    json: bool,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    match cmd {
        NetworkCmd::Create(a) => {
            let request = create_request(a);
            let created = client.create_network(&request)?;
            if json {
                return print_json(out, &created);
            }
            print_text(out, &format!("{}\n", created.id))
        }
        NetworkCmd::Ls => {
            let mut nets = client.networks()?;
            nets.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                return print_json(out, &nets);
            }
            let mut table = vec![row(["NETWORK ID", "NAME", "DRIVER", "SCOPE"])];
            table.extend(nets.iter().map(|n| {
                vec![
                    n.id.get(..12).unwrap_or(&n.id).to_owned(),
                    n.name.clone(),
                    n.driver.clone(),
                    n.scope.clone(),
                ]
            }));
            print_text(out, &tabwrite(&table))
        }
        NetworkCmd::Inspect { networks } => {
            let (found, errors) = fetch_each(&networks, "network", |n| client.network(n))?;
            print_json(out, &found)?;
            finish(errors)
        }
        NetworkCmd::Rm { networks } => remove_each(out, &networks, |n| client.remove_network(n)),
        NetworkCmd::Connect(a) => {
            let request = connect_request(&a.sandbox, a.ip, a.alias, a.port_kind);
            let endpoint = client.connect(&a.network, &request)?;
            if json {
                return print_json(out, &endpoint);
            }
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            sandbox,
        } => {
            client.disconnect(
                &network,
                &DisconnectRequest {
                    container: sandbox,
                    force,
                },
            )?;
            Ok(0)
        }
    }
}

fn sandbox(
    client: &Client,
    cmd: SandboxCmd,
    json: bool,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    match cmd {
        SandboxCmd::Create {
            netns,
            network,
            ports,
            name,
        } => {
            let sb = client.create_sandbox(&ports.create(name, netns, network.as_deref()))?;
            if json {
                return print_json(out, &sb);
            }
            print_text(out, &format!("{}\n", sb.id))
        }
        SandboxCmd::Ls => {
            let mut sbs = client.sandboxes()?;
            sbs.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                return print_json(out, &sbs);
            }
            let mut table = vec![row(["SANDBOX ID", "NAME", "NETNS", "NETWORKS"])];
            table.extend(sbs.iter().map(|s| {
                let nets: Vec<&str> = s.endpoints.iter().map(|e| e.network.as_str()).collect();
                vec![
                    s.id.get(..12).unwrap_or(&s.id).to_owned(),
                    s.name.clone(),
                    if s.netns_gone {
                        format!("{} (gone)", s.netns_path)
                    } else {
                        s.netns_path.clone()
                    },
                    nets.join(","),
                ]
            }));
            print_text(out, &tabwrite(&table))
        }
        SandboxCmd::Inspect { sandboxes } => {
            let (found, errors) = fetch_each(&sandboxes, "sandbox", |n| client.sandbox(n))?;
            print_json(out, &found)?;
            finish(errors)
        }
        SandboxCmd::Rm { sandboxes } => remove_each(out, &sandboxes, |n| client.remove_sandbox(n)),
    }
}

/// Fetches each named object; a missing one becomes Docker's "No such
/// {kind}" line instead of stopping the others.
fn fetch_each<T>(
    names: &[String],
    kind: &str,
    mut fetch: impl FnMut(&str) -> Result<T, ClientError>,
) -> Result<(Vec<T>, Vec<String>), Failure> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match fetch(name) {
            Ok(object) => found.push(object),
            Err(ClientError::Daemon { status: 404, .. }) => {
                errors.push(format!("Error: No such {kind}: {name}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((found, errors))
}

/// Removes each named object, printing the names removed, as `docker rm`
/// does; the daemon's refusals are reported together at the end.
fn remove_each(
    out: &mut impl Write,
    names: &[String],
    mut remove: impl FnMut(&str) -> Result<(), ClientError>,
) -> Result<u8, Failure> {
    let mut errors = Vec::new();
    for name in names {
        match remove(name) {
            Ok(()) => print_text(out, &format!("{name}\n")).map(drop)?,
            Err(e @ ClientError::Daemon { .. }) => errors.push(client_message(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    finish(errors)
}

/// All errors but the last go out at once; the last becomes the failure.
fn finish(mut errors: Vec<String>) -> Result<u8, Failure> {
    let Some(last) = errors.pop() else {
        return Ok(0);
    };
    let mut err = io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "{e}");
    }
    Err(Failure {
        message: last,
        code: 1,
    })
}

fn create_request(a: CreateArgs) -> NetworkCreateRequest {
    let given = a.subnet.is_some()
        || a.ip_range.is_some()
        || a.gateway.is_some()
        || !a.aux_address.is_empty();
    let config = if given {
        vec![IpamConfigEntry {
            subnet: a.subnet,
            ip_range: a.ip_range,
            gateway: a.gateway,
            aux_addresses: a.aux_address.into_iter().collect(),
        }]
    } else {
        Vec::new()
    };
    NetworkCreateRequest {
        name: a.name,
        check_duplicate: true,
        driver: a.driver,
        enable_ipv6: false,
        ipam: Some(IpamRequest {
            driver: "default".to_owned(),
            config,
            options: BTreeMap::new(),
        }),
        internal: a.internal,
        attachable: a.attachable,
        options: a.opt.into_iter().collect(),
        labels: a.label.into_iter().collect(),
    }
}

fn connect_request(
    sandbox: &str,
    ip: Option<String>,
    aliases: Vec<String>,
    kind: Option<KindArg>,
) -> ConnectRequest {
    ConnectRequest {
        container: sandbox.to_owned(),
        endpoint_config: Some(EndpointSettings {
            ipam_config: ip.map(|ipv4_address| EndpointIpamConfig { ipv4_address }),
            aliases,
        }),
        port_kind: kind.map(PortKind::from),
        assigned_ipv4: None,
    }
}

fn run_in(client: &Client, a: RunArgs) -> Result<u8, Failure> {
    // `host` and `none` are taken at creation, as `docker run --network`.
    let mode = matches!(a.net.as_str(), "host" | "none").then_some(a.net.as_str());
    let sb = client.create_sandbox(&a.ports.create(a.name.clone(), None, mode))?;
    let request = connect_request(&sb.id, a.ip, a.alias, a.port_kind);
    if mode.is_none()
        && let Err(e) = client.connect(&a.net, &request)
    {
        // Leave nothing half made behind; the connect error is what matters.
        let _ = client.remove_sandbox(&sb.id);
        return Err(e.into());
    }
    let result = exec_in(&sb, &a.command);
    if a.rm
        && let Err(e) = client.remove_sandbox(&sb.id)
    {
        let _ = writeln!(io::stderr(), "{}", client_message(&e));
    }
    result
}

/// The mounts `ip netns exec NAME` makes for a named namespace, prepared
/// before the fork: every `/etc/netns/NAME/ENTRY` bound over `/etc/ENTRY`
/// (the sandbox's resolv.conf and hosts), and sysfs mounted anew so
/// `/sys/class/net` shows the sandbox's interfaces.
#[derive(Debug)]
struct NetnsMounts {
    /// The namespace's name, the source of the sysfs mount.
    name: std::ffi::CString,
    /// (`/etc/netns/NAME/ENTRY`, `/etc/ENTRY`) pairs whose target exists.
    etc: Vec<(std::ffi::CString, std::ffi::CString)>,
}

impl NetnsMounts {
    /// The mounts for `netns_path`, or `None` when it is not a named
    /// namespace (one adopted from a process has its own mount namespace).
    fn for_path(netns_path: &str) -> Option<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(netns_path);
        if path.parent() != Some(std::path::Path::new("/run/netns")) {
            return None;
        }
        let name = path.file_name()?;
        let dir = std::path::Path::new("/etc/netns").join(name);
        let mut etc = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let target = std::path::Path::new("/etc").join(entry.file_name());
                if !target.exists() {
                    continue;
                }
                let (Ok(from), Ok(to)) = (
                    std::ffi::CString::new(entry.path().as_os_str().as_bytes()),
                    std::ffi::CString::new(target.as_os_str().as_bytes()),
                ) else {
                    continue;
                };
                etc.push((from, to));
            }
        }
        Some(Self {
            name: std::ffi::CString::new(name.as_bytes()).ok()?,
            etc,
        })
    }

    /// Enters a private mount namespace and makes the mounts. Runs in the
    /// forked child: only system calls on memory prepared before the fork.
    fn apply(&self) -> io::Result<()> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
        // Nothing mounted here propagates back to the host.
        mount(
            None::<&std::ffi::CStr>,
            c"/",
            None::<&std::ffi::CStr>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&std::ffi::CStr>,
        )?;
        let _ = umount2(c"/sys", MntFlags::MNT_DETACH);
        mount(
            Some(self.name.as_c_str()),
            c"/sys",
            Some(c"sysfs"),
            MsFlags::empty(),
            None::<&std::ffi::CStr>,
        )?;
        for (from, to) in &self.etc {
            mount(
                Some(from.as_c_str()),
                to.as_c_str(),
                Some(c"none"),
                MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
            )?;
        }
        Ok(())
    }
}

/// Runs `command` inside the sandbox as `ip netns exec` does (its network
/// namespace and, for a named one, a private mount namespace with its
/// `/etc/netns/NAME` files over `/etc` and its own `/sys`), and returns
/// its exit status (128 + signal when killed by one).
fn exec_in(sb: &SandboxView, command: &[String]) -> Result<u8, Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure {
            message: "Error: no command given".to_owned(),
            code: 2,
        });
    };
    let ns = File::open(&sb.netns_path).map_err(|e| Failure {
        message: format!(
            "Error: cannot open the network namespace of sandbox {} at {}: {e}",
            sb.name, sb.netns_path
        ),
        code: 126,
    })?;
    let mounts = NetnsMounts::for_path(&sb.netns_path);
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure runs in the forked child between fork and exec. It
    // only makes system calls (setns, unshare, mount, umount2; all
    // async-signal-safe) on a descriptor and C strings the parent prepared,
    // and builds its errors from errno without allocating; it touches no
    // lock or heap state the parent's other threads could hold.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            match &mounts {
                Some(m) => m.apply(),
                None => Ok(()),
            }
        });
    }
    match cmd.status() {
        Ok(status) => {
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            Ok(u8::try_from(code).unwrap_or(u8::MAX))
        }
        Err(e) => Err(Failure {
            message: format!("Error: cannot run {program} in sandbox {}: {e}", sb.name),
            code: if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            },
        }),
    }
}

fn print_json<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> Result<u8, Failure> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    value.serialize(&mut ser).map_err(|e| Failure {
        message: format!("Error: {e}"),
        code: 1,
    })?;
    buf.push(b'\n');
    out.write_all(&buf).map_err(write_failure)?;
    Ok(0)
}

fn print_text(out: &mut impl Write, text: &str) -> Result<u8, Failure> {
    out.write_all(text.as_bytes()).map_err(write_failure)?;
    Ok(0)
}

fn write_failure(e: io::Error) -> Failure {
    Failure {
        message: format!("Error: cannot write output: {e}"),
        code: 1,
    }
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// The docker CLI's table layout (Go `tabwriter` with minimum width 10 and
/// padding 3): every column but the last is as wide as its widest cell plus
/// three spaces, and at least ten; the last column is not padded.
fn tabwrite(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port key and its bindings (`None`: exposed only).
    type Ports<'a> = [(&'a str, Option<&'a [(&'a str, &'a str)]>)];

    fn view(ports: &Ports<'_>) -> SandboxView {
        let json = serde_json::json!({
            "Name": "web", "Id": "a".repeat(64), "Created": "", "NetnsPath": "",
            "NetnsOwned": true, "Endpoints": [],
            "NetworkSettings": {"Ports": ports.iter().map(|(k, v)| {
                let list = v.map(|l| l.iter().map(|(ip, port)| {
                    serde_json::json!({"HostIp": ip, "HostPort": port})
                }).collect::<Vec<_>>());
                ((*k).to_owned(), serde_json::json!(list))
            }).collect::<serde_json::Map<_, _>>()},
        });
        serde_json::from_value(json).expect("a sandbox view")
    }

    #[test]
    fn port_lines_are_dockers_in_natural_order() {
        let sb = view(&[
            ("10/tcp", Some(&[("0.0.0.0", "18010")])),
            ("9/udp", Some(&[("::", "32768"), ("0.0.0.0", "32768")])),
            ("99/tcp", None),
        ]);
        assert_eq!(
            port_lines(&sb, "web", None).ok().unwrap(),
            [
                "9/udp -> 0.0.0.0:32768",
                "9/udp -> [::]:32768",
                "10/tcp -> 0.0.0.0:18010"
            ]
        );
        assert_eq!(
            port_lines(&sb, "web", Some("9/udp")).ok().unwrap(),
            ["0.0.0.0:32768", "[::]:32768"]
        );
        let err = port_lines(&sb, "web", Some("99")).err().unwrap();
        assert_eq!(err.message, "Error: No public port '99' published for web");
        let err = port_lines(&sb, "web", Some("9")).err().unwrap();
        assert_eq!(err.message, "Error: No public port '9' published for web");
    }

    #[test]
    fn natural_order_compares_digit_runs_as_numbers() {
        use std::cmp::Ordering::{Greater, Less};
        assert_eq!(natural_cmp("9/tcp", "10/tcp"), Less);
        assert_eq!(natural_cmp("80/tcp -> 0", "80/tcp -> ["), Less);
        assert_eq!(natural_cmp("a100", "a20"), Greater);
        assert_eq!(natural_cmp("a", "a1"), Less);
    }
}
