//! What the daemon must do after a request, as data.
//!
//! [`super::Controller::apply`] decides and returns a list of [`Effect`]s;
//! the daemon executes them **in order**, then persists the model and
//! answers. The order is chosen so the datapath never sees a port without a
//! device: for additions the device comes first and the switch
//! configuration after it ([`Effect::AttachEndpoint`], then
//! [`Effect::PushSwitchConfig`]); for removals the configuration goes first
//! and the device after it.
//!
//! Every effect can be undone, or is ordered so that its failure needs no
//! undo: if an effect (or the store write after them) fails, the daemon
//! restores the controller it cloned before `apply` and undoes the effects
//! already done, newest first. Effects are data (serde) because the daemon
//! writes them down as its intent before carrying them out, so a crash half
//! way is completed or undone at the next start
//! ([`crate::daemon::intent`]).

use core::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::model::{PortKind, PublishedRecord};
use crate::ids::{MacAddr, NetworkId, PortId};

/// One step for the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Create a network namespace and bind-mount it at `path`
    /// (`<netns_dir>/<sandbox name>`; with the default directory
    /// `/run/netns` that is the named namespace `<sandbox name>`).
    CreateNetns {
        /// The sandbox's id.
        sandbox: String,
        /// The sandbox's name.
        name: String,
        /// Where to mount it.
        path: PathBuf,
    },
    /// Adopt an existing namespace: open `path` (refusing anything that is
    /// not a network namespace, without blocking, and the daemon's own
    /// namespace unless allowed) and bind-mount it on `handle`, through
    /// which every later use goes. Undone by unmounting the handle.
    AdoptNetns {
        /// The sandbox's id.
        sandbox: String,
        /// The sandbox's name.
        name: String,
        /// The namespace file the caller named.
        path: PathBuf,
        /// The daemon's bind mount of it.
        handle: PathBuf,
        /// The daemon's own namespace, for a sandbox on the `host` network
        /// (allowed whatever `--allow-host-netns` says).
        #[serde(default, skip_serializing_if = "core::ops::Not::not")]
        host: bool,
    },
    /// Unmount and remove the handle of an adopted namespace (the
    /// namespace itself is left to its owner). Always the last step of a
    /// removal, so its failure needs no undo.
    ReleaseNetns {
        /// The sandbox's id.
        sandbox: String,
        /// The daemon's bind mount.
        handle: PathBuf,
    },
    /// Unmount and remove a namespace the daemon created. Always the last
    /// step of a removal, so its failure needs no undo.
    DeleteNetns {
        /// The sandbox's id.
        sandbox: String,
        /// The sandbox's name.
        name: String,
        /// The mount point.
        path: PathBuf,
    },
    /// Create the endpoint's device, move it into the sandbox, configure it
    /// and register its port with the datapath.
    AttachEndpoint(Attachment),
    /// Unregister the port and delete the endpoint's device. It carries the
    /// whole attachment so that undoing it creates the device again.
    DetachEndpoint(Attachment),
    /// Point the sandbox's default route at another endpoint's gateway,
    /// after the endpoint holding it was detached (libnetwork's
    /// `updateGateway`). It comes after the detachment it follows, so its
    /// failure is undone by attaching that endpoint again, with its route.
    SetDefaultRoute {
        /// The sandbox's id.
        sandbox: String,
        /// The sandbox's namespace.
        netns: PathBuf,
        /// The interface inside the sandbox.
        ifname: String,
        /// The new default gateway.
        gateway: Ipv4Addr,
    },
    /// Build [`super::Controller::switch_config`] and hand it to the
    /// datapath.
    PushSwitchConfig,
    /// A sandbox was renamed: nothing on the host changes, but the sandbox
    /// is stored again and the DNS records (named by sandbox) are rebuilt.
    RenameSandbox {
        /// The sandbox's id.
        sandbox: String,
        /// Its new name.
        name: String,
    },
    /// Hand the sockets bound while planning the request to whatever
    /// serves published ports ([`crate::publish::PublishedPortSink`]),
    /// once the endpoint they lead to exists. Ports a request gives up are
    /// released while it is planned (the allocator's `unbind`), so that
    /// the same request may bind them again.
    PublishPorts {
        /// The sandbox whose endpoint publishes them: the one whose stored
        /// endpoints change.
        #[serde(default)]
        sandbox: String,
        /// The endpoint that publishes them.
        endpoint: String,
        /// Its network.
        #[serde(with = "super::model::serde_network_id")]
        network: NetworkId,
        /// Its address.
        container: Ipv4Addr,
        /// Its network's gateway.
        gateway: Ipv4Addr,
        /// The bindings.
        ports: Vec<PublishedRecord>,
    },
}

/// Everything needed to create and configure one endpoint's interface (and
/// to tear it down).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The endpoint's id (64 hex).
    pub endpoint: String,
    /// The sandbox's id.
    pub sandbox: String,
    /// The sandbox's namespace.
    pub netns: PathBuf,
    /// The network.
    #[serde(with = "super::model::serde_network_id")]
    pub network: NetworkId,
    /// The switch port.
    #[serde(with = "super::model::serde_port_id")]
    pub port: PortId,
    /// TAP or veth.
    pub kind: PortKind,
    /// The device name on the host (≤ 15 characters).
    pub host_ifname: String,
    /// The interface name inside the sandbox (`eth0`, …).
    pub ifname: String,
    /// The interface's MAC.
    #[serde(with = "super::model::serde_mac")]
    pub mac: MacAddr,
    /// The interface's address.
    pub ipv4: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The interface's MTU.
    pub mtu: u16,
    /// The default route's gateway, set only on the endpoint that provides
    /// the sandbox's default route (its first network).
    pub gateway: Option<Ipv4Addr>,
    /// The device's transmit queue length.
    pub txqueuelen: u32,
}

/// What a batch of changes touched, derived from their effects: what the
/// store must write and the embedded DNS must look at again, so that a
/// change costs the same with a thousand sandboxes as with one.
///
/// Every change to the model falls in one of these: a sandbox (created,
/// removed, or its endpoints attached or detached: the sandbox with its
/// endpoints is rewritten), or the networks and IPAM (stored under one key
/// that the store compares as bytes). A change with no sandbox effect
/// (network create and remove) touches the networks only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Sandboxes (ids) created, removed, or with an endpoint attached or
    /// detached.
    pub sandboxes: std::collections::BTreeSet<String>,
    /// A network was created or removed, or an endpoint of a user-defined
    /// network attached or detached: what the DNS records are built from
    /// changed.
    pub networks: bool,
}

impl Touched {
    /// Adds what `effects` touch; `builtin` tells whether a network is the
    /// default `bridge` (which has no service discovery).
    pub fn add(&mut self, effects: &[Effect], builtin: impl Fn(NetworkId) -> bool) {
        let mut sandbox_effect = false;
        for effect in effects {
            match effect {
                Effect::CreateNetns { sandbox, .. }
                | Effect::AdoptNetns { sandbox, .. }
                | Effect::ReleaseNetns { sandbox, .. }
                | Effect::DeleteNetns { sandbox, .. }
                | Effect::SetDefaultRoute { sandbox, .. } => {
                    sandbox_effect = true;
                    self.sandboxes.insert(sandbox.clone());
                }
                Effect::AttachEndpoint(a) | Effect::DetachEndpoint(a) => {
                    sandbox_effect = true;
                    self.sandboxes.insert(a.sandbox.clone());
                    if !builtin(a.network) {
                        self.networks = true;
                    }
                }
                // The published ports are kept with the endpoint.
                Effect::PublishPorts { sandbox, .. } => {
                    sandbox_effect = true;
                    self.sandboxes.insert(sandbox.clone());
                }
                Effect::RenameSandbox { sandbox, .. } => {
                    sandbox_effect = true;
                    self.sandboxes.insert(sandbox.clone());
                    self.networks = true;
                }
                Effect::PushSwitchConfig => {}
            }
        }
        if !sandbox_effect {
            self.networks = true;
        }
    }

    /// Whether nothing was touched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && !self.networks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(sandbox: &str, network: u32) -> Attachment {
        Attachment {
            endpoint: "e".repeat(64),
            sandbox: sandbox.to_owned(),
            netns: PathBuf::from("/run/netns/x"),
            network: NetworkId(network),
            port: PortId(1),
            kind: PortKind::Tap,
            host_ifname: "vst0".to_owned(),
            ifname: "eth0".to_owned(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ipv4: Ipv4Addr::new(172, 17, 0, 2),
            prefix_len: 16,
            mtu: 1500,
            gateway: None,
            txqueuelen: 1000,
        }
    }

    #[test]
    fn endpoints_touch_their_sandbox_and_user_networks_touch_the_records() {
        let builtin = |n: NetworkId| n == NetworkId(0);
        let mut t = Touched::default();
        t.add(
            &[
                Effect::AttachEndpoint(attachment("a", 0)),
                Effect::PushSwitchConfig,
            ],
            builtin,
        );
        assert_eq!(t.sandboxes.iter().collect::<Vec<_>>(), ["a"]);
        assert!(!t.networks, "the default bridge has no records");
        t.add(
            &[
                Effect::PushSwitchConfig,
                Effect::DetachEndpoint(attachment("b", 1)),
            ],
            builtin,
        );
        assert_eq!(t.sandboxes.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(t.networks);
    }

    #[test]
    fn a_change_without_sandbox_effects_touches_the_networks() {
        let mut t = Touched::default();
        assert!(t.is_empty());
        t.add(&[Effect::PushSwitchConfig], |_| true);
        assert!(t.networks);
        assert!(t.sandboxes.is_empty());
        let mut t = Touched::default();
        t.add(
            &[Effect::CreateNetns {
                sandbox: "s".to_owned(),
                name: "n".to_owned(),
                path: PathBuf::from("/run/netns/n"),
            }],
            |_| true,
        );
        assert!(!t.networks);
        assert!(!t.is_empty());
    }
}
