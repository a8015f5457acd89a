//! The userspace TCP endpoint's device: IP packets in from containers, IP
//! packets out into pooled frame buffers (after room for the Ethernet
//! header), checksums left to the offload header.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;

use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::frame::ETH;
use crate::buf::{BufPool, MAX_FRAME_LEN, PacketBuf};

/// Largest IP packet the endpoint sends: a TCP segment as large as a
/// virtio-net super-frame may be.
pub(crate) const IP_MTU: usize = 65_535 - ETH;

/// An IP packet from a container, not yet read by the stack.
#[derive(Debug)]
pub(crate) enum Packet {
    /// In the frame buffer a worker handed over, at this range of the
    /// frame.
    Frame(PacketBuf, Range<usize>),
    /// A copy (a held SYN, a segment answered with a RST).
    Copy(Vec<u8>),
}

#[derive(Debug, Default)]
pub(crate) struct Queues {
    pub(crate) rx: VecDeque<Packet>,
    /// Spent buffers of copies.
    pub(crate) spare: Vec<Vec<u8>>,
    /// Where spent frame buffers go back to the workers.
    pub(crate) recycle: Option<crossbeam_channel::Sender<PacketBuf>>,
    /// Frames the stack wrote (IP packet after [`ETH`] bytes).
    pub(crate) tx: Vec<PacketBuf>,
    /// The buffers the stack writes into. It never allocates one: with
    /// none left it refuses to transmit (the data waits in the socket, as
    /// behind a full device queue) and [`Queues::starved`] asks for more.
    pub(crate) pool: Option<BufPool>,
    /// The stack wanted to send and had no buffer since this was cleared.
    pub(crate) starved: bool,
    /// What a token consumed with no buffer left writes into, to be
    /// dropped as a full device queue drops (TCP sends it again); made
    /// once. `receive` and `transmit` keep it unused.
    scratch: Option<PacketBuf>,
}

/// The device smoltcp drives: shared queues behind a `RefCell`, so the
/// receive and transmit tokens it asks for at once can both use them.
#[derive(Debug, Default)]
pub(crate) struct Stack {
    pub(crate) q: RefCell<Queues>,
}

impl Stack {
    pub(crate) fn push_rx(&self, packet: &[u8]) {
        let mut q = self.q.borrow_mut();
        let mut b = q.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(packet);
        q.rx.push_back(Packet::Copy(b));
    }

    /// Queues the packet at `range` of `frame`'s frame without copying
    /// it; the buffer goes back to the workers once the stack has read it.
    pub(crate) fn push_owned(&self, frame: PacketBuf, range: Range<usize>) {
        self.q
            .borrow_mut()
            .rx
            .push_back(Packet::Frame(frame, range));
    }
}

pub(crate) struct Rx<'a> {
    packet: Packet,
    q: &'a RefCell<Queues>,
}

pub(crate) struct Tx<'a> {
    q: &'a RefCell<Queues>,
}

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = match &self.packet {
            Packet::Frame(b, range) => f(b.frame().get(range.clone()).unwrap_or_default()),
            Packet::Copy(v) => f(v),
        };
        let mut q = self.q.borrow_mut();
        match self.packet {
            Packet::Frame(b, _) => {
                if let Some(tx) = &q.recycle {
                    let _ = tx.try_send(b);
                }
            }
            Packet::Copy(v) if q.spare.len() < 64 => q.spare.push(v),
            Packet::Copy(_) => {}
        }
        r
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut q = self.q.borrow_mut();
        let total = (ETH + len).min(MAX_FRAME_LEN);
        let Some(mut buf) = q.pool.as_mut().and_then(BufPool::take) else {
            // Not reached: `receive` and `transmit` hand out a token only
            // while a buffer is left. Should it be, the frame is dropped.
            q.starved = true;
            let scratch = q.scratch.get_or_insert_with(PacketBuf::new);
            let space = scratch.rx_space();
            let end = total.min(space.len());
            return f(&mut space[ETH..end]);
        };
        let r = {
            let space = buf.rx_space();
            let end = total.min(space.len());
            f(&mut space[ETH..end])
        };
        buf.set_received(total);
        q.tx.push(buf);
        r
    }
}

impl Device for Stack {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let q = self.q.get_mut();
        if q.rx.is_empty() {
            return None;
        }
        if q.pool.as_ref().is_some_and(|p| p.available() == 0) {
            // No buffer for an answer: the packet waits for the next round.
            q.starved = true;
            return None;
        }
        let packet = q.rx.pop_front()?;
        Some((Rx { packet, q: &self.q }, Tx { q: &self.q }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        let q = self.q.get_mut();
        if q.pool.as_ref().is_some_and(|p| p.available() == 0) {
            q.starved = true;
            return None;
        }
        Some(Tx { q: &self.q })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        let mut sums = ChecksumCapabilities::default();
        // The IP header is summed here (20 bytes); TCP's sum is left to
        // the offload header, and the container's kernel verified what it
        // sent (a TAP hands over partial checksums, which are not sums yet).
        sums.ipv4 = Checksum::Tx;
        sums.tcp = Checksum::None;
        sums.udp = Checksum::None;
        sums.icmpv4 = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}
