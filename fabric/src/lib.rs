//! The VXLAN overlay between hosts, as a sans-IO library.
//!
//! This crate will own the VXLAN wire format (RFC 7348), the outer-header
//! template built once per remote VTEP, the VTEP table (which MAC lives behind
//! which host, and the flood list per VNI), and the peer sources that feed it
//! (a static peer file, and events from an etcd watch whose I/O lives in
//! `vswitch`). Like the other core crates it opens no socket and reads no
//! clock: bytes and time in, bytes and decisions out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
