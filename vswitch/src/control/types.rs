//! The JSON bodies of the `/v1/` API, in the Docker Engine API's field
//! casing where Docker has the same object (`NetworkCreate`,
//! `NetworkConnect`, `NetworkResource`), so `network inspect` prints what
//! `docker network inspect` prints (docker-reference §8).
//!
//! Request bodies refuse unknown fields: a typo is an error, not a silently
//! ignored option. `null` reads as empty, as Go reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

pub use ipam::NetworkIpamConfig as IpamConfigEntry;

use crate::control::PortKind;

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `{"message": "..."}`: every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
}

/// `POST /v1/networks`: Docker's `NetworkCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreateRequest {
    /// The network's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Ignored: names are always checked (Docker's default).
    #[serde(rename = "CheckDuplicate", default, skip_serializing_if = "is_false")]
    pub check_duplicate: bool,
    /// `bridge` or empty.
    #[serde(rename = "Driver", default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// IPv6 is not supported; `true` is refused with Docker's no-pool text.
    #[serde(rename = "EnableIPv6", default, skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    /// Address configuration.
    #[serde(rename = "IPAM", default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamRequest>,
    /// `--internal`.
    #[serde(rename = "Internal", default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Shown in inspect, otherwise unused.
    #[serde(rename = "Attachable", default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// `-o key=value`.
    #[serde(
        rename = "Options",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
    /// `--label key=value`.
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_false(b: &bool) -> bool {
    !*b
}

/// The `IPAM` object of a create request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamRequest {
    /// `default` or empty.
    #[serde(rename = "Driver", default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// One entry per subnet.
    #[serde(
        rename = "Config",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub config: Vec<IpamConfigEntry>,
    /// Driver options, shown in inspect.
    #[serde(
        rename = "Options",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

/// `POST /v1/networks` answer: Docker's `NetworkCreateResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreateResponse {
    /// The new network's id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Always empty.
    #[serde(rename = "Warning")]
    pub warning: String,
}

/// `POST /v1/networks/{name}/connect`: Docker's `NetworkConnect`, plus the
/// port kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The sandbox's name, id or id prefix.
    #[serde(rename = "Container")]
    pub container: String,
    /// `--ip`, `--alias`.
    #[serde(
        rename = "EndpointConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_config: Option<EndpointSettings>,
    /// TAP (default) or veth. Not a Docker field.
    #[serde(rename = "PortKind", default, skip_serializing_if = "Option::is_none")]
    pub port_kind: Option<PortKind>,
    /// The address another allocator took for this endpoint when the
    /// request names none (the cluster's, on an overlay network with
    /// etcd; Docker's IPAM, for the Docker plugin): dynamic, as one the
    /// local IPAM picks, so not shown as a `--ip`. Set inside the daemon,
    /// never read from the API.
    #[serde(skip)]
    pub assigned_ipv4: Option<core::net::Ipv4Addr>,
}

/// The endpoint settings of a connect request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// The static address.
    #[serde(
        rename = "IPAMConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Network-scoped aliases.
    #[serde(
        rename = "Aliases",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<String>,
}

/// `EndpointSettings.IPAMConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointIpamConfig {
    /// `--ip`; empty means none.
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_address: String,
}

/// `POST /v1/networks/{name}/disconnect`: Docker's `NetworkDisconnect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The sandbox's name, id or id prefix.
    #[serde(rename = "Container")]
    pub container: String,
    /// Accepted for Docker's shape; has no effect.
    #[serde(rename = "Force", default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// `POST /v1/sandboxes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxCreateRequest {
    /// The sandbox's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Adopt this existing namespace instead of creating one.
    #[serde(rename = "NetnsPath", default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
    /// The namespace at `NetnsPath` belongs to another runtime (Docker) and
    /// may not exist yet: it is recorded, never opened or held, and only
    /// `handoff` ports connect the sandbox. Not a Docker field.
    #[serde(rename = "External", default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// Docker's `HostConfig` fields for the sandbox's networking.
    #[serde(
        rename = "HostConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_config: Option<HostConfig>,
    /// Docker's `Config.Hostname` (`--hostname`): a name the sandbox
    /// answers to on its user-defined networks.
    #[serde(rename = "Hostname", default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Docker's `Config.ExposedPorts` (`--expose`): `{"80/tcp": {}}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
}

/// `{}`: the value of Docker's port sets (`ExposedPorts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The networking part of Docker's `HostConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `-p`: `{"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}`, as the
    /// docker CLI sends it (go-connections `ParsePortSpecs`).
    #[serde(
        rename = "PortBindings",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_bindings: BTreeMap<String, Vec<HostBinding>>,
    /// `-P`.
    #[serde(rename = "PublishAllPorts", default, skip_serializing_if = "is_false")]
    pub publish_all_ports: bool,
    /// `--network host` or `--network none` at creation; empty otherwise
    /// (networks are joined with connect).
    #[serde(
        rename = "NetworkMode",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub network_mode: String,
    /// `--dns`: the embedded server's upstreams (or the file's nameservers
    /// on the default bridge), replacing the daemon's.
    #[serde(
        rename = "Dns",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<String>,
    /// `--dns-search`, replacing the daemon's.
    #[serde(
        rename = "DnsSearch",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search: Vec<String>,
    /// `--dns-option`, replacing the daemon's.
    #[serde(
        rename = "DnsOptions",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_options: Vec<String>,
}

/// One host binding of a port: requested (`HostConfig.PortBindings`, empty
/// strings for "the default address" and "any port") or in place
/// (`NetworkSettings.Ports`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBinding {
    /// The host address; empty for the network's default.
    #[serde(rename = "HostIp", default)]
    pub host_ip: String,
    /// The host port or range; empty for a dynamic port.
    #[serde(rename = "HostPort", default)]
    pub host_port: String,
}

/// The sandbox's side of Docker's `Config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// `--hostname`, or empty.
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    /// Every exposed or published port, `{"80/tcp": {}}`.
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: BTreeMap<String, Empty>,
}

/// The sandbox's side of Docker's `NetworkSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    /// The ports in place, `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort":
    /// "18080"}, …]}`; an exposed port that is not published maps to `null`.
    #[serde(rename = "Ports", default)]
    pub ports: BTreeMap<String, Option<Vec<HostBinding>>>,
}

/// A sandbox as `GET /v1/sandboxes[/{name}]` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxView {
    /// The name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The id (64 hex).
    #[serde(rename = "Id")]
    pub id: String,
    /// Created, RFC 3339 with nanoseconds.
    #[serde(rename = "Created")]
    pub created: String,
    /// The namespace file.
    #[serde(rename = "NetnsPath")]
    pub netns_path: String,
    /// Whether the daemon created the namespace (false: adopted).
    #[serde(rename = "NetnsOwned")]
    pub netns_owned: bool,
    /// An adopted namespace whose path no longer leads to it (its process
    /// exited): the sandbox can only be removed.
    #[serde(rename = "NetnsGone", default, skip_serializing_if = "is_false")]
    pub netns_gone: bool,
    /// Its endpoints, in attach order.
    #[serde(rename = "Endpoints")]
    pub endpoints: Vec<EndpointView>,
    /// What was asked for: `PortBindings`, `PublishAllPorts`.
    #[serde(rename = "HostConfig", default)]
    pub host_config: HostConfig,
    /// `ExposedPorts`.
    #[serde(rename = "Config", default)]
    pub config: SandboxConfig,
    /// What is in place: `Ports`.
    #[serde(rename = "NetworkSettings", default)]
    pub network_settings: NetworkSettings,
}

/// One endpoint of a sandbox; also the answer to a connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// The network's name.
    #[serde(rename = "Network")]
    pub network: String,
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The interface inside the sandbox.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// The device on the host.
    #[serde(rename = "HostInterface")]
    pub host_interface: String,
    /// TAP or veth.
    #[serde(rename = "PortKind")]
    pub port_kind: PortKind,
    /// The switch port number.
    #[serde(rename = "Port")]
    pub port: u32,
    /// The MAC.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// `ip/len`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// The network's gateway.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    /// Whether the sandbox's default route uses this endpoint.
    #[serde(rename = "DefaultRoute")]
    pub default_route: bool,
    /// DNS aliases; `null` on the default bridge.
    #[serde(rename = "Aliases")]
    pub aliases: Option<Vec<String>>,
    /// What the connect asked for, as Docker's endpoint settings show it:
    /// the `--ip` given, `null` for an address the IPAM picked.
    #[serde(rename = "IPAMConfig", default)]
    pub ipam_config: Option<EndpointIpamConfig>,
}

/// A network as `docker network inspect` shows it (docker-reference §8),
/// fields in Docker's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInspect {
    /// The name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The id (64 hex).
    #[serde(rename = "Id")]
    pub id: String,
    /// RFC 3339 with nanoseconds.
    #[serde(rename = "Created")]
    pub created: String,
    /// `local`.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// `bridge`.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Always false.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Address configuration.
    #[serde(rename = "IPAM")]
    pub ipam: IpamView,
    /// `--internal`.
    #[serde(rename = "Internal")]
    pub internal: bool,
    /// As given.
    #[serde(rename = "Attachable")]
    pub attachable: bool,
    /// Always false.
    #[serde(rename = "Ingress")]
    pub ingress: bool,
    /// `{"Network": ""}`.
    #[serde(rename = "ConfigFrom")]
    pub config_from: ConfigFrom,
    /// Always false.
    #[serde(rename = "ConfigOnly")]
    pub config_only: bool,
    /// Endpoints by sandbox id.
    #[serde(rename = "Containers")]
    pub containers: BTreeMap<String, EndpointResource>,
    /// `-o` options as given (the default bridge's own set for `bridge`).
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// An overlay network's hosts, this one included (Docker's `Peers`);
    /// absent for other networks.
    #[serde(rename = "Peers", default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerInfo>>,
}

/// One host of an overlay network in inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The host's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Its VTEP address.
    #[serde(rename = "IP")]
    pub ip: String,
}

/// One remote VTEP (`GET /v1/vteps`, `vsctl show-vteps`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepView {
    /// Its underlay address.
    #[serde(rename = "Vtep")]
    pub vtep: String,
    /// The host's name.
    #[serde(rename = "Host")]
    pub host: String,
    /// The overlay networks it takes part in, by name.
    #[serde(rename = "Networks")]
    pub networks: Vec<String>,
    /// Endpoints behind it, published or learned.
    #[serde(rename = "Endpoints")]
    pub endpoints: usize,
    /// Seconds since a packet from it was last accepted; `null` if never.
    #[serde(rename = "LastSeen")]
    pub last_seen: Option<u64>,
    /// Packets encapsulated to it.
    #[serde(rename = "TxPackets")]
    pub tx_packets: u64,
    /// Packets accepted from it.
    #[serde(rename = "RxPackets")]
    pub rx_packets: u64,
    /// Packets from it that were dropped.
    #[serde(rename = "Drops")]
    pub drops: u64,
}

/// This host's underlay socket (`GET /v1/underlay`, `vsctl
/// show-underlay`): what it sent and received, how it cut and merged
/// super-frames, and every reason it dropped something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlayView {
    /// The socket's address, `ADDR:PORT`.
    #[serde(rename = "Vtep")]
    pub vtep: String,
    /// Counters by name (`tx_datagrams`, `tx_segmented`, `rx_merged`, …).
    #[serde(rename = "Counters")]
    pub counters: BTreeMap<String, u64>,
    /// Received datagrams dropped, by the reason the VXLAN checks gave.
    #[serde(rename = "Drops")]
    pub drops: BTreeMap<String, u64>,
}

/// `IPAM` in inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamView {
    /// `default`.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// `null` for the default bridge, `{}` or the given map otherwise.
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    /// One entry per pool, keys omitted as Docker omits them (§1.5).
    #[serde(rename = "Config")]
    pub config: Vec<IpamConfigEntry>,
}

/// `ConfigFrom` in inspect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFrom {
    /// Always empty.
    #[serde(rename = "Network")]
    pub network: String,
}

/// One entry of `Containers` in inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointResource {
    /// The sandbox's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The MAC.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// `ip/len`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Always empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// One FDB entry (`GET /v1/fdb`), as `ovs-appctl fdb/show` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbView {
    /// The switch port.
    #[serde(rename = "Port")]
    pub port: u32,
    /// The name of the sandbox on that port (for Docker's containers, the
    /// container's name once learned); empty for a port of no sandbox (an
    /// overlay network's tunnel).
    #[serde(rename = "Sandbox", default)]
    pub sandbox: String,
    /// The network's name.
    #[serde(rename = "Network")]
    pub network: String,
    /// The MAC.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// Seconds since last seen; `null` for static entries.
    #[serde(rename = "Age")]
    pub age: Option<u64>,
    /// For a MAC behind an overlay network's port: the remote VTEP it
    /// lives behind.
    #[serde(rename = "Vtep", default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
}

/// One port and its counters (`GET /v1/ports`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// The switch port.
    #[serde(rename = "Port")]
    pub port: u32,
    /// The sandbox's name.
    #[serde(rename = "Sandbox")]
    pub sandbox: String,
    /// The network's name.
    #[serde(rename = "Network")]
    pub network: String,
    /// The interface inside the sandbox.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// The device on the host.
    #[serde(rename = "HostInterface")]
    pub host_interface: String,
    /// `tap` or `veth`.
    #[serde(rename = "PortKind")]
    pub port_kind: String,
    /// The MAC.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// `ip/len`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Frames received from the port.
    #[serde(rename = "RxPackets")]
    pub rx_packets: u64,
    /// Bytes received from the port.
    #[serde(rename = "RxBytes")]
    pub rx_bytes: u64,
    /// Frames sent to the port.
    #[serde(rename = "TxPackets")]
    pub tx_packets: u64,
    /// Bytes sent to the port.
    #[serde(rename = "TxBytes")]
    pub tx_bytes: u64,
    /// Frames lost on a full transmit queue.
    #[serde(rename = "TxDropped")]
    pub tx_dropped: u64,
    /// Frames the kernel dropped on the port's device, outside the switch
    /// (a packet socket's full receive queue).
    #[serde(rename = "KernelDropped", default)]
    pub kernel_dropped: u64,
    /// Frames received and dropped, by reason (non-zero reasons only).
    #[serde(rename = "Drops")]
    pub drops: BTreeMap<String, u64>,
}

/// One network's embedded-DNS records (`GET /v1/dns`), as the resolver
/// answers from them. Only user-defined networks have any: the default
/// `bridge` has no service discovery (docker-reference §6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNetworkView {
    /// The network's name.
    #[serde(rename = "Network")]
    pub network: String,
    /// The network's full id.
    #[serde(rename = "Id")]
    pub id: String,
    /// `--internal`.
    #[serde(rename = "Internal")]
    pub internal: bool,
    /// Every endpoint with the names it answers to, in attach order.
    #[serde(rename = "Endpoints")]
    pub endpoints: Vec<DnsEndpointView>,
    /// Every lookup name (lower-cased) with its addresses, sorted by name.
    #[serde(rename = "Names")]
    pub names: Vec<DnsNameView>,
    /// Every address with its PTR answer, sorted by address.
    #[serde(rename = "Ptr")]
    pub ptr: Vec<DnsPtrView>,
}

/// One endpoint as the resolver knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEndpointView {
    /// The sandbox's name (the container name).
    #[serde(rename = "Name")]
    pub name: String,
    /// Its network aliases on this network.
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
    /// The sandbox's 12-hex short id.
    #[serde(rename = "ShortId")]
    pub short_id: String,
    /// Its hostname, if it answers to one.
    #[serde(rename = "Hostname", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its IPv4 address.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Its IPv6 address, or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// One lookup name and what an A/AAAA query for it returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNameView {
    /// The lower-cased name.
    #[serde(rename = "Name")]
    pub name: String,
    /// What the name is to the endpoints that have it, without
    /// duplicates: `name`, `alias`, `short-id`, `hostname`.
    #[serde(rename = "Kinds")]
    pub kinds: Vec<String>,
    /// IPv4 addresses in insertion order (the resolver shuffles them per
    /// query), then IPv6 ones.
    #[serde(rename = "Addresses")]
    pub addresses: Vec<String>,
}

/// One reverse record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPtrView {
    /// The address.
    #[serde(rename = "Address")]
    pub address: String,
    /// The PTR answer, `container.network.`.
    #[serde(rename = "Name")]
    pub name: String,
}

/// One tuple of a tracked flow, as `conntrack -L` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackTuple {
    /// Where the tuple is seen: a network's name, or `host` for the host
    /// side of a flow.
    #[serde(rename = "Network")]
    pub network: String,
    /// Source address.
    #[serde(rename = "Src")]
    pub src: String,
    /// Destination address.
    #[serde(rename = "Dst")]
    pub dst: String,
    /// Source port (ICMP: echo identifier).
    #[serde(rename = "Sport")]
    pub sport: u16,
    /// Destination port (ICMP: echo identifier).
    #[serde(rename = "Dport")]
    pub dport: u16,
}

/// One flow of the host connector (`GET /v1/conntrack`), as the operator's
/// `conntrack -L` shows it, with the sandbox it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackView {
    /// `tcp`, `udp` or `icmp`.
    #[serde(rename = "Protocol")]
    pub protocol: String,
    /// The sandbox whose endpoint is in the flow (empty if none is).
    #[serde(rename = "Sandbox")]
    pub sandbox: String,
    /// The first packet's tuple.
    #[serde(rename = "Original")]
    pub original: ConntrackTuple,
    /// The tuple answers carry.
    #[serde(rename = "Reply")]
    pub reply: ConntrackTuple,
    /// nf_conntrack's state (`ESTABLISHED`, `TIME_WAIT`, `UNREPLIED`, …).
    #[serde(rename = "State")]
    pub state: String,
    /// Seconds since the flow was created.
    #[serde(rename = "Age")]
    pub age: u64,
    /// Seconds before it expires unless traffic refreshes it.
    #[serde(rename = "ExpiresIn")]
    pub expires_in: u64,
    /// Packets original, reply.
    #[serde(rename = "Packets")]
    pub packets: [u64; 2],
    /// Bytes original, reply.
    #[serde(rename = "Bytes")]
    pub bytes: [u64; 2],
    /// Traffic was seen both ways (TCP: the handshake completed).
    #[serde(rename = "Assured")]
    pub assured: bool,
}
