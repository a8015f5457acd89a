//! The virtual gateway's external connectivity, as a sans-IO library:
//! what Docker gets from iptables, conntrack and its port allocator
//! (docker-reference §3.2–§5), as data structures and pure functions.
//!
//! ```text
//!   control thread                                  datapath workers (any of them)
//!   ──────────────                                  ─────────────────────────────
//!   `-p` text ──► spec::PortSpec ──► bindings()     frame ──► wire::parse_frame ──► Ipv4Meta
//!                                      │                           │ key(network)
//!   ip_local_port_range ──► alloc::PortAllocator    policy::from_container / to_container
//!                                      │ publish(…, &mut dyn Binder)      │
//!                                      ▼                           ▼
//!                            [PublishedPort] ──► PortMap ──Arc──► lookup(host ip, proto, port)
//!                                                                  │
//!                              Arc<FlowTable> ◄── track(now, key) / create(now, NewFlow)
//!   expire(now, budget) ─────────────┤                             │ Tracked { rewrite_to, … }
//!   purge_address(ip) ───────────────┤                             ▼
//!   snapshot(now, filter) ───────────┘                   rewrite::rewrite_to(packet, …)
//!                                                        (incremental checksums)
//! ```
//!
//! - [`spec`]: `-p`, `--expose` and `-P`, with Docker's syntax and error
//!   texts.
//! - [`alloc`]: Docker's host-port allocator: per address and protocol,
//!   cursors, ranges, retries, all-or-nothing publication through the
//!   daemon's [`Binder`].
//! - [`conntrack`]: the flow table: both tuples of every flow findable from
//!   any thread, nf_conntrack's TCP states and timeouts, UDP and ICMP
//!   timeouts, expiry driven by `now`, a capacity cap, per-flow counters,
//!   purges and snapshots.
//! - [`policy`]: internal networks, inter-network isolation, masquerade
//!   off, unpublished containers.
//! - [`portmap`]: published ports as a lookup for the packet path.
//! - [`engine`]: one frame through all of it ([`process`]), the path a
//!   datapath worker and the fuzz target run.
//! - [`icmp_error`]: ICMP errors about translated flows, translated back
//!   (quoted header included), so path-MTU discovery works through NAT.
//! - [`wire`] and [`mod@rewrite`]: parse once, rewrite addresses and ports in
//!   place with RFC 1624 updates of complete and partial checksums.
//!
//! # Invariants
//!
//! - No I/O, no threads, no clock reads: time comes in as `now`, and a
//!   host's `bind` comes in through [`Binder`].
//! - Nothing from the wire can panic: malformed packets are a
//!   [`WireError`], flows that cannot be made are a [`Refused`] with a
//!   counter, and no existing flow is disturbed by either.
//! - The per-packet path ([`FlowTable::track`], [`rewrite()`]) allocates
//!   nothing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
pub mod conntrack;
pub mod engine;
pub mod flow;
pub mod icmp_error;
pub mod policy;
pub mod portmap;
pub mod rewrite;
pub mod spec;
pub mod tcp;
pub mod wire;

pub use alloc::{
    AllocError, BindError, Binder, PortAllocator, PublishError, PublishedPort, publish, unpublish,
};
pub use conntrack::{
    Config, ConnId, Fit, FlowInfo, FlowState, FlowTable, NewFlow, PacketInfo, Refused, Stats,
    Timeouts, Tracked,
};
pub use engine::{Verdict, masquerade, process};
pub use flow::{Direction, FlowKey, FlowProto, NetworkId};
pub use policy::{Decision, Destination, NetworkPolicy, PolicyDrop, Source};
pub use portmap::{PortMap, Target};
pub use rewrite::{L4Checksum, rewrite, rewrite_to};
pub use spec::{PortBinding, PortRange, PortSpec, Proto, SpecError};
pub use tcp::{TcpFlags, TcpState};
pub use wire::{Ipv4Meta, WireError};
