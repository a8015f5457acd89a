//! What the switch decided for one frame.

use crate::ids::{NetworkId, PortId};

/// The one decision [`Switch::process`](super::Switch::process) takes for a
/// frame. The datapath carries it out; the switch itself never writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send the frame out of this port (known unicast).
    Output(PortId),
    /// Send the frame out of every port of `network` but `except` (the
    /// ingress), limited by `scope`: broadcast, multicast and unknown
    /// unicast.
    Flood {
        /// The ingress port's network.
        network: NetworkId,
        /// The ingress port, which never gets its own frame back.
        except: PortId,
        /// Which ports of the network are eligible.
        scope: FloodScope,
    },
    /// The switch answered on behalf of the gateway: the buffer now holds the
    /// reply, to be sent back out of the ingress port.
    Reply(PortId),
    /// An IPv4 packet for beyond the gateway, received on this port: the
    /// host connector ([`crate::connector`]) takes it (egress through host
    /// sockets, a reply on a published port). Its drops are counted there.
    Host(PortId),
    /// The frame is dropped; the reason has been counted.
    Drop(DropReason),
}

/// Which ports a flood reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodScope {
    /// Every other port of the network.
    All,
    /// Only uplinks: a container on a network with ICC off may not reach the
    /// other containers.
    UplinksOnly,
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped. Every reason has its own counter, per
        /// port and in total, so an operator can tell a MAC flood from an
        /// MTU mismatch without a capture.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name, as `vsctl` prints it.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Position in counter arrays.
            #[must_use]
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header.
    Runt => "runt",
    /// Longer than the network's MTU allows (for a GSO super-frame: its
    /// segments would be).
    Oversize => "oversize",
    /// Source MAC is a group address or all zeros.
    InvalidSrcMac => "invalid_src_mac",
    /// A container port sent from a MAC other than its own (in the Ethernet
    /// header or as ARP sender).
    SrcMacSpoofed => "src_mac_spoofed",
    /// A container port sent ARP or IPv4 from an address other than its own.
    SrcIpSpoofed => "src_ip_spoofed",
    /// A VLAN-tagged frame on a container (access) port.
    VlanTagged => "vlan_tagged",
    /// A truncated or inconsistent ARP or IPv4 header.
    Malformed => "malformed",
    /// IPv4 or ICMP checksum wrong on a packet for the gateway.
    BadChecksum => "bad_checksum",
    /// A fragment addressed to the gateway, which does not reassemble.
    Fragment => "fragment",
    /// Container-to-container traffic on a network with ICC off.
    IccDisabled => "icc_disabled",
    /// Known unicast whose destination sits behind the ingress port itself.
    SamePort => "same_port",
    /// Addressed to the gateway but nothing behind it handles the packet yet.
    NoRoute => "no_route",
    /// Arrived on a port the configuration does not know (removed while the
    /// frame was queued).
    UnknownPort => "unknown_port",
    /// The device delivered a frame that could not be read whole (longer
    /// than a buffer, or shorter than its virtio-net header).
    RxError => "rx_error",
    /// A GSO super-frame for a port that cannot take one, which could not be
    /// segmented (malformed headers, an unsupported GSO type), or a partial
    /// checksum that could not be completed for such a port.
    Unsegmentable => "unsegmentable",
    /// Addressed to an IEEE 802.1 link-local group (`01:80:c2:00:00:0x`:
    /// STP, LACP, LLDP, 802.1X, pause), which is never forwarded.
    LinkLocalControl => "link_local_control",
    /// IPv6 from a container on a network without IPv6.
    Ipv6Disabled => "ipv6_disabled",
    /// A Router Advertisement from a container (RA guard).
    RouterAdvertisement => "router_advertisement",
    /// An ICMPv6 Redirect from a container.
    Redirect => "redirect",
    /// A Neighbor Advertisement or Solicitation from a container claiming
    /// an address or link-layer address other than its own.
    NeighborSpoofed => "neighbor_spoofed",
    /// A flood (unknown unicast, broadcast, multicast) over the ingress
    /// port's rate limit.
    FloodRateLimited => "flood_rate_limited",
    /// A virtio-net header that does not match its frame (a GSO type for
    /// another protocol, a partial checksum pointing elsewhere).
    BadVnetHeader => "bad_vnet_header",
    /// For beyond the gateway, from an `--internal` network.
    Internal => "internal",
    /// For beyond the gateway, from a network with
    /// `enable_ip_masquerade=false`.
    MasqueradeDisabled => "masquerade_disabled",
    /// For a container of another network (Docker's isolation chains).
    InterNetwork => "inter_network",
    /// A new flow refused because the flow table is at its capacity.
    ConntrackFull => "conntrack_full",
    /// For the host connector, whose queue was full.
    HostBusy => "host_busy",
    /// A packet the host connector cannot carry: not TCP, UDP or ICMP
    /// echo, a fragment, or no host socket could be opened for it.
    HostUnsupported => "host_unsupported",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_names_and_dense_indexes() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
