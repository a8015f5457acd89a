//! The `vswitchd` process: threads, the state directory, and the wiring
//! between the control plane and the datapath.

pub mod lock;
