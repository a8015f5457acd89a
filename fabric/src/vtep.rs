//! The VTEP table: per network (VNI), which remote MAC lives behind which
//! VTEP, which IP belongs to which MAC (for ARP suppression), and which
//! VTEPs receive head-end replicated broadcast and unknown unicast.
//!
//! Entries have an [`Origin`]. Control-plane entries come from
//! [`PeerEvent`]s (etcd records, the static peer file) and never age; they
//! are the truth about who owns a MAC, so a frame whose inner source MAC
//! the control plane places behind another VTEP is refused
//! ([`DropReason::SourceNotOwned`]). Learned entries come from decapsulated
//! frames, in networks whose policy is [`SourcePolicy::Learn`] (the static
//! file without pinned endpoints, as the kernel's vxlan learns); they age
//! out after [`TableConfig::ageing`] and are capped per network, since
//! their keys come from the wire.
//!
//! Maps are keyed with foldhash's per-process random seed: learned MACs are
//! chosen by whoever sends, so a fixed hash would let them collide on
//! purpose.
//!
//! Time is a parameter (`now`), never read here.

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use smoltcp::wire::EthernetAddress;

use crate::decap::DropReason;
use crate::peers::{PeerEvent, RemoteEndpoint};
use crate::wire::Vni;

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Published by the control plane; does not age.
    ControlPlane,
    /// Learned from a decapsulated frame's inner source MAC; ages.
    Learned,
}

/// One remote MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    /// The VTEP it lives behind.
    pub vtep: Ipv4Addr,
    /// Where the entry came from.
    pub origin: Origin,
    /// Its IPv4 address, from the control plane.
    pub ip: Option<Ipv4Addr>,
    /// When it was published, or last seen as a source.
    pub last_seen: Instant,
}

/// Which inner source MACs a network accepts from a VTEP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePolicy {
    /// Only MACs the control plane places behind that VTEP (etcd mode):
    /// nothing is learned, a host cannot speak for another's containers.
    ControlPlane,
    /// Any MAC the control plane does not place elsewhere, learned (static
    /// peer file mode).
    Learn,
}

/// A network's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Its VNI.
    pub vni: Vni,
    /// Source MAC policy.
    pub policy: SourcePolicy,
    /// Refuse frames from VTEPs not taking part in the network
    /// ([`DropReason::UnknownVtep`]). On by default: the underlay is not a
    /// trusted network, and the kernel's vxlan, which accepts anyone, is
    /// usually shielded by a firewall we do not have.
    pub require_known_vtep: bool,
}

impl NetworkConfig {
    /// A network fed by the control plane.
    #[must_use]
    pub const fn control_plane(vni: Vni) -> Self {
        Self {
            vni,
            policy: SourcePolicy::ControlPlane,
            require_known_vtep: true,
        }
    }

    /// A network that learns remote MACs.
    #[must_use]
    pub const fn learning(vni: Vni) -> Self {
        Self {
            vni,
            policy: SourcePolicy::Learn,
            require_known_vtep: true,
        }
    }
}

/// Table-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// This host's VTEP: events about it are ignored (its endpoints are
    /// local ports, and flooding to itself would loop).
    pub local_vtep: Option<Ipv4Addr>,
    /// How long a learned entry lives without traffic: 300 s, the kernel
    /// vxlan's and Docker's `ageing 300`.
    pub ageing: Duration,
    /// Learned entries per network at most; past that, frames are still
    /// accepted but their sources are not learned.
    pub max_learned: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            local_vtep: None,
            ageing: Duration::from_secs(300),
            max_learned: 65_536,
        }
    }
}

/// A control-plane event the table cannot apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// No local network has this VNI; the event concerns a network this
    /// host has not joined (the caller usually ignores it).
    #[error("no local network with VNI {0}")]
    UnknownVni(Vni),
    /// An endpoint MAC that is multicast or zero.
    #[error("endpoint MAC {0} is not a unicast address")]
    BadMac(EthernetAddress),
}

/// Traffic counters of one VTEP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VtepStats {
    /// Packets encapsulated to it.
    pub tx_packets: u64,
    /// Inner bytes encapsulated to it.
    pub tx_bytes: u64,
    /// Packets accepted from it.
    pub rx_packets: u64,
    /// Inner bytes accepted from it.
    pub rx_bytes: u64,
    /// Packets from it that were dropped.
    pub drops: u64,
}

#[derive(Debug, Default)]
struct Vtep {
    name: String,
    last_seen: Option<Instant>,
    stats: VtepStats,
}

#[derive(Debug)]
struct Network {
    config: NetworkConfig,
    macs: HashMap<EthernetAddress, MacEntry, RandomState>,
    ips: HashMap<Ipv4Addr, EthernetAddress, RandomState>,
    joined: BTreeSet<Ipv4Addr>,
    /// Control-plane endpoints per VTEP: a VTEP with any is a member.
    endpoints: BTreeMap<Ipv4Addr, usize>,
    learned: usize,
    /// `joined` ∪ VTEPs with endpoints, sorted: the head-end replication
    /// list, rebuilt on (rare) membership changes so the per-frame path
    /// reads a slice.
    flood: Vec<Ipv4Addr>,
}

impl Network {
    fn new(config: NetworkConfig) -> Self {
        Self {
            config,
            macs: HashMap::default(),
            ips: HashMap::default(),
            joined: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            learned: 0,
            flood: Vec::new(),
        }
    }

    fn rebuild_flood(&mut self) {
        let set: BTreeSet<Ipv4Addr> = self
            .joined
            .iter()
            .chain(self.endpoints.keys())
            .copied()
            .collect();
        self.flood = set.into_iter().collect();
    }

    fn is_member(&self, vtep: Ipv4Addr) -> bool {
        self.flood.binary_search(&vtep).is_ok()
    }

    /// Removes `mac` and undoes its bookkeeping (learned count, endpoint
    /// count and flood list, IP mapping).
    fn remove_mac(&mut self, mac: EthernetAddress) -> Option<MacEntry> {
        let e = self.macs.remove(&mac)?;
        match e.origin {
            Origin::Learned => self.learned -= 1,
            Origin::ControlPlane => {
                if let Some(n) = self.endpoints.get_mut(&e.vtep) {
                    *n -= 1;
                    if *n == 0 {
                        self.endpoints.remove(&e.vtep);
                        self.rebuild_flood();
                    }
                }
            }
        }
        if let Some(ip) = e.ip
            && self.ips.get(&ip) == Some(&mac)
        {
            self.ips.remove(&ip);
        }
        Some(e)
    }

    fn add_endpoint(&mut self, now: Instant, ep: &RemoteEndpoint) {
        self.remove_mac(ep.mac);
        if let Some(ip) = ep.ip
            && let Some(old) = self.ips.insert(ip, ep.mac)
            && old != ep.mac
            && let Some(e) = self.macs.get_mut(&old)
        {
            // The address moved to a new endpoint before the old record
            // was withdrawn; the old MAC keeps its VTEP but not the address.
            e.ip = None;
        }
        self.macs.insert(
            ep.mac,
            MacEntry {
                vtep: ep.vtep,
                origin: Origin::ControlPlane,
                ip: ep.ip,
                last_seen: now,
            },
        );
        let n = self.endpoints.entry(ep.vtep).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.rebuild_flood();
        }
    }

    fn remove_vtep(&mut self, vtep: Ipv4Addr) {
        let gone: Vec<EthernetAddress> = self
            .macs
            .iter()
            .filter(|(_, e)| e.vtep == vtep)
            .map(|(m, _)| *m)
            .collect();
        for mac in gone {
            self.remove_mac(mac);
        }
        self.joined.remove(&vtep);
        self.endpoints.remove(&vtep);
        self.rebuild_flood();
    }
}

/// What `vsctl show-vteps` shows for one VTEP.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VtepSnapshot {
    /// Its underlay address.
    pub vtep: Ipv4Addr,
    /// The host's name, empty until the control plane says it.
    pub name: String,
    /// Networks it takes part in (within the snapshot's filter).
    pub networks: Vec<Vni>,
    /// Control-plane endpoints behind it.
    pub endpoints: usize,
    /// Learned MACs behind it.
    pub learned: usize,
    /// Time since a packet from it was last accepted.
    pub last_seen: Option<Duration>,
    /// Counters.
    pub stats: VtepStats,
}

/// The table. One per host; see the module documentation.
#[derive(Debug, Default)]
pub struct VtepTable {
    config: TableConfig,
    networks: HashMap<Vni, Network, RandomState>,
    vteps: BTreeMap<Ipv4Addr, Vtep>,
}

impl VtepTable {
    /// An empty table.
    #[must_use]
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            networks: HashMap::default(),
            vteps: BTreeMap::new(),
        }
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Adds a local overlay network, or changes its policy; its entries
    /// stay. Returns whether it is new.
    pub fn add_network(&mut self, config: NetworkConfig) -> bool {
        match self.networks.get_mut(&config.vni) {
            Some(n) => {
                n.config = config;
                false
            }
            None => {
                self.networks.insert(config.vni, Network::new(config));
                true
            }
        }
    }

    /// Removes a network and every entry in it.
    pub fn remove_network(&mut self, vni: Vni) -> bool {
        self.networks.remove(&vni).is_some()
    }

    /// Whether a local network has this VNI.
    #[must_use]
    pub fn has_network(&self, vni: Vni) -> bool {
        self.networks.contains_key(&vni)
    }

    /// Applies a control-plane event. `Ok(false)`: nothing changed (the
    /// event was about this host, or repeated what the table knew).
    pub fn apply(&mut self, now: Instant, event: &PeerEvent) -> Result<bool, EventError> {
        let is_local = |v: &Ipv4Addr| self.config.local_vtep == Some(*v);
        match event {
            PeerEvent::VtepUp { vtep, name } => {
                if is_local(vtep) {
                    return Ok(false);
                }
                let v = self.vteps.entry(*vtep).or_default();
                let changed = v.name != *name;
                v.name.clone_from(name);
                Ok(changed)
            }
            PeerEvent::VtepDown { vtep } => {
                let existed = self.vteps.remove(vtep).is_some();
                let mut changed = existed;
                for n in self.networks.values_mut() {
                    let before = (n.macs.len(), n.flood.len());
                    n.remove_vtep(*vtep);
                    changed |= before != (n.macs.len(), n.flood.len());
                }
                Ok(changed)
            }
            PeerEvent::Join { vni, vtep } => {
                let n = self
                    .networks
                    .get_mut(vni)
                    .ok_or(EventError::UnknownVni(*vni))?;
                if is_local(vtep) || !n.joined.insert(*vtep) {
                    return Ok(false);
                }
                n.rebuild_flood();
                self.vteps.entry(*vtep).or_default();
                Ok(true)
            }
            PeerEvent::Leave { vni, vtep } => {
                let n = self
                    .networks
                    .get_mut(vni)
                    .ok_or(EventError::UnknownVni(*vni))?;
                if !n.joined.remove(vtep) {
                    return Ok(false);
                }
                n.rebuild_flood();
                Ok(true)
            }
            PeerEvent::EndpointAdd(ep) => {
                if ep.mac.is_multicast() || ep.mac.as_bytes() == [0; 6] {
                    return Err(EventError::BadMac(ep.mac));
                }
                let n = self
                    .networks
                    .get_mut(&ep.vni)
                    .ok_or(EventError::UnknownVni(ep.vni))?;
                if is_local(&ep.vtep) {
                    return Ok(false);
                }
                let same = n.macs.get(&ep.mac).is_some_and(|e| {
                    e.origin == Origin::ControlPlane && e.vtep == ep.vtep && e.ip == ep.ip
                });
                if same {
                    return Ok(false);
                }
                n.add_endpoint(now, ep);
                self.vteps.entry(ep.vtep).or_default();
                Ok(true)
            }
            PeerEvent::EndpointRemove { vni, mac } => {
                let n = self
                    .networks
                    .get_mut(vni)
                    .ok_or(EventError::UnknownVni(*vni))?;
                if n.macs
                    .get(mac)
                    .is_none_or(|e| e.origin != Origin::ControlPlane)
                {
                    return Ok(false);
                }
                n.remove_mac(*mac);
                Ok(true)
            }
        }
    }

    /// The VTEP to send a known unicast frame for `mac` to, or `None`
    /// (flood to [`VtepTable::flood_list`]). An aged learned entry is a
    /// miss even before [`VtepTable::expire`] removes it.
    #[must_use]
    pub fn lookup(&self, now: Instant, vni: Vni, mac: EthernetAddress) -> Option<Ipv4Addr> {
        let e = self.networks.get(&vni)?.macs.get(&mac)?;
        let fresh = e.origin == Origin::ControlPlane
            || now.saturating_duration_since(e.last_seen) < self.config.ageing;
        fresh.then_some(e.vtep)
    }

    /// The entry for `mac`, aged or not.
    #[must_use]
    pub fn entry(&self, vni: Vni, mac: EthernetAddress) -> Option<&MacEntry> {
        self.networks.get(&vni)?.macs.get(&mac)
    }

    /// The MAC of a remote IP, for ARP suppression (control plane only).
    #[must_use]
    pub fn lookup_ip(&self, vni: Vni, ip: Ipv4Addr) -> Option<EthernetAddress> {
        self.networks.get(&vni)?.ips.get(&ip).copied()
    }

    /// The VTEPs a broadcast or unknown unicast frame of `vni` is
    /// replicated to, sorted; empty for an unknown network.
    #[must_use]
    pub fn flood_list(&self, vni: Vni) -> &[Ipv4Addr] {
        self.networks.get(&vni).map_or(&[], |n| &n.flood)
    }

    /// Remote entries of a network, for `show-fdb`.
    pub fn entries(&self, vni: Vni) -> impl Iterator<Item = (EthernetAddress, &MacEntry)> {
        self.networks
            .get(&vni)
            .into_iter()
            .flat_map(|n| n.macs.iter().map(|(m, e)| (*m, e)))
    }

    /// Checks a decapsulated frame's sender and inner source against the
    /// network, learns the source where the policy says so, and counts the
    /// packet. Called by the decapsulator; exposed for a datapath that
    /// parses the outer headers itself.
    pub fn accept_rx(
        &mut self,
        now: Instant,
        vni: Vni,
        vtep: Ipv4Addr,
        src: EthernetAddress,
        inner_len: usize,
    ) -> Result<(), DropReason> {
        let n = self.networks.get_mut(&vni).ok_or(DropReason::UnknownVni)?;
        if n.config.require_known_vtep && !n.is_member(vtep) {
            return Err(DropReason::UnknownVtep);
        }
        match (n.macs.get_mut(&src), n.config.policy) {
            (Some(e), _) if e.origin == Origin::ControlPlane => {
                if e.vtep != vtep {
                    return Err(DropReason::SourceNotOwned);
                }
            }
            (Some(e), _) => {
                // Learned: refresh, following a move to another VTEP.
                e.vtep = vtep;
                e.last_seen = now;
            }
            (None, SourcePolicy::ControlPlane) => return Err(DropReason::SourceNotOwned),
            (None, SourcePolicy::Learn) => {
                if n.learned < self.config.max_learned {
                    n.learned += 1;
                    n.macs.insert(
                        src,
                        MacEntry {
                            vtep,
                            origin: Origin::Learned,
                            ip: None,
                            last_seen: now,
                        },
                    );
                }
            }
        }
        if let Some(v) = self.vteps.get_mut(&vtep) {
            v.last_seen = Some(now);
            v.stats.rx_packets += 1;
            v.stats.rx_bytes += inner_len as u64;
        }
        Ok(())
    }

    /// Counts a packet encapsulated to `vtep`.
    pub fn record_tx(&mut self, vtep: Ipv4Addr, inner_len: usize) {
        if let Some(v) = self.vteps.get_mut(&vtep) {
            v.stats.tx_packets += 1;
            v.stats.tx_bytes += inner_len as u64;
        }
    }

    /// Counts a dropped packet from `vtep` (nothing if it is not a known
    /// VTEP: strangers get no state).
    pub fn record_drop(&mut self, vtep: Ipv4Addr) {
        if let Some(v) = self.vteps.get_mut(&vtep) {
            v.stats.drops += 1;
        }
    }

    /// Removes learned entries idle for longer than the ageing time;
    /// returns how many. Call it every few seconds.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ageing = self.config.ageing;
        let mut removed = 0;
        for n in self.networks.values_mut() {
            let old: Vec<EthernetAddress> = n
                .macs
                .iter()
                .filter(|(_, e)| {
                    e.origin == Origin::Learned
                        && now.saturating_duration_since(e.last_seen) >= ageing
                })
                .map(|(m, _)| *m)
                .collect();
            removed += old.len();
            for m in old {
                n.remove_mac(m);
            }
        }
        removed
    }

    /// Every known VTEP, or those in network `vni`, sorted by address.
    #[must_use]
    pub fn snapshot(&self, now: Instant, vni: Option<Vni>) -> Vec<VtepSnapshot> {
        let nets: Vec<&Network> = match vni {
            Some(v) => self.networks.get(&v).into_iter().collect(),
            None => self.networks.values().collect(),
        };
        let mut out = Vec::new();
        for (addr, v) in &self.vteps {
            let mut s = VtepSnapshot {
                vtep: *addr,
                name: v.name.clone(),
                networks: Vec::new(),
                endpoints: 0,
                learned: 0,
                last_seen: v.last_seen.map(|t| now.saturating_duration_since(t)),
                stats: v.stats,
            };
            for n in &nets {
                let mut here = n.is_member(*addr);
                for e in n.macs.values().filter(|e| e.vtep == *addr) {
                    here = true;
                    match e.origin {
                        Origin::ControlPlane => s.endpoints += 1,
                        Origin::Learned => s.learned += 1,
                    }
                }
                if here {
                    s.networks.push(n.config.vni);
                }
            }
            if vni.is_none() || !s.networks.is_empty() {
                s.networks.sort_unstable();
                out.push(s);
            }
        }
        out
    }
}
