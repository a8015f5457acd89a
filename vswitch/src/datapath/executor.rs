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
//! flood to eight ports copies nothing in userspace. The queues of all
//! ports share one array of entries, each linked to the next for its port
//! (see [`Executor`]): with a thousand ports, queueing touches one entry
//! and one queue head, and a flush walks only the ports that have frames. Only a frame the
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
    /// The connector may take the buffer itself and leave an empty one of
    /// its own in its place, so the frame is not copied. By default there
    /// is no connector: the frame has no route.
    ///
    /// # Errors
    /// The drop reason to count on `ingress`.
    fn to_host(&mut self, ingress: PortId, frame: &mut PacketBuf) -> Result<(), DropReason> {
        let _ = (ingress, frame);
        Err(DropReason::NoRoute)
    }
}

/// Buffers the executor owns for segments and copies, per worker.
pub const POOL_BUFFERS: usize = 128;

/// Frames handed to a port in one [`TxSink::send`] call at most.
const SEND_CHUNK: usize = 64;

/// The end of a port's queue.
const NIL: u32 = u32::MAX;

/// A queued transmission: frame `i` of the receive batch, or buffer `i` of
/// the executor's own (a segment or a copy).
#[derive(Clone, Copy, Debug)]
enum Tx {
    Batch(usize),
    Own(usize),
}

/// One queued transmission and the next one for the same port.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tx: Tx,
    next: u32,
}

/// A port's queue: the first and last of its entries, `NIL` when empty.
#[derive(Clone, Copy, Debug)]
struct Queue {
    head: u32,
    tail: u32,
}

impl Queue {
    const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
    };
}

/// Per-port transmit queues and the buffers for segments and copies.
///
/// Every port's queue lives in one array of entries, in the order they were
/// queued, each linked to the next entry for its port; a port's queue is
/// its first and last entry. Queueing a frame writes one entry and one
/// queue head, whichever of a thousand ports it goes to, and a flush visits
/// only the ports that got frames; nothing grows per frame once the arrays
/// have reached a batch's size.
#[derive(Debug)]
pub struct Executor {
    entries: Vec<Entry>,
    queues: Vec<Queue>,
    caps: Vec<PortCaps>,
    /// Ports with a non-empty queue, in the order they got their first
    /// frame of the batch.
    dirty: Vec<PortId>,
    /// Segments and copies queued in this batch ([`Tx::Own`]).
    owned: Vec<PacketBuf>,
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
            entries: Vec::with_capacity(2 * SEND_CHUNK),
            queues: Vec::new(),
            caps: Vec::new(),
            dirty: Vec::with_capacity(SEND_CHUNK),
            owned: Vec::with_capacity(POOL_BUFFERS),
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
        bufs: &mut [PacketBuf],
        sink: &mut S,
    ) {
        if let Action::Host(from) = action {
            // Handed over whole (nothing else refers to this slot); the
            // slot may now hold an empty buffer.
            if let Some(buf) = bufs.get_mut(frame)
                && let Err(reason) = sink.to_host(from, buf)
            {
                switch.record_drop(from, reason);
            }
            return;
        }
        let bufs: &[PacketBuf] = bufs;
        let Some(buf) = bufs.get(frame) else {
            return;
        };
        // A frame with no offload pending goes out as it is to any port:
        // no capability to look up.
        let plain = !buf.vnet.is_gso() && !buf.vnet.needs_csum();
        if plain && let Action::Output(p) | Action::Reply(p) = action {
            self.enqueue(p, Tx::Batch(frame));
            return;
        }
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
            Action::Host(_) | Action::Drop(_) => return,
        }
        for t in 0..self.targets.len() {
            let port = self.targets[t];
            if plain {
                self.enqueue(port, Tx::Batch(frame));
                continue;
            }
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

    #[inline]
    fn enqueue(&mut self, port: PortId, tx: Tx) {
        let i = port.index();
        if self.queues.len() <= i {
            self.queues.resize(i + 1, Queue::EMPTY);
        }
        let Ok(at) = u32::try_from(self.entries.len()) else {
            // Four billion frames queued in one batch cannot happen: the
            // batch and the pool bound what is queued.
            return;
        };
        self.entries.push(Entry { tx, next: NIL });
        let q = &mut self.queues[i];
        if q.head == NIL {
            q.head = at;
            self.dirty.push(port);
        } else if let Some(last) = self.entries.get_mut(q.tail as usize) {
            last.next = at;
        }
        q.tail = at;
    }

    /// Queues one of the executor's own buffers on `port`.
    fn enqueue_own(&mut self, port: PortId, buf: PacketBuf) {
        self.owned.push(buf);
        self.enqueue(port, Tx::Own(self.owned.len() - 1));
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
                self.enqueue_own(port, out);
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
            self.enqueue_own(port, out);
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
            entries,
            queues,
            dirty,
            owned,
            pool,
            blank,
            ..
        } = self;
        for &port in dirty.iter() {
            let Some(queue) = queues.get_mut(port.index()) else {
                continue;
            };
            let (head, tail) = (queue.head, queue.tail);
            *queue = Queue::EMPTY;
            let buf_of = |entry: &Entry| match entry.tx {
                Tx::Batch(i) => bufs.get(i),
                Tx::Own(i) => owned.get(i),
            };
            if head == tail {
                // One frame for this port, the common case when a batch
                // spreads over many ports: no reference array to fill.
                if let Some(b) = entries.get(head as usize).and_then(buf_of) {
                    let out = sink.send(port, core::slice::from_ref(&b));
                    count(switch, port, &[b], &out);
                }
                continue;
            }
            let mut next = head;
            let mut refused = false;
            while next != NIL {
                let mut refs: [&PacketBuf; SEND_CHUNK] = [&*blank; SEND_CHUNK];
                let mut n = 0;
                while n < SEND_CHUNK
                    && let Some(entry) = entries.get(next as usize)
                {
                    next = entry.next;
                    if let Some(b) = buf_of(entry) {
                        refs[n] = b;
                        n += 1;
                    }
                }
                if entries.get(next as usize).is_none() {
                    next = NIL;
                }
                if refused {
                    // The device refused a frame of this batch already:
                    // the rest would be refused too.
                    switch.record_tx_dropped_batch(port, n);
                    continue;
                }
                let out = sink.send(port, &refs[..n]);
                count(switch, port, &refs[..n], &out);
                refused = out.error.is_some();
            }
        }
        dirty.clear();
        entries.clear();
        for b in owned.drain(..) {
            pool.give(b);
        }
    }
}

/// Counts the frames of `frames` that `out` says were taken as sent to
/// `port` and the rest as refused, once per call rather than per frame.
#[inline]
fn count(switch: &mut Switch, port: PortId, frames: &[&PacketBuf], out: &SendOutcome) {
    let (sent, bytes) = if out.later == 0 {
        let sent = out.sent.min(frames.len());
        (sent, frames[..sent].iter().map(|b| b.len()).sum())
    } else {
        out.taken_of(frames)
            .fold((0, 0), |(n, bytes), b| (n + 1, bytes + b.len()))
    };
    switch.record_tx_batch(port, sent, bytes);
    if sent < frames.len() {
        switch.record_tx_dropped_batch(port, frames.len() - sent);
    }
}

/// Whether an error from a send is the ordinary "queue full".
#[must_use]
pub fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::ids::NetworkId;
    use crate::switch::{FdbConfig, NetworkConfig, PortConfig, PortRole, SwitchConfig};

    /// A device that takes the first frame, refuses the second, and of the
    /// round's later writes takes only the last, as an io_uring round that
    /// met a refusal does.
    struct Partial(Vec<usize>);

    impl TxSink for Partial {
        fn send(&mut self, _port: PortId, frames: &[&PacketBuf]) -> SendOutcome {
            self.0.push(frames.len());
            SendOutcome {
                sent: 1,
                error: Some(io::ErrorKind::InvalidInput.into()),
                later: 1 << (frames.len() - 3),
            }
        }
    }

    #[test]
    fn frames_taken_after_a_refused_one_count_as_sent_not_dropped() {
        let out = PortId(2);
        let config = SwitchConfig::new(
            2,
            [NetworkConfig::new(NetworkId(0))],
            [1, 2].map(|id| PortConfig {
                id: PortId(id),
                network: NetworkId(0),
                role: PortRole::Uplink,
            }),
        )
        .unwrap();
        let mut switch = Switch::new(FdbConfig::default());
        switch.apply_config(Instant::now(), Arc::new(config));
        let mut bufs: Vec<PacketBuf> = [60, 70, 80, 90]
            .iter()
            .map(|&len| PacketBuf::from_frame(&vec![0; len]).unwrap())
            .collect();
        let mut executor = Executor::new();
        let mut sink = Partial(Vec::new());
        for i in 0..bufs.len() {
            executor.execute(
                &mut switch,
                Action::Output(out),
                PortId(1),
                i,
                &mut bufs,
                &mut sink,
            );
        }
        executor.flush(&mut switch, &bufs, &mut sink);
        assert_eq!(sink.0, [4], "one call for the port's queue");
        let stats = switch.stats().port(out);
        // Taken: the first (60 bytes) and the last (90); refused: the
        // second; not taken: the third.
        assert_eq!((stats.tx_packets, stats.tx_bytes), (2, 150));
        assert_eq!(stats.tx_dropped, 2);
    }
}
