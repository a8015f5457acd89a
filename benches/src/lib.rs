//! Benchmarks of vswitch: criterion benches under `benches/` (frames per
//! second through the switching core, IPAM operations) and end-to-end scripts
//! under `scripts/` that compare a running `vswitchd` with the kernel bridge.
