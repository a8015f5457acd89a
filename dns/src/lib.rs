//! The embedded DNS server of vswitch, as a sans-IO library: it answers
//! exactly as Docker's server at 127.0.0.11 does (docker-reference §6).
//!
//! ```text
//!   control thread                          dns thread (vswitch)
//!   ──────────────                          ────────────────────
//!   model ──► Records ──Arc──► set_records ─┐
//!   host resolv.conf ──► resolv_conf ──┐    │
//!        (text in, text out)           │    ▼
//!                    upstreams, ndots ─┘  Resolver
//!                                           │ handle_query(now, client, transport, bytes)
//!   127.0.0.11 socket in a sandbox ─────────┤ handle_upstream(now, id, bytes)
//!   upstream socket (host or sandbox netns) ┤ handle_upstream_error(now, id)
//!   timer at poll_timeout() ────────────────┘ handle_timeout(now)
//!                                           │
//!                                           ▼ Outcome { send, close, dropped }
//!                         Reply to the client │ Forward to an upstream, dialled
//!                                             │ from the namespace it names
//! ```
//!
//! - [`Records`] holds, per network, the names of every endpoint
//!   (container name, network aliases, 12-hex short id, hostname) and its
//!   addresses, plus each sandbox's upstreams and ndots setting. It is
//!   built whole by the daemon and swapped in whole, as aardvark-dns does.
//! - [`Resolver`] answers from it: A/AAAA, implicit MX and PTR for names on
//!   networks the asking sandbox is attached to, and forwards everything
//!   else to up to three upstreams, 4 s each, over the query's own
//!   transport. It never sends anything itself: every input returns an
//!   [`Outcome`] saying what to send where, and which upstream socket is
//!   done with.
//! - [`resolv_conf`] reads a host resolv.conf and writes a sandbox's, and
//!   says which upstreams to use and which namespace each is dialled from.
//!
//! # Invariants
//!
//! - No I/O, no threads, no clock reads: time comes in as `now`, and
//!   randomness (answer shuffling, upstream transaction ids) from the RNG
//!   the caller gives the resolver, so a seeded run is reproducible.
//! - Nothing from the wire can panic. A query that cannot be parsed gets
//!   FORMERR; where Docker sends nothing (a runt, a query with no question,
//!   a PTR name outside the reverse zones, an upstream that timed out last)
//!   nothing is sent and a [`DropReason`] is counted in [`Stats`].
//! - Messages are read and written by hickory-proto; local replies are
//!   written uncompressed, so their sizes, and where UDP truncation cuts
//!   them, match Docker's (§6.5).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
mod name;
pub mod records;
pub mod resolv_conf;
pub mod resolver;
pub mod stats;
pub mod tcp;
pub mod upstream;
mod wire;

pub use ids::{ForwardId, NetworkId, SandboxId};
pub use records::{
    DnsError, Endpoint, Family, Link, Lookup, NameView, Network, NetworkView, Records, Sandbox,
    SandboxView,
};
pub use resolv_conf::{DnsSettings, ResolvConf, ResolvConfError, SandboxResolvConf};
pub use resolver::{
    Client, Forward, Outcome, PendingView, Reply, Resolver, ResolverConfig, Transmit, Transport,
};
pub use stats::{DropCounters, DropReason, Stats};
pub use upstream::{DialFrom, Upstream};
