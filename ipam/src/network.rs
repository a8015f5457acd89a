//! The network-level half of IPAM: what libnetwork and the docker CLI do
//! around the default driver when a network is created, an endpoint gets an
//! address, and a network is inspected.
//!
//! The daemon calls [`Ipam::create_network`] with the `IPAM.Config` list of a
//! `docker network create` request, keeps the returned [`NetworkIpam`] in its
//! network record, and hands it back for endpoints
//! ([`Ipam::allocate_endpoint_address`]) and removal
//! ([`Ipam::delete_network`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize};

use crate::allocator::{Ipam, PoolRequest};
use crate::error::IpamError;
use crate::mac::mac_from_ipv4;
use crate::parse::{self, Matched};
use crate::pool::PoolId;
use crate::space::{AddressSpace, overlaps};

/// Reads `null` as an empty map, as Go reads it.
fn null_as_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

/// One entry of a network's `IPAM.Config`, in the Docker API's JSON shape
/// (`{"Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"}`): what
/// `docker network create` sends, and what `network inspect` shows.
///
/// Every field is untrusted text; `None` and `""` both mean "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIpamConfig {
    /// `--subnet`.
    #[serde(rename = "Subnet", default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// `--ip-range`.
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// `--gateway`.
    #[serde(rename = "Gateway", default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `--aux-address name=IP`, by name.
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux_addresses: BTreeMap<String, String>,
}

impl NetworkIpamConfig {
    /// An entry with a subnet.
    pub fn subnet(subnet: impl Into<String>) -> Self {
        Self {
            subnet: Some(subnet.into()),
            ..Self::default()
        }
    }

    /// The same entry with an ip-range.
    #[must_use]
    pub fn with_range(self, ip_range: impl Into<String>) -> Self {
        Self {
            ip_range: Some(ip_range.into()),
            ..self
        }
    }

    /// The same entry with a gateway.
    #[must_use]
    pub fn with_gateway(self, gateway: impl Into<String>) -> Self {
        Self {
            gateway: Some(gateway.into()),
            ..self
        }
    }

    /// The same entry with one more auxiliary address.
    #[must_use]
    pub fn with_aux(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.aux_addresses.insert(name.into(), address.into());
        self
    }
}

/// Everything IPAM needs to create a network's pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIpamRequest {
    /// The network's name; Docker prints it in some errors.
    pub name: String,
    /// The network's id; Docker prints it in some errors.
    pub id: String,
    /// The address space: local for bridge networks, global for overlays.
    pub space: AddressSpace,
    /// False for the built-in networks (the default `bridge`), on which
    /// static addresses are refused.
    pub user_defined: bool,
    /// The `IPAM.Config` entries; none means one automatic pool.
    pub configs: Vec<NetworkIpamConfig>,
    /// Host networks automatic local pools must avoid (see
    /// [`PoolRequest::host_networks`]).
    pub host_networks: Vec<Ipv4Net>,
}

impl NetworkIpamRequest {
    /// A user-defined local network with an automatic pool.
    pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: id.into(),
            space: AddressSpace::Local,
            user_defined: true,
            configs: Vec::new(),
            host_networks: Vec::new(),
        }
    }

    /// The same request with one more config entry.
    #[must_use]
    pub fn with_config(mut self, config: NetworkIpamConfig) -> Self {
        self.configs.push(config);
        self
    }

    /// The same request in another address space.
    #[must_use]
    pub fn in_space(self, space: AddressSpace) -> Self {
        Self { space, ..self }
    }

    /// The same request avoiding these host networks.
    #[must_use]
    pub fn avoiding(self, host_networks: Vec<Ipv4Net>) -> Self {
        Self {
            host_networks,
            ..self
        }
    }

    /// The same request for a built-in network (the default `bridge`).
    #[must_use]
    pub fn builtin(self) -> Self {
        Self {
            user_defined: false,
            ..self
        }
    }
}

/// A network's share of IPAM: its pools, in config order. The daemon keeps
/// it with the network (it serializes) and hands it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIpam {
    name: String,
    id: String,
    user_defined: bool,
    /// Whether any config entry had a subnet, which static addresses need.
    user_subnet: bool,
    pools: Vec<PoolId>,
}

impl NetworkIpam {
    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The network's pools, in config order.
    pub fn pools(&self) -> &[PoolId] {
        &self.pools
    }

    /// Whether the user gave at least one subnet.
    pub fn has_user_subnet(&self) -> bool {
        self.user_subnet
    }
}

/// An endpoint's address on a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAddress {
    /// The pool the address came from.
    pub pool: PoolId,
    /// The address.
    pub address: Ipv4Addr,
    /// The pool's prefix length.
    pub prefix_len: u8,
    /// The pool's gateway, the endpoint's default route.
    pub gateway: Option<Ipv4Addr>,
}

impl EndpointAddress {
    /// The address with its prefix (`172.18.0.2/16`), as the IPAM protocol
    /// and `IPv4Address` in inspect write it.
    pub fn cidr(&self) -> Ipv4Net {
        // A prefix length from a pool is at most 32.
        Ipv4Net::new(self.address, self.prefix_len).unwrap_or_else(|_| Ipv4Net::from(self.address))
    }

    /// The endpoint's MAC address, derived from the address as Docker does
    /// (docker-reference §2).
    pub fn mac(&self) -> [u8; 6] {
        mac_from_ipv4(self.address)
    }
}

/// One config entry after the CLI's checks.
struct Planned<'a> {
    subnet: Option<&'a str>,
    range: Option<&'a str>,
    /// The gateway as typed, and the address when it is a plain one.
    gateway: Option<(&'a str, Option<Ipv4Addr>)>,
    /// Name, address as typed, and the address when it is a plain one.
    aux: Vec<(&'a str, &'a str, Option<Ipv4Addr>)>,
}

fn given(text: Option<&String>) -> Option<&str> {
    text.map(String::as_str).filter(|s| !s.is_empty())
}

/// The docker CLI's `createIPAMConfig` checks, in its order: every range or
/// gateway has a subnet; subnets do not overlap; then ranges, gateways and
/// auxiliary addresses each match their subnet (docker-reference §1.4).
///
/// The CLI gets flat lists and assigns each range, gateway and address to the
/// subnet containing it; the API gets entries already grouped, so each is
/// matched against its own entry's subnet.
fn plan(configs: &[NetworkIpamConfig]) -> Result<Vec<Planned<'_>>, IpamError> {
    let entries: Vec<_> = configs
        .iter()
        .map(|c| (c, given(c.subnet.as_ref())))
        .collect();
    if entries.iter().any(|(c, subnet)| {
        subnet.is_none()
            && (given(c.ip_range.as_ref()).is_some() || given(c.gateway.as_ref()).is_some())
    }) {
        return Err(IpamError::RangeOrGatewayWithoutSubnet);
    }
    let mut subnets: Vec<Option<(&str, Ipv4Net)>> = Vec::with_capacity(entries.len());
    for (_, subnet) in &entries {
        let parsed = subnet
            .map(|s| Ok::<_, IpamError>((s, parse::cidr_v4(s)?)))
            .transpose()?;
        if let Some((text, net)) = parsed
            && let Some((first, _)) = subnets
                .iter()
                .flatten()
                .find(|(_, other)| overlaps(other.trunc(), net.trunc()))
        {
            return Err(IpamError::OverlappingSubnetConfigs {
                first: (*first).to_owned(),
                second: text.to_owned(),
            });
        }
        subnets.push(parsed);
    }
    for ((config, _), subnet) in entries.iter().zip(&subnets) {
        if let (Some(range), Some((_, net))) = (given(config.ip_range.as_ref()), subnet) {
            let parsed = parse::cidr_v4(range)?;
            if !net.trunc().contains(&parsed.addr()) {
                return Err(IpamError::NoMatchingSubnetForRange {
                    range: range.to_owned(),
                });
            }
        }
    }
    let mut gateways = Vec::with_capacity(entries.len());
    for ((config, _), subnet) in entries.iter().zip(&subnets) {
        let gateway = match (given(config.gateway.as_ref()), subnet) {
            (Some(gateway), Some((_, net))) => match parse::matches_subnet(net.trunc(), gateway)? {
                Matched::Address(address) => Some((gateway, Some(address))),
                Matched::Cidr => Some((gateway, None)),
                Matched::No => {
                    return Err(IpamError::NoMatchingSubnetForGateway {
                        gateway: gateway.to_owned(),
                    });
                }
            },
            _ => None,
        };
        gateways.push(gateway);
    }
    let mut planned = Vec::with_capacity(entries.len());
    for (((config, subnet_text), subnet), gateway) in entries.iter().zip(&subnets).zip(gateways) {
        let mut aux = Vec::with_capacity(config.aux_addresses.len());
        for (name, address) in &config.aux_addresses {
            let matched = match subnet {
                Some((_, net)) => parse::matches_subnet(net.trunc(), address)?,
                None => Matched::No,
            };
            match matched {
                Matched::Address(a) => aux.push((name.as_str(), address.as_str(), Some(a))),
                Matched::Cidr => aux.push((name.as_str(), address.as_str(), None)),
                Matched::No => {
                    return Err(IpamError::NoMatchingSubnetForAuxAddress {
                        address: address.clone(),
                    });
                }
            }
        }
        planned.push(Planned {
            subnet: *subnet_text,
            range: given(config.ip_range.as_ref()),
            gateway,
            aux,
        });
    }
    Ok(planned)
}

impl Ipam {
    /// Creates a network's pools, gateways and auxiliary addresses: the one
    /// call behind `docker network create`.
    ///
    /// In order, as Docker does it: the CLI's checks of the config (see the
    /// errors below); then per entry, the pool (automatic pools honour
    /// `host_networks`), the gateway (the given one, else the first free
    /// address, from the ip-range when there is one), and the auxiliary
    /// addresses in name order (Docker's order is Go's random map order).
    /// On failure every pool this call allocated is released; the cursor
    /// stays moved, as in Docker (docker-reference §1.2).
    ///
    /// # Errors
    ///
    /// - [`IpamError::RangeOrGatewayWithoutSubnet`],
    ///   [`IpamError::OverlappingSubnetConfigs`], [`IpamError::InvalidCidr`],
    ///   [`IpamError::Ipv6NotSupported`],
    ///   [`IpamError::NoMatchingSubnetForRange`],
    ///   [`IpamError::NoMatchingSubnetForGateway`],
    ///   [`IpamError::NoMatchingSubnetForAuxAddress`] from the config checks;
    /// - [`IpamError::InvalidGatewayAddress`],
    ///   [`IpamError::InvalidAuxAddress`] for addresses given in CIDR form;
    /// - [`IpamError::PoolOverlap`], [`IpamError::NoAvailableDefaultPool`]
    ///   from the pools;
    /// - [`IpamError::GatewayAllocation`] (`failed to allocate gateway (…):
    ///   …`) and [`IpamError::AuxAddressAllocation`] wrapping the pool's
    ///   error.
    pub fn create_network(
        &mut self,
        request: &NetworkIpamRequest,
    ) -> Result<NetworkIpam, IpamError> {
        let planned = plan(&request.configs)?;
        let automatic = [Planned {
            subnet: None,
            range: None,
            gateway: None,
            aux: Vec::new(),
        }];
        let entries = if planned.is_empty() {
            &automatic[..]
        } else {
            &planned[..]
        };
        let mut pools = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Err(err) = self.create_entry(request, entry, &mut pools) {
                for &id in &pools {
                    // Every id in `pools` was allocated by this call and not
                    // yet released, so this cannot fail.
                    let _ = self.release_pool(id);
                }
                return Err(err);
            }
        }
        Ok(NetworkIpam {
            name: request.name.clone(),
            id: request.id.clone(),
            user_defined: request.user_defined,
            user_subnet: entries.iter().any(|e| e.subnet.is_some()),
            pools,
        })
    }

    /// One entry of [`Ipam::create_network`]: libnetwork's
    /// `ipamAllocateVersion` loop body. Pushes the pool id as soon as it
    /// exists so that the caller can roll it back.
    fn create_entry(
        &mut self,
        request: &NetworkIpamRequest,
        entry: &Planned<'_>,
        pools: &mut Vec<PoolId>,
    ) -> Result<(), IpamError> {
        let gateway = match entry.gateway {
            Some((typed, None)) => {
                return Err(IpamError::InvalidGatewayAddress {
                    gateway: typed.to_owned(),
                });
            }
            Some((typed, Some(address))) => Some((typed, address)),
            None => None,
        };
        let pool_request = PoolRequest {
            space: request.space,
            subnet: entry.subnet,
            ip_range: entry.range,
            host_networks: &request.host_networks,
        };
        let id = self.request_pool(&pool_request)?.id;
        pools.push(id);
        self.request_gateway(id, gateway.map(|(_, a)| a))
            .map_err(|cause| IpamError::GatewayAllocation {
                gateway: gateway
                    .map(|(typed, _)| typed.to_owned())
                    .unwrap_or_default(),
                cause: Box::new(cause),
            })?;
        for &(name, typed, address) in &entry.aux {
            let Some(address) = address else {
                return Err(IpamError::InvalidAuxAddress {
                    name: name.to_owned(),
                    address: typed.to_owned(),
                    network: request.name.clone(),
                });
            };
            self.reserve_aux(id, name, address).map_err(|cause| {
                IpamError::AuxAddressAllocation {
                    name: name.to_owned(),
                    address: typed.to_owned(),
                    cause: Box::new(cause),
                }
            })?;
        }
        Ok(())
    }

    /// Releases a network's pools, with every address in them. Pools already
    /// gone are skipped, so calling it twice is harmless.
    pub fn delete_network(&mut self, network: &NetworkIpam) {
        for &id in &network.pools {
            // A pool already released is exactly the state we want.
            let _ = self.release_pool(id);
        }
    }

    /// Gives an endpoint its address on a network: `requested` (`--ip`,
    /// untrusted text; empty means none) or the lowest free address of the
    /// first pool that has one.
    ///
    /// The checks come in Docker's order: the network must be user-defined
    /// and have a user subnet for a static address (moby
    /// `validateNetworkingConfig`), the text must parse (moby
    /// `buildCreateEndpointOptions`), and the address must fall in one of the
    /// network's pools (libnetwork `assignAddressVersion`). A static address
    /// may be outside the ip-range (docker-reference §1.4).
    ///
    /// # Errors
    ///
    /// [`IpamError::StaticIpOnBuiltinNetwork`],
    /// [`IpamError::StaticIpWithoutUserSubnet`],
    /// [`IpamError::InvalidIpv4Address`], [`IpamError::NotInNetworkSubnets`],
    /// [`IpamError::AddressInUse`], [`IpamError::NetworkExhausted`],
    /// [`IpamError::UnknownPool`] for a stale [`NetworkIpam`].
    pub fn allocate_endpoint_address(
        &mut self,
        network: &NetworkIpam,
        requested: Option<&str>,
    ) -> Result<EndpointAddress, IpamError> {
        match requested.filter(|s| !s.is_empty()) {
            Some(text) => {
                if !network.user_defined {
                    return Err(IpamError::StaticIpOnBuiltinNetwork);
                }
                if !network.user_subnet {
                    return Err(IpamError::StaticIpWithoutUserSubnet);
                }
                let address = parse::ip(text).ok_or_else(|| IpamError::InvalidIpv4Address {
                    value: text.to_owned(),
                })?;
                let IpAddr::V4(v4) = address else {
                    return Err(IpamError::NotInNetworkSubnets { address });
                };
                let id = self
                    .network_pool_containing(network, v4)?
                    .ok_or(IpamError::NotInNetworkSubnets { address })?;
                self.request_address(id, Some(v4))?;
                self.endpoint_address(id, v4)
            }
            None => {
                for &id in &network.pools {
                    match self.request_address(id, None) {
                        Ok(address) => return self.endpoint_address(id, address),
                        Err(IpamError::NoAvailableAddresses { .. }) => {}
                        Err(other) => return Err(other),
                    }
                }
                Err(IpamError::NetworkExhausted {
                    ip_version: 4,
                    network: network.name.clone(),
                    network_id: network.id.clone(),
                })
            }
        }
    }

    /// Gives an endpoint `address`, chosen by an allocator above this one
    /// (a cluster-wide one, for networks shared by many hosts): the
    /// address is dynamic, as one picked here is, so none of the checks
    /// that guard a user's `--ip` apply; it must fall in one of the
    /// network's pools and be free.
    ///
    /// # Errors
    ///
    /// [`IpamError::NotInNetworkSubnets`], [`IpamError::AddressInUse`],
    /// [`IpamError::UnknownPool`] for a stale [`NetworkIpam`].
    pub fn assign_endpoint_address(
        &mut self,
        network: &NetworkIpam,
        address: Ipv4Addr,
    ) -> Result<EndpointAddress, IpamError> {
        let id = self.network_pool_containing(network, address)?.ok_or(
            IpamError::NotInNetworkSubnets {
                address: IpAddr::V4(address),
            },
        )?;
        self.request_address(id, Some(address))?;
        self.endpoint_address(id, address)
    }

    /// The first pool of `network` containing `address`.
    fn network_pool_containing(
        &self,
        network: &NetworkIpam,
        address: Ipv4Addr,
    ) -> Result<Option<PoolId>, IpamError> {
        for &id in &network.pools {
            let pool = self.pool(id).ok_or(IpamError::UnknownPool { id })?;
            if pool.contains(address) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn endpoint_address(
        &self,
        id: PoolId,
        address: Ipv4Addr,
    ) -> Result<EndpointAddress, IpamError> {
        let pool = self.pool(id).ok_or(IpamError::UnknownPool { id })?;
        Ok(EndpointAddress {
            pool: id,
            address,
            prefix_len: pool.subnet().prefix_len(),
            gateway: pool.gateway(),
        })
    }

    /// Frees an endpoint's address; the next endpoint can get it at once.
    /// The network's gateway and reserved addresses are left alone, so a
    /// wrong release through this call cannot free them.
    ///
    /// # Errors
    ///
    /// [`IpamError::NotInNetworkSubnets`] when no pool of the network
    /// contains the address; [`IpamError::UnknownPool`] for a stale
    /// [`NetworkIpam`].
    pub fn release_endpoint_address(
        &mut self,
        network: &NetworkIpam,
        address: Ipv4Addr,
    ) -> Result<(), IpamError> {
        let id = self.network_pool_containing(network, address)?.ok_or(
            IpamError::NotInNetworkSubnets {
                address: IpAddr::V4(address),
            },
        )?;
        if self.pool(id).and_then(|p| p.gateway()) == Some(address) {
            return Ok(());
        }
        self.release_address(id, address)
    }

    /// The network's `IPAM.Config` as `docker network inspect` shows it
    /// (docker-reference §1.5).
    pub fn network_ipam_config(&self, network: &NetworkIpam) -> Vec<NetworkIpamConfig> {
        network
            .pools
            .iter()
            .filter_map(|&id| self.pool(id))
            .map(|pool| pool.ipam_config())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_uses_dockers_field_names() {
        let config = NetworkIpamConfig::subnet("10.77.0.0/24")
            .with_range("10.77.0.128/25")
            .with_gateway("10.77.0.1")
            .with_aux("a", "10.77.0.129");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            json,
            r#"{"Subnet":"10.77.0.0/24","IPRange":"10.77.0.128/25","Gateway":"10.77.0.1","AuxiliaryAddresses":{"a":"10.77.0.129"}}"#
        );
        let back: NetworkIpamConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let sparse: NetworkIpamConfig =
            serde_json::from_str(r#"{"Subnet":"10.0.0.0/8","AuxiliaryAddresses":null}"#).unwrap();
        assert_eq!(sparse, NetworkIpamConfig::subnet("10.0.0.0/8"));
        assert_eq!(
            serde_json::to_string(&NetworkIpamConfig::subnet("10.78.0.0/30")).unwrap(),
            r#"{"Subnet":"10.78.0.0/30"}"#
        );
    }

    #[test]
    fn empty_strings_mean_not_given() {
        let configs = [NetworkIpamConfig {
            subnet: Some(String::new()),
            ip_range: Some(String::new()),
            gateway: Some(String::new()),
            aux_addresses: BTreeMap::new(),
        }];
        let planned = plan(&configs).unwrap();
        assert!(planned[0].subnet.is_none() && planned[0].gateway.is_none());
    }

    #[test]
    fn endpoint_cidr_and_mac() {
        let ep = EndpointAddress {
            pool: PoolId::from_raw(1),
            address: Ipv4Addr::new(172, 17, 0, 2),
            prefix_len: 16,
            gateway: None,
        };
        assert_eq!(ep.cidr().to_string(), "172.17.0.2/16");
        assert_eq!(ep.mac(), [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
    }
}
