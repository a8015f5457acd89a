//! A TAP device as a switch port: frames carry their virtio-net header, GSO
//! super-frames cross whole, and the device outlives the daemon.
//!
//! Why raw ioctls through nix rather than the `tun-tap` crate: tun-tap 0.1.4
//! issues only `TUNSETIFF` (from a C helper), so it can set neither the
//! virtio-net header size, the offloads nor persistence, and it cannot
//! attach to an existing device without risking creating one; the five
//! ioctls below are each wrapped once, with their safety argument.
//!
//! The device lives in the network namespace of the thread that opens
//! `/dev/net/tun`, and stays usable through its descriptor when it is later
//! moved to another namespace; to re-attach after a restart, call
//! [`TapPort::open`] inside the namespace the device now lives in
//! ([`crate::netns::run_in`]).
// The TUN ioctls (TUNSETIFF, TUNGETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD,
// TUNSETPERSIST) have no safe wrapper, and `ifreq` is built zeroed.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_char, c_int, c_short};
use nix::errno::Errno;

use super::{
    PortError, PortIo, RxBatch, SendOutcome, check_ifname, check_sent, finish_recv, recv_each,
    send_each, uring,
};
use crate::buf::{PacketBuf, VnetHdr};
use crate::ids::PortId;
use crate::netconf::Netlink;
use crate::netns::Netns;

/// The clone device every TAP is made through.
const TUN_DEVICE: &str = "/dev/net/tun";

/// The ioctls, declared through nix's macros (each generates an `unsafe fn`
/// that calls `ioctl(2)` with the given request number).
mod ioctl {
    #![allow(unreachable_pub)]
    nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_read_bad!(tun_get_iff, libc::TUNGETIFF, libc::ifreq);
    nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, libc::TUNSETVNETHDRSZ, libc::c_int);
    nix::ioctl_write_int_bad!(tun_set_offload, libc::TUNSETOFFLOAD);
    nix::ioctl_write_int_bad!(tun_set_persist, libc::TUNSETPERSIST);
}

/// A TAP device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), non-blocking, with
/// checksum and TSO offloads on, so that the kernel hands over and accepts
/// TCP super-frames up to 64 KiB described by a [`VnetHdr`].
#[derive(Debug)]
pub struct TapPort {
    file: File,
    name: String,
    /// Where the device's transmit drops are read, once known
    /// ([`TapPort::watch_kernel_drops`]): the namespace's path and the
    /// device's name there. A path, not an open handle: an endpoint costs
    /// one descriptor (its TAP), and counters are read rarely.
    drops: Option<(std::path::PathBuf, String)>,
    /// How frames are moved ([`TapPort::with_io`]).
    io: TapIo,
    /// How many reads the next io_uring receive asks for.
    pace: uring::Pace,
}

/// How a TAP port's frames cross between the switch and the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TapIo {
    /// A batch of reads, or a queue of writes, in one `io_uring_enter`
    /// on the calling thread's ring ([`super::uring`]); a thread without
    /// io_uring uses system calls.
    #[default]
    Uring,
    /// One `readv` or `writev` per frame.
    Syscalls,
}

impl TapPort {
    /// Creates a new persistent TAP device named `name` in the calling
    /// thread's network namespace and attaches to it. A name with `%d`
    /// (`"tap%d"`) lets the kernel number it; [`TapPort::name`] tells which.
    ///
    /// The device stays after the port is dropped (a restarted daemon
    /// re-attaches with [`TapPort::open`]) until [`TapPort::destroy`].
    ///
    /// # Errors
    /// [`PortError::InvalidName`]; [`PortError::OpenTap`] when
    /// `/dev/net/tun` cannot be opened or the device cannot be created
    /// (`EBUSY` when a device of that name exists already: `create` never
    /// attaches to an existing device); the other variants when the header
    /// size, offloads or persistence cannot be set, in which case the new
    /// device disappears again.
    pub fn create(name: &str) -> Result<Self, PortError> {
        check_ifname(name)?;
        let file = open_tun(name)?;
        let mut ifr = ifreq(name, TAP_FLAGS | IFF_TUN_EXCL);
        // SAFETY: `file` is an open /dev/net/tun descriptor and `ifr` a valid,
        // initialised `ifreq` that the kernel reads and writes the chosen
        // name back into; it outlives the call.
        unsafe { ioctl::tun_set_iff(file.as_raw_fd(), &raw mut ifr) }.map_err(|errno| {
            PortError::OpenTap {
                name: name.to_owned(),
                source: errno.into(),
            }
        })?;
        let port = Self {
            name: ifr_name(&ifr),
            file,
            drops: None,
            io: TapIo::default(),
            pace: uring::Pace::default(),
        };
        port.set_vnet_hdr_size()?;
        port.set_offloads()?;
        port.set_persist(true)?;
        Ok(port)
    }

    /// Re-attaches to the existing persistent TAP device `name` in the
    /// calling thread's namespace, for example after a daemon restart.
    ///
    /// It never creates a device: when none of that name exists (or it
    /// disappears while attaching), it fails with
    /// [`PortError::TapNotFound`] and leaves nothing behind.
    ///
    /// # Errors
    /// [`PortError::InvalidName`], [`PortError::TapNotFound`];
    /// [`PortError::OpenTap`] when the device is not a TAP (`EINVAL`) or
    /// another descriptor is attached to it (`EBUSY`); the other variants
    /// when the header size or offloads cannot be set.
    pub fn open(name: &str) -> Result<Self, PortError> {
        check_ifname(name)?;
        let not_found = || PortError::TapNotFound {
            name: name.to_owned(),
        };
        let index = |name: &str| match nix::net::if_::if_nametoindex(name) {
            Ok(index) => Ok(Some(index)),
            Err(Errno::ENODEV) => Ok(None),
            Err(errno) => Err(PortError::OpenTap {
                name: name.to_owned(),
                source: errno.into(),
            }),
        };
        let before = index(name)?.ok_or_else(not_found)?;
        let file = open_tun(name)?;
        let mut ifr = ifreq(name, TAP_FLAGS);
        // SAFETY: as in `create`: an open /dev/net/tun descriptor and a valid
        // `ifreq` that outlives the call.
        unsafe { ioctl::tun_set_iff(file.as_raw_fd(), &raw mut ifr) }.map_err(|errno| {
            PortError::OpenTap {
                name: name.to_owned(),
                source: errno.into(),
            }
        })?;
        // Between the look-up and TUNSETIFF the device may have gone, and
        // TUNSETIFF then made a new, non-persistent one: a different index.
        // Dropping `file` removes that one again.
        if index(name)? != Some(before) {
            return Err(not_found());
        }
        let port = Self {
            name: ifr_name(&ifr),
            file,
            drops: None,
            io: TapIo::default(),
            pace: uring::Pace::default(),
        };
        port.set_vnet_hdr_size()?;
        port.set_offloads()?;
        Ok(port)
    }

    /// Reports the device's transmit drops (frames its sandbox sent that
    /// the queue towards the switch had no room for) as
    /// [`PortIo::kernel_dropped`], read over netlink in the namespace at
    /// `netns`, where the device is named `ifname`. Counters are read only
    /// when asked (`vsctl show-ports`), never per frame.
    #[must_use]
    pub fn watch_kernel_drops(mut self, netns: &std::path::Path, ifname: &str) -> Self {
        self.drops = Some((netns.to_path_buf(), ifname.to_owned()));
        self
    }

    /// Moves frames as `io` says (by default [`TapIo::Uring`]).
    #[must_use]
    pub fn with_io(mut self, io: TapIo) -> Self {
        self.io = io;
        self
    }

    /// How the port moves frames.
    #[must_use]
    pub const fn io(&self) -> TapIo {
        self.io
    }

    /// Clears persistence and closes the device, which makes the kernel
    /// remove it.
    ///
    /// # Errors
    /// [`PortError::SetPersist`]; the descriptor is closed anyway and the
    /// device then stays.
    pub fn destroy(self) -> Result<(), PortError> {
        self.set_persist(false)
    }

    /// The device name when the port was opened. The device may since have
    /// been renamed (moved into a container as `eth0`): see
    /// [`TapPort::current_name`].
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's name now, asked from the kernel (`TUNGETIFF`).
    ///
    /// # Errors
    /// [`PortError::QueryTap`].
    pub fn current_name(&self) -> Result<String, PortError> {
        let mut ifr = ifreq("", 0);
        // SAFETY: an open, attached tun descriptor and a valid `ifreq` the
        // kernel fills in; it outlives the call.
        unsafe { ioctl::tun_get_iff(self.file.as_raw_fd(), &raw mut ifr) }.map_err(|errno| {
            PortError::QueryTap {
                name: self.name.clone(),
                source: errno.into(),
            }
        })?;
        Ok(ifr_name(&ifr))
    }

    /// Sets the virtio-net header to the 10-byte `struct virtio_net_hdr`
    /// ([`VnetHdr::LEN`]), without the `num_buffers` field of the
    /// mergeable-buffers variant.
    fn set_vnet_hdr_size(&self) -> Result<(), PortError> {
        let size: c_int = VNET_HDR_LEN;
        // SAFETY: an open, attached tun descriptor; the kernel reads one
        // `int` through the pointer, which points at `size` for the call.
        unsafe { ioctl::tun_set_vnet_hdr_sz(self.file.as_raw_fd(), &raw const size) }.map_err(
            |errno| PortError::SetVnetHdrSize {
                name: self.name.clone(),
                source: errno.into(),
            },
        )?;
        Ok(())
    }

    /// Announces that we accept partial checksums and TCP super-frames
    /// (TSO over IPv4 and IPv6), so the kernel stops segmenting for us.
    fn set_offloads(&self) -> Result<(), PortError> {
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        let offloads = c_int::try_from(offloads).map_err(|_| PortError::SetOffload {
            name: self.name.clone(),
            source: io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: an open, attached tun descriptor; the argument is a plain
        // integer, no memory is passed.
        unsafe { ioctl::tun_set_offload(self.file.as_raw_fd(), offloads) }.map_err(|errno| {
            PortError::SetOffload {
                name: self.name.clone(),
                source: errno.into(),
            }
        })?;
        Ok(())
    }

    /// Sets or clears `TUNSETPERSIST`: whether the device survives the
    /// closing of its last descriptor.
    fn set_persist(&self, persist: bool) -> Result<(), PortError> {
        // SAFETY: an open, attached tun descriptor; the argument is a plain
        // integer, no memory is passed.
        unsafe { ioctl::tun_set_persist(self.file.as_raw_fd(), c_int::from(persist)) }.map_err(
            |errno| PortError::SetPersist {
                name: self.name.clone(),
                source: errno.into(),
            },
        )?;
        Ok(())
    }
}

impl PortIo for TapPort {
    fn recv(&self, buf: &mut PacketBuf) -> io::Result<()> {
        let mut hdr = [0u8; VnetHdr::LEN];
        let rx = buf.rx_space();
        let space = rx.len();
        let n = {
            let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(rx)];
            nix::sys::uio::readv(&self.file, &mut iov)?
        };
        // A TAP reports the whole frame's length even when it copied less,
        // so `finish_recv` also catches a frame larger than the buffer.
        finish_recv(buf, &hdr, n, space)
    }

    fn send(&self, buf: &PacketBuf) -> io::Result<()> {
        let hdr = buf.vnet.to_bytes();
        let frame = buf.frame();
        let n = nix::sys::uio::writev(&self.file, &[IoSlice::new(&hdr), IoSlice::new(frame)])?;
        check_sent(n, hdr.len() + frame.len())
    }

    fn recv_batch(&self, id: PortId, batch: &mut RxBatch) -> io::Result<()> {
        if self.io == TapIo::Uring
            && let Some(done) = uring::recv_batch(self.file.as_raw_fd(), id, batch, &self.pace)
        {
            return done;
        }
        recv_each(self, id, batch)
    }

    fn send_batch(&self, frames: &[&PacketBuf]) -> SendOutcome {
        if self.io == TapIo::Uring
            && let Some(out) = uring::send_batch(self.file.as_raw_fd(), frames)
        {
            return out;
        }
        send_each(self, frames)
    }

    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn kernel_dropped(&self) -> u64 {
        self.drops.as_ref().map_or(0, |(netns, ifname)| {
            Netns::open(netns)
                .ok()
                .and_then(|ns| Netlink::in_netns(&ns).ok())
                .and_then(|mut nl| nl.tx_dropped(ifname).ok())
                .unwrap_or(0)
        })
    }
}

impl AsFd for TapPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, as the `short` of `ifr_flags`.
const TAP_FLAGS: c_short = low_short(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);

/// `IFF_TUN_EXCL`: fail instead of attaching when the name exists.
const IFF_TUN_EXCL: c_short = low_short(libc::IFF_TUN_EXCL);

/// [`VnetHdr::LEN`] as the `int` `TUNSETVNETHDRSZ` takes (10 always fits).
const VNET_HDR_LEN: c_int = {
    assert!(VnetHdr::LEN == 10);
    10
};

/// The low 16 bits of an `IFF_*` flag set, as the `short` in `ifr_flags`
/// (`IFF_TUN_EXCL`, 0x8000, becomes negative, as in C).
const fn low_short(flags: c_int) -> c_short {
    let [a, b, _, _] = flags.to_le_bytes();
    c_short::from_le_bytes([a, b])
}

/// Opens the clone device: read-write, non-blocking, close-on-exec (std
/// adds `O_CLOEXEC` itself).
fn open_tun(name: &str) -> Result<File, PortError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_DEVICE)
        .map_err(|source| PortError::OpenTap {
            name: name.to_owned(),
            source,
        })
}

/// An `ifreq` naming `name` (already checked to fit) with `flags`.
fn ifreq(name: &str, flags: c_short) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a byte array and a union of
    // integers, addresses and byte arrays), for which all-zero bytes is a
    // valid value; zeroing also leaves the name NUL-terminated.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let room = ifr.ifr_name.len() - 1;
    for (dst, src) in ifr.ifr_name.iter_mut().take(room).zip(name.bytes()) {
        *dst = c_char::from_ne_bytes([src]);
    }
    ifr.ifr_ifru.ifru_flags = flags;
    ifr
}

/// The NUL-terminated name in an `ifreq`.
fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .map(|c| c.to_ne_bytes()[0])
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fit_the_short_of_ifr_flags() {
        assert_eq!(TAP_FLAGS, 0x5002);
        assert_eq!(IFF_TUN_EXCL, i16::MIN);
    }

    #[test]
    fn ifreq_round_trips_a_name_and_keeps_a_terminating_nul() {
        let ifr = ifreq("vswitch-tap0123", TAP_FLAGS);
        assert_eq!(ifr_name(&ifr), "vswitch-tap0123");
        assert_eq!(ifr.ifr_name[15], 0);
        // SAFETY: the union was written through `ifru_flags`.
        assert_eq!(unsafe { ifr.ifr_ifru.ifru_flags }, TAP_FLAGS);
    }
}
