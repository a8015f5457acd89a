//! Address spaces: the scope in which pools must not overlap, with the
//! predefined list and the rotating cursor that picks automatic subnets.
//!
//! Docker has two built-in spaces, `LocalDefault` (bridge and other local
//! networks) and `GlobalDefault` (swarm overlays). Pools in one space never
//! overlap; pools in different spaces may (docker-reference §1.2).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::defaults::PredefinedPools;
use crate::error::IpamError;
use crate::pool::PoolId;

/// One of Docker's two default address spaces.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AddressSpace {
    /// `LocalDefault`: networks of one host (bridge). Automatic pools come
    /// from the local list and are checked against the host's networks.
    #[default]
    #[serde(rename = "LocalDefault")]
    Local,
    /// `GlobalDefault`: networks spanning hosts (overlay). Automatic pools come
    /// from `10.0.0.0/8` in /24s and are never checked against the host.
    #[serde(rename = "GlobalDefault")]
    Global,
}

impl AddressSpace {
    /// Docker's name for the space, as the IPAM plugin protocol spells it
    /// (`GetDefaultAddressSpaces`, `RequestPool`'s `AddressSpace`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Local => "LocalDefault",
            Self::Global => "GlobalDefault",
        }
    }
}

impl fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AddressSpace {
    type Err = IpamError;

    /// Parses Docker's space names; the errors are Docker's default IPAM's.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(IpamError::InvalidAddressSpace),
            "LocalDefault" => Ok(Self::Local),
            "GlobalDefault" => Ok(Self::Global),
            other => Err(IpamError::UnknownAddressSpace {
                name: other.to_owned(),
            }),
        }
    }
}

/// First and last address of a network, as integers, for interval lookups.
pub(crate) fn bounds(net: Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// Whether one network contains the other, which for CIDR blocks is the same
/// as sharing an address. This is Docker's overlap rule (`addrSpace.contains`,
/// `netutils.NetworkOverlaps`).
pub(crate) fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    let (a_first, a_last) = bounds(a);
    let (b_first, b_last) = bounds(b);
    a_first <= b_last && b_first <= a_last
}

/// Disjoint networks keyed by first address, answering "does this network
/// overlap any of them" in one lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetIndex {
    /// First address → (last address, owner).
    nets: BTreeMap<u32, (u32, PoolId)>,
}

impl NetIndex {
    /// The member overlapping `net`, if any.
    ///
    /// Members are disjoint, so only the last member starting at or before
    /// `net`'s last address can overlap: an earlier one ends before that one
    /// starts.
    pub(crate) fn overlapping(&self, net: Ipv4Net) -> Option<PoolId> {
        let (first, last) = bounds(net);
        self.nets
            .range(..=last)
            .next_back()
            .filter(|&(_, &(end, _))| end >= first)
            .map(|(_, &(_, id))| id)
    }

    /// Adds `net`. The caller has checked that it overlaps no member.
    pub(crate) fn insert(&mut self, net: Ipv4Net, id: PoolId) {
        let (first, last) = bounds(net);
        self.nets.insert(first, (last, id));
    }

    /// Removes `net`.
    pub(crate) fn remove(&mut self, net: Ipv4Net) {
        self.nets.remove(&u32::from(net.network()));
    }
}

/// The state of one address space: its predefined list, its cursor, and an
/// index of the pools allocated in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Space {
    /// Where automatic subnets come from.
    pub(crate) predefined: PredefinedPools,
    /// Index into `predefined` where the next automatic search starts.
    ///
    /// Docker keeps this in memory only, so a restarted daemon starts again
    /// at 0 and may hand out a subnet released just before the restart. We
    /// persist it, so that the rule "a released subnet is not reused at once"
    /// (docker-reference §1.2) survives a restart of our daemon too.
    pub(crate) cursor: u64,
    /// The allocated pools of this space. Rebuilt from the pools on restore.
    #[serde(skip)]
    pub(crate) allocated: NetIndex,
}

impl Space {
    pub(crate) fn new(predefined: PredefinedPools) -> Self {
        Self {
            predefined,
            cursor: 0,
            allocated: NetIndex::default(),
        }
    }

    /// Where a search starts: the cursor, or 0 when the list shrank under it
    /// (Docker's defensive reset in `getPredefineds`).
    fn start(&self) -> u64 {
        if self.cursor >= self.predefined.len() {
            0
        } else {
            self.cursor
        }
    }

    /// The next predefined pool, scanning from the cursor and wrapping, that
    /// overlaps neither an allocated pool nor one of `held`. Returns its
    /// position in the scan (0 = the cursor itself) and the pool.
    ///
    /// This is libnetwork's `getPredefinedPool`: it checks "already
    /// allocated" and then "overlaps an allocated pool", which for us is one
    /// overlap lookup.
    pub(crate) fn next_candidate(&self, held: &NetIndex) -> Option<(u64, Ipv4Net)> {
        let len = self.predefined.len();
        let start = self.start();
        (0..len).find_map(|position| {
            // `start < len` and `position < len`, so the sum fits in u64.
            let index = (start + position) % len;
            let net = self.predefined.get(index)?;
            let free = self.allocated.overlapping(net).is_none() && held.overlapping(net).is_none();
            free.then_some((position, net))
        })
    }

    /// Moves the cursor after choosing the pool at scan `position`.
    ///
    /// This is libnetwork's `updateStartIndex(as, i+1)` exactly: the new
    /// cursor is `start + position + 1`, and **0 when that passes the end of
    /// the list**. So a choice that did not wrap leaves the cursor just past
    /// the chosen pool (docker-reference §1.2's "chosen position + 1"), but a
    /// choice found after wrapping resets the cursor to 0 rather than to the
    /// pool after it (libnetwork c5aa85f9 `ipam/allocator.go`).
    pub(crate) fn advance(&mut self, position: u64) {
        let next = self.start().saturating_add(position).saturating_add(1);
        self.cursor = if next >= self.predefined.len() {
            0
        } else {
            next
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::DefaultAddressPool;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn address_space_names_are_dockers() {
        assert_eq!(AddressSpace::Local.to_string(), "LocalDefault");
        assert_eq!(
            "GlobalDefault".parse::<AddressSpace>(),
            Ok(AddressSpace::Global)
        );
        assert_eq!(
            "".parse::<AddressSpace>().unwrap_err().to_string(),
            "Invalid Address Space"
        );
        assert_eq!(
            "Other".parse::<AddressSpace>().unwrap_err().to_string(),
            "cannot find address space Other (most likely the backing datastore is not configured)"
        );
        assert_eq!(
            serde_json::to_string(&AddressSpace::Global).unwrap(),
            r#""GlobalDefault""#
        );
    }

    #[test]
    fn overlap_is_containment_either_way() {
        assert!(overlaps(net("10.0.0.0/8"), net("10.1.0.0/16")));
        assert!(overlaps(net("10.1.0.0/16"), net("10.0.0.0/8")));
        assert!(overlaps(net("10.1.0.0/16"), net("10.1.0.0/16")));
        assert!(!overlaps(net("10.1.0.0/16"), net("10.2.0.0/16")));
    }

    #[test]
    fn index_finds_overlaps_in_one_lookup() {
        let mut index = NetIndex::default();
        index.insert(net("10.0.0.0/24"), PoolId::from_raw(1));
        index.insert(net("10.0.2.0/24"), PoolId::from_raw(2));
        assert_eq!(
            index.overlapping(net("10.0.0.128/25")),
            Some(PoolId::from_raw(1))
        );
        assert_eq!(
            index.overlapping(net("10.0.0.0/16")),
            Some(PoolId::from_raw(2))
        );
        assert_eq!(index.overlapping(net("10.0.1.0/24")), None);
        assert_eq!(index.overlapping(net("10.0.3.0/24")), None);
        index.remove(net("10.0.2.0/24"));
        assert_eq!(
            index.overlapping(net("10.0.0.0/16")),
            Some(PoolId::from_raw(1))
        );
    }

    fn four_pools() -> Space {
        Space::new(
            PredefinedPools::from_config(&[DefaultAddressPool::new("10.1.0.0/22", 24)]).unwrap(),
        )
    }

    #[test]
    fn cursor_moves_past_the_chosen_pool() {
        let mut space = four_pools();
        let none = NetIndex::default();
        let (position, chosen) = space.next_candidate(&none).unwrap();
        assert_eq!((position, chosen), (0, net("10.1.0.0/24")));
        space.advance(position);
        assert_eq!(space.cursor, 1);
        space.allocated.insert(chosen, PoolId::from_raw(1));
        space
            .allocated
            .insert(net("10.1.1.0/24"), PoolId::from_raw(2));
        let (position, chosen) = space.next_candidate(&none).unwrap();
        assert_eq!((position, chosen), (1, net("10.1.2.0/24")));
        space.advance(position);
        assert_eq!(space.cursor, 3);
    }

    #[test]
    fn a_wrapped_choice_resets_the_cursor_to_zero_as_libnetwork_does() {
        let mut space = four_pools();
        space.cursor = 3;
        space
            .allocated
            .insert(net("10.1.3.0/24"), PoolId::from_raw(1));
        space
            .allocated
            .insert(net("10.1.0.0/24"), PoolId::from_raw(2));
        let (position, chosen) = space.next_candidate(&NetIndex::default()).unwrap();
        assert_eq!((position, chosen), (2, net("10.1.1.0/24")));
        space.advance(position);
        assert_eq!(
            space.cursor, 0,
            "3 + 2 + 1 passes the end: libnetwork resets to 0"
        );
    }

    #[test]
    fn cursor_past_a_shrunk_list_starts_at_zero() {
        let mut space = four_pools();
        space.cursor = 99;
        let (position, chosen) = space.next_candidate(&NetIndex::default()).unwrap();
        assert_eq!((position, chosen), (0, net("10.1.0.0/24")));
        space.advance(position);
        assert_eq!(space.cursor, 1);
    }
}
