//! The allocation map of one pool: which address ordinals are taken.
//!
//! Docker keeps one bitmap per pool (`LN/bitseq`), run-length encoded so that a
//! `/8` costs a few words instead of two megabytes (docker-reference §1.3). We
//! keep the same idea in its simplest form: a set of *runs* of taken ordinals,
//! `start..=end`, kept sorted and coalesced (two runs never touch), so that
//!
//! - the lowest free ordinal at or after `lo` is one `BTreeMap` lookup: either
//!   `lo` itself or the ordinal just after the run that covers `lo`;
//! - taking or freeing one ordinal splits or merges at most two runs;
//! - memory grows with fragmentation, not with the size of the pool.
//!
//! An ordinal is the host part of an address: ordinal 0 is the network
//! address. Ordinals are `u64` so that an IPv6 pool (Docker caps those at 2^64
//! addresses) can use the same map later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A set of taken ordinals in `0..size`, stored as coalesced runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OrdinalSetRepr", into = "OrdinalSetRepr")]
pub(crate) struct OrdinalSet {
    /// Number of ordinals the pool has; every member is below it.
    size: u64,
    /// Run start → run end (inclusive). Runs are disjoint and never adjacent.
    runs: BTreeMap<u64, u64>,
    /// Number of members, kept so that "is the pool full" costs nothing.
    count: u64,
}

impl OrdinalSet {
    /// An empty set for a pool of `size` ordinals.
    pub(crate) fn new(size: u64) -> Self {
        Self {
            size,
            runs: BTreeMap::new(),
            count: 0,
        }
    }

    /// Number of ordinals the pool has.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Number of taken ordinals.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Whether every ordinal is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.count >= self.size
    }

    /// The run covering `ordinal`, if any.
    fn run_covering(&self, ordinal: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=ordinal)
            .next_back()
            .filter(|&(_, &end)| end >= ordinal)
            .map(|(&start, &end)| (start, end))
    }

    /// Whether `ordinal` is taken.
    pub(crate) fn contains(&self, ordinal: u64) -> bool {
        self.run_covering(ordinal).is_some()
    }

    /// Takes `ordinal`. Returns false if it was already taken or is out of the
    /// pool.
    pub(crate) fn insert(&mut self, ordinal: u64) -> bool {
        if ordinal >= self.size || self.contains(ordinal) {
            return false;
        }
        let mut start = ordinal;
        let mut end = ordinal;
        // Merge with the run ending just before, if any.
        if let Some(prev) = ordinal.checked_sub(1)
            && let Some((prev_start, _)) = self.run_covering(prev)
        {
            self.runs.remove(&prev_start);
            start = prev_start;
        }
        // Merge with the run starting just after, if any.
        if let Some(next) = ordinal.checked_add(1)
            && let Some(next_end) = self.runs.remove(&next)
        {
            end = next_end;
        }
        self.runs.insert(start, end);
        self.count += 1;
        true
    }

    /// Frees `ordinal`. Returns false if it was not taken.
    pub(crate) fn remove(&mut self, ordinal: u64) -> bool {
        let Some((start, end)) = self.run_covering(ordinal) else {
            return false;
        };
        self.runs.remove(&start);
        if start < ordinal {
            self.runs.insert(start, ordinal - 1);
        }
        if ordinal < end {
            self.runs.insert(ordinal + 1, end);
        }
        self.count -= 1;
        true
    }

    /// The lowest free ordinal in `lo..=hi` (clamped to the pool), if any.
    ///
    /// Because runs never touch, the ordinal just after the run covering `lo`
    /// is free, so no scan is needed.
    pub(crate) fn first_free_in(&self, lo: u64, hi: u64) -> Option<u64> {
        let hi = hi.min(self.size.checked_sub(1)?);
        let candidate = match self.run_covering(lo) {
            Some((_, end)) => end.checked_add(1)?,
            None => lo,
        };
        (candidate <= hi).then_some(candidate)
    }

    /// Every taken ordinal, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|(&start, &end)| start..=end)
    }
}

/// The serialized form: the size and the runs as `[start, end]` pairs, which
/// stays small for a busy `/8`.
#[derive(Debug, Serialize, Deserialize)]
struct OrdinalSetRepr {
    size: u64,
    runs: Vec<(u64, u64)>,
}

impl From<OrdinalSet> for OrdinalSetRepr {
    fn from(set: OrdinalSet) -> Self {
        Self {
            size: set.size,
            runs: set.runs.into_iter().collect(),
        }
    }
}

impl TryFrom<OrdinalSetRepr> for OrdinalSet {
    type Error = String;

    /// Rebuilds the set, refusing runs that are out of the pool, unsorted,
    /// overlapping or touching, so that a damaged state file cannot break the
    /// invariants the lookups rely on.
    fn try_from(repr: OrdinalSetRepr) -> Result<Self, Self::Error> {
        let mut set = Self::new(repr.size);
        let mut floor: Option<u64> = None;
        for (start, end) in repr.runs {
            if start > end || end >= repr.size {
                return Err(format!(
                    "run {start}-{end} is outside a pool of {} addresses",
                    repr.size
                ));
            }
            if let Some(floor) = floor
                && start <= floor
            {
                return Err(format!("run {start}-{end} is unsorted or touches another"));
            }
            // `end < size <= u64::MAX`, so `end + 1` cannot overflow.
            floor = Some(end + 1);
            set.runs.insert(start, end);
            set.count += end - start + 1;
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_neighbours_into_one_run() {
        let mut set = OrdinalSet::new(16);
        assert!(set.insert(3));
        assert!(set.insert(5));
        assert!(set.insert(4));
        assert_eq!(set.runs.len(), 1);
        assert_eq!(set.runs.get(&3), Some(&5));
        assert_eq!(set.count(), 3);
        assert!(!set.insert(4), "a taken ordinal cannot be taken twice");
        assert!(!set.insert(16), "ordinals stop at the pool size");
    }

    #[test]
    fn remove_splits_a_run() {
        let mut set = OrdinalSet::new(16);
        for o in 0..8 {
            set.insert(o);
        }
        assert!(set.remove(4));
        assert!(!set.remove(4));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 5, 6, 7]);
        assert_eq!(set.count(), 7);
    }

    #[test]
    fn first_free_skips_the_run_covering_lo() {
        let mut set = OrdinalSet::new(16);
        for o in [0, 1, 2, 5] {
            set.insert(o);
        }
        assert_eq!(set.first_free_in(0, 15), Some(3));
        assert_eq!(set.first_free_in(5, 15), Some(6));
        assert_eq!(set.first_free_in(4, 4), Some(4));
        assert_eq!(set.first_free_in(0, 2), None);
        assert_eq!(set.first_free_in(15, 99), Some(15), "hi is clamped");
        assert_eq!(OrdinalSet::new(0).first_free_in(0, 0), None);
    }

    #[test]
    fn full_when_every_ordinal_is_taken() {
        let mut set = OrdinalSet::new(2);
        set.insert(0);
        assert!(!set.is_full());
        set.insert(1);
        assert!(set.is_full());
        assert_eq!(set.first_free_in(0, 1), None);
    }

    #[test]
    fn serde_round_trip_keeps_runs() {
        let mut set = OrdinalSet::new(256);
        for o in [0, 1, 2, 9, 255] {
            set.insert(o);
        }
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"{"size":256,"runs":[[0,2],[9,9],[255,255]]}"#);
        let back: OrdinalSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn deserialize_rejects_broken_runs() {
        for bad in [
            r#"{"size":4,"runs":[[0,4]]}"#,
            r#"{"size":8,"runs":[[3,1]]}"#,
            r#"{"size":8,"runs":[[4,5],[0,1]]}"#,
            r#"{"size":8,"runs":[[0,1],[2,3]]}"#,
            r#"{"size":8,"runs":[[0,3],[2,5]]}"#,
        ] {
            assert!(serde_json::from_str::<OrdinalSet>(bad).is_err(), "{bad}");
        }
    }
}
