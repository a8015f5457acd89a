//! The embedded DNS resolver on hostile input: client queries over UDP and
//! TCP (through the TCP framing, bytes split at arbitrary points),
//! upstream replies to pending forwards (carrying the transaction id the
//! forward used, so they get past the id check), upstream errors and
//! timeouts.
//!
//! Input: records `[op][len: 2][bytes]`.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns::{
    Client, DialFrom, Endpoint, ForwardId, Network, NetworkId, Outcome, Records, Resolver,
    ResolverConfig, Sandbox, SandboxId, Transport, Upstream,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn records() -> Records {
    let mut r = Records::new();
    for (id, name, ipv6, internal) in [(1, "net-a", false, false), (2, "net-b", true, true)] {
        r.add_network(
            NetworkId(id),
            Network {
                name: name.into(),
                internal,
                ipv6,
            },
        )
        .expect("network");
    }
    let up = |last| Upstream {
        addr: SocketAddr::new(Ipv4Addr::new(192, 0, 2, last).into(), 53),
        dial_from: DialFrom::Sandbox,
    };
    for s in 1..=3 {
        r.add_sandbox(
            SandboxId(s),
            Sandbox {
                upstreams: vec![up(1), up(2), up(3)],
                ndots_set: s == 3,
                links: vec![],
            },
        )
        .expect("sandbox");
        r.add_endpoint(Endpoint {
            sandbox: SandboxId(s),
            network: NetworkId(1 + s % 2),
            name: format!("c{s}"),
            aliases: vec!["shared".into()],
            short_id: format!("{s:012x}"),
            hostname: None,
            ipv4: Ipv4Addr::new(10, 0, 0, 1 + u8::try_from(s).unwrap_or(0)),
            ipv6: s.eq(&2).then(|| "fd00::2".parse().expect("v6")),
        })
        .expect("endpoint");
    }
    r
}

fn note(outcome: &Outcome, pending: &mut Vec<(ForwardId, u16)>) {
    if let Some(id) = outcome.close {
        pending.retain(|(p, _)| *p != id);
    }
    if let Some(f) = outcome.forward() {
        let txid = f
            .bytes
            .first_chunk::<2>()
            .map_or(0, |b| u16::from_be_bytes(*b));
        pending.push((f.id, txid));
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let config = ResolverConfig {
        max_in_flight: 8,
        ..ResolverConfig::default()
    };
    let mut resolver = Resolver::new(Arc::new(records()), config, StdRng::seed_from_u64(1));
    let mut pending: Vec<(ForwardId, u16)> = Vec::new();
    let mut tcp_input = Vec::new();
    let mut now = start;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let client = Client {
            sandbox: SandboxId(u32::from(op >> 5)),
            addr: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 40_000),
        };
        let outcomes = match op & 0x7 {
            0 => vec![resolver.handle_query(now, client, Transport::Udp, bytes)],
            1 => {
                tcp_input.extend_from_slice(bytes);
                let mut out = Vec::new();
                while let Some(message) = dns::tcp::take_frame(&mut tcp_input) {
                    out.push(resolver.handle_query(now, client, Transport::Tcp, &message));
                }
                if tcp_input.len() > dns::tcp::MAX_MESSAGE + 2 {
                    tcp_input.clear();
                }
                out
            }
            2 | 3 => {
                let Some(&(id, txid)) = pending.get(usize::from(op >> 3) % pending.len().max(1))
                else {
                    continue;
                };
                let mut reply = bytes.to_vec();
                if op & 0x7 == 2 {
                    if let Some(head) = reply.first_chunk_mut::<2>() {
                        *head = txid.to_be_bytes();
                    }
                }
                vec![resolver.handle_upstream(now, id, &reply)]
            }
            4 => {
                let Some(&(id, _)) = pending.first() else {
                    continue;
                };
                vec![resolver.handle_upstream_error(now, id)]
            }
            5 => {
                now += Duration::from_millis(u64::from(len as u16) * 4);
                resolver.handle_timeout(now)
            }
            _ => {
                let mut out = Vec::new();
                let _ = dns::tcp::push_frame(&mut out, bytes, 4096);
                if let Some(back) = dns::tcp::take_frame(&mut out) {
                    assert_eq!(back, bytes);
                }
                Vec::new()
            }
        };
        for outcome in &outcomes {
            note(outcome, &mut pending);
        }
        // Bounded memory per resolver: never more pending than the caps.
        assert!(resolver.pending().len() <= 3 * 8);
    }
});
