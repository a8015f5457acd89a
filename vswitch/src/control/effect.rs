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
//! If an effect fails, the daemon rolls back by restoring the controller it
//! cloned before `apply` and undoing the effects already done.

use core::net::Ipv4Addr;
use std::path::PathBuf;

use super::model::PortKind;
use crate::ids::{MacAddr, NetworkId, PortId};

/// One step for the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Use an existing namespace; check that `path` is one.
    AdoptNetns {
        /// The sandbox's id.
        sandbox: String,
        /// The sandbox's name.
        name: String,
        /// The namespace file.
        path: PathBuf,
    },
    /// Unmount and remove a namespace the daemon created. Adopted
    /// namespaces are left alone (no effect is emitted for them).
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
    /// Unregister the port and delete the endpoint's device.
    DetachEndpoint(Detachment),
    /// Point the sandbox's default route at another endpoint's gateway,
    /// after the endpoint holding it was detached (libnetwork's
    /// `updateGateway`).
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
}

/// Everything needed to create and configure one endpoint's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The endpoint's id (64 hex).
    pub endpoint: String,
    /// The sandbox's id.
    pub sandbox: String,
    /// The sandbox's namespace.
    pub netns: PathBuf,
    /// The network.
    pub network: NetworkId,
    /// The switch port.
    pub port: PortId,
    /// TAP or veth.
    pub kind: PortKind,
    /// The device name on the host (≤ 15 characters).
    pub host_ifname: String,
    /// The interface name inside the sandbox (`eth0`, …).
    pub ifname: String,
    /// The interface's MAC.
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

/// Everything needed to tear one endpoint's interface down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detachment {
    /// The endpoint's id (64 hex).
    pub endpoint: String,
    /// The sandbox's id.
    pub sandbox: String,
    /// The sandbox's namespace.
    pub netns: PathBuf,
    /// The switch port to unregister.
    pub port: PortId,
    /// TAP or veth.
    pub kind: PortKind,
    /// The device name on the host.
    pub host_ifname: String,
    /// The interface name inside the sandbox.
    pub ifname: String,
}
