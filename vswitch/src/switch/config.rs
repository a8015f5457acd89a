//! The switch's configuration: which ports exist, which network each belongs
//! to, what each network's gateway and policy are.
//!
//! The control thread builds a new [`SwitchConfig`] for every change and
//! hands it to the datapath whole (an `Arc` swapped between batches), so the
//! per-frame path reads it without locks and never sees half an update. Ports
//! and networks are looked up by index, not hashed.

use core::net::Ipv4Addr;

use super::guard::FloodLimit;
use crate::ids::{MacAddr, NetworkId, PortId};

/// Docker's default MTU when `com.docker.network.driver.mtu` is not set.
pub const DEFAULT_MTU: u16 = 1500;

/// Length of an Ethernet header without a VLAN tag (smoltcp's constant).
pub const ETH_HEADER_LEN: usize = smoltcp::wire::ETHERNET_HEADER_LEN;

/// The network's virtual gateway: the address containers use as their
/// default route. The switch answers for it (ARP, ICMP echo) and hands
/// other traffic addressed to it to the L3 stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// The gateway's MAC.
    pub mac: MacAddr,
    /// The gateway's IPv4 address.
    pub ip: Ipv4Addr,
}

/// One Docker network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network.
    pub id: NetworkId,
    /// Largest IP packet, `com.docker.network.driver.mtu` (default 1500).
    pub mtu: u16,
    /// The virtual gateway, absent for a network without one.
    pub gateway: Option<Gateway>,
    /// `com.docker.network.bridge.enable_icc`: whether containers on this
    /// network may talk to each other (Docker §3.3). Traffic to the gateway
    /// is allowed either way.
    pub icc: bool,
    /// Whether the network carries IPv6. Without it, IPv6 from containers
    /// is dropped at ingress
    /// ([`DropReason::Ipv6Disabled`](super::DropReason::Ipv6Disabled)).
    pub ipv6: bool,
    /// How fast each container port may flood.
    pub flood_limit: FloodLimit,
    /// External connectivity through the host connector
    /// ([`crate::connector`]); `None` when nothing beyond the gateway is
    /// reachable, and such frames are dropped as `no_route`.
    pub external: Option<External>,
}

/// A network's subnet and egress policy, as the host connector needs them
/// (Docker §3.2, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct External {
    /// The network's IPv4 subnet (address and prefix length).
    pub subnet: (Ipv4Addr, u8),
    /// `--internal`: nothing leaves for addresses beyond the host.
    pub internal: bool,
    /// `com.docker.network.bridge.enable_ip_masquerade` (default true).
    pub masquerade: bool,
}

impl External {
    /// Whether `ip` lies in the subnet.
    #[must_use]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (net, len) = self.subnet;
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        };
        u32::from(ip) & mask == u32::from(net) & mask
    }
}

impl NetworkConfig {
    /// A network with Docker's defaults: MTU 1500, ICC on, no gateway, no
    /// IPv6, and [`FloodLimit::DEFAULT`].
    #[must_use]
    pub const fn new(id: NetworkId) -> Self {
        Self {
            id,
            mtu: DEFAULT_MTU,
            gateway: None,
            icc: true,
            ipv6: false,
            flood_limit: FloodLimit::DEFAULT,
            external: None,
        }
    }
}

/// What a port is attached to, which decides how far its frames are trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// A container's interface. It may send only from its assigned MAC and,
    /// in ARP and IPv4, only from its assigned address; its MAC is a static
    /// FDB entry.
    Container {
        /// The endpoint's MAC.
        mac: MacAddr,
        /// The endpoint's IPv4 address, if it has one.
        ipv4: Option<Ipv4Addr>,
    },
    /// A trusted link carrying many hosts' frames (an uplink, a tunnel):
    /// sources are learned, not checked.
    Uplink,
}

/// One switch port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// The port.
    pub id: PortId,
    /// The one network the port belongs to.
    pub network: NetworkId,
    /// How its frames are checked.
    pub role: PortRole,
}

/// A configuration the switch cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two networks with one id.
    #[error("network {0} is defined twice")]
    DuplicateNetwork(NetworkId),
    /// Two ports with one id.
    #[error("port {0} is defined twice")]
    DuplicatePort(PortId),
    /// A port names a network that is not defined.
    #[error("port {port} belongs to unknown network {network}")]
    UnknownNetwork {
        /// The port.
        port: PortId,
        /// The network it names.
        network: NetworkId,
    },
    /// Two container ports on one network claim the same MAC.
    #[error("MAC {mac} is assigned to both {first} and {second} on network {network}")]
    DuplicateMac {
        /// The network.
        network: NetworkId,
        /// The MAC.
        mac: MacAddr,
        /// The port that had it first.
        first: PortId,
        /// The port that claims it too.
        second: PortId,
    },
    /// An MTU the network cannot carry.
    #[error("invalid MTU {mtu} on network {network}: must be between 68 and 65535")]
    InvalidMtu {
        /// The network.
        network: NetworkId,
        /// The MTU.
        mtu: u16,
    },
}

/// A network as the datapath sees it: its configuration plus the derived
/// flood list.
#[derive(Clone, Debug)]
pub(crate) struct NetworkState {
    pub(crate) config: NetworkConfig,
    /// Every port of the network, in id order: the flood list.
    pub(crate) ports: Vec<PortId>,
    /// How many of them are uplinks (flood targets when ICC is off).
    pub(crate) uplinks: usize,
    /// The largest non-GSO frame accepted: MTU plus the Ethernet header.
    pub(crate) max_frame_len: usize,
}

/// An immutable, validated switch configuration.
#[derive(Clone, Debug, Default)]
pub struct SwitchConfig {
    generation: u64,
    networks: Vec<Option<NetworkState>>,
    ports: Vec<Option<PortConfig>>,
}

impl SwitchConfig {
    /// Validates and indexes a set of networks and ports.
    ///
    /// # Errors
    /// [`ConfigError`] for duplicate ids, a port on an unknown network, two
    /// container ports sharing a MAC on one network, or an MTU below IPv4's
    /// minimum of 68.
    pub fn new(
        generation: u64,
        networks: impl IntoIterator<Item = NetworkConfig>,
        ports: impl IntoIterator<Item = PortConfig>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = Self {
            generation,
            networks: Vec::new(),
            ports: Vec::new(),
        };
        for net in networks {
            if net.mtu < 68 {
                return Err(ConfigError::InvalidMtu {
                    network: net.id,
                    mtu: net.mtu,
                });
            }
            let slot = slot_mut(&mut cfg.networks, net.id.index());
            if slot.is_some() {
                return Err(ConfigError::DuplicateNetwork(net.id));
            }
            *slot = Some(NetworkState {
                max_frame_len: usize::from(net.mtu) + ETH_HEADER_LEN,
                config: net,
                ports: Vec::new(),
                uplinks: 0,
            });
        }
        let mut ports: Vec<PortConfig> = ports.into_iter().collect();
        ports.sort_by_key(|p| p.id);
        for port in ports {
            let Some(Some(net)) = cfg.networks.get_mut(port.network.index()) else {
                return Err(ConfigError::UnknownNetwork {
                    port: port.id,
                    network: port.network,
                });
            };
            if net.ports.last() == Some(&port.id) {
                return Err(ConfigError::DuplicatePort(port.id));
            }
            net.ports.push(port.id);
            if port.role == PortRole::Uplink {
                net.uplinks += 1;
            }
            *slot_mut(&mut cfg.ports, port.id.index()) = Some(port);
        }
        cfg.check_unique_macs()?;
        Ok(cfg)
    }

    fn check_unique_macs(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(NetworkId, MacAddr, PortId)> = self
            .ports()
            .filter_map(|p| match p.role {
                PortRole::Container { mac, .. } => Some((p.network, mac, p.id)),
                PortRole::Uplink => None,
            })
            .collect();
        seen.sort_unstable();
        for pair in seen.windows(2) {
            let ((net, mac, first), (net2, mac2, second)) = (pair[0], pair[1]);
            if net == net2 && mac == mac2 {
                return Err(ConfigError::DuplicateMac {
                    network: net,
                    mac,
                    first,
                    second,
                });
            }
        }
        Ok(())
    }

    /// Increases with every configuration the control thread builds.
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// A port's configuration.
    #[must_use]
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(id.index())?.as_ref()
    }

    /// A network's configuration.
    #[must_use]
    #[inline]
    pub fn network(&self, id: NetworkId) -> Option<&NetworkConfig> {
        self.network_state(id).map(|n| &n.config)
    }

    #[inline]
    pub(crate) fn network_state(&self, id: NetworkId) -> Option<&NetworkState> {
        self.networks.get(id.index())?.as_ref()
    }

    /// Every port of a network, in id order (its flood list).
    #[must_use]
    pub fn network_ports(&self, id: NetworkId) -> &[PortId] {
        self.network_state(id).map_or(&[], |n| &n.ports)
    }

    /// All ports.
    pub fn ports(&self) -> impl Iterator<Item = &PortConfig> {
        self.ports.iter().flatten()
    }

    /// All networks.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkConfig> {
        self.networks.iter().flatten().map(|n| &n.config)
    }

    /// One past the highest port id, the size of per-port tables.
    #[must_use]
    pub fn port_slots(&self) -> usize {
        self.ports.len()
    }
}

fn slot_mut<T>(v: &mut Vec<Option<T>>, i: usize) -> &mut Option<T> {
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    &mut v[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: u32, net: u32, mac: u8) -> PortConfig {
        PortConfig {
            id: PortId(id),
            network: NetworkId(net),
            role: PortRole::Container {
                mac: MacAddr([2, 0x42, 0, 0, 0, mac]),
                ipv4: None,
            },
        }
    }

    #[test]
    fn indexes_ports_by_network_in_id_order() {
        let cfg = SwitchConfig::new(
            1,
            [
                NetworkConfig::new(NetworkId(0)),
                NetworkConfig::new(NetworkId(3)),
            ],
            [container(5, 3, 5), container(1, 3, 1), container(2, 0, 2)],
        )
        .unwrap();
        assert_eq!(cfg.network_ports(NetworkId(3)), &[PortId(1), PortId(5)]);
        assert_eq!(cfg.network_ports(NetworkId(0)), &[PortId(2)]);
        assert_eq!(cfg.network_ports(NetworkId(7)), &[] as &[PortId]);
        assert_eq!(cfg.port(PortId(5)).unwrap().network, NetworkId(3));
        assert!(cfg.port(PortId(4)).is_none());
        assert_eq!(cfg.port_slots(), 6);
    }

    #[test]
    fn rejects_inconsistent_configurations() {
        let net = || NetworkConfig::new(NetworkId(0));
        assert_eq!(
            SwitchConfig::new(0, [net(), net()], []).unwrap_err(),
            ConfigError::DuplicateNetwork(NetworkId(0))
        );
        assert_eq!(
            SwitchConfig::new(0, [net()], [container(1, 0, 1), container(1, 0, 2)]).unwrap_err(),
            ConfigError::DuplicatePort(PortId(1))
        );
        assert_eq!(
            SwitchConfig::new(0, [net()], [container(1, 9, 1)]).unwrap_err(),
            ConfigError::UnknownNetwork {
                port: PortId(1),
                network: NetworkId(9)
            }
        );
        assert!(matches!(
            SwitchConfig::new(0, [net()], [container(1, 0, 7), container(2, 0, 7)]).unwrap_err(),
            ConfigError::DuplicateMac {
                first: PortId(1),
                second: PortId(2),
                ..
            }
        ));
        let tiny = NetworkConfig { mtu: 67, ..net() };
        assert!(matches!(
            SwitchConfig::new(0, [tiny], []).unwrap_err(),
            ConfigError::InvalidMtu { mtu: 67, .. }
        ));
    }

    #[test]
    fn one_mac_may_appear_on_two_networks() {
        let cfg = SwitchConfig::new(
            0,
            [
                NetworkConfig::new(NetworkId(0)),
                NetworkConfig::new(NetworkId(1)),
            ],
            [container(1, 0, 7), container(2, 1, 7)],
        );
        assert!(cfg.is_ok());
    }
}
