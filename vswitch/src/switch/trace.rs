//! A record of the decisions taken for one frame, for tests and `vsctl
//! trace` (Open vSwitch's `ofproto/trace` idea).
//!
//! The pipeline reports to a [`Tracer`]; the datapath passes [`NoTrace`],
//! whose methods compile to nothing, so tracing costs the hot path nothing.

use core::fmt;

use super::action::{Action, DropReason};
use super::fdb::Learned;
use crate::ids::{MacAddr, NetworkId, PortId};

/// One step of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// The frame arrived.
    Received {
        /// Ingress port.
        port: PortId,
        /// Frame length.
        len: usize,
    },
    /// The frame passed the ingress checks of its port.
    IngressChecked {
        /// The ingress port's network.
        network: NetworkId,
        /// Source MAC.
        src: MacAddr,
        /// Destination MAC.
        dst: MacAddr,
        /// EtherType.
        ethertype: u16,
    },
    /// The source was learned.
    Learned {
        /// Source MAC.
        mac: MacAddr,
        /// What the FDB did with it.
        outcome: Learned,
    },
    /// The destination was looked up in the FDB.
    Lookup {
        /// Destination MAC.
        mac: MacAddr,
        /// The port found, if any.
        port: Option<PortId>,
    },
    /// The gateway built an ARP reply.
    GatewayArpReply,
    /// The gateway built an ICMP echo reply.
    GatewayEchoReply,
    /// The frame was for the gateway and went to the L3 stage.
    ToL3,
    /// The frame was dropped.
    Dropped(DropReason),
    /// The final decision.
    Decided(Action),
}

/// Receives the pipeline's steps.
pub trait Tracer {
    /// Records one step.
    fn record(&mut self, event: TraceEvent);
}

/// Records nothing; the datapath's tracer.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn record(&mut self, _: TraceEvent) {}
}

/// Keeps every step, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The steps.
    pub events: Vec<TraceEvent>,
}

impl Tracer for Trace {
    fn record(&mut self, event: TraceEvent) {
        self.events.push(event);
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Received { port, len } => write!(f, "received {len} bytes on {port}"),
            Self::IngressChecked {
                network,
                src,
                dst,
                ethertype,
            } => write!(
                f,
                "ingress ok: network {network}, {src} > {dst}, ethertype 0x{ethertype:04x}"
            ),
            Self::Learned { mac, outcome } => write!(f, "learn {mac}: {outcome:?}"),
            Self::Lookup { mac, port: Some(p) } => write!(f, "lookup {mac}: at {p}"),
            Self::Lookup { mac, port: None } => write!(f, "lookup {mac}: unknown"),
            Self::GatewayArpReply => f.write_str("gateway: ARP reply"),
            Self::GatewayEchoReply => f.write_str("gateway: ICMP echo reply"),
            Self::ToL3 => f.write_str("gateway: to L3"),
            Self::Dropped(r) => write!(f, "drop: {}", r.as_str()),
            Self::Decided(a) => write!(f, "action: {a:?}"),
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
