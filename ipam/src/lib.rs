//! Address management with Docker's default IPAM semantics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
