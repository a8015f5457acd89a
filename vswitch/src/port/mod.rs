//! Switch ports backed by real devices: the only code that reads and writes
//! frames to the kernel.
//!
//! - `tap`: a TAP device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), created
//!   persistent so a restarted daemon reattaches to it.
//! - `packet_socket`: the host end of a veth pair, read and written through
//!   an `AF_PACKET` socket with `PACKET_VNET_HDR`.
//!
//! Both carry the virtio-net header, so TSO/GSO super-frames cross the switch
//! whole ([`crate::buf::VnetHdr`]).

use std::io;
use std::os::fd::RawFd;

use crate::buf::PacketBuf;

pub mod datagram;

/// A device the datapath reads frames from and writes frames to.
///
/// Both calls are non-blocking: `Err(WouldBlock)` means nothing to read, or
/// no room to write (the frame is then dropped and counted, as the kernel
/// drops on a full queue).
pub trait PortIo: Send + core::fmt::Debug {
    /// Reads one frame, with its virtio-net header, into `buf`.
    ///
    /// # Errors
    /// `WouldBlock` when no frame is queued; any other error from the device.
    fn recv(&mut self, buf: &mut PacketBuf) -> io::Result<()>;

    /// Writes the frame in `buf`, with its virtio-net header.
    ///
    /// # Errors
    /// `WouldBlock` when the device's queue is full; any other error from
    /// the device.
    fn send(&mut self, buf: &PacketBuf) -> io::Result<()>;

    /// The descriptor to poll for readability.
    fn raw_fd(&self) -> RawFd;
}
