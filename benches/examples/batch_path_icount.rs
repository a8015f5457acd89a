//! Runs the switch bench's batch path (64-byte known unicast, 64k learned
//! MACs, batches of `datapath::BATCH`) for a given number of batches, for
//! counting instructions per frame without a timer:
//!
//! ```sh
//! cargo build --profile bench -p vswitch-benches --example batch_path_icount
//! for n in 0 2000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/batch_path_icount $n 2>&1 | grep refs; done
//! ```
//!
//! (the difference of the two totals over 2000 × 64 frames is the batch
//! path's cost per frame, the setup subtracted). Instruction counts do not
//! depend on what else the host runs, which time does.

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut path = common::BatchPath::new(vswitch::datapath::BATCH);
    for _ in 0..rounds {
        path.round(false);
    }
    std::hint::black_box(path.sw.stats().port(vswitch::ids::PortId(0)));
}
