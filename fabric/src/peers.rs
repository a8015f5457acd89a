//! Control-plane events: what a peer source (an etcd watch, the static
//! peer file) tells the VTEP table.
//!
//! Both sources speak this one vocabulary so the table cannot tell them
//! apart, and a test can drive the table exactly as production does. The
//! events mirror Docker's overlay peer records
//! (`PeerRecord{endpoint_ip, endpoint_mac, tunnel_endpoint_ip}`) plus VTEP
//! liveness, which etcd gives through leases.

use core::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

use crate::wire::Vni;

/// An endpoint on a remote host, as the control plane publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// Its overlay network.
    pub vni: Vni,
    /// Its MAC address.
    pub mac: EthernetAddress,
    /// Its IPv4 address, answered locally to ARP when known.
    pub ip: Option<Ipv4Addr>,
    /// The VTEP it lives behind.
    pub vtep: Ipv4Addr,
}

/// One change to the cluster's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A host's VTEP is alive (registered, or its lease renewed after a
    /// re-sync). `name` is the host's name for `show-vteps`.
    VtepUp {
        /// Its underlay address.
        vtep: Ipv4Addr,
        /// The host's name.
        name: String,
    },
    /// A host is gone (its lease expired, or it left): every entry behind
    /// it disappears, in every network.
    VtepDown {
        /// Its underlay address.
        vtep: Ipv4Addr,
    },
    /// A VTEP takes part in a network: it receives head-end replicated
    /// broadcast and unknown unicast, and its frames are accepted.
    Join {
        /// The network.
        vni: Vni,
        /// The VTEP.
        vtep: Ipv4Addr,
    },
    /// The reverse of [`PeerEvent::Join`]; endpoints the control plane
    /// published behind it stay until removed.
    Leave {
        /// The network.
        vni: Vni,
        /// The VTEP.
        vtep: Ipv4Addr,
    },
    /// An endpoint appeared or moved (a later record for the same MAC
    /// replaces the earlier one).
    EndpointAdd(RemoteEndpoint),
    /// An endpoint is gone.
    EndpointRemove {
        /// Its network.
        vni: Vni,
        /// Its MAC.
        mac: EthernetAddress,
    },
}
