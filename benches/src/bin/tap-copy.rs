//! The floor of a userspace datapath: copies frames between two TAP devices
//! (virtio-net header, checksum and TSO offloads, as `vswitchd` opens them)
//! and does nothing else: no switching, no counters, one thread per
//! direction sleeping in `poll(2)`.
//!
//! `benches/scripts/e2e-compare.sh` runs it as a third path, so the cost of
//! crossing userspace at all is told apart from the cost of the switch.
//!
//!   tap-copy NAME_A NAME_B
//!
//! Creates both devices in the current namespace, prints `ready`, and copies
//! until killed; the devices are persistent, so whoever moved them into a
//! namespace deletes them with it.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vswitch::buf::PacketBuf;
use vswitch::port::{PortIo, TapPort};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: tap-copy NAME_A NAME_B");
        return ExitCode::from(2);
    };
    let open = |name: &str| TapPort::create(name).map(Arc::new);
    let (a, b) = match (open(a), open(b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tap-copy: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = io::stdout().flush();
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    let reverse = std::thread::spawn(move || copy(&b2, &*a2));
    let result = copy(&a, &*b);
    let _ = reverse.join();
    if let Err(e) = result {
        eprintln!("tap-copy: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Moves every frame readable on `from` to `to`, sleeping while there is
/// none. A failed write loses that frame; a failed `poll` or read ends it.
fn copy(from: &TapPort, to: &dyn PortIo) -> io::Result<()> {
    let mut buf = PacketBuf::new();
    loop {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        loop {
            match from.recv(&mut buf) {
                Ok(()) => {
                    let _ = to.send(&buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A frame too long for the buffer is skipped, as the
                // datapath does; anything else means the device is gone.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::InvalidData
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
