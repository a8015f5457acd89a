//! Shared fixtures for the packet-level tests: a small Docker-like world,
//! query builders, a fake upstream and a manual clock.
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns::{
    Client, DialFrom, Endpoint, Forward, Network, NetworkId, Outcome, Records, Resolver,
    ResolverConfig, Sandbox, SandboxId, Transport, Upstream,
};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `ref-dnet`: IPv4 only.
pub const REF: NetworkId = NetworkId(1);
/// `rh-v6`: IPv6 enabled.
pub const V6NET: NetworkId = NetworkId(2);
/// `other`: IPv4 only, sorts before `ref-dnet`.
pub const OTHER: NetworkId = NetworkId(3);
/// `many-net`: 26 endpoints share the alias `many`.
pub const MANY: NetworkId = NetworkId(4);
/// `secret`: internal.
pub const INTERNAL: NetworkId = NetworkId(5);

/// `ref-a1` on ref-dnet: aliases `shared`, `second`, `dup`; short id
/// 77774d1307d0; hostname `myhost`; link alias `lnk` → ref-a2.
pub const A1: SandboxId = SandboxId(1);
/// `ref-a2` on ref-dnet: alias `shared`.
pub const A2: SandboxId = SandboxId(2);
/// `rh-v6b` on rh-v6 (10.2.0.2, fd00::2).
pub const V6B: SandboxId = SandboxId(3);
/// `outsider` on other only.
pub const OUTSIDER: SandboxId = SandboxId(4);
/// `both` on other (alias `dup`) and ref-dnet.
pub const BOTH: SandboxId = SandboxId(5);
/// `dotted` on ref-dnet, with ndots set by the user.
pub const NDOTS: SandboxId = SandboxId(6);
/// `hidden` on the internal network only.
pub const HIDDEN: SandboxId = SandboxId(7);
/// `lonely` on ref-dnet, without upstreams.
pub const LONELY: SandboxId = SandboxId(8);
/// First of the 26 `many` members; the others follow.
pub const MANY0: u32 = 100;

pub fn up(last: u8, dial_from: DialFrom) -> Upstream {
    Upstream {
        addr: SocketAddr::new(Ipv4Addr::new(192, 0, 2, last).into(), 53),
        dial_from,
    }
}

/// The default upstreams: 192.0.2.1 from the host (a loopback server of the
/// host file, say), 192.0.2.2 and .3 from the sandbox.
pub fn upstreams() -> Vec<Upstream> {
    vec![
        up(1, DialFrom::Host),
        up(2, DialFrom::Sandbox),
        up(3, DialFrom::Sandbox),
    ]
}

fn ep(sandbox: SandboxId, network: NetworkId, name: &str, v4: [u8; 4]) -> Endpoint {
    Endpoint {
        sandbox,
        network,
        name: name.into(),
        aliases: vec![],
        short_id: format!("{:012x}", sandbox.0),
        hostname: None,
        ipv4: v4.into(),
        ipv6: None,
    }
}

pub fn world_with(upstream_list: Vec<Upstream>) -> Records {
    let mut r = Records::new();
    let net = |name: &str, ipv6, internal| Network {
        name: name.into(),
        internal,
        ipv6,
    };
    r.add_network(REF, net("ref-dnet", false, false)).unwrap();
    r.add_network(V6NET, net("rh-v6", true, false)).unwrap();
    r.add_network(OTHER, net("other", false, false)).unwrap();
    r.add_network(MANY, net("many-net", false, false)).unwrap();
    r.add_network(INTERNAL, net("secret", false, true)).unwrap();

    let sandbox = |links| Sandbox {
        upstreams: upstream_list.clone(),
        ndots_set: false,
        links,
    };
    r.add_sandbox(
        A1,
        sandbox(vec![dns::Link {
            network: REF,
            alias: "lnk".into(),
            target: "ref-a2".into(),
        }]),
    )
    .unwrap();
    for s in [A2, V6B, OUTSIDER, BOTH, HIDDEN] {
        r.add_sandbox(s, sandbox(vec![])).unwrap();
    }
    r.add_sandbox(
        NDOTS,
        Sandbox {
            ndots_set: true,
            ..sandbox(vec![])
        },
    )
    .unwrap();
    r.add_sandbox(LONELY, Sandbox::default()).unwrap();

    r.add_endpoint(Endpoint {
        aliases: vec!["shared".into(), "second".into(), "dup".into()],
        short_id: "77774d1307d0".into(),
        hostname: Some("myhost".into()),
        ..ep(A1, REF, "ref-a1", [10, 1, 0, 2])
    })
    .unwrap();
    r.add_endpoint(Endpoint {
        aliases: vec!["shared".into()],
        ..ep(A2, REF, "ref-a2", [10, 1, 0, 3])
    })
    .unwrap();
    r.add_endpoint(Endpoint {
        ipv6: Some("fd00::2".parse::<Ipv6Addr>().unwrap()),
        ..ep(V6B, V6NET, "rh-v6b", [10, 2, 0, 2])
    })
    .unwrap();
    r.add_endpoint(ep(OUTSIDER, OTHER, "outsider", [10, 3, 0, 2]))
        .unwrap();
    r.add_endpoint(Endpoint {
        aliases: vec!["dup".into()],
        ..ep(BOTH, OTHER, "both", [10, 3, 0, 3])
    })
    .unwrap();
    r.add_endpoint(ep(BOTH, REF, "both", [10, 1, 0, 5]))
        .unwrap();
    r.add_endpoint(ep(NDOTS, REF, "dotted", [10, 1, 0, 6]))
        .unwrap();
    r.add_endpoint(ep(HIDDEN, INTERNAL, "hidden", [10, 5, 0, 2]))
        .unwrap();
    r.add_endpoint(ep(LONELY, REF, "lonely", [10, 1, 0, 7]))
        .unwrap();

    for i in 0..26u8 {
        let s = SandboxId(MANY0 + u32::from(i));
        r.add_sandbox(s, sandbox(vec![])).unwrap();
        r.add_endpoint(Endpoint {
            aliases: vec!["many".into()],
            ..ep(s, MANY, &format!("many-{i}"), [10, 4, 0, 10 + i])
        })
        .unwrap();
    }
    r
}

pub fn world() -> Records {
    world_with(upstreams())
}

pub fn client(sandbox: SandboxId) -> Client {
    Client {
        sandbox,
        addr: SocketAddr::new(Ipv4Addr::new(10, 9, 9, 9).into(), 40000),
    }
}

/// A query message, recursion desired unless `rd` is false.
pub fn query_msg(id: u16, name: &str, rtype: RecordType, rd: bool, edns: Option<u16>) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

pub fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    query_msg(id, name, rtype, true, None).to_vec().unwrap()
}

pub fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("reply parses")
}

/// A resolver over `world()` with a manual clock.
pub struct Harness {
    pub resolver: Resolver<StdRng>,
    pub start: Instant,
    pub now: Instant,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(world(), ResolverConfig::default(), 7)
    }

    pub fn with(records: Records, config: ResolverConfig, seed: u64) -> Self {
        let start = Instant::now();
        Self {
            resolver: Resolver::new(Arc::new(records), config, StdRng::seed_from_u64(seed)),
            start,
            now: start,
        }
    }

    pub fn ask_over(&mut self, sandbox: SandboxId, transport: Transport, bytes: &[u8]) -> Outcome {
        self.resolver
            .handle_query(self.now, client(sandbox), transport, bytes)
    }

    pub fn ask(&mut self, sandbox: SandboxId, bytes: &[u8]) -> Outcome {
        self.ask_over(sandbox, Transport::Udp, bytes)
    }

    /// Asks and expects a local reply; returns it parsed.
    pub fn answer(&mut self, sandbox: SandboxId, bytes: &[u8]) -> Message {
        let out = self.ask(sandbox, bytes);
        let reply = out
            .reply_bytes()
            .unwrap_or_else(|| panic!("expected a reply, got {out:?}"));
        parse(reply)
    }

    /// Asks and expects the query to be forwarded.
    pub fn forwarded(&mut self, sandbox: SandboxId, bytes: &[u8]) -> Forward {
        let out = self.ask(sandbox, bytes);
        out.forward()
            .unwrap_or_else(|| panic!("expected a forward, got {out:?}"))
            .clone()
    }

    /// Moves the clock on and runs the timers.
    pub fn advance(&mut self, by: Duration) -> Vec<Outcome> {
        self.now += by;
        self.resolver.handle_timeout(self.now)
    }

    pub fn upstream(&mut self, forward: &Forward, bytes: &[u8]) -> Outcome {
        self.resolver.handle_upstream(self.now, forward.id, bytes)
    }
}

/// What a fake upstream does with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// NOERROR with an A record 93.184.216.34.
    Ok,
    ServFail,
    /// Non-authoritative NXDOMAIN.
    NxDomain,
    /// Authoritative NXDOMAIN.
    AuthNxDomain,
    Refused,
    FormErr,
    /// Never answers.
    Silent,
}

/// The fake upstream's answer to the forwarded `bytes` (same id, same
/// question).
pub fn upstream_reply(bytes: &[u8], behaviour: Behaviour) -> Vec<u8> {
    let q = Message::from_vec(bytes).expect("forwarded query parses");
    let mut r = Message::new(q.id, MessageType::Response, q.op_code);
    r.metadata.recursion_desired = q.recursion_desired;
    r.metadata.recursion_available = true;
    r.queries = q.queries.clone();
    r.metadata.response_code = match behaviour {
        Behaviour::Ok | Behaviour::Silent => ResponseCode::NoError,
        Behaviour::ServFail => ResponseCode::ServFail,
        Behaviour::NxDomain | Behaviour::AuthNxDomain => ResponseCode::NXDomain,
        Behaviour::Refused => ResponseCode::Refused,
        Behaviour::FormErr => ResponseCode::FormErr,
    };
    r.metadata.authoritative = behaviour == Behaviour::AuthNxDomain;
    if behaviour == Behaviour::Ok {
        r.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            300,
            RData::A(A::new(93, 184, 216, 34)),
        ));
    }
    r.to_vec().unwrap()
}
