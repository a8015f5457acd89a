//! Per-port traffic counters and per-reason drop counters.

use super::action::DropReason;
use crate::ids::PortId;

/// One counter per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl DropCounters {
    /// Frames dropped for `reason`.
    #[must_use]
    pub const fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops, whatever the reason.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counters, by reason.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n != 0)
    }

    /// Adds another set of counters to this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    #[inline]
    fn bump(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

/// Traffic through one port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames that could not be sent because the port's queue was full.
    pub tx_dropped: u64,
    /// Frames the kernel dropped on the port's device before the switch
    /// could read them (a packet socket's receive queue overflowing) or
    /// after it wrote them. Filled in by the datapath, which owns the
    /// devices; the switch itself never sees these frames.
    pub kernel_dropped: u64,
    /// Frames received from the port and dropped, by reason.
    pub drops: DropCounters,
}

impl PortStats {
    /// Adds another worker's counters of the same port to these.
    pub fn merge(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_dropped += other.tx_dropped;
        self.kernel_dropped += other.kernel_dropped;
        self.drops.merge(&other.drops);
    }
}

/// All counters of a switch.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    ports: Vec<PortStats>,
    drops: DropCounters,
}

impl Stats {
    /// Counters of one port (zero for a port never seen).
    #[must_use]
    pub fn port(&self, port: PortId) -> PortStats {
        self.ports.get(port.index()).cloned().unwrap_or_default()
    }

    /// Drops over all ports, by reason.
    #[must_use]
    pub const fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Sizes the per-port table; called on configuration change, so the
    /// per-frame path only indexes.
    pub(crate) fn resize(&mut self, slots: usize) {
        if self.ports.len() < slots {
            self.ports.resize_with(slots, PortStats::default);
        }
    }

    /// Zeroes a port's counters, when its id is reused for a new port.
    pub(crate) fn reset_port(&mut self, port: PortId) {
        if let Some(s) = self.ports.get_mut(port.index()) {
            *s = PortStats::default();
        }
    }

    #[inline]
    pub(crate) fn rx(&mut self, port: PortId, bytes: usize) {
        if let Some(s) = self.ports.get_mut(port.index()) {
            s.rx_packets += 1;
            s.rx_bytes += bytes as u64;
        }
    }

    #[inline]
    pub(crate) fn tx(&mut self, port: PortId, bytes: usize) {
        self.tx_n(port, 1, bytes as u64);
    }

    #[inline]
    pub(crate) fn tx_n(&mut self, port: PortId, packets: u64, bytes: u64) {
        if let Some(s) = self.ports.get_mut(port.index()) {
            s.tx_packets += packets;
            s.tx_bytes += bytes;
        }
    }

    #[inline]
    pub(crate) fn tx_dropped(&mut self, port: PortId) {
        self.tx_dropped_n(port, 1);
    }

    #[inline]
    pub(crate) fn tx_dropped_n(&mut self, port: PortId, packets: u64) {
        if let Some(s) = self.ports.get_mut(port.index()) {
            s.tx_dropped += packets;
        }
    }

    #[inline]
    pub(crate) fn drop(&mut self, port: PortId, reason: DropReason) {
        self.drops.bump(reason);
        if let Some(s) = self.ports.get_mut(port.index()) {
            s.drops.bump(reason);
        }
    }
}
