//! The datapath thread: reads frames from port devices, runs them through
//! [`Switch::process`](crate::switch::Switch::process), and carries out the
//! decision.
//!
//! One worker owns the switch, its FDB and counters, and every port's file
//! descriptor; nothing else touches them, so the per-frame path takes no
//! lock. Other threads talk to it through a [`Mailbox`]: configuration
//! snapshots, ports to add or remove and inspection queries are applied
//! between batches.

mod mailbox;
mod worker;

pub use mailbox::{Command, Mailbox};
pub use worker::{BATCH, Worker};
