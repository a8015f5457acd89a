//! The datapath threads: they read frames from port devices, run them
//! through [`Switch::process`](crate::switch::Switch::process), and carry
//! out the decision.
//!
//! Each [`Worker`] owns a switch (configuration, FDB, counters) and polls a
//! share of the ports; any worker may transmit to any port. Nothing is
//! shared on the per-frame path, so no frame takes a lock. Why more than
//! one: a TAP write hands the frame to the receiving stack synchronously, so
//! the thread that writes also runs that side's TCP processing; with one
//! thread, both directions of a connection (data one way, ACK-clocked
//! transmits the other) queue behind each other on one core.
//!
//! Each worker learns from the frames it receives, so a source learned by
//! one worker is unknown to the others and frames to it from their ports
//! are flooded: correct, if less efficient. Endpoints' own MACs are static
//! entries in every worker, so traffic between containers never floods.
//!
//! Other threads talk to the workers through the [`Datapath`] handle:
//! configuration snapshots, ports to add or remove and inspection queries
//! are applied between batches.

mod mailbox;
mod worker;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use mailbox::{ASK_TIMEOUT, Command, Mailbox};
pub use worker::{BATCH, BUSY_POLL, Worker};

use crate::ids::PortId;
use crate::port::PortIo;
use crate::switch::{FdbConfig, FdbRow, Origin, PortStats, SwitchConfig};

/// The handle on all datapath workers.
#[derive(Clone, Debug)]
pub struct Datapath {
    workers: Vec<Mailbox>,
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
        let mut mailboxes = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (worker, mailbox) = Worker::new(fdb)?;
            let thread = std::thread::Builder::new()
                .name(format!("datapath-{i}"))
                .spawn(move || worker.run())?;
            mailboxes.push(mailbox);
            threads.push(thread);
        }
        Ok((Self { workers: mailboxes }, threads))
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
            .try_for_each(|w| w.send(Command::Config(Arc::clone(config))))
    }

    /// Adds a port: polled by one worker, a transmit target for all.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn add_port(&self, id: PortId, port: Arc<dyn PortIo>) -> io::Result<()> {
        let owner = self.owner(id);
        self.workers.iter().enumerate().try_for_each(|(i, w)| {
            w.send(Command::AddPort {
                id,
                port: Arc::clone(&port),
                poll: i == owner,
            })
        })
    }

    /// Removes a port from every worker and waits until none uses it.
    ///
    /// # Errors
    /// When a worker has stopped.
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        self.workers
            .iter()
            .try_for_each(|w| w.ask(|ack| Command::RemovePort(id, ack)))
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

    /// Asks every worker to stop.
    pub fn shutdown(&self) {
        for w in &self.workers {
            let _ = w.send(Command::Shutdown);
        }
    }
}
