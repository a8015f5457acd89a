//! The host end of a veth pair as a switch port, through an `AF_PACKET`
//! socket.
//!
//! The socket is `SOCK_RAW` (whole Ethernet frames), bound to one interface
//! for every protocol (`ETH_P_ALL`), non-blocking, and has:
//! - `PACKET_VNET_HDR`: each frame read or written is preceded by a
//!   [`VnetHdr`], so GSO super-frames and partial checksums pass whole, as
//!   with a TAP;
//! - `PACKET_IGNORE_OUTGOING`: frames the interface transmits (ours among
//!   them) are not read back;
//! - receive and send buffers of [`SOCKET_BUFFER`] bytes, set with the
//!   `…FORCE` options so `net.core.rmem_max` does not cap them.
//!
//! The socket is created with protocol 0, which receives nothing, and only
//! then bound with `ETH_P_ALL`, so no frame of another interface slips in
//! before the bind. It belongs to the namespace of the thread that creates
//! it ([`crate::netns::run_in`]).
// setsockopt(2) and bind(2) with a `sockaddr_ll` have no safe wrapper in
// nix or socket2 for these packet-socket options.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use libc::{c_int, socklen_t};
use nix::sys::socket::MsgFlags;

use std::sync::atomic::{AtomicU64, Ordering};

use super::mmsg::{self, Runt};
use super::{PortError, PortIo, RxBatch, SendOutcome, check_ifname, check_sent, finish_recv};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;

/// Receive and send buffer of each packet socket, in bytes.
///
/// The kernel's default (`net.core.rmem_default`, 208 KiB) holds only two or
/// three 64 KiB GSO frames: a TCP window's burst from a sandbox overflows it
/// and the kernel drops the rest before the datapath sees them. This holds a
/// window's worth; memory is charged only while frames wait.
pub const SOCKET_BUFFER: c_int = 16 << 20;

/// An `AF_PACKET` socket bound to one interface, used as a switch port.
#[derive(Debug)]
pub struct PacketSocketPort {
    fd: OwnedFd,
    name: String,
    index: u32,
    /// Drops read from `PACKET_STATISTICS` so far (reading resets the
    /// kernel's counter, so they are accumulated here).
    dropped: AtomicU64,
}

impl PacketSocketPort {
    /// Opens a packet socket on the interface `name` of the calling thread's
    /// namespace.
    ///
    /// The interface must be up for frames to flow, and should carry no
    /// address of the host, since the host's own stack sees the same frames.
    ///
    /// # Errors
    /// [`PortError::InvalidName`], [`PortError::LinkIndex`] when there is no
    /// such interface, and one variant per failing socket call.
    pub fn open(name: &str) -> Result<Self, PortError> {
        check_ifname(name)?;
        let index = nix::net::if_::if_nametoindex(name).map_err(|errno| PortError::LinkIndex {
            name: name.to_owned(),
            source: errno.into(),
        })?;
        let socket = socket2::Socket::new(
            socket2::Domain::PACKET,
            socket2::Type::RAW.nonblocking(),
            None,
        )
        .map_err(|source| PortError::OpenPacketSocket {
            name: name.to_owned(),
            source,
        })?;
        let fd = OwnedFd::from(socket);
        for (option, optname) in [
            ("PACKET_VNET_HDR", libc::PACKET_VNET_HDR),
            ("PACKET_IGNORE_OUTGOING", libc::PACKET_IGNORE_OUTGOING),
        ] {
            set_int_option(fd.as_fd(), libc::SOL_PACKET, optname, 1).map_err(|source| {
                PortError::SetSocketOption {
                    name: name.to_owned(),
                    option,
                    source,
                }
            })?;
        }
        for (option, optname) in [
            ("SO_RCVBUFFORCE", libc::SO_RCVBUFFORCE),
            ("SO_SNDBUFFORCE", libc::SO_SNDBUFFORCE),
        ] {
            set_int_option(fd.as_fd(), libc::SOL_SOCKET, optname, SOCKET_BUFFER).map_err(
                |source| PortError::SetSocketOption {
                    name: name.to_owned(),
                    option,
                    source,
                },
            )?;
        }
        bind_all_protocols(fd.as_fd(), index).map_err(|source| PortError::BindPacketSocket {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            fd,
            name: name.to_owned(),
            index,
            dropped: AtomicU64::new(0),
        })
    }

    /// The interface name the socket was bound to.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index the socket is bound to.
    #[must_use]
    pub const fn index(&self) -> u32 {
        self.index
    }
}

impl PortIo for PacketSocketPort {
    fn recv(&self, buf: &mut PacketBuf) -> io::Result<()> {
        let mut hdr = [0u8; VnetHdr::LEN];
        let rx = buf.rx_space();
        let space = rx.len();
        let (n, truncated) = {
            let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(rx)];
            let msg = nix::sys::socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                None,
                MsgFlags::empty(),
            )?;
            (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC))
        };
        if truncated {
            buf.set_received(0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame longer than the packet buffer",
            ));
        }
        finish_recv(buf, &hdr, n, space)
    }

    fn send(&self, buf: &PacketBuf) -> io::Result<()> {
        let hdr = buf.vnet.to_bytes();
        let frame = buf.frame();
        // The socket is bound, so no destination address is needed: the
        // kernel sends on the bound interface.
        let n = nix::sys::uio::writev(&self.fd, &[IoSlice::new(&hdr), IoSlice::new(frame)])?;
        check_sent(n, hdr.len() + frame.len())
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv_batch(&self, id: PortId, batch: &mut RxBatch) -> io::Result<()> {
        mmsg::recv_batch(self.fd.as_raw_fd(), id, batch, Runt::Error)
    }

    fn send_batch(&self, frames: &[&PacketBuf]) -> SendOutcome {
        mmsg::send_batch(self.fd.as_raw_fd(), frames)
    }

    /// Frames the socket's receive queue had no room for
    /// (`PACKET_STATISTICS`' `tp_drops`), accumulated across reads.
    fn kernel_dropped(&self) -> u64 {
        let new = packet_drops(self.fd.as_fd()).unwrap_or(0);
        self.dropped.fetch_add(new, Ordering::Relaxed) + new
    }
}

/// Reads and resets the socket's `PACKET_STATISTICS`; returns the drops.
fn packet_drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = socklen_t::try_from(size_of::<libc::tpacket_stats>())
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `fd` is an open packet socket; the kernel writes at most
    // `len` bytes into `stats`, a `tpacket_stats` that lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stats.tp_drops))
}

/// Sets an `int` socket option.
fn set_int_option(fd: BorrowedFd<'_>, level: c_int, option: c_int, value: c_int) -> io::Result<()> {
    let len = socklen_t::try_from(size_of::<c_int>()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `fd` is an open socket; the option value points at `value`, an
    // `int` that lives for the call, and `len` is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds a packet socket to interface `index` for every protocol.
fn bind_all_protocols(fd: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let addr = libc::sockaddr_ll {
        sll_family: libc::sa_family_t::try_from(libc::AF_PACKET).map_err(invalid)?,
        sll_protocol: u16::try_from(libc::ETH_P_ALL).map_err(invalid)?.to_be(),
        sll_ifindex: c_int::try_from(index).map_err(invalid)?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = socklen_t::try_from(size_of::<libc::sockaddr_ll>()).map_err(invalid)?;
    // SAFETY: `fd` is an open AF_PACKET socket; the address points at a
    // fully initialised `sockaddr_ll` that lives for the call, and `len` is
    // its size.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
