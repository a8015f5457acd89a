//! The overlay's underlay side: one UDP socket per host carries every
//! overlay network's VXLAN traffic to and from the other hosts' VTEPs.
//!
//! ```text
//!   switch (per overlay network: one Uplink port, VniPort)
//!     │ send_batch: dst MAC → VTEP (fabric::VtepTable), else the flood list
//!     ▼
//!   Underlay: one UDP socket bound to --vtep ADDR:4789
//!     [VXLAN header (+ a segment's inner headers) | payload where it lies]
//!     per datagram: sendmsg + UDP_SEGMENT per super-frame, else sendmmsg
//!     recvmmsg (UDP_GRO: a train per read): VXLAN checks and the table's
//!               verdict per datagram (fabric::Decapsulator); a flow's TCP
//!               segments merged into one super-frame (crate::gro); each
//!               frame tagged with its network's uplink port and switched
//! ```
//!
//! A remote VTEP is reached through a port like any other: each overlay
//! network has an [`PortRole::Uplink`](crate::switch::PortRole::Uplink)
//! port in the switch, so the switch learns remote MACs on it and floods
//! broadcast and unknown unicast to it like to a local port; the port's
//! device ([`VniPort`]) then picks the VTEP from the VTEP table, or
//! replicates the frame to every VTEP of the network (head-end
//! replication, no multicast in the underlay).
//!
//! **Why a UDP socket, not a raw or packet socket.** The kernel routes,
//! resolves the next hop, fills and checksums the outer IPv4 and UDP
//! headers, and the datagram needs no privilege beyond the bind; the outer
//! header is then the kernel's, not ours, and `fabric`'s prebuilt outer
//! templates go unused here. The cost: every datagram leaves from the
//! socket's own port (4789), where RFC 7348 asks for a source port hashed
//! from the inner flow so that the underlay's ECMP spreads flows. On an
//! underlay without ECMP (one link between hosts, the usual container host)
//! that spreading buys nothing; where it matters, an `AF_PACKET` transmit
//! path that writes `fabric::OuterTemplate`s into the buffers' headroom is
//! the way (not built). A few sending sockets bound to ephemeral ports,
//! picked by the inner flow's hash, were tried: a kernel `vxlan` receiver
//! on a veth underlay then lost most of a TCP stream's `UDP_SEGMENT`
//! trains (the end-to-end interop test moved 30–60 KB in 2 s), for a
//! reason not found yet, so they were taken out. Receivers do not care
//! about the source port otherwise: the kernel's vxlan accepts any.
//!
//! **Transmit: no copy of the inner frame.** The port takes what a TAP
//! gives (GSO super-frames, partial checksums) and each datagram is sent as
//! two iovecs, a head written here and a body left where it lies
//! (`mmsg::Datagram`): a plain frame is the VXLAN header and the frame; a
//! super-frame is cut while it is encapsulated, each segment the VXLAN
//! header with the segment's inner headers (written by
//! [`gso::Segmenter::next_headers_into`], checksums complete: the payload
//! is summed where it lies) and the segment's payload slice of the
//! super-frame; a frame with a partial checksum is its headers up to the
//! checksum field, completed, and the rest. The kernel's copy into the
//! socket buffer is the only copy of the payload on this side, and the
//! frame itself is never written to (a flood may be sending it elsewhere).
//! A super-frame or partial checksum that cannot be carried out (UFO,
//! offsets beyond the frame) is dropped and counted (`tx_bad_offload`).
//!
//! **Batches.** A super-frame's segments to one VTEP leave in one
//! `sendmsg` with `UDP_SEGMENT`, or two, split evenly, when they pass the
//! 65,507 bytes one send may carry: the kernel builds one large datagram
//! and cuts it late (on the device, or on receipt on a veth underlay), so
//! a 64 KiB super-frame costs one or two trips through the stack instead
//! of 45. Consecutive plain frames of one inner flow to one VTEP of one
//! size leave the same way; other datagrams with `sendmmsg`, up to 64 per
//! call. If the kernel refuses a `UDP_SEGMENT` send, that send's
//! datagrams go with `sendmmsg` and the refusal is counted
//! (`tx_gso_refused`); after 16 refusals in a row it is turned off. A run holds one inner flow, so
//! that the receiver can merge it back.
//!
//! **Receive: trains and super-frames.** The socket has `UDP_GRO`: the
//! kernel hands over a train of datagrams from one sender as one read
//! (a `UDP_SEGMENT` send arrives whole over a veth or loopback underlay;
//! a NIC's GRO coalesces a flow's datagrams), with the length of each.
//! Datagrams are read with `recvmmsg` into the underlay's own buffers, and
//! each train is planned: every datagram is decapsulated and checked, and
//! consecutive TCP segments of one flow with the same VNI are merged
//! ([`crate::gro`]) into one super-frame with a virtio-net header (TCP
//! segmentation at the MSS, partial checksum), so the container's TAP
//! takes one write, and its stack one trip, per train instead of one per
//! 1,400 bytes. The train's last frame is built in its own buffer (the
//! payloads moved behind the first segment's headers) and swapped into
//! the receive batch, the others are copied into the batch's buffers;
//! frames the batch has no room for wait, in order, for the next call.
//! A merged frame leaving through another overlay port is segmented again
//! by the executor.
//!
//! **Why one lock per batch.** [`fabric::VtepTable`] learns on receive and
//! counts on transmit, so it is behind one mutex, taken once per received
//! batch (by the worker that polls the socket) and once per transmitted
//! batch (by any worker): at most two workers contend, per batch of up to
//! 64 frames, not per frame.
//!
//! **ARP suppression.** An ARP request for an address the control plane
//! places on a remote host is not sent anywhere: the reply is built from
//! the table (`fabric::arp`, Docker's vxlan `proxy` flag) and handed back
//! through the socket itself, as a VXLAN datagram to its own address, so
//! the worker that polls the socket receives it like any other frame from
//! the overlay. Only datagrams from the socket's own address and port are
//! taken as such; the kernel drops packets from the underlay that claim a
//! local source address (no `accept_local`).

mod mmsg;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fabric::decap::DecapConfig;
use fabric::flow::{FlowHasher, PortRange};
use fabric::peer_file::PeerFile;
use fabric::vtep::{NetworkConfig, TableConfig, VtepSnapshot};
use fabric::{Decapsulator, EthernetAddress, PeerEvent, Vni, VtepTable};
use parking_lot::Mutex;

use crate::buf::PacketBuf;
use crate::datapath::Datapath;
use crate::ids::PortId;
use crate::port::{PortCaps, PortIo, RxBatch, SendOutcome};
use crate::{gro, gso};
use mmsg::{Datagram, MAX_MSGS, SendQueue};

/// The port id the underlay socket is polled under. Frames it receives are
/// tagged with their network's uplink port, never with this one; it is
/// below the first endpoint port, in the range left to the daemon.
pub const UNDERLAY_PORT: PortId = PortId(0);

/// How often learned entries are aged out.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// The longest inner frame accepted from the underlay: the largest MTU a
/// network may have plus an Ethernet header and a VLAN tag. The switch
/// checks each network's own MTU afterwards.
const MAX_INNER_LEN: usize = 65_535 - 50 + 18;

/// Where this host's VTEP listens and whom it talks to.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// This host's underlay address (`vswitchd --vtep`).
    pub local: Ipv4Addr,
    /// The VXLAN UDP port (4789).
    pub port: u16,
    /// This host's name, shown to others as the VTEP's name.
    pub name: String,
    /// The static peer file (`vswitchd --peers`), if any.
    pub peers: Option<PeerFile>,
    /// A live control plane (etcd), if any: its networks accept only the
    /// MACs it publishes, and it is asked what a network joins with.
    pub source: Option<Arc<dyn PeerSource>>,
}

/// A live control plane behind the VTEP table: the etcd view
/// ([`crate::cluster`]). The static peer file is the other source; both
/// end as [`PeerEvent`]s applied to one table, so the datapath cannot
/// tell them apart.
pub trait PeerSource: Send + Sync + core::fmt::Debug {
    /// What network `vni` starts with when this host adds it: the VTEPs
    /// taking part and the endpoints behind them.
    fn join_events(&self, vni: Vni) -> Vec<PeerEvent>;
}

/// Why the underlay could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the VXLAN socket to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddrV4,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The peer file does not list this host, or names another port.
    #[error(transparent)]
    PeerFile(#[from] fabric::peer_file::PeerFileError),
    /// The peer file's port and `--vxlan-port` disagree.
    #[error("the peer file says VXLAN port {file}, this host uses {local}")]
    PortMismatch {
        /// The file's port.
        file: u16,
        /// This host's.
        local: u16,
    },
}

/// Counters of the underlay socket beyond the VXLAN drop reasons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnderlayStats {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams longer than a buffer.
    pub rx_truncated: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Datagrams the kernel refused for their destination (no route…).
    pub tx_failed: u64,
    /// Datagrams not sent because the socket's buffer was full.
    pub tx_full: u64,
    /// ARP requests answered from the control plane's table.
    pub arp_suppressed: u64,
    /// Frames to a network with no VTEP to send to.
    pub tx_no_vtep: u64,
    /// `UDP_SEGMENT` sends (each several datagrams).
    pub tx_gso_sends: u64,
    /// `UDP_SEGMENT` sends the kernel refused (other than for a full
    /// buffer): their datagrams went one by one instead.
    pub tx_gso_refused: u64,
    /// GSO super-frames cut into segments here.
    pub tx_segmented: u64,
    /// Segments cut from them.
    pub tx_segments: u64,
    /// Frames dropped because their offload request (GSO or a partial
    /// checksum) could not be carried out: malformed, or UFO.
    pub tx_bad_offload: u64,
    /// Frames shorter than an Ethernet header, dropped.
    pub tx_runt: u64,
    /// Trains of datagrams the kernel coalesced (`UDP_GRO`) into one read.
    pub rx_trains: u64,
    /// Trains of more than 128 datagrams, dropped whole.
    pub rx_train_too_long: u64,
    /// Super-frames built from TCP segments of one flow.
    pub rx_merged: u64,
    /// Of those, super-frames continued in the next train (a super-frame
    /// the sender had to split over two `UDP_SEGMENT` sends).
    pub rx_merged_trains: u64,
    /// Segments that went into them.
    pub rx_merged_segments: u64,
}

impl UnderlayStats {
    /// Every counter by its field's name, for the API.
    #[must_use]
    pub fn named(&self) -> BTreeMap<String, u64> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_u64()?)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct State {
    table: VtepTable,
    decap: Decapsulator,
    /// Each local overlay network's uplink port.
    ports: HashMap<Vni, PortId>,
    stats: UnderlayStats,
    last_expire: Instant,
}

/// The underlay socket and the VTEP table. Polled as a port
/// ([`UNDERLAY_PORT`]); transmitted to through each network's [`VniPort`].
#[derive(Debug)]
pub struct Underlay {
    socket: UdpSocket,
    local: SocketAddrV4,
    config: OverlayConfig,
    state: Mutex<State>,
    /// Whether `UDP_SEGMENT` is used (until the kernel refuses it
    /// [`GSO_REFUSALS_OFF`] times in a row).
    gso: GsoSwitch,
    /// The receive side's buffers and plan; only the worker that polls the
    /// socket takes it.
    rx: Mutex<Rx>,
    /// Inner flows, so a `UDP_SEGMENT` run holds one.
    flows: FlowHasher,
}

impl Underlay {
    /// Binds the socket and fills the table with the peer file's VTEPs.
    ///
    /// # Errors
    /// [`OverlayError`] when the socket cannot be bound or the peer file
    /// does not fit this host.
    pub fn open(config: OverlayConfig) -> Result<Arc<Self>, OverlayError> {
        let local = SocketAddrV4::new(config.local, config.port);
        let mut table = VtepTable::new(TableConfig {
            local_vtep: Some(config.local),
            ..TableConfig::default()
        });
        if let Some(peers) = &config.peers {
            if peers.port != config.port {
                return Err(OverlayError::PortMismatch {
                    file: peers.port,
                    local: config.port,
                });
            }
            // Checks that the file lists this host.
            peers.events(config.local)?;
            let now = Instant::now();
            for v in peers.vteps.iter().filter(|v| v.address != config.local) {
                let _ = table.apply(
                    now,
                    &PeerEvent::VtepUp {
                        vtep: v.address,
                        name: v.name.clone(),
                    },
                );
            }
        }
        let (socket, gro) = bind(local).map_err(|source| OverlayError::Bind {
            addr: local,
            source,
        })?;
        if !gro {
            tracing::info!("UDP_GRO refused by the kernel; one datagram per read");
        }
        Ok(Arc::new(Self {
            socket,
            local,
            state: Mutex::new(State {
                table,
                decap: Decapsulator::new(DecapConfig {
                    port: config.port,
                    local_ip: Some(config.local),
                    max_inner_len: MAX_INNER_LEN,
                }),
                ports: HashMap::new(),
                stats: UnderlayStats::default(),
                last_expire: Instant::now(),
            }),
            gso: GsoSwitch::default(),
            rx: Mutex::new(Rx::new()),
            flows: FlowHasher::new(
                std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    0u8,
                ),
                PortRange::KERNEL_DEFAULT,
            ),
            config,
        }))
    }

    /// The socket's address.
    #[must_use]
    pub const fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// This host's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The VNIs the peer file gives networks by name.
    #[must_use]
    pub fn named_vnis(&self) -> BTreeMap<String, u32> {
        self.config
            .peers
            .iter()
            .flat_map(|p| &p.networks)
            .filter_map(|n| Some((n.name.clone()?, n.vni.get())))
            .collect()
    }

    /// Brings the overlay networks in line with `networks` (VNI and uplink
    /// port of each local overlay network): new ones join the table with
    /// the peer file's VTEPs and get their port in the datapath; gone ones
    /// are removed from both.
    ///
    /// # Errors
    /// When the datapath does not take a port.
    pub fn sync(
        self: &Arc<Self>,
        datapath: &Datapath,
        networks: &[(Vni, PortId)],
    ) -> io::Result<()> {
        let (added, removed) = {
            let mut st = self.state.lock();
            let removed: Vec<(Vni, PortId)> = st
                .ports
                .iter()
                .filter(|(v, p)| !networks.contains(&(**v, **p)))
                .map(|(v, p)| (*v, *p))
                .collect();
            for (vni, _) in &removed {
                st.ports.remove(vni);
                st.table.remove_network(*vni);
            }
            let mut added = Vec::new();
            for &(vni, port) in networks {
                if st.ports.contains_key(&vni) {
                    continue;
                }
                st.ports.insert(vni, port);
                // With a live control plane, only the MACs it publishes
                // behind a VTEP are accepted from it; with the peer file,
                // remote MACs are learned.
                st.table.add_network(if self.config.source.is_some() {
                    NetworkConfig::control_plane(vni)
                } else {
                    NetworkConfig::learning(vni)
                });
                let now = Instant::now();
                let live = self
                    .config
                    .source
                    .as_ref()
                    .map(|s| s.join_events(vni))
                    .unwrap_or_default();
                for event in self.join_events(vni).into_iter().chain(live) {
                    if let Err(e) = st.table.apply(now, &event) {
                        tracing::warn!(vni = vni.get(), error = %e, "peer event not applied");
                    }
                }
                added.push((vni, port));
            }
            (added, removed)
        };
        for (vni, port) in removed {
            tracing::info!(vni = vni.get(), port = %port, "overlay network removed");
            datapath.remove_port(port)?;
        }
        for (vni, port) in added {
            tracing::info!(vni = vni.get(), port = %port, "overlay network added");
            let dev: Arc<dyn PortIo> = Arc::new(self.vni_port(vni));
            datapath.add_tx_port(port, dev)?;
        }
        Ok(())
    }

    /// Applies what the live control plane says changed. Events for a
    /// network this host does not have are left out: the source gives
    /// them again when the network is added ([`PeerSource::join_events`]).
    pub fn apply_events(&self, events: &[PeerEvent]) {
        if events.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut st = self.state.lock();
        for event in events {
            match st.table.apply(now, event) {
                Ok(_) | Err(fabric::vtep::EventError::UnknownVni(_)) => {}
                Err(e) => tracing::warn!(error = %e, ?event, "peer event not applied"),
            }
        }
    }

    /// The device of network `vni`'s port: what is sent to it goes to the
    /// network's VTEPs.
    #[must_use]
    pub fn vni_port(self: &Arc<Self>, vni: Vni) -> VniPort {
        VniPort {
            vni,
            underlay: Arc::clone(self),
        }
    }

    /// The peer file's view of network `vni`: its VTEPs (every VTEP of the
    /// file when the file does not list the network) and its pinned
    /// endpoints.
    fn join_events(&self, vni: Vni) -> Vec<PeerEvent> {
        let Some(peers) = &self.config.peers else {
            return Vec::new();
        };
        let local = self.config.local;
        let spec = peers.networks.iter().find(|n| n.vni == vni);
        let vteps: Vec<Ipv4Addr> = match spec {
            Some(n) => n.vteps.clone(),
            None => peers.vteps.iter().map(|v| v.address).collect(),
        };
        let mut out: Vec<PeerEvent> = vteps
            .into_iter()
            .filter(|&v| v != local)
            .map(|vtep| PeerEvent::Join { vni, vtep })
            .collect();
        if let Some(n) = spec {
            out.extend(
                n.endpoints
                    .iter()
                    .filter(|e| e.vtep != local)
                    .map(|e| PeerEvent::EndpointAdd(*e)),
            );
        }
        out
    }

    /// The remote VTEPs (of network `vni`, or all), for `vsctl show-vteps`.
    #[must_use]
    pub fn vteps(&self, vni: Option<Vni>) -> Vec<VtepSnapshot> {
        self.state.lock().table.snapshot(Instant::now(), vni)
    }

    /// The members of network `vni` other than this host, with their
    /// names: `network inspect`'s `Peers`.
    #[must_use]
    pub fn peers(&self, vni: Vni) -> Vec<(String, Ipv4Addr)> {
        let st = self.state.lock();
        let names: BTreeMap<Ipv4Addr, String> = st
            .table
            .snapshot(Instant::now(), None)
            .into_iter()
            .map(|s| (s.vtep, s.name))
            .collect();
        st.table
            .flood_list(vni)
            .iter()
            .map(|v| (names.get(v).cloned().unwrap_or_default(), *v))
            .collect()
    }

    /// Remote MACs of network `vni` with their VTEP, whether learned, and
    /// their age.
    #[must_use]
    pub fn remote_macs(&self, vni: Vni) -> Vec<RemoteMac> {
        let now = Instant::now();
        let st = self.state.lock();
        let mut out: Vec<RemoteMac> = st
            .table
            .entries(vni)
            .map(|(mac, e)| RemoteMac {
                mac: mac.0,
                vtep: e.vtep,
                learned: e.origin == fabric::vtep::Origin::Learned,
                ip: e.ip,
                age: now.saturating_duration_since(e.last_seen),
            })
            .collect();
        out.sort_by_key(|r| r.mac);
        out
    }

    /// The socket's counters and the VXLAN drops by reason.
    #[must_use]
    pub fn stats(&self) -> (UnderlayStats, Vec<(&'static str, u64)>) {
        let st = self.state.lock();
        let drops = st
            .decap
            .drops()
            .iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        (st.stats, drops)
    }

    /// Sends `frames` of network `vni`: each known unicast frame to its
    /// VTEP, each other frame to every VTEP of the network; ARP requests
    /// the table can answer are answered instead. A GSO super-frame is cut
    /// here, without copying its payload: each segment is its headers,
    /// written into the datagram's head, and its payload where it lies in
    /// the super-frame; a partial checksum is completed the same way.
    fn transmit(&self, vni: Vni, frames: &[&PacketBuf]) -> SendOutcome {
        let now = Instant::now();
        let vxlan = vxlan_header(vni);
        let mut st = self.state.lock();
        let mut tx = Tx {
            fd: self.socket.as_raw_fd(),
            port: self.config.port,
            gso: &self.gso,
            queue: SendQueue::new(),
            run: Run::new(),
        };
        let mut out = SendOutcome::default();
        for (idx, &frame) in frames.iter().enumerate() {
            let data = frame.frame();
            if data.len() < 14 {
                st.stats.tx_runt += 1;
                out.sent += 1;
                continue;
            }
            if let Some(reply) = self.suppress_arp(&st.table, vni, data) {
                let (buf, len) = reply;
                if self.socket.send_to(&buf[..len], self.local).is_ok() {
                    st.stats.arp_suppressed += 1;
                }
                out.sent += 1;
                continue;
            }
            let dst = EthernetAddress::from_bytes(&data[0..6]);
            let unicast = if dst.is_unicast() {
                st.table.lookup(now, vni, dst)
            } else {
                None
            };
            let State { table, stats, .. } = &mut *st;
            let sent = if frame.vnet.is_gso() {
                self.send_super_frame(&mut tx, table, stats, vni, &vxlan, idx, frame, unicast)
            } else {
                let Some(datagram) = whole_datagram(&vxlan, frame) else {
                    stats.tx_bad_offload += 1;
                    out.sent += 1;
                    continue;
                };
                match unicast {
                    Some(vtep) => {
                        table.record_tx(vtep, data.len());
                        tx.add(vtep, self.flows.hash(data), idx, datagram, stats)
                    }
                    None => tx.flood(table, stats, vni, idx, &datagram),
                }
            };
            if let Err((first_unsent, e)) = sent {
                out.sent = first_unsent;
                out.error = Some(e);
                return out;
            }
            out.sent += 1;
        }
        let State { stats, .. } = &mut *st;
        if let Err((first_unsent, e)) = tx.finish(stats) {
            out.sent = first_unsent;
            out.error = Some(e);
        }
        out
    }

    /// Cuts super-frame `idx` into segments and sends them to `unicast`,
    /// or to every VTEP of the network: in runs of equal datagrams that
    /// each leave in one `UDP_SEGMENT` send (split evenly when the
    /// super-frame is longer than one send may carry). A super-frame that
    /// cannot be cut is dropped and counted (`tx_bad_offload`).
    #[allow(clippy::too_many_arguments)]
    fn send_super_frame<'a>(
        &self,
        tx: &mut Tx<'a, '_>,
        table: &mut VtepTable,
        stats: &mut UnderlayStats,
        vni: Vni,
        vxlan: &[u8; 8],
        idx: usize,
        frame: &'a PacketBuf,
        unicast: Option<Ipv4Addr>,
    ) -> Result<(), (usize, io::Error)> {
        let data = frame.frame();
        let mut segments = match gso::Segmenter::new(data, &frame.vnet) {
            Ok(s) if 8 + s.header_len() <= mmsg::HEAD_MAX => s,
            _ => {
                stats.tx_bad_offload += 1;
                return Ok(());
            }
        };
        tx.end_run(stats)?;
        let hlen = segments.header_len();
        let full = 8 + hlen + segments.mss();
        let per_send = (mmsg::MAX_GSO_BYTES / full).clamp(1, mmsg::MAX_GSO_SEGMENTS);
        stats.tx_segmented += 1;
        while segments.remaining() > 0 {
            let sends = segments.remaining().div_ceil(per_send);
            let take = segments.remaining().div_ceil(sends);
            tx.run.clear();
            for _ in 0..take {
                let datagram = Datagram::with_head(vxlan, hlen, |head| {
                    segments.next_headers_into(head).map(|r| &data[r])
                });
                if let Some(d) = datagram {
                    tx.run.push(d);
                }
            }
            stats.tx_segments += tx.run.len() as u64;
            let targets = unicast.map_or_else(|| table.flood_list(vni).len(), |_| 1);
            if targets == 0 {
                stats.tx_no_vtep += 1;
            }
            for i in 0..targets {
                let Some(vtep) = unicast.or_else(|| table.flood_list(vni).get(i).copied()) else {
                    break;
                };
                table.record_tx(vtep, tx.run.inner_bytes());
                tx.run.target(vtep, idx);
                tx.send_run(stats)?;
            }
        }
        tx.run.clear();
        Ok(())
    }

    /// The reply to an ARP request for a remote address the table knows,
    /// as a VXLAN datagram (header and frame) in a small buffer.
    #[allow(clippy::unused_self)]
    fn suppress_arp(
        &self,
        table: &VtepTable,
        vni: Vni,
        frame: &[u8],
    ) -> Option<([u8; ARP_BUF], usize)> {
        // Ethernet + ARP for IPv4 is 42 bytes; padding up to 60 is common.
        if frame.len() > ARP_BUF - 8 || frame.get(12..14) != Some(&[0x08, 0x06]) {
            return None;
        }
        let mut buf = [0u8; ARP_BUF];
        buf[..8].copy_from_slice(&vxlan_header(vni));
        buf[8..8 + frame.len()].copy_from_slice(frame);
        match table.suppress_arp(vni, &mut buf[8..8 + frame.len()]) {
            fabric::arp::ArpVerdict::Replied { .. } => Some((buf, 8 + frame.len())),
            _ => None,
        }
    }

    /// Fills the free slots of `batch`: frames planned from datagrams
    /// already read first (in order), then more datagrams. Each accepted
    /// frame is committed as received on its network's port; a train of
    /// TCP segments of one flow becomes one super-frame.
    fn receive(&self, batch: &mut RxBatch) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut rx = self.rx.lock();
        let rx = &mut *rx;
        let mut drained = false;
        loop {
            while rx.emitted < rx.plan.len() {
                let Some(slot) = batch.next_slot() else {
                    return Ok(());
                };
                let group = &rx.plan[rx.emitted];
                let last = rx.emitted + 1 == rx.plan.len();
                // The next input, which a tail of this group lies in.
                let (bufs, rest) = rx.bufs.split_at_mut(rx.current + 1);
                let input = &mut bufs[rx.current];
                let ranges = group.ranges(input.len(), rx.seg_len);
                let merge = group.merge.as_ref().filter(|m| m.count() > 1);
                if merge.is_some() {
                    let mut st = self.state.lock();
                    st.stats.rx_merged += 1;
                    st.stats.rx_merged_segments += (group.segs.len() + group.tail) as u64;
                    if group.tail > 0 {
                        st.stats.rx_merged_trains += 1;
                    }
                }
                if last {
                    // The train's last frame is built where it arrived and
                    // the buffers are swapped: no copy but of a tail.
                    match (group.tail, rest.first()) {
                        (1.., Some(next)) => {
                            let tail =
                                Group::datagram_ranges(0..group.tail, next.len(), rx.next_seg_len);
                            gro::merge_in_place_with_tail(
                                input,
                                &ranges,
                                next.frame(),
                                &tail,
                                merge,
                            );
                        }
                        _ => gro::merge_in_place(input, &ranges, merge),
                    }
                    std::mem::swap(slot, input);
                } else {
                    gro::merge_into(slot, input.frame(), &ranges, merge);
                }
                let port = group.port;
                let empty = slot.is_empty();
                rx.emitted += 1;
                if !empty {
                    batch.commit(port);
                }
            }
            if rx.next < rx.got {
                rx.current = rx.next;
                rx.next += 1;
                self.plan(rx);
                continue;
            }
            rx.skip = 0;
            if drained {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = batch.spare().len().min(MAX_MSGS);
            if n == 0 {
                return Ok(());
            }
            let got = mmsg::recv(fd, &mut rx.bufs[..n], &mut rx.meta)?;
            drained = got < n;
            rx.got = got;
            rx.next = 0;
        }
    }

    /// Checks the datagrams of input `rx.current` (one, or a train the
    /// kernel coalesced) and plans the frames they become: runs of TCP
    /// segments of one flow merge, every other datagram is a frame of its
    /// own, refused ones are counted and left out.
    fn plan(&self, rx: &mut Rx) {
        let Rx {
            bufs,
            meta,
            plan,
            current,
            next,
            got,
            seg_len,
            next_seg_len,
            emitted,
            skip: skip_next,
        } = rx;
        plan.clear();
        *emitted = 0;
        // Datagrams the plan before took into its last frame.
        let skip = std::mem::take(skip_next);
        let now = Instant::now();
        let mut st = self.state.lock();
        if now.saturating_duration_since(st.last_expire) >= EXPIRE_EVERY {
            st.last_expire = now;
            st.table.expire(now);
        }
        let State {
            table,
            decap,
            ports: by_vni,
            stats,
            ..
        } = &mut *st;
        let frame = bufs[*current].frame();
        let m = meta[*current];
        let Some(src) = m.from else {
            stats.rx_datagrams += 1;
            stats.rx_truncated += 1;
            return;
        };
        let len = frame.len();
        *seg_len = if m.seg == 0 || m.seg >= len {
            len.max(1)
        } else {
            m.seg
        };
        let count = len.div_ceil(*seg_len);
        stats.rx_datagrams += count.saturating_sub(skip) as u64;
        if count > MAX_TRAIN {
            stats.rx_train_too_long += 1;
            return;
        }
        if m.seg != 0 && count > 1 {
            stats.rx_trains += 1;
        }
        let mut open: Option<Group> = None;
        // Whether another input follows that a super-frame may continue in.
        let more = *next < *got;
        for k in skip..count {
            let at = k * *seg_len;
            let payload = &frame[at..(at + *seg_len).min(len)];
            let vni = if src == self.local {
                // An ARP reply this host built (see the module
                // documentation): no VTEP to check.
                local_vni(payload)
            } else {
                decap
                    .decap_datagram(table, now, *src.ip(), payload)
                    .ok()
                    .map(|d| d.vni)
            };
            let Some(port) = vni.and_then(|v| by_vni.get(&v).copied()) else {
                plan.extend(open.take());
                continue;
            };
            let inner = payload.get(8..).unwrap_or_default();
            if let Some(g) = &mut open
                && g.port == port
                && let Some(merge) = &mut g.merge
            {
                let first = g.segs.start * *seg_len + 8;
                let first = &frame[first..(g.segs.start * *seg_len + *seg_len).min(len)];
                if merge.push(first, inner) {
                    g.segs.end = k + 1;
                    continue;
                }
            }
            plan.extend(open.take());
            open = Some(Group {
                segs: k..k + 1,
                port,
                // Checksums are verified only where a merge may follow.
                merge: if k + 1 < count || more {
                    gro::Merge::start(inner)
                } else {
                    None
                },
                tail: 0,
            });
        }
        if let Some(g) = &mut open
            && more
            && src != self.local
        {
            let first = g.segs.start * *seg_len;
            let train = bufs[*current].frame();
            let first_dgram = &train[first..(first + *seg_len).min(len)];
            let (tail, consumed, tail_seg) = continue_in_next(
                decap,
                table,
                now,
                src,
                first_dgram,
                // Where the merged frame starts in its buffer's space.
                gro_room(first + 8),
                g,
                bufs[*next].frame(),
                meta[*next],
                stats,
            );
            g.tail = tail;
            *skip_next = consumed;
            *next_seg_len = tail_seg;
        }
        plan.extend(open);
    }
}

/// Datagrams read from the socket and the frames planned from them, kept
/// between calls when the batch fills first.
#[derive(Debug)]
struct Rx {
    /// Receive buffers, [`MAX_MSGS`] of them, allocated once.
    bufs: Vec<PacketBuf>,
    meta: [mmsg::Received; MAX_MSGS],
    /// Datagrams (or trains) read by the last `recvmmsg`.
    got: usize,
    /// The next of them to plan.
    next: usize,
    /// The one planned.
    current: usize,
    /// Its datagrams' length.
    seg_len: usize,
    /// The datagrams' length in input `next`, when its first ones continue
    /// the last frame of `current` (a [`Group::tail`]).
    next_seg_len: usize,
    /// Datagrams at the start of input `next` already planned (as a tail,
    /// or dropped while looking for one).
    skip: usize,
    /// Its frames.
    plan: Vec<Group>,
    /// Frames of `plan` already in a batch.
    emitted: usize,
}

impl Rx {
    fn new() -> Self {
        Self {
            bufs: (0..MAX_MSGS).map(|_| PacketBuf::new()).collect(),
            meta: [mmsg::Received::default(); MAX_MSGS],
            got: 0,
            next: 0,
            current: 0,
            seg_len: 1,
            next_seg_len: 1,
            skip: 0,
            plan: Vec::with_capacity(MAX_TRAIN),
            emitted: 0,
        }
    }
}

/// Datagrams in one coalesced train at most: `UDP_GRO` stops at 64, a
/// local sender's `UDP_SEGMENT` at 128.
const MAX_TRAIN: usize = 128;

/// One frame planned from a train: datagrams `segs` of it, to `port`,
/// and, for the train's last frame, the first `tail` datagrams of the next
/// train, which continue its super-frame.
#[derive(Debug)]
struct Group {
    segs: Range<usize>,
    port: PortId,
    merge: Option<gro::Merge>,
    tail: usize,
}

impl Group {
    /// The inner frames of the group's datagrams in a train of `len`
    /// bytes cut every `seg_len`.
    fn ranges(&self, len: usize, seg_len: usize) -> ArrayRanges {
        Self::datagram_ranges(self.segs.clone(), len, seg_len)
    }

    /// The inner frames of datagrams `segs` of a train of `len` bytes cut
    /// every `seg_len`.
    fn datagram_ranges(segs: Range<usize>, len: usize, seg_len: usize) -> ArrayRanges {
        let mut out = ArrayRanges::default();
        for k in segs {
            let start = k * seg_len;
            out.push(start + 8..(start + seg_len).min(len));
        }
        out
    }
}

/// How long a super-frame built in place may grow when it starts `at`
/// bytes into its buffer's space.
const fn gro_room(at: usize) -> usize {
    crate::buf::MAX_FRAME_LEN.saturating_sub(at)
}

/// Looks at the first datagrams of the next input (`next`, as `meta`
/// describes it) for segments that continue super-frame `g`, whose first
/// datagram is `first`: from the same VTEP `src`, the same VNI, accepted
/// by the decapsulator, pushed onto `g`'s merge, within `room` bytes.
/// Returns how many continue it, how many were looked at (a datagram the
/// decapsulator refused is counted and skipped with them, so it is not
/// checked twice), and the next input's datagram length.
#[allow(clippy::too_many_arguments)]
fn continue_in_next(
    decap: &mut Decapsulator,
    table: &mut VtepTable,
    now: Instant,
    src: SocketAddrV4,
    first: &[u8],
    room: usize,
    g: &mut Group,
    next: &[u8],
    meta: mmsg::Received,
    stats: &mut UnderlayStats,
) -> (usize, usize, usize) {
    let Some(merge) = &mut g.merge else {
        return (0, 0, 1);
    };
    if meta.from != Some(src) || next.is_empty() || first.len() < 8 {
        return (0, 0, 1);
    }
    let len = next.len();
    let seg_len = if meta.seg == 0 || meta.seg >= len {
        len
    } else {
        meta.seg
    };
    let count = len.div_ceil(seg_len);
    if count > MAX_TRAIN {
        return (0, 0, seg_len);
    }
    let inner_first = &first[8..];
    let mut taken = 0;
    while taken < count {
        let at = taken * seg_len;
        let payload = &next[at..(at + seg_len).min(len)];
        // The same VXLAN header (flags and VNI): the same network. Checked
        // before the decapsulator, which counts and learns.
        if payload.get(..8) != first.get(..8) {
            break;
        }
        let mut grown = *merge;
        if !grown.push(inner_first, &payload[8..]) || grown.len() > room {
            break;
        }
        stats.rx_datagrams += 1;
        if decap
            .decap_datagram(table, now, *src.ip(), payload)
            .is_err()
        {
            return (taken, taken + 1, seg_len);
        }
        *merge = grown;
        taken += 1;
    }
    (taken, taken, seg_len)
}

/// Up to [`gro::MAX_SEGMENTS`] ranges, on the stack.
#[derive(Debug)]
struct ArrayRanges {
    items: [Range<usize>; gro::MAX_SEGMENTS],
    len: usize,
}

impl Default for ArrayRanges {
    fn default() -> Self {
        Self {
            items: std::array::from_fn(|_| 0..0),
            len: 0,
        }
    }
}

impl ArrayRanges {
    fn push(&mut self, r: Range<usize>) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = r;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for ArrayRanges {
    type Target = [Range<usize>];
    fn deref(&self) -> &[Range<usize>] {
        &self.items[..self.len]
    }
}

const ARP_BUF: usize = 8 + 64;

/// `UDP_SEGMENT` refusals in a row after which it is turned off for good:
/// one refusal may be one destination's route or one odd size, and costs
/// that send only; a kernel or device that refuses every send stops being
/// asked.
const GSO_REFUSALS_OFF: u32 = 16;

/// Whether `UDP_SEGMENT` is used, shared by every worker that transmits.
#[derive(Debug)]
struct GsoSwitch {
    on: AtomicBool,
    /// Refusals since the last accepted send.
    refusals: AtomicU32,
}

impl Default for GsoSwitch {
    fn default() -> Self {
        Self {
            on: AtomicBool::new(true),
            refusals: AtomicU32::new(0),
        }
    }
}

impl GsoSwitch {
    fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn accepted(&self) {
        // A load first: the common case writes nothing shared.
        if self.refusals.load(Ordering::Relaxed) != 0 {
            self.refusals.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a refusal; `true` when it turned `UDP_SEGMENT` off.
    fn refused(&self) -> bool {
        let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
        n == GSO_REFUSALS_OFF && self.on.swap(false, Ordering::Relaxed)
    }
}

/// What one transmit call has queued: datagrams for `sendmmsg`, and a
/// run of equal datagrams to one VTEP for one `UDP_SEGMENT` send.
struct Tx<'a, 'u> {
    fd: RawFd,
    port: u16,
    /// Whether `UDP_SEGMENT` is used ([`Underlay::gso`]).
    gso: &'u GsoSwitch,
    queue: SendQueue<'a>,
    run: Run<'a>,
}

/// A failed send: the index of the first frame not sent, and why.
type TxError = (usize, io::Error);

impl<'a> Tx<'a, '_> {
    /// Adds a datagram of frame `idx` to `vtep`: to the current run when it
    /// continues it (same VTEP and inner flow, no longer than the run's
    /// first, no shorter one before it), else it starts a new run.
    fn add(
        &mut self,
        vtep: Ipv4Addr,
        flow: u32,
        idx: usize,
        datagram: Datagram<'a>,
        stats: &mut UnderlayStats,
    ) -> Result<(), TxError> {
        if !self.run.extends(vtep, flow, datagram.len()) {
            self.end_run(stats)?;
            self.run.target(vtep, idx);
            self.run.flow = flow;
        }
        self.run.push(datagram);
        Ok(())
    }

    /// Queues frame `idx` to every VTEP of network `vni`.
    fn flood(
        &mut self,
        table: &mut VtepTable,
        stats: &mut UnderlayStats,
        vni: Vni,
        idx: usize,
        datagram: &Datagram<'a>,
    ) -> Result<(), TxError> {
        self.end_run(stats)?;
        let targets = table.flood_list(vni).len();
        if targets == 0 {
            stats.tx_no_vtep += 1;
        }
        for i in 0..targets {
            let Some(vtep) = table.flood_list(vni).get(i).copied() else {
                break;
            };
            self.push(SocketAddrV4::new(vtep, self.port), datagram, stats, idx)?;
            table.record_tx(vtep, datagram.inner_len());
        }
        Ok(())
    }

    /// Queues one datagram of frame `idx`, flushing the queue first when
    /// it is full.
    fn push(
        &mut self,
        to: SocketAddrV4,
        datagram: &Datagram<'a>,
        stats: &mut UnderlayStats,
        idx: usize,
    ) -> Result<(), TxError> {
        if self.queue.is_full() {
            self.flush_queue(stats, idx)?;
        }
        self.queue.push(to, datagram);
        Ok(())
    }

    fn flush_queue(&mut self, stats: &mut UnderlayStats, idx: usize) -> Result<(), TxError> {
        flush_queue(&mut self.queue, self.fd, stats, idx)
    }

    /// Sends the current run, if any, and empties it.
    fn end_run(&mut self, stats: &mut UnderlayStats) -> Result<(), TxError> {
        if self.run.is_empty() {
            return Ok(());
        }
        let r = self.send_run(stats);
        self.run.clear();
        r
    }

    /// Sends the run to its VTEP: one datagram through the queue, several
    /// with `UDP_SEGMENT` after what the queue holds. When the kernel
    /// refuses segmentation offload for this send (`EINVAL`, `EIO`: a
    /// route through a device without it, a size it will not take), the
    /// run goes through the queue instead and the refusal is counted
    /// (`tx_gso_refused`); only [`GSO_REFUSALS_OFF`] refusals in a row turn
    /// it off for good. The run is left as it was, so that it can go to
    /// another VTEP too.
    fn send_run(&mut self, stats: &mut UnderlayStats) -> Result<(), TxError> {
        let Self {
            fd,
            port,
            gso,
            queue,
            run,
        } = self;
        let to = SocketAddrV4::new(run.vtep, *port);
        let datagrams = run.datagrams();
        if datagrams.len() >= 2 && gso.on() {
            flush_queue(queue, *fd, stats, run.start)?;
            match mmsg::send_gso(*fd, to, datagrams, run.seg) {
                Ok(()) => {
                    gso.accepted();
                    stats.tx_datagrams += datagrams.len() as u64;
                    stats.tx_gso_sends += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.tx_full += datagrams.len() as u64;
                    return Err((run.start, e));
                }
                Err(e) => {
                    stats.tx_gso_refused += 1;
                    if gso.refused() {
                        tracing::warn!(error = %e, "UDP segmentation offload refused {GSO_REFUSALS_OFF} times in a row; sending one datagram per frame from now on");
                    } else {
                        tracing::debug!(error = %e, to = %to, "UDP segmentation offload refused; this run goes one datagram at a time");
                    }
                }
            }
        }
        for d in datagrams {
            if queue.is_full() {
                flush_queue(queue, *fd, stats, run.start)?;
            }
            queue.push(to, d);
        }
        Ok(())
    }

    /// Sends what is left.
    fn finish(&mut self, stats: &mut UnderlayStats) -> Result<(), TxError> {
        let start = self.run.start;
        self.end_run(stats)?;
        if !self.queue.is_empty() {
            self.flush_queue(stats, start)?;
        }
        Ok(())
    }
}

/// Datagrams to one VTEP, of one inner flow, each `seg` bytes long but the
/// last, which may be shorter: the segments of a super-frame, or
/// consecutive frames of one flow. One flow per run: the receiver gets the
/// run as one train (`UDP_GRO`), which merges back into one super-frame
/// only when it holds one flow.
struct Run<'a> {
    vtep: Ipv4Addr,
    flow: u32,
    /// The frame of the transmit batch the run starts with.
    start: usize,
    items: [Datagram<'a>; mmsg::MAX_GSO_SEGMENTS],
    count: usize,
    seg: usize,
    last: usize,
    bytes: usize,
}

impl<'a> Run<'a> {
    const fn new() -> Self {
        Self {
            vtep: Ipv4Addr::UNSPECIFIED,
            flow: 0,
            start: 0,
            items: [Datagram::EMPTY; mmsg::MAX_GSO_SEGMENTS],
            count: 0,
            seg: 0,
            last: 0,
            bytes: 0,
        }
    }

    const fn is_empty(&self) -> bool {
        self.count == 0
    }

    const fn len(&self) -> usize {
        self.count
    }

    const fn clear(&mut self) {
        self.count = 0;
        self.bytes = 0;
    }

    /// Where the run goes, and the frame it is sent for.
    const fn target(&mut self, vtep: Ipv4Addr, start: usize) {
        self.vtep = vtep;
        self.start = start;
    }

    fn datagrams(&self) -> &[Datagram<'a>] {
        &self.items[..self.count]
    }

    /// The inner frames' bytes, for the VTEP's counters.
    fn inner_bytes(&self) -> usize {
        self.bytes - 8 * self.count
    }

    /// Whether a datagram of `len` bytes of `flow` to `vtep` may join: same
    /// VTEP and flow, no shorter one before it, no longer than the first,
    /// and within the kernel's limits for one call.
    const fn extends(&self, vtep: Ipv4Addr, flow: u32, len: usize) -> bool {
        self.count > 0
            && self.vtep.to_bits() == vtep.to_bits()
            && self.flow == flow
            && self.last == self.seg
            && len <= self.seg
            && self.count < mmsg::MAX_GSO_SEGMENTS
            && self.bytes + len <= mmsg::MAX_GSO_BYTES
    }

    /// Appends a datagram (the caller checked that it fits, or the run is
    /// empty).
    fn push(&mut self, d: Datagram<'a>) {
        let Some(slot) = self.items.get_mut(self.count) else {
            return;
        };
        *slot = d;
        if self.count == 0 {
            self.seg = d.len();
        }
        self.count += 1;
        self.last = d.len();
        self.bytes += d.len();
    }
}

/// Sends what `queue` holds; frames from `idx` on count as not sent when
/// the socket's buffer is full.
fn flush_queue(
    queue: &mut SendQueue<'_>,
    fd: RawFd,
    stats: &mut UnderlayStats,
    idx: usize,
) -> Result<(), TxError> {
    let f = queue.flush(fd);
    count(stats, &f);
    if f.unsent > 0 {
        return Err((
            idx,
            f.error.unwrap_or_else(|| io::ErrorKind::WouldBlock.into()),
        ));
    }
    Ok(())
}

/// Frame `frame` as one datagram: whole behind the VXLAN header, or, when
/// its L4 checksum is partial, with the headers up to the checksum field
/// in the datagram's head and the checksum completed there (the frame
/// itself may be going, unchanged, to other ports). `None` for a partial
/// checksum that cannot be completed or lies beyond [`mmsg::HEAD_MAX`].
fn whole_datagram<'a>(vxlan: &[u8; 8], frame: &'a PacketBuf) -> Option<Datagram<'a>> {
    let data = frame.frame();
    match gso::partial_checksum(data, &frame.vnet) {
        Ok(None) => Some(Datagram::whole(vxlan, data)),
        Ok(Some((at, sum))) => Datagram::with_head(vxlan, at + 2, |head| {
            head.copy_from_slice(&data[..at + 2]);
            head[at..].copy_from_slice(&sum.to_be_bytes());
            Some(&data[at + 2..])
        }),
        Err(_) => None,
    }
}

/// The VNI of a datagram this host sent itself, checked like any header.
fn local_vni(payload: &[u8]) -> Option<Vni> {
    let packet = fabric::wire::Packet::new_checked(payload).ok()?;
    let repr = fabric::wire::Repr::parse(&packet).ok()?;
    (payload.len() >= 8 + 14).then_some(repr.vni)
}

fn vxlan_header(vni: Vni) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = fabric::wire::FLAG_I;
    h[4..7].copy_from_slice(&vni.to_bytes());
    h
}

fn count(stats: &mut UnderlayStats, f: &mmsg::Flushed) {
    stats.tx_datagrams += f.sent as u64;
    stats.tx_failed += f.failed as u64;
    stats.tx_full += f.unsent as u64;
}

/// The underlay socket's buffers: a window of a few fast TCP flows in
/// datagrams, as the packet sockets of the ports get.
const SOCKET_BUFFER: usize = 16 << 20;

/// Binds the non-blocking UDP socket, with large buffers (beyond
/// `net.core.{r,w}mem_max` when the daemon may: `SO_*BUFFORCE`), and asks
/// for trains of datagrams (`UDP_GRO`). Returns whether the kernel took
/// `UDP_GRO`.
fn bind(addr: SocketAddrV4) -> io::Result<(UdpSocket, bool)> {
    use nix::sys::socket::{setsockopt, sockopt};
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM.nonblocking().cloexec(),
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: without CAP_NET_ADMIN, capped by the sysctls.
    if setsockopt(&s, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt(&s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    let gro = setsockopt(&s, sockopt::UdpGroSegment, &true).is_ok();
    s.bind(&addr.into())?;
    Ok((s.into(), gro))
}

/// One remote MAC, for `show-fdb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteMac {
    /// The MAC.
    pub mac: [u8; 6],
    /// The VTEP behind which it lives.
    pub vtep: Ipv4Addr,
    /// Learned from traffic, rather than published by the control plane.
    pub learned: bool,
    /// Its address, from the control plane.
    pub ip: Option<Ipv4Addr>,
    /// Since it was published or last seen.
    pub age: Duration,
}

impl PortIo for Underlay {
    fn recv(&self, _buf: &mut PacketBuf) -> io::Result<()> {
        // Frames are read in batches only: each needs its network's port.
        Err(io::ErrorKind::Unsupported.into())
    }

    fn send(&self, _buf: &PacketBuf) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn recv_batch(&self, _id: PortId, batch: &mut RxBatch) -> io::Result<()> {
        self.receive(batch)
    }

    fn caps(&self) -> PortCaps {
        PortCaps::NONE
    }
}

/// One overlay network's port: what the switch sends to it is
/// encapsulated with the network's VNI and sent to the VTEPs. Never
/// polled: the [`Underlay`] receives for every network.
#[derive(Debug)]
pub struct VniPort {
    vni: Vni,
    underlay: Arc<Underlay>,
}

impl PortIo for VniPort {
    fn recv(&self, _buf: &mut PacketBuf) -> io::Result<()> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&self, buf: &PacketBuf) -> io::Result<()> {
        let out = self.underlay.transmit(self.vni, &[buf]);
        out.error.map_or(Ok(()), Err)
    }

    fn raw_fd(&self) -> RawFd {
        self.underlay.raw_fd()
    }

    fn send_batch(&self, frames: &[&PacketBuf]) -> SendOutcome {
        self.underlay.transmit(self.vni, frames)
    }

    /// Super-frames and partial checksums: the port cuts and completes
    /// them itself while encapsulating, writing only headers and sending
    /// payloads from where they lie (the receiving host has no virtio-net
    /// header to carry them, so every datagram leaves complete).
    fn caps(&self) -> PortCaps {
        PortCaps::OFFLOADS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_segment_goes_off_only_after_refusals_in_a_row() {
        let gso = GsoSwitch::default();
        for _ in 1..GSO_REFUSALS_OFF {
            assert!(!gso.refused());
            assert!(gso.on());
        }
        // An accepted send starts the count again.
        gso.accepted();
        for _ in 1..GSO_REFUSALS_OFF {
            assert!(!gso.refused());
        }
        assert!(gso.refused(), "the sixteenth in a row turns it off");
        assert!(!gso.on());
        // Said once.
        assert!(!gso.refused());
        assert!(!gso.on());
    }
}
