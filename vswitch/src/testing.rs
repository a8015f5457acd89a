//! A switch on in-memory ports with a manual clock: frames in, frames out,
//! no root and no devices (Open vSwitch's `netdev-dummy` idea).
//!
//! It performs the [`Action`]s exactly as the datapath does (floods resolved
//! to ports, transmit counters updated), so a test asserts the bytes that
//! leave each port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buf::PacketBuf;
use crate::ids::PortId;
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

/// A [`Switch`] with a manual clock.
#[derive(Debug)]
pub struct SwitchHarness {
    /// The switch under test.
    pub switch: Switch,
    now: Instant,
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
        Self { switch, now }
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
        self.deliver(action, &buf)
    }

    /// Sends `frame` on `port` and records each decision.
    pub fn inject_traced(&mut self, port: PortId, frame: &[u8]) -> (Delivery, Trace) {
        let mut buf = Self::buf(frame);
        let mut trace = Trace::default();
        let action = self
            .switch
            .process_traced(self.now, port, &mut buf, &mut trace);
        (self.deliver(action, &buf), trace)
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

    fn deliver(&mut self, action: Action, buf: &PacketBuf) -> Delivery {
        let targets: Vec<PortId> = match action {
            Action::Output(p) | Action::Reply(p) => vec![p],
            Action::Flood {
                network,
                except,
                scope,
            } => self.switch.flood_targets(network, except, scope).collect(),
            Action::Drop(_) => Vec::new(),
        };
        let out = targets
            .into_iter()
            .map(|p| {
                self.switch.record_tx(p, buf.len());
                (p, buf.frame().to_vec())
            })
            .collect();
        Delivery { action, out }
    }
}
