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

use super::wire::PortBinding;

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
    /// Serves `ports` (Docker's port map) for `target`.
    ///
    /// # Errors
    /// Text for Docker's `Err` (the container does not start).
    fn publish(&self, target: &PublishTarget, ports: &[PortBinding]) -> Result<(), String>;

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
    fn publish(&self, _target: &PublishTarget, ports: &[PortBinding]) -> Result<(), String> {
        if ports.is_empty() {
            return Ok(());
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
