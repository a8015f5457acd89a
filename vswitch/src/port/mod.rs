//! Switch ports backed by real devices: the only code that reads and writes
//! frames to the kernel.
//!
//! - [`tap`]: a TAP device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), created
//!   persistent so a restarted daemon reattaches to it.
//! - [`packet_socket`]: the host end of a veth pair, read and written through
//!   an `AF_PACKET` socket with `PACKET_VNET_HDR`.
//!
//! Both carry the virtio-net header, so TSO/GSO super-frames cross the switch
//! whole ([`crate::buf::VnetHdr`]).
//!
//! Batches: [`PortIo::recv_batch`] fills an [`RxBatch`] and tags each frame
//! with its logical ingress port, so one descriptor (a VXLAN socket, an
//! uplink) can carry many ports; [`PortIo::send_batch`] takes a port's
//! queue at once. Packet sockets (and the test datagram ports) do both with
//! one `recvmmsg`/`sendmmsg` per batch; a TAP has no batch call, and reads
//! and writes a batch with one `io_uring_enter` ([`uring`], `vswitchd
//! --tap-io uring`), or one frame per system call (`--tap-io syscalls`, and
//! wherever io_uring is unavailable). Not built yet, and so without
//! figures: `PACKET_MMAP` (TPACKET_V3) rings or AF_XDP sockets for veth
//! ends. Opening a device can fail in many ways,
//! each a [`PortError`] variant naming the device; moving frames fails only
//! with the `io::Error` of the read or write, which the datapath counts.

use std::io;
use std::os::fd::RawFd;

use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;

pub mod batch;
pub mod datagram;
mod mmsg;
pub mod packet_socket;
pub mod tap;
pub mod uring;

pub use batch::RxBatch;

pub use packet_socket::PacketSocketPort;
pub use tap::{TapIo, TapPort};

/// Opening or configuring a device port failed. One variant per failing
/// operation, each naming the device it was about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The interface name is empty, longer than 15 bytes, or holds a NUL,
    /// a `/` or white space.
    #[error("invalid interface name {name:?}")]
    InvalidName {
        /// The name offered.
        name: String,
    },
    /// Opening `/dev/net/tun` or attaching it to the device (`TUNSETIFF`)
    /// failed.
    #[error("cannot open tap device {name}: {source}")]
    OpenTap {
        /// The device name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// [`TapPort::open`] found no device of that name in the namespace.
    #[error("no tap device named {name}")]
    TapNotFound {
        /// The device name.
        name: String,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("cannot set the virtio-net header size of tap {name}: {source}")]
    SetVnetHdrSize {
        /// The device name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `TUNSETOFFLOAD` failed.
    #[error("cannot set the offloads of tap {name}: {source}")]
    SetOffload {
        /// The device name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("cannot set the persistence of tap {name}: {source}")]
    SetPersist {
        /// The device name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// `TUNGETIFF` failed.
    #[error("cannot query tap {name}: {source}")]
    QueryTap {
        /// The device name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// No interface of that name exists in the namespace.
    #[error("no interface named {name}: {source}")]
    LinkIndex {
        /// The interface name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Creating the `AF_PACKET` socket failed.
    #[error("cannot open a packet socket for {name}: {source}")]
    OpenPacketSocket {
        /// The interface name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting a socket option on the packet socket failed.
    #[error("cannot set {option} on the packet socket for {name}: {source}")]
    SetSocketOption {
        /// The interface name.
        name: String,
        /// The option, e.g. `PACKET_VNET_HDR`.
        option: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Binding the packet socket to the interface failed.
    #[error("cannot bind the packet socket to {name}: {source}")]
    BindPacketSocket {
        /// The interface name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Checks an interface name as the kernel's `dev_valid_name` does, so a bad
/// name fails with a clear error rather than an `EINVAL` from an ioctl.
pub(crate) fn check_ifname(name: &str) -> Result<(), PortError> {
    let valid = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace());
    if valid {
        Ok(())
    } else {
        Err(PortError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// What a port's device accepts beyond plain, checksummed frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCaps {
    /// GSO super-frames ([`VnetHdr::is_gso`]) are taken whole; otherwise
    /// the executor segments them with [`crate::gso`].
    pub gso: bool,
    /// Partial checksums ([`VnetHdr::F_NEEDS_CSUM`]) are taken; otherwise
    /// the executor completes them.
    pub partial_csum: bool,
}

impl PortCaps {
    /// Everything a TAP or a packet socket with a virtio-net header takes.
    pub const OFFLOADS: Self = Self {
        gso: true,
        partial_csum: true,
    };
    /// Only complete, wire-sized frames (a device or socket without a
    /// virtio-net header).
    pub const NONE: Self = Self {
        gso: false,
        partial_csum: false,
    };
}

impl Default for PortCaps {
    fn default() -> Self {
        Self::OFFLOADS
    }
}

/// What a batch send did: which frames the device took, and the error of
/// the first it refused, if any.
///
/// A device written one call at a time (`write`, `sendmmsg`) stops at the
/// first refusal, so what it took is a prefix of the batch. One that
/// submits a whole round of writes at once (io_uring) learns of a refusal
/// only after the later writes of the round have gone, and those may have
/// been taken (a write refused for its own frame, such as one too long for
/// the socket, or a queue that drained in between): [`SendOutcome::later`]
/// records them, so they are counted as sent, not as dropped, and never
/// sent twice.
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Frames taken from the front of the batch, before the first refused
    /// one (all of them when `error` is `None`).
    pub sent: usize,
    /// Why frame `sent` was refused (`WouldBlock`: the device's queue is
    /// full).
    pub error: Option<io::Error>,
    /// Frames after the refused one that the device took all the same: bit
    /// `i` stands for frame `sent + 1 + i` (so a round is at most 65
    /// writes). Zero for a device that stops at the first refusal.
    pub later: u64,
}

impl SendOutcome {
    /// All `n` frames taken.
    #[must_use]
    pub const fn all(n: usize) -> Self {
        Self {
            sent: n,
            error: None,
            later: 0,
        }
    }

    /// How many frames the device took, wherever they were in the batch.
    #[must_use]
    pub const fn taken(&self) -> usize {
        self.sent + self.later.count_ones() as usize
    }

    /// Whether the device took frame `i` of the batch.
    #[must_use]
    pub const fn is_taken(&self, i: usize) -> bool {
        if i < self.sent {
            return true;
        }
        match (i - self.sent).checked_sub(1) {
            Some(bit) if bit < 64 => self.later & (1 << bit) != 0,
            _ => false,
        }
    }

    /// The frames of `frames` (the batch that was sent) the device took,
    /// in order.
    pub fn taken_of<'a, T>(&self, frames: &'a [T]) -> impl Iterator<Item = &'a T> {
        let later = self.later;
        let sent = self.sent.min(frames.len());
        let after = frames.get(sent + 1..).unwrap_or(&[]);
        frames[..sent].iter().chain(
            after
                .iter()
                .take(64)
                .enumerate()
                .filter(move |&(i, _)| later & (1 << i) != 0)
                .map(|(_, f)| f),
        )
    }
}

/// A device the datapath reads frames from and writes frames to.
///
/// Both calls are non-blocking: `Err(WouldBlock)` means nothing to read, or
/// no room to write (the frame is then dropped and counted, as the kernel
/// drops on a full queue). `InvalidData` from `recv` means one bad frame
/// (longer than a buffer, or shorter than its header), not a broken device.
///
/// A port is shared: the worker that polls it receives, and any worker may
/// transmit to it (the kernel takes each frame whole), so both take `&self`.
pub trait PortIo: Send + Sync + core::fmt::Debug {
    /// Reads one frame, with its virtio-net header, into `buf`.
    ///
    /// # Errors
    /// `WouldBlock` when no frame is queued; any other error from the device.
    fn recv(&self, buf: &mut PacketBuf) -> io::Result<()>;

    /// Writes the frame in `buf`, with its virtio-net header.
    ///
    /// # Errors
    /// `WouldBlock` when the device's queue is full; any other error from
    /// the device.
    fn send(&self, buf: &PacketBuf) -> io::Result<()>;

    /// The descriptor to poll for readability.
    fn raw_fd(&self) -> RawFd;

    /// Reads frames into the free slots of `batch`, tagging each with the
    /// logical port it arrived on: `id` for a device that is one port, the
    /// port an outer header maps to for a device that carries many (a
    /// VXLAN socket, an uplink). Unreadable frames are recorded in the
    /// batch as receive errors and skipped.
    ///
    /// Returns `Ok(())` when the batch is full (more may be queued), and
    /// `Err(WouldBlock)` when the device is drained; frames committed
    /// before any error stay in the batch. The default reads one frame at
    /// a time with [`PortIo::recv`].
    ///
    /// # Errors
    /// `WouldBlock` when drained; any other error from the device.
    fn recv_batch(&self, id: PortId, batch: &mut RxBatch) -> io::Result<()> {
        recv_each(self, id, batch)
    }

    /// Writes `frames` in order, stopping at the first the device refuses.
    /// The default writes one frame at a time with [`PortIo::send`].
    fn send_batch(&self, frames: &[&PacketBuf]) -> SendOutcome {
        send_each(self, frames)
    }

    /// What the device accepts (by default, what a virtio-net header
    /// allows: super-frames and partial checksums).
    fn caps(&self) -> PortCaps {
        PortCaps::OFFLOADS
    }

    /// Frames the kernel dropped on this port before the switch could
    /// read them or after it wrote them (socket overflow, a full TAP
    /// queue), in total since the port was opened.
    fn kernel_dropped(&self) -> u64 {
        0
    }
}

/// [`PortIo::recv_batch`] one frame at a time, with [`PortIo::recv`].
///
/// # Errors
/// As [`PortIo::recv_batch`].
pub(crate) fn recv_each<P: PortIo + ?Sized>(
    port: &P,
    id: PortId,
    batch: &mut RxBatch,
) -> io::Result<()> {
    while let Some(buf) = batch.next_slot() {
        match port.recv(buf) {
            Ok(()) => batch.commit(id),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => batch.rx_error(id),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`PortIo::send_batch`] one frame at a time, with [`PortIo::send`].
pub(crate) fn send_each<P: PortIo + ?Sized>(port: &P, frames: &[&PacketBuf]) -> SendOutcome {
    let mut out = SendOutcome::default();
    for frame in frames {
        match port.send(frame) {
            Ok(()) => out.sent += 1,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
}

/// Completes a receive of `n` bytes into a virtio-net header and
/// [`PacketBuf::rx_space`] (`space` bytes): decodes the header and records
/// the frame's length.
///
/// A read shorter than the header, or a frame longer than the space (one
/// the kernel truncated), is `InvalidData`: the datapath counts and drops
/// it, and the buffer is left empty.
pub(crate) fn finish_recv(
    buf: &mut PacketBuf,
    hdr: &[u8; VnetHdr::LEN],
    n: usize,
    space: usize,
) -> io::Result<()> {
    let Some(len) = n.checked_sub(VnetHdr::LEN) else {
        buf.set_received(0);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "read shorter than a virtio-net header",
        ));
    };
    if len > space {
        buf.set_received(0);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame longer than the packet buffer",
        ));
    }
    buf.vnet = VnetHdr::from_bytes(hdr);
    buf.set_received(len);
    Ok(())
}

/// Checks that a write took the whole header and frame. Devices write
/// frames whole or not at all, so a short count means something is wrong.
pub(crate) fn check_sent(n: usize, expected: usize) -> io::Result<()> {
    if n == expected {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "device accepted part of a frame",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("tap%d").is_ok());
        assert!(check_ifname("fifteen-bytes-1").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "sixteen-bytes-12",
            "a/b",
            "a:b",
            "a b",
            "a\0b",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_receive_shorter_than_the_header_is_invalid_data_not_a_panic() {
        let mut buf = PacketBuf::new();
        let err = finish_recv(&mut buf, &[0; VnetHdr::LEN], 3, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_truncated_frame_is_invalid_data() {
        let mut buf = PacketBuf::new();
        let err = finish_recv(&mut buf, &[0; VnetHdr::LEN], 10 + 101, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_receive_sets_header_and_length() {
        let mut buf = PacketBuf::new();
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        finish_recv(&mut buf, &hdr.to_bytes(), 10 + 60, 100).unwrap();
        assert_eq!(buf.len(), 60);
        assert_eq!(buf.vnet, hdr);
        assert!(check_sent(70, 70).is_ok());
        assert!(check_sent(69, 70).is_err());
    }

    #[test]
    fn an_outcome_names_the_frames_taken_after_a_refused_one() {
        let frames: Vec<u8> = (0..10).collect();
        let all = SendOutcome::all(10);
        assert_eq!(all.taken(), 10);
        assert!(all.is_taken(9) && !all.is_taken(10));
        assert_eq!(all.taken_of(&frames).count(), 10);

        // Frames 0-2 taken, 3 refused, then 4 and 6 taken, 5 and 7-9 not.
        let out = SendOutcome {
            sent: 3,
            error: Some(io::ErrorKind::InvalidInput.into()),
            later: 0b101,
        };
        assert_eq!(out.taken(), 5);
        let taken: Vec<u8> = out.taken_of(&frames).copied().collect();
        assert_eq!(taken, [0, 1, 2, 4, 6]);
        let by_index: Vec<u8> = frames
            .iter()
            .copied()
            .filter(|&i| out.is_taken(usize::from(i)))
            .collect();
        assert_eq!(by_index, taken);

        // The last frame refused: the frames before it, nothing after.
        let out = SendOutcome {
            sent: 9,
            error: Some(io::ErrorKind::WouldBlock.into()),
            later: 0,
        };
        assert_eq!(out.taken(), 9);
        assert_eq!(out.taken_of(&frames).count(), 9);
        assert!(out.is_taken(8) && !out.is_taken(9));
    }
}
