//! What the resolver answers itself (docker-reference §6.3, §6.5), checked
//! on the wire: queries built with hickory-proto, replies parsed back.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use common::*;
use dns::{DropReason, Family, Lookup, ResolverConfig, SandboxId, Transport};
use hickory_proto::op::{MessageType, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

fn addrs(m: &hickory_proto::op::Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn container_name_gets_an_a_record_with_dockers_header() {
    let mut h = Harness::new();
    let m = h.answer(A2, &query(0x1234, "ref-a1", RecordType::A));
    assert_eq!(m.id, 0x1234);
    assert_eq!(m.message_type, MessageType::Response);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.recursion_available, "RA set");
    assert!(m.recursion_desired, "RD copied");
    assert!(!m.authoritative, "AA never set");
    assert!(!m.truncation);
    assert!(m.edns.is_none());
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "ref-a1.");
    assert_eq!(m.answers.len(), 1);
    let rec = &m.answers[0];
    assert_eq!(rec.ttl, 600);
    assert_eq!(rec.dns_class, DNSClass::IN);
    assert_eq!(rec.name.to_ascii(), "ref-a1.");
    assert_eq!(addrs(&m), [v4("10.1.0.2")]);
    assert!(m.authorities.is_empty() && m.additionals.is_empty());
    assert_eq!(h.resolver.stats().local_replies, 1);
}

#[test]
fn rd_is_copied_and_edns_is_not_echoed() {
    let mut h = Harness::new();
    let q = query_msg(9, "ref-a1", RecordType::A, false, Some(1232));
    let m = h.answer(A2, &q.to_vec().unwrap());
    assert!(!m.recursion_desired, "+nord gives qr ra");
    assert!(m.recursion_available);
    assert!(m.edns.is_none(), "no OPT in local answers");
}

#[test]
fn names_match_in_any_case_and_the_owner_echoes_the_query() {
    let mut h = Harness::new();
    for name in ["REF-A1", "Ref-A1.", "ref-a1."] {
        let m = h.answer(A2, &query(1, name, RecordType::A));
        assert_eq!(addrs(&m), [v4("10.1.0.2")], "{name}");
        let owner = m.answers[0].name.to_ascii();
        assert_eq!(owner.trim_end_matches('.'), name.trim_end_matches('.'));
        assert_eq!(m.queries[0].name().to_ascii(), owner);
    }
}

#[test]
fn aliases_short_id_and_hostname_resolve() {
    let mut h = Harness::new();
    for name in ["second", "77774d1307d0", "MyHost"] {
        let m = h.answer(A2, &query(1, name, RecordType::A));
        assert_eq!(addrs(&m), [v4("10.1.0.2")], "{name}");
    }
}

#[test]
fn name_dot_network_resolves_on_that_network_only() {
    let mut h = Harness::new();
    let m = h.answer(BOTH, &query(1, "ref-a1.ref-dnet", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.1.0.2")]);
    assert_eq!(m.answers[0].name.to_ascii(), "ref-a1.ref-dnet.");

    // `dup` is on both networks of BOTH; the suffix picks one.
    let m = h.answer(BOTH, &query(1, "dup.ref-dnet.", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.1.0.2")]);
    let m = h.answer(BOTH, &query(1, "dup.other", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.3.0.3")]);

    // ref-a1 is not on `other`, and Docker compares network names
    // case-sensitively: both are forwarded.
    h.forwarded(BOTH, &query(1, "ref-a1.other", RecordType::A));
    h.forwarded(BOTH, &query(1, "ref-a1.REF-DNET", RecordType::A));
}

#[test]
fn the_first_network_in_lookup_order_wins() {
    // BOTH is on `other` and `ref-dnet`; `dup` is on both. Docker sorts a
    // sandbox's endpoints by network name, so `other` answers alone.
    let mut h = Harness::new();
    let m = h.answer(BOTH, &query(1, "dup", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.3.0.3")]);
}

#[test]
fn only_networks_the_requester_is_on_are_searched() {
    let mut h = Harness::new();
    // OUTSIDER is only on `other`: ref-a1 is forwarded, unchanged.
    let q = query(0x4242, "ref-a1", RecordType::A);
    let f = h.forwarded(OUTSIDER, &q);
    assert_eq!(f.bytes[2..], q[2..]);
    // BOTH shares ref-dnet with ref-a1.
    let m = h.answer(BOTH, &q);
    assert_eq!(addrs(&m), [v4("10.1.0.2")]);
    // Names on the IPv6 network are invisible from ref-dnet.
    h.forwarded(A1, &query(1, "rh-v6b", RecordType::A));
}

#[test]
fn shared_alias_returns_every_address() {
    let mut h = Harness::new();
    let m = h.answer(BOTH, &query(1, "shared", RecordType::A));
    let got: HashSet<_> = addrs(&m).into_iter().collect();
    assert_eq!(got, HashSet::from([v4("10.1.0.2"), v4("10.1.0.3")]));
}

#[test]
fn answers_are_shuffled_per_query_and_reproducible_per_seed() {
    let orders = |seed| {
        let mut h = Harness::with(world(), ResolverConfig::default(), seed);
        (0..20)
            .map(|i| addrs(&h.answer(SandboxId(MANY0), &query(i, "many", RecordType::A))))
            .collect::<Vec<_>>()
    };
    let a = orders(1);
    let distinct: HashSet<_> = a.iter().cloned().collect();
    assert!(distinct.len() > 1, "the order changes between queries");
    for order in &a {
        let set: HashSet<_> = order.iter().collect();
        assert_eq!(set.len(), order.len(), "no duplicates");
    }
    assert_eq!(a, orders(1), "same seed, same orders");
    assert_ne!(a, orders(2), "another seed, other orders");
}

#[test]
fn aaaa_for_a_known_name_on_an_ipv4_network_is_empty_noerror() {
    let mut h = Harness::new();
    let out = h.ask(A2, &query(5, "ref-a1", RecordType::AAAA));
    let m = parse(out.reply_bytes().expect("answered, not forwarded"));
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(m.recursion_available);
    // Unknown names are forwarded.
    h.forwarded(A2, &query(5, "nope", RecordType::AAAA));
}

#[test]
fn aaaa_on_an_ipv6_network_gives_the_v6_address() {
    let mut records = world();
    records
        .add_sandbox(SandboxId(50), dns::Sandbox::default())
        .unwrap();
    records
        .add_endpoint(dns::Endpoint {
            sandbox: SandboxId(50),
            network: V6NET,
            name: "peer".into(),
            aliases: vec![],
            short_id: "000000000050".into(),
            hostname: None,
            ipv4: [10, 2, 0, 3].into(),
            ipv6: Some("fd00::3".parse().unwrap()),
        })
        .unwrap();
    let mut h = Harness::with(records, ResolverConfig::default(), 1);
    let m = h.answer(SandboxId(50), &query(1, "rh-v6b", RecordType::AAAA));
    assert_eq!(addrs(&m), ["fd00::2".parse::<IpAddr>().unwrap()]);
    assert_eq!(m.answers[0].ttl, 600);
    let m = h.answer(SandboxId(50), &query(1, "rh-v6b", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.2.0.2")]);
}

#[test]
fn mx_for_a_known_name_is_empty_noerror_and_other_types_are_forwarded() {
    let mut h = Harness::new();
    let m = h.answer(A2, &query(1, "ref-a1", RecordType::MX));
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    h.forwarded(A2, &query(1, "unknown", RecordType::MX));
    for t in [
        RecordType::TXT,
        RecordType::SRV,
        RecordType::ANY,
        RecordType::CNAME,
    ] {
        h.forwarded(A2, &query(1, "ref-a1", t));
    }
}

#[test]
fn ptr_for_an_endpoint_address_gives_name_dot_network() {
    let mut h = Harness::new();
    let m = h.answer(A2, &query(3, "2.0.1.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(m.answers.len(), 1);
    let rec = &m.answers[0];
    assert_eq!(rec.ttl, 600);
    assert_eq!(rec.name.to_ascii(), "2.0.1.10.in-addr.arpa.");
    match &rec.data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "ref-a1.ref-dnet."),
        other => panic!("{other:?}"),
    }
    assert!(m.recursion_available && !m.authoritative);

    // IPv6, from a sandbox on the IPv6 network.
    let mut records = world();
    records
        .add_sandbox(SandboxId(50), dns::Sandbox::default())
        .unwrap();
    records
        .add_endpoint(dns::Endpoint {
            sandbox: SandboxId(50),
            network: V6NET,
            name: "peer".into(),
            aliases: vec![],
            short_id: "000000000050".into(),
            hostname: None,
            ipv4: [10, 2, 0, 3].into(),
            ipv6: None,
        })
        .unwrap();
    let mut h6 = Harness::with(records, ResolverConfig::default(), 1);
    let name = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let m = h6.answer(SandboxId(50), &query(3, name, RecordType::PTR));
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "rh-v6b.rh-v6."),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ptr_outside_shared_networks_is_forwarded() {
    let mut h = Harness::new();
    // 10.3.0.2 is on `other`, which A2 is not on.
    h.forwarded(A2, &query(3, "2.0.3.10.in-addr.arpa.", RecordType::PTR));
    h.forwarded(A2, &query(3, "9.9.9.9.in-addr.arpa.", RecordType::PTR));
}

#[test]
fn malformed_ptr_names_get_no_reply() {
    let mut h = Harness::new();
    for name in ["example.com.", "in-addr.arpa.", "2.0.1.10.IN-ADDR.ARPA."] {
        let out = h.ask(A2, &query(3, name, RecordType::PTR));
        assert_eq!(out.send, None, "{name}");
        assert_eq!(out.dropped, Some(DropReason::MalformedPtr));
    }
    assert_eq!(h.resolver.stats().drops.get(DropReason::MalformedPtr), 3);
}

#[test]
fn link_aliases_resolve_for_the_linking_sandbox_only() {
    let mut h = Harness::new();
    let m = h.answer(A1, &query(1, "lnk", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.1.0.3")]);
    h.forwarded(A2, &query(1, "lnk", RecordType::A));
    h.forwarded(A1, &query(1, "LNK", RecordType::A));
}

#[test]
fn ndots_rule_applies_only_when_the_user_set_ndots() {
    let mut h = Harness::new();
    for t in [RecordType::A, RecordType::AAAA] {
        let out = h.ask(NDOTS, &query(1, "single", t));
        let m = parse(out.reply_bytes().expect("answered, not forwarded"));
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }
    h.forwarded(NDOTS, &query(1, "single", RecordType::MX));
    h.forwarded(NDOTS, &query(1, "ok.two", RecordType::A));
    let m = h.answer(NDOTS, &query(1, "ref-a1", RecordType::A));
    assert_eq!(addrs(&m), [v4("10.1.0.2")]);
    h.forwarded(A2, &query(1, "single", RecordType::A));
}

/// docker-reference §6.5: 26 containers on alias `many`.
#[test]
fn truncation_matches_dockers_observed_sizes() {
    let mut h = Harness::new();
    let asker = SandboxId(MANY0);

    let out = h.ask(asker, &query(1, "many", RecordType::A));
    let bytes = out.reply_bytes().unwrap();
    assert_eq!(bytes.len(), 502);
    let m = parse(bytes);
    assert_eq!(m.answers.len(), 24);
    assert!(m.truncation && m.recursion_available && m.recursion_desired);

    let q = query_msg(2, "many", RecordType::A, true, Some(4096));
    let out = h.ask(asker, &q.to_vec().unwrap());
    let bytes = out.reply_bytes().unwrap();
    assert_eq!(bytes.len(), 542);
    let m = parse(bytes);
    assert_eq!(m.answers.len(), 26);
    assert!(!m.truncation);
    assert!(m.edns.is_none());

    let out = h.ask_over(asker, Transport::Tcp, &query(3, "many", RecordType::A));
    let bytes = out.reply_bytes().unwrap();
    assert_eq!(bytes.len(), 542);
    assert!(!parse(bytes).truncation);

    // A smaller advertised size than 512 still gets 512.
    let q = query_msg(4, "many", RecordType::A, true, Some(100));
    let out = h.ask(asker, &q.to_vec().unwrap());
    assert_eq!(out.reply_bytes().unwrap().len(), 502);
}

#[test]
fn queries_without_question_runts_and_responses_get_no_reply() {
    let mut h = Harness::new();
    let mut empty = query_msg(1, "x", RecordType::A, true, None);
    empty.queries.clear();
    let out = h.ask(A2, &empty.to_vec().unwrap());
    assert_eq!(
        (out.send, out.dropped),
        (None, Some(DropReason::NoQuestion))
    );

    let out = h.ask(A2, &[0x12, 0x34, 0x01]);
    assert_eq!((out.send, out.dropped), (None, Some(DropReason::Runt)));

    let mut resp = query_msg(1, "ref-a1", RecordType::A, true, None);
    resp.metadata.message_type = MessageType::Response;
    let out = h.ask(A2, &resp.to_vec().unwrap());
    assert_eq!((out.send, out.dropped), (None, Some(DropReason::NotAQuery)));
}

#[test]
fn unparseable_queries_get_formerr() {
    let mut h = Harness::new();
    let mut bytes = query(0xbeef, "ref-a1", RecordType::A);
    bytes[11] = 1; // one additional record that is not there
    let out = h.ask(A2, &bytes);
    let m = parse(out.reply_bytes().expect("FORMERR"));
    assert_eq!(m.id, 0xbeef);
    assert_eq!(m.response_code, ResponseCode::FormErr);
    assert!(m.recursion_desired && !m.recursion_available);
    assert_eq!(h.resolver.stats().formerr, 1);
}

#[test]
fn unknown_sandboxes_are_dropped() {
    let mut h = Harness::new();
    let out = h.ask(SandboxId(999), &query(1, "ref-a1", RecordType::A));
    assert_eq!(out.dropped, Some(DropReason::UnknownSandbox));
}

#[test]
fn lookups_and_views_show_what_the_resolver_sees() {
    let records = world();
    assert_eq!(
        records.lookup(BOTH, "REF-A1.", Family::V4),
        Lookup::Found(vec![v4("10.1.0.2")])
    );
    assert_eq!(records.lookup(BOTH, "ref-a1", Family::V6), Lookup::Ipv6Miss);
    assert_eq!(
        records.lookup(OUTSIDER, "ref-a1", Family::V4),
        Lookup::NotFound
    );
    let view = records.view_for(BOTH).unwrap();
    let names: Vec<_> = view
        .networks
        .iter()
        .map(|n| n.network.name.as_str())
        .collect();
    assert_eq!(names, ["other", "ref-dnet"]);
    let refnet = &view.networks[1];
    let a1 = refnet.names.iter().find(|n| n.name == "myhost").unwrap();
    assert_eq!(a1.addrs, [v4("10.1.0.2")]);
    assert!(
        refnet
            .reverse
            .contains(&(v4("10.1.0.2"), "ref-a1.ref-dnet.".to_string()))
    );
    let all = records.view();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].network.name, "many-net");
}
