//! The datapath threads: they read frames from port devices in batches,
//! run them through [`Switch::process`](crate::switch::Switch::process),
//! and carry out the decisions through the one [`Executor`].
//!
//! ```text
//!  control / api threads ── Datapath handle ── mailbox (config, ports, queries)
//!                                                  │ between batches
//!  ┌─ worker 0 ───────────────────────────────────▼───────────────────────┐
//!  │ owns: poll set of its ports, switch (config, FDB replica, counters),  │
//!  │       receive batch, executor (tx queues, buffer pool)                │
//!  │ ports polled: index % workers      ┌──────── FDB changes ──────────┐ │
//!  │  recv_batch ─▶ process ─▶ execute ─┤ publish ─▶ flush (send_batch) │ │
//!  └────────────────────────────────────┼───────────────────────────────┘─┘
//!                                       ▼ bounded queue per peer
//!  ┌─ worker 1 … (same) ── applies peers' FDB changes before each batch ──┐
//! ```
//!
//! Any worker may transmit to any port (the kernel takes each frame
//! whole, so a port's device is shared for sending); exactly one worker
//! polls each port. Why more than one worker: a TAP write hands the frame
//! to the receiving stack synchronously, so the thread that writes also
//! runs that side's TCP processing; with one thread, both directions of a
//! connection queue behind each other on one core.
//!
//! # State every worker sees: a replicated FDB
//!
//! A frame's fate must not depend on the worker that read it. Each worker
//! holds a replica of the FDB; a change that matters to the others (a new
//! entry, a move, and at most once per [`REPLACE_INTERVAL`] per entry a
//! refresh of its age) is appended to a journal while the batch is
//! decided and published, before the batch is sent, to a bounded queue of
//! every other worker ([`SYNC_QUEUE`]), which applies it before its own
//! next batch. So a MAC learned from any port is known to every worker
//! within one batch of the learning, and by the time any frame of the
//! learning batch has left the switch. The most recent sighting wins
//! ([`Fdb::apply_update`](crate::switch::Fdb::apply_update)), so two
//! workers that see one MAC on two ports at once converge. The
//! known-unicast path takes no lock and touches no shared cache line: a
//! lookup and a refresh are the single-threaded FDB's.
//!
//! Measured (criterion, `benches/benches/switch.rs`, one core of the
//! development VM, 64-byte frames, 65,536 learned MACs): in a first run
//! (wall clock, load average 11–14) the replica's per-frame decision took
//! 196 ns and the same decision through one FDB behind a mutex, the
//! simplest shared table, 223 ns, with no contention at all; in two later
//! runs counting the thread's CPU time (load average 13), 80–92 ns against
//! 83–88 ns, the same within the noise. What a single uncontended core
//! cannot show is the cost that decides: with two workers the lock's cache
//! line would move between cores on every frame. Per-entry atomics would
//! remove the lock but still write a shared line per frame (the age),
//! which is the cache-line transfer the replicas avoid.
//!
//! Alternatives rejected: one FDB behind a lock (a lock per frame); a
//! concurrent map with per-entry atomics (a shared write per frame for the
//! age, a custom lock-free table to keep correct); sharding by network (a
//! network's ports are polled by every worker, so it shards nothing);
//! steering flows to an owner worker by a symmetric hash (needs the
//! kernel to steer, which TAP and packet sockets cannot do per flow, or a
//! hand-off of every frame between workers). The cost of replicas is
//! memory (one FDB per worker) and that entries learned by another worker
//! arrive one batch late; each replica also ages and evicts by itself, so
//! under a MAC flood past the caps the replicas may evict different
//! entries (a MAC evicted in one is flooded to until seen again).
//!
//! The flow table of NAT is reached the same way: a flow created or
//! changed by one worker is one more kind of journal entry, applied by the
//! others before their next batch, so a reply finds its flow whatever
//! worker reads it.
//!
//! Other threads talk to the workers through the [`Datapath`] handle:
//! configuration snapshots, ports to add or remove and inspection queries
//! are applied between batches.

pub mod capture;
pub mod cpu_latency;
pub mod executor;
mod mailbox;
pub mod policy;
mod worker;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use capture::{Capture, Captured, Tap};
pub use cpu_latency::{CpuLatencyQos, CpuLatencyRequest, Hold, TRAFFIC_HOLD, TrafficGate};
pub use executor::{Executor, TxSink};
pub use mailbox::{ASK_TIMEOUT, Command, Mailbox};
pub use policy::{BUSY_POLL, BusyPoll};
pub use worker::{BATCH, BATCH_BYTES, SYNC_QUEUE, Worker, WorkerConfig};

use crate::ids::PortId;
use crate::port::PortIo;
#[allow(unused_imports)] // linked from the module documentation
use crate::switch::REPLACE_INTERVAL;
use crate::switch::{FdbConfig, FdbRow, Origin, PortStats, SwitchConfig};
use worker::Peers;

/// How the datapath runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Worker threads (at least one).
    pub workers: usize,
    /// Each worker's settings.
    pub worker: WorkerConfig,
}

/// The handle on all datapath workers.
#[derive(Clone, Debug)]
pub struct Datapath {
    workers: Vec<Mailbox>,
    /// The host connector, which gets the configuration and the ports too.
    host: Option<crate::connector::HostConnector>,
}

impl Datapath {
    /// Starts `workers` datapath threads (at least one).
    ///
    /// # Errors
    /// When a poll instance or a thread cannot be created.
    pub fn spawn(
        workers: usize,
        fdb: FdbConfig,
    ) -> io::Result<(Self, Vec<JoinHandle<io::Result<()>>>)> {
        Self::spawn_with(DatapathConfig {
            workers,
            worker: WorkerConfig {
                fdb,
                ..WorkerConfig::default()
            },
        })
    }

    /// Starts the datapath as `config` says.
    ///
    /// # Errors
    /// When a poll instance or a thread cannot be created.
    pub fn spawn_with(
        config: DatapathConfig,
    ) -> io::Result<(Self, Vec<JoinHandle<io::Result<()>>>)> {
        let n = config.workers.max(1);
        let mut workers = Vec::new();
        let mut mailboxes = Vec::new();
        for _ in 0..n {
            let (worker, mailbox) = Worker::with_config(config.worker)?;
            workers.push(worker);
            mailboxes.push(mailbox);
        }
        if n > 1 {
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
                .map(|_| crossbeam_channel::bounded(SYNC_QUEUE))
                .unzip();
            for (i, (worker, from)) in workers.iter_mut().zip(receivers).enumerate() {
                let to = senders
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, s)| s.clone())
                    .collect();
                worker.set_peers(Peers {
                    to,
                    from: Some(from),
                });
            }
        }
        let mut threads = Vec::new();
        for (i, worker) in workers.into_iter().enumerate() {
            let thread = std::thread::Builder::new()
                .name(format!("datapath-{i}"))
                .spawn(move || worker.run())?;
            threads.push(thread);
        }
        Ok((
            Self {
                workers: mailboxes,
                host: None,
            },
            threads,
        ))
    }

    /// Hands packets for beyond the gateway to `connector` from now on,
    /// and keeps it told of the configuration and the ports. Call before
    /// the handle is cloned.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn attach_host(&mut self, connector: crate::connector::HostConnector) -> io::Result<()> {
        for w in &self.workers {
            w.send(Command::Host(connector.link()))?;
        }
        self.host = Some(connector);
        Ok(())
    }

    /// Has every worker keep `gate` informed of the frames it moves, so
    /// idle CPUs poll while traffic flows (`--cpu-latency-qos traffic`).
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn attach_cpu_latency_gate(&self, gate: &Arc<TrafficGate>) -> io::Result<()> {
        for w in &self.workers {
            w.send(Command::CpuLatency(Arc::clone(gate)))?;
        }
        Ok(())
    }

    /// The host connector, if one is attached.
    #[must_use]
    pub const fn host(&self) -> Option<&crate::connector::HostConnector> {
        self.host.as_ref()
    }

    /// The worker that receives from `port`.
    fn owner(&self, port: PortId) -> usize {
        port.index() % self.workers.len()
    }

    /// Hands every worker a new configuration.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn set_config(&self, config: &Arc<SwitchConfig>) -> io::Result<()> {
        self.workers
            .iter()
            .try_for_each(|w| w.send(Command::Config(Arc::clone(config))))?;
        if let Some(host) = &self.host {
            host.set_config(config)?;
        }
        Ok(())
    }

    /// Adds a port: polled by one worker, a transmit target for all.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn add_port(&self, id: PortId, port: Arc<dyn PortIo>) -> io::Result<()> {
        let owner = self.owner(id);
        if let Some(host) = &self.host {
            host.add_port(id, Arc::clone(&port))?;
        }
        self.workers.iter().enumerate().try_for_each(|(i, w)| {
            w.send(Command::AddPort {
                id,
                port: Arc::clone(&port),
                poll: i == owner,
            })
        })
    }

    /// Adds a port that is only transmitted to, never polled: a logical
    /// port whose frames arrive through another port's descriptor (an
    /// overlay network's port, received by the underlay socket).
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn add_tx_port(&self, id: PortId, port: Arc<dyn PortIo>) -> io::Result<()> {
        self.workers.iter().try_for_each(|w| {
            w.send(Command::AddPort {
                id,
                port: Arc::clone(&port),
                poll: false,
            })
        })
    }

    /// Removes a port from every worker and waits until none uses it. All
    /// workers are asked at once and then waited for, so the wait is the
    /// slowest worker's, not the sum of all of them. The workers hand their
    /// references back, so the port's descriptor is closed here, on the
    /// caller's thread (the kernel may make a close wait for an RCU grace
    /// period), never on a datapath thread.
    ///
    /// # Errors
    /// When a worker has stopped or does not answer within
    /// [`ASK_TIMEOUT`].
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        let (ack, acks) = crossbeam_channel::bounded(self.workers.len());
        for w in &self.workers {
            w.send(Command::RemovePort(id, ack.clone()))?;
        }
        drop(ack);
        let deadline = std::time::Instant::now() + ASK_TIMEOUT;
        let mut released = Vec::with_capacity(self.workers.len());
        for _ in &self.workers {
            let port = acks.recv_deadline(deadline).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "a datapath worker did not release port {id} within {} s",
                        ASK_TIMEOUT.as_secs()
                    ),
                ),
                crossbeam_channel::RecvTimeoutError::Disconnected => {
                    io::Error::new(io::ErrorKind::BrokenPipe, "datapath has stopped")
                }
            })?;
            released.push(port);
        }
        drop(released);
        if let Some(host) = &self.host {
            host.remove_port(id)?;
        }
        Ok(())
    }

    /// The FDB as the workers together know it: static entries once, a
    /// learned MAC at the port where it was seen most recently.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn fdb(&self) -> io::Result<Vec<FdbRow>> {
        let mut rows: Vec<FdbRow> = Vec::new();
        for w in &self.workers {
            rows.extend(w.ask(Command::Fdb)?);
        }
        // Per (network, MAC): static first, then the youngest learned entry.
        rows.sort_by_key(|r| (r.network, r.mac, r.origin != Origin::Static, r.age));
        rows.dedup_by_key(|r| (r.network, r.mac));
        Ok(rows)
    }

    /// Runs `frame` as received on `ingress` through the pipeline of the
    /// worker that polls that port, without learning, counting or sending
    /// ([`crate::switch::DryRun`]).
    ///
    /// # Errors
    /// When the worker has stopped or does not answer.
    pub fn trace(&self, ingress: PortId, frame: Vec<u8>) -> io::Result<crate::switch::DryRun> {
        let worker = self.workers.get(self.owner(ingress)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the datapath has no workers")
        })?;
        worker.ask(|reply| Command::Trace {
            ingress,
            frame,
            reply,
        })
    }

    /// Starts a capture of `port` on every worker (frames are received by
    /// one, but any may send to the port).
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn capture(&self, port: PortId) -> io::Result<Capture> {
        let (tap, reader) = capture::capture(port);
        for w in &self.workers {
            w.send(Command::Capture(tap.clone()))?;
        }
        Ok(reader)
    }

    /// Each worker's FDB replica's event counters, in worker order.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn fdb_stats(&self) -> io::Result<Vec<crate::switch::FdbStats>> {
        self.workers
            .iter()
            .map(|w| w.ask(Command::FdbStats))
            .collect()
    }

    /// Every configured port's counters, summed over the workers.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn port_stats(&self) -> io::Result<Vec<(PortId, PortStats)>> {
        let mut total: Vec<(PortId, PortStats)> = Vec::new();
        for w in &self.workers {
            for (port, stats) in w.ask(Command::PortStats)? {
                match total.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, t)) => t.merge(&stats),
                    None => total.push((port, stats)),
                }
            }
        }
        if let Some(host) = &self.host {
            for (port, stats) in host.port_stats()? {
                if let Some((_, t)) = total.iter_mut().find(|(p, _)| *p == port) {
                    t.merge(&stats);
                }
            }
        }
        total.sort_by_key(|(p, _)| *p);
        Ok(total)
    }

    /// Stops worker `index` alone, as if it had died: a test hook for the
    /// daemon's supervision (`VSWITCHD_TEST_STOP_WORKER_MS`), never used
    /// otherwise.
    pub fn stop_worker(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            let _ = w.send(Command::Shutdown);
        }
    }

    /// Asks every worker (and the host connector) to stop.
    pub fn shutdown(&self) {
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
        if let Some(host) = &self.host {
            host.shutdown();
        }
    }
}
