//! One frame through the flow table: parse once, find or create the flow,
//! rewrite in place. This is the whole per-packet NAT path, so a datapath
//! worker, the fuzz target and the benches all run the same code.
//!
//! What a new flow translates to is the caller's decision (policy,
//! published ports, the masquerade address), given as a closure; the
//! engine asks it again with the next attempt number when the reply tuple
//! it proposed is taken, as the kernel's NAT picks another port on a clash.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use crate::conntrack::{ConnId, Fit, FlowTable, NewFlow, Refused, Tracked};
use crate::flow::{Direction, FlowKey, NetworkId};
use crate::icmp_error::{IcmpErrorMeta, rewrite_icmp_error};
use crate::rewrite::{L4Checksum, rewrite_to};
use crate::spec::PortRange;
use crate::wire::{WireError, parse_frame};

/// Reply tuples tried for one new flow before giving up.
pub const MAX_CLASH_ATTEMPTS: u16 = 8;

/// What happened to a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Belongs to a flow (new or known) and was rewritten as the flow says
    /// (unchanged when the flow is not translated).
    Forward(Tracked),
    /// Belongs to a flow but does not fit its TCP state; not rewritten.
    /// The kernel would let it through untranslated; a gateway drops it.
    Invalid(Tracked),
    /// An ICMP error about a known flow, translated back along it.
    Related {
        /// The flow the quoted packet belongs to.
        id: ConnId,
        /// The direction the error travels in, relative to the flow.
        direction: Direction,
    },
    /// No flow, and the caller's closure declined to create one (or an
    /// ICMP error quotes a packet of no known flow).
    NoFlow,
    /// A new flow was refused (table full, not a first packet, clash).
    Refused(Refused),
    /// Not a trackable IPv4 packet.
    Malformed(WireError),
}

/// Runs one Ethernet frame seen on `network` through `table`.
///
/// `translate(key, attempt)` gives the reply tuple of a new flow, or
/// `None` to leave the frame without a flow. `mode` says what the
/// transport checksum holds (from the frame's virtio-net header).
///
/// Allocates nothing; takes at most two shard locks in sequence for a
/// known flow.
pub fn process(
    table: &FlowTable,
    now: Instant,
    network: NetworkId,
    frame: &mut [u8],
    mode: L4Checksum,
    mut translate: impl FnMut(&FlowKey, u16) -> Option<FlowKey>,
) -> Verdict {
    let (l3, mut meta) = match parse_frame(frame) {
        Ok(v) => v,
        Err(WireError::IcmpType(3 | 11 | 12)) => return related(table, now, network, frame),
        Err(e) => return Verdict::Malformed(e),
    };
    let key = meta.key(network);
    let tracked = match table.track(now, &key, meta.info()) {
        Some(t) => t,
        None => {
            let mut attempt = 0;
            loop {
                let Some(reply) = translate(&key, attempt) else {
                    return Verdict::NoFlow;
                };
                let new = NewFlow {
                    original: key,
                    reply,
                    cookie: 0,
                };
                match table.create(now, new, meta.info()) {
                    Ok(t) => break t,
                    Err(Refused::ReplyInUse(_)) if attempt + 1 < MAX_CLASH_ATTEMPTS => {
                        attempt += 1;
                    }
                    Err(e) => return Verdict::Refused(e),
                }
            }
        }
    };
    if tracked.fit == Fit::Invalid {
        return Verdict::Invalid(tracked);
    }
    let to = &tracked.rewrite_to;
    let unchanged = to.src == key.src
        && to.dst == key.dst
        && to.src_port == key.src_port
        && to.dst_port == key.dst_port;
    if !unchanged {
        let Some(ip) = frame.get_mut(l3..) else {
            return Verdict::Malformed(WireError::Truncated);
        };
        if let Err(e) = rewrite_to(ip, &mut meta, mode, to) {
            return Verdict::Malformed(e);
        }
    }
    Verdict::Forward(tracked)
}

/// An ICMP error: found by the flow of the packet it quotes, translated
/// as that flow's packets are, never creating a flow nor changing its
/// state (nf_conntrack's `RELATED`).
fn related(table: &FlowTable, now: Instant, network: NetworkId, frame: &mut [u8]) -> Verdict {
    let l3 = smoltcp::wire::EthernetFrame::<&[u8]>::header_len();
    let Some(ip) = frame.get_mut(l3..) else {
        return Verdict::Malformed(WireError::Truncated);
    };
    let meta = match IcmpErrorMeta::parse(ip) {
        Ok(m) => m,
        Err(e) => return Verdict::Malformed(e),
    };
    let key = meta.flow_key(network);
    let Some((id, direction)) = table.lookup(now, &key) else {
        return Verdict::NoFlow;
    };
    let Some(info) = table.get(now, id) else {
        return Verdict::NoFlow;
    };
    let to = match direction {
        Direction::Original => info.reply.reversed(),
        Direction::Reply => info.original.reversed(),
    };
    match rewrite_icmp_error(ip, &meta, &to) {
        Ok(()) => Verdict::Related { id, direction },
        Err(e) => Verdict::Malformed(e),
    }
}

/// The reply tuple of a masqueraded flow leaving through `uplink` from
/// `host`: the container's source port is kept on the first attempt, as
/// MASQUERADE without `--random` does; later attempts walk `ports` from a
/// point derived from the flow, so two clashing flows do not retry the
/// same sequence. ICMP echo keeps or remaps its identifier the same way.
#[must_use]
pub fn masquerade(
    key: &FlowKey,
    uplink: NetworkId,
    host: IpAddr,
    ports: PortRange,
    attempt: u16,
) -> FlowKey {
    let port = if attempt == 0 {
        key.src_port
    } else {
        let h = foldhash::fast::FixedState::with_seed(0x6e61_7400).hash_one(key);
        let span = u64::from(ports.span()) + 1;
        let offset = h.wrapping_add(u64::from(attempt)) % span;
        // `offset < span <= 65536`, and start + offset <= end.
        ports.start() + u16::try_from(offset).unwrap_or(0)
    };
    let mut reply = FlowKey::new(uplink, key.proto, key.dst, key.dst_port, host, port);
    if key.proto == crate::flow::FlowProto::Icmp {
        reply.src_port = port;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Config;
    use crate::flow::FlowProto;
    use crate::wire::Ipv4Meta;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const NET: NetworkId = NetworkId(1);
    const UPLINK: NetworkId = NetworkId(0);
    const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn ports() -> PortRange {
        PortRange::new(32768, 60999).unwrap()
    }

    fn tcp_frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, syn: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 1000);
        let b = if syn { b.syn() } else { b.syn().ack(1) };
        let mut out = Vec::new();
        b.write(&mut out, b"data").unwrap();
        out
    }

    fn masq(key: &FlowKey, attempt: u16) -> Option<FlowKey> {
        Some(masquerade(key, UPLINK, HOST.into(), ports(), attempt))
    }

    #[test]
    fn an_egress_flow_is_masqueraded_and_its_reply_restored() {
        let table = FlowTable::new(Config::default());
        let now = Instant::now();
        let mut syn = tcp_frame([172, 18, 0, 2], 40000, [192, 0, 2, 1], 80, true);
        let Verdict::Forward(t) = process(&table, now, NET, &mut syn, L4Checksum::Complete, masq)
        else {
            panic!("not forwarded")
        };
        let out = Ipv4Meta::parse(&syn[14..]).unwrap();
        assert_eq!((out.src, out.src_port), (HOST, 40000), "source port kept");
        assert_eq!(t.direction, crate::flow::Direction::Original);

        let mut synack = tcp_frame([192, 0, 2, 1], 80, [192, 0, 2, 2], 40000, false);
        let v = process(
            &table,
            now,
            UPLINK,
            &mut synack,
            L4Checksum::Complete,
            |_, _| panic!("a reply must not create a flow"),
        );
        assert!(matches!(v, Verdict::Forward(t) if t.direction == crate::flow::Direction::Reply));
        let back = Ipv4Meta::parse(&synack[14..]).unwrap();
        assert_eq!(
            (back.dst, back.dst_port),
            (Ipv4Addr::new(172, 18, 0, 2), 40000)
        );
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&synack[14..]).unwrap();
        let (tcp, data) = etherparse::TcpHeader::from_slice(rest).unwrap();
        assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, data).unwrap());
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    }

    #[test]
    fn a_clash_on_the_kept_port_moves_to_another() {
        let table = FlowTable::new(Config::default());
        let now = Instant::now();
        let mut a = tcp_frame([172, 18, 0, 2], 40000, [192, 0, 2, 1], 80, true);
        let mut b = tcp_frame([172, 18, 0, 3], 40000, [192, 0, 2, 1], 80, true);
        process(&table, now, NET, &mut a, L4Checksum::Complete, masq);
        let Verdict::Forward(t) = process(&table, now, NET, &mut b, L4Checksum::Complete, masq)
        else {
            panic!("second flow refused")
        };
        let out = Ipv4Meta::parse(&b[14..]).unwrap();
        assert_ne!(out.src_port, 40000);
        assert!(ports().contains(out.src_port));
        assert_eq!(t.rewrite_to.src_port, out.src_port);
        // When every attempt clashes, the flow is refused.
        let mut c = tcp_frame([172, 18, 0, 4], 1, [192, 0, 2, 1], 80, true);
        let mut d = tcp_frame([172, 18, 0, 5], 1, [192, 0, 2, 1], 80, true);
        let _ = process(&table, now, NET, &mut c, L4Checksum::Complete, |k, _| {
            Some(FlowKey::new(
                UPLINK,
                FlowProto::Tcp,
                k.dst,
                k.dst_port,
                HOST.into(),
                1,
            ))
        });
        let v = process(&table, now, NET, &mut d, L4Checksum::Complete, |k, _| {
            Some(FlowKey::new(
                UPLINK,
                FlowProto::Tcp,
                k.dst,
                k.dst_port,
                HOST.into(),
                1,
            ))
        });
        assert!(matches!(v, Verdict::Refused(Refused::ReplyInUse(_))));
    }

    #[test]
    fn frames_without_a_flow_or_invalid_for_it_are_not_rewritten() {
        let table = FlowTable::new(Config::default());
        let now = Instant::now();
        let mut f = tcp_frame([172, 18, 0, 2], 1, [192, 0, 2, 1], 80, true);
        let before = f.clone();
        assert_eq!(
            process(&table, now, NET, &mut f, L4Checksum::Complete, |_, _| None),
            Verdict::NoFlow
        );
        assert_eq!(f, before);
        process(&table, now, NET, &mut f, L4Checksum::Complete, masq);
        // A SYN-ACK from the client side is invalid in SYN_SENT.
        let mut bad = tcp_frame([172, 18, 0, 2], 1, [192, 0, 2, 1], 80, false);
        let before = bad.clone();
        assert!(matches!(
            process(&table, now, NET, &mut bad, L4Checksum::Complete, masq),
            Verdict::Invalid(_)
        ));
        assert_eq!(bad, before);
        assert_eq!(
            process(&table, now, NET, &mut [0u8; 10], L4Checksum::Complete, masq),
            Verdict::Malformed(WireError::Truncated)
        );
    }

    #[test]
    fn echo_identifiers_are_kept_and_restored() {
        let table = FlowTable::new(Config::default());
        let now = Instant::now();
        let mut req = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([172, 18, 0, 2], [192, 0, 2, 1], 64)
            .icmpv4_echo_request(77, 1)
            .write(&mut req, b"ping")
            .unwrap();
        assert!(matches!(
            process(&table, now, NET, &mut req, L4Checksum::Complete, masq),
            Verdict::Forward(_)
        ));
        let mut rep = Vec::new();
        PacketBuilder::ethernet2([4; 6], [2; 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .icmpv4_echo_reply(77, 1)
            .write(&mut rep, b"ping")
            .unwrap();
        assert!(matches!(
            process(
                &table,
                now,
                UPLINK,
                &mut rep,
                L4Checksum::Complete,
                |_, _| None
            ),
            Verdict::Forward(_)
        ));
        let m = Ipv4Meta::parse(&rep[14..]).unwrap();
        assert_eq!((m.dst, m.dst_port), (Ipv4Addr::new(172, 18, 0, 2), 77));
    }

    #[test]
    fn an_icmp_error_about_an_egress_flow_reaches_the_container() {
        let table = FlowTable::new(Config::default());
        let now = Instant::now();
        let mut syn = tcp_frame([172, 18, 0, 2], 40000, [192, 0, 2, 1], 80, true);
        process(&table, now, NET, &mut syn, L4Checksum::Complete, masq);
        // A router answers the translated SYN with "fragmentation needed".
        let quoted = &syn[14..14 + 20 + 8];
        let mut err = Vec::new();
        PacketBuilder::ethernet2([4; 6], [2; 6])
            .ipv4([198, 51, 100, 1], HOST.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400,
                },
            ))
            .write(&mut err, quoted)
            .unwrap();
        let v = process(
            &table,
            now,
            UPLINK,
            &mut err,
            L4Checksum::Complete,
            |_, _| panic!("an error must not create a flow"),
        );
        assert!(matches!(
            v,
            Verdict::Related {
                direction: crate::flow::Direction::Reply,
                ..
            }
        ));
        let m = IcmpErrorMeta::parse(&err[14..]).unwrap();
        assert_eq!(m.outer_dst, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(
            (m.inner_src, m.inner_src_port),
            (Ipv4Addr::new(172, 18, 0, 2), 40000)
        );
        // The flow's state did not move.
        let (id, _) = table.lookup(now, &m.flow_key(NET).reversed()).unwrap();
        assert_eq!(
            table.get(now, id).unwrap().state,
            crate::conntrack::FlowState::Tcp(crate::tcp::TcpState::SynSent)
        );
        // An error about no known flow is left alone.
        let mut stray = err.clone();
        stray[14 + 28 + 12] = 10;
        assert_eq!(
            process(
                &table,
                now,
                UPLINK,
                &mut stray,
                L4Checksum::Complete,
                |_, _| None
            ),
            Verdict::NoFlow
        );
    }

    proptest! {
        #[test]
        fn random_frames_never_panic_and_keep_the_table_consistent(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..20),
            partial in any::<bool>(),
        ) {
            let table = FlowTable::new(Config { capacity: 8, shards: 2, ..Config::default() });
            let now = Instant::now();
            let mode = if partial { L4Checksum::Partial } else { L4Checksum::Complete };
            for mut f in frames {
                // Make some of them IPv4 over Ethernet so parsing goes deep.
                if f.len() > 14 { f[12] = 0x08; f[13] = 0x00; f[14] = 0x45; }
                let _ = process(&table, now, NET, &mut f, mode, masq);
            }
            prop_assert!(table.len() <= 8);
            prop_assert_eq!(table.snapshot(now, |_| true).len(), table.len());
        }
    }
}
