//! The persisted control-plane state: what `docker network inspect` and
//! `docker inspect` would show, plus the dense ids the switch uses.
//!
//! The whole [`Model`] serializes to one JSON document ([`super::store`]
//! writes it under one key), IPAM allocator included, so a restarted daemon
//! gets back every network, sandbox, endpoint, address and device name.
//!
//! Invariants ([`Model::validate`] checks them on load):
//! - network names, network ids, [`NetworkId`]s are unique; so are sandbox
//!   names and ids, endpoint ids, [`PortId`]s and host device names;
//! - every endpoint names an existing network and sandbox, and a sandbox has
//!   at most one endpoint per network;
//! - a sandbox has at most one endpoint holding its default route;
//! - every endpoint's address is taken in one of its network's pools.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};
use std::collections::BTreeMap;

use nat::alloc::PublishedPort;
use nat::spec::Proto;

use ipam::{Ipam, NetworkIpam, NetworkIpamConfig, NetworkIpamRequest};
use serde::{Deserialize, Serialize};

use super::error::ControlError;
use super::types::HostBinding;
use super::{Ctx, Entropy};
use crate::ids::{MacAddr, NetworkId, PortId};

/// The version of the stored JSON shape; bumped on incompatible changes.
pub const MODEL_VERSION: u32 = 1;

/// The default network's name.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Docker's host-namespace network (driver `host`).
pub const HOST_NETWORK: &str = "host";

/// Docker's no-network network (driver `null`).
pub const NONE_NETWORK: &str = "none";

/// Docker's `host` or `none` network: listed and inspected like the others,
/// never removed, and with no switch, address or device behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredefinedNetwork {
    /// 64 lowercase hex digits.
    pub id: String,
    /// `host` or `none`.
    pub name: String,
    /// `host` or `null`.
    pub driver: String,
    /// Created, RFC 3339 with nanoseconds.
    pub created: String,
}

/// A sandbox's membership of `host` or `none`, which excludes every other
/// network (docker-reference §2: `--network host|none`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMode {
    /// `host` or `none`.
    pub network: String,
    /// The endpoint id `network inspect` shows for it.
    pub endpoint: String,
}

/// Docker's default network's subnet (docker-reference §1.1).
pub const DEFAULT_SUBNET: &str = "172.17.0.0/16";

/// Docker's default MTU.
pub const DEFAULT_MTU: u16 = 1500;

/// `com.docker.network.bridge.enable_icc`.
pub const OPT_ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// `com.docker.network.driver.mtu`.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// `com.docker.network.bridge.enable_ip_masquerade`.
pub const OPT_ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `com.docker.network.bridge.host_binding_ipv4`.
pub const OPT_HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
/// `com.docker.network.bridge.default_bridge`.
pub const OPT_DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// `com.docker.network.bridge.name`.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// `com.docker.network.driver.overlay.vxlanid_list`: an overlay network's
/// VNI, as Docker's swarm managers hand it to the driver and inspect shows
/// it.
pub const OPT_VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// The first VNI handed out (Docker's swarm allocator starts there).
pub const FIRST_VNI: u32 = 4096;
/// Bytes of outer headers an overlay takes from the MTU (Ethernet, IPv4,
/// UDP, VXLAN): Docker's overlay MTU is the driver MTU less this.
pub const VXLAN_OVERHEAD: u16 = 50;
/// `com.docker.network.bridge.inhibit_ipv4`.
pub const OPT_INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";

/// How an endpoint's interface reaches the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A TAP device moved into the sandbox; the daemon holds its fd.
    #[default]
    Tap,
    /// A veth pair; the host end is read through `AF_PACKET`.
    Veth,
    /// A veth pair whose peer is left, unconfigured, in the daemon's own
    /// namespace for another runtime to move into the sandbox and configure
    /// (Docker's `Join`, [`crate::docker`]); the host end stays in the ports
    /// namespace like [`Self::Veth`]'s. The daemon never configures the
    /// sandbox side, nor serves DNS in the sandbox: that runtime does.
    Handoff,
}

impl PortKind {
    /// `tap` or `veth`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tap => "tap",
            Self::Veth => "veth",
            Self::Handoff => "handoff",
        }
    }

    /// The host device name prefix: `vst` for TAP, `vsv` for veth. With 12
    /// hex digits of the endpoint id it makes a 15-character name, the
    /// kernel's limit.
    #[must_use]
    pub const fn device_prefix(self) -> &'static str {
        match self {
            Self::Tap => "vst",
            Self::Veth | Self::Handoff => "vsv",
        }
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for PortKind {
    type Err = ControlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tap" => Ok(Self::Tap),
            "veth" => Ok(Self::Veth),
            "handoff" => Ok(Self::Handoff),
            other => Err(ControlError::Unsupported(format!(
                "invalid port kind {other:?}: expected tap, veth or handoff"
            ))),
        }
    }
}

/// One network (a broadcast domain with its gateway).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The switch's dense id for it.
    #[serde(with = "serde_network_id")]
    pub num: NetworkId,
    /// 64 lowercase hex digits.
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// `bridge` or `overlay`.
    pub driver: String,
    /// Created, RFC 3339 with nanoseconds.
    pub created: String,
    /// Docker's pre-defined network (the default `bridge`): it cannot be
    /// removed and refuses static addresses and aliases.
    pub builtin: bool,
    /// `--internal`: no route out through the gateway's NAT.
    pub internal: bool,
    /// `Attachable`, as given.
    pub attachable: bool,
    /// The `IPAM.Config` entries as the user gave them.
    pub ipam_config: Vec<NetworkIpamConfig>,
    /// `IPAM.Options`: `None` for the default bridge (inspect shows `null`).
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// The network's pools in the allocator.
    pub ipam: NetworkIpam,
    /// The gateway address (first pool).
    pub gateway: Ipv4Addr,
    /// The first pool's prefix length.
    pub prefix_len: u8,
    /// The gateway's MAC: `02:42` and four random bytes, as Docker's bridge.
    #[serde(with = "serde_mac")]
    pub gateway_mac: MacAddr,
    /// `-o key=value`, exactly as given.
    pub options: BTreeMap<String, String>,
    /// Labels, as given.
    pub labels: BTreeMap<String, String>,
    /// Parsed `com.docker.network.bridge.enable_icc` (default true).
    pub icc: bool,
    /// The MTU containers get: parsed `com.docker.network.driver.mtu`
    /// (default 1500), less [`VXLAN_OVERHEAD`] on an overlay.
    pub mtu: u16,
    /// An overlay network's VNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// An overlay network's port towards the other hosts (an uplink port
    /// of the switch), numbered with the endpoints' ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_port: Option<u32>,
}

impl Network {
    /// `com.docker.network.bridge.enable_ip_masquerade` (default true):
    /// whether the network's egress leaves with the host's address. The
    /// value was checked when the network was created.
    #[must_use]
    pub fn ip_masquerade(&self) -> bool {
        self.options
            .get(OPT_ENABLE_IP_MASQUERADE)
            .is_none_or(|v| super::options::go_parse_bool(v).unwrap_or(true))
    }

    /// `com.docker.network.bridge.host_binding_ipv4` (default 0.0.0.0):
    /// the host address of a published port that names none.
    #[must_use]
    pub fn host_binding_ipv4(&self) -> Ipv4Addr {
        match self.options.get(OPT_HOST_BINDING_IPV4).map(|v| v.parse()) {
            Some(Ok(IpAddr::V4(ip))) => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The first 12 hex digits of the id.
    #[must_use]
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}

/// A network namespace containers' interfaces live in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// 64 lowercase hex digits.
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// Path of the namespace file (a bind mount, or `/proc/PID/ns/net`).
    pub netns_path: String,
    /// Whether the daemon created the namespace (and deletes it on removal)
    /// or adopted one that exists.
    pub netns_owned: bool,
    /// Created, RFC 3339 with nanoseconds.
    pub created: String,
    /// The next interface index: `eth0`, `eth1`, … in attach order, never
    /// reused while the sandbox lives (libnetwork's `nextIfIndex`).
    pub next_ifindex: u32,
    /// For an adopted namespace: the daemon's own bind mount of it, made at
    /// adoption under its run directory. Every later use goes through this
    /// handle, never through `netns_path` again: a `/proc/PID/ns/net` path
    /// names another namespace once its process exits and the PID is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_handle: Option<String>,
    /// The namespace is another runtime's (Docker's sandbox), recorded but
    /// never opened or held by the daemon: its endpoints are `handoff`
    /// ports, whose sandbox side that runtime moves in and configures.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub external: bool,
    /// `-p`/`--publish` as Docker keeps them in `HostConfig.PortBindings`:
    /// `80/tcp` to the host bindings asked for, published when the sandbox
    /// gets its gateway endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_bindings: BTreeMap<String, Vec<HostBinding>>,
    /// `-P`/`--publish-all`: every exposed port gets a dynamic host port.
    #[serde(default, skip_serializing_if = "is_false")]
    pub publish_all: bool,
    /// `--expose` (and every port `-p` names), as `80/tcp`, in Docker's
    /// `Config.ExposedPorts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    /// On `host` (sharing the daemon's namespace) or `none` (loopback
    /// only); such a sandbox has no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// `--dns`, `--dns-search`, `--dns-option`: each kind given replaces
    /// the daemon's.
    #[serde(default, skip_serializing_if = "SandboxDns::is_empty")]
    pub dns: SandboxDns,
    /// `--hostname`: answered by the embedded DNS as the sandbox's address
    /// and listed among its aliases (docker-reference §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A sandbox's own resolver settings (docker-reference §6.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxDns {
    /// `--dns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<IpAddr>,
    /// `--dns-search`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// `--dns-option`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl SandboxDns {
    /// Nothing given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    /// The daemon's settings with each kind this sandbox gives replaced,
    /// as dockerd combines a container's `--dns*` with its own.
    #[must_use]
    pub fn over(&self, daemon: &dns::resolv_conf::DnsSettings) -> dns::resolv_conf::DnsSettings {
        let pick = |mine: &Vec<String>, theirs: &Vec<String>| {
            if mine.is_empty() {
                theirs.clone()
            } else {
                mine.clone()
            }
        };
        dns::resolv_conf::DnsSettings {
            servers: if self.servers.is_empty() {
                daemon.servers.clone()
            } else {
                self.servers.clone()
            },
            search: pick(&self.search, &daemon.search),
            options: pick(&self.options, &daemon.options),
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_false(b: &bool) -> bool {
    !*b
}

/// A published port as stored with its endpoint: what `docker port` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedRecord {
    /// The container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    #[serde(with = "serde_proto")]
    pub proto: Proto,
    /// The host address.
    pub host_ip: IpAddr,
    /// The host port.
    pub host_port: u16,
}

impl From<PublishedPort> for PublishedRecord {
    fn from(p: PublishedPort) -> Self {
        Self {
            container_port: p.container_port,
            proto: p.proto,
            host_ip: p.host_ip,
            host_port: p.host_port,
        }
    }
}

impl From<PublishedRecord> for PublishedPort {
    fn from(p: PublishedRecord) -> Self {
        Self {
            container_port: p.container_port,
            proto: p.proto,
            host_ip: p.host_ip,
            host_port: p.host_port,
        }
    }
}

pub(super) mod serde_proto {
    use nat::spec::Proto;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::control) fn serialize<S: Serializer>(p: &Proto, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub(in crate::control) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Proto, D::Error> {
        match String::deserialize(d)?.as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => Err(serde::de::Error::custom(format!("invalid proto {other:?}"))),
        }
    }
}

impl Sandbox {
    /// The file the daemon enters the namespace through: its handle for an
    /// adopted namespace, the namespace it created otherwise.
    #[must_use]
    pub fn netns_file(&self) -> &str {
        self.netns_handle.as_deref().unwrap_or(&self.netns_path)
    }

    /// The first 12 hex digits of the id.
    #[must_use]
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}

/// A sandbox's attachment to a network: one switch port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 lowercase hex digits.
    pub id: String,
    /// The network.
    #[serde(with = "serde_network_id")]
    pub network: NetworkId,
    /// The sandbox's id.
    pub sandbox: String,
    /// The switch port.
    #[serde(with = "serde_port_id")]
    pub port: PortId,
    /// The interface name inside the sandbox (`eth0`, …).
    pub ifname: String,
    /// The device name on the host side (`vst…`/`vsv…`, 15 characters).
    pub host_ifname: String,
    /// TAP or veth.
    pub kind: PortKind,
    /// The endpoint's MAC (`02:42` + its IPv4 address).
    #[serde(with = "serde_mac")]
    pub mac: MacAddr,
    /// The endpoint's address.
    pub ipv4: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The static address as the user typed it (`--ip`), if any.
    pub requested_ip: Option<String>,
    /// DNS aliases on the network (docker-reference §2): user aliases, then
    /// the sandbox's short id; `None` on the default bridge.
    pub aliases: Option<Vec<String>>,
    /// Whether the sandbox's default route goes through this endpoint's
    /// gateway.
    pub default_route: bool,
    /// The sandbox's published ports, held by the endpoint that gives it
    /// external connectivity (its gateway endpoint on a network that is not
    /// internal), as Docker's bridge driver programs them on that endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedRecord>,
}

/// Everything the control plane knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// [`MODEL_VERSION`].
    pub version: u32,
    /// Networks, in creation order.
    pub networks: Vec<Network>,
    /// Docker's `host` and `none` networks, which have no switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predefined: Vec<PredefinedNetwork>,
    /// Sandboxes, in creation order.
    pub sandboxes: Vec<Sandbox>,
    /// Endpoints, in attach order.
    pub endpoints: Vec<Endpoint>,
    /// The address allocator.
    pub ipam: Ipam,
}

impl Model {
    /// A model with Docker's default `bridge` network only (172.17.0.0/16,
    /// gateway 172.17.0.1, the options `docker network inspect bridge`
    /// shows), created on a daemon's first start.
    ///
    /// # Errors
    /// Only if the id source keeps producing unusable ids, or IPAM refuses
    /// the built-in subnet (neither happens with a working source).
    pub fn with_defaults(ctx: &Ctx<'_>) -> Result<Self, ControlError> {
        let mut model = Self {
            version: MODEL_VERSION,
            networks: Vec::new(),
            predefined: Vec::new(),
            sandboxes: Vec::new(),
            endpoints: Vec::new(),
            ipam: Ipam::new(),
        };
        let id = model.new_id(ctx.entropy, IdKind::Network)?;
        let config = NetworkIpamConfig::subnet(DEFAULT_SUBNET);
        let request = NetworkIpamRequest::new(DEFAULT_NETWORK, id.clone())
            .builtin()
            .with_config(config.clone());
        let ipam = model.ipam.create_network(&request)?;
        let (gateway, prefix_len) = model.first_pool_gateway(&ipam)?;
        let options: BTreeMap<String, String> = [
            (OPT_DEFAULT_BRIDGE, "true"),
            (OPT_ENABLE_ICC, "true"),
            (OPT_ENABLE_IP_MASQUERADE, "true"),
            (OPT_HOST_BINDING_IPV4, "0.0.0.0"),
            (OPT_BRIDGE_NAME, "docker0"),
            (OPT_MTU, "1500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let gateway_mac = random_gateway_mac(ctx.entropy, gateway, prefix_len);
        model.networks.push(Network {
            num: NetworkId(0),
            id,
            name: DEFAULT_NETWORK.to_owned(),
            driver: "bridge".to_owned(),
            created: ctx.now.to_owned(),
            builtin: true,
            internal: false,
            attachable: false,
            ipam_config: vec![config],
            ipam_options: None,
            ipam,
            gateway,
            prefix_len,
            gateway_mac,
            options,
            labels: BTreeMap::new(),
            icc: true,
            mtu: DEFAULT_MTU,
            vni: None,
            vtep_port: None,
        });
        model.ensure_predefined(ctx)?;
        Ok(model)
    }

    /// Adds Docker's `host` and `none` networks if the model lacks them (a
    /// first start, or a state written before they existed). Returns
    /// whether it added any.
    ///
    /// # Errors
    /// Only if the id source keeps producing unusable ids.
    pub fn ensure_predefined(&mut self, ctx: &Ctx<'_>) -> Result<bool, ControlError> {
        let mut added = false;
        for (name, driver) in [(HOST_NETWORK, "host"), (NONE_NETWORK, "null")] {
            if self.predefined.iter().any(|p| p.name == name) {
                continue;
            }
            let id = self.new_id(ctx.entropy, IdKind::Network)?;
            self.predefined.push(PredefinedNetwork {
                id,
                name: name.to_owned(),
                driver: driver.to_owned(),
                created: ctx.now.to_owned(),
            });
            added = true;
        }
        Ok(added)
    }

    /// A pre-defined network by name (`host`, `none`).
    #[must_use]
    pub fn predefined(&self, name: &str) -> Option<&PredefinedNetwork> {
        self.predefined.iter().find(|p| p.name == name)
    }

    /// The gateway and prefix length of a network's first pool.
    pub(crate) fn first_pool_gateway(
        &self,
        ipam: &NetworkIpam,
    ) -> Result<(Ipv4Addr, u8), ControlError> {
        let pool = ipam
            .pools()
            .first()
            .and_then(|&id| self.ipam.pool(id))
            .ok_or_else(|| {
                ControlError::InvalidState(format!("network {} has no pool", ipam.name()))
            })?;
        let gateway = pool.gateway().ok_or_else(|| {
            ControlError::InvalidState(format!("network {} has no gateway", ipam.name()))
        })?;
        Ok((gateway, pool.subnet().prefix_len()))
    }

    /// A network by its dense id.
    #[must_use]
    pub fn network(&self, num: NetworkId) -> Option<&Network> {
        self.networks.iter().find(|n| n.num == num)
    }

    /// A sandbox by its full id.
    #[must_use]
    pub fn sandbox(&self, id: &str) -> Option<&Sandbox> {
        self.sandboxes.iter().find(|s| s.id == id)
    }

    /// The endpoints of a sandbox, in attach order.
    pub fn sandbox_endpoints<'a>(
        &'a self,
        sandbox_id: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .iter()
            .filter(move |e| e.sandbox == sandbox_id)
    }

    /// The endpoints on a network, in attach order.
    pub fn network_endpoints(&self, num: NetworkId) -> impl Iterator<Item = &Endpoint> + '_ {
        self.endpoints.iter().filter(move |e| e.network == num)
    }

    /// The endpoint on a port.
    #[must_use]
    pub fn endpoint_by_port(&self, port: PortId) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.port == port)
    }

    /// A fresh 64-hex id, unique (also in its first 12 digits) among ids of
    /// its kind, whose short form is not all decimal digits (Docker's
    /// `stringid.GenerateRandomID` rule, so a short id never reads as a
    /// number).
    pub(crate) fn new_id(
        &self,
        entropy: &dyn Entropy,
        kind: IdKind,
    ) -> Result<String, ControlError> {
        for _ in 0..64 {
            let mut bytes = [0u8; 32];
            entropy.fill(&mut bytes);
            let id = hex(&bytes);
            let s = short(&id);
            if s.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let taken = match kind {
                IdKind::Network => {
                    self.networks.iter().any(|n| short(&n.id) == s)
                        || self.predefined.iter().any(|n| short(&n.id) == s)
                }
                IdKind::Sandbox => self.sandboxes.iter().any(|n| short(&n.id) == s),
                IdKind::Endpoint => self.endpoints.iter().any(|n| short(&n.id) == s),
            };
            if !taken {
                return Ok(id);
            }
        }
        Err(ControlError::internal(
            "could not generate a unique id",
            "the random source repeats itself",
        ))
    }

    /// Checks the invariants listed in the module docs.
    ///
    /// # Errors
    /// [`ControlError::InvalidState`] naming the first broken one.
    pub fn validate(&self) -> Result<(), ControlError> {
        let bad = |m: String| Err(ControlError::InvalidState(m));
        if self.version != MODEL_VERSION {
            return bad(format!(
                "model version {} is not the supported version {MODEL_VERSION}",
                self.version
            ));
        }
        for (i, n) in self.networks.iter().enumerate() {
            for m in &self.networks[..i] {
                if m.num == n.num || m.id == n.id || m.name == n.name {
                    return bad(format!("networks {} and {} collide", m.name, n.name));
                }
            }
            if let Some(port) = n.vtep_port
                && (self.endpoints.iter().any(|e| e.port.0 == port)
                    || self.networks[..i].iter().any(|m| m.vtep_port == Some(port)))
            {
                return bad(format!("network {} shares port {port}", n.name));
            }
            if n.vni.is_some() && self.networks[..i].iter().any(|m| m.vni == n.vni) {
                return bad(format!("network {} shares its VNI", n.name));
            }
            if n.ipam.pools().iter().any(|&p| self.ipam.pool(p).is_none()) {
                return bad(format!(
                    "network {} names a pool IPAM does not have",
                    n.name
                ));
            }
        }
        for (i, s) in self.sandboxes.iter().enumerate() {
            for t in &self.sandboxes[..i] {
                if t.id == s.id || t.name == s.name {
                    return bad(format!("sandboxes {} and {} collide", t.name, s.name));
                }
            }
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if self.network(e.network).is_none() {
                return bad(format!(
                    "endpoint {} is on unknown network {}",
                    e.id, e.network
                ));
            }
            if self.sandbox(&e.sandbox).is_none() {
                return bad(format!(
                    "endpoint {} is in unknown sandbox {}",
                    e.id, e.sandbox
                ));
            }
            let allocated = self.network(e.network).is_some_and(|n| {
                n.ipam
                    .pools()
                    .iter()
                    .filter_map(|&p| self.ipam.pool(p))
                    .any(|p| p.contains(e.ipv4) && p.is_taken(e.ipv4))
            });
            if !allocated {
                return bad(format!(
                    "endpoint {} has address {} that IPAM does not hold for it",
                    e.id, e.ipv4
                ));
            }
            for f in &self.endpoints[..i] {
                if f.id == e.id
                    || f.port == e.port
                    || f.host_ifname == e.host_ifname
                    || (f.sandbox == e.sandbox && (f.network == e.network || f.ifname == e.ifname))
                    || (f.sandbox == e.sandbox && f.default_route && e.default_route)
                {
                    return bad(format!("endpoints {} and {} collide", f.id, e.id));
                }
            }
        }
        Ok(())
    }
}

/// Which table an id must be unique in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdKind {
    Network,
    Sandbox,
    Endpoint,
}

/// A gateway MAC as Docker's bridge gets one: `02:42` and four random
/// bytes. The four bytes are drawn again while they would read as an
/// address of the network, so the MAC can never equal an endpoint's
/// (`02:42` + its IPv4 address).
pub(crate) fn random_gateway_mac(
    entropy: &dyn Entropy,
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> MacAddr {
    let mut tail = [0u8; 4];
    for _ in 0..16 {
        entropy.fill(&mut tail);
        if !in_subnet(Ipv4Addr::from(tail), gateway, prefix_len) {
            break;
        }
    }
    MacAddr([0x02, 0x42, tail[0], tail[1], tail[2], tail[3]])
}

/// Whether `a` is in the `prefix_len`-bit network of `net`.
pub(crate) fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = match prefix_len {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    };
    u32::from(a) & mask == u32::from(net) & mask
}

/// The first 12 characters (Docker's short id).
#[must_use]
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

pub(super) mod serde_network_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::NetworkId;

    pub(in crate::control) fn serialize<S: Serializer>(
        id: &NetworkId,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u32(id.0)
    }

    pub(in crate::control) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<NetworkId, D::Error> {
        u32::deserialize(d).map(NetworkId)
    }
}

pub(super) mod serde_port_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::PortId;

    pub(in crate::control) fn serialize<S: Serializer>(
        id: &PortId,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u32(id.0)
    }

    pub(in crate::control) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<PortId, D::Error> {
        u32::deserialize(d).map(PortId)
    }
}

pub(super) mod serde_mac {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::MacAddr;

    pub(in crate::control) fn serialize<S: Serializer>(
        mac: &MacAddr,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub(in crate::control) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SeededEntropy;

    #[test]
    fn ids_are_64_hex_with_a_non_numeric_short_form() {
        let e = SeededEntropy::new(1);
        let model = Model::with_defaults(&Ctx::new("t", &e)).unwrap();
        let id = model.new_id(&e, IdKind::Sandbox).unwrap();
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(!short(&id).bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn gateway_mac_is_never_an_endpoint_mac() {
        let e = SeededEntropy::new(3);
        for _ in 0..100 {
            let mac = random_gateway_mac(&e, Ipv4Addr::new(10, 0, 0, 1), 1);
            assert_eq!(&mac.0[..2], &[0x02, 0x42]);
            assert!(mac.0[2] >= 128, "{mac}");
        }
    }

    #[test]
    fn subnet_membership() {
        let net = Ipv4Addr::new(172, 17, 0, 1);
        assert!(in_subnet(Ipv4Addr::new(172, 17, 255, 9), net, 16));
        assert!(!in_subnet(Ipv4Addr::new(172, 18, 0, 1), net, 16));
        assert!(in_subnet(Ipv4Addr::new(1, 2, 3, 4), net, 0));
        assert!(!in_subnet(Ipv4Addr::new(172, 17, 0, 2), net, 32));
    }
}
