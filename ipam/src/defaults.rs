//! Docker's predefined pools: where an automatically chosen subnet comes from.
//!
//! Docker describes each list as `{base, size}` entries, each cut into subnets
//! of prefix length `size` (`LN/ipamutils/utils.go`, docker-reference §1.1):
//!
//! - local scope: `172.17/16`, `172.18/16`, `172.19/16`, then `172.20/14`,
//!   `172.24/14`, `172.28/14` as /16s, then `192.168.0.0/16` as /20s: 31 pools;
//! - global scope: `10.0.0.0/8` as /24s: 65536 pools.
//!
//! Docker materialises every subnet; we keep only the `{base, size}` entries
//! and compute the subnet at an index, so the global list costs a few bytes and
//! a `default-address-pools` of `{"base":"10.0.0.0/8","size":30}` is no worse.

use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::error::IpamError;

/// One entry of Docker's `default-address-pools` daemon option:
/// `{"base":"172.80.0.0/16","size":24}`.
///
/// Kept as the user wrote it (the base as text, the size as a signed number)
/// so that [`PredefinedPools::from_config`] can reject it with Docker's own
/// words rather than a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DefaultAddressPool {
    /// The network cut into pools, in CIDR form.
    pub base: String,
    /// The prefix length of each pool.
    pub size: i64,
}

impl DefaultAddressPool {
    /// A `{base, size}` entry.
    pub fn new(base: impl Into<String>, size: i64) -> Self {
        Self {
            base: base.into(),
            size,
        }
    }
}

/// Docker's local default list, as `{base, size}` entries in Docker's order
/// (`localScopeDefaultNetworks`).
const LOCAL_DEFAULT: [(Ipv4Addr, u8, u8); 7] = [
    (Ipv4Addr::new(172, 17, 0, 0), 16, 16),
    (Ipv4Addr::new(172, 18, 0, 0), 16, 16),
    (Ipv4Addr::new(172, 19, 0, 0), 16, 16),
    (Ipv4Addr::new(172, 20, 0, 0), 14, 16),
    (Ipv4Addr::new(172, 24, 0, 0), 14, 16),
    (Ipv4Addr::new(172, 28, 0, 0), 14, 16),
    (Ipv4Addr::new(192, 168, 0, 0), 16, 20),
];

/// Docker's global default list (`globalScopeDefaultNetworks`).
const GLOBAL_DEFAULT: [(Ipv4Addr, u8, u8); 1] = [(Ipv4Addr::new(10, 0, 0, 0), 8, 24)];

/// One validated `{base, size}` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    /// The masked base network.
    base: Ipv4Net,
    /// Prefix length of each pool, `base.prefix_len() ..= 32`.
    size: u8,
}

impl Split {
    /// Number of pools this entry yields: `2^(size - base prefix)`.
    fn count(self) -> u64 {
        1u64 << (self.size - self.base.prefix_len())
    }

    /// The `index`-th pool of this entry, `index < count()`.
    fn get(self, index: u64) -> Option<Ipv4Net> {
        let step = 1u64 << (32 - self.size);
        let offset = u32::try_from(index.checked_mul(step)?).ok()?;
        let network = u32::from(self.base.network()).checked_add(offset)?;
        Ipv4Net::new(Ipv4Addr::from(network), self.size).ok()
    }
}

/// An ordered list of predefined pools, indexed from 0, computed on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<DefaultAddressPool>", into = "Vec<DefaultAddressPool>")]
pub struct PredefinedPools {
    splits: Vec<Split>,
    /// Total number of pools, the sum of every split's count.
    len: u64,
}

impl PredefinedPools {
    fn from_splits(list: &[(Ipv4Addr, u8, u8)]) -> Self {
        let splits: Vec<Split> = list
            .iter()
            .filter_map(|&(addr, prefix, size)| {
                Some(Split {
                    base: Ipv4Net::new(addr, prefix).ok()?,
                    size,
                })
            })
            .collect();
        let len = splits.iter().map(|s| s.count()).sum();
        Self { splits, len }
    }

    /// Docker's 31 local-scope pools (`bridge` and other local networks).
    pub fn local_default() -> Self {
        Self::from_splits(&LOCAL_DEFAULT)
    }

    /// Docker's 65536 global-scope pools (swarm overlay networks).
    pub fn global_default() -> Self {
        Self::from_splits(&GLOBAL_DEFAULT)
    }

    /// A list from Docker's `default-address-pools` option, which replaces the
    /// local default list (docker-reference §1.1). An empty slice yields an
    /// empty list, on which every automatic request fails; a daemon without
    /// the option should use [`PredefinedPools::local_default`] instead.
    ///
    /// # Errors
    ///
    /// - [`IpamError::InvalidBasePool`] when a base is not a CIDR;
    /// - [`IpamError::InvalidPoolSize`] when a size is not positive or is
    ///   shorter than its base's prefix (Docker's rule), or longer than 32 (ours:
    ///   Docker would fail later, less clearly);
    /// - [`IpamError::Ipv6NotSupported`] for an IPv6 base.
    pub fn from_config(pools: &[DefaultAddressPool]) -> Result<Self, IpamError> {
        let mut splits = Vec::with_capacity(pools.len());
        let mut len: u64 = 0;
        for pool in pools {
            let base = match Ipv4Net::from_str(&pool.base) {
                Ok(base) => base.trunc(),
                Err(_) if IpNet::from_str(&pool.base).is_ok() => {
                    return Err(IpamError::Ipv6NotSupported {
                        value: pool.base.clone(),
                    });
                }
                Err(_) => {
                    return Err(IpamError::InvalidBasePool {
                        base: pool.base.clone(),
                    });
                }
            };
            let size = u8::try_from(pool.size)
                .ok()
                .filter(|&s| s > 0 && s >= base.prefix_len() && s <= 32)
                .ok_or(IpamError::InvalidPoolSize { size: pool.size })?;
            let split = Split { base, size };
            // At most 2^32 per entry; a list would need 2^32 entries to
            // overflow, but saturate rather than trust that.
            len = len.saturating_add(split.count());
            splits.push(split);
        }
        Ok(Self { splits, len })
    }

    /// The configuration this list was built from.
    pub fn to_config(&self) -> Vec<DefaultAddressPool> {
        self.splits
            .iter()
            .map(|s| DefaultAddressPool::new(s.base.to_string(), i64::from(s.size)))
            .collect()
    }

    /// Number of pools in the list.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the list has no pool.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pool at `index`, in Docker's order.
    pub fn get(&self, index: u64) -> Option<Ipv4Net> {
        let mut index = index;
        for split in &self.splits {
            let count = split.count();
            if index < count {
                return split.get(index);
            }
            index -= count;
        }
        None
    }

    /// Every pool, in Docker's order, computed lazily.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.splits
            .iter()
            .flat_map(|&split| (0..split.count()).filter_map(move |i| split.get(i)))
    }
}

impl TryFrom<Vec<DefaultAddressPool>> for PredefinedPools {
    type Error = IpamError;

    fn try_from(pools: Vec<DefaultAddressPool>) -> Result<Self, Self::Error> {
        Self::from_config(&pools)
    }
}

impl From<PredefinedPools> for Vec<DefaultAddressPool> {
    fn from(pools: PredefinedPools) -> Self {
        pools.to_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn local_default_is_dockers_31_pools_in_order() {
        let pools = PredefinedPools::local_default();
        let all: Vec<String> = pools.iter().map(|n| n.to_string()).collect();
        let mut expected: Vec<String> = (17..=31).map(|b| format!("172.{b}.0.0/16")).collect();
        expected.extend((0..16).map(|i| format!("192.168.{}.0/20", i * 16)));
        assert_eq!(all, expected);
        assert_eq!(pools.len(), 31);
        assert_eq!(pools.get(0), Some(net("172.17.0.0/16")));
        assert_eq!(pools.get(3), Some(net("172.20.0.0/16")));
        assert_eq!(pools.get(15), Some(net("192.168.0.0/20")));
        assert_eq!(pools.get(30), Some(net("192.168.240.0/20")));
        assert_eq!(pools.get(31), None);
    }

    #[test]
    fn global_default_is_10_8_in_24s_by_index() {
        let pools = PredefinedPools::global_default();
        assert_eq!(pools.len(), 65536);
        assert_eq!(pools.get(0), Some(net("10.0.0.0/24")));
        assert_eq!(pools.get(1), Some(net("10.0.1.0/24")));
        assert_eq!(pools.get(256), Some(net("10.1.0.0/24")));
        assert_eq!(pools.get(65535), Some(net("10.255.255.0/24")));
        assert_eq!(pools.get(65536), None);
        assert_eq!(pools.iter().nth(257), Some(net("10.1.1.0/24")));
    }

    #[test]
    fn config_replaces_the_list() {
        let pools = PredefinedPools::from_config(&[
            DefaultAddressPool::new("10.10.0.0/16", 24),
            DefaultAddressPool::new("10.20.0.5/24", 26),
        ])
        .unwrap();
        assert_eq!(pools.len(), 256 + 4);
        assert_eq!(pools.get(0), Some(net("10.10.0.0/24")));
        assert_eq!(pools.get(255), Some(net("10.10.255.0/24")));
        assert_eq!(pools.get(256), Some(net("10.20.0.0/26")), "base is masked");
        assert_eq!(pools.get(259), Some(net("10.20.0.192/26")));
        assert_eq!(pools.get(260), None);
    }

    #[test]
    fn size_shorter_than_base_is_dockers_invalid_pools_size() {
        let err = PredefinedPools::from_config(&[DefaultAddressPool::new("10.10.0.0/16", 8)])
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid pools size: 8");
        for size in [0, -1, 33, 1 << 40] {
            let err = PredefinedPools::from_config(&[DefaultAddressPool::new("10.0.0.0/8", size)])
                .unwrap_err();
            assert_eq!(err.to_string(), format!("invalid pools size: {size}"));
        }
    }

    #[test]
    fn bad_base_is_reported_with_dockers_words() {
        let err =
            PredefinedPools::from_config(&[DefaultAddressPool::new("10.0.0/8", 24)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid base pool "10.0.0/8": invalid CIDR address: 10.0.0/8"#
        );
        let err =
            PredefinedPools::from_config(&[DefaultAddressPool::new("fd00::/48", 64)]).unwrap_err();
        assert!(matches!(err, IpamError::Ipv6NotSupported { .. }));
    }

    #[test]
    fn whole_address_space_in_32s_is_computed_not_stored() {
        let pools =
            PredefinedPools::from_config(&[DefaultAddressPool::new("0.0.0.0/0", 32)]).unwrap();
        assert_eq!(pools.len(), 1 << 32);
        assert_eq!(pools.get((1 << 32) - 1), Some(net("255.255.255.255/32")));
    }

    #[test]
    fn serde_uses_dockers_base_size_form() {
        let pools = PredefinedPools::local_default();
        let json = serde_json::to_string(&pools).unwrap();
        assert!(json.starts_with(r#"[{"base":"172.17.0.0/16","size":16},"#));
        let back: PredefinedPools = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pools);
        assert!(
            serde_json::from_str::<PredefinedPools>(r#"[{"base":"10.0.0.0/8","size":4}]"#).is_err()
        );
    }
}
