//! The host connector: external connectivity with no host configuration.
//!
//! A container's packet for an address beyond its gateway (sent to the
//! gateway's MAC, [`Action::Host`](crate::switch::Action::Host)) is handed
//! by the datapath worker that read it to this thread, which terminates the
//! flow and re-originates it from an ordinary host socket, so the outside
//! sees the host's address as with Docker's MASQUERADE, and nothing on the
//! host changes: no iptables rule, no `ip_forward`, no proxy process.
//! Published ports are served from listening sockets the control plane
//! hands over ([`crate::publish`]): an accepted connection is carried to
//! the container from the client's own address when the container can
//! answer it, from the network's gateway otherwise (loopback clients).
//!
//! ```text
//!  container ──TAP──► datapath-N ──Action::Host──► HostLink::offer (the frame's
//!      ▲                                           buffer by ownership, bounded
//!      │                                           queue of the flow's shard,
//!      │                                           one wake per sleep)
//!      │                                                  ▼
//!      │               host-connector shard ── policy (internal, masquerade off,
//!      │                                       other networks) ─ FlowTable (shared)
//!      │   TCP:  smoltcp endpoint (any address)  ◄──►  host TcpStream (connect / accept)
//!      │   UDP:  parsed here                     ◄──►  host UdpSocket per flow / published
//!      │   ICMP echo: parsed here                ◄──►  one raw ICMP socket
//!      └──── frames written straight to the container's port device (GSO
//!            super-frames with a virtio-net header where the port takes them)
//! ```
//!
//! Every flow is entered in the shared [`nat::conntrack::FlowTable`] with
//! both tuples (container side on its network, host side on
//! [`HOST_NETWORK`]), so `vsctl show-conntrack` lists it with its state and
//! counters. The table's shard locks are taken by the connector's threads
//! only (and by a listing), never by a datapath worker: the workers' hot
//! path takes no lock.
//!
//! The connector runs as one or more shards, each a thread with its own
//! endpoint, host sockets and poll instance (`vswitchd
//! --connector-threads`). A TCP connection belongs to the shard its two
//! addresses and ports hash to, in either order (`shard_of_quad`): the
//! worker picks the queue by the segment's header, and the shard that
//! opened a host socket is the one that polls it. UDP, ICMP and the
//! published UDP ports are the first shard's; a published TCP port is
//! accepted on one shard and handed to the connection's.

mod frame;
mod stack;
mod tcp;
mod udp;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Poll, Token, Waker};
use nat::conntrack::{Config as FlowConfig, FlowTable};

use crate::buf::{BufPool, PacketBuf, VnetHdr};
use crate::ids::{MacAddr, NetworkId, PortId};
use crate::port::PortIo;
use crate::publish::{HostSocket, Publication, PublishedPortSink};
use crate::switch::{DropReason, Gateway, PortRole, PortStats, Stats, SwitchConfig};

/// The flow table's network for the host side of every flow.
pub const HOST_NETWORK: nat::flow::NetworkId = nat::flow::NetworkId(u32::MAX);

/// Frames waiting for the connector at most; beyond, a frame is dropped
/// and counted as [`DropReason::HostBusy`] on its ingress port.
pub const QUEUE: usize = 1024;

/// Buffers the connector keeps for frames it writes to containers.
const OUT_BUFFERS: usize = 256;

/// How long the thread keeps polling after it last moved a frame by
/// default (`vswitchd --connector-busy-poll`), as the datapath workers do
/// (see [`crate::datapath::BUSY_POLL`]), but longer:
/// a TCP flow's super-frames reach it about 100 µs apart at 5 Gbit/s, and
/// each sleep between two costs a wake-up from the worker (measured with
/// `nat-compare.sh` on the loaded machine, one stream: 4.1 Gbit/s under
/// CUBIC and 4.3 under BBR with 50 µs and a 1 MiB window; 4.4–6.0 and 5.7
/// with 200 µs and 4 MiB).
pub const BUSY_POLL: Duration = Duration::from_micros(200);

const WAKER: Token = Token(0);

/// The flow table's id for a switch network.
#[must_use]
pub const fn flow_network(network: NetworkId) -> nat::flow::NetworkId {
    nat::flow::NetworkId(network.0)
}

/// A frame for the connector, in the buffer the worker received it in.
#[derive(Debug)]
struct HostFrame {
    port: PortId,
    buf: PacketBuf,
}

#[derive(Debug)]
struct Wake {
    sleeping: AtomicBool,
    waker: Waker,
}

/// One shard's queue, as a datapath worker holds it.
#[derive(Debug)]
struct LinkShard {
    frames: Sender<HostFrame>,
    recycle: Receiver<PacketBuf>,
    wake: Arc<Wake>,
}

/// A datapath worker's way into the connector: one queue per shard.
#[derive(Clone, Debug)]
pub struct HostLink {
    shards: Arc<[LinkShard]>,
}

impl HostLink {
    /// Hands `frame`, received on `ingress`, to the queue of the shard
    /// that owns its flow (a TCP segment's by a symmetric hash of its
    /// addresses and ports, anything else the first's) by ownership: the buffer
    /// goes to the connector and one the shard gave back takes its place
    /// in the worker's batch, so the frame is not copied. Only until the
    /// shard has given back enough buffers is a new one allocated; the
    /// shard is woken only if it sleeps.
    ///
    /// # Errors
    /// [`DropReason::HostBusy`] when the queue is full or the connector is
    /// gone (the frame stays where it was).
    pub fn offer(&self, ingress: PortId, frame: &mut PacketBuf) -> Result<(), DropReason> {
        let shard = shard_of_frame(frame.frame(), self.shards.len());
        let Some(link) = self.shards.get(shard) else {
            return Err(DropReason::HostBusy);
        };
        if link.frames.is_full() {
            return Err(DropReason::HostBusy);
        }
        let mut buf = link.recycle.try_recv().unwrap_or_default();
        buf.clear();
        std::mem::swap(frame, &mut buf);
        match link.frames.try_send(HostFrame { port: ingress, buf }) {
            Ok(()) => {
                if link.wake.sleeping.swap(false, Ordering::SeqCst) {
                    let _ = link.wake.waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(item) | TrySendError::Disconnected(item)) => {
                // Another worker filled the queue meanwhile: the frame
                // goes back into its slot, dropped there.
                let mut item = item;
                std::mem::swap(frame, &mut item.buf);
                Err(DropReason::HostBusy)
            }
        }
    }
}

/// The shard of a TCP connection, from its two ends in either order: the
/// container's segments and the shard's own choice of a published
/// connection's addresses meet on the same shard.
#[must_use]
pub(crate) fn shard_of_quad(
    a: Ipv4Addr,
    a_port: u16,
    b: Ipv4Addr,
    b_port: u16,
    shards: usize,
) -> usize {
    if shards <= 1 {
        return 0;
    }
    let x = (u64::from(u32::from(a)) << 16) | u64::from(a_port);
    let y = (u64::from(u32::from(b)) << 16) | u64::from(b_port);
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    let h = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The high half is the well-mixed one.
    usize::try_from((h >> 32) % shards as u64).unwrap_or(0)
}

/// The shard a container's frame goes to: a TCP segment's by its
/// connection ([`shard_of_quad`]); everything else (UDP, ICMP, fragments,
/// what does not parse) to shard 0, which holds the UDP flows, the ICMP
/// socket and the published UDP ports, and counts the drops. Reads only
/// the headers' fixed fields, with checked accessors.
#[must_use]
pub(crate) fn shard_of_frame(frame: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let tcp = || -> Option<usize> {
        let ip = frame::ETH;
        if frame.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let h = frame.get(ip..ip + 20)?;
        // TCP, and the first (or only) fragment: no offset.
        if h[0] >> 4 != 4 || h[9] != 6 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return None;
        }
        let l4 = ip + usize::from(h[0] & 0x0f) * 4;
        let p = frame.get(l4..l4 + 4)?;
        Some(shard_of_quad(
            Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            u16::from_be_bytes([p[0], p[1]]),
            Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            u16::from_be_bytes([p[2], p[3]]),
            shards,
        ))
    };
    tcp().unwrap_or(0)
}

/// The shard that listens on a published port: TCP listeners are spread
/// over the shards by host port (each hands what it accepts to the
/// connection's shard); UDP ports are shard 0's, where the containers'
/// answers arrive.
fn listener_shard(port: &nat::alloc::PublishedPort, shards: usize) -> usize {
    match port.proto {
        nat::spec::Proto::Tcp if shards > 1 => usize::from(port.host_port) % shards,
        _ => 0,
    }
}

/// What the control side asks of the connector.
#[derive(Debug)]
enum Command {
    Config(Arc<SwitchConfig>),
    AddPort(PortId, Arc<dyn PortIo>),
    RemovePort(PortId, Sender<()>),
    Attach(Publication, HostSocket),
    Detach(nat::alloc::PublishedPort, Sender<()>),
    /// A connection another shard accepted on a published port, for this
    /// shard to carry to the container.
    Serve(tcp::Accepted),
    /// A port published on another shard: a container reaching it
    /// through its gateway's address is sent to the host's loopback.
    Published(nat::alloc::PublishedPort),
    PortStats(Sender<Vec<(PortId, PortStats)>>),
    /// How many frame buffers the thread holds (free or queued).
    #[cfg(test)]
    Buffers(Sender<usize>),
    Shutdown,
}

/// One shard's mailbox, as the handle and the other shards hold it.
#[derive(Debug)]
pub(crate) struct ShardHandle {
    commands: Sender<Command>,
    wake: Arc<Wake>,
}

impl ShardHandle {
    fn send(&self, command: Command) -> io::Result<()> {
        self.commands.send(command).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the host connector has stopped")
        })?;
        self.wake.waker.wake()
    }
}

/// The handle on the connector's threads (its shards), held by the
/// datapath handle and the control plane.
#[derive(Clone, Debug)]
pub struct HostConnector {
    shards: Arc<[ShardHandle]>,
    link: HostLink,
    flows: Arc<FlowTable>,
}

impl HostConnector {
    /// Starts `threads` connector threads (`host-connector`, then
    /// `host-connector-1`, …; at least one), each of which keeps polling
    /// for `busy_poll` after it last moved a frame before it sleeps.
    ///
    /// # Errors
    /// When a poll instance, its waker or a thread cannot be made.
    pub fn spawn(
        flow_config: FlowConfig,
        busy_poll: Duration,
        threads: usize,
    ) -> io::Result<(Self, Vec<JoinHandle<io::Result<()>>>)> {
        let (connectors, handle) = Self::sharded(flow_config, threads)?;
        let mut joins = Vec::with_capacity(connectors.len());
        for (i, mut connector) in connectors.into_iter().enumerate() {
            connector.busy_poll = busy_poll;
            let name = if i == 0 {
                "host-connector".to_owned()
            } else {
                format!("host-connector-{i}")
            };
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || connector.run())
            {
                Ok(j) => joins.push(j),
                Err(e) => {
                    handle.shutdown();
                    return Err(e);
                }
            }
        }
        Ok((handle, joins))
    }

    /// One shard, not started (the packet-level tests run it).
    #[cfg(test)]
    fn new(flow_config: FlowConfig) -> io::Result<(Connector, Self)> {
        let (mut connectors, handle) = Self::sharded(flow_config, 1)?;
        let connector = connectors
            .pop()
            .ok_or_else(|| io::Error::other("no shard"))?;
        Ok((connector, handle))
    }

    /// `shards` connectors (at least one), not started, and their handle.
    fn sharded(flow_config: FlowConfig, shards: usize) -> io::Result<(Vec<Connector>, Self)> {
        let shards = shards.max(1);
        let flows = Arc::new(FlowTable::new(flow_config));
        let mut parts = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        let mut links = Vec::with_capacity(shards);
        for _ in 0..shards {
            let poll = Poll::new()?;
            let wake = Arc::new(Wake {
                sleeping: AtomicBool::new(false),
                waker: Waker::new(poll.registry(), WAKER)?,
            });
            let (frames_tx, frames_rx) = crossbeam_channel::bounded(QUEUE);
            let (recycle_tx, recycle_rx) = crossbeam_channel::bounded(QUEUE);
            let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
            links.push(LinkShard {
                frames: frames_tx,
                recycle: recycle_rx,
                wake: Arc::clone(&wake),
            });
            handles.push(ShardHandle {
                commands: commands_tx,
                wake: Arc::clone(&wake),
            });
            parts.push((poll, commands_rx, frames_rx, recycle_tx, wake));
        }
        let handles: Arc<[ShardHandle]> = handles.into();
        let connectors = parts
            .into_iter()
            .enumerate()
            .map(|(i, (poll, commands, frames, recycle, wake))| {
                Connector::new(
                    poll,
                    commands,
                    frames,
                    recycle,
                    wake,
                    Arc::clone(&flows),
                    tcp::Shards {
                        me: i,
                        peers: Arc::clone(&handles),
                    },
                )
            })
            .collect();
        Ok((
            connectors,
            Self {
                shards: handles,
                link: HostLink {
                    shards: links.into(),
                },
                flows,
            },
        ))
    }

    /// How many shards (threads) the connector runs.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The link the datapath workers hand frames through.
    #[must_use]
    pub fn link(&self) -> HostLink {
        self.link.clone()
    }

    /// The flow table (`vsctl show-conntrack`).
    #[must_use]
    pub fn flows(&self) -> &Arc<FlowTable> {
        &self.flows
    }

    /// Sends every shard the command `make` builds for it.
    fn broadcast(&self, mut make: impl FnMut() -> Command) -> io::Result<()> {
        for s in self.shards.iter() {
            s.send(make())?;
        }
        Ok(())
    }

    /// Asks every shard, one after another, and waits for its answer.
    fn ask_each<T>(&self, mut make: impl FnMut(Sender<T>) -> Command) -> io::Result<Vec<T>> {
        let mut answers = Vec::with_capacity(self.shards.len());
        for s in self.shards.iter() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            s.send(make(tx))?;
            answers.push(rx.recv_timeout(crate::datapath::ASK_TIMEOUT).map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the host connector did not answer")
            })?);
        }
        Ok(answers)
    }

    /// Hands the connector a new configuration.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub fn set_config(&self, config: &Arc<SwitchConfig>) -> io::Result<()> {
        self.broadcast(|| Command::Config(Arc::clone(config)))
    }

    /// Lets the connector write to a port.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub fn add_port(&self, id: PortId, port: Arc<dyn PortIo>) -> io::Result<()> {
        self.broadcast(|| Command::AddPort(id, Arc::clone(&port)))
    }

    /// Takes a port from the connector, ends the flows of its endpoint and
    /// purges them from the flow table, then waits until every shard is
    /// done.
    ///
    /// # Errors
    /// When a thread has stopped or does not answer.
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        self.ask_each(|tx| Command::RemovePort(id, tx)).map(drop)
    }

    /// The counters of the frames the connector wrote to ports and of the
    /// packets it dropped, per port, summed over the shards.
    ///
    /// # Errors
    /// When a thread has stopped or does not answer.
    pub fn port_stats(&self) -> io::Result<Vec<(PortId, PortStats)>> {
        let mut sum: Vec<(PortId, PortStats)> = Vec::new();
        for shard in self.ask_each(Command::PortStats)? {
            for (id, stats) in shard {
                match sum.iter_mut().find(|(p, _)| *p == id) {
                    Some((_, s)) => s.merge(&stats),
                    None => sum.push((id, stats)),
                }
            }
        }
        Ok(sum)
    }

    /// How many frame buffers the threads hold, free or queued.
    #[cfg(test)]
    fn buffers(&self) -> io::Result<usize> {
        Ok(self.ask_each(Command::Buffers)?.into_iter().sum())
    }

    /// Asks the threads to stop.
    pub fn shutdown(&self) {
        for s in self.shards.iter() {
            let _ = s.send(Command::Shutdown);
        }
    }
}

impl PublishedPortSink for HostConnector {
    fn attach(&self, publication: Publication, socket: HostSocket) {
        let shard = listener_shard(&publication.port, self.shards.len());
        for (i, s) in self.shards.iter().enumerate() {
            if i != shard {
                let _ = s.send(Command::Published(publication.port));
            }
        }
        let sent = self
            .shards
            .get(shard)
            .ok_or_else(|| io::Error::other("no shard"))
            .and_then(|s| s.send(Command::Attach(publication, socket)));
        if let Err(e) = sent {
            tracing::error!(port = %publication.port, error = %e, "cannot serve a published port");
        }
    }

    /// Waits until the socket is closed: the control plane may bind the
    /// same port again in the same request (a rollback, a reconnect). The
    /// listening shard is told first: once it has answered it hands no
    /// more connections of the port to the others, so every connection it
    /// handed over is in their mailboxes ahead of the detach.
    fn detach(&self, port: &nat::alloc::PublishedPort) {
        let first = listener_shard(port, self.shards.len());
        let order = std::iter::once(first).chain((0..self.shards.len()).filter(|&i| i != first));
        for i in order {
            let Some(s) = self.shards.get(i) else {
                continue;
            };
            let (tx, rx) = crossbeam_channel::bounded(1);
            if s.send(Command::Detach(*port, tx)).is_ok()
                && rx.recv_timeout(crate::datapath::ASK_TIMEOUT).is_err()
            {
                tracing::warn!(port = %port, "the host connector did not confirm closing a published port");
            }
        }
    }
}

/// A container endpoint as the connector addresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    port: PortId,
    mac: MacAddr,
    network: NetworkId,
    gateway: Gateway,
    /// Largest TCP segment on the wire (MTU − 40): the GSO size of the
    /// super-frames written to it.
    mss: u16,
}

/// Where a container's packet is going, by its destination address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Through a host socket.
    Allow,
    /// Dropped, counted under this reason.
    Drop(DropReason),
}

/// What the connector knows of the configuration, rebuilt per change.
#[derive(Debug, Default)]
pub(crate) struct View {
    config: Arc<SwitchConfig>,
    pub(crate) by_ip: HashMap<Ipv4Addr, Endpoint>,
    by_port: HashMap<PortId, (Ipv4Addr, Endpoint)>,
    /// The host's own IPv4 addresses (refreshed every few seconds): a
    /// container reaches them even from an `--internal` network.
    host_addrs: Vec<Ipv4Addr>,
    host_addrs_at: Option<Instant>,
    /// Host ports published on every IPv4 address (`0.0.0.0`), the ones a
    /// container reaches through its gateway's address.
    published_any: BTreeSet<nat::alloc::PublishedPort>,
    /// Treats loopback destinations as outside addresses, and loopback as
    /// the host's own address: only for the packet-level tests, whose
    /// "outside" and host are sockets on loopback.
    loopback_is_outside: bool,
}

impl View {
    fn set_config(&mut self, config: Arc<SwitchConfig>) {
        self.by_ip.clear();
        self.by_port.clear();
        for p in config.ports() {
            let PortRole::Container {
                mac,
                ipv4: Some(ip),
            } = p.role
            else {
                continue;
            };
            let Some(net) = config.network(p.network) else {
                continue;
            };
            let Some(gateway) = net.gateway else { continue };
            let ep = Endpoint {
                port: p.id,
                mac,
                network: p.network,
                gateway,
                mss: net.mtu.saturating_sub(40).max(536),
            };
            self.by_ip.insert(ip, ep);
            self.by_port.insert(p.id, (ip, ep));
        }
        self.config = config;
    }

    fn refresh_host_addrs(&mut self, now: Instant) {
        if self
            .host_addrs_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(2))
        {
            return;
        }
        self.host_addrs_at = Some(now);
        self.host_addrs.clear();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in())
                    && !sin.ip().is_loopback()
                {
                    self.host_addrs.push(sin.ip());
                }
            }
        }
    }

    /// Records a published port the connector serves.
    fn publish(&mut self, port: nat::alloc::PublishedPort) {
        if port.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
            self.published_any.insert(port);
        }
    }

    fn unpublish(&mut self, port: &nat::alloc::PublishedPort) {
        self.published_any.remove(port);
    }

    /// Where a container's packet to `dst` (of protocol `proto`) goes on
    /// the host, under [`Self::verdict`]'s policy: to `dst` itself, except
    /// for a gateway's address, which on Docker is an address of the
    /// host's own (§3.3, §4.4: a container reaches the host's services
    /// and the published ports through it, `host.docker.internal`). Here
    /// the gateway is no host address, so it stands for the host:
    ///
    /// - a port published on every IPv4 address is reached through the
    ///   host's loopback, so the published container sees its network's
    ///   gateway as the client, as docker-proxy shows it; from an
    ///   `--internal` network it is dropped (`internal`), as Docker's DNAT
    ///   hands it to the isolation rules;
    /// - any other port goes to the host's own (first non-loopback)
    ///   address, where a socket bound to every address answers and one
    ///   bound to loopback only does not, as on Docker; `--internal` and
    ///   masquerade-off networks included (INPUT is not filtered).
    ///
    /// # Errors
    /// The drop reason of a packet that goes nowhere.
    pub(crate) fn target(
        &self,
        port: PortId,
        dst: SocketAddrV4,
        proto: nat::spec::Proto,
    ) -> Result<SocketAddrV4, DropReason> {
        let Some((_, ep)) = self.by_port.get(&port) else {
            return Err(DropReason::UnknownPort);
        };
        let Some(ext) = self.config.network(ep.network).and_then(|n| n.external) else {
            return Err(DropReason::NoRoute);
        };
        let gateway = *dst.ip() == ep.gateway.ip
            || self
                .config
                .networks()
                .any(|n| n.gateway.is_some_and(|g| g.ip == *dst.ip()));
        if !gateway {
            return match self.verdict(port, *dst.ip()) {
                Verdict::Allow => Ok(dst),
                Verdict::Drop(reason) => Err(reason),
            };
        }
        let published = self
            .published_any
            .iter()
            .any(|p| p.proto == proto && p.host_port == dst.port());
        if published {
            if ext.internal {
                return Err(DropReason::Internal);
            }
            return Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port()));
        }
        let host = if self.loopback_is_outside {
            Some(Ipv4Addr::LOCALHOST)
        } else {
            self.host_addrs.first().copied()
        };
        host.map(|h| SocketAddrV4::new(h, dst.port()))
            .ok_or(DropReason::NoRoute)
    }

    /// Docker's policy (§3.2, §3.3, §5) for a packet from the endpoint on
    /// `port` to `dst`.
    pub(crate) fn verdict(&self, port: PortId, dst: Ipv4Addr) -> Verdict {
        let Some((_, ep)) = self.by_port.get(&port) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let Some(ext) = self.config.network(ep.network).and_then(|n| n.external) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if ext.contains(dst) {
            // Its own network is switched, not routed; its gateway's
            // address is the host's business ([`Self::target`]).
            return Verdict::Drop(DropReason::NoRoute);
        }
        if (dst.is_loopback() && !self.loopback_is_outside)
            || dst.is_unspecified()
            || dst.is_broadcast()
            || dst.is_multicast()
        {
            return Verdict::Drop(DropReason::NoRoute);
        }
        let other = self
            .config
            .networks()
            .any(|n| n.id != ep.network && n.external.is_some_and(|x| x.contains(dst)));
        if other {
            return Verdict::Drop(DropReason::InterNetwork);
        }
        if self.host_addrs.contains(&dst) {
            // INPUT is not filtered: the host (and its published ports) is
            // reachable from every network, `--internal` included.
            return Verdict::Allow;
        }
        if ext.internal {
            return Verdict::Drop(DropReason::Internal);
        }
        if !ext.masquerade {
            return Verdict::Drop(DropReason::MasqueradeDisabled);
        }
        Verdict::Allow
    }
}

/// Frames queued for the ports, flushed once per turn of the loop.
#[derive(Debug)]
pub(crate) struct Out {
    ports: Vec<Option<Arc<dyn PortIo>>>,
    queues: HashMap<PortId, Vec<PacketBuf>>,
    pub(crate) pool: BufPool,
    stats: Stats,
}

impl Out {
    fn new() -> Self {
        Self {
            ports: Vec::new(),
            queues: HashMap::new(),
            pool: BufPool::new(OUT_BUFFERS),
            stats: Stats::default(),
        }
    }

    /// A free buffer. With none left, what is queued is written out first
    /// to free its buffers, so the pool is the bound rather than an
    /// allocation per frame.
    pub(crate) fn buf(&mut self) -> PacketBuf {
        if self.pool.available() == 0 {
            self.flush();
        }
        self.pool.take().unwrap_or_default()
    }

    fn drop_reason(&mut self, port: PortId, reason: DropReason) {
        self.stats.resize(port.index() + 1);
        self.stats.drop(port, reason);
    }

    /// Queues a finished frame for `port`, cutting a super-frame the
    /// device cannot take into segments and completing a partial checksum
    /// it cannot complete.
    pub(crate) fn queue(&mut self, port: PortId, buf: PacketBuf) {
        let caps = self
            .ports
            .get(port.index())
            .and_then(Option::as_ref)
            .map(|p| p.caps());
        let Some(caps) = caps else {
            self.pool.give(buf);
            return;
        };
        if buf.vnet.is_gso() && !caps.gso {
            match crate::gso::Segmenter::new(buf.frame(), &buf.vnet) {
                Ok(mut segs) => {
                    while segs.remaining() > 0 {
                        let mut out = self.buf();
                        if segs.next_into(&mut out) {
                            self.queues.entry(port).or_default().push(out);
                        } else {
                            self.pool.give(out);
                        }
                    }
                }
                Err(_) => self.drop_reason(port, DropReason::Unsegmentable),
            }
            self.pool.give(buf);
            return;
        }
        let mut buf = buf;
        if buf.vnet.needs_csum() && !caps.partial_csum {
            let vnet = buf.vnet;
            if crate::gso::complete_checksum(buf.frame_mut(), &vnet).is_err() {
                self.drop_reason(port, DropReason::Unsegmentable);
                self.pool.give(buf);
                return;
            }
            buf.vnet = VnetHdr::default();
        }
        self.queues.entry(port).or_default().push(buf);
    }

    pub(crate) fn flush(&mut self) {
        let Self {
            ports,
            queues,
            pool,
            stats,
        } = self;
        for (port, queue) in queues.iter_mut() {
            if queue.is_empty() {
                continue;
            }
            stats.resize(port.index() + 1);
            if let Some(dev) = ports.get(port.index()).and_then(Option::as_ref) {
                let refs: Vec<&PacketBuf> = queue.iter().collect();
                let mut at = 0;
                while at < refs.len() {
                    let out = dev.send_batch(&refs[at..]);
                    for b in out.taken_of(&refs[at..]) {
                        stats.tx(*port, b.len());
                    }
                    if out.error.is_some() {
                        // Full queue: the rest is dropped, as a kernel
                        // queue drops; TCP retransmits.
                        for _ in out.taken()..refs.len() - at {
                            stats.tx_dropped(*port);
                        }
                        break;
                    }
                    at += out.sent;
                    if out.sent == 0 {
                        break;
                    }
                }
            }
            for b in queue.drain(..) {
                pool.give(b);
            }
        }
    }
}

/// The thread's state.
struct Connector {
    poll: Poll,
    commands: Receiver<Command>,
    frames: Receiver<HostFrame>,
    recycle: Sender<PacketBuf>,
    wake: Arc<Wake>,
    flows: Arc<FlowTable>,
    view: View,
    out: Out,
    tcp: tcp::Tcp,
    udp: udp::Udp,
    next_sweep: Instant,
    busy_poll: Duration,
}

impl core::fmt::Debug for Connector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// Shared context the protocol engines work in.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) flows: &'a FlowTable,
    pub(crate) view: &'a View,
    pub(crate) out: &'a mut Out,
    pub(crate) registry: &'a mio::Registry,
}

impl Connector {
    fn new(
        poll: Poll,
        commands: Receiver<Command>,
        frames: Receiver<HostFrame>,
        recycle: Sender<PacketBuf>,
        wake: Arc<Wake>,
        flows: Arc<FlowTable>,
        shards: tcp::Shards,
    ) -> Self {
        let now = Instant::now();
        let mut tcp = tcp::Tcp::new(now);
        tcp.set_recycle(recycle.clone());
        tcp.set_shards(shards);
        Self {
            poll,
            commands,
            frames,
            recycle,
            wake,
            flows,
            view: View::default(),
            out: Out::new(),
            tcp,
            udp: udp::Udp::new(),
            next_sweep: now,
            busy_poll: BUSY_POLL,
        }
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(512);
        let mut busy_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let polling = busy_since.is_some_and(|at| now.duration_since(at) < self.busy_poll);
            let mut timeout = if polling {
                Some(Duration::ZERO)
            } else {
                let next = self.tcp.poll_at(now).min(Some(self.next_sweep));
                next.map(|at| at.saturating_duration_since(now))
            };
            if !polling {
                self.wake.sleeping.store(true, Ordering::SeqCst);
                if !self.frames.is_empty() || !self.commands.is_empty() {
                    timeout = Some(Duration::ZERO);
                }
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.wake.sleeping.store(false, Ordering::SeqCst);
            if !self.drain_commands() {
                return Ok(());
            }
            let now = Instant::now();
            self.view.refresh_host_addrs(now);
            let mut moved = false;
            {
                let Self {
                    poll,
                    flows,
                    view,
                    out,
                    tcp,
                    udp,
                    ..
                } = &mut self;
                let mut cx = Ctx {
                    now,
                    flows,
                    view,
                    out,
                    registry: poll.registry(),
                };
                for event in &events {
                    if event.token() == WAKER {
                        continue;
                    }
                    moved = true;
                    if !tcp.on_event(&mut cx, event) {
                        udp.on_event(&mut cx, event);
                    }
                }
            }
            moved |= self.drain_frames(now);
            {
                let Self {
                    poll,
                    flows,
                    view,
                    out,
                    tcp,
                    ..
                } = &mut self;
                let mut cx = Ctx {
                    now,
                    flows,
                    view,
                    out,
                    registry: poll.registry(),
                };
                tcp.run(&mut cx);
            }
            self.out.flush();
            if now >= self.next_sweep {
                self.sweep(now);
            }
            if moved {
                busy_since = Some(now);
            } else if polling {
                std::thread::yield_now();
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + Duration::from_secs(1);
        self.flows.expire(now, 4096);
        let registry = self.poll.registry();
        self.udp.expire(now, &self.flows, registry);
    }

    /// Applies commands; `false` on shutdown.
    fn drain_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Config(config) => self.view.set_config(config),
                Command::AddPort(id, port) => {
                    let i = id.index();
                    if self.out.ports.len() <= i {
                        self.out.ports.resize_with(i + 1, || None);
                    }
                    self.out.ports[i] = Some(port);
                }
                Command::RemovePort(id, ack) => {
                    self.remove_port(id);
                    let _ = ack.send(());
                }
                Command::Attach(publication, socket) => {
                    let registry = self.poll.registry();
                    let result = match socket {
                        HostSocket::Tcp(l) => self.tcp.attach(registry, publication, l),
                        HostSocket::Udp(s) => self.udp.attach(registry, publication, s),
                    };
                    match result {
                        Ok(()) => self.view.publish(publication.port),
                        Err(e) => {
                            tracing::error!(port = %publication.port, error = %e, "cannot serve a published port");
                        }
                    }
                }
                Command::Published(port) => self.view.publish(port),
                Command::Detach(port, ack) => {
                    let registry = self.poll.registry();
                    self.tcp.detach(registry, &port);
                    self.udp.detach(registry, &port);
                    self.view.unpublish(&port);
                    let _ = ack.send(());
                }
                Command::Serve(accepted) => {
                    let Self {
                        poll,
                        flows,
                        view,
                        out,
                        tcp,
                        ..
                    } = self;
                    let mut cx = Ctx {
                        now: Instant::now(),
                        flows,
                        view,
                        out,
                        registry: poll.registry(),
                    };
                    tcp.serve(&mut cx, accepted);
                }
                Command::PortStats(reply) => {
                    let stats = self
                        .view
                        .config
                        .ports()
                        .map(|p| (p.id, self.out.stats.port(p.id)))
                        .collect();
                    let _ = reply.send(stats);
                }
                #[cfg(test)]
                Command::Buffers(reply) => {
                    let queued: usize = self.out.queues.values().map(Vec::len).sum();
                    let held = self.out.pool.available() + queued + self.tcp.buffers();
                    let _ = reply.send(held);
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn remove_port(&mut self, id: PortId) {
        if let Some(slot) = self.out.ports.get_mut(id.index()) {
            *slot = None;
        }
        self.out.queues.remove(&id);
        let registry = self.poll.registry();
        self.tcp.remove_port(registry, id);
        self.udp.remove_port(registry, id);
        if let Some((ip, ep)) = self.view.by_port.get(&id).copied() {
            let net = flow_network(ep.network);
            let addr = std::net::IpAddr::V4(ip);
            self.flows.purge(|o, r| {
                (o.network == net && o.involves(addr)) || (r.network == net && r.involves(addr))
            });
        }
        self.out.stats.reset_port(id);
    }

    fn drain_frames(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Ok(frame) = self.frames.try_recv() {
            any = true;
            let Self {
                poll,
                flows,
                view,
                out,
                tcp,
                udp,
                ..
            } = self;
            let mut cx = Ctx {
                now,
                flows,
                view,
                out,
                registry: poll.registry(),
            };
            let port = frame.port;
            let mut buf = Some(frame.buf);
            if let Err(reason) = handle_frame(&mut cx, tcp, udp, port, &mut buf) {
                cx.out.drop_reason(port, reason);
            }
            if let Some(buf) = buf {
                let _ = self.recycle.try_send(buf);
            }
        }
        any
    }
}

/// One frame from a container: to the engine of its protocol. The TCP
/// engine may keep the buffer (taking it out of `buf`).
fn handle_frame(
    cx: &mut Ctx<'_>,
    tcp: &mut tcp::Tcp,
    udp: &mut udp::Udp,
    port: PortId,
    buf: &mut Option<PacketBuf>,
) -> Result<(), DropReason> {
    let Some(frame) = buf.as_ref() else {
        return Ok(());
    };
    let gso = frame.vnet.is_gso();
    let data = frame.frame();
    let Ok((offset, meta)) = nat::wire::parse_frame(data) else {
        return Err(DropReason::HostUnsupported);
    };
    let Some(&(ip, ep)) = cx.view.by_port.get(&port) else {
        return Err(DropReason::UnknownPort);
    };
    if meta.src != ip {
        return Err(DropReason::SrcIpSpoofed);
    }
    let end = offset + usize::from(meta.total_len);
    if meta.proto == nat::flow::FlowProto::Tcp {
        return tcp.on_container(cx, ep, &meta, buf, offset..end);
    }
    let Some(packet) = data.get(offset..end) else {
        return Err(DropReason::Malformed);
    };
    match meta.proto {
        nat::flow::FlowProto::Tcp => Ok(()),
        nat::flow::FlowProto::Udp => {
            if gso {
                return Err(DropReason::HostUnsupported);
            }
            udp.on_container(cx, ep, &meta, packet)
        }
        nat::flow::FlowProto::Icmp => udp.icmp_on_container(cx, ep, &meta, packet),
    }
}

/// Runs `frame` (as a container sent it to the gateway) through
/// everything the connector parses and writes itself, without a socket:
/// the frame parse, the SYN's MSS rewrite, the RST that answers a refused
/// SYN, the offload header of an output segment, and the userspace TCP
/// endpoint's input (which answers segments of unknown connections). The
/// fuzz target's entry (`fuzz/fuzz_targets/connector_frame.rs`); nothing
/// reachable from it may panic.
pub fn fuzz_frame(frame: &[u8]) {
    let ep = Endpoint {
        port: PortId(1),
        mac: MacAddr([2, 0x42, 172, 17, 0, 2]),
        network: NetworkId(0),
        gateway: Gateway {
            mac: MacAddr([2, 0x42, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(172, 17, 0, 1),
        },
        mss: 1460,
    };
    tcp::fuzz(frame, &ep);
}

#[cfg(test)]
mod tests;

/// Where a published port's socket goes among `slots`: the first free
/// slot, or a new one at the end. Its index is the socket's poll token
/// (after its kind's base), so slots are reused rather than removed.
fn free_slot<T>(slots: &[Option<T>]) -> usize {
    slots
        .iter()
        .position(Option::is_none)
        .unwrap_or(slots.len())
}

/// Puts `value` in slot `i`, found by [`free_slot`].
fn fill_slot<T>(slots: &mut Vec<Option<T>>, i: usize, value: T) {
    if i == slots.len() {
        slots.push(Some(value));
    } else {
        slots[i] = Some(value);
    }
}
