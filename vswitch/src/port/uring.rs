//! A TAP's reads and writes through io_uring: one `io_uring_enter` for a
//! batch of frames where plain system calls cost one `read`/`write` each
//! (a TAP has no `recvmmsg`/`sendmmsg`).
//!
//! Each thread that moves frames (a datapath worker, the host connector)
//! has a ring of its own, made on first use ([`thread_local!`]), so no ring
//! is shared and none needs a lock; the ring is set up for a single issuer.
//! Every operation carries `RWF_NOWAIT`: a read with nothing queued, or a
//! write the device cannot take, completes at once with `EAGAIN` instead of
//! staying in flight, so every operation has completed when the call that
//! submitted it returns, and its buffers are the caller's again. The
//! batch's own pooled buffers are read into; nothing is copied.
//!
//! The worker still learns that a TAP is readable from its `epoll` set, as
//! for every other port; the ring only replaces the per-frame system calls
//! once it is. A receive asks for as many frames as the port gave last time
//! plus one, doubling while every read finds a frame (up to the batch), so a
//! ping costs one or two empty reads and a flood fills the batch in one
//! call.
//!
//! Alternatives rejected: reads kept in flight on the TAP (the worker would
//! wait on the ring rather than its `epoll` set, each read pins a 64 KiB
//! buffer while the port is idle, and a frame's arrival wakes every read
//! armed on the device); a ring per port (a descriptor more per endpoint,
//! and writes from several workers to one port would share it under a
//! lock); `IFF_MULTI_QUEUE` (one descriptor per queue, and the kernel picks
//! the queue of a frame sent towards the switch by its flow hash, so it
//! spreads receive work but removes no system call).
// io_uring takes raw pointers to the buffers it reads into and writes from;
// the safety argument is that every operation completes before the call
// that submitted it returns (see `run`).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use io_uring::{IoUring, opcode, types};

use super::{RxBatch, SendOutcome, check_sent, finish_recv};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;

/// Operations per `io_uring_enter`: a batch's worth of reads or a
/// queue's chunk of writes. The arrays below live on the stack.
pub(crate) const MAX_OPS: usize = 64;

// A round's writes after a refused one are named by the bits of
// `SendOutcome::later`.
const _: () = assert!(MAX_OPS <= 65);

/// Submission queue entries: room for one call's operations twice over.
const ENTRIES: u32 = 128;

/// A port's receive pace: how many reads to ask for next, and the mean
/// length of the frames it gave last time. Only the worker that polls the
/// port receives from it, so the order of updates does not matter.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    ask: AtomicUsize,
    frame_len: AtomicUsize,
}

/// The shortest frame assumed when sizing a round by its bytes.
const MIN_FRAME: usize = 60;

/// Reads asked for at least, and at first.
const MIN_ASK: usize = 2;

/// How many times an interrupted wait is retried before the ring is
/// given up.
const WAIT_RETRIES: usize = 1_000;

/// This thread's ring, once tried.
enum Slot {
    /// Not made yet.
    Untried,
    /// Made and working (boxed: the ring's handle is large, and the slot
    /// is mostly compared).
    Ready(Box<IoUring>),
    /// io_uring is not available to this thread (disabled, refused, or a
    /// ring that failed): plain system calls are used.
    Unavailable,
}

thread_local! {
    static RING: RefCell<Slot> = const { RefCell::new(Slot::Untried) };
}

/// A ring failed in a way that leaves operations possibly in flight.
struct Broken(io::Error);

/// Makes a ring for the calling thread, with the cheaper completion
/// settings where the kernel has them (5.19, 6.0), plainly otherwise.
fn build() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::new(ENTRIES))
}

/// Whether this thread can use io_uring: makes its ring if not tried yet.
///
/// # Errors
/// Why the ring cannot be made (`ENOSYS`: no io_uring in the kernel;
/// `EPERM`: disabled by `kernel.io_uring_disabled` or a seccomp filter).
pub fn probe() -> io::Result<()> {
    build().map(drop)
}

/// Runs `f` on this thread's ring; `None` when there is none, and the
/// caller falls back to plain system calls.
fn with_ring<R>(f: impl FnOnce(&mut IoUring) -> Result<R, Broken>) -> Option<R> {
    RING.try_with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if matches!(*slot, Slot::Untried) {
            *slot = match build() {
                Ok(ring) => Slot::Ready(Box::new(ring)),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable; TAP ports use one system call per frame on this thread");
                    Slot::Unavailable
                }
            };
        }
        let Slot::Ready(ring) = &mut *slot else {
            return None;
        };
        match f(ring) {
            Ok(r) => Some(r),
            Err(Broken(e)) => {
                tracing::error!(error = %e, "io_uring failed; TAP ports use one system call per frame on this thread");
                if let Slot::Ready(ring) = std::mem::replace(&mut *slot, Slot::Unavailable) {
                    // Operations may still be bound to the ring: keep its
                    // descriptor (and so its mappings) open for good.
                    std::mem::forget(ring);
                }
                None
            }
        }
    })
    .ok()
    .flatten()
}

/// Submits the `n` operations pushed and waits until all have completed,
/// writing each one's result at its index (its `user_data`).
///
/// `Err` only when the ring cannot be entered; the operations may then
/// still be in flight and their buffers must never be reused.
fn run(ring: &mut IoUring, n: usize, results: &mut [i32; MAX_OPS]) -> Result<(), Broken> {
    let mut done = 0;
    let mut retries = 0;
    while done < n {
        match ring.submit_and_wait(n - done) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) && retries < WAIT_RETRIES =>
            {
                retries += 1;
            }
            Err(e) => return Err(Broken(e)),
        }
        for cqe in ring.completion() {
            if let Some(r) = usize::try_from(cqe.user_data())
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *r = cqe.result();
                done += 1;
            }
        }
    }
    Ok(())
}

/// Pushes one prepared entry; the queue is empty at the start of each call
/// and holds twice [`MAX_OPS`], so it has room.
fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> bool {
    // SAFETY: the entry's pointers (iovecs, headers, buffers) stay valid
    // and unaliased until `run` has reaped its completion, as each caller
    // arranges.
    unsafe { ring.submission().push(entry) }.is_ok()
}

/// Reads frames from the TAP `fd` into the free slots of `batch` (see
/// [`super::PortIo::recv_batch`]), all in one `io_uring_enter` per round.
/// `pace` sizes each round: as many reads as the port gave last time plus
/// one (doubling while every read finds a frame), and no more than the
/// batch's byte budget holds at the port's mean frame length, so a round
/// of 64 KiB super-frames stops near the budget as the read-per-frame
/// loop does.
///
/// `None` when this thread has no ring: the caller reads with system calls.
pub(crate) fn recv_batch(
    fd: RawFd,
    id: PortId,
    batch: &mut RxBatch,
    pace: &Pace,
) -> Option<io::Result<()>> {
    with_ring(|ring| {
        loop {
            let base = batch.len();
            let mean = pace.frame_len.load(Ordering::Relaxed).max(MIN_FRAME);
            let fit = batch.byte_room().div_ceil(mean).max(1);
            let spare = batch.spare();
            let want = pace
                .ask
                .load(Ordering::Relaxed)
                .clamp(MIN_ASK, MAX_OPS)
                .min(fit)
                .min(spare.len());
            if want == 0 {
                return Ok(Ok(()));
            }
            let mut spaces = [0usize; MAX_OPS];
            let mut pushed = 0;
            for i in 0..want {
                // The header lands at the end of the headroom and the frame
                // where it belongs: one buffer, no iovec array.
                let rx = spare[i].rx_space_with_vnet();
                spaces[i] = rx.len() - VnetHdr::LEN;
                let len = u32::try_from(rx.len()).unwrap_or(u32::MAX);
                let entry = opcode::Read::new(types::Fd(fd), rx.as_mut_ptr(), len)
                    .rw_flags(libc::RWF_NOWAIT)
                    .build()
                    .user_data(i as u64);
                if !push(ring, &entry) {
                    break;
                }
                pushed += 1;
            }
            let mut results = [0i32; MAX_OPS];
            if let Err(broken) = run(ring, pushed, &mut results) {
                // The kernel may still write into these buffers: give them
                // up for fresh ones rather than reuse them.
                for buf in spare.iter_mut().take(pushed) {
                    std::mem::forget(std::mem::take(buf));
                }
                return Err(broken);
            }
            let mut ok = [false; MAX_OPS];
            let mut got = 0;
            let mut bytes = 0;
            let mut drained = false;
            let mut error = None;
            for i in 0..pushed {
                let r = results[i];
                match usize::try_from(r) {
                    Ok(n) => {
                        got += 1;
                        // A TAP reports the whole frame's length even when
                        // it copied less, so a frame larger than the buffer
                        // is caught here.
                        let hdr = spare[i].received_vnet_bytes();
                        ok[i] = finish_recv(&mut spare[i], &hdr, n, spaces[i]).is_ok();
                        bytes += spare[i].len();
                    }
                    Err(_) if r == -libc::EAGAIN || r == -libc::EINTR => {
                        drained = true;
                        spare[i].set_received(0);
                    }
                    Err(_) => {
                        spare[i].set_received(0);
                        if error.is_none() {
                            error = Some(io::Error::from_raw_os_error(-r));
                        }
                    }
                }
            }
            for (i, &good) in ok.iter().enumerate().take(pushed) {
                if good {
                    batch.commit_spare(i, id, base);
                } else if results[i] >= 0 {
                    batch.rx_error(id);
                }
            }
            let next = if got == pushed { 2 * pushed } else { got + 1 };
            pace.ask
                .store(next.clamp(MIN_ASK, MAX_OPS), Ordering::Relaxed);
            if let Some(mean) = bytes.checked_div(got) {
                pace.frame_len.store(mean, Ordering::Relaxed);
            }
            if let Some(e) = error {
                return Ok(Err(e));
            }
            if drained || pushed == 0 {
                return Ok(Err(io::ErrorKind::WouldBlock.into()));
            }
            if batch.is_full() {
                return Ok(Ok(()));
            }
        }
    })
}

/// The two iovecs of one TAP write: the virtio-net header, then the
/// frame's `len` bytes at `data`. (A read needs none: the header lands in
/// the buffer's headroom, in front of the frame.)
fn vnet_iovecs(hdr: &mut [u8; VnetHdr::LEN], data: *mut u8, len: usize) -> [libc::iovec; 2] {
    [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VnetHdr::LEN,
        },
        libc::iovec {
            iov_base: data.cast(),
            iov_len: len,
        },
    ]
}

/// Writes `frames` with their virtio-net headers to the TAP `fd`,
/// [`MAX_OPS`] per `io_uring_enter`, stopping after the round in which the
/// device refused one (see [`super::PortIo::send_batch`]). The writes of a
/// round are all submitted before any completes, so those after a refused
/// one may still be taken: [`SendOutcome::later`] names them.
///
/// `None` when this thread has no ring: the caller writes with system
/// calls.
pub(crate) fn send_batch(fd: RawFd, frames: &[&PacketBuf]) -> Option<SendOutcome> {
    with_ring(|ring| {
        let mut out = SendOutcome::default();
        for chunk in frames.chunks(MAX_OPS) {
            let mut hdrs = [[0u8; VnetHdr::LEN]; MAX_OPS];
            // SAFETY: a plain C struct, valid when zeroed.
            let mut iovs: [[libc::iovec; 2]; MAX_OPS] = unsafe { std::mem::zeroed() };
            let mut pushed = 0;
            for (i, frame) in chunk.iter().enumerate() {
                hdrs[i] = frame.vnet.to_bytes();
                let data = frame.frame();
                // The kernel only reads through a write's iovecs.
                iovs[i] = vnet_iovecs(&mut hdrs[i], data.as_ptr().cast_mut(), data.len());
                let entry = opcode::Writev::new(types::Fd(fd), iovs[i].as_ptr(), 2)
                    .rw_flags(libc::RWF_NOWAIT)
                    .build()
                    .user_data(i as u64);
                if !push(ring, &entry) {
                    break;
                }
                pushed += 1;
            }
            let mut results = [0i32; MAX_OPS];
            // On `Err` the kernel may still read the headers and frames,
            // never write them: nothing of ours is corrupted.
            run(ring, pushed, &mut results)?;
            let mut refused = None;
            for (i, frame) in chunk.iter().enumerate().take(pushed) {
                let r = results[i];
                let written = match usize::try_from(r) {
                    Ok(n) => check_sent(n, VnetHdr::LEN + frame.len()),
                    Err(_) => Err(io::Error::from_raw_os_error(-r)),
                };
                match (written, refused) {
                    (Ok(()), None) => out.sent += 1,
                    (Err(e), None) => {
                        out.error = Some(e);
                        refused = Some(i);
                    }
                    // The round's later writes were submitted with the
                    // refused one and ran all the same: those that went
                    // are named, not counted as dropped. A round is at
                    // most MAX_OPS writes, so the bit is below 63.
                    (Ok(()), Some(at)) => out.later |= 1 << (i - at - 1),
                    (Err(_), Some(_)) => {}
                }
            }
            if refused.is_some() {
                // Stop after the round that met the refusal, as a device
                // written one frame at a time stops at it.
                return Ok(out);
            }
            if pushed < chunk.len() {
                out.error = Some(io::ErrorKind::WouldBlock.into());
                return Ok(out);
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    //! The ring's batching, over a Unix datagram socket pair framed as a
    //! TAP is (a virtio-net header, then one frame per datagram), so it
    //! runs without root; the same calls on a real TAP are exercised in
    //! `tests/devices.rs`.

    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// A frame whose bytes say which it is.
    fn frame(i: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..2].copy_from_slice(&i.to_be_bytes());
        f
    }

    fn datagram(hdr: VnetHdr, frame: &[u8]) -> Vec<u8> {
        let mut d = hdr.to_bytes().to_vec();
        d.extend_from_slice(frame);
        d
    }

    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        // Room for a burst: the queue of a Unix datagram socket pair is
        // bounded by the sender's buffer.
        for s in [&a, &b] {
            socket2::SockRef::from(s)
                .set_send_buffer_size(4 << 20)
                .unwrap();
        }
        (a, b)
    }

    fn ring_here() -> bool {
        match probe() {
            Ok(()) => true,
            // Where io_uring is disabled the ports use system calls, which
            // the rest of the suite covers; under CI the machine has it.
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "io_uring unavailable under CI: {e}"
                );
                eprintln!("skipped: io_uring unavailable: {e}");
                false
            }
        }
    }

    #[test]
    fn a_burst_arrives_complete_in_order_and_tagged_over_several_batches() {
        if !ring_here() {
            return;
        }
        let (ours, theirs) = pair();
        const N: u16 = 150;
        for i in 0..N {
            theirs
                .send(&datagram(VnetHdr::default(), &frame(i)))
                .unwrap();
        }
        let pace = Pace::default();
        let mut batch = RxBatch::new(64);
        let mut seen = Vec::new();
        let mut calls = 0;
        loop {
            batch.clear();
            let r = recv_batch(ours.as_raw_fd(), PortId(7), &mut batch, &pace).unwrap();
            calls += 1;
            for (i, f) in batch.frames().iter().enumerate() {
                assert_eq!(batch.ingress(i), Some(PortId(7)));
                assert_eq!(f.len(), 60);
                seen.push(u16::from_be_bytes([f.frame()[0], f.frame()[1]]));
            }
            match r {
                Ok(()) => assert!(batch.is_full(), "Ok before the batch was full"),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(seen, (0..N).collect::<Vec<_>>());
        // 64 + 64 + 22: three calls, the last finding the socket drained.
        assert_eq!(calls, 3);
        // The last call found 22 frames and then an empty socket: it asks
        // for about as many next time, not for a whole batch.
        assert!(pace.ask.load(Ordering::Relaxed) <= 32, "{pace:?}");
        assert_eq!(pace.frame_len.load(Ordering::Relaxed), 60);
        // Drained: nothing more, and nothing invented.
        batch.clear();
        let e = recv_batch(ours.as_raw_fd(), PortId(7), &mut batch, &pace)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty() && batch.rx_errors().is_empty());
    }

    #[test]
    fn a_runt_is_a_receive_error_and_the_frames_around_it_arrive() {
        if !ring_here() {
            return;
        }
        let (ours, theirs) = pair();
        let gso = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        theirs.send(&datagram(gso, &frame(1))).unwrap();
        theirs.send(&[1, 2, 3]).unwrap();
        theirs
            .send(&datagram(VnetHdr::default(), &frame(2)))
            .unwrap();
        let pace = Pace::default();
        pace.ask.store(8, Ordering::Relaxed);
        let mut batch = RxBatch::new(64);
        let e = recv_batch(ours.as_raw_fd(), PortId(3), &mut batch, &pace)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.frames()[0].vnet, gso, "the header is the frame's");
        assert_eq!(batch.frames()[1].frame(), &frame(2)[..]);
        assert_eq!(batch.rx_errors(), &[PortId(3)]);
    }

    #[test]
    fn a_round_asks_for_no_more_than_the_byte_budget_holds() {
        if !ring_here() {
            return;
        }
        let (ours, theirs) = pair();
        for i in 0..10u16 {
            let mut f = frame(i);
            f.resize(1000, 0);
            theirs.send(&datagram(VnetHdr::default(), &f)).unwrap();
        }
        let pace = Pace::default();
        let mut batch = RxBatch::new(64).with_byte_budget(2500);
        // Two reads, then (1000-byte frames seen) one more for the 500
        // bytes left: the batch ends at three frames, the rest stay queued
        // rather than being read past the budget.
        recv_batch(ours.as_raw_fd(), PortId(1), &mut batch, &pace)
            .unwrap()
            .unwrap();
        assert!(batch.is_full());
        assert_eq!(batch.len(), 3);
        assert_eq!(pace.frame_len.load(Ordering::Relaxed), 1000);
        batch.clear();
        recv_batch(ours.as_raw_fd(), PortId(1), &mut batch, &pace)
            .unwrap()
            .unwrap();
        assert_eq!(batch.len(), 3, "three 1000-byte frames fill 2500 bytes");
        assert_eq!(batch.frames()[0].frame()[..2], 3u16.to_be_bytes());
    }

    #[test]
    fn a_queue_is_written_in_order_and_a_full_device_stops_it_counted() {
        if !ring_here() {
            return;
        }
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(4096)
            .unwrap();
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let bufs: Vec<PacketBuf> = (0..200)
            .map(|i| {
                let mut b = PacketBuf::from_frame(&frame(i)).unwrap();
                b.vnet = hdr;
                b
            })
            .collect();
        let refs: Vec<&PacketBuf> = bufs.iter().collect();
        // The peer reads nothing, so its queue fills: the writes it cannot
        // take are refused at once (never left in flight), and the count
        // says how many were taken, from the front.
        let out = send_batch(ours.as_raw_fd(), &refs).unwrap();
        assert!(out.sent > 0 && out.sent < 200, "{out:?}");
        assert_eq!(
            out.error.as_ref().map(io::Error::kind),
            Some(io::ErrorKind::WouldBlock)
        );
        theirs.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut d = vec![0u8; 200];
        while let Ok(n) = theirs.recv(&mut d) {
            assert_eq!(n, VnetHdr::LEN + 60);
            assert_eq!(VnetHdr::from_bytes(d[..10].try_into().unwrap()), hdr);
            got.push(u16::from_be_bytes([d[10], d[11]]));
        }
        let sent = u16::try_from(out.sent).unwrap();
        assert_eq!(got, (0..sent).collect::<Vec<_>>());

        // Room again: the whole queue goes, in chunks of MAX_OPS.
        let (ours, theirs) = pair();
        let out = send_batch(ours.as_raw_fd(), &refs[..100]).unwrap();
        assert_eq!(out.sent, 100);
        assert!(out.error.is_none());
        theirs.set_nonblocking(true).unwrap();
        let mut n = 0;
        while theirs.recv(&mut d).is_ok() {
            assert_eq!(u16::from_be_bytes([d[10], d[11]]), n);
            n += 1;
        }
        assert_eq!(n, 100);

        // A peer that is gone: an error, nothing counted as sent.
        drop(theirs);
        let out = send_batch(ours.as_raw_fd(), &refs[..3]).unwrap();
        assert_eq!(out.sent, 0);
        assert!(out.error.is_some());
    }

    #[test]
    fn a_write_refused_mid_round_names_the_later_writes_that_went() {
        if !ring_here() {
            return;
        }
        // Over UDP on the loopback, where a datagram longer than IPv4
        // carries is refused (EMSGSIZE) on its own and the writes around
        // it go.
        let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let theirs = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.connect(theirs.local_addr().unwrap()).unwrap();
        socket2::SockRef::from(&theirs)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let mut bufs: Vec<PacketBuf> = (0..150)
            .map(|i| PacketBuf::from_frame(&frame(i)).unwrap())
            .collect();
        for i in [70, 74] {
            let mut big = frame(i);
            big.resize(crate::buf::MAX_FRAME_LEN, 0);
            bufs[usize::from(i)] = PacketBuf::from_frame(&big).unwrap();
        }
        let refs: Vec<&PacketBuf> = bufs.iter().collect();
        // The first round (64 writes) all go; the second (64-127) meets
        // the long frames at 70 and 74, and the rest of it goes; the third
        // is not submitted, as a device written frame by frame stops at
        // its first refusal.
        let out = send_batch(ours.as_raw_fd(), &refs).unwrap();
        assert_eq!(out.sent, 70, "{out:?}");
        assert_eq!(
            out.error.as_ref().and_then(io::Error::raw_os_error),
            Some(libc::EMSGSIZE)
        );
        let expected: Vec<u16> = (0..128).filter(|&i| i != 70 && i != 74).collect();
        assert_eq!(out.taken(), expected.len(), "{out:?}");
        let named: Vec<u16> = out
            .taken_of(&refs)
            .map(|b| u16::from_be_bytes([b.frame()[0], b.frame()[1]]))
            .collect();
        assert_eq!(named, expected);
        theirs.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut d = vec![0u8; 200];
        while let Ok(n) = theirs.recv(&mut d) {
            assert_eq!(n, VnetHdr::LEN + 60);
            got.push(u16::from_be_bytes([d[10], d[11]]));
        }
        assert_eq!(got, expected, "what arrived is what was named");
    }
}
