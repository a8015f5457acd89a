//! What the API shows of the model: `network inspect`, sandbox views,
//! `show-fdb`, `show-ports` and `dns show`, built from a controller (the
//! daemon passes the last published snapshot, so a view never waits for a
//! change in progress).

use super::controller::{Controller, network_index};
use super::error::ControlError;
use super::model::{Endpoint, Model, Network, PredefinedNetwork, Sandbox};
use super::types::{
    ConfigFrom, ConntrackTuple, ConntrackView, DnsEndpointView, DnsNameView, DnsNetworkView,
    DnsPtrView, EndpointIpamConfig, EndpointResource, EndpointView, FdbView, IpamView,
    NetworkInspect, PortView, SandboxView,
};
use crate::ids::{NetworkId, PortId};
use crate::switch::{FdbRow, PortStats};

impl Controller {
    /// A network's view, as `network inspect` shows it.
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`], [`ControlError::AmbiguousNetwork`].
    pub fn inspect_network(&self, name: &str) -> Result<NetworkInspect, ControlError> {
        let m = &self.model();
        Ok(network_view(m, &m.networks[network_index(m, name)?]))
    }

    /// The embedded DNS's records (`records`, as the daemon last built them
    /// from this model) per user-defined network, sorted by network name;
    /// with `network`, only that one (none for the default `bridge`, which
    /// has no records).
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`], [`ControlError::AmbiguousNetwork`]
    /// for a `network` that is not in the model.
    pub fn dns_views(
        &self,
        records: &dns::Records,
        network: Option<&str>,
    ) -> Result<Vec<DnsNetworkView>, ControlError> {
        let m = &self.model();
        let views = match network {
            Some(name) => {
                let num = m.networks[network_index(m, name)?].num;
                records
                    .view_network(dns::NetworkId(num.0))
                    .into_iter()
                    .collect()
            }
            None => records.view(),
        };
        Ok(views
            .iter()
            .map(|v| {
                let id = m
                    .network(NetworkId(v.id.0))
                    .map(|n| n.id.clone())
                    .unwrap_or_default();
                dns_network_view(v, id)
            })
            .collect())
    }

    /// FDB rows (from the datapath's snapshot) with port and network named,
    /// optionally only those of one network.
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`] for an unknown `network`.
    pub fn fdb_views(
        &self,
        rows: &[FdbRow],
        network: Option<&str>,
    ) -> Result<Vec<FdbView>, ControlError> {
        let m = &self.model();
        let only = match network {
            Some(name) => Some(m.networks[network_index(m, name)?].num),
            None => None,
        };
        Ok(rows
            .iter()
            .filter(|r| only.is_none_or(|n| n == r.network))
            .map(|r| FdbView {
                port: r.port.0,
                sandbox: m
                    .endpoints
                    .iter()
                    .find(|e| e.port == r.port)
                    .and_then(|e| m.sandbox(&e.sandbox))
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                network: m
                    .network(r.network)
                    .map_or_else(|| r.network.to_string(), |n| n.name.clone()),
                mac_address: r.mac.to_string(),
                age: r.age.map(|d| d.as_secs()),
                vtep: None,
            })
            .collect())
    }

    /// The host connector's flows, with each flow's sandbox found by its
    /// endpoint's address, optionally only those of one network and one
    /// sandbox (name, id or id prefix).
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`], [`ControlError::SandboxNotFound`].
    pub fn conntrack_views(
        &self,
        flows: &[nat::conntrack::FlowInfo],
        network: Option<&str>,
        sandbox: Option<&str>,
    ) -> Result<Vec<ConntrackView>, ControlError> {
        let m = &self.model();
        let only_net = match network {
            Some(name) => Some(m.networks[network_index(m, name)?].num),
            None => None,
        };
        let only_sb = match sandbox {
            Some(name) => Some(
                m.sandboxes[super::controller::sandbox_index(m, name)?]
                    .id
                    .clone(),
            ),
            None => None,
        };
        let net_name = |n: nat::flow::NetworkId| -> String {
            if n == crate::connector::HOST_NETWORK {
                return "host".to_owned();
            }
            m.network(NetworkId(n.0))
                .map_or_else(|| n.to_string(), |x| x.name.clone())
        };
        let endpoint_of = |k: &nat::flow::FlowKey| -> Option<&Endpoint> {
            if k.network == crate::connector::HOST_NETWORK {
                return None;
            }
            m.endpoints.iter().find(|e| {
                e.network.0 == k.network.0
                    && (k.src == std::net::IpAddr::V4(e.ipv4)
                        || k.dst == std::net::IpAddr::V4(e.ipv4))
            })
        };
        let tuple = |k: &nat::flow::FlowKey| ConntrackTuple {
            network: net_name(k.network),
            src: k.src.to_string(),
            dst: k.dst.to_string(),
            sport: k.src_port,
            dport: k.dst_port,
        };
        Ok(flows
            .iter()
            .filter_map(|f| {
                let ep = endpoint_of(&f.original).or_else(|| endpoint_of(&f.reply));
                if let Some(n) = only_net
                    && ep.is_none_or(|e| e.network != n)
                {
                    return None;
                }
                if let Some(id) = &only_sb
                    && ep.is_none_or(|e| &e.sandbox != id)
                {
                    return None;
                }
                let sandbox = ep
                    .and_then(|e| m.sandbox(&e.sandbox))
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                Some(ConntrackView {
                    protocol: f.original.proto.to_string(),
                    sandbox,
                    original: tuple(&f.original),
                    reply: tuple(&f.reply),
                    state: f.state.to_string(),
                    age: f.age.as_secs(),
                    expires_in: f.expires_in.as_secs(),
                    packets: f.packets,
                    bytes: f.bytes,
                    assured: f.assured,
                })
            })
            .collect())
    }

    /// Every endpoint's port with its counters, by port id.
    pub fn port_views(&self, stats: impl Fn(PortId) -> PortStats) -> Vec<PortView> {
        let m = &self.model();
        let mut eps: Vec<&Endpoint> = m.endpoints.iter().collect();
        eps.sort_by_key(|e| e.port);
        eps.into_iter()
            .map(|e| {
                let s = stats(e.port);
                PortView {
                    port: e.port.0,
                    sandbox: m
                        .sandbox(&e.sandbox)
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    network: m
                        .network(e.network)
                        .map(|n| n.name.clone())
                        .unwrap_or_default(),
                    interface: e.ifname.clone(),
                    host_interface: e.host_ifname.clone(),
                    port_kind: e.kind.to_string(),
                    mac_address: e.mac.to_string(),
                    ipv4_address: format!("{}/{}", e.ipv4, e.prefix_len),
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    tx_dropped: s.tx_dropped,
                    kernel_dropped: s.kernel_dropped,
                    drops: s
                        .drops
                        .nonzero()
                        .map(|(r, n)| (r.as_str().to_owned(), n))
                        .collect(),
                }
            })
            .collect()
    }
}

/// The API's form of one network's records.
fn dns_network_view(v: &dns::NetworkView, id: String) -> DnsNetworkView {
    let kinds = |name: &str| {
        let mut kinds: Vec<String> = Vec::new();
        for ep in &v.endpoints {
            let matches = |n: &str| n.eq_ignore_ascii_case(name);
            let of_ep = [
                ("name", matches(&ep.name)),
                ("alias", ep.aliases.iter().any(|a| matches(a))),
                ("short-id", matches(&ep.short_id)),
                ("hostname", ep.hostname.as_deref().is_some_and(matches)),
            ];
            for (kind, yes) in of_ep {
                if yes && !kinds.iter().any(|k| k == kind) {
                    kinds.push(kind.to_owned());
                }
            }
        }
        kinds
    };
    DnsNetworkView {
        network: v.network.name.clone(),
        id,
        internal: v.network.internal,
        endpoints: v
            .endpoints
            .iter()
            .map(|ep| DnsEndpointView {
                name: ep.name.clone(),
                aliases: ep.aliases.clone(),
                short_id: ep.short_id.clone(),
                hostname: ep.hostname.clone(),
                ipv4_address: ep.ipv4.to_string(),
                ipv6_address: ep.ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
            })
            .collect(),
        names: v
            .names
            .iter()
            .map(|n| DnsNameView {
                name: n.name.clone(),
                kinds: kinds(&n.name),
                addresses: n.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        ptr: v
            .reverse
            .iter()
            .map(|(ip, name)| DnsPtrView {
                address: ip.to_string(),
                name: name.clone(),
            })
            .collect(),
    }
}

pub(super) fn network_view(m: &Model, n: &Network) -> NetworkInspect {
    NetworkInspect {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        // Docker shows `global` for overlays kept in a cluster store.
        scope: if n.vni.is_some() { "global" } else { "local" }.to_owned(),
        driver: n.driver.clone(),
        enable_ipv6: false,
        ipam: IpamView {
            driver: "default".to_owned(),
            options: n.ipam_options.clone(),
            config: m.ipam.network_ipam_config(&n.ipam),
        },
        internal: n.internal,
        attachable: n.attachable,
        ingress: false,
        config_from: ConfigFrom::default(),
        config_only: false,
        containers: m
            .network_endpoints(n.num)
            .filter_map(|e| {
                let sb = m.sandbox(&e.sandbox)?;
                Some((
                    sb.id.clone(),
                    EndpointResource {
                        name: sb.name.clone(),
                        endpoint_id: e.id.clone(),
                        mac_address: e.mac.to_string(),
                        ipv4_address: format!("{}/{}", e.ipv4, e.prefix_len),
                        ipv6_address: String::new(),
                    },
                ))
            })
            .collect(),
        options: n.options.clone(),
        labels: n.labels.clone(),
        peers: None,
    }
}

/// `docker network inspect host|none`: no IPAM configuration, and each
/// sandbox on it with an endpoint id and no address.
pub(super) fn predefined_view(m: &Model, p: &PredefinedNetwork) -> NetworkInspect {
    NetworkInspect {
        name: p.name.clone(),
        id: p.id.clone(),
        created: p.created.clone(),
        scope: "local".to_owned(),
        driver: p.driver.clone(),
        enable_ipv6: false,
        ipam: IpamView {
            driver: "default".to_owned(),
            options: None,
            config: Vec::new(),
        },
        internal: false,
        attachable: false,
        ingress: false,
        config_from: ConfigFrom::default(),
        config_only: false,
        containers: m
            .sandboxes
            .iter()
            .filter_map(|sb| {
                let mode = sb.network_mode.as_ref().filter(|n| n.network == p.name)?;
                Some((
                    sb.id.clone(),
                    EndpointResource {
                        name: sb.name.clone(),
                        endpoint_id: mode.endpoint.clone(),
                        mac_address: String::new(),
                        ipv4_address: String::new(),
                        ipv6_address: String::new(),
                    },
                ))
            })
            .collect(),
        options: std::collections::BTreeMap::new(),
        labels: std::collections::BTreeMap::new(),
        peers: None,
    }
}

pub(super) fn endpoint_view(net: &Network, e: &Endpoint) -> EndpointView {
    EndpointView {
        network: net.name.clone(),
        network_id: net.id.clone(),
        endpoint_id: e.id.clone(),
        interface: e.ifname.clone(),
        host_interface: e.host_ifname.clone(),
        port_kind: e.kind,
        port: e.port.0,
        mac_address: e.mac.to_string(),
        ipv4_address: format!("{}/{}", e.ipv4, e.prefix_len),
        gateway: net.gateway.to_string(),
        default_route: e.default_route,
        aliases: e.aliases.clone(),
        ipam_config: e
            .requested_ip
            .clone()
            .map(|ipv4_address| EndpointIpamConfig { ipv4_address }),
    }
}

pub(super) fn sandbox_view(m: &Model, s: &Sandbox) -> SandboxView {
    let (host_config, config, network_settings) =
        super::ports::views(s, m.sandbox_endpoints(&s.id));
    SandboxView {
        host_config,
        config,
        network_settings,
        name: s.name.clone(),
        id: s.id.clone(),
        created: s.created.clone(),
        netns_path: s.netns_path.clone(),
        netns_owned: s.netns_owned,
        netns_gone: false,
        endpoints: m
            .sandbox_endpoints(&s.id)
            .filter_map(|e| Some(endpoint_view(m.network(e.network)?, e)))
            .collect(),
    }
}
