//! Address management with Docker's default IPAM semantics, as a sans-IO
//! library.
//!
//! The daemon asks this crate which subnet a new network gets, which address
//! a new endpoint gets, and what to show in `network inspect`. The answers
//! match Docker 20.10's built-in `default` IPAM driver and the libnetwork and
//! CLI code around it (`/work/shared/docker-reference.md` §1 and §2), down to
//! the error texts. Nothing here opens a file or socket, spawns a thread or
//! reads a clock or the environment: what Docker reads from the host (the
//! resolv.conf nameservers and on-link routes that an automatic subnet must
//! avoid) is an input.
//!
//! ```text
//!                     Ipam
//!   ┌───────────────────┴────────────────────┐
//!   LocalDefault space            GlobalDefault space
//!   predefined: 172.17/16 …       predefined: 10.0.0.0/8 in /24s
//!     192.168.240/20 (31)           (65536, computed by index)
//!   cursor ──► next search        cursor ──► next search
//!   pools (never overlapping within a space)
//!     │
//!     ├─ Pool 172.18.0.0/16 "172.18.0.0/16"   (auto)
//!     │    taken: .0 (network) .1 (gateway) .2 .3 … 255.255 (broadcast)
//!     └─ Pool 10.77.0.0/24 "10.77.0.5/24"     (user subnet, kept as typed)
//!          ip-range 10.77.0.128/25, gateway .1, aux {a: .129}
//! ```
//!
//! # Layers
//!
//! - **Pools** ([`Ipam::request_pool`], [`Ipam::request_address`],
//!   [`Ipam::request_gateway`], [`Ipam::release_address`],
//!   [`Ipam::release_pool`]) are the IPAM driver API, also spoken by the IPAM
//!   plugin protocol (docker-reference §9.4).
//! - **Networks** ([`Ipam::create_network`],
//!   [`Ipam::allocate_endpoint_address`],
//!   [`Ipam::release_endpoint_address`], [`Ipam::delete_network`],
//!   [`Ipam::network_ipam_config`]) add what libnetwork and the docker CLI
//!   do around the driver: config validation, gateway and auxiliary
//!   addresses, static-address rules, inspect's view.
//! - [`mac_from_ipv4`] derives an endpoint's MAC from its address.
//!
//! # The rules, in short
//!
//! - Automatic subnets come from the predefined list, scanning from a cursor
//!   that moves past each choice, so a released subnet is not handed out
//!   again at once (§1.2). The cursor is persisted (Docker keeps it in memory
//!   only; see `space.rs` for why we differ).
//! - Inside a pool the lowest free address is handed out, and a released one
//!   is handed out again at once (§1.3). The network and broadcast addresses
//!   are never handed out; an ip-range limits dynamic addresses, its first
//!   address included; the gateway defaults to the first free address.
//!
//! # Invariants
//!
//! - Two pools of one address space never overlap.
//! - An address is never handed out twice while taken, and never if it is a
//!   network, broadcast, gateway or auxiliary address.
//! - No input (all API text is untrusted) can make the crate panic; a stored
//!   state is checked on restore and refused when it breaks an invariant.
//!
//! # Persistence
//!
//! [`Ipam`] serializes with serde to
//! `{"local": {"predefined": [...], "cursor": n}, "global": {...},
//! "next_pool_id": n, "pools": [...]}`, each pool carrying its taken
//! addresses as runs of host numbers; a JSON round trip restores everything,
//! cursors included. [`NetworkIpam`] serializes too, for the daemon's network
//! records.
//!
//! # IPv6
//!
//! Not implemented; IPv6 input is refused with
//! [`IpamError::Ipv6NotSupported`]. The shapes leave room for it: address
//! maps count host numbers in `u64` (Docker caps IPv6 pools at 2^64), errors
//! carry the IP version, and address spaces are independent of the family.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod allocator;
mod defaults;
mod error;
mod mac;
mod network;
mod ordinals;
mod parse;
mod pool;
mod space;

pub use allocator::{Ipam, PoolGrant, PoolRequest};
pub use defaults::{DefaultAddressPool, PredefinedPools};
pub use error::IpamError;
pub use mac::{DOCKER_MAC_PREFIX, format_mac, mac_from_ipv4};
pub use network::{EndpointAddress, NetworkIpam, NetworkIpamConfig, NetworkIpamRequest};
pub use pool::{IpRange, Pool, PoolId, PoolInfo};
pub use space::AddressSpace;
