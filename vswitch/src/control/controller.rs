//! [`Controller::apply`]: a request in, the answer and the daemon's steps
//! out, with Docker's rules and error texts. Pure: no I/O, no clock, no
//! randomness of its own ([`Ctx`] brings both).
//!
//! Every mutating request runs against a copy of the model (IPAM included)
//! that replaces the model only when the whole request succeeded, so a
//! refused request changes nothing, not even IPAM's subnet cursor. (Docker
//! leaves the cursor moved after some failed creates, docker-reference §1.2;
//! we prefer all-or-nothing.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use core::net::IpAddr;

use ipam::{IpamError, NetworkIpamRequest};
use nat::alloc::PortAllocator;
use nat::spec::PortRange;

use super::Ctx;
use super::effect::{Attachment, Effect};
use super::error::ControlError;
use super::model::{self, Endpoint, IdKind, Model, Network, PortKind, PublishedRecord, Sandbox};
use super::options::parse_options;
use super::ports;
use super::request::{Outcome, Request, Response};
use super::types::{
    ConnectRequest, DisconnectRequest, EndpointView, HostConfig, NetworkCreateRequest,
    NetworkCreateResponse, SandboxCreateRequest,
};
use super::views::{endpoint_view, network_view, predefined_view, sandbox_view};
use crate::ids::{MacAddr, NetworkId, PortId};
use crate::switch::{
    ConfigError, External, Gateway, NetworkConfig, PortConfig, PortRole, SwitchConfig,
};

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
    /// Whether this host has a VTEP (`vswitchd --vtep`); overlay networks
    /// are refused without one.
    pub overlay: bool,
    /// VNIs the static peer file gives overlay networks, by name: a
    /// network of that name gets that VNI on every host.
    pub overlay_vnis: std::collections::BTreeMap<String, u32>,
    /// Where dynamic host ports come from: the host's
    /// `/proc/sys/net/ipv4/ip_local_port_range` (docker-reference §4.2).
    pub ephemeral_ports: PortRange,
    /// Whether the host can open IPv6 sockets: without it, a binding that
    /// names no address is made on `host_binding_ipv4` only, not on `::`
    /// too.
    pub host_ipv6: bool,
}

/// Linux's default `ip_local_port_range`.
pub const LINUX_EPHEMERAL: PortRange = match PortRange::new(32768, 60999) {
    Some(r) => r,
    None => PortRange::single(32768),
};

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            netns_dir: PathBuf::from("/run/netns"),
            default_port_kind: PortKind::Tap,
            txqueuelen: 1000,
            handle_dir: PathBuf::from("/run/vswitch/netns"),
            flood_limit: crate::switch::FloodLimit::DEFAULT,
            overlay: false,
            overlay_vnis: std::collections::BTreeMap::new(),
            ephemeral_ports: LINUX_EPHEMERAL,
            host_ipv6: true,
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
    /// Docker's host-port allocator. Not stored: rebuilt from the
    /// endpoints' published ports at start (cursors start afresh, as after
    /// a Docker restart).
    ports: PortAllocator,
}

impl Controller {
    /// A controller for a first start: Docker's default `bridge` only.
    ///
    /// # Errors
    /// See [`Model::with_defaults`].
    pub fn new(config: ControllerConfig, ctx: &Ctx<'_>) -> Result<Self, ControlError> {
        Ok(Self {
            ports: PortAllocator::new(config.ephemeral_ports),
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
        let mut ports = PortAllocator::new(config.ephemeral_ports);
        for p in model.endpoints.iter().flat_map(|e| &e.published) {
            ports
                .request(p.host_ip, p.proto, Some(PortRange::single(p.host_port)))
                .map_err(|e| ControlError::InvalidState(format!("published port {p:?}: {e}")))?;
        }
        Ok(Self {
            config,
            model,
            generation: 1,
            ports,
        })
    }

    /// Adds Docker's `host` and `none` networks to a model stored before
    /// they existed; returns whether it did (the model must then be saved).
    ///
    /// # Errors
    /// Only if the id source keeps producing unusable ids.
    pub fn ensure_predefined(&mut self, ctx: &Ctx<'_>) -> Result<bool, ControlError> {
        self.model.ensure_predefined(ctx)
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
        let mut ports = self.ports.clone();
        let mut txn = Txn {
            model: &mut next,
            ports: &mut ports,
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
            Request::RenameSandbox { name, new_name } => txn.rename_sandbox(&name, new_name)?,
            Request::PublishPorts {
                sandbox,
                endpoint,
                port_bindings,
            } => txn.publish_ports(&sandbox, &endpoint, port_bindings)?,
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
            ports,
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
                let mut nets: Vec<_> = m
                    .networks
                    .iter()
                    .map(|n| network_view(m, n))
                    .chain(m.predefined.iter().map(|p| predefined_view(m, p)))
                    .collect();
                nets.sort_by(|a, b| a.name.cmp(&b.name));
                Response::Networks(nets)
            }
            Request::InspectNetwork { name } => Response::Network(match lookup(m, name)? {
                NetRef::Switched(i) => network_view(m, &m.networks[i]),
                NetRef::Predefined(i) => predefined_view(m, &m.predefined[i]),
            }),
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
            external: Some(External {
                subnet: (n.gateway, n.prefix_len),
                internal: n.internal,
                masquerade: n.ip_masquerade(),
            }),
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
        // An overlay network's port towards the other hosts lives as long as
        // the network, whatever endpoints come and go.
        let uplinks = self.model.networks.iter().filter_map(|n| {
            Some(PortConfig {
                id: PortId(n.vtep_port?),
                network: n.num,
                role: PortRole::Uplink,
            })
        });
        SwitchConfig::new(self.generation, networks, ports.chain(uplinks))
    }

    /// Each overlay network's VNI and port towards the other hosts.
    #[must_use]
    pub fn overlay_networks(&self) -> Vec<(u32, PortId)> {
        self.model
            .networks
            .iter()
            .filter_map(|n| Some((n.vni?, PortId(n.vtep_port?))))
            .collect()
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
struct Txn<'a, 'c> {
    model: &'a mut Model,
    ports: &'a mut PortAllocator,
    config: &'a ControllerConfig,
    ctx: &'a Ctx<'c>,
    effects: Vec<Effect>,
}

impl Txn<'_, '_> {
    fn create_network(&mut self, r: NetworkCreateRequest) -> Result<Response, ControlError> {
        let name = r.name;
        if PREDEFINED.contains(&name.as_str()) {
            return Err(ControlError::PredefinedNetworkCreate(name));
        }
        if !valid_name(&name, 1) {
            return Err(ControlError::InvalidNetworkName(name));
        }
        let overlay = r.driver == "overlay";
        if !(r.driver.is_empty() || r.driver == "bridge" || overlay) {
            return Err(ControlError::PluginNotFound(r.driver));
        }
        if overlay && !self.config.overlay {
            return Err(ControlError::Unsupported(
                "overlay networks need a VTEP: start vswitchd with --vtep ADDR".to_owned(),
            ));
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
        let mut options = r.options;
        let vni = if overlay {
            let vni = overlay_vni(self.model, self.config, &name, &options)?;
            options.insert(model::OPT_VXLANID_LIST.to_owned(), vni.to_string());
            Some(vni)
        } else {
            None
        };
        let mut request = NetworkIpamRequest::new(name.clone(), id.clone());
        if overlay {
            // Docker's overlays take their subnets from the global pool
            // (10.0.0.0/8 in /24s), which host routes do not constrain.
            request.space = ipam::AddressSpace::Global;
        }
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
        let (icc, mut mtu) = parse_options(&options)?;
        let vtep_port = if overlay {
            mtu = mtu
                .checked_sub(model::VXLAN_OVERHEAD)
                .filter(|m| *m >= 68)
                .ok_or(ControlError::InvalidMtu(i64::from(mtu)))?;
            Some(free_port(self.model)?.0)
        } else {
            None
        };
        let (gateway, prefix_len) = self.model.first_pool_gateway(&ipam)?;
        let gateway_mac = model::random_gateway_mac(self.ctx.entropy, gateway, prefix_len);
        self.model.networks.push(Network {
            num,
            id: id.clone(),
            name,
            driver: if overlay { "overlay" } else { "bridge" }.to_owned(),
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
            options,
            labels: r.labels,
            icc,
            mtu,
            vni,
            vtep_port,
        });
        self.effects.push(Effect::PushSwitchConfig);
        Ok(Response::NetworkCreated(NetworkCreateResponse {
            id,
            warning: String::new(),
        }))
    }

    fn remove_network(&mut self, name: &str) -> Result<Response, ControlError> {
        let i = match lookup(self.model, name)? {
            NetRef::Switched(i) => i,
            NetRef::Predefined(i) => {
                return Err(ControlError::PredefinedNetworkRemove(
                    self.model.predefined[i].name.clone(),
                ));
            }
        };
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
        if r.external && adopt.is_none() {
            return Err(ControlError::Unsupported(
                "an external sandbox needs the path of its namespace".to_owned(),
            ));
        }
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
        let host_config = r.host_config.unwrap_or_default();
        let (port_bindings, exposed_ports) = ports::requested(&host_config, &r.exposed_ports)?;
        let on_host = match host_config.network_mode.as_str() {
            "" => false,
            model::HOST_NETWORK if adopt.is_some() => {
                return Err(ControlError::Unsupported(
                    "conflicting options: a namespace to adopt and the host network".to_owned(),
                ));
            }
            model::HOST_NETWORK => true,
            model::NONE_NETWORK => false,
            other => {
                return Err(ControlError::Unsupported(format!(
                    "network mode {other:?}: only host and none are taken at creation; connect the sandbox to other networks"
                )));
            }
        };
        let dns = model::SandboxDns {
            servers: host_config
                .dns
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|_| ControlError::InvalidDnsServer(s.clone()))
                })
                .collect::<Result<_, _>>()?,
            search: host_config.dns_search.clone(),
            options: host_config.dns_options.clone(),
        };
        // The ndots rule's texts (docker-reference §6.2), refused now
        // rather than when the resolver is configured.
        dns::resolv_conf::user_network("", &dns.over(&Default::default()))?;
        let hostname = Some(r.hostname).filter(|h| !h.is_empty());
        if let Some(h) = hostname.as_ref().filter(|h| !valid_hostname(h)) {
            return Err(ControlError::InvalidHostname(h.clone()));
        }
        let id = self.model.new_id(self.ctx.entropy, IdKind::Sandbox)?;
        let network_mode = if host_config.network_mode.is_empty() {
            None
        } else {
            Some(model::NetworkMode {
                network: host_config.network_mode.clone(),
                endpoint: self.model.new_id(self.ctx.entropy, IdKind::Endpoint)?,
            })
        };
        let owned = adopt.is_none() && !on_host;
        // An external sandbox's namespace is its runtime's: never held.
        let handle = (!owned && !r.external).then(|| self.config.handle_dir.join(&id));
        // A sandbox on `host` is the daemon's own namespace, held through a
        // handle like an adopted one; its path is the handle.
        let path = match (&adopt, &handle) {
            (Some(p), _) => p.clone(),
            (None, Some(h)) => h.to_string_lossy().into_owned(),
            (None, None) => self
                .config
                .netns_dir
                .join(&name)
                .to_string_lossy()
                .into_owned(),
        };
        let sandbox = Sandbox {
            id: id.clone(),
            name: name.clone(),
            netns_path: path.clone(),
            netns_owned: owned,
            created: self.ctx.now.to_owned(),
            next_ifindex: 0,
            netns_handle: handle.as_ref().map(|h| h.to_string_lossy().into_owned()),
            external: r.external,
            port_bindings,
            publish_all: host_config.publish_all_ports,
            exposed_ports,
            network_mode,
            dns,
            hostname,
        };
        let view = sandbox_view(self.model, &sandbox);
        self.model.sandboxes.push(sandbox);
        let path = PathBuf::from(path);
        if r.external {
            // Nothing to open or hold: the runtime that owns the namespace
            // may not even have made it yet.
            return Ok(Response::Sandbox(view));
        }
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
                path: if on_host {
                    PathBuf::from("/proc/self/ns/net")
                } else {
                    path
                },
                handle: handle.unwrap_or_default(),
                host: on_host,
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
            self.unpublish(e);
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

    fn rename_sandbox(&mut self, name: &str, new_name: String) -> Result<Response, ControlError> {
        let i = sandbox_index(self.model, name)?;
        if self.model.sandboxes[i].name == new_name {
            return Ok(Response::Sandbox(sandbox_view(
                self.model,
                &self.model.sandboxes[i],
            )));
        }
        if !self.model.sandboxes[i].external {
            return Err(ControlError::Unsupported(format!(
                "sandbox {}: only a sandbox another runtime owns (Docker's) can be renamed",
                self.model.sandboxes[i].name
            )));
        }
        if !valid_name(&new_name, 2) {
            return Err(ControlError::InvalidSandboxName(new_name));
        }
        if let Some(s) = self.model.sandboxes.iter().find(|s| s.name == new_name) {
            return Err(ControlError::SandboxNameInUse {
                name: new_name,
                id: s.id.clone(),
            });
        }
        let sb = &mut self.model.sandboxes[i];
        sb.name.clone_from(&new_name);
        self.effects.push(Effect::RenameSandbox {
            sandbox: sb.id.clone(),
            name: new_name,
        });
        Ok(Response::Sandbox(sandbox_view(
            self.model,
            &self.model.sandboxes[i],
        )))
    }

    fn connect(&mut self, network: &str, r: ConnectRequest) -> Result<Response, ControlError> {
        let si = sandbox_index(self.model, &r.container)?;
        let ni = match lookup(self.model, network)? {
            NetRef::Switched(i) => i,
            NetRef::Predefined(i) => return self.connect_predefined(si, i),
        };
        match self.model.sandboxes[si].network_mode.as_ref() {
            Some(m) if m.network == model::HOST_NETWORK => {
                return Err(ControlError::HostNetworkConflict);
            }
            Some(_) => return Err(ControlError::NoneNetworkConflict),
            None => {}
        }
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
        let addr = match (requested.as_deref(), r.assigned_ipv4) {
            (None, Some(ip)) => self.model.ipam.assign_endpoint_address(&net.ipam, ip)?,
            _ => self
                .model
                .ipam
                .allocate_endpoint_address(&net.ipam, requested.as_deref())?,
        };
        let port = free_port(self.model)?;
        let id = self.model.new_id(self.ctx.entropy, IdKind::Endpoint)?;
        let kind = r.port_kind.unwrap_or(self.config.default_port_kind);
        if sb.external != (kind == PortKind::Handoff) {
            return Err(ControlError::Unsupported(format!(
                "sandbox {} {}: handoff ports connect exactly the sandboxes of another runtime",
                sb.name,
                if sb.external {
                    "belongs to another runtime"
                } else {
                    "is vswitch's own"
                }
            )));
        }
        let ifname = format!("eth{}", sb.next_ifindex);
        self.model.sandboxes[si].next_ifindex = sb.next_ifindex.saturating_add(1);
        let default_route = !self
            .model
            .sandbox_endpoints(&sb.id)
            .any(|e| e.default_route);
        let aliases = (!net.builtin).then(|| {
            let mut all = settings.aliases.clone();
            all.push(sb.short_id().to_owned());
            all.extend(sb.hostname.iter().cloned());
            all
        });
        let mut endpoint = Endpoint {
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
            published: Vec::new(),
        };
        let publish = self.publish(&sb, &net, &mut endpoint)?;
        self.effects.push(Effect::AttachEndpoint(attachment(
            &endpoint,
            &net,
            &sb,
            self.config.txqueuelen,
        )));
        self.effects.push(Effect::PushSwitchConfig);
        self.effects.extend(publish);
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
        let ni = match lookup(self.model, network)? {
            NetRef::Switched(i) => i,
            NetRef::Predefined(i) => {
                let net = self.model.predefined[i].name.clone();
                let sb = &mut self.model.sandboxes[si];
                let on = sb.network_mode.as_ref().is_some_and(|m| m.network == net);
                if net == model::HOST_NETWORK && on {
                    return Err(ControlError::HostNetworkConflict);
                }
                if !on {
                    return Err(ControlError::NotConnected {
                        sandbox: sb.name.clone(),
                        network: net,
                    });
                }
                sb.network_mode = None;
                return Ok(Response::Done);
            }
        };
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
        self.unpublish(&e);
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
        // A handed-off interface's routes are its runtime's (Docker moves
        // the default route itself).
        if e.default_route && e.kind != PortKind::Handoff {
            let next = self.model.endpoints.iter().position(|x| x.sandbox == sb.id);
            if let Some(at) = next {
                let mut next = self.model.endpoints[at].clone();
                next.default_route = true;
                let (ifname, num) = (next.ifname.clone(), next.network);
                let next_net =
                    self.model.network(num).cloned().ok_or_else(|| {
                        ControlError::InvalidState(format!("network {num} vanished"))
                    })?;
                let gateway = next_net.gateway;
                // The new gateway endpoint takes over the published ports,
                // as libnetwork programs them on the endpoint that gives
                // the sandbox external connectivity.
                let publish = self.publish(&sb, &next_net, &mut next)?;
                self.model.endpoints[at] = next;
                self.effects.extend(publish);
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

impl Txn<'_, '_> {
    /// `network connect host|none`: only `none`, and only for a sandbox on
    /// no network at all (Docker's `--network none` after a disconnect).
    fn connect_predefined(&mut self, si: usize, pi: usize) -> Result<Response, ControlError> {
        let net = self.model.predefined[pi].clone();
        let sb = self.model.sandboxes[si].clone();
        match sb.network_mode.as_ref() {
            Some(m) if m.network == net.name => {
                return Err(ControlError::AlreadyConnected {
                    sandbox: sb.name,
                    network: net.name,
                });
            }
            Some(m) if m.network == model::HOST_NETWORK => {
                return Err(ControlError::HostNetworkConflict);
            }
            _ if net.name == model::HOST_NETWORK => return Err(ControlError::HostNetworkConflict),
            _ => {}
        }
        if self.model.sandbox_endpoints(&sb.id).next().is_some() {
            return Err(ControlError::NoneNetworkConflict);
        }
        let endpoint = self.model.new_id(self.ctx.entropy, IdKind::Endpoint)?;
        self.model.sandboxes[si].network_mode = Some(model::NetworkMode {
            network: net.name.clone(),
            endpoint: endpoint.clone(),
        });
        Ok(Response::Connected(EndpointView {
            network: net.name,
            network_id: net.id,
            endpoint_id: endpoint,
            interface: String::new(),
            host_interface: String::new(),
            port_kind: PortKind::default(),
            port: 0,
            mac_address: String::new(),
            ipv4_address: String::new(),
            gateway: String::new(),
            default_route: false,
            aliases: None,
            ipam_config: None,
        }))
    }

    /// Publishes the sandbox's ports on `endpoint` when it gives the
    /// sandbox external connectivity (its default route, on a network that
    /// is not internal), all or nothing, binding through the context's
    /// binder; returns the effect that hands the sockets over.
    fn publish(
        &mut self,
        sb: &Sandbox,
        net: &Network,
        endpoint: &mut Endpoint,
    ) -> Result<Option<Effect>, ControlError> {
        if !endpoint.default_route || net.internal || !ports::publishes(sb) {
            return Ok(None);
        }
        let mut bindings = ports::bindings(sb);
        let default_ip = ports::host_binding_ipv4(net);
        if !self.config.host_ipv6 && default_ip.is_unspecified() {
            // Name the address, so the allocator adds no `::` binding.
            for b in &mut bindings {
                b.host_ip.get_or_insert(IpAddr::V4(default_ip));
            }
        }
        let mut retries = Vec::new();
        let mut accept_all = AcceptAll;
        let result = match self.ctx.binder {
            Some(cell) => nat::publish(
                self.ports,
                &bindings,
                ports::host_binding_ipv4(net),
                &mut *cell.borrow_mut(),
                &mut retries,
            ),
            None => nat::publish(
                self.ports,
                &bindings,
                ports::host_binding_ipv4(net),
                &mut accept_all,
                &mut retries,
            ),
        };
        for line in &retries {
            tracing::warn!(sandbox = %sb.name, "{line}");
        }
        let published = result.map_err(|cause| ControlError::ExternalConnectivity {
            sandbox: sb.name.clone(),
            endpoint: endpoint.id.clone(),
            cause,
        })?;
        endpoint.published = published.into_iter().map(PublishedRecord::from).collect();
        Ok(Some(Effect::PublishPorts {
            sandbox: sb.id.clone(),
            endpoint: endpoint.id.clone(),
            network: net.num,
            container: endpoint.ipv4,
            gateway: net.gateway,
            ports: endpoint.published.clone(),
        }))
    }

    /// `Request::PublishPorts`: the endpoint's ports are released, the
    /// sandbox takes the new bindings, and they are published again where
    /// connect would publish them; all or nothing.
    fn publish_ports(
        &mut self,
        sandbox: &str,
        endpoint: &str,
        port_bindings: ports::Bindings,
    ) -> Result<Response, ControlError> {
        let si = sandbox_index(self.model, sandbox)?;
        let host_config = HostConfig {
            port_bindings,
            ..HostConfig::default()
        };
        let (bindings, exposed) = ports::requested(&host_config, &BTreeMap::new())?;
        let sb_id = self.model.sandboxes[si].id.clone();
        let ei = self
            .model
            .endpoints
            .iter()
            .position(|e| e.id == endpoint && e.sandbox == sb_id)
            .ok_or_else(|| {
                ControlError::InvalidState(format!(
                    "endpoint {endpoint} of sandbox {sandbox} not found"
                ))
            })?;
        let mut e = self.model.endpoints[ei].clone();
        self.unpublish(&e);
        e.published = Vec::new();
        let sb = &mut self.model.sandboxes[si];
        sb.port_bindings = bindings;
        sb.exposed_ports = exposed;
        let sb = sb.clone();
        let net =
            self.model.network(e.network).cloned().ok_or_else(|| {
                ControlError::InvalidState(format!("network {} vanished", e.network))
            })?;
        let publish = self.publish(&sb, &net, &mut e)?;
        // Even with nothing left to publish, the effect names the sandbox
        // whose stored endpoint changed.
        let publish = publish.unwrap_or_else(|| Effect::PublishPorts {
            sandbox: sb.id.clone(),
            endpoint: e.id.clone(),
            network: net.num,
            container: e.ipv4,
            gateway: net.gateway,
            ports: Vec::new(),
        });
        self.model.endpoints[ei] = e;
        self.effects.push(publish);
        Ok(Response::Sandbox(sandbox_view(
            self.model,
            &self.model.sandboxes[si],
        )))
    }

    /// Releases an endpoint's published ports (and closes their sockets
    /// through the binder; a failed request reopens them).
    fn unpublish(&mut self, endpoint: &Endpoint) {
        if endpoint.published.is_empty() {
            return;
        }
        let ports: Vec<nat::PublishedPort> = endpoint
            .published
            .iter()
            .map(|&p| nat::PublishedPort::from(p))
            .collect();
        match self.ctx.binder {
            Some(cell) => nat::unpublish(self.ports, &ports, &mut *cell.borrow_mut()),
            None => nat::unpublish(self.ports, &ports, &mut AcceptAll),
        }
    }
}

/// The binder of a plan made without a host: every bind succeeds.
struct AcceptAll;

impl nat::Binder for AcceptAll {
    fn bind(&mut self, _: IpAddr, _: nat::Proto, _: u16) -> Result<(), nat::BindError> {
        Ok(())
    }

    fn unbind(&mut self, _: IpAddr, _: nat::Proto, _: u16) {}
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

/// A network found by name or id: one with a switch, or `host`/`none`.
enum NetRef {
    Switched(usize),
    Predefined(usize),
}

/// Docker's lookup order over every network, `host` and `none` included:
/// full id, then name, then a unique id prefix.
fn lookup(m: &Model, term: &str) -> Result<NetRef, ControlError> {
    if term.is_empty() {
        return Err(ControlError::NetworkNotFound(String::new()));
    }
    let all = || {
        m.networks
            .iter()
            .enumerate()
            .map(|(i, n)| (NetRef::Switched(i), n.id.as_str(), n.name.as_str()))
            .chain(
                m.predefined
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (NetRef::Predefined(i), p.id.as_str(), p.name.as_str())),
            )
    };
    if let Some((r, _, _)) = all().find(|(_, id, _)| *id == term) {
        return Ok(r);
    }
    if let Some((r, _, _)) = all().find(|(_, _, name)| *name == term) {
        return Ok(r);
    }
    let mut matches: Vec<NetRef> = all()
        .filter(|(_, id, _)| id.starts_with(term))
        .map(|(r, _, _)| r)
        .collect();
    match matches.len() {
        0 => Err(ControlError::NetworkNotFound(term.to_owned())),
        1 => matches
            .pop()
            .ok_or_else(|| ControlError::NetworkNotFound(term.to_owned())),
        n => Err(ControlError::AmbiguousNetwork {
            name: term.to_owned(),
            matches: n,
        }),
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
pub(super) fn sandbox_index(m: &Model, term: &str) -> Result<usize, ControlError> {
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

/// Docker's `validHostnamePattern`: letters, digits, dots and dashes,
/// starting and ending with a letter or digit, at most 255 characters.
fn valid_hostname(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() <= 255
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
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

/// An overlay network's VNI: `-o com.docker.network.driver.overlay.vxlanid_list`
/// if given, else the peer file's for its name, else the lowest free from
/// [`model::FIRST_VNI`] (Docker's swarm allocator's first).
fn overlay_vni(
    m: &Model,
    config: &ControllerConfig,
    name: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<u32, ControlError> {
    let used: BTreeSet<u32> = m.networks.iter().filter_map(|n| n.vni).collect();
    let given = match options.get(model::OPT_VXLANID_LIST) {
        Some(v) => {
            let vni = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=fabric::Vni::MAX).contains(n))
                .ok_or_else(|| ControlError::InvalidOption {
                    label: model::OPT_VXLANID_LIST.to_owned(),
                    value: v.clone(),
                    reason: format!("a VNI is an integer from 1 to {}", fabric::Vni::MAX),
                })?;
            Some(vni)
        }
        None => config.overlay_vnis.get(name).copied(),
    };
    match given {
        Some(vni) if used.contains(&vni) => Err(ControlError::Unsupported(format!(
            "VNI {vni} is taken by another overlay network"
        ))),
        Some(vni) => Ok(vni),
        None => (model::FIRST_VNI..=fabric::Vni::MAX)
            .find(|v| !used.contains(v) && !config.overlay_vnis.values().any(|p| p == v))
            .ok_or_else(|| ControlError::Unsupported("no VNI left".to_owned())),
    }
}

fn free_port(m: &Model) -> Result<PortId, ControlError> {
    let used: BTreeSet<u32> = m
        .endpoints
        .iter()
        .map(|e| e.port.0)
        .chain(m.networks.iter().filter_map(|n| n.vtep_port))
        .collect();
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
