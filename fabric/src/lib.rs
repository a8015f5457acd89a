//! The VXLAN overlay between hosts, as a sans-IO library.
//!
//! Layers, bottom up:
//!
//! - [`wire`]: the RFC 7348 header as a checked view, and the [`Vni`] type.
//! - [`encap`]: the outer Ethernet/IPv4/UDP/VXLAN header, prebuilt once per
//!   remote VTEP ([`encap::OuterTemplate`]) and written into the headroom in
//!   front of the inner frame ([`buf::Headroom`]), the source port from
//!   [`flow`]'s hash of the inner flow.
//! - [`decap`]: the receive checks, each failure a counted
//!   [`decap::DropReason`].
//! - [`vtep`]: the VTEP table per VNI (remote MAC → VTEP, IP → MAC, flood
//!   list, source ownership), fed by [`peers::PeerEvent`]s from etcd or the
//!   static [`peer_file`]; [`arp`] answers ARP from it.
//! - [`mtu`]: what is left of the underlay MTU.
//!
//! Like the other core crates it opens no socket, spawns no thread and
//! reads no clock: bytes and time in, bytes and decisions out. The daemon
//! owns the UDP socket, the etcd client and the timers.
//!
//! The wire format is the kernel's: a Linux `vxlan` device with the same
//! VNI and port takes what this crate sends, and the defaults (UDP
//! checksum zero, DF clear, TTL 64, source ports 32768..61000, port 4789)
//! are the kernel's defaults.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arp;
pub mod buf;
pub mod decap;
pub mod encap;
pub mod flow;
pub mod mtu;
pub mod peer_file;
pub mod peers;
pub mod vtep;
pub mod wire;

pub use buf::{Headroom, SliceBuf};
pub use decap::{Decapsulated, Decapsulator, DropReason};
pub use encap::{EncapConfig, Encapsulator, OuterTemplate};
pub use peers::{PeerEvent, RemoteEndpoint};
pub use smoltcp::wire::EthernetAddress;
pub use vtep::VtepTable;
pub use wire::Vni;
