//! The forwarding database: which port each (network, MAC) was last seen on.
//!
//! Behaviour (after Open vSwitch's `lib/mac-learning.h` and the Linux
//! bridge):
//!
//! - Entries are learned from source addresses and forgotten after
//!   [`FdbConfig::max_age`] without traffic (300 s, as the Linux bridge).
//!   A lookup checks the age itself, so forwarding is exact to the
//!   nanosecond; [`Fdb::expire`] only reclaims memory.
//! - A MAC seen on a new port moves there (a container re-attached, a VM
//!   migrated) and the move is counted.
//! - Endpoints' own MACs are static entries: never aged, never evicted,
//!   never moved by learning.
//! - Learned entries are capped in total and per port. When a port reaches
//!   its cap it gives up its own least recently used entry; when the table
//!   is full, the port holding the most entries gives one up. A port
//!   flooding random source MACs therefore only ever evicts its own entries
//!   (OVS's fair eviction), never a quiet port's.
//! - Each port keeps its learned entries on an intrusive list in the order
//!   they were last *placed*. Refreshing an entry re-places it at most once
//!   per [`REPLACE_INTERVAL`] (when the refresh falls in another tick of
//!   that length than the last sighting), so the common case (a frame from
//!   a known MAC) writes one timestamp and touches no neighbour; the price
//!   is that the list is LRU only to within that interval, which eviction
//!   and the memory sweep can afford.
//!
//! Layout. Every frame costs two probes (learn the source, look up the
//! destination) into a table that, with the default cap of 65,536 learned
//! MACs, is larger than a core's L2 cache, so what a probe touches decides
//! the cost. The table is a purpose-built open-addressing array of 32-byte
//! slots, two to a cache line and none straddling one, probed linearly:
//!
//! ```text
//!  slot (hot, 32 B): key = MAC | network low 16 bits (u64) · last seen (ns)
//!                    port · LRU node (NIL = static) · network high bits + 1
//!                    (0 = empty) · the key's hash
//!  node (cold, 24 B, indexed by the slot's node): key · port · prev · next
//! ```
//!
//! - A probe reads the slot its hash points at and, at the load factor of
//!   at most 3/4, rarely the next: one cache line where a SwissTable
//!   (`std`'s `HashMap`) reads its control bytes and then the bucket, two.
//! - Everything a frame needs (port, last seen, whether static) is in the
//!   slot; the placement tick is the last sighting's, so it takes no room.
//!   The LRU links live in a separate array of nodes, touched only when an
//!   entry is placed, evicted or aged: about once a second per entry.
//! - The key is compared as one word (plus the network's high bits, equal
//!   for every network below 2^16), not field by field.
//! - A removal shifts the rest of its cluster back (no tombstones, so
//!   probes stay short under churn); each slot keeps its hash, so neither
//!   that nor growing the table hashes a key again.
//! - The destination's slot can be loaded while the source is learned
//!   ([`Fdb::prefetch`]), so the two misses of a frame overlap.
//!
//! The hash is foldhash seeded per table: fast enough for the per-frame
//! path, and not open to an attacker who picks source MACs to build long
//! probe sequences (HashDoS), which a fixed-key hash would be. With linear
//! probing that matters more than with a SwissTable, and the seed is what
//! defeats it.
//!
//! Alternatives, measured on `known_unicast_64B_64k_macs_batch_path` (see
//! the README's Benchmarks; cache misses from `cachegrind` with a 48 KB L1
//! and a 2 MB last level, per frame, which other load does not change):
//!
//! - `std`'s `HashMap<(network, MAC), entry>` (the previous table): a
//!   40-byte bucket plus a control byte, 5.2 MB for 64k MACs; 11.2 L1 and
//!   0.21 last-level data misses per frame. This table: 7.9 and 0.09;
//!   in time, on the shared 2-core VM, the batch path went from 18.2 to
//!   21.0 Mpps (medians of three, load 8–9; with the switch's dense port
//!   counters), and from 22.7 to 23.8 pinned to a core (load 9–10).
//! - Loading the destination's slot with an ordinary load instead of a
//!   prefetch: the batch path was 11 % *slower* than with the `HashMap`
//!   (18.4 against 20.6 Mpps, alternating, load 8): the load's value had to
//!   be kept, and the frame waited for the miss it was meant to hide.
//! - 24-byte slots (no stored hash, key and port only): one slot in three
//!   would straddle two cache lines, and a removal would hash every entry
//!   it shifts. 16-byte slots would need a 32-bit last-seen time, which
//!   either wraps or is not exact to the nanosecond.
//! - A table per network: a word of key to spare, but one more indirection
//!   per frame and a vector indexed by network id, which the API cannot
//!   bound.

use core::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::ids::{MacAddr, NetworkId, PortId};

/// How often, at most, a refreshed entry moves to the back of its port's
/// LRU list (2^30 ns, about 1.07 s).
pub const REPLACE_INTERVAL: Duration = Duration::from_nanos(1 << TICK_SHIFT);

/// Limits of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// How long a learned entry lives without traffic (Linux bridge
    /// `ageing_time`, default 300 s).
    pub max_age: Duration,
    /// Learned entries in the whole table, at least 1.
    pub max_entries: usize,
    /// Learned entries behind one port, at least 1.
    pub max_per_port: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_entries: 65_536,
            max_per_port: 8_192,
        }
    }
}

/// How an entry came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// From a frame's source address.
    Learned,
    /// An endpoint's own MAC, from the configuration.
    Static,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A new entry (or one that had aged out).
    New,
    /// An entry on the same port, its age reset.
    Refreshed,
    /// An entry moved from another port.
    Moved {
        /// Where it was.
        from: PortId,
    },
    /// A static entry holds the MAC on another port; nothing changed.
    Pinned {
        /// Where the static entry points.
        at: PortId,
    },
}

/// Table-wide event counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbStats {
    /// Entries created by learning.
    pub learned: u64,
    /// Entries moved between ports.
    pub moved: u64,
    /// Entries removed by aging.
    pub aged: u64,
    /// Entries evicted because their port reached its cap.
    pub evicted_port_cap: u64,
    /// Entries evicted because the table reached its cap.
    pub evicted_table_cap: u64,
    /// Sources not learned because a static entry holds the MAC elsewhere.
    pub pinned: u64,
}

/// A change one replica of the FDB made that the others apply: `mac` on
/// `network` was seen on `port` at `seen` (see [`crate::datapath`] for why
/// the table is replicated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbUpdate {
    /// The network.
    pub network: NetworkId,
    /// The source MAC.
    pub mac: MacAddr,
    /// The port it was seen on.
    pub port: PortId,
    /// When.
    pub seen: Instant,
}

/// One row of the inspection snapshot (`vsctl show-fdb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbRow {
    /// The network.
    pub network: NetworkId,
    /// The MAC.
    pub mac: MacAddr,
    /// Where frames to it go.
    pub port: PortId,
    /// Time since last seen; `None` for static entries.
    pub age: Option<Duration>,
    /// How the entry came to be.
    pub origin: Origin,
}

/// A (network, MAC) pair packed for one-word comparison: the MAC in the low
/// 48 bits of `word`, the network's low 16 bits above it, and its high 16
/// bits plus one in `hi`, which is never 0 (an empty slot's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    word: u64,
    hi: u32,
}

impl Key {
    #[inline]
    fn new(network: NetworkId, mac: MacAddr) -> Self {
        Self {
            word: mac.as_word() | (u64::from(network.0 & 0xffff) << 48),
            hi: (network.0 >> 16) + 1,
        }
    }

    fn network(self) -> NetworkId {
        let low = u32::try_from(self.word >> 48).unwrap_or(0);
        NetworkId(((self.hi - 1) << 16) | low)
    }

    fn mac(self) -> MacAddr {
        MacAddr::from_word(self.word)
    }
}

/// A key and its hash, computed once for the probes and the prefetch of
/// one frame's address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hashed {
    key: Key,
    hash: u32,
}

const NIL: u32 = u32::MAX;

/// Nanoseconds since the table's epoch (its first use): 8 bytes instead of
/// an `Instant`'s 16.
type Stamp = u64;

/// log2 of the nanoseconds in one placement tick (about 1.07 s).
const TICK_SHIFT: u32 = 30;

/// One slot of the table: everything the per-frame path reads and writes,
/// in half a cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Slot {
    /// [`Key::word`].
    key: u64,
    last_seen: Stamp,
    port: PortId,
    /// The entry's node on its port's LRU list; `NIL` for static entries.
    node: u32,
    /// [`Key::hi`]; 0 for an empty slot.
    hi: u32,
    /// The key's hash (its low 32 bits): where the entry wants to be.
    hash: u32,
}

impl Slot {
    const EMPTY: Self = Self {
        key: 0,
        last_seen: 0,
        port: PortId(0),
        node: NIL,
        hi: 0,
        hash: 0,
    };

    #[inline]
    const fn is_empty(&self) -> bool {
        self.hi == 0
    }

    #[inline]
    const fn key(&self) -> Key {
        Key {
            word: self.key,
            hi: self.hi,
        }
    }

    #[inline]
    const fn origin(&self) -> Origin {
        if self.node == NIL {
            Origin::Static
        } else {
            Origin::Learned
        }
    }
}

/// The result of probing for a key.
enum Probe {
    /// The key's slot.
    Found(usize),
    /// The empty slot that ends the key's probe sequence, where it would go.
    Vacant(usize),
}

/// An open-addressing hash table of [`Slot`]s, linear probing, at most 3/4
/// full, removal by backward shift. Its capacity is 0 or a power of two.
#[derive(Clone)]
struct Table {
    slots: Vec<Slot>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl core::fmt::Debug for Table {
    /// The counts, not the (possibly million) slots.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// The smallest table allocated.
const MIN_CAPACITY: usize = 16;

impl Table {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    #[inline]
    fn hashed(&self, key: Key) -> Hashed {
        let mut h = self.hasher.build_hasher();
        // Networks beyond 2^16 only share hash bits; the comparison sees
        // the whole key.
        h.write_u64(key.word);
        // Only the low bits index the table (its capacity never reaches
        // 2^32), and foldhash's low bits are as good as its high ones.
        #[allow(clippy::cast_possible_truncation)]
        let hash = h.finish() as u32;
        Hashed { key, hash }
    }

    #[inline]
    const fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask()
    }

    /// Where `h` is, or where it would go. The table must have a slot.
    #[inline]
    fn probe(&self, h: Hashed) -> Probe {
        let mask = self.mask();
        let mut i = self.home(h.hash);
        // At most 3/4 full: an empty slot ends every probe sequence.
        loop {
            let s = &self.slots[i];
            if s.key == h.key.word && s.hi == h.key.hi {
                return Probe::Found(i);
            }
            if s.is_empty() {
                return Probe::Vacant(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn find(&self, h: Hashed) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        match self.probe(h) {
            Probe::Found(i) => Some(i),
            Probe::Vacant(_) => None,
        }
    }

    #[inline]
    fn get(&self, h: Hashed) -> Option<&Slot> {
        self.find(h).map(|i| &self.slots[i])
    }

    /// Starts loading the cache line `h` probes first, without waiting for
    /// it.
    #[inline]
    fn touch(&self, h: Hashed) {
        if let Some(s) = self.slots.get(self.home(h.hash)) {
            prefetch(s);
        }
    }

    /// Stores an entry for `h`, replacing the one there may be.
    fn insert(&mut self, h: Hashed, port: PortId, last_seen: Stamp, node: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let slot = Slot {
            key: h.key.word,
            last_seen,
            port,
            node,
            hi: h.key.hi,
            hash: h.hash,
        };
        match self.probe(h) {
            Probe::Found(i) => self.slots[i] = slot,
            Probe::Vacant(i) => {
                self.slots[i] = slot;
                self.len += 1;
            }
        }
    }

    /// Doubles the capacity and puts every entry back, by its stored hash.
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(MIN_CAPACITY);
        let old = core::mem::replace(&mut self.slots, vec![Slot::EMPTY; capacity]);
        let mask = self.mask();
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            let mut i = self.home(s.hash);
            while !self.slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Empties slot `i` and moves back the entries after it that may take
    /// its place, so that no probe sequence has a hole.
    fn remove_at(&mut self, mut i: usize) -> Slot {
        let mask = self.mask();
        let removed = self.slots[i];
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.is_empty() {
                break;
            }
            // `s` may fill the hole when the hole lies on its probe
            // sequence: from its home to where it is now.
            let home = self.home(s.hash);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(i) & mask {
                self.slots[i] = s;
                i = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[i] = Slot::EMPTY;
        self.len -= 1;
        removed
    }

    fn remove(&mut self, h: Hashed) -> Option<Slot> {
        let i = self.find(h)?;
        Some(self.remove_at(i))
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.is_empty())
    }
}

/// An LRU list node, touched only when an entry is placed, evicted or
/// aged: at most about once a second per entry.
#[derive(Clone, Copy, Debug)]
struct Node {
    key: Key,
    port: PortId,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct PortList {
    head: u32,
    tail: u32,
    learned: usize,
}

impl Default for PortList {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            learned: 0,
        }
    }
}

/// The forwarding database of one switch (all its networks).
#[derive(Clone, Debug)]
pub struct Fdb {
    config: FdbConfig,
    max_age: Stamp,
    epoch: Option<Instant>,
    /// The last instant turned into a stamp and its stamp: a batch reads
    /// the clock once, so its frames convert it once.
    last_stamp: Option<(Instant, Stamp)>,
    table: Table,
    nodes: Vec<Node>,
    free: Vec<u32>,
    ports: Vec<PortList>,
    learned: usize,
    stats: FdbStats,
}

impl Fdb {
    /// An empty table. Caps of zero are raised to one.
    #[must_use]
    pub fn new(config: FdbConfig) -> Self {
        let config = FdbConfig {
            max_entries: config.max_entries.max(1),
            max_per_port: config.max_per_port.max(1),
            ..config
        };
        Self {
            max_age: u64::try_from(config.max_age.as_nanos()).unwrap_or(u64::MAX),
            config,
            epoch: None,
            last_stamp: None,
            table: Table::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            ports: Vec::new(),
            learned: 0,
            stats: FdbStats::default(),
        }
    }

    /// The limits in force.
    #[must_use]
    pub const fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Event counters.
    #[must_use]
    pub const fn stats(&self) -> &FdbStats {
        &self.stats
    }

    /// Entries held, static and learned (aged entries not yet swept included).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.table.len
    }

    /// Whether the table holds nothing.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Learned entries held, in total.
    #[must_use]
    pub const fn learned_len(&self) -> usize {
        self.learned
    }

    /// Learned entries held behind one port.
    #[must_use]
    pub fn port_len(&self, port: PortId) -> usize {
        self.ports.get(port.index()).map_or(0, |l| l.learned)
    }

    #[inline(always)]
    pub(crate) fn stamp(&mut self, now: Instant) -> Stamp {
        if let Some((at, stamp)) = self.last_stamp
            && at == now
        {
            return stamp;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let stamp = since(epoch, now);
        self.last_stamp = Some((now, stamp));
        stamp
    }

    #[inline]
    fn instant(&self, stamp: Stamp) -> Option<Instant> {
        self.epoch.map(|e| e + Duration::from_nanos(stamp))
    }

    #[inline]
    const fn is_live(&self, slot: &Slot, now: Stamp) -> bool {
        slot.node == NIL || now.saturating_sub(slot.last_seen) < self.max_age
    }

    /// `mac` on `network`, hashed for [`Fdb::prefetch`] and the probes
    /// that follow it.
    #[inline]
    pub(crate) fn hashed(&self, network: NetworkId, mac: MacAddr) -> Hashed {
        self.table.hashed(Key::new(network, mac))
    }

    /// Starts loading the slot where `h`'s probe begins and returns at
    /// once: issued for the destination before the source is learned, the
    /// two cache misses of a frame overlap.
    #[inline]
    pub(crate) fn prefetch(&self, h: Hashed) {
        self.table.touch(h);
    }

    /// Records that `mac` sent a frame on `port` of `network` at `now`.
    #[inline]
    pub fn learn(
        &mut self,
        now: Instant,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
    ) -> Learned {
        self.learn_placed(now, network, mac, port).0
    }

    /// Applies what another replica of the table learned (see
    /// [`FdbUpdate`]): `mac` was seen on `port` at `seen`. The most recent
    /// sighting wins whichever replica made it, so replicas that learn the
    /// same MAC on two ports at once converge; a static entry is never
    /// changed. Returns whether the table changed.
    pub fn apply_update(&mut self, update: &FdbUpdate) -> bool {
        let seen = self.stamp(update.seen);
        let h = self.hashed(update.network, update.mac);
        if let Some(slot) = self.table.get(h) {
            // Compared as instants: the replicas' stamps count from
            // different epochs.
            let newer_here =
                self.instant(slot.last_seen) > Some(update.seen) && self.is_live(slot, seen);
            if slot.origin() == Origin::Static || newer_here {
                return false;
            }
        }
        self.learn_stamped(seen, h, update.port);
        true
    }

    /// [`Fdb::learn`], also saying whether the entry was (re)placed on its
    /// port's list: new, moved, or refreshed for the first time in a
    /// [`REPLACE_INTERVAL`]. Those are the changes other replicas need; a
    /// plain refresh within the interval is not.
    #[inline]
    pub(crate) fn learn_placed(
        &mut self,
        now: Instant,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
    ) -> (Learned, bool) {
        let now = self.stamp(now);
        let h = self.hashed(network, mac);
        self.learn_stamped(now, h, port)
    }

    /// [`Fdb::learn_placed`] at a stamp from [`Fdb::stamp`], for a key
    /// from [`Fdb::hashed`]. The common case, a known source on its own
    /// port within its placement tick, costs one probe and one store.
    #[inline(always)]
    pub(crate) fn learn_stamped(&mut self, now: Stamp, h: Hashed, port: PortId) -> (Learned, bool) {
        let Some(i) = self.table.find(h) else {
            self.insert_learned(now, h, port);
            return (Learned::New, true);
        };
        let max_age = self.max_age;
        let slot = &mut self.table.slots[i];
        if slot.node == NIL {
            if slot.port == port {
                return (Learned::Refreshed, false);
            }
            let at = slot.port;
            self.stats.pinned += 1;
            return (Learned::Pinned { at }, false);
        }
        let was_live = now.saturating_sub(slot.last_seen) < max_age;
        // The entry was placed in the tick of its last sighting.
        if slot.port == port && tick(slot.last_seen) == tick(now) {
            slot.last_seen = now;
            return if was_live {
                (Learned::Refreshed, false)
            } else {
                (Learned::New, true)
            };
        }
        let old = *slot;
        slot.port = port;
        slot.last_seen = now;
        self.unlink(old.node);
        if old.port == port {
            self.link_back(old.node, port);
            return if was_live {
                (Learned::Refreshed, true)
            } else {
                (Learned::New, true)
            };
        }
        self.make_room(port);
        self.link_back(old.node, port);
        if was_live {
            self.stats.moved += 1;
            (Learned::Moved { from: old.port }, true)
        } else {
            (Learned::New, true)
        }
    }

    /// The port behind `mac` on `network`, if known and not aged out.
    #[inline]
    #[must_use]
    pub fn lookup(&self, now: Instant, network: NetworkId, mac: MacAddr) -> Option<PortId> {
        let now = since(self.epoch?, now);
        self.lookup_stamped(now, self.hashed(network, mac))
    }

    /// [`Fdb::lookup`] at a stamp from [`Fdb::stamp`], for a key from
    /// [`Fdb::hashed`].
    #[inline(always)]
    pub(crate) fn lookup_stamped(&self, now: Stamp, h: Hashed) -> Option<PortId> {
        let slot = self.table.get(h)?;
        self.is_live(slot, now).then_some(slot.port)
    }

    /// Reads the first slot the entry of `mac` on `network` would be in,
    /// and nothing else: called for every frame of a batch before the
    /// first is decided, the loads of independent frames overlap, so the
    /// batch pays for about one cache miss where deciding frame by frame
    /// pays for each in turn.
    #[inline]
    pub fn warm(&self, network: NetworkId, mac: MacAddr) {
        self.table.touch(self.hashed(network, mac));
    }

    /// Pins `mac` on `network` to `port` (an endpoint's own MAC), replacing
    /// whatever was there.
    pub fn add_static(&mut self, now: Instant, network: NetworkId, mac: MacAddr, port: PortId) {
        let now = self.stamp(now);
        let h = self.hashed(network, mac);
        if let Some(old) = self.table.get(h).copied()
            && old.origin() == Origin::Learned
        {
            self.unlink(old.node);
            self.free.push(old.node);
        }
        self.table.insert(h, port, now, NIL);
    }

    /// Removes a static entry; a learned entry for the MAC is left alone.
    pub fn remove_static(&mut self, network: NetworkId, mac: MacAddr) {
        let h = self.hashed(network, mac);
        if self
            .table
            .get(h)
            .is_some_and(|s| s.origin() == Origin::Static)
        {
            self.table.remove(h);
        }
    }

    /// Forgets every entry, static or learned, behind `port`.
    pub fn flush_port(&mut self, port: PortId) {
        self.remove_where(|s| s.port == port);
    }

    /// Forgets every entry of `network`.
    pub fn flush_network(&mut self, network: NetworkId) {
        self.remove_where(|s| s.key().network() == network);
    }

    /// Forgets the learned entries, keeping the static ones.
    pub fn flush_learned(&mut self) {
        self.remove_where(|s| s.origin() == Origin::Learned);
    }

    fn remove_where(&mut self, pred: impl Fn(&Slot) -> bool) {
        let doomed: Vec<Key> = self
            .table
            .iter()
            .filter(|s| pred(s))
            .map(Slot::key)
            .collect();
        for key in doomed {
            self.remove(key);
        }
    }

    /// Removes entries that aged out by `now`; returns how many. Entries are
    /// found from the front of each port's list, so one may be reclaimed up
    /// to [`REPLACE_INTERVAL`] late; lookups never return it meanwhile.
    pub fn expire(&mut self, now: Instant) -> usize {
        let Some(epoch) = self.epoch else { return 0 };
        let now = since(epoch, now);
        let mut removed = 0;
        for p in 0..self.ports.len() {
            while let Some(key) = self.head_key(p) {
                let expired = self
                    .table
                    .get(self.table.hashed(key))
                    .is_none_or(|s| !self.is_live(s, now));
                if !expired {
                    break;
                }
                self.remove(key);
                removed += 1;
            }
        }
        self.stats.aged += removed as u64;
        removed
    }

    /// When [`Fdb::expire`] next has work, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let earliest = (0..self.ports.len())
            .filter_map(|p| self.table.get(self.table.hashed(self.head_key(p)?)))
            .map(|s| s.last_seen.saturating_add(self.max_age))
            .min()?;
        self.instant(earliest)
    }

    /// Every live entry, sorted by network then MAC.
    #[must_use]
    pub fn snapshot(&self, now: Instant) -> Vec<FdbRow> {
        let Some(epoch) = self.epoch else {
            return Vec::new();
        };
        let now = since(epoch, now);
        let mut rows: Vec<FdbRow> = self
            .table
            .iter()
            .filter(|s| self.is_live(s, now))
            .map(|s| FdbRow {
                network: s.key().network(),
                mac: s.key().mac(),
                port: s.port,
                age: (s.origin() == Origin::Learned)
                    .then(|| Duration::from_nanos(now.saturating_sub(s.last_seen))),
                origin: s.origin(),
            })
            .collect();
        rows.sort_unstable_by_key(|r| (r.network, r.mac));
        rows
    }

    fn head_key(&self, port: usize) -> Option<Key> {
        let head = self.ports.get(port)?.head;
        (head != NIL).then(|| self.nodes[head as usize].key)
    }

    #[cold]
    #[inline(never)]
    fn insert_learned(&mut self, now: Stamp, h: Hashed, port: PortId) {
        self.make_room(port);
        let node = Node {
            key: h.key,
            port,
            prev: NIL,
            next: NIL,
        };
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            let i = u32::try_from(self.nodes.len()).expect("FDB is capped far below 2^32 entries");
            self.nodes.push(node);
            i
        };
        self.link_back(i, port);
        self.table.insert(h, port, now, i);
        self.stats.learned += 1;
    }

    /// Evicts one entry if adding one behind `port` would break a cap.
    fn make_room(&mut self, port: PortId) {
        if self.ports.len() <= port.index() {
            self.ports.resize(port.index() + 1, PortList::default());
        }
        if self.ports[port.index()].learned >= self.config.max_per_port {
            if let Some(key) = self.head_key(port.index()) {
                self.remove(key);
                self.stats.evicted_port_cap += 1;
            }
        } else if self.learned >= self.config.max_entries {
            // The port holding the most entries gives one up; on a tie the
            // lowest port id, so the choice is deterministic.
            let victim = (0..self.ports.len())
                .max_by_key(|&p| (self.ports[p].learned, core::cmp::Reverse(p)))
                .and_then(|p| self.head_key(p));
            if let Some(key) = victim {
                self.remove(key);
                self.stats.evicted_table_cap += 1;
            }
        }
    }

    fn remove(&mut self, key: Key) {
        if let Some(slot) = self.table.remove(self.table.hashed(key))
            && slot.origin() == Origin::Learned
        {
            self.unlink(slot.node);
            self.free.push(slot.node);
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node {
            port, prev, next, ..
        } = self.nodes[i as usize];
        let list = &mut self.ports[port.index()];
        if prev == NIL {
            list.head = next;
        }
        if next == NIL {
            list.tail = prev;
        }
        list.learned -= 1;
        self.learned -= 1;
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn link_back(&mut self, i: u32, port: PortId) {
        let list = &mut self.ports[port.index()];
        let tail = list.tail;
        list.tail = i;
        if tail == NIL {
            list.head = i;
        }
        list.learned += 1;
        self.learned += 1;
        if tail != NIL {
            self.nodes[tail as usize].next = i;
        }
        let node = &mut self.nodes[i as usize];
        node.port = port;
        node.prev = tail;
        node.next = NIL;
    }
}

/// Asks the core to bring the cache line of `p` closer, and returns at
/// once: unlike a load, nothing waits for it.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it cannot fault, changes no state the
    // program sees, and `p` is a live reference besides.
    unsafe {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(core::ptr::from_ref(p).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn since(epoch: Instant, now: Instant) -> Stamp {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[inline]
fn tick(stamp: Stamp) -> u32 {
    // Wraps after 146 years of uptime; a wrap only re-places entries early.
    #[allow(clippy::cast_possible_truncation)]
    let t = (stamp >> TICK_SHIFT) as u32;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: NetworkId = NetworkId(0);

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    fn fdb(max_entries: usize, max_per_port: usize) -> Fdb {
        Fdb::new(FdbConfig {
            max_age: Duration::from_secs(300),
            max_entries,
            max_per_port,
        })
    }

    #[test]
    fn learns_then_finds() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        assert_eq!(f.lookup(t0, N, mac(1)), None);
        assert_eq!(f.learn(t0, N, mac(1), PortId(3)), Learned::New);
        assert_eq!(f.lookup(t0, N, mac(1)), Some(PortId(3)));
        assert_eq!(
            f.lookup(t0, NetworkId(1), mac(1)),
            None,
            "networks are separate tables"
        );
        assert_eq!(f.learn(t0, N, mac(1), PortId(3)), Learned::Refreshed);
    }

    #[test]
    fn ages_out_exactly_at_max_age_and_refresh_extends_life() {
        let t0 = Instant::now();
        let age = Duration::from_secs(300);
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(1));
        assert_eq!(
            f.lookup(t0 + age - Duration::from_nanos(1), N, mac(1)),
            Some(PortId(1))
        );
        assert_eq!(f.lookup(t0 + age, N, mac(1)), None);

        f.learn(t0 + Duration::from_secs(200), N, mac(1), PortId(1));
        assert_eq!(f.lookup(t0 + age, N, mac(1)), Some(PortId(1)));
        assert_eq!(f.lookup(t0 + Duration::from_secs(500), N, mac(1)), None);
    }

    #[test]
    fn expire_reclaims_and_poll_timeout_says_when() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(1));
        f.learn(t0 + Duration::from_secs(10), N, mac(2), PortId(2));
        f.add_static(t0, N, mac(9), PortId(9));
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        assert_eq!(f.expire(t0 + Duration::from_secs(299)), 0);
        assert_eq!(f.expire(t0 + Duration::from_secs(300)), 1);
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(310)));
        assert_eq!(f.expire(t0 + Duration::from_secs(400)), 1);
        assert_eq!(f.poll_timeout(), None, "static entries never expire");
        assert_eq!(f.len(), 1);
        assert_eq!(f.stats().aged, 2);
    }

    #[test]
    fn a_mac_seen_elsewhere_moves_and_is_counted() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(1));
        assert_eq!(
            f.learn(t0, N, mac(1), PortId(2)),
            Learned::Moved { from: PortId(1) }
        );
        assert_eq!(f.lookup(t0, N, mac(1)), Some(PortId(2)));
        assert_eq!((f.port_len(PortId(1)), f.port_len(PortId(2))), (0, 1));
        assert_eq!(f.stats().moved, 1);
    }

    #[test]
    fn static_entries_are_not_moved_aged_or_counted_against_caps() {
        let t0 = Instant::now();
        let mut f = fdb(1, 1);
        f.add_static(t0, N, mac(1), PortId(1));
        assert_eq!(
            f.learn(t0, N, mac(1), PortId(2)),
            Learned::Pinned { at: PortId(1) }
        );
        assert_eq!(
            f.lookup(t0 + Duration::from_secs(10_000), N, mac(1)),
            Some(PortId(1))
        );
        f.learn(t0, N, mac(2), PortId(1));
        assert_eq!(f.learned_len(), 1);
        assert_eq!(f.stats().pinned, 1);
        f.remove_static(N, mac(1));
        assert_eq!(f.lookup(t0, N, mac(1)), None);
        assert_eq!(
            f.lookup(t0, N, mac(2)),
            Some(PortId(1)),
            "learned entry untouched"
        );
    }

    #[test]
    fn static_replaces_a_learned_entry() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(5));
        f.add_static(t0, N, mac(1), PortId(1));
        assert_eq!(f.learned_len(), 0);
        assert_eq!(f.port_len(PortId(5)), 0);
        assert_eq!(f.lookup(t0, N, mac(1)), Some(PortId(1)));
    }

    #[test]
    fn per_port_cap_evicts_that_ports_least_recent_entry() {
        let t0 = Instant::now();
        let mut f = fdb(100, 3);
        for m in 1..=3 {
            f.learn(t0 + Duration::from_secs(u64::from(m)), N, mac(m), PortId(1));
        }
        // mac(1) refreshed long enough after placement to move to the back.
        f.learn(t0 + Duration::from_secs(10), N, mac(1), PortId(1));
        f.learn(t0 + Duration::from_secs(11), N, mac(4), PortId(1));
        assert_eq!(
            f.lookup(t0 + Duration::from_secs(11), N, mac(2)),
            None,
            "least recent evicted"
        );
        for m in [1, 3, 4] {
            assert_eq!(
                f.lookup(t0 + Duration::from_secs(11), N, mac(m)),
                Some(PortId(1))
            );
        }
        assert_eq!(f.port_len(PortId(1)), 3);
        assert_eq!(f.stats().evicted_port_cap, 1);
    }

    #[test]
    fn table_cap_evicts_from_the_port_holding_the_most() {
        let t0 = Instant::now();
        let mut f = fdb(4, 100);
        f.learn(t0, N, mac(100), PortId(1)); // the quiet port's one entry
        for m in 0..3 {
            f.learn(t0, N, mac(m), PortId(2));
        }
        // The table is full; a flood of new MACs from port 2 only ever
        // evicts port 2's entries, and a new MAC on a quiet port 3 also
        // takes its room from port 2.
        for m in 3..50 {
            f.learn(t0, N, mac(m), PortId(2));
        }
        f.learn(t0, N, mac(200), PortId(3));
        assert_eq!(f.lookup(t0, N, mac(100)), Some(PortId(1)));
        assert_eq!(f.lookup(t0, N, mac(200)), Some(PortId(3)));
        assert_eq!(f.learned_len(), 4);
        assert_eq!(f.port_len(PortId(2)), 2);
        assert_eq!(f.stats().evicted_table_cap, 48);
    }

    #[test]
    fn flushes_by_port_and_network() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(1));
        f.learn(t0, N, mac(2), PortId(2));
        f.add_static(t0, N, mac(3), PortId(1));
        f.learn(t0, NetworkId(1), mac(4), PortId(4));
        f.flush_port(PortId(1));
        assert_eq!(f.lookup(t0, N, mac(1)), None);
        assert_eq!(f.lookup(t0, N, mac(3)), None);
        assert_eq!(f.lookup(t0, N, mac(2)), Some(PortId(2)));
        f.flush_network(N);
        assert_eq!(f.lookup(t0, N, mac(2)), None);
        assert_eq!(f.lookup(t0, NetworkId(1), mac(4)), Some(PortId(4)));
        assert_eq!(f.learned_len(), 1);
    }

    #[test]
    fn snapshot_lists_live_entries_with_age_and_origin() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(2), PortId(2));
        f.add_static(t0, N, mac(1), PortId(1));
        f.learn(t0, N, mac(3), PortId(3));
        f.learn(t0 + Duration::from_secs(200), N, mac(3), PortId(3));
        let rows = f.snapshot(t0 + Duration::from_secs(350));
        assert_eq!(
            rows,
            vec![
                FdbRow {
                    network: N,
                    mac: mac(1),
                    port: PortId(1),
                    age: None,
                    origin: Origin::Static
                },
                FdbRow {
                    network: N,
                    mac: mac(3),
                    port: PortId(3),
                    age: Some(Duration::from_secs(150)),
                    origin: Origin::Learned
                },
            ]
        );
    }

    #[test]
    fn an_aged_entry_relearned_elsewhere_is_new_not_a_move() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        f.learn(t0, N, mac(1), PortId(1));
        let later = t0 + Duration::from_secs(301);
        assert_eq!(f.learn(later, N, mac(1), PortId(2)), Learned::New);
        assert_eq!(f.stats().moved, 0);
        assert_eq!(f.lookup(later, N, mac(1)), Some(PortId(2)));
    }

    #[test]
    fn replicas_converge_on_the_most_recent_sighting() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let (mut a, mut b) = (fdb(10, 10), fdb(10, 10));
        // Each replica sees mac(1) on a different port at about the same
        // time, then applies the other's change.
        let (_, shared_a) = a.learn_placed(t0, N, mac(1), PortId(1));
        let (_, shared_b) = b.learn_placed(t1, N, mac(1), PortId(2));
        assert!(shared_a && shared_b, "new entries are shared");
        let ua = FdbUpdate {
            network: N,
            mac: mac(1),
            port: PortId(1),
            seen: t0,
        };
        let ub = FdbUpdate {
            port: PortId(2),
            seen: t1,
            ..ua
        };
        assert!(a.apply_update(&ub));
        assert!(!b.apply_update(&ua), "an older sighting changes nothing");
        assert_eq!(a.lookup(t1, N, mac(1)), Some(PortId(2)));
        assert_eq!(b.lookup(t1, N, mac(1)), Some(PortId(2)));

        // A refresh within the placement interval is not shared; one after
        // it is, so the replicas' ages stay within an interval.
        let (_, again) = b.learn_placed(t1 + Duration::from_millis(1), N, mac(1), PortId(2));
        assert!(!again);
        let (_, later) = b.learn_placed(t1 + 2 * REPLACE_INTERVAL, N, mac(1), PortId(2));
        assert!(later);

        // A static entry is never changed by another replica.
        a.add_static(t0, N, mac(2), PortId(5));
        let over_static = FdbUpdate {
            mac: mac(2),
            seen: t1,
            ..ua
        };
        assert!(!a.apply_update(&over_static));
        assert_eq!(a.lookup(t1, N, mac(2)), Some(PortId(5)));
    }

    /// A deterministic xorshift, so a failure replays.
    fn rng(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn the_table_agrees_with_a_map_under_churn() {
        // Few keys in a small table: long clusters that wrap around the
        // end, so removals shift entries back across the wrap.
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        for round in 0..20 {
            let mut table = Table::new();
            let mut model = std::collections::HashMap::new();
            for _ in 0..4_000 {
                let k = next() % 40;
                let key = Key::new(
                    NetworkId(u32::try_from(k % 3).unwrap() << 16),
                    mac(u32::try_from(k).unwrap()),
                );
                let h = table.hashed(key);
                if next().is_multiple_of(3) {
                    assert_eq!(
                        table.remove(h).map(|s| s.last_seen),
                        model.remove(&k),
                        "round {round}: removing {k}"
                    );
                } else {
                    let v = next();
                    table.insert(h, PortId(1), v, NIL);
                    model.insert(k, v);
                }
                assert_eq!(table.len, model.len());
                assert!(
                    table.len * 4 <= table.slots.len() * 3,
                    "never over 3/4 full"
                );
                for k in 0..40 {
                    let key = Key::new(
                        NetworkId(u32::try_from(k % 3).unwrap() << 16),
                        mac(u32::try_from(k).unwrap()),
                    );
                    assert_eq!(
                        table.get(table.hashed(key)).map(|s| s.last_seen),
                        model.get(&k).copied(),
                        "round {round}: key {k}"
                    );
                }
            }
            assert!(
                table.slots.len() <= 64,
                "40 keys never need more than 64 slots"
            );
        }
    }

    #[test]
    fn networks_that_differ_only_above_16_bits_are_separate() {
        let t0 = Instant::now();
        let mut f = fdb(10, 10);
        let (low, high) = (NetworkId(7), NetworkId(0x0003_0007));
        f.learn(t0, low, mac(1), PortId(1));
        f.learn(t0, high, mac(1), PortId(2));
        f.add_static(t0, NetworkId(u32::MAX), mac(1), PortId(3));
        assert_eq!(f.lookup(t0, low, mac(1)), Some(PortId(1)));
        assert_eq!(f.lookup(t0, high, mac(1)), Some(PortId(2)));
        assert_eq!(f.lookup(t0, NetworkId(u32::MAX), mac(1)), Some(PortId(3)));
        let rows: Vec<_> = f
            .snapshot(t0)
            .iter()
            .map(|r| (r.network, r.mac, r.port))
            .collect();
        assert_eq!(
            rows,
            [
                (low, mac(1), PortId(1)),
                (high, mac(1), PortId(2)),
                (NetworkId(u32::MAX), mac(1), PortId(3)),
            ]
        );
        f.flush_network(high);
        assert_eq!(f.lookup(t0, high, mac(1)), None);
        assert_eq!(f.lookup(t0, low, mac(1)), Some(PortId(1)));
    }

    #[test]
    fn a_port_flooding_new_sources_keeps_the_table_small_and_exact() {
        // 100,000 distinct sources through a port capped at 64: every
        // learn past the cap evicts, and the table neither grows with the
        // churn nor loses a quiet port's entry.
        let t0 = Instant::now();
        let mut f = fdb(1_000, 64);
        f.learn(t0, N, mac(0), PortId(9));
        for m in 1..=100_000 {
            let now = t0 + Duration::from_micros(u64::from(m));
            assert_eq!(f.learn(now, N, mac(m), PortId(1)), Learned::New);
        }
        let now = t0 + Duration::from_secs(1);
        assert_eq!(f.port_len(PortId(1)), 64);
        assert_eq!(f.len(), 65);
        assert!(f.table.slots.len() <= 128, "{} slots", f.table.slots.len());
        assert_eq!(f.lookup(now, N, mac(0)), Some(PortId(9)));
        for m in 1..=100_000 {
            let expect = (m > 100_000 - 64).then_some(PortId(1));
            assert_eq!(f.lookup(now, N, mac(m)), expect, "mac {m}");
        }
        assert_eq!(f.stats().evicted_port_cap, 100_000 - 64);
    }

    #[test]
    fn a_refresh_in_a_later_tick_re_places_the_entry() {
        // The placement tick is the last sighting's: refreshes within one
        // tick leave the list alone, the first one in the next moves the
        // entry to the back, so the other entry is evicted first.
        let t0 = Instant::now();
        let mut f = fdb(100, 2);
        let (_, placed) = f.learn_placed(t0, N, mac(1), PortId(1));
        assert!(placed);
        f.learn(t0, N, mac(2), PortId(1));
        let mut now = t0;
        let mut re_placed = 0;
        while now < t0 + 3 * REPLACE_INTERVAL {
            now += Duration::from_millis(100);
            re_placed += usize::from(f.learn_placed(now, N, mac(1), PortId(1)).1);
        }
        assert!((2..=3).contains(&re_placed), "re-placed {re_placed} times");
        f.learn(now, N, mac(3), PortId(1));
        assert_eq!(f.lookup(now, N, mac(2)), None, "the older placement goes");
        assert_eq!(f.lookup(now, N, mac(1)), Some(PortId(1)));
    }
}
