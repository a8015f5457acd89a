//! vswitch: a userspace virtual switch for containers.
//!
//! This crate holds the switching core, and will hold the daemon around it.
//! The core is pure: [`switch::Switch::process`] takes a frame, the port it
//! came from and the time, and returns what to do with it; it opens no file
//! descriptor and reads no clock, so every rule is tested frame by frame
//! without root (`testing::SwitchHarness`, with the `testing` feature).
//!
//! - [`buf`]: packet buffers with headroom for tunnel headers and room for
//!   GSO super-frames, recycled through a pool.
//! - [`ids`]: typed port, network and MAC identifiers.
//! - [`publish`]: published ports' host sockets and the sink that serves
//!   them.
//! - [`switch`]: ingress checks, MAC learning, the gateway, flooding.
//! - `testing` (feature `testing`): a switch with in-memory ports, a manual
//!   clock and the datapath's executor.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod buf;
pub mod cluster;
pub mod connector;
pub mod control;
pub mod csum;
pub mod daemon;
pub mod datapath;
pub mod dnsd;
pub mod docker;
pub mod events;
pub mod gro;
pub mod gso;
pub mod ids;
pub mod metrics;
pub mod netconf;
pub mod netns;
pub mod overlay;
pub mod port;
pub mod publish;
pub mod switch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;
