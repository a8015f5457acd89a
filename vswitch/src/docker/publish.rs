//! Where a Docker endpoint's published ports (`-p`) go: the single point
//! through which `ProgramExternalConnectivity` and
//! `RevokeExternalConnectivity` reach the switch's port publishing.
//!
//! Docker hands a remote driver that provides the container's gateway the
//! whole port map and installs nothing itself (docker-reference §9.3): no
//! `docker-proxy`, no DNAT. The driver must serve the ports. The plugin
//! stores the map (so `EndpointOperInfo` reports it and a restart knows
//! it) and hands it to a [`Publisher`]; a daemon that can publish ports
//! through its control plane gives the plugin one that does.

use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::wire::PortBinding;
use crate::api::Backend;
use crate::control::types::HostBinding;
use crate::control::{ControlError, Request, Response};

/// The endpoint whose ports are published, in vswitch's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishTarget {
    /// The vswitch network's id.
    pub network: String,
    /// The vswitch sandbox's id.
    pub sandbox: String,
    /// The vswitch endpoint's id.
    pub endpoint: String,
    /// The container's address on the network.
    pub address: Ipv4Addr,
}

/// Publishes and withdraws an endpoint's ports.
pub trait Publisher: Send + Sync {
    /// Serves `ports` (Docker's port map) for `target`; returns the map in
    /// place (host ports chosen, one entry per host socket), which
    /// `EndpointOperInfo` reports.
    ///
    /// # Errors
    /// Text for Docker's `Err` (the container does not start).
    fn publish(
        &self,
        target: &PublishTarget,
        ports: &[PortBinding],
    ) -> Result<Vec<PortBinding>, String>;

    /// Stops serving every port of `target`.
    ///
    /// # Errors
    /// Text for Docker's `Err`.
    fn revoke(&self, target: &PublishTarget) -> Result<(), String>;
}

/// The publisher of a daemon without port publishing: a port map is
/// refused with a clear text rather than silently not served; a container
/// without `-p` is unaffected.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unsupported;

impl Publisher for Unsupported {
    fn publish(
        &self,
        _target: &PublishTarget,
        ports: &[PortBinding],
    ) -> Result<Vec<PortBinding>, String> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        Err(
            "vswitch: publishing ports (-p) on vswitch networks is not available in this vswitchd"
                .to_owned(),
        )
    }

    fn revoke(&self, _target: &PublishTarget) -> Result<(), String> {
        Ok(())
    }
}

/// The publisher of a daemon with port publishing: the port map becomes
/// the sandbox's port bindings and goes through the control plane's
/// publish path (the allocator, real host sockets, the host connector), so
/// the bindings are stored with the switch's model, survive a restart and
/// are refused with Docker's texts.
pub struct ControlPlane {
    backend: Arc<dyn Backend>,
}

impl core::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// A publisher applying its changes to `backend`.
    #[must_use]
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    fn apply(&self, target: &PublishTarget, port_bindings: Bindings) -> Result<Response, String> {
        self.backend
            .apply(Request::PublishPorts {
                sandbox: target.sandbox.clone(),
                endpoint: target.endpoint.clone(),
                port_bindings,
            })
            .map_err(|e| match e {
                // libnetwork adds "driver failed programming external
                // connectivity on endpoint …" itself.
                ControlError::ExternalConnectivity { cause, .. } => cause.to_string(),
                e => e.to_string(),
            })
    }
}

impl Publisher for ControlPlane {
    fn publish(
        &self,
        target: &PublishTarget,
        ports: &[PortBinding],
    ) -> Result<Vec<PortBinding>, String> {
        match self.apply(target, port_bindings(ports)?)? {
            Response::Sandbox(sb) => Ok(port_map(target.address, &sb.network_settings.ports)),
            _ => Ok(Vec::new()),
        }
    }

    fn revoke(&self, target: &PublishTarget) -> Result<(), String> {
        self.apply(target, Bindings::new()).map(drop)
    }
}

/// Docker's `HostConfig.PortBindings`, by `port/proto`.
type Bindings = BTreeMap<String, Vec<HostBinding>>;

/// libnetwork's port map as the `HostConfig.PortBindings` it was made from.
fn port_bindings(ports: &[PortBinding]) -> Result<Bindings, String> {
    let mut out = Bindings::new();
    for p in ports {
        let proto = match p.proto {
            6 => "tcp",
            17 => "udp",
            132 => "sctp",
            other => return Err(format!("invalid proto: {other}")),
        };
        let host_port = match (p.host_port, p.host_port_end) {
            (0, _) => String::new(),
            (start, end) if end > start => format!("{start}-{end}"),
            (start, _) => start.to_string(),
        };
        out.entry(format!("{}/{proto}", p.port))
            .or_default()
            .push(HostBinding {
                host_ip: p.host_ip.clone(),
                host_port,
            });
    }
    Ok(out)
}

/// The ports in place (`NetworkSettings.Ports`) as libnetwork's port map,
/// as Docker's bridge driver reports it: one entry per host socket.
fn port_map(
    container: Ipv4Addr,
    ports: &BTreeMap<String, Option<Vec<HostBinding>>>,
) -> Vec<PortBinding> {
    let mut out = Vec::new();
    for (key, bound) in ports {
        let Some((port, proto)) = key.split_once('/') else {
            continue;
        };
        let (Ok(port), Some(proto)) = (port.parse::<u16>(), proto_number(proto)) else {
            continue;
        };
        for b in bound.iter().flatten() {
            let Ok(host_port) = b.host_port.parse::<u16>() else {
                continue;
            };
            out.push(PortBinding {
                proto,
                ip: container.to_string(),
                port,
                host_ip: b.host_ip.clone(),
                host_port,
                host_port_end: host_port,
            });
        }
    }
    out
}

fn proto_number(proto: &str) -> Option<u8> {
    match proto {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_map_becomes_port_bindings() {
        let pb = |proto, port, host_ip: &str, host_port, host_port_end| PortBinding {
            proto,
            ip: String::new(),
            port,
            host_ip: host_ip.to_owned(),
            host_port,
            host_port_end,
        };
        let got = port_bindings(&[
            pb(6, 80, "", 18080, 18080),
            pb(6, 80, "127.0.0.1", 0, 0),
            pb(17, 53, "", 5300, 5310),
        ])
        .unwrap();
        let hb = |ip: &str, port: &str| HostBinding {
            host_ip: ip.to_owned(),
            host_port: port.to_owned(),
        };
        assert_eq!(
            got,
            [
                (
                    "80/tcp".to_owned(),
                    vec![hb("", "18080"), hb("127.0.0.1", "")]
                ),
                ("53/udp".to_owned(), vec![hb("", "5300-5310")]),
            ]
            .into_iter()
            .collect::<Bindings>()
        );
        assert_eq!(
            port_bindings(&[pb(1, 80, "", 0, 0)]).unwrap_err(),
            "invalid proto: 1"
        );
    }

    #[test]
    fn ports_in_place_become_the_reported_map() {
        let bound = |ip: &str, port: &str| HostBinding {
            host_ip: ip.to_owned(),
            host_port: port.to_owned(),
        };
        let ports = [
            ("80/tcp".to_owned(), Some(vec![bound("0.0.0.0", "18080")])),
            ("53/udp".to_owned(), Some(vec![bound("127.0.0.1", "32768")])),
            ("90/tcp".to_owned(), None),
        ]
        .into_iter()
        .collect();
        let got = port_map(Ipv4Addr::new(172, 18, 0, 2), &ports);
        let want = |proto, port, host_ip: &str, host_port| PortBinding {
            proto,
            ip: "172.18.0.2".to_owned(),
            port,
            host_ip: host_ip.to_owned(),
            host_port,
            host_port_end: host_port,
        };
        assert_eq!(
            got,
            [
                want(17, 53, "127.0.0.1", 32768),
                want(6, 80, "0.0.0.0", 18080)
            ]
        );
    }
}
