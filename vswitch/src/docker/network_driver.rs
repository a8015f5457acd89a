//! `NetworkDriver.*`: Docker's networks, endpoints and joins as the
//! switch's networks, adopted sandboxes and handed-off ports.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::state::{EndpointRecord, Joined, NetworkRecord, State};
use super::{Empty, Plugin, PublishTarget, parse_cidr, wire};
use crate::control::model::{
    OPT_ENABLE_ICC, OPT_ENABLE_IP_MASQUERADE, OPT_HOST_BINDING_IPV4, OPT_MTU,
};
use crate::control::types::{
    ConnectRequest, DisconnectRequest, EndpointIpamConfig, EndpointSettings, IpamConfigEntry,
    IpamRequest, NetworkCreateRequest, SandboxCreateRequest,
};
use crate::control::{ControlError, PortKind, Request, Response};
use crate::ids::MacAddr;

/// The label a switch network made for Docker carries: Docker's network id.
pub const NETWORK_ID_LABEL: &str = "com.docker.network.id";

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The `-o` options (`com.docker.network.generic`) as the switch's network
/// options, and whether the network is internal (`--internal`, or
/// `-o internal=true`). Short names (`mtu`, `enable_icc`,
/// `enable_ip_masquerade`, `host_binding_ipv4`) and the bridge driver's
/// full names are both understood; other options are ignored, as the
/// bridge driver ignores options it does not know.
fn network_options(
    options: &Map<String, Value>,
) -> Result<(bool, BTreeMap<String, String>), String> {
    let mut internal = match options.get(wire::INTERNAL) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => go_bool(s).unwrap_or(false),
        Some(_) => false,
    };
    let mut out = BTreeMap::new();
    let generic = match options.get(wire::GENERIC_DATA) {
        None | Some(Value::Null) => return Ok((internal, out)),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(format!("vswitch: {} must be an object", wire::GENERIC_DATA));
        }
    };
    for (key, value) in generic {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("vswitch: invalid value for option {key}")),
        };
        let full = match key.as_str() {
            "mtu" | OPT_MTU => OPT_MTU,
            "enable_icc" | OPT_ENABLE_ICC => OPT_ENABLE_ICC,
            "enable_ip_masquerade" | OPT_ENABLE_IP_MASQUERADE => OPT_ENABLE_IP_MASQUERADE,
            "host_binding_ipv4" | OPT_HOST_BINDING_IPV4 => OPT_HOST_BINDING_IPV4,
            "internal" => {
                internal = go_bool(&text).ok_or_else(|| {
                    format!("vswitch: invalid value {text:?} for option internal")
                })?;
                continue;
            }
            _ => continue,
        };
        out.insert(full.to_owned(), text);
    }
    Ok((internal, out))
}

fn control_err(e: &ControlError) -> String {
    e.to_string()
}

fn unexpected(what: &str) -> String {
    format!("vswitch: unexpected answer to {what}")
}

fn valid_id(id: &str) -> bool {
    id.len() >= 12 && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(super) fn create_network(p: &Plugin, r: wire::CreateNetwork) -> Result<Empty, String> {
    let nid = r.network_id;
    if !valid_id(&nid) {
        return Err(format!("vswitch: invalid network id {nid:?}"));
    }
    let ipv6 = matches!(r.options.get(wire::ENABLE_IPV6), Some(Value::Bool(true)));
    if ipv6 || !r.ipv6_data.is_empty() {
        return Err("vswitch driver does not support IPv6".to_owned());
    }
    let data = match r.ipv4_data.as_slice() {
        [one] => one.clone(),
        [] => return Err("vswitch driver needs an IPv4 pool".to_owned()),
        _ => return Err("vswitch driver doesn't support multiple subnets".to_owned()),
    };
    let pool: ipnet::Ipv4Net = data
        .pool
        .parse()
        .map_err(|_| format!("invalid CIDR address: {}", data.pool))?;
    let (gateway, _) = parse_cidr(&data.gateway)
        .ok_or_else(|| format!("unable to parse Gateway {:?}", data.gateway))?;
    let mut aux = BTreeMap::new();
    for (name, cidr) in &data.aux_addresses {
        let (ip, _) = parse_cidr(cidr)
            .ok_or_else(|| format!("vswitch: invalid auxiliary address {name}={cidr}"))?;
        aux.insert(name.clone(), ip.to_string());
    }
    let (internal, options) = network_options(&r.options)?;
    p.change(|p, st| {
        if st.networks.contains_key(&nid) {
            return Ok(Empty {});
        }
        // Docker's pool from this plugin's IPAM: the subnet as the user
        // typed it and the ip-range, which IPv4Data does not carry.
        let ours = st.ipam.pools().find(|x| x.subnet() == pool.trunc());
        let config = IpamConfigEntry {
            subnet: Some(ours.map_or_else(|| data.pool.clone(), ipam::Pool::subnet_as_typed)),
            ip_range: ours
                .and_then(|x| x.ip_range())
                .map(|r| r.as_typed().to_owned()),
            gateway: Some(gateway.to_string()),
            aux_addresses: aux,
        };
        let request = NetworkCreateRequest {
            name: format!("docker-{}", nid.get(..12).unwrap_or(&nid)),
            ipam: Some(IpamRequest {
                config: vec![config],
                ..IpamRequest::default()
            }),
            internal,
            options,
            labels: BTreeMap::from([(NETWORK_ID_LABEL.to_owned(), nid.clone())]),
            ..NetworkCreateRequest::default()
        };
        let id = match p.backend.apply(Request::CreateNetwork(request)) {
            Ok(Response::NetworkCreated(c)) => c.id,
            Ok(_) => return Err(unexpected("network create")),
            Err(e) => return Err(control_err(&e)),
        };
        st.networks.insert(
            nid.clone(),
            NetworkRecord {
                vswitch: id,
                // Docker's bridge routes an internal network's containers
                // through the gateway too; the gateway just leads nowhere.
                gateway: Some(gateway),
            },
        );
        Ok(Empty {})
    })
}

pub(super) fn delete_network(p: &Plugin, r: wire::NetworkRef) -> Result<Empty, String> {
    let nid = r.network_id;
    p.change(|p, st| {
        let Some(rec) = st.networks.get(&nid).cloned() else {
            return Ok(Empty {});
        };
        let joined: Vec<String> = st
            .endpoints
            .iter()
            .filter(|(_, e)| e.network == nid && e.joined.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for eid in joined {
            unjoin(p, st, &eid)?;
        }
        match p
            .backend
            .apply(Request::RemoveNetwork { name: rec.vswitch })
        {
            Ok(_) | Err(ControlError::NetworkNotFound(_)) => {}
            Err(e) => return Err(control_err(&e)),
        }
        st.networks.remove(&nid);
        st.endpoints.retain(|_, e| e.network != nid);
        Ok(Empty {})
    })
}

pub(super) fn create_endpoint(
    p: &Plugin,
    r: wire::CreateEndpoint,
) -> Result<wire::CreateEndpointReply, String> {
    let (nid, eid) = (r.network_id, r.endpoint_id);
    if !valid_id(&eid) {
        return Err(format!("vswitch: invalid endpoint id {eid:?}"));
    }
    if !r.interface.address_ipv6.is_empty() {
        return Err("vswitch driver does not support IPv6".to_owned());
    }
    let (address, prefix_len) = parse_cidr(&r.interface.address).ok_or_else(|| {
        format!(
            "vswitch: the endpoint needs an IPv4 address in CIDR form, got {:?}",
            r.interface.address
        )
    })?;
    let mac = MacAddr(ipam::mac_from_ipv4(address));
    let fill = if r.interface.mac_address.is_empty() {
        Some(wire::EndpointInterface {
            mac_address: mac.to_string(),
            ..wire::EndpointInterface::default()
        })
    } else {
        let given: MacAddr =
            r.interface.mac_address.parse().map_err(|_| {
                format!("vswitch: invalid MAC address {:?}", r.interface.mac_address)
            })?;
        if given != mac {
            return Err(format!(
                "vswitch: a container's MAC address is 02:42 and its IPv4 address ({mac}); {given} cannot be used"
            ));
        }
        None
    };
    p.change(|_, st| {
        if !st.networks.contains_key(&nid) {
            return Err(format!("network {nid} not found"));
        }
        if st.endpoints.contains_key(&eid) {
            return Err(format!("endpoint {eid} already exists"));
        }
        // Asked for by value from this plugin's IPAM, in the pool of the
        // endpoint's subnet. With another IPAM driver the plugin cannot
        // tell, and the address counts as picked.
        let requested = st
            .ipam
            .pools()
            .filter(|pool| pool.contains(address) && pool.subnet().prefix_len() == prefix_len)
            .any(|pool| st.requested.contains(&(pool.id(), address)));
        st.endpoints.insert(
            eid.clone(),
            EndpointRecord {
                network: nid.clone(),
                address,
                prefix_len,
                joined: None,
                exposed_ports: r
                    .options
                    .get(wire::EXPOSED_PORTS)
                    .cloned()
                    .unwrap_or_default(),
                port_map: r.options.get(wire::PORT_MAP).cloned().unwrap_or_default(),
                published: false,
                requested,
            },
        );
        Ok(wire::CreateEndpointReply { interface: fill })
    })
}

pub(super) fn delete_endpoint(p: &Plugin, r: wire::EndpointRef) -> Result<Empty, String> {
    let eid = r.endpoint_id;
    p.change(|p, st| {
        if st.endpoints.get(&eid).is_some_and(|e| e.joined.is_some()) {
            unjoin(p, st, &eid)?;
        }
        st.endpoints.remove(&eid);
        Ok(Empty {})
    })
}

pub(super) fn oper_info(p: &Plugin, r: wire::EndpointRef) -> Result<wire::OperInfo, String> {
    let st = p.state.lock();
    let e = st
        .endpoints
        .get(&r.endpoint_id)
        .ok_or_else(|| format!("endpoint {} not found", r.endpoint_id))?;
    let mut value = Map::new();
    if !e.exposed_ports.is_null() {
        value.insert(wire::EXPOSED_PORTS.to_owned(), e.exposed_ports.clone());
    }
    if !e.port_map.is_null() {
        value.insert(wire::PORT_MAP.to_owned(), e.port_map.clone());
    }
    Ok(wire::OperInfo { value })
}

/// The sandbox's name: the file name of Docker's sandbox key (12 hex of
/// the sandbox id), or `docker-<12 hex of the endpoint id>` when that is
/// not a usable name or is taken.
fn sandbox_name(key: &str) -> Option<String> {
    let base = std::path::Path::new(key).file_name()?.to_str()?;
    let ok = base.len() >= 2
        && base.len() <= 64
        && base
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then(|| base.to_owned())
}

fn adopt_sandbox(p: &Plugin, key: &str, eid: &str) -> Result<String, String> {
    let fallback = format!("docker-{}", eid.get(..12).unwrap_or(eid));
    let names = sandbox_name(key).into_iter().chain([fallback]);
    let mut last = String::new();
    for name in names {
        let request = Request::CreateSandbox(SandboxCreateRequest {
            name,
            netns_path: Some(key.to_owned()),
            external: true,
            ..Default::default()
        });
        match p.backend.apply(request) {
            Ok(Response::Sandbox(v)) => return Ok(v.id),
            Ok(_) => return Err(unexpected("sandbox create")),
            Err(e @ ControlError::SandboxNameInUse { .. }) => last = control_err(&e),
            // A record of this very sandbox key left by an interrupted
            // join: it is Docker's sandbox, so it is this one.
            Err(ControlError::NetnsInUse { sandbox, .. }) => {
                return match p.backend.apply(Request::InspectSandbox { name: sandbox }) {
                    Ok(Response::Sandbox(v)) => Ok(v.id),
                    Ok(_) => Err(unexpected("sandbox inspect")),
                    Err(e) => Err(control_err(&e)),
                };
            }
            Err(e) => return Err(control_err(&e)),
        }
    }
    Err(last)
}

pub(super) fn join(p: &Plugin, r: wire::Join) -> Result<wire::JoinReply, String> {
    let (nid, eid, key) = (r.network_id, r.endpoint_id, r.sandbox_key);
    if !key.starts_with('/') {
        return Err(format!("vswitch: invalid sandbox key {key:?}"));
    }
    let reply = join_once(p, &nid, &eid, &key)?;
    p.learn_name(&nid, &eid);
    Ok(reply)
}

fn join_once(p: &Plugin, nid: &str, eid: &str, key: &str) -> Result<wire::JoinReply, String> {
    let (nid, eid, key) = (nid.to_owned(), eid.to_owned(), key.to_owned());
    p.change(|p, st| {
        let ep = st
            .endpoints
            .get(&eid)
            .cloned()
            .ok_or_else(|| format!("endpoint {eid} not found"))?;
        if ep.network != nid {
            return Err(format!("endpoint {eid} is not on network {nid}"));
        }
        if ep.joined.is_some() {
            return Err(format!("vswitch: endpoint {eid} is already joined"));
        }
        let net = st
            .networks
            .get(&nid)
            .cloned()
            .ok_or_else(|| format!("network {nid} not found"))?;
        let (sandbox, created) = match st.sandbox_of(&key) {
            Some(s) => (s.to_owned(), false),
            None => (adopt_sandbox(p, &key, &eid)?, true),
        };
        let connect = Request::Connect {
            network: net.vswitch.clone(),
            request: ConnectRequest {
                container: sandbox.clone(),
                // Docker's address either way; static (`IPAMConfig`) only
                // when the user asked for it.
                endpoint_config: ep.requested.then(|| EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: ep.address.to_string(),
                    }),
                    aliases: Vec::new(),
                }),
                port_kind: Some(PortKind::Handoff),
                assigned_ipv4: (!ep.requested).then_some(ep.address),
            },
        };
        let view = match p.backend.apply(connect) {
            Ok(Response::Connected(v)) => v,
            other => {
                if created {
                    let _ = p.backend.apply(Request::RemoveSandbox { name: sandbox });
                }
                return Err(match other {
                    Err(e) => control_err(&e),
                    Ok(_) => unexpected("connect"),
                });
            }
        };
        let src_name = format!("vsp{}", view.host_interface.get(3..).unwrap_or_default());
        if let Some(e) = st.endpoints.get_mut(&eid) {
            e.joined = Some(Joined {
                sandbox_key: key.clone(),
                sandbox,
                endpoint: view.endpoint_id,
                port: view.port,
                src_name: src_name.clone(),
            });
        }
        Ok(wire::JoinReply {
            interface_name: wire::InterfaceName {
                src_name,
                dst_prefix: "eth".to_owned(),
            },
            gateway: net.gateway.map(|g| g.to_string()).unwrap_or_default(),
            gateway_ipv6: String::new(),
            static_routes: Vec::new(),
            disable_gateway_service: true,
        })
    })
}

/// Undoes a join: withdraws published ports, disconnects the port (its
/// veth goes, both ends) and releases the sandbox when no other endpoint
/// of the plugin uses it.
fn unjoin(p: &Plugin, st: &mut State, eid: &str) -> Result<(), String> {
    let Some(ep) = st.endpoints.get(eid).cloned() else {
        return Ok(());
    };
    let Some(j) = ep.joined.clone() else {
        return Ok(());
    };
    let net = st.networks.get(&ep.network).cloned();
    if ep.published
        && let Some(net) = &net
    {
        p.publisher.revoke(&target(net, &ep, &j))?;
    }
    if let Some(net) = &net {
        let request = Request::Disconnect {
            network: net.vswitch.clone(),
            request: DisconnectRequest {
                container: j.sandbox.clone(),
                force: false,
            },
        };
        match p.backend.apply(request) {
            Ok(_)
            | Err(
                ControlError::NotConnected { .. }
                | ControlError::SandboxNotFound(_)
                | ControlError::NetworkNotFound(_),
            ) => {}
            Err(e) => return Err(control_err(&e)),
        }
    }
    if let Some(e) = st.endpoints.get_mut(eid) {
        e.joined = None;
        e.published = false;
    }
    if st.sandbox_users(&j.sandbox) == 0 {
        match p.backend.apply(Request::RemoveSandbox {
            name: j.sandbox.clone(),
        }) {
            Ok(_) | Err(ControlError::SandboxNotFound(_)) => {}
            Err(e) => {
                tracing::warn!(sandbox = %j.sandbox, error = %e, "docker plugin: sandbox not released");
            }
        }
    }
    Ok(())
}

/// Brings the plugin's state and the switch's model in line after a start,
/// for a crash between a change of one and the save of the other: joins
/// whose switch endpoint is gone are forgotten; handed-off endpoints and
/// Docker networks of the switch that the plugin does not know are
/// removed (Docker was told the call failed, so it does not know them
/// either).
pub(super) fn reconcile(p: &Plugin) -> Result<(), String> {
    let sandboxes = match p.backend.apply(Request::ListSandboxes) {
        Ok(Response::Sandboxes(s)) => s,
        Ok(_) => return Err(unexpected("sandbox ls")),
        Err(e) => return Err(control_err(&e)),
    };
    let networks = match p.backend.apply(Request::ListNetworks) {
        Ok(Response::Networks(n)) => n,
        Ok(_) => return Err(unexpected("network ls")),
        Err(e) => return Err(control_err(&e)),
    };
    p.change(|p, st| {
        let live: std::collections::BTreeSet<&str> = sandboxes
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.endpoint_id.as_str()))
            .collect();
        for (eid, e) in &mut st.endpoints {
            if e.joined.as_ref().is_some_and(|j| !live.contains(j.endpoint.as_str())) {
                tracing::warn!(endpoint = %eid, "docker plugin: a join the switch no longer has is forgotten");
                e.joined = None;
                e.published = false;
            }
        }
        let known: std::collections::BTreeSet<&str> = st
            .endpoints
            .values()
            .filter_map(|e| e.joined.as_ref().map(|j| j.endpoint.as_str()))
            .collect();
        for sb in &sandboxes {
            let orphans: Vec<_> = sb
                .endpoints
                .iter()
                .filter(|e| e.port_kind == PortKind::Handoff && !known.contains(e.endpoint_id.as_str()))
                .collect();
            for e in &orphans {
                tracing::warn!(sandbox = %sb.name, network = %e.network, "docker plugin: removing a port Docker does not know");
                let _ = p.backend.apply(Request::Disconnect {
                    network: e.network_id.clone(),
                    request: DisconnectRequest {
                        container: sb.id.clone(),
                        force: false,
                    },
                });
            }
            if !orphans.is_empty() && orphans.len() == sb.endpoints.len() {
                let _ = p.backend.apply(Request::RemoveSandbox { name: sb.id.clone() });
            }
        }
        let ours: std::collections::BTreeSet<&str> =
            st.networks.values().map(|n| n.vswitch.as_str()).collect();
        for n in &networks {
            if n.labels.contains_key(NETWORK_ID_LABEL) && !ours.contains(n.id.as_str()) {
                tracing::warn!(network = %n.name, "docker plugin: removing a network Docker does not know");
                let _ = p.backend.apply(Request::RemoveNetwork { name: n.id.clone() });
            }
        }
        for (nid, rec) in &st.networks {
            if !networks.iter().any(|n| n.id == rec.vswitch) {
                tracing::error!(network = %nid, "docker plugin: the switch network of a Docker network is gone; remove and create it again in Docker");
            }
        }
        Ok(())
    })
}

fn target(net: &NetworkRecord, ep: &EndpointRecord, j: &Joined) -> PublishTarget {
    PublishTarget {
        network: net.vswitch.clone(),
        sandbox: j.sandbox.clone(),
        endpoint: j.endpoint.clone(),
        address: ep.address,
    }
}

pub(super) fn leave(p: &Plugin, r: wire::EndpointRef) -> Result<Empty, String> {
    let eid = r.endpoint_id;
    p.change(|p, st| {
        if !st.endpoints.contains_key(&eid) {
            return Err(format!("endpoint {eid} not found"));
        }
        unjoin(p, st, &eid)?;
        Ok(Empty {})
    })
}

pub(super) fn program_external(p: &Plugin, r: wire::ProgramExternal) -> Result<Empty, String> {
    let eid = r.endpoint_id;
    let port_map = r.options.get(wire::PORT_MAP).cloned().unwrap_or_default();
    let ports: Vec<wire::PortBinding> = if port_map.is_null() {
        Vec::new()
    } else {
        serde_json::from_value(port_map.clone())
            .map_err(|e| format!("vswitch: invalid {}: {e}", wire::PORT_MAP))?
    };
    p.change(|p, st| {
        let ep = st
            .endpoints
            .get(&eid)
            .cloned()
            .ok_or_else(|| format!("endpoint {eid} not found"))?;
        let j = ep
            .joined
            .clone()
            .ok_or_else(|| format!("vswitch: endpoint {eid} is not joined"))?;
        let net = st
            .networks
            .get(&ep.network)
            .cloned()
            .ok_or_else(|| format!("network {} not found", ep.network))?;
        let in_place = p.publisher.publish(&target(&net, &ep, &j), &ports)?;
        if let Some(e) = st.endpoints.get_mut(&eid) {
            // What is served (host ports chosen), as `docker port` shows it.
            e.port_map = if in_place.is_empty() {
                port_map
            } else {
                serde_json::to_value(&in_place)
                    .map_err(|err| format!("vswitch: port map not kept: {err}"))?
            };
            if let Some(x) = r.options.get(wire::EXPOSED_PORTS) {
                e.exposed_ports = x.clone();
            }
            e.published = !ports.is_empty();
        }
        Ok(Empty {})
    })
}

pub(super) fn revoke_external(p: &Plugin, r: wire::EndpointRef) -> Result<Empty, String> {
    let eid = r.endpoint_id;
    p.change(|p, st| {
        let Some(ep) = st.endpoints.get(&eid).cloned() else {
            return Ok(Empty {});
        };
        if ep.published
            && let (Some(j), Some(net)) = (&ep.joined, st.networks.get(&ep.network))
        {
            p.publisher.revoke(&target(net, &ep, j))?;
        }
        if let Some(e) = st.endpoints.get_mut(&eid) {
            e.published = false;
        }
        Ok(Empty {})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_short_and_full_names() {
        let opts: Map<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.generic": {"mtu": "1400", "com.docker.network.bridge.enable_icc": "false", "internal": "true", "other": "x"}}"#,
        )
        .unwrap();
        let (internal, out) = network_options(&opts).unwrap();
        assert!(internal);
        assert_eq!(out.get(OPT_MTU).map(String::as_str), Some("1400"));
        assert_eq!(out.get(OPT_ENABLE_ICC).map(String::as_str), Some("false"));
        assert_eq!(out.len(), 2);
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.generic": {"internal": "maybe"}}"#)
                .unwrap();
        assert!(network_options(&bad).is_err());
        let flag: Map<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.internal": true}"#).unwrap();
        assert!(network_options(&flag).unwrap().0);
    }

    #[test]
    fn sandbox_names() {
        assert_eq!(
            sandbox_name("/var/run/docker/netns/cbe51ab38395").as_deref(),
            Some("cbe51ab38395")
        );
        assert_eq!(sandbox_name("/x/-bad"), None);
        assert_eq!(sandbox_name("/"), None);
    }
}
