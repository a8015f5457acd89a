//! What the switch bench and the instruction-count driver
//! (`examples/batch_path_icount.rs`) share: the 64k-MAC known-unicast setup
//! and one round of the batch path, so both measure the same code.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use etherparse::PacketBuilder;
use vswitch::buf::PacketBuf;
use vswitch::datapath::{Executor, TxSink};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::port::{RxBatch, SendOutcome};
use vswitch::switch::{FdbConfig, NetworkConfig, PortConfig, PortRole, Switch, SwitchConfig};

/// The network every bench port is on.
pub(crate) const NET: NetworkId = NetworkId(0);

/// Distinct frames per bench, stored back to back (about 250 KB).
pub(crate) const FRAMES: usize = 4096;

/// A learned host's MAC.
pub(crate) fn host_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x01, b[0], b[1], b[2], b[3]])
}

/// A 64-byte frame (60 plus the FCS the wire adds): UDP between two hosts.
pub(crate) fn frame64(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .udp(1024, 1024);
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 18])
        .expect("writing to a Vec cannot fail");
    assert_eq!(out.len(), 60);
    out
}

/// A switch with `config` applied.
pub(crate) fn switch_with(config: SwitchConfig, fdb: FdbConfig) -> (Switch, Instant) {
    let now = Instant::now();
    let mut sw = Switch::new(fdb);
    sw.apply_config(now, Arc::new(config));
    (sw, now)
}

/// Known unicast: 65,536 learned MACs spread over 1,024 uplink ports, and
/// [`FRAMES`] frames each from one random learned host to another.
pub(crate) fn known_unicast_setup() -> (Switch, Instant, Vec<(PortId, Vec<u8>)>) {
    const PORTS: u32 = 1024;
    const MACS: u32 = 65_536;
    let ports = (0..PORTS).map(|p| PortConfig {
        id: PortId(p),
        network: NET,
        role: PortRole::Uplink,
    });
    let config = SwitchConfig::new(1, [NetworkConfig::new(NET)], ports).unwrap();
    let fdb = FdbConfig {
        max_entries: MACS as usize,
        max_per_port: 1024,
        ..FdbConfig::default()
    };
    let (mut sw, now) = switch_with(config, fdb);
    let mut buf = PacketBuf::new();
    for m in 0..MACS {
        buf.set_frame(&frame64(
            host_mac(m),
            MacAddr::BROADCAST,
            Ipv4Addr::from(m),
            Ipv4Addr::BROADCAST,
        ))
        .unwrap();
        let _ = sw.process(now, PortId(m % PORTS), &mut buf);
    }
    assert_eq!(sw.fdb().learned_len(), MACS as usize);

    // A pseudo-random walk over pairs, so lookups miss the CPU caches as
    // they would with real traffic across 64k hosts.
    let mut x: u32 = 0x9e37_79b9;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x % MACS
    };
    let frames: Vec<(PortId, Vec<u8>)> = (0..FRAMES)
        .map(|_| {
            let (s, mut d) = (next(), next());
            if d % PORTS == s % PORTS {
                d = (d + 1) % MACS;
            }
            let f = frame64(
                host_mac(s),
                host_mac(d),
                Ipv4Addr::from(s),
                Ipv4Addr::from(d),
            );
            (PortId(s % PORTS), f)
        })
        .collect();
    (sw, now, frames)
}

/// Discards what the executor sends, as a device that takes everything.
pub(crate) struct NullSink;

impl TxSink for NullSink {
    fn send(&mut self, _port: PortId, frames: &[&PacketBuf]) -> SendOutcome {
        black_box(frames);
        SendOutcome::all(frames.len())
    }
}

/// The batch path's state between rounds.
pub(crate) struct BatchPath {
    /// The switch, with 64k learned MACs.
    pub(crate) sw: Switch,
    /// The instant every frame is decided at.
    pub(crate) now: Instant,
    /// The frames received in turn.
    pub(crate) frames: Vec<(PortId, Vec<u8>)>,
    /// The receive batch.
    pub(crate) batch: RxBatch,
    /// The executor.
    pub(crate) exec: Executor,
    /// Where the executor sends.
    pub(crate) sink: NullSink,
    /// The next frame to receive.
    pub(crate) next: usize,
}

impl BatchPath {
    /// The 64k-MAC setup with a batch of `batch` buffers, learning shared
    /// as the datapath's workers share it.
    pub(crate) fn new(batch: usize) -> Self {
        let (mut sw, now, frames) = known_unicast_setup();
        sw.share_learning(true);
        Self {
            sw,
            now,
            frames,
            batch: RxBatch::new(batch),
            exec: Executor::new(),
            sink: NullSink,
            next: 0,
        }
    }

    /// One batch as the datapath runs it: receive into the batch's pooled
    /// buffers, (with `prefetch`, load each frame's FDB entries first, as
    /// the datapath used to,) decide each frame, queue it with the executor, publish the batch's
    /// FDB changes, flush the queues.
    #[inline]
    pub(crate) fn round(&mut self, prefetch: bool) {
        let Self {
            sw,
            now,
            frames,
            batch,
            exec,
            sink,
            next,
        } = self;
        batch.clear();
        while let Some(buf) = batch.next_slot() {
            let (port, frame) = &frames[*next % FRAMES];
            *next += 1;
            buf.rx_space()[..frame.len()].copy_from_slice(frame);
            buf.set_received(frame.len());
            batch.commit(*port);
        }
        let (bufs, ingress) = batch.frames_mut();
        if prefetch {
            for (buf, &port) in bufs.iter().zip(ingress) {
                sw.prefetch(port, buf);
            }
        }
        for k in 0..bufs.len() {
            let action = sw.process(*now, ingress[k], &mut bufs[k]);
            exec.execute(sw, action, ingress[k], k, bufs, sink);
        }
        black_box(sw.drain_updates().count());
        exec.flush(sw, batch.frames(), sink);
    }
}
