//! The flow table, driven by a manual clock: every TCP transition and its
//! timeout, UDP and ICMP timeouts, the cap, lookups by either tuple,
//! counters, purges, snapshots, and readers on several threads.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nat::{
    Config, Direction, Fit, FlowKey, FlowProto, FlowState, FlowTable, NetworkId, NewFlow,
    PacketInfo, Refused, TcpFlags, TcpState, Timeouts,
};

const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NET: NetworkId = NetworkId(1);
const UPLINK: NetworkId = NetworkId(0);

const SYN: TcpFlags = TcpFlags::SYN;
const SYNACK: TcpFlags = TcpFlags(0x12);
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags(0x11);
const RST: TcpFlags = TcpFlags::RST;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A container's flow masqueraded behind the host: the reply comes back on
/// the uplink to the host's address.
fn masqueraded(proto: FlowProto, sport: u16) -> NewFlow {
    let original = FlowKey::new(NET, proto, CONTAINER.into(), sport, REMOTE.into(), 80);
    let reply = FlowKey::new(
        UPLINK,
        proto,
        REMOTE.into(),
        80,
        HOST.into(),
        sport.wrapping_add(1000),
    );
    NewFlow {
        original,
        reply,
        cookie: u64::from(sport),
    }
}

fn pkt(flags: TcpFlags) -> PacketInfo {
    PacketInfo {
        tcp_flags: flags,
        len: 60,
    }
}

struct Clock {
    t0: Instant,
}

impl Clock {
    fn at(&self, s: u64) -> Instant {
        self.t0 + secs(s)
    }
}

fn setup(config: Config) -> (FlowTable, Clock) {
    (FlowTable::new(config), Clock { t0: Instant::now() })
}

fn tcp_state(t: &nat::Tracked) -> TcpState {
    match t.state {
        FlowState::Tcp(s) => s,
        other => panic!("not tcp: {other:?}"),
    }
}

/// A TCP flow after `steps` (direction, flags), one second apart, starting
/// with a SYN at t=0; returns the flow, the time of the last step and the
/// state after each step.
fn drive(
    table: &FlowTable,
    clock: &Clock,
    flow: NewFlow,
    steps: &[(Direction, TcpFlags)],
) -> (u64, Vec<(TcpState, Fit)>) {
    let first = table.create(clock.at(0), flow, pkt(SYN)).unwrap();
    assert_eq!(tcp_state(&first), TcpState::SynSent);
    let mut states = Vec::new();
    let mut t = 0;
    for &(dir, flags) in steps {
        t += 1;
        let key = match dir {
            Direction::Original => flow.original,
            Direction::Reply => flow.reply,
        };
        let tracked = table.track(clock.at(t), &key, pkt(flags)).unwrap();
        assert_eq!(tracked.direction, dir);
        states.push((tcp_state(&tracked), tracked.fit));
    }
    (t, states)
}

/// The flow is found one second before `deadline` and gone at it.
fn expires_at(table: &FlowTable, clock: &Clock, key: &FlowKey, deadline: u64) {
    assert!(
        table.lookup(clock.at(deadline - 1), key).is_some(),
        "alive at {}",
        deadline - 1
    );
    assert!(
        table.lookup(clock.at(deadline), key).is_none(),
        "gone at {deadline}"
    );
}

use Direction::{Original as O, Reply as R};

#[test]
fn handshake_and_orderly_close_walk_the_kernels_states_with_their_timeouts() {
    let clock = Clock { t0: Instant::now() };
    let flow = masqueraded(FlowProto::Tcp, 40000);
    let steps = [
        (R, SYNACK),
        (O, ACK),
        (O, FIN),
        (R, ACK),
        (R, FIN),
        (O, ACK),
    ];
    let expected = [
        (TcpState::SynRecv, 60),
        (TcpState::Established, 432_000),
        (TcpState::FinWait, 120),
        (TcpState::CloseWait, 60),
        (TcpState::LastAck, 30),
        (TcpState::TimeWait, 120),
    ];
    // Stop after each prefix and check the state and its timeout.
    for n in 0..=steps.len() {
        let table = FlowTable::new(Config::default());
        let (t, states) = drive(&table, &clock, flow, &steps[..n]);
        let (state, timeout) = if n == 0 {
            (TcpState::SynSent, 120)
        } else {
            expected[n - 1]
        };
        if n > 0 {
            assert_eq!(states[n - 1], (state, Fit::Valid), "step {n}");
        }
        let info = table.get(
            clock.at(t),
            table.lookup(clock.at(t), &flow.original).unwrap().0,
        );
        assert_eq!(info.unwrap().state, FlowState::Tcp(state));
        expires_at(&table, &clock, &flow.original, t + timeout);
        expires_at(&table, &clock, &flow.reply, t + timeout);
    }
}

#[test]
fn the_handshake_assures_the_flow_and_counts_both_directions() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    drive(
        &table,
        &clock,
        flow,
        &[(R, SYNACK), (O, ACK), (O, ACK), (R, ACK)],
    );
    let (id, dir) = table.lookup(clock.at(4), &flow.reply).unwrap();
    assert_eq!(dir, Direction::Reply);
    let info = table.get(clock.at(4), id).unwrap();
    assert!(info.assured);
    assert_eq!(info.packets, [3, 2]);
    assert_eq!(info.bytes, [180, 120]);
    assert_eq!(info.age, secs(4));
    assert_eq!(info.cookie, 40000);
    assert_eq!(
        info.to_string(),
        "tcp 432000 ESTABLISHED net=n1 src=172.18.0.2 dst=192.0.2.1 sport=40000 dport=80 \
         packets=3 bytes=180 net=n0 src=192.0.2.1 dst=192.0.2.2 sport=80 dport=41000 \
         packets=2 bytes=120 [ASSURED]"
    );
}

#[test]
fn fin_from_the_reply_side_and_fin_ack_combined_close() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    let (_, states) = drive(
        &table,
        &clock,
        flow,
        &[(R, SYNACK), (O, ACK), (R, FIN), (O, FIN), (R, ACK)],
    );
    let only: Vec<_> = states.iter().map(|s| s.0).collect();
    assert_eq!(
        only,
        [
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::LastAck,
            TcpState::TimeWait
        ]
    );
}

#[test]
fn rst_closes_with_ten_seconds_from_every_state() {
    let prefixes: [&[(Direction, TcpFlags)]; 6] = [
        &[],
        &[(R, SYNACK)],
        &[(R, SYNACK), (O, ACK)],
        &[(R, SYNACK), (O, ACK), (O, FIN)],
        &[(R, SYNACK), (O, ACK), (O, FIN), (R, ACK)],
        &[(R, SYNACK), (O, ACK), (O, FIN), (R, ACK), (R, FIN)],
    ];
    let clock = Clock { t0: Instant::now() };
    for prefix in prefixes {
        for dir in [O, R] {
            let table = FlowTable::new(Config::default());
            let flow = masqueraded(FlowProto::Tcp, 40000);
            let mut steps = prefix.to_vec();
            steps.push((dir, RST));
            if prefix.is_empty() && dir == R {
                continue; // the reply-first RST case has its own test
            }
            let (t, states) = drive(&table, &clock, flow, &steps);
            assert_eq!(
                states.last().unwrap().0,
                TcpState::Close,
                "{prefix:?} {dir:?}"
            );
            expires_at(&table, &clock, &flow.original, t + 10);
        }
    }
}

#[test]
fn a_reset_as_the_only_answer_removes_the_flow_at_once() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    table.create(clock.at(0), flow, pkt(SYN)).unwrap();
    let t = table.track(clock.at(1), &flow.reply, pkt(RST)).unwrap();
    assert_eq!(tcp_state(&t), TcpState::Close);
    assert_eq!(
        t.rewrite_to,
        flow.original.reversed(),
        "the RST is still translated"
    );
    assert!(table.lookup(clock.at(1), &flow.original).is_none());
    // The same tuple can start again.
    assert!(table.create(clock.at(1), flow, pkt(SYN)).is_ok());
}

#[test]
fn simultaneous_open_goes_through_syn_sent2() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    let (t, states) = drive(
        &table,
        &clock,
        flow,
        &[(R, SYN), (O, SYN), (R, SYNACK), (O, ACK)],
    );
    let only: Vec<_> = states.iter().map(|s| s.0).collect();
    assert_eq!(
        only,
        [
            TcpState::SynSent2,
            TcpState::SynSent2,
            TcpState::SynRecv,
            TcpState::Established
        ]
    );
    expires_at(&table, &clock, &flow.original, t + 432_000);
}

#[test]
fn a_syn_reopens_a_connection_in_time_wait_or_close() {
    for close in [
        &[(O, FIN), (R, ACK), (R, FIN), (O, ACK)][..],
        &[(R, RST)][..],
    ] {
        let (table, clock) = setup(Config::default());
        let flow = masqueraded(FlowProto::Tcp, 40000);
        let mut steps = vec![(R, SYNACK), (O, ACK)];
        steps.extend_from_slice(close);
        steps.push((O, SYN));
        let (t, states) = drive(&table, &clock, flow, &steps);
        assert_eq!(states.last().unwrap().0, TcpState::SynSent);
        let (id, _) = table.lookup(clock.at(t), &flow.original).unwrap();
        let info = table.get(clock.at(t), id).unwrap();
        assert_eq!(
            info.packets,
            [1, 0],
            "a reopened flow starts counting again"
        );
        assert!(!info.assured);
        expires_at(&table, &clock, &flow.original, t + 120);
    }
}

#[test]
fn invalid_segments_change_nothing_and_are_counted() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    // An ACK from the client before any SYN-ACK, a FIN in SYN_SENT, a
    // segment without flags.
    let (_, states) = drive(
        &table,
        &clock,
        flow,
        &[(O, ACK), (O, FIN), (R, FIN), (O, TcpFlags(0))],
    );
    assert!(
        states
            .iter()
            .all(|&(s, f)| s == TcpState::SynSent && f == Fit::Invalid)
    );
    assert_eq!(table.stats().invalid_packets, 4);
    // Not refreshed: the SYN at t=0 still sets the deadline.
    expires_at(&table, &clock, &flow.original, 120);
    let (id, _) = table.lookup(clock.at(5), &flow.original).unwrap();
    assert_eq!(table.get(clock.at(5), id).unwrap().packets, [1, 0]);
}

#[test]
fn ignored_segments_pass_without_refreshing() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    // A SYN retransmitted in SYN_RECV, and a SYN-ACK retransmitted after it.
    let (t, states) = drive(&table, &clock, flow, &[(R, SYNACK), (O, SYN), (R, SYNACK)]);
    assert_eq!(states[1], (TcpState::SynRecv, Fit::Ignored));
    assert_eq!(states[2], (TcpState::SynRecv, Fit::Ignored));
    assert_eq!(table.stats().invalid_packets, 0);
    // SYN_RECV's 60 s count from t=1, not from the ignored segments.
    assert_eq!(t, 3);
    expires_at(&table, &clock, &flow.original, 61);
}

#[test]
fn a_bare_ack_picks_a_connection_up_only_when_loose() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    let t = table.create(clock.at(0), flow, pkt(ACK)).unwrap();
    assert_eq!(tcp_state(&t), TcpState::Established);
    // Unanswered, it gets the 300 s "unacknowledged" timeout, not 5 days.
    expires_at(&table, &clock, &flow.original, 300);
    table.track(clock.at(10), &flow.reply, pkt(ACK)).unwrap();
    expires_at(&table, &clock, &flow.original, 10 + 432_000);

    let strict = FlowTable::new(Config {
        tcp_loose: false,
        ..Config::default()
    });
    assert_eq!(
        strict.create(clock.at(0), flow, pkt(ACK)),
        Err(Refused::NotInitial)
    );
    for flags in [SYNACK, FIN, RST, TcpFlags(0)] {
        assert_eq!(
            table.create(clock.at(0), masqueraded(FlowProto::Tcp, 1), pkt(flags)),
            Err(Refused::NotInitial),
            "{flags:?}"
        );
    }
    assert_eq!(table.stats().refused_not_initial, 4);
    assert_eq!(strict.stats().refused_not_initial, 1);
}

#[test]
fn udp_lives_30_s_and_120_s_once_answered_after_two_seconds() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Udp, 5000);
    let t = table.create(clock.at(0), flow, pkt(TcpFlags(0))).unwrap();
    assert_eq!(t.state, FlowState::Udp { replied: false });
    expires_at(&table, &clock, &flow.original, 30);
    // An answer within 2 s (a DNS exchange) keeps the short timeout.
    let r = table
        .track(clock.at(1), &flow.reply, pkt(TcpFlags(0)))
        .unwrap();
    assert_eq!(r.state, FlowState::Udp { replied: true });
    assert_eq!(r.state.to_string(), "REPLIED");
    expires_at(&table, &clock, &flow.original, 31);
    // Still active after 2 s: a stream, 120 s, assured.
    table
        .track(clock.at(3), &flow.original, pkt(TcpFlags(0)))
        .unwrap();
    expires_at(&table, &clock, &flow.original, 123);
    let (id, _) = table.lookup(clock.at(3), &flow.original).unwrap();
    assert!(table.get(clock.at(3), id).unwrap().assured);

    // Never answered: 30 s from the last packet, however long it runs.
    let lone = masqueraded(FlowProto::Udp, 6000);
    table.create(clock.at(0), lone, pkt(TcpFlags(0))).unwrap();
    table
        .track(clock.at(20), &lone.original, pkt(TcpFlags(0)))
        .unwrap();
    expires_at(&table, &clock, &lone.original, 50);
}

#[test]
fn icmp_echo_lives_30_s_from_the_last_packet() {
    let (table, clock) = setup(Config::default());
    let request = FlowKey::icmp(NET, CONTAINER.into(), REMOTE.into(), 7);
    let reply = FlowKey::icmp(UPLINK, REMOTE.into(), HOST.into(), 61000);
    let flow = NewFlow {
        original: request,
        reply,
        cookie: 0,
    };
    let t = table.create(clock.at(0), flow, pkt(TcpFlags(0))).unwrap();
    assert_eq!(t.rewrite_to, reply.reversed());
    expires_at(&table, &clock, &request, 30);
    let r = table.track(clock.at(5), &reply, pkt(TcpFlags(0))).unwrap();
    assert_eq!(r.direction, Direction::Reply);
    assert_eq!(r.state, FlowState::Icmp { replied: true });
    assert_eq!(r.rewrite_to, request.reversed());
    expires_at(&table, &clock, &reply, 35);
}

#[test]
fn custom_timeouts_are_used() {
    let (table, clock) = setup(Config {
        timeouts: Timeouts {
            udp: secs(5),
            icmp: secs(7),
            ..Timeouts::default()
        },
        ..Config::default()
    });
    let flow = masqueraded(FlowProto::Udp, 5000);
    table.create(clock.at(0), flow, pkt(TcpFlags(0))).unwrap();
    expires_at(&table, &clock, &flow.original, 5);
}

#[test]
fn both_tuples_find_the_flow_and_name_the_translation() {
    for shards in [1, 4, 256] {
        let (table, clock) = setup(Config {
            shards,
            ..Config::default()
        });
        for sport in 40000..40100 {
            let flow = masqueraded(FlowProto::Tcp, sport);
            let created = table.create(clock.at(0), flow, pkt(SYN)).unwrap();
            let (id, dir) = table.lookup(clock.at(0), &flow.original).unwrap();
            assert_eq!((id, dir), (created.id, Direction::Original));
            let (id, dir) = table.lookup(clock.at(0), &flow.reply).unwrap();
            assert_eq!((id, dir), (created.id, Direction::Reply));
            // The untranslated reverse of the original is not a key.
            assert!(
                table
                    .lookup(clock.at(0), &flow.original.reversed())
                    .is_none()
            );
            let back = table.track(clock.at(0), &flow.reply, pkt(SYNACK)).unwrap();
            assert_eq!(back.rewrite_to, flow.original.reversed());
            assert_eq!(back.cookie, u64::from(sport));
        }
        assert_eq!(table.len(), 100);
    }
}

#[test]
fn an_untranslated_flow_is_found_by_its_reverse() {
    let (table, clock) = setup(Config::default());
    let original = FlowKey::new(NET, FlowProto::Udp, CONTAINER.into(), 1, REMOTE.into(), 2);
    let t = table
        .create(
            clock.at(0),
            NewFlow {
                original,
                reply: original.reversed(),
                cookie: 0,
            },
            pkt(TcpFlags(0)),
        )
        .unwrap();
    assert_eq!(t.rewrite_to, original, "nothing to translate");
    assert_eq!(
        table.lookup(clock.at(0), &original.reversed()).unwrap().1,
        Direction::Reply
    );
}

#[test]
fn tuples_in_use_are_refused_and_expired_holders_replaced() {
    let (table, clock) = setup(Config::default());
    let flow = masqueraded(FlowProto::Tcp, 40000);
    let first = table.create(clock.at(0), flow, pkt(SYN)).unwrap();
    assert_eq!(
        table.create(clock.at(1), flow, pkt(SYN)),
        Err(Refused::Exists(first.id))
    );
    let mut other = masqueraded(FlowProto::Tcp, 40001);
    other.reply = flow.reply;
    assert_eq!(
        table.create(clock.at(1), other, pkt(SYN)),
        Err(Refused::ReplyInUse(first.id))
    );
    // A tuple used as another flow's reply cannot start a flow either.
    let reply_as_original = NewFlow {
        original: flow.reply,
        reply: masqueraded(FlowProto::Tcp, 5).reply,
        cookie: 0,
    };
    assert!(matches!(
        table.create(clock.at(1), reply_as_original, pkt(SYN)),
        Err(Refused::ReplyInUse(_) | Refused::Exists(_))
    ));
    assert_eq!(table.stats().refused_clash, 3);
    let mut same = flow;
    same.reply = flow.original;
    assert_eq!(
        table.create(clock.at(1), same, pkt(SYN)),
        Err(Refused::Inconsistent)
    );
    // After SYN_SENT's 120 s the holder is gone and the tuple is free.
    let again = table.create(clock.at(120), other, pkt(SYN)).unwrap();
    assert_ne!(again.id, first.id);
    assert_eq!(table.len(), 1);
    assert!(table.get(clock.at(120), first.id).is_none());
    assert_eq!(table.stats().expired, 1);
}

#[test]
fn the_cap_refuses_new_flows_and_spares_existing_ones() {
    let (table, clock) = setup(Config {
        capacity: 3,
        shards: 2,
        ..Config::default()
    });
    let flows: Vec<_> = (0..4)
        .map(|i| masqueraded(FlowProto::Tcp, 40000 + i))
        .collect();
    for f in &flows[..3] {
        table.create(clock.at(0), *f, pkt(SYN)).unwrap();
    }
    assert_eq!(
        table.create(clock.at(1), flows[3], pkt(SYN)),
        Err(Refused::TableFull)
    );
    assert_eq!(
        table.create(clock.at(2), flows[3], pkt(SYN)),
        Err(Refused::TableFull)
    );
    assert_eq!(table.stats().refused_full, 2);
    assert_eq!(table.len(), 3);
    // Existing flows carry on and are refreshed.
    for f in &flows[..2] {
        let t = table.track(clock.at(100), &f.reply, pkt(SYNACK)).unwrap();
        assert_eq!(tcp_state(&t), TcpState::SynRecv);
    }
    // Once one has expired (the third, SYN_SENT at t=0, 120 s), a new
    // flow gets its place even before a timer sweep.
    assert!(table.create(clock.at(120), flows[3], pkt(SYN)).is_ok());
    assert_eq!(table.len(), 3);
    assert!(table.lookup(clock.at(120), &flows[0].original).is_some());
}

#[test]
fn expiry_sweeps_are_bounded_and_cover_the_table() {
    let (table, clock) = setup(Config {
        shards: 8,
        ..Config::default()
    });
    for sport in 0..200 {
        table
            .create(
                clock.at(0),
                masqueraded(FlowProto::Udp, sport),
                pkt(TcpFlags(0)),
            )
            .unwrap();
    }
    let live = masqueraded(FlowProto::Udp, 9000);
    table.create(clock.at(29), live, pkt(TcpFlags(0))).unwrap();
    assert_eq!(table.expire(clock.at(29), 1000), 0, "nothing expired yet");
    let mut removed = 0;
    let mut calls = 0;
    while table.len() > 1 {
        let n = table.expire(clock.at(30), 16);
        assert!(n <= 16);
        removed += n;
        calls += 1;
        assert!(calls < 100, "sweeps must make progress");
    }
    assert_eq!(removed, 200);
    assert!(calls >= 200 / 16);
    assert!(table.lookup(clock.at(30), &live.original).is_some());
    assert_eq!(table.stats().expired, 200);
}

#[test]
fn purging_an_address_removes_every_flow_it_appears_in() {
    let (table, clock) = setup(Config::default());
    for sport in 1..=5 {
        table
            .create(clock.at(0), masqueraded(FlowProto::Tcp, sport), pkt(SYN))
            .unwrap();
    }
    // A published-port flow: the container appears only in the reply tuple.
    let other = Ipv4Addr::new(172, 18, 0, 9);
    let dnat = NewFlow {
        original: FlowKey::new(
            UPLINK,
            FlowProto::Tcp,
            REMOTE.into(),
            5555,
            HOST.into(),
            18080,
        ),
        reply: FlowKey::new(NET, FlowProto::Tcp, other.into(), 80, REMOTE.into(), 5555),
        cookie: 0,
    };
    table.create(clock.at(0), dnat, pkt(SYN)).unwrap();
    assert_eq!(table.purge_address(IpAddr::V4(other)), 1);
    assert!(table.lookup(clock.at(0), &dnat.original).is_none());
    assert!(table.lookup(clock.at(0), &dnat.reply).is_none());
    assert_eq!(table.len(), 5);
    assert_eq!(table.purge_address(IpAddr::V4(CONTAINER)), 5);
    assert!(table.is_empty());
    assert_eq!(table.stats().purged, 6);

    table
        .create(
            clock.at(0),
            masqueraded(FlowProto::Udp, 1),
            pkt(TcpFlags(0)),
        )
        .unwrap();
    assert_eq!(table.purge_network(NetworkId(42)), 0);
    assert_eq!(table.purge_network(NET), 1);
    let t = table
        .create(
            clock.at(0),
            masqueraded(FlowProto::Udp, 1),
            pkt(TcpFlags(0)),
        )
        .unwrap();
    assert!(table.remove(t.id));
    assert!(!table.remove(t.id), "a removed flow's id names nothing");
}

#[test]
fn snapshots_list_live_flows_through_a_filter() {
    let (table, clock) = setup(Config::default());
    for sport in [3, 1, 2] {
        table
            .create(clock.at(0), masqueraded(FlowProto::Tcp, sport), pkt(SYN))
            .unwrap();
    }
    table
        .create(
            clock.at(0),
            masqueraded(FlowProto::Udp, 4),
            pkt(TcpFlags(0)),
        )
        .unwrap();
    let all = table.snapshot(clock.at(10), |_| true);
    assert_eq!(all.len(), 4);
    let ports: Vec<_> = all.iter().map(|i| i.original.src_port).collect();
    assert_eq!(ports, [1, 2, 3, 4], "sorted by original tuple");
    assert!(all.iter().all(|i| i.age == secs(10)));
    let udp = table.snapshot(clock.at(10), |i| i.original.proto == FlowProto::Udp);
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].expires_in, secs(20));
    assert!(udp[0].to_string().starts_with("udp 20 UNREPLIED net=n1"));
    // Expired flows are not listed even before a sweep.
    assert_eq!(table.snapshot(clock.at(30), |_| true).len(), 3);
    assert!(table.snapshot(clock.at(120), |_| true).is_empty());
}

#[test]
fn any_thread_finds_flows_another_created() {
    let table = Arc::new(FlowTable::new(Config {
        shards: 16,
        ..Config::default()
    }));
    let t0 = Instant::now();
    let threads = 4u16;
    let per = 500u16;
    std::thread::scope(|s| {
        for w in 0..threads {
            let table = &table;
            s.spawn(move || {
                for i in 0..per {
                    let flow = masqueraded(FlowProto::Tcp, w * per + i);
                    table.create(t0, flow, pkt(SYN)).unwrap();
                }
            });
        }
    });
    assert_eq!(table.len(), usize::from(threads * per));
    // Each thread answers the flows the next thread created, then the
    // originals complete the handshake from yet another thread.
    std::thread::scope(|s| {
        for w in 0..threads {
            let table = &table;
            s.spawn(move || {
                let owner = (w + 1) % threads;
                for i in 0..per {
                    let flow = masqueraded(FlowProto::Tcp, owner * per + i);
                    let t = table.track(t0, &flow.reply, pkt(SYNACK)).unwrap();
                    assert_eq!(t.direction, Direction::Reply);
                }
            });
        }
    });
    std::thread::scope(|s| {
        for w in 0..threads {
            let table = &table;
            s.spawn(move || {
                let owner = (w + 2) % threads;
                for i in 0..per {
                    let flow = masqueraded(FlowProto::Tcp, owner * per + i);
                    let t = table.track(t0, &flow.original, pkt(ACK)).unwrap();
                    assert_eq!(tcp_state(&t), TcpState::Established);
                }
            });
        }
    });
    let all = table.snapshot(t0, |i| i.assured);
    assert_eq!(all.len(), usize::from(threads * per));
    assert!(all.iter().all(|i| i.packets == [2, 1]));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Create(u16, u8),
        Track(u16, bool, u8),
        Advance(u16),
        Expire(u8),
        Remove(u16),
        Purge(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..24, any::<u8>()).prop_map(|(i, f)| Op::Create(i, f)),
            (0u16..24, any::<bool>(), any::<u8>()).prop_map(|(i, r, f)| Op::Track(i, r, f)),
            (0u16..200).prop_map(Op::Advance),
            any::<u8>().prop_map(Op::Expire),
            (0u16..24).prop_map(Op::Remove),
            (0u8..4).prop_map(Op::Purge),
        ]
    }

    /// Flow `i` of a small pool: four containers, three protocols, and
    /// reply tuples that clash between some flows.
    fn pooled(i: u16) -> NewFlow {
        let proto = [FlowProto::Tcp, FlowProto::Udp, FlowProto::Icmp][usize::from(i % 3)];
        let c = Ipv4Addr::new(172, 18, 0, u8::try_from(i % 4).unwrap_or(0) + 2);
        let sport = 1000 + i / 2;
        let original = if proto == FlowProto::Icmp {
            FlowKey::icmp(NET, c.into(), REMOTE.into(), sport)
        } else {
            FlowKey::new(NET, proto, c.into(), sport, REMOTE.into(), 80)
        };
        let mut reply = FlowKey::new(UPLINK, proto, REMOTE.into(), 80, HOST.into(), sport);
        if proto == FlowProto::Icmp {
            reply.src_port = sport;
        }
        NewFlow {
            original,
            reply,
            cookie: u64::from(i),
        }
    }

    proptest! {
        #[test]
        fn random_operations_keep_the_table_consistent(ops in proptest::collection::vec(op(), 1..80)) {
            let table = FlowTable::new(Config { capacity: 10, shards: 4, ..Config::default() });
            let t0 = Instant::now();
            let mut now = t0;
            for op in ops {
                match op {
                    Op::Create(i, f) => {
                        let _ = table.create(now, pooled(i), pkt(TcpFlags(f & 0x1f)));
                    }
                    Op::Track(i, reply, f) => {
                        let flow = pooled(i);
                        let key = if reply { flow.reply } else { flow.original };
                        if let Some(t) = table.track(now, &key, pkt(TcpFlags(f & 0x1f))) {
                            let (id, dir) = table.lookup(now, &key).map_or((t.id, t.direction), |x| x);
                            prop_assert_eq!(id, t.id);
                            prop_assert_eq!(dir, t.direction);
                        }
                    }
                    Op::Advance(s) => now += secs(u64::from(s)),
                    Op::Expire(budget) => {
                        table.expire(now, usize::from(budget));
                    }
                    Op::Remove(i) => {
                        if let Some((id, _)) = table.lookup(now, &pooled(i).original) {
                            prop_assert!(table.remove(id));
                            prop_assert!(table.lookup(now, &pooled(i).original).is_none());
                        }
                    }
                    Op::Purge(c) => {
                        table.purge_address(Ipv4Addr::new(172, 18, 0, c + 2).into());
                    }
                }
                prop_assert!(table.len() <= 10);
                let live = table.snapshot(now, |_| true);
                prop_assert!(live.len() <= table.len());
                for info in &live {
                    prop_assert_eq!(table.lookup(now, &info.original), Some((info.id, Direction::Original)));
                    prop_assert_eq!(table.lookup(now, &info.reply), Some((info.id, Direction::Reply)));
                }
            }
            // A full sweep leaves exactly the live flows.
            table.expire(now, usize::MAX);
            prop_assert_eq!(table.len(), table.snapshot(now, |_| true).len());
            let later = now + secs(432_001);
            table.expire(later, usize::MAX);
            prop_assert!(table.is_empty());
        }
    }
}
