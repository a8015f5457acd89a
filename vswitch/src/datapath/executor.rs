//! The one executor: the only code that turns the switch's [`Action`]s into
//! transmissions, used by the datapath workers and by the packet-level
//! test harness (`vswitch::testing::SwitchHarness`) alike, so a
//! packet-level test runs the code that runs in production.
//!
//! Per batch: [`Executor::execute`] is called for each received frame with
//! the switch's decision and puts a reference to the frame on the transmit
//! queue of every port it leaves by (unicast, gateway reply, each flood
//! target). [`Executor::flush`] then hands each queue to its port in one
//! call ([`TxSink::send`], a `sendmmsg` for packet sockets), in the order
//! frames were queued, so frames of one flow leave in the order they came,
//! and counts what was sent and what the device refused.
//!
//! A frame is queued by reference (its index in the receive batch), so a
//! flood to eight ports copies nothing in userspace. Only a frame the
//! egress port cannot take as it is gets a buffer of its own from the
//! executor's [`BufPool`]: a GSO super-frame for a port without GSO is cut
//! into wire-sized segments with [`crate::gso`], a partial checksum for a
//! port without checksum offload is completed in a copy (the original may
//! be going, unchanged, to other ports of a flood). When the pool runs dry
//! the queues are flushed early, which returns its buffers; a frame that
//! cannot be segmented is dropped and counted as
//! [`DropReason::Unsegmentable`] on its ingress port, never silently.
//!
//! Encapsulation (the overlay) and NAT rewrites plug in here as further
//! per-port transformations of the same kind.

use std::io;

use crate::buf::{BufPool, PacketBuf};
use crate::gso::{self, Segmenter};
use crate::ids::PortId;
use crate::port::{PortCaps, SendOutcome};
use crate::switch::{Action, DropReason, Switch};

/// Where the executor sends a port's queued frames.
pub trait TxSink {
    /// Writes `frames` out of `port`, in order; says how many were taken.
    fn send(&mut self, port: PortId, frames: &[&PacketBuf]) -> SendOutcome;

    /// Hands a frame received on `ingress` to the host connector
    /// ([`Action::Host`]); `Err` with the reason when it cannot take it.
    /// By default there is no connector: the frame has no route.
    ///
    /// # Errors
    /// The drop reason to count on `ingress`.
    fn to_host(&mut self, ingress: PortId, frame: &PacketBuf) -> Result<(), DropReason> {
        let _ = (ingress, frame);
        Err(DropReason::NoRoute)
    }
}

/// Buffers the executor owns for segments and copies, per worker.
pub const POOL_BUFFERS: usize = 128;

/// Frames handed to a port in one [`TxSink::send`] call at most.
const SEND_CHUNK: usize = 64;

/// A queued transmission: a frame of the receive batch, or a buffer of the
/// executor's own (a segment or a copy).
#[derive(Debug)]
enum Tx {
    Batch(usize),
    Own(PacketBuf),
}

/// Per-port transmit queues and the buffers for segments and copies.
#[derive(Debug)]
pub struct Executor {
    queues: Vec<Vec<Tx>>,
    caps: Vec<PortCaps>,
    /// Ports with a non-empty queue, in the order they got their first
    /// frame of the batch.
    dirty: Vec<PortId>,
    pool: BufPool,
    targets: Vec<PortId>,
    /// Never sent: fills unused slots of the reference array in `flush`.
    blank: PacketBuf,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with [`POOL_BUFFERS`] buffers for segments and copies.
    #[must_use]
    pub fn new() -> Self {
        Self {
            queues: Vec::new(),
            caps: Vec::new(),
            dirty: Vec::new(),
            pool: BufPool::new(POOL_BUFFERS),
            targets: Vec::new(),
            blank: PacketBuf::new(),
        }
    }

    /// Records what `port`'s device accepts (by default everything).
    pub fn set_caps(&mut self, port: PortId, caps: PortCaps) {
        let i = port.index();
        if self.caps.len() <= i {
            self.caps.resize(i + 1, PortCaps::OFFLOADS);
        }
        self.caps[i] = caps;
    }

    fn caps(&self, port: PortId) -> PortCaps {
        self.caps.get(port.index()).copied().unwrap_or_default()
    }

    /// Carries out `action`, the switch's decision for frame `frame` of
    /// `bufs` (received on `ingress`): queues it on each port it leaves by.
    /// May flush early to `sink` when the buffer pool runs dry.
    pub fn execute<S: TxSink>(
        &mut self,
        switch: &mut Switch,
        action: Action,
        ingress: PortId,
        frame: usize,
        bufs: &[PacketBuf],
        sink: &mut S,
    ) {
        self.targets.clear();
        match action {
            Action::Output(p) | Action::Reply(p) => self.targets.push(p),
            Action::Flood {
                network,
                except,
                scope,
            } => self
                .targets
                .extend(switch.flood_targets(network, except, scope)),
            Action::Host(from) => {
                if let Some(buf) = bufs.get(frame)
                    && let Err(reason) = sink.to_host(from, buf)
                {
                    switch.record_drop(from, reason);
                }
                return;
            }
            Action::Drop(_) => return,
        }
        let Some(buf) = bufs.get(frame) else {
            return;
        };
        for t in 0..self.targets.len() {
            let port = self.targets[t];
            let caps = self.caps(port);
            if buf.vnet.is_gso() && !caps.gso {
                self.segment(switch, ingress, port, frame, bufs, sink);
            } else if buf.vnet.needs_csum() && !caps.partial_csum {
                self.complete_copy(switch, ingress, port, buf, bufs, sink);
            } else {
                self.enqueue(port, Tx::Batch(frame));
            }
        }
    }

    fn enqueue(&mut self, port: PortId, tx: Tx) {
        let i = port.index();
        if self.queues.len() <= i {
            self.queues.resize_with(i + 1, Vec::new);
        }
        if self.queues[i].is_empty() {
            self.dirty.push(port);
        }
        self.queues[i].push(tx);
    }

    /// A buffer from the pool, flushing first if there is none.
    fn take_buf<S: TxSink>(
        &mut self,
        switch: &mut Switch,
        bufs: &[PacketBuf],
        sink: &mut S,
    ) -> Option<PacketBuf> {
        if let Some(b) = self.pool.take() {
            return Some(b);
        }
        self.flush(switch, bufs, sink);
        self.pool.take()
    }

    fn segment<S: TxSink>(
        &mut self,
        switch: &mut Switch,
        ingress: PortId,
        port: PortId,
        frame: usize,
        bufs: &[PacketBuf],
        sink: &mut S,
    ) {
        let src = &bufs[frame];
        let mut segments = match Segmenter::new(src.frame(), &src.vnet) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(port = %port, error = %e, "super-frame cannot be segmented");
                switch.record_drop(ingress, DropReason::Unsegmentable);
                return;
            }
        };
        while segments.remaining() > 0 {
            let Some(mut out) = self.take_buf(switch, bufs, sink) else {
                // Every buffer is queued and a flush gave none back: only
                // possible with a pool smaller than one queue's worth.
                switch.record_tx_dropped(port);
                return;
            };
            if segments.next_into(&mut out) {
                self.enqueue(port, Tx::Own(out));
            } else {
                self.pool.give(out);
            }
        }
    }

    fn complete_copy<S: TxSink>(
        &mut self,
        switch: &mut Switch,
        ingress: PortId,
        port: PortId,
        src: &PacketBuf,
        bufs: &[PacketBuf],
        sink: &mut S,
    ) {
        let Some(mut out) = self.take_buf(switch, bufs, sink) else {
            switch.record_tx_dropped(port);
            return;
        };
        let copied = out.set_frame(src.frame()).is_ok();
        if copied && gso::complete_checksum(out.frame_mut(), &src.vnet).is_ok() {
            self.enqueue(port, Tx::Own(out));
        } else {
            switch.record_drop(ingress, DropReason::Unsegmentable);
            self.pool.give(out);
        }
    }

    /// Hands every queue to its port, counts what was sent and what was
    /// refused, and empties the queues. Frames of `bufs` may be reused
    /// afterwards.
    pub fn flush<S: TxSink>(&mut self, switch: &mut Switch, bufs: &[PacketBuf], sink: &mut S) {
        let Self {
            queues,
            dirty,
            pool,
            blank,
            ..
        } = self;
        for &port in dirty.iter() {
            let Some(queue) = queues.get_mut(port.index()) else {
                continue;
            };
            let mut refused = false;
            for chunk in queue.chunks(SEND_CHUNK) {
                let mut refs: [&PacketBuf; SEND_CHUNK] = [&*blank; SEND_CHUNK];
                let mut n = 0;
                for tx in chunk {
                    let buf = match tx {
                        Tx::Batch(i) => bufs.get(*i),
                        Tx::Own(b) => Some(b),
                    };
                    if let Some(b) = buf {
                        refs[n] = b;
                        n += 1;
                    }
                }
                if refused {
                    // The device refused a frame of this batch already:
                    // the rest would be refused too.
                    for _ in 0..n {
                        switch.record_tx_dropped(port);
                    }
                    continue;
                }
                let out = sink.send(port, &refs[..n]);
                for b in &refs[..out.sent.min(n)] {
                    switch.record_tx(port, b.len());
                }
                for _ in out.sent.min(n)..n {
                    switch.record_tx_dropped(port);
                }
                refused = out.error.is_some();
            }
            for tx in queue.drain(..) {
                if let Tx::Own(b) = tx {
                    pool.give(b);
                }
            }
        }
        dirty.clear();
    }
}

/// Whether an error from a send is the ordinary "queue full".
#[must_use]
pub fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
