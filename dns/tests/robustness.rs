//! Nothing from the wire may panic: random and mutated bytes into every
//! input, and random text into the resolv.conf readers.

mod common;

use common::*;
use dns::{DnsSettings, ResolvConf, Transport, resolv_conf};
use hickory_proto::rr::RecordType;
use proptest::prelude::*;

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

fn sandbox() -> impl Strategy<Value = dns::SandboxId> {
    prop_oneof![
        Just(A1),
        Just(A2),
        Just(BOTH),
        Just(NDOTS),
        Just(LONELY),
        Just(dns::SandboxId(MANY0)),
        Just(dns::SandboxId(4242)),
    ]
}

/// Valid queries of every interesting kind, to mutate.
fn seed_query() -> impl Strategy<Value = Vec<u8>> {
    let names = prop_oneof![
        Just("ref-a1"),
        Just("many"),
        Just("dup.other"),
        Just("2.0.1.10.in-addr.arpa."),
        Just("example.com"),
        Just("single"),
    ];
    let types = prop_oneof![
        Just(RecordType::A),
        Just(RecordType::AAAA),
        Just(RecordType::MX),
        Just(RecordType::PTR),
        Just(RecordType::TXT),
    ];
    (
        any::<u16>(),
        names,
        types,
        any::<bool>(),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(|(id, name, t, rd, edns)| query_msg(id, name, t, rd, edns).to_vec().unwrap())
}

/// Lets every attempt still waiting time out.
fn drain(h: &mut Harness) {
    while let Some(at) = h.resolver.poll_timeout() {
        let _ = h.advance(at - h.now);
    }
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, value) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = value;
        }
    }
    let keep = bytes.len().saturating_sub(cut % 4);
    bytes.truncate(keep);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_queries_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        t in transport(),
        s in sandbox(),
    ) {
        let mut h = Harness::new();
        let _ = h.ask_over(s, t, &bytes);
    }

    #[test]
    fn mutated_queries_never_panic(
        q in seed_query(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        t in transport(),
        s in sandbox(),
    ) {
        let mut h = Harness::new();
        let out = h.ask_over(s, t, &mutate(q, &edits, cut));
        // Whatever we send back is a DNS message hickory can read.
        if let Some(bytes) = out.reply_bytes() {
            prop_assert!(hickory_proto::op::Message::from_vec(bytes).is_ok());
        }
    }

    #[test]
    fn random_upstream_replies_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        keep_id in any::<bool>(),
        t in transport(),
    ) {
        let mut h = Harness::new();
        let f = h.ask_over(A2, t, &query(1, "example.com", RecordType::A))
            .forward()
            .cloned()
            .expect("forwarded");
        let mut bytes = bytes;
        if keep_id && bytes.len() >= 2 {
            bytes[..2].copy_from_slice(&f.bytes[..2]);
        }
        let _ = h.upstream(&f, &bytes);
        let _ = h.upstream(&f, &bytes);
        drain(&mut h);
        prop_assert_eq!(h.resolver.in_flight(A2), 0);
    }

    #[test]
    fn mutated_upstream_replies_never_panic(
        behaviour in prop_oneof![
            Just(Behaviour::Ok),
            Just(Behaviour::ServFail),
            Just(Behaviour::AuthNxDomain),
        ],
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut h = Harness::new();
        let f = h.forwarded(A2, &query(1, "example.com", RecordType::A));
        let mut reply = mutate(upstream_reply(&f.bytes, behaviour), &edits, cut);
        if reply.len() >= 2 {
            reply[..2].copy_from_slice(&f.bytes[..2]);
        }
        let _ = h.upstream(&f, &reply);
        drain(&mut h);
        prop_assert_eq!(h.resolver.in_flight(A2), 0);
        prop_assert!(h.resolver.pending().is_empty());
    }

    #[test]
    fn resolv_conf_text_never_panics(
        text in concat!(
            "(nameserver|search|options|#| |\t|\n|127\\.0\\.0\\.1|::1|:|%|",
            "[0-9a-f.]{1,6}|ndots:-?[0-9]{1,3}|\u{e9})*"
        ),
        servers in proptest::collection::vec(any::<std::net::IpAddr>(), 0..3),
        ipv6 in any::<bool>(),
    ) {
        let _ = ResolvConf::parse(&text);
        let _ = resolv_conf::filter(&text, ipv6);
        let settings = DnsSettings { servers, ..DnsSettings::default() };
        let _ = resolv_conf::default_bridge(&text, &settings, ipv6);
        if let Ok(r) = resolv_conf::user_network(&text, &DnsSettings::default()) {
            prop_assert!(r.upstreams.len() <= 3);
            prop_assert!(r.contents.contains("nameserver 127.0.0.11\n"));
        }
    }
}
