//! The JSON bodies of Docker's legacy plugin protocol, with libnetwork's
//! exact keys (`drivers/remote/api`, `ipams/remote/api`;
//! docker-reference §9.2 and §9.4).
//!
//! Requests are read leniently, as Go's `encoding/json` reads them: unknown
//! keys are ignored (engines add fields over time), a missing key or `null`
//! reads as empty. Answers carry every key Docker's structs declare, so an
//! engine of any version finds what it looks for.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The media type of every plugin answer (and of Docker's `Accept`).
pub const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// `com.docker.network.generic`: the `-o` options in `Options`.
pub const GENERIC_DATA: &str = "com.docker.network.generic";
/// `com.docker.network.internal`: `--internal`, in `Options`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// `com.docker.network.enable_ipv6`, in `Options`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// `com.docker.network.endpoint.exposedports`, in endpoint options.
pub const EXPOSED_PORTS: &str = "com.docker.network.endpoint.exposedports";
/// `com.docker.network.portmap`, in endpoint options.
pub const PORT_MAP: &str = "com.docker.network.portmap";
/// `RequestAddressType` in `RequestAddress` options.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// The `RequestAddressType` of a gateway request.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `Plugin.Activate`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct Activate {
    /// The interfaces the plugin implements.
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

/// A network driver's error answer (`{"Err": …}`); an empty `Err` is the
/// empty success answer `{}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetworkError {
    /// What went wrong.
    #[serde(rename = "Err", default, skip_serializing_if = "String::is_empty")]
    pub err: String,
}

/// An IPAM driver's error answer (`{"Error": …}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IpamErrorBody {
    /// What went wrong.
    #[serde(rename = "Error", default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `NetworkDriver.GetCapabilities`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    /// `local`: networks of this host only.
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    /// Where containers reach each other: `local` too.
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: &'static str,
}

/// One entry of `IPv4Data`/`IPv6Data` (libnetwork `driverapi.IPAMData`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct IpamData {
    /// `LocalDefault` or `GlobalDefault`.
    #[serde(rename = "AddressSpace", deserialize_with = "null_as_default")]
    pub address_space: String,
    /// The pool, CIDR.
    #[serde(rename = "Pool", deserialize_with = "null_as_default")]
    pub pool: String,
    /// The gateway, CIDR (`10.203.0.1/24`).
    #[serde(rename = "Gateway", deserialize_with = "null_as_default")]
    pub gateway: String,
    /// `--aux-address`, by name, CIDR.
    #[serde(rename = "AuxAddresses", deserialize_with = "null_as_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    /// Docker's network id (64 hex).
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` options), `…internal`,
    /// `…enable_ipv6`.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
    /// The IPv4 pools IPAM gave the network.
    #[serde(rename = "IPv4Data", deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 pools (only with `--ipv6`).
    #[serde(rename = "IPv6Data", deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    /// Docker's network id.
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
}

/// `DeleteEndpoint`, `EndpointOperInfo`, `Leave`,
/// `RevokeExternalConnectivity`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    /// Docker's network id.
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", deserialize_with = "null_as_default")]
    pub endpoint_id: String,
}

/// The interface of `CreateEndpoint`'s request and answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointInterface {
    /// CIDR, as IPAM gave it.
    #[serde(
        rename = "Address",
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    /// CIDR, or empty.
    #[serde(
        rename = "AddressIPv6",
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    /// `aa:bb:…`, or empty for the driver to choose.
    #[serde(
        rename = "MacAddress",
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    /// Docker's network id.
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// The addresses IPAM gave.
    #[serde(rename = "Interface", deserialize_with = "null_as_default")]
    pub interface: EndpointInterface,
    /// Exposed ports and the port map.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// `CreateEndpoint`'s answer: only the fields the driver filled in.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CreateEndpointReply {
    /// `None` when the driver fills nothing.
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// `NetworkDriver.Join`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Join {
    /// Docker's network id.
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// The sandbox's namespace file (`/var/run/docker/netns/<12 hex>`).
    #[serde(rename = "SandboxKey", deserialize_with = "null_as_default")]
    pub sandbox_key: String,
    /// Exposed ports and the port map.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// The interface Docker moves into the sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceName {
    /// The device in the daemon's namespace.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Docker names it this prefix plus an index (`eth0`).
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// One route of `Join`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StaticRoute {
    /// CIDR.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// 0: via `NextHop`; 1: connected.
    #[serde(rename = "RouteType")]
    pub route_type: u8,
    /// The next hop, for type 0.
    #[serde(rename = "NextHop")]
    pub next_hop: String,
}

/// `Join`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JoinReply {
    /// The interface.
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    /// The default route's gateway, a plain address; empty for none.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    /// Always empty: IPv6 is not supported.
    #[serde(rename = "GatewayIPv6")]
    pub gateway_ipv6: String,
    /// Extra routes.
    #[serde(rename = "StaticRoutes")]
    pub static_routes: Vec<StaticRoute>,
    /// True: no `docker_gwbridge` endpoint; the switch is the way out.
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

/// `ProgramExternalConnectivity`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProgramExternal {
    /// Docker's network id.
    #[serde(rename = "NetworkID", deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// Exposed ports and the port map.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// `EndpointOperInfo`'s answer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OperInfo {
    /// Shown by Docker as the endpoint's driver information.
    #[serde(rename = "Value")]
    pub value: Map<String, Value>,
}

/// `AllocateNetwork`'s answer (swarm only; refused).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AllocateReply {
    /// Options for the network.
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
}

/// One entry of `com.docker.network.portmap` (libnetwork
/// `types.PortBinding`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortBinding {
    /// IP protocol number: 6 tcp, 17 udp, 132 sctp.
    #[serde(rename = "Proto")]
    pub proto: u8,
    /// The container's address (empty: its address on this network).
    #[serde(rename = "IP", deserialize_with = "null_as_default")]
    pub ip: String,
    /// The container port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// The host address (empty: every address).
    #[serde(rename = "HostIP", deserialize_with = "null_as_default")]
    pub host_ip: String,
    /// The host port (0: chosen).
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    /// The end of a host port range, or equal to `HostPort`.
    #[serde(rename = "HostPortEnd")]
    pub host_port_end: u16,
}

/// `IpamDriver.GetCapabilities`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct IpamCapabilities {
    /// False: addresses do not depend on the MAC.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// False: the state is the driver's, kept across restarts.
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct AddressSpaces {
    /// `LocalDefault`.
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: &'static str,
    /// `GlobalDefault`.
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: &'static str,
}

/// `IpamDriver.RequestPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RequestPool {
    /// The address space.
    #[serde(rename = "AddressSpace", deserialize_with = "null_as_default")]
    pub address_space: String,
    /// `--subnet`, or empty for a default pool.
    #[serde(rename = "Pool", deserialize_with = "null_as_default")]
    pub pool: String,
    /// `--ip-range`, or empty.
    #[serde(rename = "SubPool", deserialize_with = "null_as_default")]
    pub sub_pool: String,
    /// `--ipam-opt`.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    /// An IPv6 pool.
    #[serde(rename = "V6", deserialize_with = "null_as_default")]
    pub v6: bool,
}

/// `RequestPool`'s answer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestPoolReply {
    /// The pool's id, for later requests.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool, CIDR.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// Extra data (none).
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_default")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RequestAddress {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_default")]
    pub pool_id: String,
    /// The preferred address (`--ip`, `--gateway`, an aux address), or
    /// empty.
    #[serde(rename = "Address", deserialize_with = "null_as_default")]
    pub address: String,
    /// `RequestAddressType` for the gateway.
    #[serde(rename = "Options", deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

/// `RequestAddress`'s answer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestAddressReply {
    /// The address, CIDR.
    #[serde(rename = "Address")]
    pub address: String,
    /// Extra data (none).
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ReleaseAddress {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "null_as_default")]
    pub pool_id: String,
    /// The address, plain.
    #[serde(rename = "Address", deserialize_with = "null_as_default")]
    pub address: String,
}
