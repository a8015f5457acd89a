//! `recvmmsg(2)` and `sendmmsg(2)` on the underlay's UDP socket, with the
//! peer's address per message: one system call per batch of VXLAN
//! datagrams each way.
// The mmsg calls have no safe wrapper that fills caller-owned buffers
// without allocating (nix's `MultiHeaders` allocates per call).
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

use crate::buf::{PacketBuf, VnetHdr};

/// Datagrams per system call; the arrays below live on the stack.
pub(crate) const MAX_MSGS: usize = 64;

/// `AF_INET` as `sockaddr_in` stores it (2 fits any width).
const FAMILY: libc::sa_family_t = 2;
/// The size of a `sockaddr_in` (16 bytes).
const NAME_LEN: libc::socklen_t = 16;
const _: () = assert!(FAMILY as i32 == libc::AF_INET);
const _: () = assert!(NAME_LEN as usize == size_of::<libc::sockaddr_in>());

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: FAMILY,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> Option<SocketAddrV4> {
    (s.sin_family == FAMILY).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
            u16::from_be(s.sin_port),
        )
    })
}

/// One received datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Where it came from; `None` when it was truncated (longer than a
    /// buffer) or had no IPv4 source.
    pub(crate) from: Option<SocketAddrV4>,
    /// With `UDP_GRO`: the length of each datagram the kernel coalesced
    /// into this one (the last may be shorter); 0 for a single datagram.
    pub(crate) seg: usize,
}

/// `UDP_GRO`: as a socket option, lets the kernel hand over a train of
/// datagrams of one sender as one; as a control message, the length of
/// each.
const UDP_GRO: libc::c_int = libc::UDP_GRO;

/// Room for one control message with an `int`, aligned as the kernel
/// writes it.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 32]);

/// Reads up to `bufs.len()` (at most [`MAX_MSGS`]) datagrams, each whole
/// into one buffer's receive space, and records each buffer's length.
/// Returns, per datagram read, its source and, for a coalesced train, the
/// length of its datagrams.
///
/// # Errors
/// The call's error (`WouldBlock` when nothing is queued).
pub(crate) fn recv(
    fd: RawFd,
    bufs: &mut [PacketBuf],
    out: &mut [Received; MAX_MSGS],
) -> io::Result<usize> {
    let n = bufs.len().min(MAX_MSGS);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: iovec, sockaddr_in and mmsghdr are plain C structs for which
    // all-zero bytes (null pointers, zero lengths) is a valid value.
    let mut iovs: [libc::iovec; MAX_MSGS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_in; MAX_MSGS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
    let mut controls = [Control([0; 32]); MAX_MSGS];
    for i in 0..n {
        let rx = bufs[i].rx_space();
        iovs[i] = libc::iovec {
            iov_base: rx.as_mut_ptr().cast(),
            iov_len: rx.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
        msgs[i].msg_hdr.msg_namelen = NAME_LEN;
        msgs[i].msg_hdr.msg_control = controls[i].0.as_mut_ptr().cast();
        msgs[i].msg_hdr.msg_controllen = controls[i].0.len();
    }
    let want = u32::try_from(n).unwrap_or(1);
    // SAFETY: `msgs[..n]` point at one iovec over the receive space of
    // `bufs[i]`, at `names[i]` and at `controls[i]`; all outlive the call
    // and nothing else touches them during it.
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
    for i in 0..got.min(n) {
        let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        if truncated {
            bufs[i].set_received(0);
            out[i] = Received::default();
        } else {
            bufs[i].set_received(msgs[i].msg_len as usize);
            out[i] = Received {
                from: from_sockaddr(&names[i]),
                seg: gro_size(&msgs[i].msg_hdr),
            };
        }
        // A datagram carries a plain, checksummed frame: no offload state
        // from the buffer's previous frame may stay with it.
        bufs[i].vnet = VnetHdr::default();
    }
    Ok(got.min(n))
}

/// The `UDP_GRO` segment size among a received message's control
/// messages, or 0.
fn gro_size(msg: &libc::msghdr) -> usize {
    let mut seg = 0;
    // SAFETY: `msg` is a message the kernel filled: its control pointer
    // and length describe the control buffer, within which the CMSG
    // macros walk (they return null past its end); each header the kernel
    // wrote is followed by `cmsg_len - CMSG_LEN(0)` bytes of data, and an
    // `int` is read only when the header says that many are there.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == UDP_GRO
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                seg = usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    seg
}

/// The longest head a datagram may have: the VXLAN header and an inner
/// frame's Ethernet (with a VLAN tag), IP and L4 headers at their largest
/// (18 + 60 + 60 bytes for IPv4 and TCP with options).
pub(crate) const HEAD_MAX: usize = 8 + 18 + 60 + 60;

/// One VXLAN datagram to send, in two pieces: a head written here (the
/// VXLAN header, and for a segment of a super-frame or a frame whose
/// checksum this host completes, the inner headers as they leave) and a
/// body that stays where it lies in the frame it came from. The kernel
/// gathers both (two iovecs), so the inner payload is never copied in
/// userspace.
#[derive(Clone, Copy)]
pub(crate) struct Datagram<'a> {
    head: [u8; HEAD_MAX],
    head_len: usize,
    body: &'a [u8],
}

impl<'a> Datagram<'a> {
    pub(crate) const EMPTY: Self = Self {
        head: [0; HEAD_MAX],
        head_len: 0,
        body: &[],
    };

    /// `[vxlan | frame]`, the frame sent as it is.
    pub(crate) fn whole(vxlan: &[u8; 8], frame: &'a [u8]) -> Self {
        let mut d = Self::EMPTY;
        d.head[..8].copy_from_slice(vxlan);
        d.head_len = 8;
        d.body = frame;
        d
    }

    /// `[vxlan | inner head | body]` with an inner head of `len` bytes
    /// that `fill` writes; `None` when `len` does not fit, or when `fill`
    /// returns `None` (then it gives the body).
    pub(crate) fn with_head(
        vxlan: &[u8; 8],
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<&'a [u8]>,
    ) -> Option<Self> {
        if 8 + len > HEAD_MAX {
            return None;
        }
        let mut d = Self::EMPTY;
        d.head[..8].copy_from_slice(vxlan);
        d.body = fill(&mut d.head[8..8 + len])?;
        d.head_len = 8 + len;
        Some(d)
    }

    /// The datagram's length.
    pub(crate) const fn len(&self) -> usize {
        self.head_len + self.body.len()
    }

    /// The inner frame's length.
    pub(crate) const fn inner_len(&self) -> usize {
        self.len() - 8
    }

    /// The two iovecs; the kernel only reads through a send's iovecs.
    fn iovecs(&self) -> [libc::iovec; 2] {
        [
            libc::iovec {
                iov_base: self.head.as_ptr().cast_mut().cast(),
                iov_len: self.head_len,
            },
            libc::iovec {
                iov_base: self.body.as_ptr().cast_mut().cast(),
                iov_len: self.body.len(),
            },
        ]
    }
}

impl core::fmt::Debug for Datagram<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Datagram")
            .field("head_len", &self.head_len)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Datagrams waiting to be sent, each to one VTEP. Filled to
/// [`MAX_MSGS`], then flushed with one `sendmmsg`.
pub(crate) struct SendQueue<'a> {
    items: [(SocketAddrV4, Datagram<'a>); MAX_MSGS],
    len: usize,
}

impl<'a> SendQueue<'a> {
    pub(crate) const fn new() -> Self {
        Self {
            items: [(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), Datagram::EMPTY); MAX_MSGS],
            len: 0,
        }
    }

    pub(crate) const fn is_full(&self) -> bool {
        self.len == MAX_MSGS
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, to: SocketAddrV4, datagram: &Datagram<'a>) {
        if self.len < MAX_MSGS {
            self.items[self.len] = (to, *datagram);
            self.len += 1;
        }
    }

    /// Sends every queued datagram in order. A datagram the socket refuses
    /// for its destination (no route, say) is skipped and counted, so one
    /// unreachable VTEP does not hold back the others; a full socket
    /// buffer (`WouldBlock`) ends the flush. The queue is empty afterwards.
    pub(crate) fn flush(&mut self, fd: RawFd) -> Flushed {
        let n = self.len;
        self.len = 0;
        let mut result = Flushed::default();
        if n == 0 {
            return result;
        }
        // SAFETY: plain C structs, valid when zeroed.
        let mut iovs: [[libc::iovec; 2]; MAX_MSGS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_in; MAX_MSGS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let (to, ref datagram) = self.items[i];
            names[i] = to_sockaddr(to);
            iovs[i] = datagram.iovecs();
            msgs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = 2;
            msgs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
            msgs[i].msg_hdr.msg_namelen = NAME_LEN;
        }
        let mut done = 0;
        while done < n {
            let want = u32::try_from(n - done).unwrap_or(1);
            // SAFETY: `msgs[done..n]` point at iovecs over the heads and
            // bodies of `self.items` and at `names`, which outlive the
            // call; the kernel only reads them.
            let rc =
                unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), want, libc::MSG_DONTWAIT) };
            match usize::try_from(rc) {
                Ok(0) => {
                    result.unsent = n - done;
                    result.error = Some(io::ErrorKind::WriteZero.into());
                    return result;
                }
                Ok(k) => {
                    done += k;
                    result.sent += k;
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => {
                            result.unsent = n - done;
                            result.error = Some(err);
                            return result;
                        }
                        _ => {
                            // The first datagram of the rest failed alone.
                            done += 1;
                            result.failed += 1;
                            result.error = Some(err);
                        }
                    }
                }
            }
        }
        result
    }
}

/// What a flush did.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    /// Datagrams the socket took.
    pub(crate) sent: usize,
    /// Datagrams refused for their destination, skipped.
    pub(crate) failed: usize,
    /// Datagrams not tried because the socket's buffer was full.
    pub(crate) unsent: usize,
    /// The last error met.
    pub(crate) error: Option<io::Error>,
}

/// `UDP_SEGMENT` (linux/udp.h; not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Segments one `sendmsg` may carry: the kernel's `UDP_MAX_SEGMENTS`.
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;

/// The largest UDP payload one `sendmsg` may carry (65,535 less the IPv4
/// and UDP headers).
pub(crate) const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

/// Sends `datagrams` to `to` as one `sendmsg` with `UDP_SEGMENT`: the
/// kernel gathers their heads and bodies into one payload and cuts it into
/// one datagram per item (every item but the last exactly `seg` bytes
/// long, the last at most), so a TCP super-frame's segments cost one
/// system call and one trip through the stack. At most
/// [`MAX_GSO_SEGMENTS`] datagrams and [`MAX_GSO_BYTES`] in all.
///
/// # Errors
/// The call's error (`WouldBlock` when the socket's buffer is full;
/// `EIO`/`EINVAL` when the device or kernel refuses segmentation offload).
pub(crate) fn send_gso(
    fd: RawFd,
    to: SocketAddrV4,
    datagrams: &[Datagram<'_>],
    seg: usize,
) -> io::Result<()> {
    let n = datagrams.len().min(MAX_GSO_SEGMENTS);
    // SAFETY: plain C structs, valid when zeroed.
    let mut iovs: [[libc::iovec; 2]; MAX_GSO_SEGMENTS] = unsafe { std::mem::zeroed() };
    for (slot, d) in iovs.iter_mut().zip(&datagrams[..n]) {
        *slot = d.iovecs();
    }
    let mut name = to_sockaddr(to);
    let seg_size = u16::try_from(seg).map_err(|_| io::ErrorKind::InvalidInput)?;
    // One cmsghdr with a u16, aligned as the kernel reads it.
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    // SAFETY: msghdr is a plain C struct, valid when zeroed.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = NAME_LEN;
    msg.msg_iov = iovs.as_mut_ptr().cast();
    msg.msg_iovlen = 2 * n;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(2) } as usize;
    msg.msg_controllen = space.min(control.0.len());
    // SAFETY: `msg` points at `control`, which has room for one cmsghdr
    // with a u16 (CMSG_SPACE(2) <= 32), so CMSG_FIRSTHDR is non-null and
    // CMSG_DATA points inside `control`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg_size);
    }
    loop {
        // SAFETY: `msg` points at `name`, `iovs` (over the heads and
        // bodies of `datagrams`, two per item, contiguous) and `control`, all alive for the call; the kernel only
        // reads them.
        let rc = unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_convert_both_ways() {
        let a = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4789);
        assert_eq!(from_sockaddr(&to_sockaddr(a)), Some(a));
    }
}
