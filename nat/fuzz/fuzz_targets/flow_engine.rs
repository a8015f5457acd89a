//! Frames from the wire into the flow engine: parse, track or create,
//! rewrite. Nothing may panic, and the table must stay within its cap and
//! agree with its own snapshot.
//!
//! Input: one byte of options (bit 0: partial checksums, bit 1: the frame
//! arrives on the uplink), then frames, each prefixed by its length byte.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nat::{Config, FlowTable, L4Checksum, NetworkId, PortRange, masquerade, process};

fuzz_target!(|data: &[u8]| {
    let Some((&opts, mut rest)) = data.split_first() else {
        return;
    };
    let table = FlowTable::new(Config {
        capacity: 16,
        shards: 4,
        ..Config::default()
    });
    let mode = if opts & 1 == 0 {
        L4Checksum::Complete
    } else {
        L4Checksum::Partial
    };
    let host = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let ports = PortRange::new(32768, 60999).unwrap_or(PortRange::single(32768));
    let t0 = Instant::now();
    let mut step = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let mut frame = tail[..n].to_vec();
        rest = &tail[n..];
        step += 1;
        let now = t0 + Duration::from_secs(step * 7);
        let network = if opts & 2 == 0 { NetworkId(1) } else { NetworkId(0) };
        let _ = process(&table, now, network, &mut frame, mode, |key, attempt| {
            Some(masquerade(key, NetworkId(0), host, ports, attempt))
        });
        if step % 4 == 0 {
            table.expire(now, 8);
        }
    }
    assert!(table.len() <= 16);
    let now = t0 + Duration::from_secs(step * 7);
    assert!(table.snapshot(now, |_| true).len() <= table.len());
});
