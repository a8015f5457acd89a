//! The one error type of the crate.
//!
//! Every message is Docker's own text, character for character, so that the
//! daemon can return it unchanged and a differential test against a real engine
//! compares equal (docker-reference §1.4). Docker's capitalisation is kept
//! where Docker capitalises (`Pool overlaps …`, `Address already in use`), and
//! no message ends with a period. Each variant carries the offending value even
//! when Docker's text does not print it, so that callers and logs can.
//!
//! Where a message comes from the docker CLI rather than the daemon
//! (`no matching subnet for …`), our daemon has no CLI in front of it, so the
//! check and its text live here instead.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::pool::PoolId;

/// What went wrong in an IPAM request.
///
/// Wrapping variants (`GatewayAllocation`, `AuxAddressAllocation`) print their
/// cause inside their own text, as Docker does, and therefore do not also
/// expose it as [`std::error::Error::source`] (a reporter walking the chain
/// would print it twice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    // ----- Network configuration, as the docker CLI checks it (§1.4). -----
    /// A config entry gives an ip-range or a gateway but no subnet.
    #[error("every ip-range or gateway must have a corresponding subnet")]
    RangeOrGatewayWithoutSubnet,

    /// Two config entries of one network have overlapping subnets.
    #[error("multiple overlapping subnet configuration is not supported")]
    OverlappingSubnetConfigs {
        /// The subnet given first.
        first: String,
        /// The subnet that overlaps it.
        second: String,
    },

    /// The ip-range's address is not inside its entry's subnet.
    #[error("no matching subnet for range {range}")]
    NoMatchingSubnetForRange {
        /// The range as given.
        range: String,
    },

    /// The gateway is not inside its entry's subnet (or is not an address).
    #[error("no matching subnet for gateway {gateway}")]
    NoMatchingSubnetForGateway {
        /// The gateway as given.
        gateway: String,
    },

    /// An auxiliary address is not inside its entry's subnet (or is not an
    /// address).
    #[error("no matching subnet for aux-address {address}")]
    NoMatchingSubnetForAuxAddress {
        /// The address as given.
        address: String,
    },

    /// Text that should be a CIDR (`a.b.c.d/n`) is not one; Go's `net.ParseCIDR`
    /// text, which is what Docker prints.
    #[error("invalid CIDR address: {value}")]
    InvalidCidr {
        /// The text as given.
        value: String,
    },

    /// The gateway matched its subnet in CIDR form (`10.0.0.1/24`), which the
    /// CLI accepts and the daemon then refuses (libnetwork `IpamConf.Validate`).
    #[error("invalid gateway address {gateway} in Ipam configuration")]
    InvalidGatewayAddress {
        /// The gateway as given.
        gateway: String,
    },

    /// An auxiliary address matched its subnet in CIDR form, which the daemon
    /// cannot parse as an address (libnetwork `ipamAllocateVersion`).
    #[error("non parsable secondary ip address ({name}:{address}) passed for network {network}")]
    InvalidAuxAddress {
        /// The auxiliary address's name.
        name: String,
        /// The address as given.
        address: String,
        /// The network's name.
        network: String,
    },

    /// An IPv6 subnet or address where only IPv4 is implemented. Not a Docker
    /// message: Docker supports IPv6 pools, this crate does not yet.
    #[error("IPv6 address pools are not supported: {value}")]
    Ipv6NotSupported {
        /// The text as given.
        value: String,
    },

    // ----- Pools (libnetwork ipam/allocator.go, ipamapi/contract.go). -----
    /// The subnet contains, or is contained in, a pool already allocated in
    /// the same address space.
    #[error("Pool overlaps with other one on this address space")]
    PoolOverlap {
        /// The subnet asked for (masked).
        subnet: Ipv4Net,
    },

    /// Every default pool is allocated, overlaps an allocated one, or clashes
    /// with a host network.
    #[error(
        "could not find an available, non-overlapping IPv{ip_version} address pool among the defaults to assign to the network"
    )]
    NoAvailableDefaultPool {
        /// 4 (or, later, 6).
        ip_version: u8,
    },

    /// An empty address-space name (`ipamapi.ErrInvalidAddressSpace`).
    #[error("Invalid Address Space")]
    InvalidAddressSpace,

    /// An address-space name other than `LocalDefault` or `GlobalDefault`.
    #[error(
        "cannot find address space {name} (most likely the backing datastore is not configured)"
    )]
    UnknownAddressSpace {
        /// The name as given.
        name: String,
    },

    /// An ip-range without a subnet in a pool request
    /// (`ipamapi.ErrInvalidSubPool`).
    #[error("Invalid Address SubPool")]
    InvalidSubPool {
        /// The range as given.
        range: String,
    },

    /// Releasing a pool that does not exist (`ipamapi.ErrBadPool`).
    #[error("Address space does not contain specified address pool")]
    BadPool {
        /// The pool id.
        id: PoolId,
    },

    /// An address request or release names a pool that does not exist.
    #[error("cannot find address pool for poolID:{id}")]
    UnknownPool {
        /// The pool id.
        id: PoolId,
    },

    /// A pool id in text form that does not parse.
    #[error("invalid pool id: {value}")]
    InvalidPoolId {
        /// The text as given.
        value: String,
    },

    // ----- Addresses inside a pool. -----
    /// No free address is left where the request may take one
    /// (`ipamapi.ErrNoAvailableIPs`).
    #[error("No available addresses on this pool")]
    NoAvailableAddresses {
        /// The pool's subnet.
        pool: Ipv4Net,
    },

    /// The requested address is taken: by an endpoint, the gateway, an
    /// auxiliary address, or it is the network or broadcast address
    /// (`ipamapi.ErrIPAlreadyAllocated`).
    #[error("Address already in use")]
    AddressInUse {
        /// The address asked for.
        address: Ipv4Addr,
    },

    /// The requested address is outside the pool (`ipamapi.ErrIPOutOfRange`).
    #[error("Requested address is out of range")]
    AddressOutOfRange {
        /// The address asked for.
        address: Ipv4Addr,
    },

    /// A gateway request on a pool that already has a gateway. Not a Docker
    /// message: libnetwork asks once per pool, so Docker has no such case.
    #[error("pool {pool} already has gateway {gateway}")]
    GatewayAlreadySet {
        /// The pool id.
        pool: PoolId,
        /// Its gateway.
        gateway: Ipv4Addr,
    },

    /// The network's gateway could not be allocated. `gateway` is the gateway
    /// as the user gave it, empty when none was given, which is why Docker
    /// prints `failed to allocate gateway (): …` for a `/31`.
    #[error("failed to allocate gateway ({gateway}): {cause}")]
    GatewayAllocation {
        /// The gateway as given, or empty.
        gateway: String,
        /// Why.
        cause: Box<Self>,
    },

    /// An auxiliary address could not be reserved.
    #[error("failed to allocate secondary ip address ({name}:{address}): {cause}")]
    AuxAddressAllocation {
        /// The auxiliary address's name.
        name: String,
        /// The address as given.
        address: String,
        /// Why.
        cause: Box<Self>,
    },

    // ----- Endpoints (libnetwork endpoint.go, moby daemon). -----
    /// A static address outside every subnet of the network.
    #[error("Invalid address {address}: It does not belong to any of this network's subnets")]
    NotInNetworkSubnets {
        /// The address asked for.
        address: IpAddr,
    },

    /// Every pool of the network is full. Docker names the network here,
    /// which is why a network request carries its name and id.
    #[error(
        "no available IPv{ip_version} addresses on this network's address pools: {network} ({network_id})"
    )]
    NetworkExhausted {
        /// 4 (or, later, 6).
        ip_version: u8,
        /// The network's name.
        network: String,
        /// The network's id.
        network_id: String,
    },

    /// A static address on a network that is not user-defined (the default
    /// `bridge`).
    #[error("user specified IP address is supported on user defined networks only")]
    StaticIpOnBuiltinNetwork,

    /// A static address on a network whose subnets were all chosen by IPAM.
    #[error(
        "user specified IP address is supported only when connecting to networks with user configured subnets"
    )]
    StaticIpWithoutUserSubnet,

    /// A static address that does not parse. The stray `)` is Docker's
    /// (moby 20.10 `daemon/network.go` `buildCreateEndpointOptions`).
    #[error("Invalid IPv4 address: {value})")]
    InvalidIpv4Address {
        /// The text as given.
        value: String,
    },

    // ----- Daemon configuration and state. -----
    /// A `default-address-pools` entry whose size is shorter than its base's
    /// prefix, not positive, or (our addition) longer than 32.
    #[error("invalid pools size: {size}")]
    InvalidPoolSize {
        /// The size as given.
        size: i64,
    },

    /// A `default-address-pools` entry whose base is not a CIDR.
    #[error("invalid base pool {base:?}: invalid CIDR address: {base}")]
    InvalidBasePool {
        /// The base as given.
        base: String,
    },

    /// A persisted state that breaks an invariant (overlapping pools, an
    /// address outside its pool, …). Not a Docker message.
    #[error("invalid ipam state: {reason}")]
    InvalidState {
        /// What is wrong.
        reason: String,
    },
}
