//! The embedded DNS server's logic, as a sans-IO library.
//!
//! This crate will own the per-network record store and the resolver that
//! answers queries the way Docker's embedded server at 127.0.0.11 does, and
//! forwards the rest to upstream servers. It parses and writes messages with
//! hickory-proto and takes time as a parameter; the sockets live in `vswitch`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
