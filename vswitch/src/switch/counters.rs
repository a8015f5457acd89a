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
///
/// What every frame updates (packets and bytes each way) is kept apart from
/// the rest of a port's counters, 32 bytes a port: with a thousand ports
/// the per-frame counters fit in 32 KB, where the whole per-port record
/// (a drop counter per reason) would spread them over a quarter megabyte
/// and cost a cache miss per frame.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    traffic: Vec<Traffic>,
    /// The rest of each port's counters; their traffic fields stay zero.
    ports: Vec<PortStats>,
    drops: DropCounters,
}

/// The counters every frame updates, of one port.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

impl Stats {
    /// Counters of one port (zero for a port never seen).
    #[must_use]
    pub fn port(&self, port: PortId) -> PortStats {
        let mut stats = self.ports.get(port.index()).cloned().unwrap_or_default();
        if let Some(t) = self.traffic.get(port.index()) {
            stats.rx_packets = t.rx_packets;
            stats.rx_bytes = t.rx_bytes;
            stats.tx_packets = t.tx_packets;
            stats.tx_bytes = t.tx_bytes;
        }
        stats
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
            self.traffic.resize(slots, Traffic::default());
        }
    }

    /// Zeroes a port's counters, when its id is reused for a new port.
    pub(crate) fn reset_port(&mut self, port: PortId) {
        if let Some(s) = self.ports.get_mut(port.index()) {
            *s = PortStats::default();
        }
        if let Some(t) = self.traffic.get_mut(port.index()) {
            *t = Traffic::default();
        }
    }

    #[inline]
    pub(crate) fn rx(&mut self, port: PortId, bytes: usize) {
        if let Some(t) = self.traffic.get_mut(port.index()) {
            t.rx_packets += 1;
            t.rx_bytes += bytes as u64;
        }
    }

    #[inline]
    pub(crate) fn tx(&mut self, port: PortId, bytes: usize) {
        self.tx_n(port, 1, bytes as u64);
    }

    #[inline]
    pub(crate) fn tx_n(&mut self, port: PortId, packets: u64, bytes: u64) {
        if let Some(t) = self.traffic.get_mut(port.index()) {
            t.tx_packets += packets;
            t.tx_bytes += bytes;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_reads_its_traffic_and_drops_together_and_resets_both() {
        let mut stats = Stats::default();
        stats.resize(4);
        stats.rx(PortId(2), 60);
        stats.rx(PortId(2), 100);
        stats.tx_n(PortId(2), 3, 180);
        stats.tx_dropped(PortId(2));
        stats.drop(PortId(2), DropReason::Runt);
        stats.rx(PortId(3), 1);
        let p = stats.port(PortId(2));
        assert_eq!(
            (
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                p.tx_dropped
            ),
            (2, 160, 3, 180, 1)
        );
        assert_eq!(p.drops.get(DropReason::Runt), 1);
        assert_eq!(stats.port(PortId(9)), PortStats::default(), "never seen");
        stats.reset_port(PortId(2));
        assert_eq!(stats.port(PortId(2)), PortStats::default());
        assert_eq!(stats.port(PortId(3)).rx_packets, 1, "other ports kept");
        assert_eq!(stats.drops().get(DropReason::Runt), 1, "totals kept");
    }
}
