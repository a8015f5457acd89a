//! Docker's legacy remote network-driver and IPAM plugin protocol
//! (docker-reference §9), so that `docker network create -d vswitch
//! --ipam-driver vswitch` gives containers switch ports.
//!
//! ```text
//!  dockerd ── POST /NetworkDriver.Join (HTTP/1.1, JSON) ──► /run/docker/plugins/vswitch.sock
//!                                                             │ server: one thread per connection
//!                                                             ▼
//!                        route(plugin, method, path, body)  (no socket: tests and fuzzing call it)
//!                                                             │
//!             IpamDriver.*  ─► the plugin's own ipam::Ipam (Docker's default pools and rules)
//!             NetworkDriver.* ─► control requests through the daemon's Backend:
//!                                CreateNetwork  → network create (the pool, gateway, ip-range, aux, -o)
//!                                Join           → an external sandbox recording <SandboxKey>
//!                                                 (runc makes that namespace after the join),
//!                                                 connect --ip <address>, port kind handoff
//!                                Leave          → disconnect (and sandbox rm when its last endpoint left)
//!                                DeleteNetwork  → network rm
//!                                ProgramExternalConnectivity → publish::Publisher
//! ```
//!
//! `Join` answers a veth end (`vsp…`) made in the daemon's own namespace
//! ([`crate::control::PortKind::Handoff`]); Docker moves it into the
//! container, names it `eth<N>` and gives it the address and routes. The
//! other end (`vsv…`) stays in the ports namespace, read by the switch, so
//! a restarted vswitchd reopens it wherever the container end went.
//!
//! Docker's ids are kept in the plugin's state ([`state`]); vswitch
//! objects get names an operator can match with Docker's output: network
//! `docker-<12 hex of Docker's network id>`, sandbox = the file name of
//! Docker's sandbox key (the first 12 hex of `NetworkSettings.SandboxID`).
//! Docker tells a remote driver neither the network's nor the container's
//! name.
//!
//! Errors follow Docker's conventions: a refused network-driver call
//! answers 200 with `{"Err": …}`, an IPAM one `{"Error": …}` (Docker
//! prints both as `remote: …`); a body that is not JSON is a 400 with
//! `{"Err": …}`; an unknown method a 404.

use core::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Backend, Reply};

mod ipam_driver;
pub mod names;
mod network_driver;
pub mod publish;
pub mod server;
pub mod state;
pub mod wire;

pub use names::{DEFAULT_ENGINE_SOCKET, Namer};
pub use network_driver::NETWORK_ID_LABEL;
pub use publish::{ControlPlane, PublishTarget, Publisher, Unsupported};
pub use server::{ClaimError, PluginMode, PluginServer, PluginShutdown};
pub use state::{State, StateError};

/// The interfaces `Plugin.Activate` announces.
pub const IMPLEMENTS: [&str; 2] = ["NetworkDriver", "IpamDriver"];

/// The default socket: Docker finds a plugin named `vswitch` there.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/vswitch.sock";

/// Host networks an automatic pool must avoid: the on-link routes and the
/// resolv.conf nameservers, gathered when asked (docker-reference §1.2).
pub type HostNetworks = Box<dyn Fn() -> Vec<Ipv4Net> + Send + Sync>;

/// The plugin: its state and the daemon it drives.
pub struct Plugin {
    backend: Arc<dyn Backend>,
    state: Mutex<State>,
    path: Option<PathBuf>,
    publisher: Arc<dyn Publisher>,
    host_networks: HostNetworks,
    namer: Option<Namer>,
}

impl core::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// A plugin over `backend`, its state kept at `path` (`None`: in
    /// memory only, for tests).
    ///
    /// # Errors
    /// [`StateError`] when a stored state cannot be read.
    pub fn new(backend: Arc<dyn Backend>, path: Option<PathBuf>) -> Result<Self, StateError> {
        let state = match &path {
            Some(p) => State::load(p)?,
            None => State::default(),
        };
        Ok(Self {
            backend,
            state: Mutex::new(state),
            path,
            publisher: Arc::new(Unsupported),
            host_networks: Box::new(Vec::new),
            namer: None,
        })
    }

    /// The same plugin naming joined sandboxes after their containers,
    /// asked of Docker's Engine API by `namer` ([`names`]).
    #[must_use]
    pub fn with_namer(self, namer: Namer) -> Self {
        Self {
            namer: Some(namer),
            ..self
        }
    }

    /// Queues the question of the container name of a joined endpoint,
    /// when the plugin has a namer; never waits.
    fn learn_name(&self, network_id: &str, endpoint_id: &str) {
        let Some(namer) = &self.namer else {
            return;
        };
        let sandbox = self
            .state
            .lock()
            .endpoints
            .get(endpoint_id)
            .and_then(|e| e.joined.as_ref())
            .map(|j| j.sandbox.clone());
        if let Some(sandbox) = sandbox {
            namer.ask(names::Question {
                network_id: network_id.to_owned(),
                endpoint_id: endpoint_id.to_owned(),
                sandbox,
            });
        }
    }

    /// The same plugin handing port maps to `publisher`.
    #[must_use]
    pub fn with_publisher(self, publisher: Arc<dyn Publisher>) -> Self {
        Self { publisher, ..self }
    }

    /// The same plugin avoiding `host_networks` in automatic pools.
    #[must_use]
    pub fn with_host_networks(self, host_networks: HostNetworks) -> Self {
        Self {
            host_networks,
            ..self
        }
    }

    /// Brings the plugin's state and the switch's model in line, once at
    /// start, for a crash between a change of one and the save of the
    /// other: joins the switch lost are forgotten, handed-off ports and
    /// Docker networks the plugin does not know are removed.
    ///
    /// # Errors
    /// When the daemon cannot be asked or the state cannot be saved.
    pub fn reconcile(&self) -> Result<(), String> {
        network_driver::reconcile(self)
    }

    /// A copy of the state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    /// Runs `f` on a copy of the state and keeps the copy (written to the
    /// state file) only when `f` succeeded.
    fn change<T>(
        &self,
        f: impl FnOnce(&Self, &mut State) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut guard = self.state.lock();
        let mut next = guard.clone();
        let out = f(self, &mut next)?;
        if next != *guard {
            if let Some(path) = &self.path
                && let Err(e) = next.save(path)
            {
                tracing::error!(error = %e, "docker plugin: state not saved");
                return Err(format!("vswitch: cannot save the plugin state: {e}"));
            }
            *guard = next;
        }
        Ok(out)
    }
}

/// Which error key a method's interface uses.
#[derive(Clone, Copy)]
enum Iface {
    Network,
    Ipam,
}

fn reply<T: Serialize>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => Reply {
            status: 200,
            body,
            content_type: wire::MEDIA_TYPE,
        },
        Err(e) => error(500, &format!("cannot encode the answer: {e}")),
    }
}

fn error(status: u16, message: &str) -> Reply {
    let body = serde_json::to_vec(&wire::NetworkError {
        err: message.to_owned(),
    })
    .unwrap_or_default();
    Reply {
        status,
        body,
        content_type: wire::MEDIA_TYPE,
    }
}

fn refused(iface: Iface, message: String) -> Reply {
    tracing::warn!(error = %message, "docker plugin: call refused");
    match iface {
        Iface::Network => reply(&wire::NetworkError { err: message }),
        Iface::Ipam => reply(&wire::IpamErrorBody { error: message }),
    }
}

fn answer<T: Serialize>(iface: Iface, result: Result<T, String>) -> Reply {
    match result {
        Ok(v) => reply(&v),
        Err(e) => refused(iface, e),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| error(400, &format!("invalid request body: {e}")))
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

/// Answers one plugin call: the whole protocol without the socket.
/// `method` must be `POST`; `path` is `/<Interface>.<Method>`. Never
/// panics, whatever the input.
pub fn route(plugin: &Plugin, method: &str, path: &str, body: &[u8]) -> Reply {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let Some(call) = path.strip_prefix('/') else {
        return error(404, &format!("unknown plugin method {path}"));
    };
    let known = call.starts_with("Plugin.")
        || call.starts_with("NetworkDriver.")
        || call.starts_with("IpamDriver.");
    if known && method != "POST" {
        return error(405, &format!("method {method} is not allowed on {path}"));
    }
    macro_rules! with {
        ($iface:expr, $ty:ty, $f:expr) => {
            match parse::<$ty>(body) {
                Ok(req) => answer($iface, $f(plugin, req)),
                Err(r) => r,
            }
        };
    }
    use Iface::{Ipam, Network};
    match call {
        "Plugin.Activate" => reply(&wire::Activate {
            implements: IMPLEMENTS.to_vec(),
        }),
        "NetworkDriver.GetCapabilities" => reply(&wire::Capabilities {
            scope: "local",
            connectivity_scope: "local",
        }),
        "NetworkDriver.CreateNetwork" => {
            with!(Network, wire::CreateNetwork, network_driver::create_network)
        }
        "NetworkDriver.DeleteNetwork" => {
            with!(Network, wire::NetworkRef, network_driver::delete_network)
        }
        "NetworkDriver.CreateEndpoint" => {
            with!(
                Network,
                wire::CreateEndpoint,
                network_driver::create_endpoint
            )
        }
        "NetworkDriver.DeleteEndpoint" => {
            with!(Network, wire::EndpointRef, network_driver::delete_endpoint)
        }
        "NetworkDriver.EndpointOperInfo" => {
            with!(Network, wire::EndpointRef, network_driver::oper_info)
        }
        "NetworkDriver.Join" => with!(Network, wire::Join, network_driver::join),
        "NetworkDriver.Leave" => with!(Network, wire::EndpointRef, network_driver::leave),
        "NetworkDriver.ProgramExternalConnectivity" => {
            with!(
                Network,
                wire::ProgramExternal,
                network_driver::program_external
            )
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            with!(Network, wire::EndpointRef, network_driver::revoke_external)
        }
        // Discovery notifications carry nothing a local driver uses.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => reply(&Empty {}),
        "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => refused(
            Network,
            "vswitch: swarm-scope networks are not supported".to_owned(),
        ),
        "IpamDriver.GetCapabilities" => reply(&wire::IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        }),
        "IpamDriver.GetDefaultAddressSpaces" => reply(&wire::AddressSpaces {
            local: "LocalDefault",
            global: "GlobalDefault",
        }),
        "IpamDriver.RequestPool" => with!(Ipam, wire::RequestPool, ipam_driver::request_pool),
        "IpamDriver.ReleasePool" => with!(Ipam, wire::ReleasePool, ipam_driver::release_pool),
        "IpamDriver.RequestAddress" => {
            with!(Ipam, wire::RequestAddress, ipam_driver::request_address)
        }
        "IpamDriver.ReleaseAddress" => {
            with!(Ipam, wire::ReleaseAddress, ipam_driver::release_address)
        }
        _ => error(404, &format!("unknown plugin method {path}")),
    }
}

/// Parses `a.b.c.d/n` into the address and the prefix length.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = text.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip, len))
}

/// The host's on-link IPv4 routes (from `/proc/net/route`, routes without a
/// gateway) and the IPv4 nameservers of `/etc/resolv.conf`, as Docker's
/// default IPAM avoids them for automatic pools.
#[must_use]
pub fn host_networks() -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_proc_route(&text));
    }
    if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
        out.extend(text.lines().filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .and_then(|a| Ipv4Net::new(a, 32).ok())
        }));
    }
    out
}

/// The gateway-less, non-default routes of `/proc/net/route` text
/// (addresses in the kernel's byte order, hex).
fn parse_proc_route(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gateway, mask) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(7)?)?);
            if gateway != 0 || mask == 0 {
                return None;
            }
            let dest = Ipv4Addr::from(dest.swap_bytes());
            let len = u8::try_from(mask.count_ones()).ok()?;
            Ipv4Net::new(dest, len).ok().map(|n| n.trunc())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_route_keeps_on_link_routes_only() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    br0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                    eth0\t0080A8C0\t010200C0\t0003\t0\t0\t0\t00F0FFFF\t0\t0\t0\n\
                    garbage\n";
        let nets: Vec<String> = parse_proc_route(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["192.168.2.0/24", "172.18.0.0/16"]);
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.0.1/24"),
            Some((Ipv4Addr::new(10, 0, 0, 1), 24))
        );
        assert_eq!(parse_cidr("10.0.0.1"), None);
        assert_eq!(parse_cidr("10.0.0.1/33"), None);
        assert_eq!(parse_cidr("x/8"), None);
    }
}
