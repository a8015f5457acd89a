//! Which worker polls which port.
//!
//! The ports of one network are polled by one worker, and each network
//! goes, when its first port arrives, to the worker that polls the fewest
//! ports. Why: a frame written to a TAP or a veth is taken through the
//! receiving sandbox's stack synchronously, so a request's answer (an echo
//! reply, a TCP ACK, a DNS response from a container) is often queued on
//! its port before the write that carried the request returns. When the
//! same worker polls both ports it finds the answer on its next turn; when
//! another worker polls the answer's port, that worker is woken from
//! `epoll_wait` first, which on a virtual machine is an inter-processor
//! interrupt to a halted vCPU: 20–40 µs of each round trip on the
//! development VM. Ports were once given out as `port id % workers`, which
//! put the two ends of most conversations on different workers.
//!
//! The cost is that one network's traffic is polled by one core. It does
//! not cost a bulk flow between two containers: the worker that reads the
//! data also runs the receiver's stack when it writes the frame, and the
//! ACKs it reads back are small (see the README's figures). Traffic
//! between many pairs of containers on one network no longer spreads over
//! the workers; a daemon with several networks spreads them. Ports that
//! belong to no network (the overlay's underlay socket) are placed alone on
//! the least loaded worker.

use std::collections::HashMap;

use crate::ids::{NetworkId, PortId};

/// Port-to-worker assignments, kept by the [`super::Datapath`] handle.
#[derive(Debug)]
pub(super) struct Placement {
    /// Ports each worker polls.
    load: Vec<usize>,
    /// Each placed port's worker and network.
    ports: HashMap<PortId, (usize, Option<NetworkId>)>,
    /// Each network with ports: its worker and how many ports it has.
    networks: HashMap<NetworkId, (usize, usize)>,
}

impl Placement {
    /// No ports yet, `workers` workers (at least one).
    pub(super) fn new(workers: usize) -> Self {
        Self {
            load: vec![0; workers.max(1)],
            ports: HashMap::new(),
            networks: HashMap::new(),
        }
    }

    /// Places `port` (again, if it was placed) and returns its worker: its
    /// network's, or for a new network or no network the least loaded one
    /// (the lowest index on a tie).
    pub(super) fn place(&mut self, port: PortId, network: Option<NetworkId>) -> usize {
        self.release(port);
        let worker = match network.and_then(|n| self.networks.get(&n)) {
            Some(&(w, _)) => w,
            None => self.least_loaded(),
        };
        if let Some(n) = network {
            self.networks.entry(n).or_insert((worker, 0)).1 += 1;
        }
        self.load[worker] += 1;
        self.ports.insert(port, (worker, network));
        worker
    }

    /// Forgets `port`; a network whose last port it was may go elsewhere
    /// next time.
    pub(super) fn release(&mut self, port: PortId) {
        let Some((worker, network)) = self.ports.remove(&port) else {
            return;
        };
        self.load[worker] = self.load[worker].saturating_sub(1);
        if let Some(n) = network
            && let Some(entry) = self.networks.get_mut(&n)
        {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                self.networks.remove(&n);
            }
        }
    }

    /// The worker that polls `port`, if it is placed.
    pub(super) fn owner(&self, port: PortId) -> Option<usize> {
        self.ports.get(&port).map(|&(w, _)| w)
    }

    fn least_loaded(&self) -> usize {
        self.load
            .iter()
            .enumerate()
            .min_by_key(|&(i, &n)| (n, i))
            .map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_stays_on_one_worker_and_networks_spread() {
        let mut p = Placement::new(2);
        let (a, b) = (NetworkId(7), NetworkId(9));
        let first = p.place(PortId(1), Some(a));
        // With `port % workers` these two would have been split.
        assert_eq!(p.place(PortId(2), Some(a)), first);
        assert_eq!(p.place(PortId(3), Some(a)), first);
        // The next network goes to the idle worker, and stays there.
        let other = p.place(PortId(4), Some(b));
        assert_ne!(other, first);
        assert_eq!(p.place(PortId(5), Some(b)), other);
        assert_eq!(p.owner(PortId(2)), Some(first));
        assert_eq!(p.owner(PortId(5)), Some(other));
        assert_eq!(p.owner(PortId(6)), None);
    }

    #[test]
    fn ports_of_no_network_go_to_the_least_loaded_worker() {
        let mut p = Placement::new(3);
        let n = NetworkId(1);
        assert_eq!(p.place(PortId(10), Some(n)), 0);
        assert_eq!(p.place(PortId(11), Some(n)), 0);
        assert_eq!(p.place(PortId(0), None), 1);
        assert_eq!(p.place(PortId(12), None), 2);
        assert_eq!(p.place(PortId(13), None), 1);
    }

    #[test]
    fn a_network_with_no_ports_left_is_placed_anew() {
        let mut p = Placement::new(2);
        let (a, b) = (NetworkId(1), NetworkId(2));
        assert_eq!(p.place(PortId(1), Some(a)), 0);
        assert_eq!(p.place(PortId(2), Some(b)), 1);
        assert_eq!(p.place(PortId(3), Some(b)), 1);
        p.release(PortId(1));
        assert_eq!(p.owner(PortId(1)), None);
        // Worker 0 is now idle; a's next port goes there, b's stays put.
        assert_eq!(p.place(PortId(4), Some(a)), 0);
        assert_eq!(p.place(PortId(5), Some(b)), 1);
        // Releasing twice, or a port never placed, changes nothing.
        p.release(PortId(1));
        p.release(PortId(99));
        assert_eq!(p.load, vec![1, 3]);
    }

    #[test]
    fn placing_a_port_again_moves_it_without_counting_it_twice() {
        let mut p = Placement::new(2);
        assert_eq!(p.place(PortId(1), Some(NetworkId(1))), 0);
        assert_eq!(p.place(PortId(1), Some(NetworkId(1))), 0);
        assert_eq!(p.load, vec![1, 0]);
        assert_eq!(p.networks[&NetworkId(1)], (0, 1));
    }
}
