//! [`Controller::apply`]: a request in, the answer and the daemon's steps
//! out, with Docker's rules and error texts. Pure: no I/O, no clock, no
//! randomness of its own ([`Ctx`] brings both).
//!
//! Every mutating request runs against a copy of the model (IPAM included)
//! that replaces the model only when the whole request succeeded, so a
//! refused request changes nothing, not even IPAM's subnet cursor. (Docker
//! leaves the cursor moved after some failed creates, docker-reference §1.2;
//! we prefer all-or-nothing.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipam::{IpamError, NetworkIpamRequest};

use super::Ctx;
use super::effect::{Attachment, Effect};
use super::error::ControlError;
use super::model::{self, Endpoint, IdKind, Model, Network, PortKind, Sandbox};
use super::options::parse_options;
use super::request::{Outcome, Request, Response};
use super::types::{
    ConnectRequest, DisconnectRequest, NetworkCreateRequest, NetworkCreateResponse,
    SandboxCreateRequest,
};
use super::views::{endpoint_view, network_view, sandbox_view};
use crate::ids::{MacAddr, NetworkId, PortId};
use crate::switch::{ConfigError, Gateway, NetworkConfig, PortConfig, PortRole, SwitchConfig};

/// Names Docker reserves for its own networks (`runconfig.IsPreDefinedNetwork`).
const PREDEFINED: [&str; 4] = ["bridge", "host", "none", "default"];

/// The lowest port id endpoints get; lower ids are left to the daemon
/// (uplink, tunnels).
pub const FIRST_ENDPOINT_PORT: u32 = 1;

/// Settings of the controller that are not state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Where namespaces the daemon creates are mounted, as
    /// `<netns_dir>/<sandbox name>` (Docker uses `/var/run/docker/netns/<short id>`;
    /// the sandbox's name is what an operator types after `ip netns exec`).
    /// The default, `/run/netns`, makes them named namespaces: the file name
    /// is the name for `ip netns exec` and [`crate::netns::Netns::create`].
    pub netns_dir: PathBuf,
    /// The port kind of a connect that does not name one.
    pub default_port_kind: PortKind,
    /// The transmit queue length of new devices.
    pub txqueuelen: u32,
    /// Where the daemon keeps its handles on adopted namespaces, as
    /// `<handle_dir>/<sandbox id>` (bind mounts under its run directory).
    pub handle_dir: PathBuf,
    /// How fast each container port may flood (unknown unicast, broadcast,
    /// multicast) on every network.
    pub flood_limit: crate::switch::FloodLimit,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            netns_dir: PathBuf::from("/run/netns"),
            default_port_kind: PortKind::Tap,
            txqueuelen: 1000,
            handle_dir: PathBuf::from("/run/vswitch/netns"),
            flood_limit: crate::switch::FloodLimit::DEFAULT,
        }
    }
}

/// Owns the model (and through it IPAM) and applies requests to it.
///
/// `Clone` is cheap enough to snapshot before a request, so the daemon can
/// roll back when one of the request's effects fails.
#[derive(Clone, Debug)]
pub struct Controller {
    config: ControllerConfig,
    model: Model,
    generation: u64,
}

impl Controller {
    /// A controller for a first start: Docker's default `bridge` only.
    ///
    /// # Errors
    /// See [`Model::with_defaults`].
    pub fn new(config: ControllerConfig, ctx: &Ctx<'_>) -> Result<Self, ControlError> {
        Ok(Self {
            config,
            model: Model::with_defaults(ctx)?,
            generation: 1,
        })
    }

    /// A controller over a stored model.
    ///
    /// # Errors
    /// [`ControlError::InvalidState`] when the model breaks an invariant.
    pub fn from_model(config: ControllerConfig, model: Model) -> Result<Self, ControlError> {
        model.validate()?;
        Ok(Self {
            config,
            model,
            generation: 1,
        })
    }

    /// The model, to persist or inspect.
    #[must_use]
    pub const fn model(&self) -> &Model {
        &self.model
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The generation [`Self::switch_config`] stamps on its configuration;
    /// it grows with every change that asks for [`Effect::PushSwitchConfig`].
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// Validates and applies one request.
    ///
    /// Queries leave the model alone and return no effects. A mutating
    /// request returns the response, the effects for the daemon in order,
    /// and `changed: true`.
    ///
    /// # Errors
    /// [`ControlError`] with Docker's text; the model and IPAM are then
    /// exactly as before.
    pub fn apply(&mut self, request: Request, ctx: &Ctx<'_>) -> Result<Outcome, ControlError> {
        if !request.is_mutating() {
            return Ok(Outcome {
                response: self.query(&request)?,
                effects: Vec::new(),
                changed: false,
            });
        }
        let (next, outcome) = self.applied(request, ctx)?;
        *self = next;
        Ok(outcome)
    }

    /// [`Self::apply`] for a mutating request, leaving `self` alone: the
    /// controller after the request, and the outcome. The model is copied
    /// once, so a caller that shares `self` (the published snapshot) pays
    /// one copy per change, not one to unshare it and one to stage it.
    ///
    /// # Errors
    /// As [`Self::apply`].
    pub fn applied(
        &self,
        request: Request,
        ctx: &Ctx<'_>,
    ) -> Result<(Self, Outcome), ControlError> {
        if !request.is_mutating() {
            let outcome = Outcome {
                response: self.query(&request)?,
                effects: Vec::new(),
                changed: false,
            };
            return Ok((self.clone(), outcome));
        }
        let mut next = self.model.clone();
        let mut txn = Txn {
            model: &mut next,
            config: &self.config,
            ctx,
            effects: Vec::new(),
        };
        let response = match request {
            Request::CreateNetwork(r) => txn.create_network(r)?,
            Request::RemoveNetwork { name } => txn.remove_network(&name)?,
            Request::Connect { network, request } => txn.connect(&network, request)?,
            Request::Disconnect { network, request } => txn.disconnect(&network, &request)?,
            Request::CreateSandbox(r) => txn.create_sandbox(r)?,
            Request::RemoveSandbox { name } => txn.remove_sandbox(&name)?,
            Request::ListNetworks
            | Request::InspectNetwork { .. }
            | Request::ListSandboxes
            | Request::InspectSandbox { .. } => {
                return Err(ControlError::internal(
                    "applying a request",
                    "query routed as a change",
                ));
            }
        };
        let effects = txn.effects;
        let generation = if effects.contains(&Effect::PushSwitchConfig) {
            self.generation + 1
        } else {
            self.generation
        };
        let controller = Self {
            config: self.config.clone(),
            model: next,
            generation,
        };
        Ok((
            controller,
            Outcome {
                response,
                effects,
                changed: true,
            },
        ))
    }

    /// Answers a query (`network ls/inspect`, `sandbox ls/inspect`) from
    /// this controller's model. Takes `&self`, so it can run on a published
    /// snapshot while a change is in progress elsewhere.
    ///
    /// # Errors
    /// Docker's not-found errors; [`ControlError::Internal`] for a request
    /// that changes the model.
    pub fn query(&self, request: &Request) -> Result<Response, ControlError> {
        let m = &self.model;
        Ok(match request {
            Request::ListNetworks => {
                let mut nets: Vec<&Network> = m.networks.iter().collect();
                nets.sort_by(|a, b| a.name.cmp(&b.name));
                Response::Networks(nets.into_iter().map(|n| network_view(m, n)).collect())
            }
            Request::InspectNetwork { name } => {
                Response::Network(network_view(m, &m.networks[network_index(m, name)?]))
            }
            Request::ListSandboxes => {
                let mut sbs: Vec<&Sandbox> = m.sandboxes.iter().collect();
                sbs.sort_by(|a, b| a.name.cmp(&b.name));
                Response::Sandboxes(sbs.into_iter().map(|s| sandbox_view(m, s)).collect())
            }
            Request::InspectSandbox { name } => {
                Response::Sandbox(sandbox_view(m, &m.sandboxes[sandbox_index(m, name)?]))
            }
            _ => {
                return Err(ControlError::internal(
                    "answering a query",
                    "change routed as a query",
                ));
            }
        })
    }

    /// The switch configuration the model describes: one network per
    /// network (MTU, gateway MAC and IP, ICC), one container port per
    /// endpoint.
    ///
    /// # Errors
    /// [`ConfigError`] only if the model is inconsistent (a bug).
    pub fn switch_config(&self) -> Result<SwitchConfig, ConfigError> {
        self.switch_config_where(|_| true)
    }

    /// [`Self::switch_config`] with only the container ports that `keep`
    /// keeps: what the datapath gets while some ports' devices are being
    /// made or removed.
    ///
    /// # Errors
    /// As [`Self::switch_config`].
    pub fn switch_config_where(
        &self,
        keep: impl Fn(PortId) -> bool,
    ) -> Result<SwitchConfig, ConfigError> {
        let networks = self.model.networks.iter().map(|n| NetworkConfig {
            id: n.num,
            mtu: n.mtu,
            gateway: Some(Gateway {
                mac: n.gateway_mac,
                ip: n.gateway,
            }),
            icc: n.icc,
            flood_limit: self.config.flood_limit,
            ..NetworkConfig::new(n.num)
        });
        let ports = self
            .model
            .endpoints
            .iter()
            .filter(|e| keep(e.port))
            .map(|e| PortConfig {
                id: e.port,
                network: e.network,
                role: PortRole::Container {
                    mac: e.mac,
                    ipv4: Some(e.ipv4),
                },
            });
        SwitchConfig::new(self.generation, networks, ports)
    }

    /// Every endpoint as an attachment, in attach order: what a restarted
    /// daemon reopens (its devices are persistent, so it reattaches rather
    /// than recreates).
    #[must_use]
    pub fn attachments(&self) -> Vec<Attachment> {
        self.model
            .endpoints
            .iter()
            .filter_map(|e| {
                let net = self.model.network(e.network)?;
                let sb = self.model.sandbox(&e.sandbox)?;
                Some(attachment(e, net, sb, self.config.txqueuelen))
            })
            .collect()
    }
}

/// One mutating request against the model copy.
struct Txn<'a> {
    model: &'a mut Model,
    config: &'a ControllerConfig,
    ctx: &'a Ctx<'a>,
    effects: Vec<Effect>,
}

impl Txn<'_> {
    fn create_network(&mut self, r: NetworkCreateRequest) -> Result<Response, ControlError> {
        let name = r.name;
        if PREDEFINED.contains(&name.as_str()) {
            return Err(ControlError::PredefinedNetworkCreate(name));
        }
        if !valid_name(&name, 1) {
            return Err(ControlError::InvalidNetworkName(name));
        }
        if !(r.driver.is_empty() || r.driver == "bridge") {
            return Err(ControlError::PluginNotFound(r.driver));
        }
        let ipam_req = r.ipam.unwrap_or_default();
        if !(ipam_req.driver.is_empty() || ipam_req.driver == "default") {
            return Err(ControlError::PluginNotFound(ipam_req.driver));
        }
        if self.model.networks.iter().any(|n| n.name == name) {
            return Err(ControlError::NetworkExists(name));
        }
        let is_v6 = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains(':'));
        if r.enable_ipv6 && !ipam_req.config.iter().any(|c| is_v6(&c.subnet)) {
            return Err(IpamError::NoAvailableDefaultPool { ip_version: 6 }.into());
        }
        let id = self.model.new_id(self.ctx.entropy, IdKind::Network)?;
        let num = free_network_id(self.model)?;
        let mut request = NetworkIpamRequest::new(name.clone(), id.clone());
        request.configs.clone_from(&ipam_req.config);
        request.host_networks = self
            .ctx
            .host_networks
            .iter()
            .filter_map(|(a, len)| format!("{a}/{len}").parse().ok())
            .collect();
        let ipam = self.model.ipam.create_network(&request)?;
        let v4_subnets = ipam_req
            .config
            .iter()
            .filter(|c| c.subnet.as_deref().is_some_and(|s| !s.is_empty()) && !is_v6(&c.subnet))
            .count();
        if v4_subnets > 1 {
            return Err(ControlError::MultipleSubnets);
        }
        let (icc, mtu) = parse_options(&r.options)?;
        let (gateway, prefix_len) = self.model.first_pool_gateway(&ipam)?;
        let gateway_mac = model::random_gateway_mac(self.ctx.entropy, gateway, prefix_len);
        self.model.networks.push(Network {
            num,
            id: id.clone(),
            name,
            driver: "bridge".to_owned(),
            created: self.ctx.now.to_owned(),
            builtin: false,
            internal: r.internal,
            attachable: r.attachable,
            ipam_config: ipam_req.config,
            ipam_options: Some(ipam_req.options),
            ipam,
            gateway,
            prefix_len,
            gateway_mac,
            options: r.options,
            labels: r.labels,
            icc,
            mtu,
        });
        self.effects.push(Effect::PushSwitchConfig);
        Ok(Response::NetworkCreated(NetworkCreateResponse {
            id,
            warning: String::new(),
        }))
    }

    fn remove_network(&mut self, name: &str) -> Result<Response, ControlError> {
        let i = network_index(self.model, name)?;
        let net = &self.model.networks[i];
        if net.builtin {
            return Err(ControlError::PredefinedNetworkRemove(net.name.clone()));
        }
        if self.model.network_endpoints(net.num).next().is_some() {
            return Err(ControlError::ActiveEndpoints {
                name: net.name.clone(),
                id: net.id.clone(),
            });
        }
        let net = self.model.networks.remove(i);
        self.model.ipam.delete_network(&net.ipam);
        self.effects.push(Effect::PushSwitchConfig);
        Ok(Response::Done)
    }

    fn create_sandbox(&mut self, r: SandboxCreateRequest) -> Result<Response, ControlError> {
        let name = r.name;
        if !valid_name(&name, 2) {
            return Err(ControlError::InvalidSandboxName(name));
        }
        if let Some(s) = self.model.sandboxes.iter().find(|s| s.name == name) {
            return Err(ControlError::SandboxNameInUse {
                name,
                id: s.id.clone(),
            });
        }
        let adopt = r.netns_path.filter(|p| !p.is_empty());
        if let Some(path) = &adopt {
            if !path.starts_with('/') {
                return Err(ControlError::RelativeNetnsPath(path.clone()));
            }
            if let Some(s) = self
                .model
                .sandboxes
                .iter()
                .find(|s| Path::new(&s.netns_path) == Path::new(path))
            {
                return Err(ControlError::NetnsInUse {
                    path: path.clone(),
                    sandbox: s.name.clone(),
                });
            }
        }
        let id = self.model.new_id(self.ctx.entropy, IdKind::Sandbox)?;
        let owned = adopt.is_none();
        let path = adopt.unwrap_or_else(|| {
            self.config
                .netns_dir
                .join(&name)
                .to_string_lossy()
                .into_owned()
        });
        let handle = (!owned).then(|| self.config.handle_dir.join(&id));
        let sandbox = Sandbox {
            id: id.clone(),
            name: name.clone(),
            netns_path: path.clone(),
            netns_owned: owned,
            created: self.ctx.now.to_owned(),
            next_ifindex: 0,
            netns_handle: handle.as_ref().map(|h| h.to_string_lossy().into_owned()),
        };
        let view = sandbox_view(self.model, &sandbox);
        self.model.sandboxes.push(sandbox);
        let path = PathBuf::from(path);
        self.effects.push(if owned {
            Effect::CreateNetns {
                sandbox: id,
                name,
                path,
            }
        } else {
            Effect::AdoptNetns {
                sandbox: id,
                name,
                path,
                handle: handle.unwrap_or_default(),
            }
        });
        Ok(Response::Sandbox(view))
    }

    fn remove_sandbox(&mut self, name: &str) -> Result<Response, ControlError> {
        let i = sandbox_index(self.model, name)?;
        let sb = self.model.sandboxes.remove(i);
        let (mine, rest): (Vec<Endpoint>, Vec<Endpoint>) =
            std::mem::take(&mut self.model.endpoints)
                .into_iter()
                .partition(|e| e.sandbox == sb.id);
        self.model.endpoints = rest;
        if !mine.is_empty() {
            self.effects.push(Effect::PushSwitchConfig);
        }
        for e in mine.iter().rev() {
            let pools = self
                .model
                .network(e.network)
                .map(|n| n.ipam.clone())
                .ok_or_else(|| {
                    ControlError::InvalidState(format!("endpoint {} has no network", e.id))
                })?;
            self.model.ipam.release_endpoint_address(&pools, e.ipv4)?;
            let net = self.model.network(e.network).ok_or_else(|| {
                ControlError::InvalidState(format!("endpoint {} has no network", e.id))
            })?;
            self.effects.push(Effect::DetachEndpoint(attachment(
                e,
                net,
                &sb,
                self.config.txqueuelen,
            )));
        }
        if sb.netns_owned {
            self.effects.push(Effect::DeleteNetns {
                sandbox: sb.id,
                name: sb.name,
                path: PathBuf::from(sb.netns_path),
            });
        } else if let Some(handle) = sb.netns_handle {
            self.effects.push(Effect::ReleaseNetns {
                sandbox: sb.id,
                handle: PathBuf::from(handle),
            });
        }
        Ok(Response::Done)
    }

    fn connect(&mut self, network: &str, r: ConnectRequest) -> Result<Response, ControlError> {
        let si = sandbox_index(self.model, &r.container)?;
        let ni = network_index(self.model, network)?;
        let net = self.model.networks[ni].clone();
        let sb = self.model.sandboxes[si].clone();
        if self
            .model
            .endpoints
            .iter()
            .any(|e| e.sandbox == sb.id && e.network == net.num)
        {
            return Err(ControlError::AlreadyConnected {
                sandbox: sb.name,
                network: net.name,
            });
        }
        let settings = r.endpoint_config.unwrap_or_default();
        let requested = settings
            .ipam_config
            .map(|c| c.ipv4_address)
            .filter(|a| !a.is_empty());
        if net.builtin && requested.is_some() {
            return Err(IpamError::StaticIpOnBuiltinNetwork.into());
        }
        if net.builtin && !settings.aliases.is_empty() {
            return Err(ControlError::AliasOnDefaultNetwork);
        }
        if let Some(bad) = settings.aliases.iter().find(|a| !valid_alias(a)) {
            return Err(ControlError::InvalidAlias(bad.clone()));
        }
        let addr = self
            .model
            .ipam
            .allocate_endpoint_address(&net.ipam, requested.as_deref())?;
        let port = free_port(self.model)?;
        let id = self.model.new_id(self.ctx.entropy, IdKind::Endpoint)?;
        let kind = r.port_kind.unwrap_or(self.config.default_port_kind);
        let ifname = format!("eth{}", sb.next_ifindex);
        self.model.sandboxes[si].next_ifindex = sb.next_ifindex.saturating_add(1);
        let default_route = !self
            .model
            .sandbox_endpoints(&sb.id)
            .any(|e| e.default_route);
        let aliases = (!net.builtin).then(|| {
            let mut all = settings.aliases.clone();
            all.push(sb.short_id().to_owned());
            all
        });
        let endpoint = Endpoint {
            host_ifname: format!("{}{}", kind.device_prefix(), model::short(&id)),
            id,
            network: net.num,
            sandbox: sb.id.clone(),
            port,
            ifname,
            kind,
            mac: MacAddr(addr.mac()),
            ipv4: addr.address,
            prefix_len: addr.prefix_len,
            requested_ip: requested,
            aliases,
            default_route,
        };
        self.effects.push(Effect::AttachEndpoint(attachment(
            &endpoint,
            &net,
            &sb,
            self.config.txqueuelen,
        )));
        self.effects.push(Effect::PushSwitchConfig);
        let view = endpoint_view(&net, &endpoint);
        self.model.endpoints.push(endpoint);
        Ok(Response::Connected(view))
    }

    fn disconnect(
        &mut self,
        network: &str,
        r: &DisconnectRequest,
    ) -> Result<Response, ControlError> {
        let si = sandbox_index(self.model, &r.container)?;
        let ni = network_index(self.model, network)?;
        let net = self.model.networks[ni].clone();
        let sb = self.model.sandboxes[si].clone();
        let Some(ei) = self
            .model
            .endpoints
            .iter()
            .position(|e| e.sandbox == sb.id && e.network == net.num)
        else {
            return Err(ControlError::NotConnected {
                sandbox: sb.name,
                network: net.name,
            });
        };
        let e = self.model.endpoints.remove(ei);
        self.model
            .ipam
            .release_endpoint_address(&net.ipam, e.ipv4)?;
        self.effects.push(Effect::PushSwitchConfig);
        self.effects.push(Effect::DetachEndpoint(attachment(
            &e,
            &net,
            &sb,
            self.config.txqueuelen,
        )));
        if e.default_route {
            let next = self.model.endpoints.iter_mut().find(|x| x.sandbox == sb.id);
            if let Some(next) = next {
                next.default_route = true;
                let (ifname, num) = (next.ifname.clone(), next.network);
                let gateway =
                    self.model.network(num).map(|n| n.gateway).ok_or_else(|| {
                        ControlError::InvalidState(format!("network {num} vanished"))
                    })?;
                self.effects.push(Effect::SetDefaultRoute {
                    sandbox: sb.id.clone(),
                    netns: PathBuf::from(sb.netns_file()),
                    ifname,
                    gateway,
                });
            }
        }
        Ok(Response::Done)
    }
}

fn attachment(e: &Endpoint, net: &Network, sb: &Sandbox, txqueuelen: u32) -> Attachment {
    Attachment {
        endpoint: e.id.clone(),
        sandbox: sb.id.clone(),
        netns: PathBuf::from(sb.netns_file()),
        network: net.num,
        port: e.port,
        kind: e.kind,
        host_ifname: e.host_ifname.clone(),
        ifname: e.ifname.clone(),
        mac: e.mac,
        ipv4: e.ipv4,
        prefix_len: e.prefix_len,
        mtu: net.mtu,
        gateway: e.default_route.then_some(net.gateway),
        txqueuelen,
    }
}

/// Docker's lookup order: full id, then name, then a unique id prefix.
pub(super) fn network_index(m: &Model, term: &str) -> Result<usize, ControlError> {
    if term.is_empty() {
        return Err(ControlError::NetworkNotFound(String::new()));
    }
    if let Some(i) = m.networks.iter().position(|n| n.id == term) {
        return Ok(i);
    }
    if let Some(i) = m.networks.iter().position(|n| n.name == term) {
        return Ok(i);
    }
    let matches: Vec<usize> = (0..m.networks.len())
        .filter(|&i| m.networks[i].id.starts_with(term))
        .collect();
    match matches.as_slice() {
        [] => Err(ControlError::NetworkNotFound(term.to_owned())),
        [i] => Ok(*i),
        many => Err(ControlError::AmbiguousNetwork {
            name: term.to_owned(),
            matches: many.len(),
        }),
    }
}

/// Docker's container lookup: full id, then name, then a unique id prefix.
fn sandbox_index(m: &Model, term: &str) -> Result<usize, ControlError> {
    if term.is_empty() {
        return Err(ControlError::SandboxNotFound(String::new()));
    }
    if let Some(i) = m.sandboxes.iter().position(|s| s.id == term) {
        return Ok(i);
    }
    if let Some(i) = m.sandboxes.iter().position(|s| s.name == term) {
        return Ok(i);
    }
    let matches: Vec<usize> = (0..m.sandboxes.len())
        .filter(|&i| m.sandboxes[i].id.starts_with(term))
        .collect();
    match matches.as_slice() {
        [] => Err(ControlError::SandboxNotFound(term.to_owned())),
        [i] => Ok(*i),
        _ => Err(ControlError::AmbiguousSandbox(term.to_owned())),
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*` with at least `min` characters (Docker's
/// container names need two).
fn valid_name(name: &str, min: usize) -> bool {
    let b = name.as_bytes();
    b.len() >= min
        && b.len() <= 255
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 255
        && !alias
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

fn free_network_id(m: &Model) -> Result<NetworkId, ControlError> {
    let used: BTreeSet<u32> = m.networks.iter().map(|n| n.num.0).collect();
    (0..=u32::MAX)
        .find(|i| !used.contains(i))
        .map(NetworkId)
        .ok_or(ControlError::NetworksExhausted)
}

fn free_port(m: &Model) -> Result<PortId, ControlError> {
    let used: BTreeSet<u32> = m.endpoints.iter().map(|e| e.port.0).collect();
    (FIRST_ENDPOINT_PORT..=u32::MAX)
        .find(|i| !used.contains(i))
        .map(PortId)
        .ok_or(ControlError::PortsExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("n1", 2));
        assert!(valid_name("a", 1));
        assert!(!valid_name("a", 2));
        assert!(!valid_name("-x", 1));
        assert!(!valid_name("a/b", 1));
        assert!(!valid_name("", 1));
        assert!(valid_name("my_net.v2-x", 1));
    }
}
