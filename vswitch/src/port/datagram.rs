//! A port over a Unix datagram socket: each datagram is a virtio-net header
//! followed by one frame, the same framing a TAP with `IFF_VNET_HDR` uses.
//!
//! It lets the real datapath loop run against a test, a simulator or
//! another process without devices or root: hand one end of a socket pair
//! to the worker, keep the other.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use super::mmsg::{self, Runt};
use super::{PortCaps, PortIo, RxBatch, SendOutcome};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;

/// One end of a datagram socket pair, used as a switch port.
#[derive(Debug)]
pub struct DatagramPort {
    socket: UnixDatagram,
    caps: PortCaps,
}

impl DatagramPort {
    /// A connected pair: the port for the switch, and the peer's end. The
    /// port takes super-frames and partial checksums, as a TAP does.
    ///
    /// # Errors
    /// When the socket pair cannot be created.
    pub fn pair() -> io::Result<(Self, UnixDatagram)> {
        Self::pair_with(PortCaps::OFFLOADS)
    }

    /// A pair whose port announces `caps`: with [`PortCaps::NONE`] it
    /// stands for a device that takes only wire-sized, checksummed frames.
    ///
    /// # Errors
    /// When the socket pair cannot be created.
    pub fn pair_with(caps: PortCaps) -> io::Result<(Self, UnixDatagram)> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        Ok((Self { socket: ours, caps }, theirs))
    }
}

/// Reads a datagram written by [`DatagramPort`]: the header and the frame.
///
/// # Errors
/// From the socket; `InvalidData` for a datagram shorter than the header.
pub fn recv_frame(peer: &UnixDatagram) -> io::Result<(VnetHdr, Vec<u8>)> {
    let mut data = vec![0u8; VnetHdr::LEN + crate::buf::MAX_FRAME_LEN];
    let n = peer.recv(&mut data)?;
    let hdr: &[u8; VnetHdr::LEN] = data
        .get(..VnetHdr::LEN)
        .and_then(|h| h.try_into().ok())
        .filter(|_| n >= VnetHdr::LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram shorter than a virtio-net header",
            )
        })?;
    let hdr = VnetHdr::from_bytes(hdr);
    data.truncate(n);
    data.drain(..VnetHdr::LEN);
    Ok((hdr, data))
}

/// Writes one frame with a header, as the switch would read it.
///
/// # Errors
/// From the socket.
pub fn send_frame(peer: &UnixDatagram, hdr: &VnetHdr, frame: &[u8]) -> io::Result<()> {
    let h = hdr.to_bytes();
    let mut msg = Vec::with_capacity(h.len() + frame.len());
    msg.extend_from_slice(&h);
    msg.extend_from_slice(frame);
    peer.send(&msg).map(drop)
}

impl PortIo for DatagramPort {
    fn recv(&self, buf: &mut PacketBuf) -> io::Result<()> {
        let mut hdr = [0u8; VnetHdr::LEN];
        let n = {
            let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf.rx_space())];
            nix::sys::socket::recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                None,
                nix::sys::socket::MsgFlags::empty(),
            )
            .map_err(io::Error::from)?
            .bytes
        };
        if n < VnetHdr::LEN {
            // A runt datagram: deliver an empty frame, which the switch
            // counts as a runt, rather than failing the port.
            buf.vnet = VnetHdr::default();
            buf.set_received(0);
            return Ok(());
        }
        buf.vnet = VnetHdr::from_bytes(&hdr);
        buf.set_received(n - VnetHdr::LEN);
        Ok(())
    }

    fn send(&self, buf: &PacketBuf) -> io::Result<()> {
        let hdr = buf.vnet.to_bytes();
        let iov = [IoSlice::new(&hdr), IoSlice::new(buf.frame())];
        nix::sys::socket::sendmsg::<()>(
            self.socket.as_raw_fd(),
            &iov,
            &[],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .map(drop)
        .map_err(io::Error::from)
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn recv_batch(&self, id: PortId, batch: &mut RxBatch) -> io::Result<()> {
        mmsg::recv_batch(self.socket.as_raw_fd(), id, batch, Runt::Empty)
    }

    fn send_batch(&self, frames: &[&PacketBuf]) -> SendOutcome {
        mmsg::send_batch(self.socket.as_raw_fd(), frames)
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }
}
