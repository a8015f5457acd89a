//! `IpamDriver.*`: Docker's IPAM protocol over the plugin's own
//! [`ipam::Ipam`], which has Docker's default pools, order and rules.
//!
//! The switch's own networks (made with `vsctl`, and the built-in
//! `bridge`) hold subnets this allocator does not: an automatic pool
//! avoids them as it avoids the host's on-link routes, and an explicit
//! subnet overlapping one is refused with Docker's overlap text.

use core::net::Ipv4Addr;

use ipam::{AddressSpace, IpamError, PoolId, PoolRequest};
use ipnet::Ipv4Net;

use super::{Plugin, parse_cidr, wire};
use crate::control::{Request, Response};

/// The subnets of every switch network.
fn switch_subnets(p: &Plugin) -> Result<Vec<Ipv4Net>, String> {
    let networks = match p.backend.apply(Request::ListNetworks) {
        Ok(Response::Networks(n)) => n,
        Ok(_) => return Err("vswitch: unexpected answer listing networks".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    Ok(networks
        .iter()
        .flat_map(|n| n.ipam.config.iter())
        .filter_map(|c| c.subnet.as_deref())
        .filter_map(|s| s.parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .collect())
}

fn space(name: &str) -> Result<AddressSpace, String> {
    match name {
        "LocalDefault" => Ok(AddressSpace::Local),
        "GlobalDefault" => Ok(AddressSpace::Global),
        "" => Err(IpamError::InvalidAddressSpace.to_string()),
        other => Err(IpamError::UnknownAddressSpace {
            name: other.to_owned(),
        }
        .to_string()),
    }
}

fn pool_id(text: &str) -> Result<PoolId, String> {
    text.parse().map_err(|e: IpamError| e.to_string())
}

/// An address as Docker sends it: plain, or (leniently) in CIDR form.
fn address(text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .ok()
        .or_else(|| parse_cidr(text).map(|(a, _)| a))
        .ok_or_else(|| {
            if text.contains(':') {
                IpamError::Ipv6NotSupported {
                    value: text.to_owned(),
                }
                .to_string()
            } else {
                format!("Invalid IPv4 address: {text})")
            }
        })
}

pub(super) fn request_pool(
    p: &Plugin,
    r: wire::RequestPool,
) -> Result<wire::RequestPoolReply, String> {
    if r.v6 {
        return Err(if r.pool.is_empty() {
            IpamError::NoAvailableDefaultPool { ip_version: 6 }.to_string()
        } else {
            IpamError::Ipv6NotSupported { value: r.pool }.to_string()
        });
    }
    let space = space(&r.address_space)?;
    let switch = switch_subnets(p)?;
    p.change(|p, st| {
        // The switch's networks not backed by this allocator's pools.
        let foreign: Vec<Ipv4Net> = switch
            .iter()
            .copied()
            .filter(|s| !st.ipam.pools().any(|pool| pool.subnet() == *s))
            .collect();
        if let Ok(net) = r.pool.parse::<Ipv4Net>() {
            let net = net.trunc();
            if foreign
                .iter()
                .any(|f| f.contains(&net.network()) || net.contains(&f.network()))
            {
                return Err(IpamError::PoolOverlap { subnet: net }.to_string());
            }
        }
        let mut avoid = (p.host_networks)();
        avoid.extend(foreign);
        let request = PoolRequest {
            space,
            subnet: Some(&r.pool),
            ip_range: Some(&r.sub_pool),
            host_networks: &avoid,
        };
        let grant = st.ipam.request_pool(&request).map_err(|e| e.to_string())?;
        Ok(wire::RequestPoolReply {
            pool_id: grant.id.to_string(),
            pool: grant.subnet.to_string(),
            data: std::collections::BTreeMap::new(),
        })
    })
}

pub(super) fn release_pool(p: &Plugin, r: wire::ReleasePool) -> Result<super::Empty, String> {
    let id = pool_id(&r.pool_id)?;
    p.change(|_, st| {
        st.ipam.release_pool(id).map_err(|e| e.to_string())?;
        st.requested.retain(|(pool, _)| *pool != id);
        Ok(super::Empty {})
    })
}

pub(super) fn request_address(
    p: &Plugin,
    r: wire::RequestAddress,
) -> Result<wire::RequestAddressReply, String> {
    let id = pool_id(&r.pool_id)?;
    let preferred = if r.address.is_empty() {
        None
    } else {
        Some(address(&r.address)?)
    };
    let gateway = r
        .options
        .get(wire::REQUEST_ADDRESS_TYPE)
        .is_some_and(|t| t == wire::GATEWAY_REQUEST);
    p.change(|_, st| {
        let ip = if gateway {
            st.ipam.request_gateway(id, preferred)
        } else {
            st.ipam.request_address(id, preferred)
        }
        .map_err(|e| e.to_string())?;
        let len = st
            .ipam
            .pool(id)
            .map(|pool| pool.subnet().prefix_len())
            .ok_or_else(|| IpamError::UnknownPool { id }.to_string())?;
        if preferred.is_some() && !gateway {
            st.requested.insert((id, ip));
        }
        Ok(wire::RequestAddressReply {
            address: format!("{ip}/{len}"),
            data: std::collections::BTreeMap::new(),
        })
    })
}

pub(super) fn release_address(p: &Plugin, r: wire::ReleaseAddress) -> Result<super::Empty, String> {
    let id = pool_id(&r.pool_id)?;
    let ip = address(&r.address)?;
    p.change(|_, st| {
        st.ipam.release_address(id, ip).map_err(|e| e.to_string())?;
        st.requested.remove(&(id, ip));
        Ok(super::Empty {})
    })
}
