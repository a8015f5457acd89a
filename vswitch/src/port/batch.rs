//! A receive batch: pooled buffers filled by one or several ports, each
//! frame tagged with the logical port it arrived on.

use crate::buf::PacketBuf;
use crate::ids::PortId;

/// Up to `capacity` received frames (and, optionally, up to a byte budget),
/// in arrival order, and the receive errors met while filling them.
///
/// The buffers are allocated once ([`RxBatch::new`]) and reused for every
/// batch; a slot is filled in place by a receive call and then committed,
/// so a device that reads many frames at once (`recvmmsg`) fills several
/// slots and commits the good ones, in order.
#[derive(Debug)]
pub struct RxBatch {
    bufs: Vec<PacketBuf>,
    ingress: Vec<PortId>,
    len: usize,
    bytes: usize,
    byte_budget: usize,
    rx_errors: Vec<PortId>,
}

impl RxBatch {
    /// A batch of `capacity` (at least one) buffers.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            bufs: (0..capacity).map(|_| PacketBuf::new()).collect(),
            ingress: vec![PortId(0); capacity],
            len: 0,
            bytes: 0,
            byte_budget: usize::MAX,
            rx_errors: Vec::with_capacity(capacity),
        }
    }

    /// Also ends the batch once its frames hold `bytes` or more: a batch of
    /// 64 KiB super-frames is sent on after a few of them rather than after
    /// 4 MiB, which would outgrow the caches and hold a flow's first
    /// frames back.
    #[must_use]
    pub const fn with_byte_budget(mut self, bytes: usize) -> Self {
        self.byte_budget = bytes;
        self
    }

    /// Frames committed.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is committed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still to be received before the byte budget ends the batch
    /// (all but unbounded without a budget): a device that reads several
    /// frames per call asks for no more than fit.
    #[must_use]
    pub const fn byte_room(&self) -> usize {
        self.byte_budget.saturating_sub(self.bytes)
    }

    /// Whether every slot holds a committed frame.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len() || self.bytes >= self.byte_budget
    }

    /// Forgets every frame and error, for the next batch.
    pub fn clear(&mut self) {
        self.len = 0;
        self.bytes = 0;
        self.rx_errors.clear();
    }

    /// The next free slot, or `None` when the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut PacketBuf> {
        if self.bytes >= self.byte_budget {
            return None;
        }
        self.bufs.get_mut(self.len)
    }

    /// The free slots, for a device that fills several at once; then
    /// [`RxBatch::commit_spare`] each filled one, in order.
    pub fn spare(&mut self) -> &mut [PacketBuf] {
        if self.bytes >= self.byte_budget {
            return &mut [];
        }
        &mut self.bufs[self.len..]
    }

    /// Commits the frame in the next free slot as received on `ingress`.
    pub fn commit(&mut self, ingress: PortId) {
        if self.len < self.bufs.len() {
            self.ingress[self.len] = ingress;
            self.bytes += self.bufs[self.len].len();
            self.len += 1;
        }
    }

    /// Commits the frame in free slot `i` (an index into
    /// [`RxBatch::spare`] as it was before this round of commits, counted
    /// from the first slot not yet committed in this round) as received on
    /// `ingress`: it moves down to the next free slot, so slots that were
    /// skipped (unreadable frames) never leave a gap.
    pub fn commit_spare(&mut self, i: usize, ingress: PortId, base: usize) {
        let from = base + i;
        if from < self.bufs.len() && self.len <= from {
            self.bufs.swap(self.len, from);
            self.commit(ingress);
        }
    }

    /// Records a frame from `port` that could not be read whole.
    pub fn rx_error(&mut self, port: PortId) {
        self.rx_errors.push(port);
    }

    /// The ports that delivered unreadable frames, one entry per frame.
    #[must_use]
    pub fn rx_errors(&self) -> &[PortId] {
        &self.rx_errors
    }

    /// The committed frames.
    #[must_use]
    pub fn frames(&self) -> &[PacketBuf] {
        &self.bufs[..self.len]
    }

    /// The committed frames, for deciding (and rewriting) in place, with
    /// the port each arrived on.
    pub fn frames_mut(&mut self) -> (&mut [PacketBuf], &[PortId]) {
        (&mut self.bufs[..self.len], &self.ingress[..self.len])
    }

    /// The logical port frame `i` arrived on.
    #[must_use]
    pub fn ingress(&self, i: usize) -> Option<PortId> {
        (i < self.len).then(|| self.ingress[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_slots_leave_no_gap() {
        let mut b = RxBatch::new(4);
        let base = b.len();
        for (i, s) in b.spare().iter_mut().enumerate() {
            s.set_frame(&[u8::try_from(i).unwrap(); 20]).unwrap();
        }
        b.commit_spare(0, PortId(7), base);
        b.rx_error(PortId(7)); // slot 1 unreadable
        b.commit_spare(2, PortId(8), base);
        assert_eq!(b.len(), 2);
        assert_eq!(b.frames()[0].frame()[0], 0);
        assert_eq!(b.frames()[1].frame()[0], 2);
        assert_eq!(b.ingress(1), Some(PortId(8)));
        assert_eq!(b.rx_errors(), &[PortId(7)]);
        b.commit(PortId(9));
        b.commit(PortId(9));
        assert!(b.is_full());
        b.commit(PortId(9));
        assert_eq!(b.len(), 4);
        b.clear();
        assert!(b.is_empty() && b.rx_errors().is_empty());
    }

    #[test]
    fn a_byte_budget_ends_the_batch_early() {
        let mut b = RxBatch::new(8).with_byte_budget(100);
        for _ in 0..2 {
            b.next_slot().unwrap().set_frame(&[0; 60]).unwrap();
            b.commit(PortId(1));
        }
        assert!(b.is_full());
        assert!(b.next_slot().is_none());
        assert!(b.spare().is_empty());
        b.clear();
        assert!(!b.is_full());
    }
}
