//! Workspace-level end-to-end tests: a real `vswitchd`, network namespaces
//! created and removed by each test, and real clients (ping, dig, iperf3).
//!
//! They arrive with the daemon; the packet-level tests of each crate live
//! beside that crate and need no root.
