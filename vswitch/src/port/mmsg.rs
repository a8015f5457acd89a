//! `recvmmsg(2)` and `sendmmsg(2)` over a datagram-style descriptor (a
//! packet socket, a Unix datagram socket) whose every message is a
//! virtio-net header followed by one frame: one system call for up to
//! [`MAX_MSGS`] frames instead of one each.
// recvmmsg/sendmmsg have no safe wrapper that fills caller-owned buffers
// without allocating (nix's `MultiHeaders` allocates per call).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use super::{RxBatch, SendOutcome, finish_recv};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;

/// Frames per system call; the arrays below live on the stack.
pub(crate) const MAX_MSGS: usize = 64;

/// How a short or truncated message is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Runt {
    /// Counted as a receive error.
    Error,
    /// Delivered as an empty frame, which the switch counts as a runt.
    Empty,
}

/// Reads up to the batch's free slots (at most [`MAX_MSGS`]) in one call,
/// committing each readable frame as received on `id`.
///
/// # Errors
/// `WouldBlock` when fewer frames were queued than asked for (the
/// descriptor is drained), or the call's error.
pub(crate) fn recv_batch(fd: RawFd, id: PortId, batch: &mut RxBatch, runt: Runt) -> io::Result<()> {
    let base = batch.len();
    let spare = batch.spare();
    let n = spare.len().min(MAX_MSGS);
    if n == 0 {
        return Ok(());
    }
    let mut spaces = [0usize; MAX_MSGS];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
    // bytes (null pointers, zero lengths) is a valid value.
    let mut iovs: [libc::iovec; MAX_MSGS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        // One iovec per message: the header lands at the end of the
        // buffer's headroom, the frame where it belongs.
        let rx = spare[i].rx_space_with_vnet();
        spaces[i] = rx.len() - VnetHdr::LEN;
        iovs[i] = libc::iovec {
            iov_base: rx.as_mut_ptr().cast(),
            iov_len: rx.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let want = u32::try_from(n).unwrap_or(1);
    // SAFETY: `msgs[..n]` each point at an iovec over the header and
    // receive space of `spare[i]`; all outlive the call and nothing else
    // touches them during it. No addresses or control data are asked.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            want,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let got = usize::try_from(rc).map_err(|_| io::Error::last_os_error())?;
    let mut ok = [false; MAX_MSGS];
    for i in 0..got.min(n) {
        let len = msgs[i].msg_len as usize;
        let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let buf = &mut spare[i];
        ok[i] = if truncated {
            buf.set_received(0);
            false
        } else if len < VnetHdr::LEN && runt == Runt::Empty {
            buf.vnet = VnetHdr::default();
            buf.set_received(0);
            true
        } else {
            let hdr = buf.received_vnet_bytes();
            finish_recv(buf, &hdr, len, spaces[i]).is_ok()
        };
    }
    for (i, &good) in ok.iter().enumerate().take(got.min(n)) {
        if good {
            batch.commit_spare(i, id, base);
        } else {
            batch.rx_error(id);
        }
    }
    if got < n {
        Err(io::ErrorKind::WouldBlock.into())
    } else {
        Ok(())
    }
}

/// Writes `frames` with their virtio-net headers, [`MAX_MSGS`] per call,
/// until all are taken or the descriptor refuses one.
pub(crate) fn send_batch(fd: RawFd, frames: &[&PacketBuf]) -> SendOutcome {
    let mut out = SendOutcome::default();
    for chunk in frames.chunks(MAX_MSGS) {
        let n = chunk.len();
        let mut hdrs = [[0u8; VnetHdr::LEN]; MAX_MSGS];
        // SAFETY: plain C structs, valid when zeroed.
        let mut iovs: [[libc::iovec; 2]; MAX_MSGS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
        for (i, frame) in chunk.iter().enumerate() {
            hdrs[i] = frame.vnet.to_bytes();
            let data = frame.frame();
            iovs[i] = [
                libc::iovec {
                    iov_base: hdrs[i].as_mut_ptr().cast(),
                    iov_len: VnetHdr::LEN,
                },
                libc::iovec {
                    // The kernel only reads through a send's iovecs.
                    iov_base: data.as_ptr().cast_mut().cast(),
                    iov_len: data.len(),
                },
            ];
            msgs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = 2;
        }
        let mut done = 0;
        while done < n {
            let want = u32::try_from(n - done).unwrap_or(1);
            // SAFETY: `msgs[done..n]` point at iovecs over `hdrs` and the
            // frames, which outlive the call; the kernel only reads them.
            let rc =
                unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), want, libc::MSG_DONTWAIT) };
            match usize::try_from(rc) {
                Ok(0) => {
                    out.error = Some(io::ErrorKind::WriteZero.into());
                    return out;
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    out.error = Some(err);
                    return out;
                }
                Ok(k) => {
                    done += k;
                    out.sent += k;
                }
            }
        }
    }
    out
}
