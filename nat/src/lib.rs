//! The virtual gateway's address translation, as a sans-IO library.
//!
//! This crate will own connection tracking, egress masquerade (SNAT that keeps
//! the container's source port when it is free, as the kernel's MASQUERADE
//! does), published ports (DNAT, port ranges, wildcard host addresses) and
//! hairpin, all rewriting frames in place with incrementally updated
//! checksums. It reproduces what Docker installs as iptables rules, without
//! iptables: time is a parameter and no socket is opened here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
