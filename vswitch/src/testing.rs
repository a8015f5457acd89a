//! A switch on in-memory ports with a manual clock: frames in, frames out,
//! no root and no devices (Open vSwitch's `netdev-dummy` idea).
//!
//! It carries out the [`Action`]s through the datapath's own [`Executor`]
//! (floods resolved to ports, per-port queues, segmentation for ports
//! without GSO, transmit counters), so a test asserts the bytes that leave
//! each port as production would send them. Only the devices differ: the
//! harness's ports record what they are given.
//!
//! Compiled for the crate's own tests and with the `testing` feature
//! (which the integration tests and benches enable), never in the daemon.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buf::PacketBuf;
use crate::datapath::{Executor, TxSink};
use crate::ids::PortId;
use crate::port::{PortCaps, SendOutcome};
use crate::switch::{Action, FdbConfig, Switch, SwitchConfig, Trace};

/// What came out of the switch for one injected frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The decision.
    pub action: Action,
    /// Each port the frame left by, in port order, with the bytes sent.
    pub out: Vec<(PortId, Vec<u8>)>,
}

impl Delivery {
    /// The ports the frame left by.
    #[must_use]
    pub fn ports(&self) -> Vec<PortId> {
        self.out.iter().map(|(p, _)| *p).collect()
    }
}

/// In-memory ports: every frame sent is recorded.
#[derive(Debug, Default)]
struct Recorder {
    out: Vec<(PortId, Vec<u8>)>,
}

impl TxSink for Recorder {
    fn send(&mut self, port: PortId, frames: &[&PacketBuf]) -> SendOutcome {
        self.out
            .extend(frames.iter().map(|f| (port, f.frame().to_vec())));
        SendOutcome::all(frames.len())
    }
}

/// A [`Switch`] with a manual clock and the datapath's executor.
#[derive(Debug)]
pub struct SwitchHarness {
    /// The switch under test.
    pub switch: Switch,
    now: Instant,
    executor: Executor,
}

impl SwitchHarness {
    /// A harness running `config` with the default FDB limits.
    #[must_use]
    pub fn new(config: SwitchConfig) -> Self {
        Self::with_fdb(config, FdbConfig::default())
    }

    /// A harness running `config` with the given FDB limits.
    #[must_use]
    pub fn with_fdb(config: SwitchConfig, fdb: FdbConfig) -> Self {
        let now = Instant::now();
        let mut switch = Switch::new(fdb);
        switch.apply_config(now, Arc::new(config));
        Self {
            switch,
            now,
            executor: Executor::new(),
        }
    }

    /// Declares what `port`'s device accepts (by default super-frames and
    /// partial checksums, as a TAP): with [`PortCaps::NONE`] the executor
    /// segments and completes checksums for it.
    pub fn set_port_caps(&mut self, port: PortId, caps: PortCaps) {
        self.executor.set_caps(port, caps);
    }

    /// Sends a batch of frames, each on its port, through the switch and
    /// the executor as one datapath batch: every frame is decided, then each
    /// port's queue is sent at once. Returns what left each port, in the
    /// order the ports were first sent to, each port's frames in order.
    pub fn inject_batch(&mut self, frames: &[(PortId, Vec<u8>)]) -> Vec<(PortId, Vec<u8>)> {
        let mut bufs: Vec<PacketBuf> = frames.iter().map(|(_, f)| Self::buf(f)).collect();
        let mut sink = Recorder::default();
        for (i, (port, _)) in frames.iter().enumerate() {
            let action = self.switch.process(self.now, *port, &mut bufs[i]);
            self.executor
                .execute(&mut self.switch, action, *port, i, &mut bufs, &mut sink);
        }
        self.executor.flush(&mut self.switch, &bufs, &mut sink);
        sink.out
    }

    /// The harness's current time.
    #[must_use]
    pub const fn now(&self) -> Instant {
        self.now
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Replaces the configuration, as the control thread would.
    pub fn reconfigure(&mut self, config: SwitchConfig) {
        self.switch.apply_config(self.now, Arc::new(config));
    }

    /// Sends `frame` into the switch on `port`.
    pub fn inject(&mut self, port: PortId, frame: &[u8]) -> Delivery {
        self.inject_buf(port, Self::buf(frame))
    }

    /// Sends a frame with offload metadata already set.
    pub fn inject_buf(&mut self, port: PortId, mut buf: PacketBuf) -> Delivery {
        let action = self.switch.process(self.now, port, &mut buf);
        self.deliver(action, port, buf)
    }

    /// Sends `frame` on `port` and records each decision.
    pub fn inject_traced(&mut self, port: PortId, frame: &[u8]) -> (Delivery, Trace) {
        let mut buf = Self::buf(frame);
        let mut trace = Trace::default();
        let action = self
            .switch
            .process_traced(self.now, port, &mut buf, &mut trace);
        (self.deliver(action, port, buf), trace)
    }

    fn buf(frame: &[u8]) -> PacketBuf {
        // Frames longer than a buffer cannot arrive from a real port either;
        // a test that builds one gets the truncated frame.
        let mut buf = PacketBuf::new();
        let len = frame.len().min(crate::buf::MAX_FRAME_LEN);
        buf.set_frame(&frame[..len])
            .expect("length was clamped to the buffer");
        buf
    }

    fn deliver(&mut self, action: Action, ingress: PortId, buf: PacketBuf) -> Delivery {
        let mut bufs = [buf];
        let mut sink = Recorder::default();
        self.executor
            .execute(&mut self.switch, action, ingress, 0, &mut bufs, &mut sink);
        self.executor.flush(&mut self.switch, &bufs, &mut sink);
        Delivery {
            action,
            out: sink.out,
        }
    }
}
