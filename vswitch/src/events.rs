//! Control-plane events, as `docker events` shows them: a network or
//! sandbox created or removed, a sandbox connected to or disconnected from
//! a network, an endpoint that failed.
//!
//! The control thread publishes the events of a change once the change is
//! committed (saved), in the order its requests were applied, so a reader
//! never sees an event for a change that was rolled back. The [`EventHub`]
//! keeps the last [`BACKLOG`] events for `--since`, and hands each
//! subscriber its own bounded queue: a subscriber that falls
//! [`QUEUE`] events behind is cut off (its stream ends) instead of
//! slowing the control thread.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::control::model::Model;
use crate::control::{Request, Response};

/// Events kept for subscribers that ask for the past (`--since`).
pub const BACKLOG: usize = 1024;

/// Events a subscriber may fall behind before it is cut off.
pub const QUEUE: usize = 1024;

/// What an event is about, Docker's `Actor`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The object's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Names and details (`name`, `container`, `type`, `error`…).
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event, in the JSON shape of Docker's `/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `network` or `sandbox` (Docker: `container`).
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `destroy`, `connect`, `disconnect`, `port_failed`.
    #[serde(rename = "Action")]
    pub action: String,
    /// The object.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    #[serde(rename = "scope")]
    pub scope: String,
    /// Seconds since the epoch.
    #[serde(rename = "time")]
    pub time: u64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: u64,
}

impl Event {
    /// An event stamped now.
    #[must_use]
    pub fn now(kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            kind: kind.to_owned(),
            action: action.to_owned(),
            actor: Actor {
                id: id.to_owned(),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            scope: "local".to_owned(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        }
    }
}

/// The events a committed request caused. `before` is the model before
/// the request, `after` after it (removed objects are named from
/// `before`).
#[must_use]
pub fn of_change(
    request: &Request,
    response: &Response,
    before: &Model,
    after: &Model,
) -> Vec<Event> {
    let network = |m: &Model, term: &str| {
        m.networks
            .iter()
            .find(|n| n.name == term || n.id == term)
            .or_else(|| m.networks.iter().find(|n| n.id.starts_with(term)))
            .map(|n| (n.id.clone(), n.name.clone(), n.driver.clone()))
    };
    let sandbox = |m: &Model, term: &str| {
        m.sandboxes
            .iter()
            .find(|s| s.name == term || s.id == term)
            .or_else(|| m.sandboxes.iter().find(|s| s.id.starts_with(term)))
            .map(|s| (s.id.clone(), s.name.clone()))
    };
    let net_event =
        |action: &str, (id, name, driver): (String, String, String), extra: &[(&str, &str)]| {
            let mut attrs = vec![("name", name.as_str()), ("type", driver.as_str())];
            attrs.extend_from_slice(extra);
            Event::now("network", action, &id, &attrs)
        };
    match (request, response) {
        (Request::CreateNetwork(r), _) => network(after, &r.name)
            .map(|n| net_event("create", n, &[]))
            .into_iter()
            .collect(),
        (Request::RemoveNetwork { name }, _) => network(before, name)
            .map(|n| net_event("destroy", n, &[]))
            .into_iter()
            .collect(),
        (Request::CreateSandbox(r), _) => sandbox(after, &r.name)
            .map(|(id, name)| Event::now("sandbox", "create", &id, &[("name", &name)]))
            .into_iter()
            .collect(),
        (Request::RemoveSandbox { name }, _) => sandbox(before, name)
            .map(|(id, name)| Event::now("sandbox", "destroy", &id, &[("name", &name)]))
            .into_iter()
            .collect(),
        // As Docker's container `rename` event: the new name, and the old.
        (Request::RenameSandbox { name, new_name }, _) => match sandbox(before, name) {
            Some((id, old)) if old != *new_name => vec![Event::now(
                "sandbox",
                "rename",
                &id,
                &[("name", new_name), ("oldName", &old)],
            )],
            _ => Vec::new(),
        },
        (
            Request::Connect {
                network: net,
                request,
            },
            Response::Connected(ep),
        ) => {
            let (Some(n), Some((_, sb))) =
                (network(after, net), sandbox(after, &request.container))
            else {
                return Vec::new();
            };
            vec![net_event(
                "connect",
                n,
                &[
                    ("container", &sb),
                    ("endpoint", &ep.endpoint_id),
                    ("interface", &ep.interface),
                    ("port", &ep.port.to_string()),
                ],
            )]
        }
        (
            Request::Disconnect {
                network: net,
                request,
            },
            _,
        ) => {
            let (Some(n), Some((_, sb))) =
                (network(before, net), sandbox(before, &request.container))
            else {
                return Vec::new();
            };
            vec![net_event("disconnect", n, &[("container", &sb)])]
        }
        _ => Vec::new(),
    }
}

/// The sandbox and network a request names, as given (for log lines:
/// every warning names what it is about).
#[must_use]
pub fn subjects(request: &Request) -> (Option<&str>, Option<&str>) {
    match request {
        Request::CreateNetwork(r) => (None, Some(&r.name)),
        Request::RemoveNetwork { name } | Request::InspectNetwork { name } => (None, Some(name)),
        Request::Connect { network, request } => (Some(&request.container), Some(network)),
        Request::Disconnect { network, request } => (Some(&request.container), Some(network)),
        Request::CreateSandbox(r) => (Some(&r.name), None),
        Request::RemoveSandbox { name }
        | Request::InspectSandbox { name }
        | Request::RenameSandbox { name, .. } => (Some(name), None),
        Request::PublishPorts { sandbox, .. } => (Some(sandbox), None),
        Request::ListNetworks | Request::ListSandboxes => (None, None),
    }
}

/// A request's name, for log lines.
#[must_use]
pub const fn kind(request: &Request) -> &'static str {
    match request {
        Request::CreateNetwork(_) => "network create",
        Request::RemoveNetwork { .. } => "network rm",
        Request::InspectNetwork { .. } => "network inspect",
        Request::ListNetworks => "network ls",
        Request::Connect { .. } => "network connect",
        Request::Disconnect { .. } => "network disconnect",
        Request::CreateSandbox(_) => "sandbox create",
        Request::RemoveSandbox { .. } => "sandbox rm",
        Request::InspectSandbox { .. } => "sandbox inspect",
        Request::ListSandboxes => "sandbox ls",
        Request::PublishPorts { .. } => "sandbox publish",
        Request::RenameSandbox { .. } => "sandbox rename",
    }
}

#[derive(Debug, Default)]
struct Inner {
    backlog: VecDeque<Event>,
    subscribers: Vec<Sender<Event>>,
}

/// Where events are published and subscribed to; shared by the control
/// thread and the API.
#[derive(Debug, Default)]
pub struct EventHub {
    inner: Mutex<Inner>,
}

impl EventHub {
    /// A hub with no events yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands `event` to every subscriber and keeps it in the backlog.
    pub fn publish(&self, event: Event) {
        let mut inner = self.inner.lock();
        inner
            .subscribers
            .retain(|s| match s.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        "an event subscriber fell {QUEUE} events behind; its stream ends"
                    );
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        if inner.backlog.len() == BACKLOG {
            inner.backlog.pop_front();
        }
        inner.backlog.push_back(event);
    }

    /// The kept events at or after `since` (nanoseconds since the epoch;
    /// none when `None`), and a queue of every event published from now
    /// on: taken together, so none is missed or seen twice.
    pub fn subscribe(&self, since: Option<u64>) -> (Vec<Event>, Receiver<Event>) {
        let mut inner = self.inner.lock();
        let past = since.map_or_else(Vec::new, |t| {
            inner
                .backlog
                .iter()
                .filter(|e| e.time_nano >= t)
                .cloned()
                .collect()
        });
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        inner.subscribers.push(tx);
        (past, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_the_backlog_then_live_events_in_order() {
        let hub = EventHub::new();
        hub.publish(Event::now("sandbox", "create", "a1", &[("name", "web")]));
        let t = hub.inner.lock().backlog[0].time_nano;
        let (past, rx) = hub.subscribe(Some(t));
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].actor.attributes["name"], "web");
        let (none, _rx2) = hub.subscribe(None);
        assert!(none.is_empty());
        hub.publish(Event::now(
            "network",
            "connect",
            "n1",
            &[("container", "web")],
        ));
        let e = rx.try_recv().unwrap();
        assert_eq!((e.kind.as_str(), e.action.as_str()), ("network", "connect"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_subscriber_too_far_behind_is_cut_off_and_the_backlog_is_bounded() {
        let hub = EventHub::new();
        let (_, rx) = hub.subscribe(None);
        for i in 0..=QUEUE.max(BACKLOG) {
            hub.publish(Event::now("sandbox", "create", &i.to_string(), &[]));
        }
        assert_eq!(rx.len(), QUEUE);
        assert!(hub.inner.lock().subscribers.is_empty());
        assert_eq!(hub.inner.lock().backlog.len(), BACKLOG);
        // Draining the queue ends with a disconnected channel: the stream
        // ends rather than silently skipping events.
        while rx.try_recv().is_ok() {}
        assert!(matches!(
            rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn json_shape_is_dockers() {
        let e = Event::now("network", "connect", "abc", &[("container", "web")]);
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["Type"], "network");
        assert_eq!(v["Action"], "connect");
        assert_eq!(v["Actor"]["ID"], "abc");
        assert_eq!(v["Actor"]["Attributes"]["container"], "web");
        assert_eq!(v["scope"], "local");
        assert!(v["timeNano"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    }
}
