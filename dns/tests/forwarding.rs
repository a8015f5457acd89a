//! Forwarding (docker-reference §6.4): the test plays the upstream servers
//! by feeding replies into `handle_upstream`, and drives a manual clock for
//! the 4 s timeouts.

mod common;

use std::time::Duration;

use common::*;
use dns::{DialFrom, DropReason, ForwardId, Outcome, Records, ResolverConfig, Transmit, Transport};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use Behaviour::*;

const FOUR: Duration = Duration::from_secs(4);
const CLIENT_ID: u16 = 0x5151;

/// How one forwarded query ended.
#[derive(Debug)]
struct Run {
    /// The reply the client got, if any.
    reply: Option<Message>,
    /// The upstreams asked, in order.
    asked: Vec<u8>,
    /// Time from the query to the end.
    elapsed: Duration,
    /// The last outcome.
    last: Outcome,
}

/// Sends one query from A2 and lets upstream `i` behave as
/// `behaviours[i]`.
fn run(h: &mut Harness, behaviours: &[Behaviour]) -> Run {
    let q = query(CLIENT_ID, "example.com", RecordType::A);
    let start = h.now;
    let mut out = h.ask(A2, &q);
    let mut asked = Vec::new();
    loop {
        let f = match &out.send {
            Some(Transmit::Forward(f)) => f.clone(),
            Some(Transmit::Reply(r)) => {
                return Run {
                    reply: Some(parse(&r.bytes)),
                    asked,
                    elapsed: h.now - start,
                    last: out,
                };
            }
            None => {
                return Run {
                    reply: None,
                    asked,
                    elapsed: h.now - start,
                    last: out,
                };
            }
        };
        // The query goes out unchanged but for its id.
        assert_eq!(f.bytes[2..], q[2..]);
        assert_eq!(f.transport, Transport::Udp);
        assert_eq!(f.sandbox, A2);
        let std::net::IpAddr::V4(ip) = f.upstream.addr.ip() else {
            panic!("v4 upstreams only")
        };
        asked.push(ip.octets()[3]);
        let behaviour = behaviours[asked.len() - 1];
        out = if behaviour == Silent {
            assert!(h.advance(FOUR - Duration::from_millis(1)).is_empty());
            assert_eq!(
                h.resolver.poll_timeout(),
                Some(h.now + Duration::from_millis(1))
            );
            let mut fired = h.advance(Duration::from_millis(1));
            assert_eq!(fired.len(), 1);
            fired.remove(0)
        } else {
            h.upstream(&f, &upstream_reply(&f.bytes, behaviour))
        };
        assert_eq!(out.close, Some(f.id), "the finished attempt is closed");
    }
}

fn two(first: Behaviour, second: Behaviour) -> Run {
    let mut h = Harness::with(
        world_with(vec![up(1, DialFrom::Sandbox), up(2, DialFrom::Sandbox)]),
        ResolverConfig::default(),
        3,
    );
    let r = run(&mut h, &[first, second]);
    assert_eq!(h.resolver.in_flight(A2), 0, "slot released");
    assert!(h.resolver.pending().is_empty());
    assert_eq!(h.resolver.poll_timeout(), None);
    r
}

fn rcode(r: &Run) -> ResponseCode {
    let m = r.reply.as_ref().expect("a reply");
    assert_eq!(m.id, CLIENT_ID, "the client sees its own id");
    m.response_code
}

#[test]
fn servfail_then_ok_relays_ok_from_the_second() {
    let r = two(ServFail, Ok);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.reply.as_ref().unwrap().answers.len(), 1);
    assert_eq!(r.asked, [1, 2]);
}

#[test]
fn servfail_twice_relays_the_last_servfail() {
    let r = two(ServFail, ServFail);
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert_eq!(r.asked, [1, 2]);
}

#[test]
fn nxdomain_then_ok_relays_ok() {
    let r = two(NxDomain, Ok);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.asked, [1, 2]);
}

#[test]
fn authoritative_nxdomain_is_relayed_at_once() {
    let r = two(AuthNxDomain, Ok);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert!(r.reply.as_ref().unwrap().authoritative);
    assert_eq!(r.asked, [1], "#2 never asked");
}

#[test]
fn refused_then_ok_relays_ok() {
    let r = two(Refused, Ok);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.asked, [1, 2]);
}

#[test]
fn formerr_then_ok_relays_ok() {
    let r = two(FormErr, Ok);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.asked, [1, 2]);
}

#[test]
fn nxdomain_twice_relays_nxdomain() {
    let r = two(NxDomain, NxDomain);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
}

#[test]
fn silent_then_ok_relays_ok_after_four_seconds() {
    let r = two(Silent, Ok);
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.asked, [1, 2]);
    assert_eq!(r.elapsed, FOUR);
}

#[test]
fn servfail_then_silent_sends_nothing() {
    let r = two(ServFail, Silent);
    assert!(r.reply.is_none(), "a timeout clears the kept SERVFAIL");
    assert_eq!(r.last.dropped, Some(DropReason::UpstreamTimeout));
    assert_eq!(r.elapsed, FOUR);
}

#[test]
fn silent_twice_sends_nothing() {
    let r = two(Silent, Silent);
    assert!(r.reply.is_none());
    assert_eq!(r.last.dropped, Some(DropReason::UpstreamTimeout));
    assert_eq!(r.elapsed, 2 * FOUR);
}

#[test]
fn at_most_three_upstreams_are_tried() {
    let mut list = upstreams();
    list.push(up(4, DialFrom::Sandbox));
    let mut h = Harness::with(world_with(list), ResolverConfig::default(), 1);
    let r = run(&mut h, &[ServFail, ServFail, ServFail, Ok]);
    assert_eq!(r.asked, [1, 2, 3]);
    assert_eq!(rcode(&r), ResponseCode::ServFail);
}

#[test]
fn forwards_carry_transport_namespace_and_a_fresh_id() {
    let mut h = Harness::new();
    let q = query_msg(0x0102, "example.com", RecordType::TXT, true, Some(4096))
        .to_vec()
        .unwrap();
    let f = h
        .ask_over(A2, Transport::Tcp, &q)
        .forward()
        .cloned()
        .expect("forwarded");
    assert_eq!(f.transport, Transport::Tcp, "TCP in, TCP out");
    assert_eq!(f.upstream, up(1, DialFrom::Host));
    assert_eq!(f.bytes.len(), q.len());
    assert_eq!(f.bytes[2..], q[2..], "EDNS and all kept");
    let fwd = parse(&f.bytes);
    assert!(fwd.edns.is_some());

    let reply = upstream_reply(&f.bytes, ServFail);
    let next = h.upstream(&f, &reply).forward().cloned().unwrap();
    assert_eq!(next.upstream, up(2, DialFrom::Sandbox));
    assert_eq!(next.transport, Transport::Tcp);
    assert_ne!(next.id, f.id);

    // The relayed reply is the upstream's, byte for byte, but for the id.
    let ok = upstream_reply(&next.bytes, Ok);
    let out = h.upstream(&next, &ok);
    let Some(Transmit::Reply(r)) = &out.send else {
        panic!("{out:?}")
    };
    assert_eq!(r.transport, Transport::Tcp);
    assert_eq!(r.client, client(A2));
    assert_eq!(r.bytes[..2], 0x0102u16.to_be_bytes());
    assert_eq!(r.bytes[2..], ok[2..]);
}

#[test]
fn upstream_ids_come_from_the_seeded_rng() {
    let ids = |seed| {
        let mut h = Harness::with(world(), ResolverConfig::default(), seed);
        (0..8)
            .map(|i| {
                let f = h.forwarded(A2, &query(i, "example.com", RecordType::A));
                u16::from_be_bytes([f.bytes[0], f.bytes[1]])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(5), ids(5));
    assert_ne!(ids(5), ids(6));
}

#[test]
fn replies_with_another_id_are_ignored() {
    let mut h = Harness::new();
    let f = h.forwarded(A2, &query(1, "example.com", RecordType::A));
    let mut reply = upstream_reply(&f.bytes, Ok);
    reply[0] ^= 0xff;
    let out = h.upstream(&f, &reply);
    assert_eq!(out.send, None);
    assert_eq!(out.close, None, "the attempt keeps waiting");
    assert_eq!(out.dropped, Some(DropReason::UpstreamIdMismatch));
    let out = h.upstream(&f, &upstream_reply(&f.bytes, Ok));
    assert!(out.reply_bytes().is_some());
}

#[test]
fn late_replies_are_dropped() {
    let mut h = Harness::new();
    let f = h.forwarded(A2, &query(1, "example.com", RecordType::A));
    let fired = h.advance(FOUR);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].close, Some(f.id));
    let next = fired[0].forward().cloned().unwrap();
    let out = h.upstream(&f, &upstream_reply(&f.bytes, Ok));
    assert_eq!(out.send, None);
    assert_eq!(out.close, Some(f.id));
    assert_eq!(out.dropped, Some(DropReason::LateReply));
    // The current attempt still works.
    assert!(
        h.upstream(&next, &upstream_reply(&next.bytes, Ok))
            .reply_bytes()
            .is_some()
    );
    assert_eq!(h.resolver.stats().drops.get(DropReason::LateReply), 1);
}

#[test]
fn dial_errors_move_on_and_keep_an_earlier_reply() {
    let mut h = Harness::with(
        world_with(vec![up(1, DialFrom::Sandbox), up(2, DialFrom::Sandbox)]),
        ResolverConfig::default(),
        1,
    );
    let f = h.forwarded(A2, &query(CLIENT_ID, "example.com", RecordType::A));
    let next = h
        .upstream(&f, &upstream_reply(&f.bytes, ServFail))
        .forward()
        .cloned()
        .unwrap();
    let out = h.resolver.handle_upstream_error(h.now, next.id);
    assert_eq!(out.close, Some(next.id));
    let m = parse(out.reply_bytes().expect("the SERVFAIL is still relayed"));
    assert_eq!(m.response_code, ResponseCode::ServFail);
    assert_eq!(m.id, CLIENT_ID);

    // Nothing kept, nothing left: no reply.
    let f = h.forwarded(A2, &query(2, "example.com", RecordType::A));
    let next = h
        .resolver
        .handle_upstream_error(h.now, f.id)
        .forward()
        .cloned()
        .unwrap();
    let out = h.resolver.handle_upstream_error(h.now, next.id);
    assert_eq!(out.send, None);
    assert_eq!(out.dropped, Some(DropReason::NoUpstreamReply));
    assert_eq!(h.resolver.stats().upstream_errors, 3);
}

#[test]
fn garbage_from_an_upstream_counts_as_no_reply() {
    let mut h = Harness::with(
        world_with(vec![up(1, DialFrom::Sandbox)]),
        ResolverConfig::default(),
        1,
    );
    let f = h.forwarded(A2, &query(1, "example.com", RecordType::A));
    let mut junk = f.bytes[..2].to_vec();
    junk.extend_from_slice(&[0xff; 5]);
    let out = h.upstream(&f, &junk);
    assert_eq!(out.send, None);
    assert_eq!(out.dropped, Some(DropReason::NoUpstreamReply));
    assert_eq!(h.resolver.stats().upstream_malformed, 1);
}

#[test]
fn truncated_upstream_replies_are_passed_on() {
    let mut h = Harness::new();
    let f = h.forwarded(A2, &query(CLIENT_ID, "example.com", RecordType::A));
    let mut reply = upstream_reply(&f.bytes, Ok);
    reply[2] |= 0x02; // TC
    reply.truncate(reply.len() - 3); // the last record cut short
    let out = h.upstream(&f, &reply);
    let bytes = out.reply_bytes().expect("relayed");
    assert_eq!(bytes[..2], CLIENT_ID.to_be_bytes());
    assert_eq!(bytes[2..], reply[2..]);
}

#[test]
fn in_flight_forwards_are_bounded_per_sandbox() {
    let config = ResolverConfig {
        max_in_flight: 2,
        ..ResolverConfig::default()
    };
    let mut h = Harness::with(world(), config, 1);
    let f1 = h.forwarded(A2, &query(1, "a.example", RecordType::A));
    h.forwarded(A2, &query(2, "b.example", RecordType::A));
    let out = h.ask(A2, &query(3, "c.example", RecordType::A));
    assert_eq!(
        (out.send, out.dropped),
        (None, Some(DropReason::TooManyInFlight))
    );
    assert_eq!(h.resolver.in_flight(A2), 2);

    // Another sandbox has its own budget; local answers need none.
    h.forwarded(A1, &query(4, "d.example", RecordType::A));
    assert!(
        h.ask(A2, &query(5, "ref-a1", RecordType::A))
            .reply_bytes()
            .is_some()
    );

    // A finished forward frees its slot.
    let done = h.upstream(&f1, &upstream_reply(&f1.bytes, Ok));
    assert!(done.reply_bytes().is_some());
    assert_eq!(h.resolver.in_flight(A2), 1);
    h.forwarded(A2, &query(6, "e.example", RecordType::A));
    assert_eq!(h.resolver.stats().drops.get(DropReason::TooManyInFlight), 1);
}

#[test]
fn pending_forwards_are_bounded_globally_with_a_servfail() {
    let config = ResolverConfig {
        max_pending: 2,
        ..ResolverConfig::default()
    };
    let mut h = Harness::with(world(), config, 1);
    let f1 = h.forwarded(A1, &query(1, "a.example", RecordType::A));
    h.forwarded(A2, &query(2, "b.example", RecordType::A));
    // A third sandbox, far below its own cap, meets the global one.
    let out = h.ask(BOTH, &query(3, "c.example", RecordType::A));
    let reply = parse(out.reply_bytes().expect("a SERVFAIL, not silence"));
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert_eq!(reply.id, 3);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(h.resolver.stats().over_capacity, 1);
    assert_eq!(h.resolver.pending().len(), 2);
    // Local names are still answered at the cap.
    assert!(
        h.ask(A2, &query(4, "ref-a1", RecordType::A))
            .reply_bytes()
            .is_some()
    );
    // A finished forward makes room again.
    assert!(
        h.upstream(&f1, &upstream_reply(&f1.bytes, Ok))
            .reply_bytes()
            .is_some()
    );
    h.forwarded(BOTH, &query(5, "d.example", RecordType::A));
    assert_eq!(h.resolver.stats().over_capacity, 1);
}

#[test]
fn pending_queries_hold_bounded_memory() {
    let config = ResolverConfig {
        max_forward_len: 64,
        ..ResolverConfig::default()
    };
    let mut h = Harness::with(world(), config, 1);
    let long = format!("{}.example", "x".repeat(60));
    let out = h.ask(A2, &query(7, &long, RecordType::A));
    let reply = parse(out.reply_bytes().expect("SERVFAIL"));
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(h.resolver.pending().is_empty());
    assert_eq!(h.resolver.stats().over_capacity, 1);

    // A retry-worthy reply within the bound is kept for relaying; one
    // longer than the bound is not.
    for (extra, kept) in [(0, true), (4, false)] {
        let f = h.forwarded(A2, &query(8, "a.example", RecordType::A));
        let mut reply = parse(&upstream_reply(&f.bytes, ServFail));
        for i in 0..extra {
            reply.add_additional(hickory_proto::rr::Record::from_rdata(
                hickory_proto::rr::Name::from_ascii("pad.example.").unwrap(),
                60,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, i)),
            ));
        }
        let bytes = reply.to_vec().unwrap();
        assert_eq!(bytes.len() > 64, !kept);
        let next = h.upstream(&f, &bytes);
        let f2 = next.forward().expect("on to the next upstream").clone();
        let view = h.resolver.pending();
        let p = view.iter().find(|p| p.id == f2.id).unwrap();
        assert_eq!(p.has_last_reply, kept, "{} bytes", bytes.len());
    }
}

#[test]
fn refused_forwards_end_with_servfail_and_free_their_slot() {
    let mut h = Harness::new();
    let f = h.forwarded(A2, &query(9, "a.example", RecordType::A));
    assert_eq!(h.resolver.in_flight(A2), 1);
    let out = h.resolver.refuse(f.id);
    assert_eq!(out.close, Some(f.id));
    let reply = parse(out.reply_bytes().expect("SERVFAIL"));
    assert_eq!((reply.id, reply.response_code), (9, ResponseCode::ServFail));
    assert_eq!(h.resolver.in_flight(A2), 0);
    assert!(h.resolver.pending().is_empty());
    assert_eq!(h.resolver.stats().over_capacity, 1);
}

#[test]
fn sandboxes_without_upstreams_get_nothing() {
    let mut h = Harness::new();
    let out = h.ask(LONELY, &query(1, "example.com", RecordType::A));
    assert_eq!(
        (out.send, out.dropped),
        (None, Some(DropReason::NoUpstreams))
    );
    // Local names still resolve.
    assert!(
        h.ask(LONELY, &query(1, "ref-a1", RecordType::A))
            .reply_bytes()
            .is_some()
    );
}

#[test]
fn internal_networks_still_forward_from_the_sandbox() {
    let mut h = Harness::with(
        world_with(vec![up(9, DialFrom::Sandbox)]),
        ResolverConfig::default(),
        1,
    );
    let f = h.forwarded(HIDDEN, &query(1, "example.com", RecordType::A));
    assert_eq!(f.upstream.dial_from, DialFrom::Sandbox);
    assert_eq!(f.sandbox, HIDDEN);
    // Container names on the internal network still resolve.
    assert!(
        h.ask(HIDDEN, &query(1, "hidden", RecordType::A))
            .reply_bytes()
            .is_some()
    );
}

#[test]
fn timers_fire_in_deadline_order_and_views_track_pending() {
    let mut h = Harness::new();
    let a = h.forwarded(A2, &query(1, "a.example", RecordType::A));
    h.now += Duration::from_secs(1);
    let b = h.forwarded(A1, &query(2, "b.example", RecordType::A));
    assert_eq!(h.resolver.poll_timeout(), Some(h.start + FOUR));
    let pending = h.resolver.pending();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].id, a.id);
    assert_eq!(pending[0].attempt, 0);
    assert_eq!(pending[1].client, client(A1));

    // At start + 4 s only the first attempt expires.
    let fired = h.advance(Duration::from_secs(3));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].close, Some(a.id));
    assert_eq!(
        h.resolver.poll_timeout(),
        Some(h.start + Duration::from_secs(5))
    );
    let ids: Vec<ForwardId> = h.resolver.pending().iter().map(|p| p.id).collect();
    assert!(ids.contains(&b.id));
    assert_eq!(h.resolver.stats().upstream_timeouts, 1);
    assert_eq!(h.resolver.stats().upstream_attempts, 3);
    assert_eq!(h.resolver.stats().forwarded, 2);
}

#[test]
fn records_swap_keeps_forwards_in_flight() {
    let mut h = Harness::new();
    let f = h.forwarded(A2, &query(1, "example.com", RecordType::A));
    h.resolver.set_records(std::sync::Arc::new(Records::new()));
    let out = h.upstream(&f, &upstream_reply(&f.bytes, Ok));
    assert!(out.reply_bytes().is_some());
    // The new records know no sandbox.
    let out = h.ask(A2, &query(2, "example.com", RecordType::A));
    assert_eq!(out.dropped, Some(DropReason::UnknownSandbox));
}
