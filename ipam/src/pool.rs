//! One pool: a subnet, the addresses taken in it, and what is reserved.
//!
//! This is libnetwork's per-pool bitmap with the rules of docker-reference
//! §1.3 on top:
//!
//! - ordinal 0 (the network address) and, for IPv4, the last ordinal (the
//!   broadcast address) are taken when the pool is created and never freed;
//! - a dynamic request takes the **lowest** free address, from the ip-range
//!   when there is one (its first address included), else from the whole
//!   subnet; a freed address is therefore reused at once;
//! - a request for a given address may name any address of the subnet, inside
//!   the ip-range or not;
//! - the gateway and auxiliary addresses are ordinary taken addresses that
//!   the pool remembers, so that inspection can name them and a stray release
//!   cannot free them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::network::NetworkIpamConfig;
use crate::ordinals::OrdinalSet;
use crate::space::AddressSpace;

/// Identifies a pool for its whole life. Ids are never reused, so a stale id
/// names no pool rather than someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolId(u64);

impl PoolId {
    /// The id with this number (for tests and for parsing stored ids).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The id's number.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for PoolId {
    type Err = IpamError;

    /// Parses the decimal form [`PoolId`]'s `Display` writes, as the IPAM
    /// plugin protocol sends it back (`PoolID`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self).map_err(|_| IpamError::InvalidPoolId {
            value: s.to_owned(),
        })
    }
}

/// A pool's `--ip-range`: the part of the subnet dynamic addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    /// As the user typed it, for inspection.
    requested: String,
    /// The addresses it covers, inside the pool's subnet.
    effective: Ipv4Net,
}

impl IpRange {
    /// Builds the range of `subnet` that `requested` (already parsed as
    /// `range`) describes.
    ///
    /// Docker matches a range by its typed address alone and then computes
    /// its first and last address relative to the subnet
    /// (`ipam.getAddressRange`), so a range wider than its subnet
    /// (`--subnet 10.0.0.0/24 --ip-range 10.0.0.0/16`) covers the whole
    /// subnet. We do the same.
    ///
    /// # Errors
    ///
    /// [`IpamError::NoMatchingSubnetForRange`] when the range's address is
    /// outside the subnet.
    pub(crate) fn new(requested: &str, range: Ipv4Net, subnet: Ipv4Net) -> Result<Self, IpamError> {
        if !subnet.contains(&range.addr()) {
            return Err(IpamError::NoMatchingSubnetForRange {
                range: requested.to_owned(),
            });
        }
        let effective = if range.prefix_len() >= subnet.prefix_len() {
            range.trunc()
        } else {
            subnet
        };
        Ok(Self {
            requested: requested.to_owned(),
            effective,
        })
    }

    /// The range as the user typed it.
    pub fn as_typed(&self) -> &str {
        &self.requested
    }

    /// The addresses the range covers (the typed range masked, and clamped
    /// to the subnet).
    pub fn effective(&self) -> Ipv4Net {
        self.effective
    }
}

/// One allocated pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    id: PoolId,
    space: AddressSpace,
    /// The pool proper: the subnet with its host bits cleared.
    subnet: Ipv4Net,
    /// The subnet as the user typed it (`10.78.0.5/24`), kept for inspect;
    /// `None` when the pool was chosen from the predefined list.
    requested: Option<String>,
    range: Option<IpRange>,
    gateway: Option<Ipv4Addr>,
    /// Whether the gateway was the user's (`--gateway`), which decides
    /// whether inspect shows it (docker-reference §1.5).
    gateway_requested: bool,
    aux: BTreeMap<String, Ipv4Addr>,
    used: OrdinalSet,
}

/// Number of addresses in a network of prefix `prefix_len`.
fn size_of(prefix_len: u8) -> u64 {
    1u64 << (32 - u32::from(prefix_len.min(32)))
}

impl Pool {
    /// A new pool with the network and broadcast ordinals taken.
    pub(crate) fn new(
        id: PoolId,
        space: AddressSpace,
        subnet: Ipv4Net,
        requested: Option<String>,
        range: Option<IpRange>,
    ) -> Self {
        let subnet = subnet.trunc();
        let size = size_of(subnet.prefix_len());
        let mut used = OrdinalSet::new(size);
        // Docker reserves ordinal 0 and, for IPv4, the last one; on a /32
        // they are the same address, on a /31 they are both addresses.
        used.insert(0);
        used.insert(size - 1);
        Self {
            id,
            space,
            subnet,
            requested,
            range,
            gateway: None,
            gateway_requested: false,
            aux: BTreeMap::new(),
            used,
        }
    }

    /// The pool's id.
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// The address space the pool belongs to.
    pub fn space(&self) -> AddressSpace {
        self.space
    }

    /// The pool's network (host bits cleared).
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The subnet as the user typed it (`10.78.0.5/24` stays that), or the
    /// pool's network when it was chosen automatically.
    pub fn subnet_as_typed(&self) -> String {
        self.requested
            .clone()
            .unwrap_or_else(|| self.subnet.to_string())
    }

    /// Whether the subnet was given by the user (`--subnet`) rather than
    /// chosen from the predefined list.
    pub fn is_user_subnet(&self) -> bool {
        self.requested.is_some()
    }

    /// The ip-range, if one was given.
    pub fn ip_range(&self) -> Option<&IpRange> {
        self.range.as_ref()
    }

    /// The gateway, once allocated.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    /// The auxiliary addresses, by name.
    pub fn aux_addresses(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.aux
    }

    /// Whether `address` is inside the pool's subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.subnet.contains(&address)
    }

    /// Whether `address` is taken (endpoint, gateway, auxiliary, network or
    /// broadcast).
    pub fn is_taken(&self, address: Ipv4Addr) -> bool {
        self.contains(address) && self.used.contains(self.ordinal(address))
    }

    /// Number of addresses that can still be taken.
    pub fn free_count(&self) -> u64 {
        self.used.size() - self.used.count()
    }

    /// The addresses taken by endpoints, in increasing order: every taken
    /// address but the network, broadcast, gateway and auxiliary ones.
    pub fn endpoint_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let last = self.used.size() - 1;
        self.used
            .iter()
            .filter(move |&o| o != 0 && o != last)
            .map(|o| self.address(o))
            .filter(|a| Some(*a) != self.gateway && !self.aux.values().any(|x| x == a))
    }

    /// Everything about the pool, for `vsctl` and logs.
    pub fn info(&self) -> PoolInfo {
        PoolInfo {
            id: self.id,
            space: self.space,
            subnet: self.subnet_as_typed(),
            pool: self.subnet,
            ip_range: self.range.as_ref().map(|r| r.as_typed().to_owned()),
            gateway: self.gateway,
            aux_addresses: self.aux.clone(),
            addresses: self.endpoint_addresses().collect(),
            free: self.free_count(),
        }
    }

    /// The pool as Docker's `network inspect` shows it in `IPAM.Config`
    /// (docker-reference §1.5): a user subnet shows what the user gave
    /// (subnet and range as typed, the gateway only if given); an automatic
    /// one shows the pool and its gateway.
    pub fn ipam_config(&self) -> NetworkIpamConfig {
        let aux_addresses = self
            .aux
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        match &self.requested {
            Some(requested) => NetworkIpamConfig {
                subnet: Some(requested.clone()),
                ip_range: self.range.as_ref().map(|r| r.as_typed().to_owned()),
                gateway: self
                    .gateway
                    .filter(|_| self.gateway_requested)
                    .map(|g| g.to_string()),
                aux_addresses,
            },
            None => NetworkIpamConfig {
                subnet: Some(self.subnet.to_string()),
                ip_range: None,
                gateway: self.gateway.map(|g| g.to_string()),
                aux_addresses,
            },
        }
    }

    /// The host part of `address`; the caller has checked it is inside.
    fn ordinal(&self, address: Ipv4Addr) -> u64 {
        u64::from(u32::from(address) & !u32::from(self.subnet.netmask()))
    }

    /// The address with host part `ordinal`; `ordinal` is below the size.
    fn address(&self, ordinal: u64) -> Ipv4Addr {
        // Host bits of the network are zero and `ordinal` fits in them, so
        // OR cannot carry into the prefix.
        let host = u32::try_from(ordinal).unwrap_or(u32::MAX) & !u32::from(self.subnet.netmask());
        Ipv4Addr::from(u32::from(self.subnet.network()) | host)
    }

    /// Takes an address: `preferred` if given, else the lowest free one of
    /// the ip-range (or of the subnet when there is no range).
    ///
    /// The checks come in libnetwork's order (`RequestAddress`, `getAddress`):
    /// out of the subnet, then pool full (even for a preferred address, which
    /// is why a `/31` with `--gateway` says `No available addresses on this
    /// pool`), then taken.
    pub(crate) fn allocate(&mut self, preferred: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        if let Some(address) = preferred
            && !self.contains(address)
        {
            return Err(IpamError::AddressOutOfRange { address });
        }
        let full = IpamError::NoAvailableAddresses { pool: self.subnet };
        if self.used.is_full() {
            return Err(full);
        }
        let ordinal = match preferred {
            Some(address) => {
                let ordinal = self.ordinal(address);
                if !self.used.insert(ordinal) {
                    return Err(IpamError::AddressInUse { address });
                }
                ordinal
            }
            None => {
                let (lo, hi) = match &self.range {
                    Some(range) => (
                        self.ordinal(range.effective.network()),
                        self.ordinal(range.effective.broadcast()),
                    ),
                    None => (0, self.used.size() - 1),
                };
                let ordinal = self.used.first_free_in(lo, hi).ok_or(full)?;
                self.used.insert(ordinal);
                ordinal
            }
        };
        Ok(self.address(ordinal))
    }

    /// Takes the gateway: `preferred`, or the first free address as any
    /// dynamic request would (so from the ip-range when there is one:
    /// docker-reference §1.3's `.128` example).
    pub(crate) fn allocate_gateway(
        &mut self,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(gateway) = self.gateway {
            return Err(IpamError::GatewayAlreadySet {
                pool: self.id,
                gateway,
            });
        }
        let address = self.allocate(preferred)?;
        self.gateway = Some(address);
        self.gateway_requested = preferred.is_some();
        Ok(address)
    }

    /// Reserves an auxiliary address under `name`.
    pub(crate) fn reserve_aux(&mut self, name: &str, address: Ipv4Addr) -> Result<(), IpamError> {
        if self.aux.contains_key(name) {
            return Err(IpamError::AddressInUse { address });
        }
        self.allocate(Some(address))?;
        self.aux.insert(name.to_owned(), address);
        Ok(())
    }

    /// Frees `address`. Freeing a free address does nothing. The network and
    /// broadcast addresses and the auxiliary addresses stay taken for the
    /// pool's whole life; freeing the gateway forgets it.
    pub(crate) fn release(&mut self, address: Ipv4Addr) -> Result<(), IpamError> {
        if !self.contains(address) {
            return Err(IpamError::AddressOutOfRange { address });
        }
        let ordinal = self.ordinal(address);
        if ordinal == 0
            || ordinal == self.used.size() - 1
            || self.aux.values().any(|&a| a == address)
        {
            return Ok(());
        }
        if self.gateway == Some(address) {
            self.gateway = None;
            self.gateway_requested = false;
        }
        self.used.remove(ordinal);
        Ok(())
    }

    /// Checks the invariants a restored pool must hold.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let id = self.id;
        if self.subnet != self.subnet.trunc() {
            return Err(format!("pool {id}: {} has host bits set", self.subnet));
        }
        let size = size_of(self.subnet.prefix_len());
        if self.used.size() != size {
            return Err(format!(
                "pool {id}: map of {} addresses for {}",
                self.used.size(),
                self.subnet
            ));
        }
        if !self.used.contains(0) || !self.used.contains(size - 1) {
            return Err(format!(
                "pool {id}: network or broadcast address not reserved"
            ));
        }
        if let Some(range) = &self.range
            && !self.subnet.contains(&range.effective)
        {
            return Err(format!(
                "pool {id}: range {} outside {}",
                range.effective, self.subnet
            ));
        }
        for address in self.gateway.iter().chain(self.aux.values()) {
            if !self.is_taken(*address) {
                return Err(format!("pool {id}: {address} is not a taken address"));
            }
        }
        Ok(())
    }
}

/// A pool summary for inspection tools (`vsctl`), serializable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// The pool's id.
    pub id: PoolId,
    /// Its address space.
    pub space: AddressSpace,
    /// The subnet as typed (or the pool, when chosen automatically).
    pub subnet: String,
    /// The pool's network.
    pub pool: Ipv4Net,
    /// The ip-range as typed.
    pub ip_range: Option<String>,
    /// The gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The auxiliary addresses.
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// The addresses taken by endpoints.
    pub addresses: Vec<Ipv4Addr>,
    /// How many addresses are still free.
    pub free: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn pool(subnet: &str) -> Pool {
        Pool::new(
            PoolId(1),
            AddressSpace::Local,
            subnet.parse().unwrap(),
            None,
            None,
        )
    }

    fn ranged(subnet: &str, range: &str) -> Pool {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        let r = IpRange::new(range, range.parse().unwrap(), subnet).unwrap();
        Pool::new(
            PoolId(1),
            AddressSpace::Local,
            subnet,
            Some(subnet.to_string()),
            Some(r),
        )
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out() {
        let mut p = pool("10.0.0.0/30");
        assert_eq!(p.allocate(None), Ok(ip("10.0.0.1")));
        assert_eq!(p.allocate(None), Ok(ip("10.0.0.2")));
        assert_eq!(
            p.allocate(None),
            Err(IpamError::NoAvailableAddresses { pool: p.subnet() })
        );
        let mut p = pool("10.0.0.0/24");
        assert_eq!(
            p.allocate(Some(ip("10.0.0.0"))),
            Err(IpamError::AddressInUse {
                address: ip("10.0.0.0")
            })
        );
        assert_eq!(
            p.allocate(Some(ip("10.0.0.255"))),
            Err(IpamError::AddressInUse {
                address: ip("10.0.0.255")
            })
        );
    }

    #[test]
    fn lowest_free_first_and_released_reused_at_once() {
        let mut p = pool("172.18.0.0/16");
        let got: Vec<_> = (0..4).map(|_| p.allocate(None).unwrap()).collect();
        assert_eq!(
            got,
            [
                ip("172.18.0.1"),
                ip("172.18.0.2"),
                ip("172.18.0.3"),
                ip("172.18.0.4")
            ]
        );
        p.release(ip("172.18.0.3")).unwrap();
        assert_eq!(p.allocate(None), Ok(ip("172.18.0.3")));
        assert_eq!(p.allocate(None), Ok(ip("172.18.0.5")));
    }

    #[test]
    fn range_hands_out_its_first_address_and_stays_inside() {
        let mut p = ranged("10.77.0.0/24", "10.77.0.252/30");
        assert_eq!(p.allocate(None), Ok(ip("10.77.0.252")));
        assert_eq!(p.allocate(None), Ok(ip("10.77.0.253")));
        assert_eq!(p.allocate(None), Ok(ip("10.77.0.254")));
        // .255 is the broadcast address: the range is exhausted.
        assert!(matches!(
            p.allocate(None),
            Err(IpamError::NoAvailableAddresses { .. })
        ));
        // A preferred address outside the range but in the subnet is fine.
        assert_eq!(p.allocate(Some(ip("10.77.0.9"))), Ok(ip("10.77.0.9")));
    }

    #[test]
    fn range_wider_than_subnet_covers_the_subnet() {
        let subnet: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let r = IpRange::new("10.0.0.7/16", "10.0.0.7/16".parse().unwrap(), subnet).unwrap();
        assert_eq!(r.effective(), subnet);
        assert_eq!(r.as_typed(), "10.0.0.7/16");
        let err = IpRange::new("10.1.0.0/25", "10.1.0.0/25".parse().unwrap(), subnet).unwrap_err();
        assert_eq!(err.to_string(), "no matching subnet for range 10.1.0.0/25");
    }

    #[test]
    fn preferred_outside_subnet_is_out_of_range() {
        let mut p = pool("10.0.0.0/24");
        assert_eq!(
            p.allocate(Some(ip("10.0.1.1"))).unwrap_err().to_string(),
            "Requested address is out of range"
        );
        assert_eq!(
            p.release(ip("10.0.1.1")).unwrap_err().to_string(),
            "Requested address is out of range"
        );
    }

    #[test]
    fn tiny_pools_have_no_address_at_all() {
        for subnet in ["10.0.0.0/31", "10.0.0.7/32"] {
            let mut p = pool(subnet);
            assert_eq!(p.free_count(), 0);
            let err = p.allocate_gateway(None).unwrap_err();
            assert_eq!(err.to_string(), "No available addresses on this pool");
            // Libnetwork checks "full" before the preferred address.
            let err = p.allocate(Some(p.subnet().network())).unwrap_err();
            assert_eq!(err.to_string(), "No available addresses on this pool");
        }
    }

    #[test]
    fn reserved_and_aux_addresses_survive_release() {
        let mut p = pool("10.0.0.0/24");
        p.reserve_aux("host", ip("10.0.0.1")).unwrap();
        for a in ["10.0.0.0", "10.0.0.255", "10.0.0.1"] {
            p.release(ip(a)).unwrap();
            assert!(p.is_taken(ip(a)), "{a} must stay taken");
        }
        assert_eq!(p.allocate(None), Ok(ip("10.0.0.2")));
        assert_eq!(
            p.reserve_aux("host", ip("10.0.0.9")),
            Err(IpamError::AddressInUse {
                address: ip("10.0.0.9")
            })
        );
    }

    #[test]
    fn releasing_the_gateway_forgets_it() {
        let mut p = pool("10.0.0.0/24");
        assert_eq!(p.allocate_gateway(None), Ok(ip("10.0.0.1")));
        assert!(matches!(
            p.allocate_gateway(None),
            Err(IpamError::GatewayAlreadySet { .. })
        ));
        p.release(ip("10.0.0.1")).unwrap();
        assert_eq!(p.gateway(), None);
        assert_eq!(p.allocate(None), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn endpoint_addresses_exclude_gateway_aux_and_reserved() {
        let mut p = pool("10.0.0.0/24");
        p.allocate_gateway(None).unwrap();
        p.reserve_aux("a", ip("10.0.0.2")).unwrap();
        p.allocate(None).unwrap();
        p.allocate(Some(ip("10.0.0.200"))).unwrap();
        assert_eq!(
            p.endpoint_addresses().collect::<Vec<_>>(),
            [ip("10.0.0.3"), ip("10.0.0.200")]
        );
        let info = p.info();
        assert_eq!(info.gateway, Some(ip("10.0.0.1")));
        assert_eq!(info.free, 256 - 2 - 4);
    }

    #[test]
    fn pool_id_text_form_round_trips() {
        assert_eq!(PoolId(42).to_string().parse::<PoolId>(), Ok(PoolId(42)));
        assert_eq!(
            "LocalDefault/10.0.0.0/24"
                .parse::<PoolId>()
                .unwrap_err()
                .to_string(),
            "invalid pool id: LocalDefault/10.0.0.0/24"
        );
    }
}
