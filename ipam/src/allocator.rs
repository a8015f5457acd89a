//! The allocator: address spaces and pools, with libnetwork's default IPAM
//! driver API (`RequestPool`, `ReleasePool`, `RequestAddress`,
//! `ReleaseAddress`), which is also what the IPAM plugin protocol carries
//! (docker-reference §9.4).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::defaults::PredefinedPools;
use crate::error::IpamError;
use crate::parse;
use crate::pool::{IpRange, Pool, PoolId};
use crate::space::{AddressSpace, NetIndex, Space, overlaps};

/// A request for a pool, as `RequestPool` takes it.
///
/// Text fields are the untrusted strings of the API; an empty string means
/// "not given", as in Docker's protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolRequest<'a> {
    /// The address space to allocate in.
    pub space: AddressSpace,
    /// `--subnet`, as typed. `None` (or empty) asks for a predefined pool.
    pub subnet: Option<&'a str>,
    /// `--ip-range`, as typed. Needs a subnet.
    pub ip_range: Option<&'a str>,
    /// Host networks an automatically chosen local pool must not overlap:
    /// the host's resolv.conf nameservers (as /32s) and its on-link (scope
    /// `link`) IPv4 routes. Gathering them is I/O, so the caller does it
    /// (docker-reference §1.2). Ignored for user subnets and for the global
    /// space, as Docker ignores them.
    pub host_networks: &'a [Ipv4Net],
}

impl<'a> PoolRequest<'a> {
    /// A request for the next predefined pool of `space`.
    pub fn auto(space: AddressSpace) -> Self {
        Self {
            space,
            ..Self::default()
        }
    }

    /// A request for the user's `subnet` in `space`.
    pub fn subnet(space: AddressSpace, subnet: &'a str) -> Self {
        Self {
            space,
            subnet: Some(subnet),
            ..Self::default()
        }
    }

    /// The same request with an ip-range.
    #[must_use]
    pub fn with_range(self, ip_range: &'a str) -> Self {
        Self {
            ip_range: Some(ip_range),
            ..self
        }
    }

    /// The same request avoiding `host_networks`.
    #[must_use]
    pub fn avoiding(self, host_networks: &'a [Ipv4Net]) -> Self {
        Self {
            host_networks,
            ..self
        }
    }
}

/// What [`Ipam::request_pool`] answers: the `PoolID` and `Pool` of the
/// IPAM protocol's `RequestPool` reply. The full record is
/// [`Ipam::pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolGrant {
    /// The new pool's id.
    pub id: PoolId,
    /// The pool: the subnet with host bits cleared.
    pub subnet: Ipv4Net,
}

/// Docker's default IPAM: pools in two address spaces, and addresses in
/// pools.
///
/// The whole state serializes with serde (see the crate docs for the JSON
/// shape) and restores exactly, cursors included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    local: Space,
    global: Space,
    pools: BTreeMap<PoolId, Pool>,
    next_pool_id: u64,
}

impl Default for Ipam {
    fn default() -> Self {
        Self::new()
    }
}

impl Ipam {
    /// An empty allocator with Docker's default predefined pools.
    pub fn new() -> Self {
        Self::with_local_pools(PredefinedPools::local_default())
    }

    /// An empty allocator whose local predefined list is `local` (Docker's
    /// `default-address-pools`, see [`PredefinedPools::from_config`]).
    pub fn with_local_pools(local: PredefinedPools) -> Self {
        Self {
            local: Space::new(local),
            global: Space::new(PredefinedPools::global_default()),
            pools: BTreeMap::new(),
            next_pool_id: 1,
        }
    }

    /// Replaces the local predefined list, as a daemon restarted with another
    /// `default-address-pools` would. Allocated pools stay; the cursor goes
    /// back to 0 when the list changed.
    pub fn set_local_pools(&mut self, local: PredefinedPools) {
        if self.local.predefined != local {
            self.local.predefined = local;
            self.local.cursor = 0;
        }
    }

    fn space(&self, space: AddressSpace) -> &Space {
        match space {
            AddressSpace::Local => &self.local,
            AddressSpace::Global => &self.global,
        }
    }

    fn space_mut(&mut self, space: AddressSpace) -> &mut Space {
        match space {
            AddressSpace::Local => &mut self.local,
            AddressSpace::Global => &mut self.global,
        }
    }

    /// The predefined list of `space`.
    pub fn predefined(&self, space: AddressSpace) -> &PredefinedPools {
        &self.space(space).predefined
    }

    /// Where the next automatic search of `space` starts (an index into its
    /// predefined list).
    pub fn cursor(&self, space: AddressSpace) -> u64 {
        self.space(space).cursor
    }

    /// The pool with id `id`.
    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(&id)
    }

    /// Every pool, by id (that is, in allocation order).
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// Allocates a pool (libnetwork `RequestPool`, plus the host check of
    /// `requestPoolHelper` for automatic local pools).
    ///
    /// - With a subnet: the pool is the subnet masked (`10.78.0.5/24` gives
    ///   `10.78.0.0/24`, and [`Pool::subnet_as_typed`] keeps the text). It
    ///   must not overlap a pool of the same space. It is never checked
    ///   against the host.
    /// - Without: the first predefined pool, scanning from the space's cursor
    ///   and wrapping, that overlaps no pool of the space; the cursor then
    ///   moves past it. In the local space a candidate overlapping one of
    ///   `host_networks` is held aside for the rest of the search and the
    ///   search goes on, so the cursor moves past it too (docker-reference
    ///   §1.2, observed: `192.168.64.0/20` on-link → `192.168.80.0/20`).
    ///   The cursor has moved even when the request then fails.
    ///
    /// # Errors
    ///
    /// [`IpamError::InvalidCidr`], [`IpamError::Ipv6NotSupported`],
    /// [`IpamError::InvalidSubPool`] (range without subnet),
    /// [`IpamError::NoMatchingSubnetForRange`], [`IpamError::PoolOverlap`],
    /// [`IpamError::NoAvailableDefaultPool`].
    pub fn request_pool(&mut self, request: &PoolRequest<'_>) -> Result<PoolGrant, IpamError> {
        let subnet = request.subnet.filter(|s| !s.is_empty());
        let range = request.ip_range.filter(|s| !s.is_empty());
        let (net, requested, range) = match subnet {
            None => {
                if let Some(range) = range {
                    return Err(IpamError::InvalidSubPool {
                        range: range.to_owned(),
                    });
                }
                (self.choose_predefined(request)?, None, None)
            }
            Some(text) => {
                let net = parse::cidr_v4(text)?.trunc();
                let range = range
                    .map(|r| IpRange::new(r, parse::cidr_v4(r)?, net))
                    .transpose()?;
                if self
                    .space(request.space)
                    .allocated
                    .overlapping(net)
                    .is_some()
                {
                    return Err(IpamError::PoolOverlap { subnet: net });
                }
                (net, Some(text.to_owned()), range)
            }
        };
        let id = PoolId::from_raw(self.next_pool_id);
        // Only a crafted state can bring the counter to the end of u64.
        self.next_pool_id =
            self.next_pool_id
                .checked_add(1)
                .ok_or_else(|| IpamError::InvalidState {
                    reason: "pool ids exhausted".to_owned(),
                })?;
        self.space_mut(request.space).allocated.insert(net, id);
        let pool = Pool::new(id, request.space, net, requested, range);
        self.pools.insert(id, pool);
        Ok(PoolGrant { id, subnet: net })
    }

    /// The automatic part of [`Ipam::request_pool`]: libnetwork's
    /// `getPredefinedPool` called again and again by `requestPoolHelper`
    /// while the host check rejects its answer.
    fn choose_predefined(&mut self, request: &PoolRequest<'_>) -> Result<Ipv4Net, IpamError> {
        let check_host = request.space == AddressSpace::Local;
        let space = self.space_mut(request.space);
        // Rejected candidates, held until the search ends as libnetwork holds
        // their pool leases, so that the next round does not offer them again.
        let mut held = NetIndex::default();
        loop {
            let (position, candidate) = space
                .next_candidate(&held)
                .ok_or(IpamError::NoAvailableDefaultPool { ip_version: 4 })?;
            space.advance(position);
            let clashes = check_host
                && request
                    .host_networks
                    .iter()
                    .any(|&host| overlaps(host, candidate));
            if !clashes {
                return Ok(candidate);
            }
            held.insert(candidate, PoolId::from_raw(0));
        }
    }

    /// Releases a pool and every address in it (libnetwork `ReleasePool`).
    /// The cursor does not move, so the subnet is not the next one offered.
    ///
    /// # Errors
    ///
    /// [`IpamError::BadPool`] when no pool has this id.
    pub fn release_pool(&mut self, id: PoolId) -> Result<(), IpamError> {
        let pool = self.pools.remove(&id).ok_or(IpamError::BadPool { id })?;
        self.space_mut(pool.space()).allocated.remove(pool.subnet());
        Ok(())
    }

    fn pool_mut(&mut self, id: PoolId) -> Result<&mut Pool, IpamError> {
        self.pools.get_mut(&id).ok_or(IpamError::UnknownPool { id })
    }

    /// Takes an address in a pool (libnetwork `RequestAddress`): `preferred`
    /// if given (anywhere in the subnet, even outside the ip-range), else the
    /// lowest free address of the ip-range, or of the subnet.
    ///
    /// # Errors
    ///
    /// [`IpamError::UnknownPool`], [`IpamError::AddressOutOfRange`],
    /// [`IpamError::NoAvailableAddresses`], [`IpamError::AddressInUse`].
    pub fn request_address(
        &mut self,
        pool: PoolId,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        self.pool_mut(pool)?.allocate(preferred)
    }

    /// Takes the pool's gateway address, as [`Ipam::request_address`] would,
    /// and remembers it as the gateway (the request Docker marks with
    /// `RequestAddressType=com.docker.network.gateway`).
    ///
    /// # Errors
    ///
    /// As [`Ipam::request_address`], and [`IpamError::GatewayAlreadySet`].
    pub fn request_gateway(
        &mut self,
        pool: PoolId,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        self.pool_mut(pool)?.allocate_gateway(preferred)
    }

    /// Frees an address (libnetwork `ReleaseAddress`). It can be handed out
    /// again at once. Freeing a free address does nothing; the network,
    /// broadcast and auxiliary addresses are never freed; freeing the
    /// gateway forgets it.
    ///
    /// # Errors
    ///
    /// [`IpamError::UnknownPool`], [`IpamError::AddressOutOfRange`].
    pub fn release_address(&mut self, pool: PoolId, address: Ipv4Addr) -> Result<(), IpamError> {
        self.pool_mut(pool)?.release(address)
    }

    /// Reserves an auxiliary address in a pool.
    pub(crate) fn reserve_aux(
        &mut self,
        pool: PoolId,
        name: &str,
        address: Ipv4Addr,
    ) -> Result<(), IpamError> {
        self.pool_mut(pool)?.reserve_aux(name, address)
    }
}

/// The persisted form, borrowed for writing.
#[derive(Serialize)]
struct StateRef<'a> {
    local: &'a Space,
    global: &'a Space,
    next_pool_id: u64,
    pools: Vec<&'a Pool>,
}

/// The persisted form, owned for reading.
#[derive(Deserialize)]
struct State {
    local: Space,
    global: Space,
    next_pool_id: u64,
    pools: Vec<Pool>,
}

impl Serialize for Ipam {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StateRef {
            local: &self.local,
            global: &self.global,
            next_pool_id: self.next_pool_id,
            pools: self.pools.values().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ipam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = State::deserialize(deserializer)?;
        Self::try_from(state).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<State> for Ipam {
    type Error = IpamError;

    /// Rebuilds the allocator from a stored state, checking every invariant
    /// the allocator relies on, so that a damaged file is refused instead of
    /// producing double allocations later.
    fn try_from(state: State) -> Result<Self, Self::Error> {
        let invalid = |reason: String| IpamError::InvalidState { reason };
        let mut ipam = Self {
            local: state.local,
            global: state.global,
            pools: BTreeMap::new(),
            next_pool_id: state.next_pool_id,
        };
        for pool in state.pools {
            let id = pool.id();
            pool.validate().map_err(invalid)?;
            if id.raw() >= ipam.next_pool_id {
                return Err(invalid(format!("pool {id} is not below the next id")));
            }
            let space = ipam.space_mut(pool.space());
            if let Some(other) = space.allocated.overlapping(pool.subnet()) {
                return Err(invalid(format!("pool {id} overlaps pool {other}")));
            }
            space.allocated.insert(pool.subnet(), id);
            if ipam.pools.insert(id, pool).is_some() {
                return Err(invalid(format!("pool {id} appears twice")));
            }
        }
        Ok(ipam)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn auto(ipam: &mut Ipam) -> Ipv4Net {
        ipam.request_pool(&PoolRequest::auto(AddressSpace::Local))
            .unwrap()
            .subnet
    }

    #[test]
    fn first_auto_pools_are_172_17_then_172_18() {
        let mut ipam = Ipam::new();
        assert_eq!(auto(&mut ipam), net("172.17.0.0/16"));
        assert_eq!(auto(&mut ipam), net("172.18.0.0/16"));
        assert_eq!(ipam.cursor(AddressSpace::Local), 2);
    }

    #[test]
    fn global_space_starts_at_10_0_0_0_24() {
        let mut ipam = Ipam::new();
        let request = PoolRequest::auto(AddressSpace::Global);
        assert_eq!(
            ipam.request_pool(&request).unwrap().subnet,
            net("10.0.0.0/24")
        );
        assert_eq!(
            ipam.request_pool(&request).unwrap().subnet,
            net("10.0.1.0/24")
        );
    }

    #[test]
    fn host_networks_do_not_apply_to_the_global_space() {
        let mut ipam = Ipam::new();
        let host = [net("10.0.0.0/8")];
        let request = PoolRequest::auto(AddressSpace::Global).avoiding(&host);
        assert_eq!(
            ipam.request_pool(&request).unwrap().subnet,
            net("10.0.0.0/24")
        );
    }

    #[test]
    fn spaces_are_independent() {
        let mut ipam = Ipam::new();
        ipam.request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.0.0.0/8"))
            .unwrap();
        let pool = ipam
            .request_pool(&PoolRequest::auto(AddressSpace::Global))
            .unwrap();
        assert_eq!(pool.subnet, net("10.0.0.0/24"));
    }

    #[test]
    fn range_without_subnet_is_an_invalid_subpool() {
        let mut ipam = Ipam::new();
        let request = PoolRequest {
            ip_range: Some("10.0.0.0/25"),
            ..PoolRequest::default()
        };
        assert_eq!(
            ipam.request_pool(&request).unwrap_err().to_string(),
            "Invalid Address SubPool"
        );
    }

    #[test]
    fn unknown_pools_are_reported_with_dockers_words() {
        let mut ipam = Ipam::new();
        let id = PoolId::from_raw(7);
        assert_eq!(
            ipam.release_pool(id).unwrap_err().to_string(),
            "Address space does not contain specified address pool"
        );
        assert_eq!(
            ipam.request_address(id, None).unwrap_err().to_string(),
            "cannot find address pool for poolID:7"
        );
        assert!(ipam.release_address(id, Ipv4Addr::LOCALHOST).is_err());
    }

    #[test]
    fn set_local_pools_resets_the_cursor_only_on_change() {
        let mut ipam = Ipam::new();
        auto(&mut ipam);
        ipam.set_local_pools(PredefinedPools::local_default());
        assert_eq!(ipam.cursor(AddressSpace::Local), 1);
        ipam.set_local_pools(
            PredefinedPools::from_config(&[crate::DefaultAddressPool::new("10.9.0.0/16", 24)])
                .unwrap(),
        );
        assert_eq!(ipam.cursor(AddressSpace::Local), 0);
        assert_eq!(auto(&mut ipam), net("10.9.0.0/24"));
    }

    #[test]
    fn exhausted_pool_ids_are_an_error_not_a_panic() {
        let mut ipam = Ipam::new();
        let json = serde_json::to_string(&ipam).unwrap().replace(
            r#""next_pool_id":1"#,
            &format!(r#""next_pool_id":{}"#, u64::MAX),
        );
        ipam = serde_json::from_str(&json).unwrap();
        let err = ipam
            .request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.0.0.0/24"))
            .unwrap_err();
        assert!(matches!(err, IpamError::InvalidState { .. }));
        assert_eq!(ipam.pools().count(), 0);
    }

    #[test]
    fn restore_refuses_overlapping_pools() {
        let mut ipam = Ipam::new();
        ipam.request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.0.0.0/24"))
            .unwrap();
        ipam.request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.0.1.0/24"))
            .unwrap();
        let json = serde_json::to_string(&ipam).unwrap();
        let bad = json.replace("10.0.1.0/24", "10.0.0.0/24");
        let err = serde_json::from_str::<Ipam>(&bad).unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
    }

    #[test]
    fn restore_refuses_a_gateway_that_is_not_taken() {
        let mut ipam = Ipam::new();
        let id = ipam
            .request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.0.0.0/24"))
            .unwrap()
            .id;
        ipam.request_gateway(id, None).unwrap();
        let json = serde_json::to_string(&ipam).unwrap();
        let bad = json.replace(r#""gateway":"10.0.0.1""#, r#""gateway":"10.0.0.9""#);
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<Ipam>(&bad).is_err());
    }
}
