//! UDP and ICMP echo through the host connector.
//!
//! UDP: one connected host socket per flow (bound to the container's
//! source port when the host can bind it), living as long as its
//! flow-table entry (30 s, 120 s once answered: nf_conntrack's timeouts);
//! a published UDP port's datagrams are carried to the container from the
//! client's address, and the container's answers leave through the
//! published socket to that client. ICMP echo: one raw ICMP socket; a
//! request leaves with an identifier of the connector's choosing (the
//! container's when free), and the reply is translated back.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::{Interest, Registry, Token};
use nat::conntrack::{ConnId, FlowTable, NewFlow, PacketInfo, Refused};
use nat::flow::{FlowKey, FlowProto};
use nat::tcp::TcpFlags;
use nat::wire::Ipv4Meta;

use super::frame;
use super::{Ctx, Endpoint, HOST_NETWORK, Verdict, flow_network};
use crate::publish::Publication;
use crate::switch::DropReason;

/// Tokens of per-flow UDP sockets: this plus the flow's slot.
const FLOW_TOKEN: usize = 3 << 40;
/// Tokens of published UDP sockets: this plus the socket's slot.
const PUBLISHED_TOKEN: usize = 4 << 40;
/// The raw ICMP socket's token.
const ICMP_TOKEN: usize = 5 << 40;
/// Datagrams read from one socket per readiness event at most, so one
/// busy flow cannot starve the others.
const READ_BUDGET: usize = 64;

/// (container address, container port, peer address, peer port).
type Quad = (Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Debug)]
enum Via {
    /// The flow's own connected socket.
    Own(mio::net::UdpSocket),
    /// A published port's socket (slot), answering `client`.
    Published(usize, SocketAddr),
}

#[derive(Debug)]
struct Flow {
    quad: Quad,
    ep: Endpoint,
    via: Via,
    conn: Option<ConnId>,
    from_key: FlowKey,
    to_key: FlowKey,
}

#[derive(Debug)]
struct Published {
    publication: Publication,
    socket: mio::net::UdpSocket,
}

#[derive(Debug)]
struct Echo {
    ep: Endpoint,
    container: Ipv4Addr,
    ident: u16,
    conn: Option<ConnId>,
    from_key: FlowKey,
    to_key: FlowKey,
}

/// The UDP and ICMP engine.
#[derive(Debug, Default)]
pub(crate) struct Udp {
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    by_quad: HashMap<Quad, usize>,
    published: Vec<Option<Published>>,
    /// Published flows by (published slot, client).
    by_client: HashMap<(usize, SocketAddr), usize>,
    icmp: Option<mio::net::UdpSocket>,
    icmp_failed: bool,
    /// Echo flows by (peer, identifier on the wire).
    echoes: HashMap<(Ipv4Addr, u16), Echo>,
    /// Wire identifier by (container, peer, container's identifier).
    echo_ids: HashMap<(Ipv4Addr, Ipv4Addr, u16), u16>,
    next_ident: u16,
    next_port: u16,
    scratch: Vec<u8>,
}

impl Udp {
    pub(crate) fn new() -> Self {
        Self {
            next_port: 32_768,
            scratch: vec![0; 65_536],
            ..Self::default()
        }
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
        let Some(flow) = self.flows.get_mut(i).and_then(Option::take) else {
            return;
        };
        match flow.via {
            Via::Own(mut s) => {
                let _ = registry.deregister(&mut s);
            }
            Via::Published(p, client) => {
                self.by_client.remove(&(p, client));
            }
        }
        self.by_quad.remove(&flow.quad);
        self.free.push(i);
    }

    /// A UDP datagram from a container.
    pub(crate) fn on_container(
        &mut self,
        cx: &mut Ctx<'_>,
        ep: Endpoint,
        meta: &Ipv4Meta,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        let payload = packet
            .get(meta.l4_offset + 8..usize::from(meta.total_len))
            .ok_or(DropReason::Malformed)?;
        let quad = (meta.src, meta.src_port, meta.dst, meta.dst_port);
        let (i, created) = match self.by_quad.get(&quad) {
            Some(&i) => (i, false),
            None => {
                let target = cx.view.target(
                    ep.port,
                    SocketAddrV4::new(meta.dst, meta.dst_port),
                    nat::spec::Proto::Udp,
                )?;
                (self.open(cx, ep, meta, target)?, true)
            }
        };
        let Some(flow) = self.flows.get(i).and_then(Option::as_ref) else {
            return Ok(());
        };
        if !created {
            // A new flow's first packet was counted when it was made.
            cx.flows.track(cx.now, &flow.from_key, meta.info());
        }
        let sent = match &flow.via {
            Via::Own(s) => s.send(payload),
            Via::Published(p, client) => match self.published.get(*p).and_then(Option::as_ref) {
                Some(pb) => pb.socket.send_to(payload, *client),
                None => return Err(DropReason::NoRoute),
            },
        };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(DropReason::HostBusy),
            // An ICMP error the host received for an earlier datagram
            // (ECONNREFUSED) is reported here; UDP does not care.
            Err(_) => Ok(()),
        }
    }

    fn open(
        &mut self,
        cx: &mut Ctx<'_>,
        ep: Endpoint,
        meta: &Ipv4Meta,
        dst: SocketAddrV4,
    ) -> Result<usize, DropReason> {
        let socket = open_host(meta.src_port, dst).map_err(|e| {
            tracing::debug!(%dst, error = %e, "cannot open a host UDP socket");
            DropReason::HostUnsupported
        })?;
        let local = match socket.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        let from_key = meta.key(flow_network(ep.network));
        let to_key = FlowKey::new(
            HOST_NETWORK,
            FlowProto::Udp,
            IpAddr::V4(*dst.ip()),
            dst.port(),
            IpAddr::V4(*local.ip()),
            local.port(),
        );
        let conn = create(cx.flows, cx.now, from_key, to_key, meta.info())?;
        let i = self.insert(Flow {
            quad: (meta.src, meta.src_port, meta.dst, meta.dst_port),
            ep,
            via: Via::Own(socket),
            conn: Some(conn),
            from_key,
            to_key,
        });
        if let Some(Flow {
            via: Via::Own(s), ..
        }) = self.flows[i].as_mut()
            && cx
                .registry
                .register(s, Token(FLOW_TOKEN + i), Interest::READABLE)
                .is_err()
        {
            self.remove(cx.registry, i);
            return Err(DropReason::HostUnsupported);
        }
        Ok(i)
    }

    /// An ICMP echo request from a container.
    pub(crate) fn icmp_on_container(
        &mut self,
        cx: &mut Ctx<'_>,
        ep: Endpoint,
        meta: &Ipv4Meta,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        if meta.icmp_reply {
            return Err(DropReason::HostUnsupported);
        }
        if let Verdict::Drop(reason) = cx.view.verdict(ep.port, meta.dst) {
            return Err(reason);
        }
        self.ensure_icmp(cx.registry)?;
        let message = packet
            .get(meta.l4_offset..usize::from(meta.total_len))
            .ok_or(DropReason::Malformed)?;
        let ident = meta.src_port;
        let key = (meta.src, meta.dst, ident);
        let (wire, created) = match self.echo_ids.get(&key) {
            Some(&w) if self.echoes.contains_key(&(meta.dst, w)) => (w, false),
            _ => {
                let w = self.pick_ident(meta.dst, ident);
                let from_key = meta.key(flow_network(ep.network));
                let to_key = FlowKey::icmp(
                    HOST_NETWORK,
                    IpAddr::V4(meta.dst),
                    IpAddr::V4(source_toward(meta.dst)),
                    w,
                );
                let conn = create(cx.flows, cx.now, from_key, to_key, meta.info()).ok();
                self.echo_ids.insert(key, w);
                self.echoes.insert(
                    (meta.dst, w),
                    Echo {
                        ep,
                        container: meta.src,
                        ident,
                        conn,
                        from_key,
                        to_key,
                    },
                );
                (w, true)
            }
        };
        if !created && let Some(e) = self.echoes.get(&(meta.dst, wire)) {
            cx.flows.track(cx.now, &e.from_key, meta.info());
        }
        let mut m = message.to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        m[4..6].copy_from_slice(&wire.to_be_bytes());
        let c = crate::switch::checksum::full(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let Some(sock) = self.icmp.as_ref() else {
            return Err(DropReason::HostUnsupported);
        };
        match sock.send_to(&m, SocketAddr::V4(SocketAddrV4::new(meta.dst, 0))) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(DropReason::HostBusy),
            Err(_) => Err(DropReason::HostUnsupported),
        }
    }

    fn pick_ident(&mut self, peer: Ipv4Addr, wanted: u16) -> u16 {
        if !self.echoes.contains_key(&(peer, wanted)) {
            return wanted;
        }
        for _ in 0..=u16::MAX {
            self.next_ident = self.next_ident.wrapping_add(1);
            if !self.echoes.contains_key(&(peer, self.next_ident)) {
                return self.next_ident;
            }
        }
        wanted
    }

    fn ensure_icmp(&mut self, registry: &Registry) -> Result<(), DropReason> {
        if self.icmp.is_some() {
            return Ok(());
        }
        if self.icmp_failed {
            return Err(DropReason::HostUnsupported);
        }
        let opened = (|| -> io::Result<mio::net::UdpSocket> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
            s.set_nonblocking(true)?;
            let std: std::net::UdpSocket = s.into();
            let mut m = mio::net::UdpSocket::from_std(std);
            registry.register(&mut m, Token(ICMP_TOKEN), Interest::READABLE)?;
            Ok(m)
        })();
        match opened {
            Ok(s) => {
                self.icmp = Some(s);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a raw ICMP socket; ping beyond the gateway is dropped");
                self.icmp_failed = true;
                Err(DropReason::HostUnsupported)
            }
        }
    }

    /// A socket's readiness.
    pub(crate) fn on_event(&mut self, cx: &mut Ctx<'_>, event: &mio::event::Event) {
        let t = event.token().0;
        if t == ICMP_TOKEN {
            self.icmp_readable(cx);
        } else if (PUBLISHED_TOKEN..ICMP_TOKEN).contains(&t) {
            self.published_readable(cx, t - PUBLISHED_TOKEN);
        } else if (FLOW_TOKEN..PUBLISHED_TOKEN).contains(&t) {
            self.flow_readable(cx, t - FLOW_TOKEN);
        }
    }

    fn flow_readable(&mut self, cx: &mut Ctx<'_>, i: usize) {
        for _ in 0..READ_BUDGET {
            let Some(flow) = self.flows.get(i).and_then(Option::as_ref) else {
                return;
            };
            let Via::Own(s) = &flow.via else { return };
            let n = match s.recv(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let (c_ip, c_port, p_ip, p_port) = flow.quad;
            let (ep, to_key) = (flow.ep, flow.to_key);
            let len = u32::try_from(n + 28).unwrap_or(u32::MAX);
            cx.flows.track(
                cx.now,
                &to_key,
                PacketInfo {
                    tcp_flags: TcpFlags(0),
                    len,
                },
            );
            let mut buf = cx.out.buf();
            if frame::udp(
                &mut buf,
                &ep,
                (p_ip, p_port),
                (c_ip, c_port),
                &self.scratch[..n],
            )
            .is_some()
            {
                cx.out.queue(ep.port, buf);
            } else {
                cx.out.pool.give(buf);
            }
        }
    }

    fn published_readable(&mut self, cx: &mut Ctx<'_>, p: usize) {
        for _ in 0..READ_BUDGET {
            let Some(pb) = self.published.get(p).and_then(Option::as_ref) else {
                return;
            };
            let (n, client) = match pb.socket.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let publication = pb.publication;
            let host_addr = pb.socket.local_addr().ok();
            let i = match self.by_client.get(&(p, client)) {
                Some(&i) => i,
                None => match self.serve(cx, p, publication, client, host_addr) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let Some(flow) = self.flows.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let (c_ip, c_port, s_ip, s_port) = flow.quad;
            let (ep, to_key) = (flow.ep, flow.to_key);
            let len = u32::try_from(n + 28).unwrap_or(u32::MAX);
            cx.flows.track(
                cx.now,
                &to_key,
                PacketInfo {
                    tcp_flags: TcpFlags(0),
                    len,
                },
            );
            let mut buf = cx.out.buf();
            if frame::udp(
                &mut buf,
                &ep,
                (s_ip, s_port),
                (c_ip, c_port),
                &self.scratch[..n],
            )
            .is_some()
            {
                cx.out.queue(ep.port, buf);
            } else {
                cx.out.pool.give(buf);
            }
        }
    }

    /// A new client of a published UDP port.
    fn serve(
        &mut self,
        cx: &mut Ctx<'_>,
        p: usize,
        publication: Publication,
        client: SocketAddr,
        host_addr: Option<SocketAddr>,
    ) -> Option<usize> {
        let container = publication.container;
        let ep = cx.view.by_ip.get(container.ip()).copied()?;
        let seen = match client {
            SocketAddr::V4(a)
                if !a.ip().is_loopback()
                    && !self.by_quad.contains_key(&(
                        *container.ip(),
                        container.port(),
                        *a.ip(),
                        a.port(),
                    )) =>
            {
                (*a.ip(), a.port())
            }
            _ => {
                let mut port = self.next_port;
                for _ in 0..28_232 {
                    port = self.next_port;
                    self.next_port = if port >= 60_999 { 32_768 } else { port + 1 };
                    if !self.by_quad.contains_key(&(
                        *container.ip(),
                        container.port(),
                        publication.gateway,
                        port,
                    )) {
                        break;
                    }
                }
                (publication.gateway, port)
            }
        };
        let host_ip = host_addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let original = FlowKey::new(
            HOST_NETWORK,
            FlowProto::Udp,
            client.ip(),
            client.port(),
            host_ip,
            publication.port.host_port,
        );
        let reply = FlowKey::new(
            flow_network(ep.network),
            FlowProto::Udp,
            IpAddr::V4(*container.ip()),
            container.port(),
            IpAddr::V4(seen.0),
            seen.1,
        );
        let conn = create(
            cx.flows,
            cx.now,
            original,
            reply,
            PacketInfo {
                tcp_flags: TcpFlags(0),
                len: 0,
            },
        )
        .ok();
        let i = self.insert(Flow {
            quad: (*container.ip(), container.port(), seen.0, seen.1),
            ep,
            via: Via::Published(p, client),
            conn,
            from_key: reply,
            to_key: original,
        });
        self.by_client.insert((p, client), i);
        Some(i)
    }

    fn icmp_readable(&mut self, cx: &mut Ctx<'_>) {
        for _ in 0..READ_BUDGET {
            let Some(s) = self.icmp.as_ref() else { return };
            let n = match s.recv(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            // A raw socket reads the IP header too.
            let Ok(meta) = Ipv4Meta::parse(&self.scratch[..n]) else {
                continue;
            };
            if meta.proto != FlowProto::Icmp || !meta.icmp_reply {
                continue;
            }
            let Some(echo) = self.echoes.get(&(meta.src, meta.src_port)) else {
                continue;
            };
            let (ep, container, ident, to_key) = (echo.ep, echo.container, echo.ident, echo.to_key);
            cx.flows.track(cx.now, &to_key, meta.info());
            let Some(message) = self
                .scratch
                .get(meta.l4_offset..usize::from(meta.total_len).min(n))
            else {
                continue;
            };
            let mut buf = cx.out.buf();
            if frame::icmp(&mut buf, &ep, meta.src, container, message, ident).is_some() {
                cx.out.queue(ep.port, buf);
            } else {
                cx.out.pool.give(buf);
            }
        }
    }

    pub(crate) fn attach(
        &mut self,
        registry: &Registry,
        publication: Publication,
        socket: std::net::UdpSocket,
    ) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let i = super::free_slot(&self.published);
        registry.register(&mut socket, Token(PUBLISHED_TOKEN + i), Interest::READABLE)?;
        super::fill_slot(
            &mut self.published,
            i,
            Published {
                publication,
                socket,
            },
        );
        Ok(())
    }

    pub(crate) fn detach(&mut self, registry: &Registry, port: &nat::alloc::PublishedPort) {
        let mut gone = Vec::new();
        for (i, slot) in self.published.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|p| p.publication.port == *port)
                && let Some(mut p) = slot.take()
            {
                let _ = registry.deregister(&mut p.socket);
                gone.push(i);
            }
        }
        let doomed: Vec<usize> = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.as_ref()
                    .is_some_and(|f| matches!(f.via, Via::Published(p, _) if gone.contains(&p)))
            })
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            self.remove(registry, i);
        }
    }

    /// Ends the flows of the endpoint on `port`.
    pub(crate) fn remove_port(&mut self, registry: &Registry, port: crate::ids::PortId) {
        let doomed: Vec<usize> = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| f.ep.port == port))
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            self.remove(registry, i);
        }
        self.echoes.retain(|_, e| e.ep.port != port);
        let echoes = &self.echoes;
        self.echo_ids
            .retain(|(_, peer, _), w| echoes.contains_key(&(*peer, *w)));
    }

    /// Closes the sockets of flows whose flow-table entry has expired.
    pub(crate) fn expire(&mut self, now: Instant, flows: &FlowTable, registry: &Registry) {
        let doomed: Vec<usize> = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.as_ref()
                    .is_some_and(|f| f.conn.is_none_or(|id| flows.get(now, id).is_none()))
            })
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            self.remove(registry, i);
        }
        self.echoes
            .retain(|_, e| e.conn.is_some_and(|id| flows.get(now, id).is_some()));
        let echoes = &self.echoes;
        self.echo_ids
            .retain(|(_, peer, _), w| echoes.contains_key(&(*peer, *w)));
    }
}

fn create(
    flows: &FlowTable,
    now: Instant,
    original: FlowKey,
    reply: FlowKey,
    pkt: PacketInfo,
) -> Result<ConnId, DropReason> {
    let new = NewFlow {
        original,
        reply,
        cookie: 0,
    };
    for _ in 0..2 {
        match flows.create(now, new, pkt) {
            Ok(t) => return Ok(t.id),
            Err(Refused::TableFull) => return Err(DropReason::ConntrackFull),
            Err(Refused::Exists(id) | Refused::ReplyInUse(id)) => {
                flows.remove(id);
            }
            Err(_) => return Err(DropReason::HostUnsupported),
        }
    }
    Err(DropReason::HostUnsupported)
}

/// A connected, non-blocking host UDP socket to `dst`, from `sport` when
/// the host can bind it.
fn open_host(sport: u16, dst: SocketAddrV4) -> io::Result<mio::net::UdpSocket> {
    let bind = |port| std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let s = bind(sport).or_else(|_| bind(0))?;
    s.set_nonblocking(true)?;
    s.connect(dst)?;
    let _ = s.as_raw_fd();
    Ok(mio::net::UdpSocket::from_std(s))
}

/// The host's address that a packet to `dst` leaves from (the kernel's
/// route lookup, through an unconnected-then-connected UDP socket that
/// sends nothing): the raw ICMP socket's sends are unbound, so an echo
/// flow's reply tuple would otherwise name no address. `0.0.0.0` when the
/// host has no route.
fn source_toward(dst: Ipv4Addr) -> Ipv4Addr {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((dst, 9)).map(|()| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}
