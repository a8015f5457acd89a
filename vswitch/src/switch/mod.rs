//! The switching pipeline: one pure function from (state, frame, time) to a
//! decision.
//!
//! ```text
//!  frame on port P
//!    │  runt / oversize (MTU, or each GSO segment) / invalid source MAC
//!    │  container port: source MAC = its MAC; ARP and IPv4 sender = its address
//!    ▼
//!  learn (network, source MAC) → P
//!    ▼
//!  destination
//!    ├─ gateway MAC ─────────────── ARP for the gateway → Reply
//!    │                              ICMP echo to the gateway → Reply
//!    │                              other IPv4 → host connector (Host) when
//!    │                              the network has external connectivity,
//!    │                              else NoRoute
//!    ├─ broadcast ARP for gateway ─ Reply
//!    ├─ group address ───────────── Flood (the network's other ports)
//!    ├─ known unicast ───────────── Output(port), never back out of P
//!    └─ unknown unicast ─────────── Flood
//! ```
//!
//! A port belongs to exactly one network, so a frame can never leave in
//! another network. With ICC off, container-to-container traffic other than
//! ARP is dropped, as Docker's `-i B -o B -j DROP` does (Docker §3.3), while
//! the gateway stays reachable.
//!
//! This module opens nothing and reads no clock: the datapath calls
//! [`Switch::process`] with the time it read once per batch, then carries
//! out the returned [`Action`].

mod action;
pub mod checksum;
mod config;
mod counters;
mod dry_run;
mod fdb;
mod gateway;
mod guard;
mod ingress;
pub mod parse;
mod trace;

use std::sync::Arc;
use std::time::Instant;

use smoltcp::wire::EthernetProtocol;

pub use action::{Action, DropReason, FloodScope};
pub use config::{
    ConfigError, DEFAULT_MTU, ETH_HEADER_LEN, External, Gateway, NetworkConfig, PortConfig,
    PortRole, SwitchConfig,
};
pub use counters::{DropCounters, PortStats, Stats};
pub use dry_run::DryRun;
pub use fdb::{Fdb, FdbConfig, FdbRow, FdbStats, FdbUpdate, Learned, Origin, REPLACE_INTERVAL};
pub use guard::FloodLimit;
pub use trace::{NoTrace, Trace, TraceEvent, Tracer};

use crate::buf::PacketBuf;
use crate::ids::{NetworkId, PortId};
use gateway::Answer;
pub use parse::{Arp, Ipv4, Ipv6, L3, L4, ParsedFrame};

/// A MAC-learning switch over any number of networks, with a virtual
/// gateway per network.
#[derive(Clone, Debug)]
pub struct Switch {
    config: Arc<SwitchConfig>,
    fdb: Fdb,
    stats: Stats,
    /// FDB changes for the other replicas, when sharing is on.
    journal: Option<Vec<FdbUpdate>>,
    /// Each port's flood budget, by port index.
    flood_buckets: Vec<guard::FloodBucket>,
}

impl Switch {
    /// A switch with no ports yet.
    #[must_use]
    pub fn new(fdb: FdbConfig) -> Self {
        Self {
            config: Arc::default(),
            fdb: Fdb::new(fdb),
            stats: Stats::default(),
            journal: None,
            flood_buckets: Vec::new(),
        }
    }

    /// Replaces the configuration. Entries and counters of ports that are
    /// gone or changed are dropped, and every container port's MAC becomes a
    /// static FDB entry. Called between batches, never per frame.
    pub fn apply_config(&mut self, now: Instant, config: Arc<SwitchConfig>) {
        let old = core::mem::replace(&mut self.config, config);
        for net in old.networks() {
            if self.config.network(net.id).is_none() {
                self.fdb.flush_network(net.id);
            }
        }
        for port in old.ports() {
            if self.config.port(port.id) != Some(port) {
                self.fdb.flush_port(port.id);
                self.stats.reset_port(port.id);
                if let Some(b) = self.flood_buckets.get_mut(port.id.index()) {
                    *b = guard::FloodBucket::default();
                }
            }
        }
        for port in self.config.ports() {
            if let PortRole::Container { mac, .. } = port.role {
                self.fdb.add_static(now, port.network, mac, port.id);
            }
        }
        self.stats.resize(self.config.port_slots());
        if self.flood_buckets.len() < self.config.port_slots() {
            self.flood_buckets
                .resize_with(self.config.port_slots(), Default::default);
        }
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &Arc<SwitchConfig> {
        &self.config
    }

    /// The forwarding database.
    #[must_use]
    pub const fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Counters.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Decides what happens to the frame in `buf`, received on `ingress`
    /// at `now`. A reply from the gateway is written into `buf`.
    #[inline]
    pub fn process(&mut self, now: Instant, ingress: PortId, buf: &mut PacketBuf) -> Action {
        self.process_traced(now, ingress, buf, &mut NoTrace)
    }

    /// Loads what deciding the frame in `buf` (received on `ingress`) will
    /// read from the FDB: the entries of its source and destination MACs.
    /// Changes nothing. Meant to be called for every frame of a batch
    /// before deciding the first, so that with 64k learned MACs (a table
    /// beyond the core's caches) the misses of independent frames overlap.
    /// The datapath no longer does: it costs two more hashes per frame,
    /// and since a decision of an uplink's frame reads only its Ethernet
    /// header and prefetches its destination's FDB slot while learning its
    /// source, the misses of one frame overlap anyway (the switch bench
    /// measures both ways).
    #[inline]
    pub fn prefetch(&self, ingress: PortId, buf: &PacketBuf) {
        let Some(port) = self.config.port(ingress) else {
            return;
        };
        let Some(macs) = buf.frame().get(..12) else {
            return;
        };
        let mac = |b: &[u8]| {
            let mut m = [0u8; 6];
            m.copy_from_slice(b);
            crate::ids::MacAddr(m)
        };
        let (dst, src) = (mac(&macs[..6]), mac(&macs[6..12]));
        self.fdb.warm(port.network, src);
        if !dst.is_multicast() {
            self.fdb.warm(port.network, dst);
        }
    }

    /// [`Switch::process`], reporting each step to `tracer`.
    pub fn process_traced<T: Tracer>(
        &mut self,
        now: Instant,
        ingress: PortId,
        buf: &mut PacketBuf,
        tracer: &mut T,
    ) -> Action {
        tracer.record(TraceEvent::Received {
            port: ingress,
            len: buf.len(),
        });
        let action = self.decide(now, ingress, buf, tracer);
        if let Action::Drop(reason) = action {
            self.stats.drop(ingress, reason);
            tracer.record(TraceEvent::Dropped(reason));
        }
        tracer.record(TraceEvent::Decided(action));
        action
    }

    fn decide<T: Tracer>(
        &mut self,
        now: Instant,
        ingress: PortId,
        buf: &mut PacketBuf,
        tracer: &mut T,
    ) -> Action {
        let config = &*self.config;
        let Some(port) = config.port(ingress) else {
            return Action::Drop(DropReason::UnknownPort);
        };
        let Some(net) = config.network_state(port.network) else {
            return Action::Drop(DropReason::UnknownPort);
        };
        self.stats.rx(ingress, buf.len());
        // Parse once, and only as deep as the decision looks: a container's
        // frame is checked at L3, a super-frame is measured at L4, and a
        // plain frame between uplinks is switched on its Ethernet header
        // (its L3 is read below only if it is for the gateway).
        let mut parsed = match ParsedFrame::parse_ethernet(buf.frame(), buf.vnet) {
            Ok(p) => p,
            Err(reason) => return Action::Drop(reason),
        };
        let container = match port.role {
            PortRole::Container { mac, ipv4 } => Some((mac, ipv4)),
            PortRole::Uplink => None,
        };
        if container.is_some() || parsed.vnet.is_gso() {
            parsed.ensure_l3(buf.frame());
        }
        let (src, dst) = (parsed.src, parsed.dst);

        if !ingress::fits_mtu(&parsed, net.max_frame_len) {
            return Action::Drop(DropReason::Oversize);
        }
        if !src.is_valid_source() {
            return Action::Drop(DropReason::InvalidSrcMac);
        }
        // One masked comparison, cheaper than a branch on the group bit
        // first.
        if guard::is_link_local_control(dst) {
            return Action::Drop(DropReason::LinkLocalControl);
        }
        let from_container = match container {
            Some((mac, ipv4)) => {
                if src != mac {
                    return Action::Drop(DropReason::SrcMacSpoofed);
                }
                if let Err(reason) = ingress::check_container(&parsed, mac, ipv4)
                    .and_then(|()| guard::check_ipv6(buf.frame(), &parsed, mac, net.config.ipv6))
                    .and_then(|()| guard::sanitize_vnet(&mut buf.vnet, &parsed))
                {
                    return Action::Drop(reason);
                }
                true
            }
            None => false,
        };
        let network = net.config.id;
        tracer.record(TraceEvent::IngressChecked {
            network,
            src,
            dst,
            ethertype: parsed.ethertype_u16(),
        });

        let stamp = self.fdb.stamp(now);
        // The destination's slot is on its way while the source is learned,
        // so the frame's two FDB misses overlap.
        let to = if dst.is_multicast() {
            None
        } else {
            let to = self.fdb.hashed(network, dst);
            self.fdb.prefetch(to);
            Some(to)
        };
        let from = self.fdb.hashed(network, src);
        let (outcome, placed) = self.fdb.learn_stamped(stamp, from, ingress);
        if placed && let Some(journal) = &mut self.journal {
            journal.push(FdbUpdate {
                network,
                mac: src,
                port: ingress,
                seen: now,
            });
        }
        tracer.record(TraceEvent::Learned { mac: src, outcome });

        if let Some(gw) = net.config.gateway {
            if dst == gw.mac {
                let host = net.config.external.is_some();
                parsed.ensure_l3(buf.frame());
                return to_gateway(buf.frame_mut(), &parsed, gw, ingress, host, tracer);
            }
            if dst.is_broadcast() && parsed.is_arp() {
                parsed.ensure_l3(buf.frame());
                match gateway::answer_arp(buf.frame_mut(), &parsed, gw) {
                    Answer::Replied => {
                        tracer.record(TraceEvent::GatewayArpReply);
                        return Action::Reply(ingress);
                    }
                    Answer::Drop(reason) => return Action::Drop(reason),
                    Answer::NotMine => {}
                }
            }
        }

        // ICC off: a container reaches no other container, ARP excepted so
        // that neighbours resolve as they do on Docker's bridge.
        let isolated = from_container && !net.config.icc && !parsed.is_arp();
        // A group address, or a unicast one not (or no longer) known, is
        // flooded. One place decides a flood, so the known-unicast path
        // builds nothing for it (a closure shared by two call sites cost
        // ten instructions a frame to set up).
        let out = to.and_then(|to| {
            let out = self.fdb.lookup_stamped(stamp, to);
            tracer.record(TraceEvent::Lookup {
                mac: dst,
                port: out,
            });
            out
        });
        match out {
            None => {
                let action = flood(network, ingress, isolated, net.uplinks);
                let allowed = !from_container
                    || !matches!(action, Action::Flood { .. })
                    || self
                        .flood_buckets
                        .get_mut(ingress.index())
                        .is_none_or(|b| b.take(now, net.config.flood_limit));
                if allowed {
                    action
                } else {
                    Action::Drop(DropReason::FloodRateLimited)
                }
            }
            Some(p) if p == ingress => Action::Drop(DropReason::SamePort),
            Some(p) => {
                // The egress port's configuration is read only when ICC
                // is off for this frame.
                let to_container = || {
                    config
                        .port(p)
                        .is_some_and(|c| matches!(c.role, PortRole::Container { .. }))
                };
                if isolated && to_container() {
                    Action::Drop(DropReason::IccDisabled)
                } else {
                    Action::Output(p)
                }
            }
        }
    }

    /// The ports a [`Action::Flood`] reaches, in id order.
    pub fn flood_targets(
        &self,
        network: NetworkId,
        except: PortId,
        scope: FloodScope,
    ) -> impl Iterator<Item = PortId> + '_ {
        self.config
            .network_ports(network)
            .iter()
            .copied()
            .filter(move |&p| {
                p != except
                    && (scope == FloodScope::All
                        || self
                            .config
                            .port(p)
                            .is_some_and(|c| c.role == PortRole::Uplink))
            })
    }

    /// Starts or stops recording the FDB changes other replicas need
    /// ([`Switch::drain_updates`]); off by default, so a switch nobody
    /// drains never grows a journal.
    pub fn share_learning(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    /// The FDB changes recorded since the last call, for the other
    /// replicas ([`Switch::apply_update`]).
    pub fn drain_updates(&mut self) -> impl Iterator<Item = FdbUpdate> + '_ {
        self.journal.iter_mut().flat_map(|j| j.drain(..))
    }

    /// Applies another replica's FDB change, unless its port is no longer
    /// in the configuration or no longer in that network. Returns whether
    /// the FDB changed.
    pub fn apply_update(&mut self, update: &FdbUpdate) -> bool {
        let current = self
            .config
            .port(update.port)
            .is_some_and(|p| p.network == update.network);
        current && self.fdb.apply_update(update)
    }

    /// Counts a frame from `port` dropped after the decision (by the
    /// executor: a super-frame the egress port cannot take and that cannot
    /// be segmented).
    pub fn record_drop(&mut self, port: PortId, reason: DropReason) {
        self.stats.drop(port, reason);
    }

    /// Counts a frame the device on `port` delivered unreadable.
    pub fn record_rx_error(&mut self, port: PortId) {
        self.stats.rx(port, 0);
        self.stats.drop(port, DropReason::RxError);
    }

    /// Counts a frame written to `port`.
    #[inline]
    pub fn record_tx(&mut self, port: PortId, bytes: usize) {
        self.stats.tx(port, bytes);
    }

    /// Counts `packets` frames of `bytes` in all written to `port` in one
    /// call: a flush counts once per port, not per frame.
    #[inline]
    pub fn record_tx_batch(&mut self, port: PortId, packets: usize, bytes: usize) {
        self.stats.tx_n(port, packets as u64, bytes as u64);
    }

    /// Counts a frame `port` could not take (its queue was full).
    #[inline]
    pub fn record_tx_dropped(&mut self, port: PortId) {
        self.stats.tx_dropped(port);
    }

    /// Counts `packets` frames `port` could not take.
    #[inline]
    pub fn record_tx_dropped_batch(&mut self, port: PortId, packets: usize) {
        self.stats.tx_dropped_n(port, packets as u64);
    }

    /// Reclaims aged FDB entries.
    pub fn expire(&mut self, now: Instant) {
        self.fdb.expire(now);
    }

    /// When [`Switch::expire`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fdb.poll_timeout()
    }
}

fn flood(network: NetworkId, except: PortId, isolated: bool, uplinks: usize) -> Action {
    if !isolated {
        return Action::Flood {
            network,
            except,
            scope: FloodScope::All,
        };
    }
    if uplinks == 0 {
        return Action::Drop(DropReason::IccDisabled);
    }
    Action::Flood {
        network,
        except,
        scope: FloodScope::UplinksOnly,
    }
}

fn to_gateway<T: Tracer>(
    frame: &mut [u8],
    parsed: &ParsedFrame,
    gw: Gateway,
    ingress: PortId,
    host: bool,
    tracer: &mut T,
) -> Action {
    let (answer, event) = match parsed.ethertype {
        EthernetProtocol::Arp => (
            gateway::answer_arp(frame, parsed, gw),
            TraceEvent::GatewayArpReply,
        ),
        EthernetProtocol::Ipv4 => (
            gateway::answer_ipv4(frame, parsed, gw),
            TraceEvent::GatewayEchoReply,
        ),
        _ => (Answer::NotMine, TraceEvent::ToL3),
    };
    match answer {
        Answer::Replied => {
            tracer.record(event);
            Action::Reply(ingress)
        }
        Answer::Drop(reason) => Action::Drop(reason),
        Answer::NotMine => {
            tracer.record(TraceEvent::ToL3);
            if host && parsed.ethertype == EthernetProtocol::Ipv4 {
                Action::Host(ingress)
            } else {
                Action::Drop(DropReason::NoRoute)
            }
        }
    }
}
