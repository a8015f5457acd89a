//! The etcd control plane (`vswitchd --etcd URL --vtep ADDR`): the second
//! source of the overlay's peers, beside the static peer file, and the
//! cluster-wide allocator of overlay networks (VNI, subnet) and their
//! addresses.
//!
//! ```text
//!  vswitch-api ─ claim (network, address) ─┐          ┌─ etcd (gRPC)
//!  vswitch-control ─ desired state ────────┤ channel  │   lease + keep-alive
//!                                          ▼          │   txn: networks, VNIs,
//!                        vswitch-etcd (tokio, current-thread runtime)
//!                          │ watch /vswitch/ ─► view::ClusterView ─► PeerEvents
//!                          ▼                                  │
//!                  overlay::Underlay::apply_events       remote names ─► control
//!                  (VTEP table)                          thread (embedded DNS)
//! ```
//!
//! The daemon is not asynchronous: the client runs on a runtime of its own
//! on one thread, `vswitch-etcd`, and the rest talks to it through a
//! channel; a caller waiting for an answer waits at most
//! [`etcd::ANSWER_TIMEOUT`].
//!
//! **What needs the cluster, and what does not.** Taking an overlay
//! network, an address on one, or removing an overlay network waits for
//! an etcd transaction; when etcd cannot be reached it fails with
//! [`ClusterError::Unreachable`] before anything local is changed. What
//! this host publishes (its presence, its endpoints, the addresses it
//! holds) is its *desired state*, derived from the model after every
//! committed change and brought into etcd by the client whenever it is
//! connected: after a reconnection it takes a new lease, publishes
//! everything again, removes what it no longer holds and re-reads the
//! whole view, so a host that lost etcd for a while converges without
//! help. Traffic never waits for etcd: the VTEP table keeps its entries
//! while etcd is away.

pub mod etcd;
pub mod view;

use core::net::Ipv4Addr;

pub use etcd::{Cluster, ClusterConfig, ClusterError};
pub use view::{ClusterView, EndpointRecord, RemoteName};

use crate::control::Model;

/// What this host publishes: derived from the model after every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// The overlay networks this host has, by name.
    pub networks: Vec<String>,
    /// Its endpoints on them.
    pub endpoints: Vec<EndpointRecord>,
}

impl Desired {
    /// The desired state of the host whose VTEP is `vtep`, from its model.
    #[must_use]
    pub fn from_model(model: &Model, vtep: Ipv4Addr) -> Self {
        let networks = model.networks.iter().filter(|n| n.vni.is_some());
        let mut out = Self::default();
        for n in networks {
            out.networks.push(n.name.clone());
            let Some(vni) = n.vni else { continue };
            for e in model.network_endpoints(n.num) {
                let Some(sb) = model.sandbox(&e.sandbox) else {
                    continue;
                };
                let short_id = sb.short_id().to_owned();
                let aliases = e
                    .aliases
                    .iter()
                    .flatten()
                    .filter(|a| **a != short_id && Some(*a) != sb.hostname.as_ref())
                    .cloned()
                    .collect();
                out.endpoints.push(EndpointRecord {
                    id: e.id.clone(),
                    network: n.name.clone(),
                    vni,
                    mac: e.mac,
                    ip: e.ipv4,
                    vtep,
                    name: sb.name.clone(),
                    aliases,
                    short_id,
                    hostname: sb.hostname.clone(),
                });
            }
        }
        out
    }
}
