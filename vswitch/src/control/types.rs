//! The JSON bodies of the `/v1/` API, in the Docker Engine API's field
//! casing where Docker has the same object (`NetworkCreate`,
//! `NetworkConnect`, `NetworkResource`), so `network inspect` prints what
//! `docker network inspect` prints (docker-reference §8). A struct says
//! the casing once (`rename_all = "PascalCase"`); a field renamed on its
//! own is one whose Docker name is not its name in that casing
//! (`IPv4Address`, `NetworkID`, `IPAM`).
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
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    /// The network's name.
    pub name: String,
    /// Ignored: names are always checked (Docker's default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub check_duplicate: bool,
    /// `bridge` or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// IPv6 is not supported; `true` is refused with Docker's no-pool text.
    #[serde(rename = "EnableIPv6", default, skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    /// Address configuration.
    #[serde(rename = "IPAM", default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamRequest>,
    /// `--internal`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Shown in inspect, otherwise unused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// `-o key=value`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
    /// `--label key=value`.
    #[serde(
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
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IpamRequest {
    /// `default` or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// One entry per subnet.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub config: Vec<IpamConfigEntry>,
    /// Driver options, shown in inspect.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

/// `POST /v1/networks` answer: Docker's `NetworkCreateResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    /// The new network's id.
    pub id: String,
    /// Always empty.
    pub warning: String,
}

/// `POST /v1/networks/{name}/connect`: Docker's `NetworkConnect`, plus the
/// port kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ConnectRequest {
    /// The sandbox's name, id or id prefix.
    pub container: String,
    /// `--ip`, `--alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_config: Option<EndpointSettings>,
    /// TAP (default) or veth. Not a Docker field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct DisconnectRequest {
    /// The sandbox's name, id or id prefix.
    pub container: String,
    /// Accepted for Docker's shape; has no effect.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// `POST /v1/sandboxes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct SandboxCreateRequest {
    /// The sandbox's name.
    pub name: String,
    /// Adopt this existing namespace instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
    /// The namespace at `NetnsPath` belongs to another runtime (Docker) and
    /// may not exist yet: it is recorded, never opened or held, and only
    /// `handoff` ports connect the sandbox. Not a Docker field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// Docker's `HostConfig` fields for the sandbox's networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_config: Option<HostConfig>,
    /// Docker's `Config.Hostname` (`--hostname`): a name the sandbox
    /// answers to on its user-defined networks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Docker's `Config.ExposedPorts` (`--expose`): `{"80/tcp": {}}`.
    #[serde(
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
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HostConfig {
    /// `-p`: `{"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}`, as the
    /// docker CLI sends it (go-connections `ParsePortSpecs`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_bindings: BTreeMap<String, Vec<HostBinding>>,
    /// `-P`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub publish_all_ports: bool,
    /// `--network host` or `--network none` at creation; empty otherwise
    /// (networks are joined with connect).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_mode: String,
    /// `--dns`: the embedded server's upstreams (or the file's nameservers
    /// on the default bridge), replacing the daemon's.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<String>,
    /// `--dns-search`, replacing the daemon's.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search: Vec<String>,
    /// `--dns-option`, replacing the daemon's.
    #[serde(
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
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HostBinding {
    /// The host address; empty for the network's default.
    #[serde(default)]
    pub host_ip: String,
    /// The host port or range; empty for a dynamic port.
    #[serde(default)]
    pub host_port: String,
}

/// The sandbox's side of Docker's `Config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxConfig {
    /// `--hostname`, or empty.
    #[serde(default)]
    pub hostname: String,
    /// Every exposed or published port, `{"80/tcp": {}}`.
    #[serde(default)]
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
#[serde(rename_all = "PascalCase")]
pub struct SandboxView {
    /// The name.
    pub name: String,
    /// The id (64 hex).
    pub id: String,
    /// Created, RFC 3339 with nanoseconds.
    pub created: String,
    /// The namespace file.
    pub netns_path: String,
    /// Whether the daemon created the namespace (false: adopted).
    pub netns_owned: bool,
    /// An adopted namespace whose path no longer leads to it (its process
    /// exited): the sandbox can only be removed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub netns_gone: bool,
    /// Its endpoints, in attach order.
    pub endpoints: Vec<EndpointView>,
    /// What was asked for: `PortBindings`, `PublishAllPorts`.
    #[serde(default)]
    pub host_config: HostConfig,
    /// `ExposedPorts`.
    #[serde(default)]
    pub config: SandboxConfig,
    /// What is in place: `Ports`.
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

/// One endpoint of a sandbox; also the answer to a connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointView {
    /// The network's name.
    pub network: String,
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The interface inside the sandbox.
    pub interface: String,
    /// The device on the host.
    pub host_interface: String,
    /// TAP or veth.
    pub port_kind: PortKind,
    /// The switch port number.
    pub port: u32,
    /// The MAC.
    pub mac_address: String,
    /// `ip/len`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// The network's gateway.
    pub gateway: String,
    /// Whether the sandbox's default route uses this endpoint.
    pub default_route: bool,
    /// DNS aliases; `null` on the default bridge.
    pub aliases: Option<Vec<String>>,
    /// What the connect asked for, as Docker's endpoint settings show it:
    /// the `--ip` given, `null` for an address the IPAM picked.
    #[serde(rename = "IPAMConfig", default)]
    pub ipam_config: Option<EndpointIpamConfig>,
}

/// A network as `docker network inspect` shows it (docker-reference §8),
/// fields in Docker's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// The name.
    pub name: String,
    /// The id (64 hex).
    pub id: String,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    /// `local`.
    pub scope: String,
    /// `bridge`.
    pub driver: String,
    /// Always false.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Address configuration.
    #[serde(rename = "IPAM")]
    pub ipam: IpamView,
    /// `--internal`.
    pub internal: bool,
    /// As given.
    pub attachable: bool,
    /// Always false.
    pub ingress: bool,
    /// `{"Network": ""}`.
    pub config_from: ConfigFrom,
    /// Always false.
    pub config_only: bool,
    /// Endpoints by sandbox id.
    pub containers: BTreeMap<String, EndpointResource>,
    /// `-o` options as given (the default bridge's own set for `bridge`).
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// An overlay network's hosts, this one included (Docker's `Peers`);
    /// absent for other networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[serde(rename_all = "PascalCase")]
pub struct VtepView {
    /// Its underlay address.
    pub vtep: String,
    /// The host's name.
    pub host: String,
    /// The overlay networks it takes part in, by name.
    pub networks: Vec<String>,
    /// Endpoints behind it, published or learned.
    pub endpoints: usize,
    /// Seconds since a packet from it was last accepted; `null` if never.
    pub last_seen: Option<u64>,
    /// Packets encapsulated to it.
    pub tx_packets: u64,
    /// Packets accepted from it.
    pub rx_packets: u64,
    /// Packets from it that were dropped.
    pub drops: u64,
}

/// This host's underlay socket (`GET /v1/underlay`, `vsctl
/// show-underlay`): what it sent and received, how it cut and merged
/// super-frames, and every reason it dropped something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnderlayView {
    /// The socket's address, `ADDR:PORT`.
    pub vtep: String,
    /// Counters by name (`tx_datagrams`, `tx_segmented`, `rx_merged`, …).
    pub counters: BTreeMap<String, u64>,
    /// Received datagrams dropped, by the reason the VXLAN checks gave.
    pub drops: BTreeMap<String, u64>,
}

/// `IPAM` in inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamView {
    /// `default`.
    pub driver: String,
    /// `null` for the default bridge, `{}` or the given map otherwise.
    pub options: Option<BTreeMap<String, String>>,
    /// One entry per pool, keys omitted as Docker omits them (§1.5).
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
#[serde(rename_all = "PascalCase")]
pub struct EndpointResource {
    /// The sandbox's name.
    pub name: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The MAC.
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
#[serde(rename_all = "PascalCase")]
pub struct FdbView {
    /// The switch port.
    pub port: u32,
    /// The name of the sandbox on that port (for Docker's containers, the
    /// container's name once learned); empty for a port of no sandbox (an
    /// overlay network's tunnel).
    #[serde(default)]
    pub sandbox: String,
    /// The network's name.
    pub network: String,
    /// The MAC.
    pub mac_address: String,
    /// Seconds since last seen; `null` for static entries.
    pub age: Option<u64>,
    /// For a MAC behind an overlay network's port: the remote VTEP it
    /// lives behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
}

/// One port and its counters (`GET /v1/ports`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortView {
    /// The switch port.
    pub port: u32,
    /// The sandbox's name.
    pub sandbox: String,
    /// The network's name.
    pub network: String,
    /// The interface inside the sandbox.
    pub interface: String,
    /// The device on the host.
    pub host_interface: String,
    /// `tap` or `veth`.
    pub port_kind: String,
    /// The MAC.
    pub mac_address: String,
    /// `ip/len`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames lost on a full transmit queue.
    pub tx_dropped: u64,
    /// Frames the kernel dropped on the port's device, outside the switch
    /// (a packet socket's full receive queue).
    #[serde(default)]
    pub kernel_dropped: u64,
    /// Frames received and dropped, by reason (non-zero reasons only).
    pub drops: BTreeMap<String, u64>,
}

/// One network's embedded-DNS records (`GET /v1/dns`), as the resolver
/// answers from them. Only user-defined networks have any: the default
/// `bridge` has no service discovery (docker-reference §6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsNetworkView {
    /// The network's name.
    pub network: String,
    /// The network's full id.
    pub id: String,
    /// `--internal`.
    pub internal: bool,
    /// Every endpoint with the names it answers to, in attach order.
    pub endpoints: Vec<DnsEndpointView>,
    /// Every lookup name (lower-cased) with its addresses, sorted by name.
    pub names: Vec<DnsNameView>,
    /// Every address with its PTR answer, sorted by address.
    pub ptr: Vec<DnsPtrView>,
}

/// One endpoint as the resolver knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsEndpointView {
    /// The sandbox's name (the container name).
    pub name: String,
    /// Its network aliases on this network.
    pub aliases: Vec<String>,
    /// The sandbox's 12-hex short id.
    pub short_id: String,
    /// Its hostname, if it answers to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[serde(rename_all = "PascalCase")]
pub struct DnsNameView {
    /// The lower-cased name.
    pub name: String,
    /// What the name is to the endpoints that have it, without
    /// duplicates: `name`, `alias`, `short-id`, `hostname`.
    pub kinds: Vec<String>,
    /// IPv4 addresses in insertion order (the resolver shuffles them per
    /// query), then IPv6 ones.
    pub addresses: Vec<String>,
}

/// One reverse record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsPtrView {
    /// The address.
    pub address: String,
    /// The PTR answer, `container.network.`.
    pub name: String,
}

/// One tuple of a tracked flow, as `conntrack -L` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConntrackTuple {
    /// Where the tuple is seen: a network's name, or `host` for the host
    /// side of a flow.
    pub network: String,
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port (ICMP: echo identifier).
    pub sport: u16,
    /// Destination port (ICMP: echo identifier).
    pub dport: u16,
}

/// One flow of the host connector (`GET /v1/conntrack`), as the operator's
/// `conntrack -L` shows it, with the sandbox it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConntrackView {
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// The sandbox whose endpoint is in the flow (empty if none is).
    pub sandbox: String,
    /// The first packet's tuple.
    pub original: ConntrackTuple,
    /// The tuple answers carry.
    pub reply: ConntrackTuple,
    /// nf_conntrack's state (`ESTABLISHED`, `TIME_WAIT`, `UNREPLIED`, …).
    pub state: String,
    /// Seconds since the flow was created.
    pub age: u64,
    /// Seconds before it expires unless traffic refreshes it.
    pub expires_in: u64,
    /// Packets original, reply.
    pub packets: [u64; 2],
    /// Bytes original, reply.
    pub bytes: [u64; 2],
    /// Traffic was seen both ways (TCP: the handshake completed).
    pub assured: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of `value`'s JSON object, sorted.
    fn keys(value: &impl Serialize) -> Vec<String> {
        let v = serde_json::to_value(value).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn fields_keep_dockers_names_and_their_exceptions() {
        assert_eq!(
            keys(&PortView::default()),
            [
                "Drops",
                "HostInterface",
                "IPv4Address",
                "Interface",
                "KernelDropped",
                "MacAddress",
                "Network",
                "Port",
                "PortKind",
                "RxBytes",
                "RxPackets",
                "Sandbox",
                "TxBytes",
                "TxDropped",
                "TxPackets",
            ]
        );
        assert_eq!(
            keys(&DnsEndpointView {
                hostname: Some("h".into()),
                ..DnsEndpointView::default()
            }),
            [
                "Aliases",
                "Hostname",
                "IPv4Address",
                "IPv6Address",
                "Name",
                "ShortId"
            ]
        );
        // A request as Docker's client writes it; unknown keys refused.
        let r: ConnectRequest = serde_json::from_str(
            r#"{"Container": "c", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.5"}, "Aliases": ["a"]}, "PortKind": "veth"}"#,
        )
        .unwrap();
        assert_eq!(r.container, "c");
        assert_eq!(
            r.endpoint_config.unwrap().ipam_config.unwrap().ipv4_address,
            "10.0.0.5"
        );
        assert!(serde_json::from_str::<ConnectRequest>(r#"{"container": "c"}"#).is_err());
        let create: NetworkCreateRequest = serde_json::from_str(
            r#"{"Name": "n", "CheckDuplicate": true, "Driver": "bridge", "EnableIPv6": false,
                "IPAM": {"Driver": "default", "Config": null, "Options": null},
                "Internal": true, "Attachable": true, "Options": {"k": "v"}, "Labels": null}"#,
        )
        .unwrap();
        assert!(create.internal && create.attachable && create.check_duplicate);
        assert_eq!(create.options["k"], "v");
    }
}
