//! TCP through the host connector: a userspace endpoint (smoltcp) toward
//! the containers, ordinary host sockets toward the rest.
//!
//! Egress: a container's SYN for beyond the gateway opens a non-blocking
//! host connection (bound to the container's source port when the host
//! can bind it, as MASQUERADE keeps it) and is held until that connection
//! is made; then a socket of the userspace endpoint listening on the
//! original destination takes the SYN, so the container's handshake
//! completes only when the far end answered, and a refused or unreachable
//! destination is a RST. A published port's accepted connection is the
//! mirror image: the endpoint connects to the container from the client's
//! address (or the gateway's, for a loopback client).
//!
//! Bulk data moves between the endpoint's buffers and the host socket with
//! one copy each way. The container's SYN advertises a maximum segment
//! size of its MTU; the endpoint is told 64 KiB instead, so it sends
//! segments of up to 64 KiB, written to the container as GSO super-frames
//! cut at the real MSS (the container's stack takes them whole, as it
//! takes a GRO'd packet), and the container sends TSO super-frames the
//! endpoint takes whole.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use mio::{Interest, Registry, Token};
use nat::conntrack::{ConnId, NewFlow, PacketInfo, Refused};
use nat::flow::{FlowKey, FlowProto};
use nat::tcp::TcpFlags;
use nat::wire::Ipv4Meta;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::wire::{HardwareAddress, IpAddress, IpEndpoint, IpListenEndpoint, IpProtocol};

use super::frame::{self, ETH, IP};
use super::stack::{IP_MTU, Stack};
use super::{Ctx, Endpoint, HOST_NETWORK, flow_network};
use crate::buf::BufPool;
use crate::publish::Publication;
use crate::switch::DropReason;

/// Userspace endpoint buffer per direction and connection: the window the
/// container may send into while this thread waits for a core. Zeroed
/// allocations of this size are mapped lazily, so an idle connection costs
/// little of it.
const SOCKET_BUFFER: usize = 4 << 20;
/// Tokens of host connections: this plus the flow's slot.
pub(crate) const FLOW_TOKEN: usize = 1 << 40;
/// Tokens of published listeners: this plus the listener's slot.
pub(crate) const LISTEN_TOKEN: usize = 2 << 40;
/// Buffers kept for the endpoint's output.
pub(crate) const STACK_BUFFERS: usize = 64;
/// Polls of the endpoint per turn at most, each sending up to the buffers
/// it holds ([`STACK_BUFFERS`], refilled from the connector's).
const POLL_ROUNDS: usize = 32;

/// (container address, container port, peer address, peer port): a
/// connection as the container sees it.
type Quad = (Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Debug)]
struct Flow {
    quad: Quad,
    ep: Endpoint,
    host: mio::net::TcpStream,
    sock: Option<SocketHandle>,
    /// The container's SYN, held while the host connection is made.
    syn: Option<Vec<u8>>,
    /// Where the host connection goes: the container's destination, or
    /// the host for a gateway's address ([`super::View::target`]).
    target: SocketAddrV4,
    /// The published port an accepted connection came through: it ends
    /// when that port is released.
    published: Option<nat::alloc::PublishedPort>,
    /// GSO size of super-frames to the container.
    mss: u16,
    conn: Option<ConnId>,
    /// Flow-table key of packets from the container.
    from_key: FlowKey,
    /// Flow-table key of packets to the container.
    to_key: FlowKey,
    readable: bool,
    writable: bool,
    host_eof: bool,
    shut_wr: bool,
    /// The container's SYN or SYN-ACK permitted SACK.
    sack_ok: bool,
    /// The end of the in-order data the endpoint has from the container:
    /// the furthest of the acknowledgment numbers it sent and the ends of
    /// the segments that continued it since, acknowledged or not (a
    /// retransmission may arrive in the same batch as its original, before
    /// the original's acknowledgment leaves). Never moved past a hole.
    taken: Option<u32>,
    /// Data the container sent twice, for a D-SACK block on the next pure
    /// ACK ([`frame::add_dsack`]).
    dsack: Option<(u32, u32)>,
}

/// The shards of the connector, as one of them sees them.
#[derive(Debug, Clone)]
pub(crate) struct Shards {
    /// This shard's index.
    pub(crate) me: usize,
    /// Every shard's mailbox, this one's included.
    pub(crate) peers: std::sync::Arc<[super::ShardHandle]>,
}

impl Shards {
    fn count(&self) -> usize {
        self.peers.len().max(1)
    }
}

/// A connection accepted on a published port, on its way to the shard
/// that carries it to the container.
#[derive(Debug)]
pub(crate) struct Accepted {
    publication: Publication,
    stream: mio::net::TcpStream,
    client: SocketAddr,
    host_addr: Option<SocketAddr>,
    /// The client's own address and port are what the container sees:
    /// the shard was chosen by them ([`super::shard_of_quad`]).
    as_client: bool,
}

#[derive(Debug)]
struct Listener {
    publication: Publication,
    socket: mio::net::TcpListener,
}

/// The TCP engine.
pub(crate) struct Tcp {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Stack,
    epoch: std::time::Instant,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    by_quad: HashMap<Quad, usize>,
    listeners: Vec<Option<Listener>>,
    next_port: u16,
    shards: Shards,
    /// The shard the next connection from a loopback client goes to.
    next_shard: usize,
}

impl core::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tcp")
            .field("flows", &self.by_quad.len())
            .finish_non_exhaustive()
    }
}

fn smol_now(epoch: std::time::Instant, now: std::time::Instant) -> smoltcp::time::Instant {
    let micros = i64::try_from(now.duration_since(epoch).as_micros()).unwrap_or(i64::MAX);
    smoltcp::time::Instant::from_micros(micros)
}

impl Tcp {
    pub(crate) fn new(now: std::time::Instant) -> Self {
        let mut dev = Stack::default();
        dev.q.get_mut().pool = Some(BufPool::new(STACK_BUFFERS));
        dev.q.get_mut().recycle = None;
        let config = Config::new(HardwareAddress::Ip);
        let mut iface = Interface::new(config, &mut dev, smol_now(now, now));
        iface.set_any_ip(true);
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            epoch: now,
            flows: Vec::new(),
            free: Vec::new(),
            by_quad: HashMap::new(),
            listeners: Vec::new(),
            next_port: 32_768,
            shards: Shards {
                me: 0,
                peers: std::sync::Arc::from(Vec::new()),
            },
            next_shard: 0,
        }
    }

    /// Tells the engine which shard it is, and of the others.
    pub(crate) fn set_shards(&mut self, shards: Shards) {
        self.next_shard = shards.me;
        self.shards = shards;
    }

    /// Sends the buffers of consumed packets back to the workers.
    pub(crate) fn set_recycle(
        &mut self,
        recycle: crossbeam_channel::Sender<crate::buf::PacketBuf>,
    ) {
        self.dev.q.get_mut().recycle = Some(recycle);
    }

    /// Frame buffers the endpoint holds (free or written).
    #[cfg(test)]
    pub(crate) fn buffers(&mut self) -> usize {
        let q = self.dev.q.get_mut();
        q.tx.len() + q.pool.as_ref().map_or(0, BufPool::available)
    }

    /// When the endpoint's timers next need a poll.
    pub(crate) fn poll_at(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        if !self.dev.q.get_mut().rx.is_empty() {
            // Packets left for want of buffers.
            return Some(now);
        }
        let t = smol_now(self.epoch, now);
        self.iface
            .poll_delay(t, &self.sockets)
            .map(|d| now + std::time::Duration::from_micros(d.total_micros()))
    }

    fn insert(&mut self, flow: Flow) -> usize {
        let quad = flow.quad;
        let i = if let Some(i) = self.free.pop() {
            self.flows[i] = Some(flow);
            i
        } else {
            self.flows.push(Some(flow));
            self.flows.len() - 1
        };
        self.by_quad.insert(quad, i);
        i
    }

    fn remove(&mut self, registry: &Registry, i: usize) {
        let Some(mut flow) = self.flows.get_mut(i).and_then(Option::take) else {
            return;
        };
        let _ = registry.deregister(&mut flow.host);
        if let Some(h) = flow.sock {
            self.sockets.remove(h);
        }
        self.by_quad.remove(&flow.quad);
        self.free.push(i);
    }

    /// A packet from a container.
    pub(crate) fn on_container(
        &mut self,
        cx: &mut Ctx<'_>,
        ep: Endpoint,
        meta: &Ipv4Meta,
        buf: &mut Option<crate::buf::PacketBuf>,
        range: core::ops::Range<usize>,
    ) -> Result<(), DropReason> {
        let Some(packet) = buf.as_ref().and_then(|b| b.frame().get(range.clone())) else {
            return Err(DropReason::Malformed);
        };
        let quad = (meta.src, meta.src_port, meta.dst, meta.dst_port);
        if let Some(&i) = self.by_quad.get(&quad) {
            let Some(flow) = self.flows.get_mut(i).and_then(Option::as_mut) else {
                return Ok(());
            };
            if flow.syn.is_some() {
                // A retransmitted SYN while the host connection is made.
                return Ok(());
            }
            if meta.tcp_flags.contains(TcpFlags::SYN) && meta.tcp_flags.contains(TcpFlags::ACK) {
                // A published connection's SYN-ACK: as with an egress SYN,
                // the endpoint is told it may send 64 KiB segments, written
                // as super-frames cut at the MSS the container asked for.
                let theirs = buf
                    .as_mut()
                    .and_then(|b| b.frame_mut().get_mut(range.clone()))
                    .and_then(|p| rewrite_mss(p, meta.l4_offset));
                if let Some(theirs) = theirs {
                    flow.mss = theirs.min(flow.ep.mss).max(536);
                }
                flow.sack_ok = frame::sack_permitted(packet_of(buf, &range), meta.l4_offset);
            } else if flow.sack_ok
                && let Some(taken) = flow.taken
                && let Some((seq, end)) = frame::data_span(packet_of(buf, &range), meta.l4_offset)
            {
                if let Some(dup) = frame::duplicate_part((seq, end), taken) {
                    // Data the endpoint already has: a retransmission the
                    // container need not have sent, reported on the answer.
                    flow.dsack = Some(dup);
                }
                if !frame::seq_before(taken, seq) && frame::seq_before(taken, end) {
                    flow.taken = Some(end);
                }
            }
            cx.flows.track(cx.now, &flow.from_key, meta.info());
            // The worker's buffer goes to the endpoint as it is.
            if let Some(b) = buf.take() {
                self.dev.push_owned(b, range);
            }
            return Ok(());
        }
        let target = cx.view.target(
            ep.port,
            SocketAddrV4::new(meta.dst, meta.dst_port),
            nat::spec::Proto::Tcp,
        )?;
        let flags = meta.tcp_flags;
        if flags.contains(TcpFlags::RST) {
            return Ok(());
        }
        if !flags.contains(TcpFlags::SYN) || flags.contains(TcpFlags::ACK) {
            // No connection: the endpoint answers with a RST.
            self.dev.push_rx(packet);
            return Ok(());
        }
        self.connect(cx, ep, meta, packet, target)
    }

    /// Starts the host connection for a container's SYN.
    fn connect(
        &mut self,
        cx: &mut Ctx<'_>,
        ep: Endpoint,
        meta: &Ipv4Meta,
        packet: &[u8],
        dst: SocketAddrV4,
    ) -> Result<(), DropReason> {
        let socket = match open_host(meta.src_port, dst) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%dst, error = %e, "host connection failed at once");
                self.reset(cx, ep, packet);
                return Ok(());
            }
        };
        let mut syn = packet.to_vec();
        let their_mss = rewrite_mss(&mut syn, meta.l4_offset).unwrap_or(ep.mss);
        let quad = (meta.src, meta.src_port, meta.dst, meta.dst_port);
        let from_key = meta.key(flow_network(ep.network));
        let flow = Flow {
            quad,
            ep,
            host: socket,
            sock: None,
            syn: Some(syn),
            target: dst,
            published: None,
            mss: their_mss.min(ep.mss).max(536),
            conn: None,
            from_key,
            to_key: from_key.reversed(),
            readable: false,
            writable: false,
            host_eof: false,
            shut_wr: false,
            sack_ok: frame::sack_permitted(packet, meta.l4_offset),
            taken: None,
            dsack: None,
        };
        let i = self.insert(flow);
        let Some(flow) = self.flows[i].as_mut() else {
            return Ok(());
        };
        if let Err(e) = cx.registry.register(
            &mut flow.host,
            Token(FLOW_TOKEN + i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot poll a host connection");
            self.remove(cx.registry, i);
            return Err(DropReason::HostUnsupported);
        }
        Ok(())
    }

    /// Sends the container a RST for its SYN in `packet`.
    fn reset(&self, cx: &mut Ctx<'_>, ep: Endpoint, packet: &[u8]) {
        let mut buf = cx.out.buf();
        if reset_frame(&mut buf, &ep, packet).is_some() {
            cx.out.queue(ep.port, buf);
        } else {
            cx.out.pool.give(buf);
        }
    }

    /// A host socket's readiness; `false` when the token is not TCP's.
    pub(crate) fn on_event(&mut self, cx: &mut Ctx<'_>, event: &mio::event::Event) -> bool {
        let t = event.token().0;
        if (LISTEN_TOKEN..LISTEN_TOKEN + (1 << 40)).contains(&t) {
            self.accept(cx, t - LISTEN_TOKEN);
            return true;
        }
        if !(FLOW_TOKEN..FLOW_TOKEN + (1 << 40)).contains(&t) {
            return false;
        }
        let i = t - FLOW_TOKEN;
        let Some(flow) = self.flows.get_mut(i).and_then(Option::as_mut) else {
            return true;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            flow.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            flow.writable = true;
        }
        if flow.syn.is_some() && (flow.writable || event.is_error()) {
            self.connected(cx, i);
        }
        true
    }

    /// The host connection for a held SYN is made, or failed.
    fn connected(&mut self, cx: &mut Ctx<'_>, i: usize) {
        let Some(flow) = self.flows.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let failed = match flow.host.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match flow.host.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        let Some(syn) = flow.syn.take() else { return };
        let ep = flow.ep;
        if let Some(e) = failed {
            tracing::debug!(error = %e, "host connection failed");
            self.reset(cx, ep, &syn);
            self.remove(cx.registry, i);
            return;
        }
        let local = match flow.host.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        let (c_ip, c_port, p_ip, p_port) = flow.quad;
        let reply = FlowKey::new(
            HOST_NETWORK,
            FlowProto::Tcp,
            IpAddr::V4(*flow.target.ip()),
            flow.target.port(),
            IpAddr::V4(*local.ip()),
            local.port(),
        );
        flow.to_key = reply;
        let syn_info = PacketInfo {
            tcp_flags: TcpFlags::SYN,
            len: u32::try_from(syn.len()).unwrap_or(u32::MAX),
        };
        flow.conn = create_flow(cx, flow.from_key, reply, syn_info);
        let mut sock = new_socket();
        if sock
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(p_ip)),
                port: p_port,
            })
            .is_err()
        {
            self.reset(cx, ep, &syn);
            self.remove(cx.registry, i);
            return;
        }
        flow.sock = Some(self.sockets.add(sock));
        let _ = (c_ip, c_port);
        self.dev.push_rx(&syn);
        // Hand the SYN to this socket before another listener on the same
        // address and port could take it.
        self.poll(cx);
    }

    fn accept(&mut self, cx: &mut Ctx<'_>, l: usize) {
        loop {
            let Some(listener) = self.listeners.get(l).and_then(Option::as_ref) else {
                return;
            };
            let publication = listener.publication;
            let (stream, client) = match listener.socket.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "accept on a published port failed");
                    return;
                }
            };
            // The address the client reached (a wildcard listener's own
            // says only 0.0.0.0), shown as the flow's original destination.
            let host_addr = stream
                .local_addr()
                .or_else(|_| listener.socket.local_addr())
                .ok();
            let container = publication.container;
            let routable = routable(client);
            // The connection's shard: by the addresses the container will
            // see, the client's own when it can answer them; a loopback
            // client's connections (seen from the gateway, from a port
            // the shard picks) are dealt out in turn.
            let (shard, as_client) = match routable {
                Some((ip, port)) => (
                    super::shard_of_quad(
                        *container.ip(),
                        container.port(),
                        ip,
                        port,
                        self.shards.count(),
                    ),
                    true,
                ),
                None => {
                    let s = self.next_shard % self.shards.count();
                    self.next_shard = s + 1;
                    (s, false)
                }
            };
            let accepted = Accepted {
                publication,
                stream,
                client,
                host_addr,
                as_client,
            };
            if shard == self.shards.me {
                self.serve(cx, accepted);
                continue;
            }
            match self.shards.peers.get(shard) {
                Some(peer) => {
                    if let Err(e) = peer.send(super::Command::Serve(accepted)) {
                        tracing::debug!(error = %e, "a connector shard is gone");
                    }
                }
                None => self.serve(cx, accepted),
            }
        }
    }

    /// Carries an accepted connection to the container: one this shard
    /// accepted, or one another shard handed over (a release of its port
    /// reaches this shard after it, and resets it).
    pub(crate) fn serve(&mut self, cx: &mut Ctx<'_>, accepted: Accepted) {
        let Accepted {
            publication,
            stream,
            client,
            host_addr,
            as_client,
        } = accepted;
        let container = publication.container;
        let Some(ep) = cx.view.by_ip.get(container.ip()).copied() else {
            // The endpoint is not (or no longer) attached: refuse.
            reset_on_close(&stream);
            return;
        };
        let seen = match routable(client) {
            Some(s)
                if as_client
                    && !self.by_quad.contains_key(&(
                        *container.ip(),
                        container.port(),
                        s.0,
                        s.1,
                    )) =>
            {
                s
            }
            _ => (
                publication.gateway,
                self.free_port(*container.ip(), container.port(), publication.gateway),
            ),
        };
        let _ = stream.set_nodelay(true);
        let mut sock = new_socket();
        // The client's address and port are kept, so a busy client reuses
        // a pair the container still holds in TIME_WAIT (its server closed
        // first). The kernel takes the new SYN only if its sequence number
        // or its timestamp is later than the old connection's; the
        // endpoint's sequence numbers are random, so without timestamps
        // half the reuses met a challenge ACK and waited a second for the
        // SYN's retransmission (connections/s through a published port,
        // `benches/scripts/publish-compare.sh`). [`new_socket`] turns
        // timestamps on.
        let remote = IpEndpoint::new(IpAddress::Ipv4(*container.ip()), container.port());
        let local = IpEndpoint::new(IpAddress::Ipv4(seen.0), seen.1);
        if sock.connect(self.iface.context(), remote, local).is_err() {
            return;
        }
        let host_ip = host_addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let original = FlowKey::new(
            HOST_NETWORK,
            FlowProto::Tcp,
            client.ip(),
            client.port(),
            host_ip,
            publication.port.host_port,
        );
        let reply = FlowKey::new(
            flow_network(ep.network),
            FlowProto::Tcp,
            IpAddr::V4(*container.ip()),
            container.port(),
            IpAddr::V4(seen.0),
            seen.1,
        );
        let conn = create_flow(
            cx,
            original,
            reply,
            PacketInfo {
                tcp_flags: TcpFlags::SYN,
                len: 60,
            },
        );
        let flow = Flow {
            quad: (*container.ip(), container.port(), seen.0, seen.1),
            ep,
            host: stream,
            sock: Some(self.sockets.add(sock)),
            syn: None,
            target: match client {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, client.port()),
            },
            published: Some(publication.port),
            mss: ep.mss,
            conn,
            from_key: reply,
            to_key: original,
            readable: true,
            writable: true,
            host_eof: false,
            shut_wr: false,
            // Known from the container's SYN-ACK.
            sack_ok: false,
            taken: None,
            dsack: None,
        };
        let i = self.insert(flow);
        if let Some(flow) = self.flows[i].as_mut()
            && let Err(e) = cx.registry.register(
                &mut flow.host,
                Token(FLOW_TOKEN + i),
                Interest::READABLE | Interest::WRITABLE,
            )
        {
            tracing::warn!(error = %e, "cannot poll an accepted connection");
            self.remove(cx.registry, i);
        }
    }

    /// A source port on the gateway's address for a connection to the
    /// container that no live connection uses, among those whose
    /// connection falls on this shard ([`super::shard_of_quad`]): the
    /// container's segments come back here, and no other shard can hold
    /// the same addresses.
    fn free_port(&mut self, c_ip: Ipv4Addr, c_port: u16, gw: Ipv4Addr) -> u16 {
        let shards = self.shards.count();
        let me = self.shards.me;
        let mut fallback = None;
        for _ in 0..28_232 {
            let p = self.next_port;
            self.next_port = if p >= 60_999 { 32_768 } else { p + 1 };
            if self.by_quad.contains_key(&(c_ip, c_port, gw, p)) {
                continue;
            }
            if super::shard_of_quad(c_ip, c_port, gw, p, shards) == me {
                return p;
            }
            fallback.get_or_insert(p);
        }
        fallback.unwrap_or(self.next_port)
    }

    pub(crate) fn attach(
        &mut self,
        registry: &Registry,
        publication: Publication,
        listener: std::net::TcpListener,
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut socket = mio::net::TcpListener::from_std(listener);
        let i = super::free_slot(&self.listeners);
        registry.register(&mut socket, Token(LISTEN_TOKEN + i), Interest::READABLE)?;
        super::fill_slot(
            &mut self.listeners,
            i,
            Listener {
                publication,
                socket,
            },
        );
        Ok(())
    }

    /// Closes a published port's listener and resets the connections
    /// accepted on it: a released port leaves nothing reaching the
    /// container (Docker's proxy and conntrack entries go with it).
    pub(crate) fn detach(&mut self, registry: &Registry, port: &nat::alloc::PublishedPort) {
        for slot in &mut self.listeners {
            if slot.as_ref().is_some_and(|l| l.publication.port == *port)
                && let Some(mut l) = slot.take()
            {
                let _ = registry.deregister(&mut l.socket);
            }
        }
        let doomed: Vec<usize> = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| f.published == Some(*port)))
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            let Some(f) = self.flows[i].as_mut() else {
                continue;
            };
            match f.sock {
                Some(h) => {
                    // The endpoint's next poll sends the container a RST;
                    // the connection is then reaped as closed, and its
                    // host socket closed with a RST.
                    self.sockets.get_mut::<Socket>(h).abort();
                    f.host_eof = true;
                    f.shut_wr = true;
                    reset_on_close(&f.host);
                }
                None => {
                    reset_on_close(&f.host);
                    self.remove(registry, i);
                }
            }
        }
    }

    /// Ends every connection of the endpoint on `port`.
    pub(crate) fn remove_port(&mut self, registry: &Registry, port: crate::ids::PortId) {
        let doomed: Vec<usize> = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| f.ep.port == port))
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            if let Some(f) = self.flows[i].as_ref() {
                reset_on_close(&f.host);
            }
            self.remove(registry, i);
        }
    }

    /// Runs the endpoint: segments in and out, data between its buffers
    /// and the host sockets, finished connections removed.
    pub(crate) fn run(&mut self, cx: &mut Ctx<'_>) {
        for _ in 0..8 {
            self.poll(cx);
            if !self.pump(cx) {
                break;
            }
        }
        self.poll(cx);
        self.reap(cx);
    }

    /// Polls the endpoint until it has sent what it may. The endpoint
    /// writes into a bounded set of buffers; when it runs out, what it
    /// wrote goes out to the ports (which frees them) and it goes on.
    fn poll(&mut self, cx: &mut Ctx<'_>) {
        for _ in 0..POLL_ROUNDS {
            self.dev.q.get_mut().starved = false;
            self.poll_once(cx);
            if !self.dev.q.get_mut().starved {
                break;
            }
            cx.out.flush();
        }
    }

    /// One poll of the endpoint and its output to the containers.
    fn poll_once(&mut self, cx: &mut Ctx<'_>) {
        {
            let q = self.dev.q.get_mut();
            if let Some(pool) = q.pool.as_mut() {
                while pool.available() < STACK_BUFFERS {
                    let Some(b) = cx.out.pool.take() else { break };
                    pool.give(b);
                }
            }
        }
        let t = smol_now(self.epoch, cx.now);
        self.iface.poll(t, &mut self.dev, &mut self.sockets);
        let out: Vec<_> = self.dev.q.get_mut().tx.drain(..).collect();
        for mut buf in out {
            let f = buf.frame();
            if f.len() < ETH + IP {
                cx.out.pool.give(buf);
                continue;
            }
            let dst = Ipv4Addr::new(f[ETH + 16], f[ETH + 17], f[ETH + 18], f[ETH + 19]);
            let src = Ipv4Addr::new(f[ETH + 12], f[ETH + 13], f[ETH + 14], f[ETH + 15]);
            let Some(ep) = cx.view.by_ip.get(&dst).copied() else {
                cx.out.pool.give(buf);
                continue;
            };
            frame::ethernet(buf.frame_mut(), &ep);
            let (l4, flags) = {
                let (sport, dport) = tcp_ports(buf.frame());
                let flow = self
                    .by_quad
                    .get(&(dst, dport, src, sport))
                    .and_then(|&i| self.flows.get_mut(i)?.as_mut());
                let mss = flow.as_ref().map_or(ep.mss, |f| f.mss);
                if let Some(flow) = flow {
                    note_ack(flow, &mut buf);
                }
                match frame::tcp_offload(&mut buf, mss) {
                    Some(x) => x,
                    None => {
                        cx.out.pool.give(buf);
                        continue;
                    }
                }
            };
            let f = buf.frame();
            let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
            let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
            if let Some(flow) = self
                .by_quad
                .get(&(dst, dport, src, sport))
                .and_then(|&i| self.flows.get(i)?.as_ref())
            {
                let len = u32::try_from(f.len() - ETH).unwrap_or(u32::MAX);
                cx.flows.track(
                    cx.now,
                    &flow.to_key,
                    PacketInfo {
                        tcp_flags: TcpFlags(flags),
                        len,
                    },
                );
            }
            cx.out.queue(ep.port, buf);
        }
    }

    /// Moves data between the endpoint and the host sockets; `true` when
    /// anything moved.
    fn pump(&mut self, cx: &mut Ctx<'_>) -> bool {
        let mut progress = false;
        for slot in &mut self.flows {
            let Some(flow) = slot.as_mut() else { continue };
            let Some(h) = flow.sock else { continue };
            let sock = self.sockets.get_mut::<Socket>(h);
            // Container → host.
            while flow.writable && sock.can_recv() {
                let r = sock.recv(|buf| match flow.host.write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => progress = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        flow.writable = false;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) | Err(_) => {
                        sock.abort();
                        flow.host_eof = true;
                        flow.shut_wr = true;
                        progress = true;
                        break;
                    }
                }
            }
            if !flow.shut_wr
                && !sock.may_recv()
                && sock.recv_queue() == 0
                && sock.state() != State::Listen
                && sock.state() != State::SynReceived
                && sock.state() != State::SynSent
            {
                let _ = flow.host.shutdown(std::net::Shutdown::Write);
                flow.shut_wr = true;
                progress = true;
            }
            // Host → container.
            while flow.readable && !flow.host_eof && sock.can_send() {
                let r = sock.send(|buf| match flow.host.read(buf) {
                    Ok(0) => (0, Ok(0)),
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        flow.host_eof = true;
                        sock.close();
                        progress = true;
                    }
                    Ok(Ok(_)) => progress = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        flow.readable = false;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) | Err(_) => {
                        sock.abort();
                        flow.host_eof = true;
                        flow.shut_wr = true;
                        progress = true;
                    }
                }
            }
            let _ = cx;
        }
        progress
    }

    /// Removes connections the endpoint has finished with; a connection
    /// the container reset is reset toward the host too.
    fn reap(&mut self, cx: &mut Ctx<'_>) {
        let mut done = Vec::new();
        for (i, slot) in self.flows.iter().enumerate() {
            let Some(flow) = slot else { continue };
            let Some(h) = flow.sock else { continue };
            let state = self.sockets.get::<Socket>(h).state();
            match state {
                State::Closed => {
                    if !(flow.host_eof && flow.shut_wr) {
                        reset_on_close(&flow.host);
                    }
                    done.push(i);
                }
                State::TimeWait if flow.host_eof && flow.shut_wr => done.push(i),
                _ => {}
            }
        }
        for i in done {
            self.remove(cx.registry, i);
        }
    }
}

/// Records the acknowledgment number of a segment the endpoint wrote for
/// `flow` (Ethernet header, then IPv4), and puts a pending D-SACK block on
/// it when it is a pure ACK.
fn note_ack(flow: &mut Flow, buf: &mut crate::buf::PacketBuf) {
    let f = buf.frame();
    let l4 = ETH + usize::from(f.get(ETH).copied().unwrap_or(0x45) & 0x0f) * 4;
    let Some(ack) = f.get(l4 + 8..l4 + 12) else {
        return;
    };
    if f.get(l4 + 13).is_some_and(|flags| flags & 0x10 != 0) {
        let ack = u32::from_be_bytes([ack[0], ack[1], ack[2], ack[3]]);
        flow.taken = Some(match flow.taken {
            Some(t) if frame::seq_before(ack, t) => t,
            _ => ack,
        });
        if let Some(block) = flow.dsack
            && frame::add_dsack(buf, block).is_some()
        {
            flow.dsack = None;
        }
    }
}

/// The IPv4 packet at `range` of the frame in `buf` (empty when gone).
fn packet_of<'a>(
    buf: &'a Option<crate::buf::PacketBuf>,
    range: &core::ops::Range<usize>,
) -> &'a [u8] {
    buf.as_ref()
        .and_then(|b| b.frame().get(range.clone()))
        .unwrap_or_default()
}

/// A client's address and port as a container can answer them: not
/// loopback (nor IPv6, which the containers' networks do not carry here).
fn routable(client: SocketAddr) -> Option<(Ipv4Addr, u16)> {
    match client {
        SocketAddr::V4(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => {
            Some((*a.ip(), a.port()))
        }
        _ => None,
    }
}

/// Creates a flow-table entry; a stale entry on the same tuple (a
/// connection in TIME_WAIT reopened) is replaced.
fn create_flow(
    cx: &mut Ctx<'_>,
    original: FlowKey,
    reply: FlowKey,
    pkt: PacketInfo,
) -> Option<ConnId> {
    let new = NewFlow {
        original,
        reply,
        cookie: 0,
    };
    for _ in 0..2 {
        match cx.flows.create(cx.now, new, pkt) {
            Ok(t) => return Some(t.id),
            Err(Refused::Exists(id) | Refused::ReplyInUse(id)) => {
                cx.flows.remove(id);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Makes closing `stream` send a RST (the other side's connection was
/// reset, or its endpoint is gone).
fn reset_on_close(stream: &mio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// TCP timestamps of the connections the endpoint opens: milliseconds of
/// one clock shared by all of them, so a new connection's are later than
/// any earlier one's on the same addresses and ports.
fn tsval() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let ms = EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis();
    // Wraps as RFC 7323 timestamps do; a random start is not needed here.
    u32::try_from(ms % (1 << 32)).unwrap_or(0).wrapping_add(1)
}

/// An endpoint socket toward a container, published or egress. It carries
/// timestamps as the container's peer on a kernel path would: an egress
/// connection's as the remote server behind a kernel NAT (the container's
/// RTT samples and PAWS work as on that path), a published one's so the
/// container takes a reused pair it holds in TIME_WAIT. A SYN without
/// them turns them off for the connection.
fn new_socket() -> Socket<'static> {
    let mut s = Socket::new(
        SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        SocketBuffer::new(vec![0; SOCKET_BUFFER]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s.set_tsval_generator(Some(tsval));
    s
}

/// A non-blocking host connection to `dst`, from `sport` when the host can
/// bind it.
fn open_host(sport: u16, dst: SocketAddrV4) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket as S, Type};
    let s = S::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    // MASQUERADE keeps the source port when it is free.
    let _ = s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport).into());
    match s.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e)
            if e.kind() == io::ErrorKind::AddrNotAvailable
                || e.kind() == io::ErrorKind::AddrInUse =>
        {
            // The kept port clashes on this destination: any port will do.
            let s = S::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.set_nonblocking(true)?;
            s.set_tcp_nodelay(true)?;
            match s.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            return Ok(mio::net::TcpStream::from_std(s.into()));
        }
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(s.into()))
}

/// The source and destination ports of the TCP segment in a frame.
fn tcp_ports(f: &[u8]) -> (u16, u16) {
    let ihl = usize::from(f.get(ETH).copied().unwrap_or(0x45) & 0x0f) * 4;
    let l4 = ETH + ihl;
    match f.get(l4..l4 + 4) {
        Some(p) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        None => (0, 0),
    }
}

/// Raises the MSS option of a SYN to what the userspace endpoint may send
/// (the offload header cuts it back to the returned original on the
/// wire). `None` when the SYN has no MSS option.
fn rewrite_mss(packet: &mut [u8], l4: usize) -> Option<u16> {
    let doff = usize::from(*packet.get(l4 + 12)? >> 4) * 4;
    let end = (l4 + doff).min(packet.len());
    let mut at = l4 + 20;
    while at < end {
        match packet[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*packet.get(at + 1)?);
                if len < 2 {
                    break;
                }
                if kind == 2 && len == 4 {
                    let field = packet.get_mut(at + 2..at + 4)?;
                    let old = u16::from_be_bytes([field[0], field[1]]);
                    let big = u16::try_from(IP_MTU - 40).unwrap_or(u16::MAX);
                    field.copy_from_slice(&big.to_be_bytes());
                    return Some(old);
                }
                at += len;
            }
        }
    }
    None
}

/// A RST answering the SYN in `packet` (an IPv4 packet), from its
/// destination to the endpoint.
fn reset_frame(buf: &mut crate::buf::PacketBuf, ep: &Endpoint, packet: &[u8]) -> Option<()> {
    let meta = Ipv4Meta::parse(packet).ok()?;
    let l4 = packet.get(meta.l4_offset..)?;
    let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
    let payload = usize::from(meta.total_len)
        .saturating_sub(meta.l4_offset + usize::from(l4.get(12)? >> 4) * 4);
    let ack = seq
        .wrapping_add(1)
        .wrapping_add(u32::try_from(payload).unwrap_or(0));
    let total = ETH + IP + 20;
    let f = buf.rx_space().get_mut(..total)?;
    frame::ethernet(f, ep);
    frame::ipv4(
        &mut f[ETH..ETH + IP],
        meta.dst,
        meta.src,
        IpProtocol::Tcp,
        20,
    );
    let t = &mut f[ETH + IP..];
    t[0..2].copy_from_slice(&meta.dst_port.to_be_bytes());
    t[2..4].copy_from_slice(&meta.src_port.to_be_bytes());
    t[4..8].copy_from_slice(&0u32.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = TcpFlags::RST.0 | TcpFlags::ACK.0;
    t[14..20].copy_from_slice(&[0; 6]);
    let c = !smoltcp::wire::checksum::combine(&[
        frame::pseudo(meta.dst, meta.src, IpProtocol::Tcp, 20),
        smoltcp::wire::checksum::data(&t[..20]),
    ]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    buf.set_received(total);
    buf.vnet = crate::buf::VnetHdr::default();
    Some(())
}

/// The connector's own parsing of `frame`, for [`super::fuzz_frame`].
pub(crate) fn fuzz(frame: &[u8], ep: &Endpoint) {
    let Ok((offset, meta)) = nat::wire::parse_frame(frame) else {
        return;
    };
    let Some(packet) = frame.get(offset..offset + usize::from(meta.total_len)) else {
        return;
    };
    let mut syn = packet.to_vec();
    let _ = rewrite_mss(&mut syn, meta.l4_offset);
    let mut buf = crate::buf::PacketBuf::new();
    let _ = reset_frame(&mut buf, ep, packet);
    if let Ok(mut out) = crate::buf::PacketBuf::from_frame(frame) {
        let _ = frame::tcp_offload(&mut out, ep.mss);
    }
    let now = std::time::Instant::now();
    let mut tcp = Tcp::new(now);
    tcp.dev.push_rx(packet);
    tcp.dev.push_rx(&syn);
    let t = smol_now(tcp.epoch, now);
    tcp.iface.poll(t, &mut tcp.dev, &mut tcp.sockets);
}
