//! The datapath loop.
//!
//! mio readiness is edge-triggered, so a readable port must be read until
//! `WouldBlock` or it will not be reported again. To stay fair between a
//! busy port and the others, a port is read at most [`BATCH`] frames per
//! visit; a port with more stays on the ready list and is visited again
//! before the next `poll` (mio's own advice, and boringtun's `MAX_ITR`).
//!
//! Each frame runs to completion (receive, decide, transmit) in one buffer,
//! so the loop needs no queue and allocates nothing per frame. The time is
//! read once per visit and passed to the switch.
//!
//! Several workers may run side by side ([`super::Datapath`]): each polls
//! its share of the ports and transmits to any port.
//!
//! A worker that has just moved frames keeps polling for [`BUSY_POLL`]
//! before it sleeps in `epoll_wait`. Waking a sleeping thread costs tens of
//! microseconds (more on a virtual machine, where it is an inter-processor
//! interrupt to a halted vCPU), and a TCP flow pays it twice per round trip:
//! once for the data, once for the ACK. A paced sender (BBR, Linux's
//! internal pacing) spaces its 64 KiB GSO frames about 40 µs apart at
//! 12 Gbit/s, so without the grace period the worker falls asleep between
//! every two frames, the round-trip time grows, and BBR, which sizes its
//! window from the minimum round trip, sends less. The poll is bounded: an
//! idle switch sleeps, and a trickle of traffic costs at most `BUSY_POLL` of
//! CPU per wakeup. While polling the worker yields, so a sandbox's thread
//! waiting for the same core runs first.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::mailbox::{Command, Inbox, Mailbox};
use crate::buf::PacketBuf;
use crate::ids::PortId;
use crate::port::PortIo;
use crate::switch::{Action, FdbConfig, Switch};

/// Frames read from one port per visit.
pub const BATCH: usize = 32;

/// How long a worker keeps polling after it last moved a frame (see the
/// module documentation). Longer than the gap between paced GSO frames of
/// a fast flow, short enough that the CPU cost of a quiet port is nil.
pub const BUSY_POLL: Duration = Duration::from_micros(50);

/// Token of the mailbox's waker; port tokens are port ids.
const WAKER: Token = Token(usize::MAX);

/// The datapath: a switch, its ports, and the loop that moves frames.
#[derive(Debug)]
pub struct Worker {
    poll: Poll,
    inbox: Inbox,
    switch: Switch,
    /// Every port, for transmitting; the ones this worker receives from
    /// are marked in `polled`.
    ports: Vec<Option<Arc<dyn PortIo>>>,
    polled: Vec<bool>,
    /// Ports with frames possibly left to read, and a flag per port so each
    /// is listed once.
    ready: VecDeque<PortId>,
    queued: Vec<bool>,
    buf: PacketBuf,
    /// Flood targets of the frame in hand (reused, never shrunk).
    targets: Vec<PortId>,
    /// Transmit errors other than a full queue, logged once per port.
    tx_errors_logged: Vec<bool>,
}

impl Worker {
    /// A worker with no ports, and the mailbox that drives it.
    ///
    /// # Errors
    /// When the poll instance or its waker cannot be created.
    pub fn new(fdb: FdbConfig) -> io::Result<(Self, Mailbox)> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Self {
            poll,
            inbox: rx,
            switch: Switch::new(fdb),
            ports: Vec::new(),
            polled: Vec::new(),
            ready: VecDeque::new(),
            queued: Vec::new(),
            buf: PacketBuf::new(),
            targets: Vec::new(),
            tx_errors_logged: Vec::new(),
        };
        Ok((worker, Mailbox::new(tx, waker)))
    }

    /// Runs until a [`Command::Shutdown`] arrives or every mailbox is gone.
    ///
    /// # Errors
    /// When polling itself fails (not when a port does: a failing port is
    /// logged and dropped).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        // When this worker last moved a frame, while that is recent enough
        // to keep polling rather than sleep.
        let mut busy_since: Option<Instant> = None;
        loop {
            let polling = busy_since.is_some_and(|at| at.elapsed() < BUSY_POLL);
            let timeout = if !self.ready.is_empty() || polling {
                Some(Duration::ZERO)
            } else {
                busy_since = None;
                self.switch.poll_timeout().map(|at| {
                    at.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1))
                })
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                if event.token() == WAKER {
                    continue;
                }
                self.mark_ready(PortId(u32::try_from(event.token().0).unwrap_or(u32::MAX)));
            }
            if !self.drain_inbox() {
                return Ok(());
            }
            if self.ready.is_empty() {
                if polling {
                    std::thread::yield_now();
                }
            } else {
                self.serve_ready();
                busy_since = Some(Instant::now());
            }
            self.switch.expire(Instant::now());
        }
    }

    fn mark_ready(&mut self, port: PortId) {
        if let Some(q) = self.queued.get_mut(port.index())
            && !*q
        {
            *q = true;
            self.ready.push_back(port);
        }
    }

    /// Applies queued commands; returns `false` on shutdown.
    fn drain_inbox(&mut self) -> bool {
        loop {
            let command = match self.inbox.try_recv() {
                Ok(c) => c,
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            };
            match command {
                Command::AddPort { id, port, poll } => self.add_port(id, port, poll),
                Command::RemovePort(id, ack) => {
                    self.remove_port(id);
                    let _ = ack.send(());
                }
                Command::Config(config) => self.switch.apply_config(Instant::now(), config),
                Command::Fdb(reply) => {
                    let _ = reply.send(self.switch.fdb().snapshot(Instant::now()));
                }
                Command::PortStats(reply) => {
                    let stats = self
                        .switch
                        .config()
                        .ports()
                        .map(|p| (p.id, self.switch.stats().port(p.id)))
                        .collect();
                    let _ = reply.send(stats);
                }
                Command::Shutdown => return false,
            }
        }
    }

    fn add_port(&mut self, id: PortId, port: Arc<dyn PortIo>, poll: bool) {
        let i = id.index();
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.polled.resize(i + 1, false);
            self.queued.resize(i + 1, false);
            self.tx_errors_logged.resize(i + 1, false);
        }
        self.remove_port(id);
        if poll {
            let fd = port.raw_fd();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            {
                tracing::error!(port = %id, error = %e, "cannot poll port; not added");
                return;
            }
            self.polled[i] = true;
        }
        self.ports[i] = Some(port);
        self.tx_errors_logged[i] = false;
        if poll {
            // Frames may have queued before registration; edge-triggered
            // polling would never report them.
            self.mark_ready(id);
        }
    }

    fn remove_port(&mut self, id: PortId) {
        let i = id.index();
        let Some(port) = self.ports.get_mut(i).and_then(Option::take) else {
            return;
        };
        if self.polled[i] {
            let fd = port.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.polled[i] = false;
        }
        self.queued[i] = false;
        self.ready.retain(|&p| p != id);
    }

    /// Visits each ready port once, reading up to [`BATCH`] frames.
    fn serve_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let now = Instant::now();
            let mut drained = false;
            for _ in 0..BATCH {
                let Some(port) = self.ports.get(id.index()).and_then(Option::as_ref) else {
                    drained = true;
                    break;
                };
                match port.recv(&mut self.buf) {
                    Ok(()) => self.forward(now, id),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // One unreadable frame (longer than a buffer, shorter
                    // than its header): counted, and the port stays.
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        self.switch.record_rx_error(id);
                    }
                    Err(e) => {
                        // The device is gone (deleted under us) or broken:
                        // stop polling it rather than spin on the error.
                        tracing::warn!(port = %id, error = %e, "receive failed; port removed");
                        self.remove_port(id);
                        drained = true;
                        break;
                    }
                }
            }
            if drained {
                if let Some(q) = self.queued.get_mut(id.index()) {
                    *q = false;
                }
            } else {
                self.ready.push_back(id);
            }
        }
    }

    /// Decides and transmits the frame in `self.buf`, received on `ingress`.
    fn forward(&mut self, now: Instant, ingress: PortId) {
        match self.switch.process(now, ingress, &mut self.buf) {
            Action::Output(p) | Action::Reply(p) => self.transmit(p),
            Action::Flood {
                network,
                except,
                scope,
            } => {
                self.targets.clear();
                self.targets
                    .extend(self.switch.flood_targets(network, except, scope));
                for i in 0..self.targets.len() {
                    self.transmit(self.targets[i]);
                }
            }
            Action::Drop(_) => {}
        }
    }

    fn transmit(&mut self, to: PortId) {
        let Some(port) = self.ports.get(to.index()).and_then(Option::as_ref) else {
            // Configured but not yet (or no longer) attached to a device.
            self.switch.record_tx_dropped(to);
            return;
        };
        match port.send(&self.buf) {
            Ok(()) => self.switch.record_tx(to, self.buf.len()),
            Err(e) => {
                self.switch.record_tx_dropped(to);
                if e.kind() != io::ErrorKind::WouldBlock
                    && let Some(logged) = self.tx_errors_logged.get_mut(to.index())
                    && !*logged
                {
                    *logged = true;
                    tracing::warn!(port = %to, error = %e, "transmit failed (further errors on this port are counted, not logged)");
                }
            }
        }
    }
}
