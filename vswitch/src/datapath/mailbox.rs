//! Messages to the datapath thread: a channel plus a `mio::Waker`, so the
//! worker's `poll` returns as soon as something is sent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::ids::PortId;
use crate::port::PortIo;
use crate::switch::{FdbRow, PortStats, SwitchConfig};

/// How long a query to a worker may take: a worker answers between two
/// batches, within microseconds, so this only bounds a worker that is stuck.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Something for the datapath to do between batches.
#[derive(Debug)]
pub enum Command {
    /// A new port (its configuration arrives, or has arrived, in a
    /// [`Command::Config`]): always a transmit target; also polled for
    /// frames when `poll` is set (exactly one worker polls each port).
    AddPort {
        /// The port.
        id: PortId,
        /// Its device, shared by every worker.
        port: Arc<dyn PortIo>,
        /// Whether this worker receives from it.
        poll: bool,
    },
    /// Stop using a port; the acknowledgement hands the worker's reference
    /// back, so the descriptor is closed by the caller and not by the
    /// worker: closing a TAP or a packet socket waits in the kernel for an
    /// RCU grace period, which must not stall the datapath.
    RemovePort(PortId, Sender<Option<Arc<dyn PortIo>>>),
    /// Replace the switch configuration.
    Config(Arc<SwitchConfig>),
    /// Answer with the FDB's live entries.
    Fdb(Sender<Vec<FdbRow>>),
    /// Answer with every configured port's counters.
    PortStats(Sender<Vec<(PortId, PortStats)>>),
    /// Run a frame through a copy of the switch ([`crate::switch::DryRun`])
    /// and answer with the decisions; nothing is learned, counted or sent.
    Trace {
        /// The port the frame is taken to arrive on.
        ingress: PortId,
        /// The frame.
        frame: Vec<u8>,
        /// Where the decisions go.
        reply: Sender<crate::switch::DryRun>,
    },
    /// Copy the frames of a port to a capture ([`super::capture`]).
    Capture(super::capture::Tap),
    /// Answer with the FDB replica's event counters.
    FdbStats(Sender<crate::switch::FdbStats>),
    /// Hand packets for beyond the gateway ([`crate::switch::Action::Host`])
    /// to this host connector from now on.
    Host(crate::connector::HostLink),
    /// Tell this gate when frames move and ask it before sleeping
    /// (`vswitchd --cpu-latency-qos traffic`).
    CpuLatency(std::sync::Arc<super::cpu_latency::TrafficGate>),
    /// Leave the loop.
    Shutdown,
}

/// The sending side, cloneable, held by the control and API threads.
#[derive(Clone, Debug)]
pub struct Mailbox {
    tx: Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl Mailbox {
    pub(super) fn new(tx: Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        Self { tx, waker }
    }

    /// Queues `command` and wakes the worker.
    ///
    /// # Errors
    /// `BrokenPipe` when the worker has exited.
    pub fn send(&self, command: Command) -> io::Result<()> {
        self.tx
            .send(command)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "datapath has stopped"))?;
        self.waker.wake()
    }

    /// Sends a query and waits for its answer, at most [`ASK_TIMEOUT`].
    ///
    /// # Errors
    /// `BrokenPipe` when the worker has exited, `TimedOut` when it did not
    /// answer in time (it is stuck, or dying).
    pub fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> io::Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(make(tx))?;
        rx.recv_timeout(ASK_TIMEOUT).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "a datapath worker did not answer within {} s",
                    ASK_TIMEOUT.as_secs()
                ),
            ),
            crossbeam_channel::RecvTimeoutError::Disconnected => {
                io::Error::new(io::ErrorKind::BrokenPipe, "datapath has stopped")
            }
        })
    }
}

/// The receiving side, owned by the worker.
pub(super) type Inbox = Receiver<Command>;
