//! The datapath loop.
//!
//! Each turn of the loop is one batch:
//!
//! 1. apply the FDB changes other workers published (so a MAC they learned
//!    is known before this batch is decided);
//! 2. receive: visit the ready ports in turn, each filling the free slots
//!    of one [`RxBatch`] of [`BATCH`] pooled buffers (`recvmmsg` where the
//!    device has it), every frame tagged with its logical ingress port;
//! 3. decide each frame with [`Switch::process`] and hand the decision to
//!    the [`Executor`], which queues it per egress port (a separate pass
//!    loading every frame's FDB entries first, [`Switch::prefetch`], is
//!    slower now that a decision is short enough for the core to overlap
//!    the misses of consecutive frames itself: see the README's figures);
//! 4. publish this batch's FDB changes to the other workers;
//! 5. flush: one batch send per egress port (`sendmmsg` where the device
//!    has it).
//!
//! mio readiness is edge-triggered, so a readable port must be read until
//! `WouldBlock` or it will not be reported again: a port that filled the
//! batch before it was drained stays on the ready list and is visited again
//! (after the others) before the next `poll`. The time is read once per
//! batch. Nothing is allocated per frame.
//!
//! A worker that has just moved frames keeps polling for a while before it
//! sleeps in `epoll_wait`, or never sleeps: the latency policy
//! ([`BusyPoll`], `vswitchd --busy-poll`, documented in
//! [`super::policy`]). Waking a sleeping thread costs tens of microseconds
//! (more on a virtual machine, where it is an inter-processor interrupt to
//! a halted vCPU), and a TCP flow pays it twice per round trip: once for
//! the data, once for the ACK. A paced sender (BBR, Linux's internal
//! pacing) spaces its 64 KiB GSO frames about 40 µs apart at 12 Gbit/s, so
//! without the default window ([`BUSY_POLL`]) the worker falls asleep
//! between every two frames, the round-trip time grows, and BBR, which
//! sizes its window from the minimum round trip, sends less. While polling
//! the worker yields, so a sandbox's thread waiting for the same core runs
//! first. With a [`TrafficGate`] (`vswitchd --cpu-latency-qos traffic`)
//! the worker tells it after each batch that moved frames, and sleeps no
//! longer than the gate's hold, so that the worker awake when traffic has
//! stopped releases the request that keeps idle CPUs polling
//! ([`super::cpu_latency`]).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::capture::Taps;
use super::cpu_latency::TrafficGate;
use super::executor::{Executor, TxSink};
use super::mailbox::{Command, Inbox, Mailbox};
#[allow(unused_imports)] // linked from the module documentation
use super::policy::BUSY_POLL;
use super::policy::BusyPoll;
use crate::buf::PacketBuf;
use crate::ids::PortId;
use crate::port::{PortIo, RxBatch, SendOutcome};
use crate::switch::{DropReason, FdbConfig, FdbUpdate, PortStats, Switch};

/// Frames per batch: received, decided, then sent together.
pub const BATCH: usize = 64;

/// Bytes after which a batch is ended early (a few GSO super-frames).
pub const BATCH_BYTES: usize = 256 << 10;

/// FDB changes one worker may have waiting for another. A worker drains
/// them before every batch, so the bound is reached only by a worker that
/// sleeps through a flood of new source MACs; changes beyond it are
/// counted and dropped (the MAC is then flooded to until seen again).
pub const SYNC_QUEUE: usize = 65_536;

/// Token of the mailbox's waker; port tokens are port ids.
const WAKER: Token = Token(usize::MAX);

/// How a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// FDB limits (each worker holds a replica).
    pub fdb: FdbConfig,
    /// When to sleep after the last frame.
    pub busy_poll: BusyPoll,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            fdb: FdbConfig::default(),
            busy_poll: BusyPoll::DEFAULT,
        }
    }
}

/// The other workers' FDB-change queues.
#[derive(Debug, Default)]
pub(super) struct Peers {
    /// One sender per other worker.
    pub(super) to: Vec<Sender<FdbUpdate>>,
    /// This worker's own queue.
    pub(super) from: Option<Receiver<FdbUpdate>>,
}

/// The datapath: a switch, its ports, and the loop that moves frames.
#[derive(Debug)]
pub struct Worker {
    poll: Poll,
    inbox: Inbox,
    switch: Switch,
    config: WorkerConfig,
    /// Every port, for transmitting; the ones this worker receives from
    /// are marked in `polled`.
    ports: Vec<Option<Arc<dyn PortIo>>>,
    polled: Vec<bool>,
    /// Ports with frames possibly left to read, and a flag per port so each
    /// is listed once.
    ready: VecDeque<PortId>,
    queued: Vec<bool>,
    batch: RxBatch,
    executor: Executor,
    peers: Peers,
    /// FDB changes not delivered because a peer's queue was full.
    sync_dropped: u64,
    /// Transmit errors other than a full queue, logged once per port.
    tx_errors_logged: Vec<bool>,
    /// Captures in progress (`vsctl capture`); empty, it costs a test.
    taps: Taps,
    /// Where packets for beyond the gateway go, when the daemon has a host
    /// connector.
    host: Option<crate::connector::HostLink>,
    /// The CPU-latency request held while frames move, if the daemon uses
    /// one (`--cpu-latency-qos traffic`).
    cpu_gate: Option<Arc<TrafficGate>>,
}

/// The worker's ports as the executor's transmit side.
struct PortSink<'a> {
    ports: &'a [Option<Arc<dyn PortIo>>],
    logged: &'a mut Vec<bool>,
    taps: &'a mut Taps,
    host: Option<&'a crate::connector::HostLink>,
}

impl TxSink for PortSink<'_> {
    fn send(&mut self, port: PortId, frames: &[&PacketBuf]) -> SendOutcome {
        let Some(dev) = self.ports.get(port.index()).and_then(Option::as_ref) else {
            // Configured but not yet (or no longer) attached to a device.
            return SendOutcome {
                error: Some(io::ErrorKind::NotFound.into()),
                ..SendOutcome::default()
            };
        };
        let out = dev.send_batch(frames);
        if !self.taps.is_empty() && self.taps.watches(port) {
            for f in out.taken_of(frames) {
                self.taps.offer(port, true, None, f.frame());
            }
        }
        if let Some(e) = &out.error
            && e.kind() != io::ErrorKind::WouldBlock
            && let Some(logged) = self.logged.get_mut(port.index())
            && !*logged
        {
            *logged = true;
            tracing::warn!(port = %port, error = %e, "transmit failed (further errors on this port are counted, not logged)");
        }
        out
    }

    fn to_host(&mut self, ingress: PortId, frame: &mut PacketBuf) -> Result<(), DropReason> {
        match self.host {
            Some(link) => link.offer(ingress, frame),
            None => Err(DropReason::NoRoute),
        }
    }
}

impl Worker {
    /// A worker with no ports and no peers, and the mailbox that drives it.
    ///
    /// # Errors
    /// When the poll instance or its waker cannot be created.
    pub fn new(fdb: FdbConfig) -> io::Result<(Self, Mailbox)> {
        Self::with_config(WorkerConfig {
            fdb,
            ..WorkerConfig::default()
        })
    }

    /// A worker running with `config`.
    ///
    /// # Errors
    /// When the poll instance or its waker cannot be created.
    pub fn with_config(config: WorkerConfig) -> io::Result<(Self, Mailbox)> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Self {
            poll,
            inbox: rx,
            switch: Switch::new(config.fdb),
            config,
            ports: Vec::new(),
            polled: Vec::new(),
            ready: VecDeque::new(),
            queued: Vec::new(),
            batch: RxBatch::new(BATCH).with_byte_budget(BATCH_BYTES),
            executor: Executor::new(),
            peers: Peers::default(),
            sync_dropped: 0,
            tx_errors_logged: Vec::new(),
            taps: Taps::default(),
            host: None,
            cpu_gate: None,
        };
        Ok((worker, Mailbox::new(tx, waker)))
    }

    /// Connects this worker to the others' FDB-change queues.
    pub(super) fn set_peers(&mut self, peers: Peers) {
        self.switch.share_learning(!peers.to.is_empty());
        self.peers = peers;
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
            let polling = self
                .config
                .busy_poll
                .keeps_polling(busy_since.map(|at| at.elapsed()));
            let timeout = if !self.ready.is_empty() || polling {
                Some(Duration::ZERO)
            } else {
                busy_since = None;
                let now = Instant::now();
                let expiry = self.switch.poll_timeout().map(|at| {
                    at.saturating_duration_since(now)
                        .max(Duration::from_millis(1))
                });
                // A held CPU-latency request is released by whichever
                // worker is awake when the traffic's hold ends.
                let release = self.cpu_gate.as_ref().and_then(|g| g.idle(now));
                match (expiry, release) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
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
                self.run_batch();
                let now = Instant::now();
                if let Some(gate) = &self.cpu_gate {
                    gate.frames_moved(now);
                }
                busy_since = Some(now);
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
                    // Should the asker have given up, the port is closed
                    // here after all.
                    let _ = ack.send(self.remove_port(id));
                }
                Command::Config(config) => {
                    self.switch.apply_config(Instant::now(), config);
                    // Changes learned before the configuration changed may
                    // name ports that are gone; apply_update skips those.
                    self.apply_peer_updates();
                }
                Command::Fdb(reply) => {
                    self.apply_peer_updates();
                    let _ = reply.send(self.switch.fdb().snapshot(Instant::now()));
                }
                Command::PortStats(reply) => {
                    let _ = reply.send(self.port_stats());
                }
                Command::Trace {
                    ingress,
                    frame,
                    reply,
                } => {
                    self.apply_peer_updates();
                    let _ = reply.send(self.switch.dry_run(Instant::now(), ingress, &frame));
                }
                Command::Capture(tap) => self.taps.add(tap),
                Command::FdbStats(reply) => {
                    let _ = reply.send(*self.switch.fdb().stats());
                }
                Command::Host(link) => self.host = Some(link),
                Command::CpuLatency(gate) => self.cpu_gate = Some(gate),
                Command::Shutdown => return false,
            }
        }
    }

    /// Counters of every configured port, with the kernel's drops for the
    /// ports this worker polls (so each is reported once).
    fn port_stats(&self) -> Vec<(PortId, PortStats)> {
        self.switch
            .config()
            .ports()
            .map(|p| {
                let mut stats = self.switch.stats().port(p.id);
                let i = p.id.index();
                if self.polled.get(i).copied().unwrap_or(false)
                    && let Some(Some(dev)) = self.ports.get(i)
                {
                    stats.kernel_dropped = dev.kernel_dropped();
                }
                (p.id, stats)
            })
            .collect()
    }

    fn add_port(&mut self, id: PortId, port: Arc<dyn PortIo>, poll: bool) {
        let i = id.index();
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.polled.resize(i + 1, false);
            self.queued.resize(i + 1, false);
            self.tx_errors_logged.resize(i + 1, false);
        }
        drop(self.remove_port(id));
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
        self.executor.set_caps(id, port.caps());
        self.ports[i] = Some(port);
        self.tx_errors_logged[i] = false;
        if poll {
            // Frames may have queued before registration; edge-triggered
            // polling would never report them.
            self.mark_ready(id);
        }
    }

    /// Stops using port `id`; returns this worker's reference to it.
    fn remove_port(&mut self, id: PortId) -> Option<Arc<dyn PortIo>> {
        let i = id.index();
        let port = self.ports.get_mut(i).and_then(Option::take)?;
        if self.polled[i] {
            let fd = port.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.polled[i] = false;
        }
        self.queued[i] = false;
        self.ready.retain(|&p| p != id);
        Some(port)
    }

    fn apply_peer_updates(&mut self) {
        if let Some(from) = &self.peers.from {
            for update in from.try_iter() {
                self.switch.apply_update(&update);
            }
        }
    }

    /// One batch: receive from the ready ports, decide, publish what was
    /// learned, send.
    fn run_batch(&mut self) {
        self.apply_peer_updates();
        self.batch.clear();
        self.receive();
        for &port in self.batch.rx_errors() {
            self.switch.record_rx_error(port);
        }
        let now = Instant::now();
        let Self {
            switch,
            batch,
            executor,
            ports,
            tx_errors_logged,
            taps,
            host,
            ..
        } = self;
        let mut sink = PortSink {
            ports,
            logged: tx_errors_logged,
            taps,
            host: host.as_ref(),
        };
        let (bufs, ingress) = batch.frames_mut();
        for i in 0..bufs.len() {
            // Copied before the switch may rewrite it (a gateway reply).
            let tapped = (!sink.taps.is_empty() && sink.taps.watches(ingress[i]))
                .then(|| bufs[i].frame().to_vec());
            let action = switch.process(now, ingress[i], &mut bufs[i]);
            if let Some(frame) = tapped {
                let drop = match action {
                    crate::switch::Action::Drop(r) => Some(r),
                    _ => None,
                };
                sink.taps.offer(ingress[i], false, drop, &frame);
            }
            executor.execute(switch, action, ingress[i], i, bufs, &mut sink);
        }
        self.publish_updates();
        let Self {
            switch,
            batch,
            executor,
            ports,
            tx_errors_logged,
            taps,
            host,
            ..
        } = self;
        let mut sink = PortSink {
            ports,
            logged: tx_errors_logged,
            taps,
            host: host.as_ref(),
        };
        executor.flush(switch, batch.frames(), &mut sink);
    }

    /// Fills the batch from the ready ports, each visited once.
    fn receive(&mut self) {
        for _ in 0..self.ready.len() {
            if self.batch.is_full() {
                break;
            }
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(port) = self.ports.get(id.index()).and_then(Option::as_ref) else {
                continue;
            };
            let drained = match port.recv_batch(id, &mut self.batch) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) => {
                    // The device is gone (deleted under us) or broken:
                    // stop polling it rather than spin on the error.
                    tracing::warn!(port = %id, error = %e, "receive failed; port removed");
                    self.remove_port(id);
                    continue;
                }
            };
            if drained {
                if let Some(q) = self.queued.get_mut(id.index()) {
                    *q = false;
                }
            } else {
                self.ready.push_back(id);
            }
        }
    }

    /// Hands this batch's FDB changes to every other worker.
    fn publish_updates(&mut self) {
        let Self {
            switch,
            peers,
            sync_dropped,
            ..
        } = self;
        for update in switch.drain_updates() {
            for peer in &peers.to {
                match peer.try_send(update) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(_)) => {
                        *sync_dropped += 1;
                        if sync_dropped.is_power_of_two() {
                            tracing::warn!(
                                dropped = *sync_dropped,
                                "a worker's FDB-change queue is full; changes dropped"
                            );
                        }
                    }
                }
            }
        }
    }
}
