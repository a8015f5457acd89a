//! `vsctl trace`: one frame through the real pipeline, with nothing kept.
//!
//! The frame runs through [`Switch::process_traced`] on a copy of the
//! switch (configuration, FDB, counters), so the decisions are exactly the
//! datapath's while its learning, counters and FDB journal stay as they
//! were, and nothing is transmitted: the caller gets the decisions, not a
//! frame to send. The copy costs one FDB clone per trace, an operator's
//! command, never a frame on the datapath.

use std::time::Instant;

use super::{Action, Switch, Trace, TraceEvent, Tracer};
use crate::buf::PacketBuf;
use crate::ids::PortId;

/// What the pipeline decided for a traced frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRun {
    /// Every step, in order.
    pub events: Vec<TraceEvent>,
    /// The decision.
    pub action: Action,
    /// For [`Action::Flood`], the ports it reaches, in id order.
    pub flooded: Vec<PortId>,
    /// For a known destination, how long ago its FDB entry was refreshed
    /// (`None` for a static entry or an unknown destination).
    pub entry_age: Option<std::time::Duration>,
}

impl Switch {
    /// Runs `frame`, as received on `ingress` at `now`, through the
    /// pipeline of a copy of this switch and reports what it decided. This
    /// switch is left untouched: no entry learned or refreshed, no counter
    /// moved.
    #[must_use]
    pub fn dry_run(&self, now: Instant, ingress: PortId, frame: &[u8]) -> DryRun {
        let mut copy = self.clone();
        copy.journal = None;
        let mut trace = Trace::default();
        let action = match PacketBuf::from_frame(frame) {
            Ok(mut buf) => copy.process_traced(now, ingress, &mut buf, &mut trace),
            Err(_) => {
                let reason = super::DropReason::Oversize;
                trace.record(TraceEvent::Dropped(reason));
                Action::Drop(reason)
            }
        };
        let flooded = match action {
            Action::Flood {
                network,
                except,
                scope,
            } => copy.flood_targets(network, except, scope).collect(),
            _ => Vec::new(),
        };
        let network = trace.events.iter().find_map(|e| match *e {
            TraceEvent::IngressChecked { network, .. } => Some(network),
            _ => None,
        });
        let entry_age = trace.events.iter().find_map(|e| match *e {
            TraceEvent::Lookup { mac, port: Some(_) } => self
                .fdb
                .snapshot(now)
                .into_iter()
                .find(|r| Some(r.network) == network && r.mac == mac)
                .and_then(|r| r.age),
            _ => None,
        });
        DryRun {
            events: trace.events,
            action,
            flooded,
            entry_age,
        }
    }
}
