//! The control API: HTTP/1.1 and JSON on a unix socket, used by `vsctl`.
//!
//! | route | request | answer |
//! | --- | --- | --- |
//! | `GET /v1/networks` | | 200, `[NetworkInspect]` sorted by name |
//! | `POST /v1/networks` | [`types::NetworkCreateRequest`] | 201, `{"Id", "Warning"}` |
//! | `GET /v1/networks/{name}` | | 200, [`types::NetworkInspect`] |
//! | `DELETE /v1/networks/{name}` | | 204 |
//! | `POST /v1/networks/{name}/connect` | [`types::ConnectRequest`] | 200, [`types::EndpointView`] |
//! | `POST /v1/networks/{name}/disconnect` | [`types::DisconnectRequest`] | 204 |
//! | `GET /v1/sandboxes` | | 200, `[SandboxView]` sorted by name |
//! | `POST /v1/sandboxes` | [`types::SandboxCreateRequest`] | 201, [`types::SandboxView`] |
//! | `GET /v1/sandboxes/{name}` | | 200, [`types::SandboxView`] |
//! | `DELETE /v1/sandboxes/{name}` | | 204 |
//! | `GET /v1/fdb[?network=NAME]` | | 200, `[FdbView]` |
//! | `GET /v1/ports` | | 200, `[PortView]` |
//! | `GET /v1/vteps[?network=NAME]` | | 200, `[VtepView]` (remote VTEPs, by address) |
//! | `GET /v1/conntrack[?network=NAME][&sandbox=NAME]` | | 200, `[ConntrackView]` |
//! | `GET /v1/dns[?network=NAME]` | | 200, `[DnsNetworkView]` sorted by name |
//! | `GET /v1/events[?since=NANOS&until=NANOS]` | | 200, a stream of [`crate::events::Event`], one JSON object per line, until `until` or the client leaves |
//! | `POST /v1/trace` | [`crate::trace::TraceRequest`] | 200, [`crate::trace::TraceReport`] |
//! | `GET /v1/capture?target=SANDBOX[:IFACE]\|PORT[&count=N][&filter=EXPR]` | | 200, a pcapng stream of the port's frames ([`crate::datapath::capture`]) |
//! | `GET /metrics` | | 200, Prometheus text ([`crate::metrics`]) |
//!
//! Errors answer `{"message": "..."}` with the status of
//! [`ControlError::status`]; a body that is not the expected JSON is a 400,
//! an unknown route a 404, a known route with another method a 405.
//!
//! The server ([`server::ApiServer`]) only parses and routes; a
//! [`Backend`] (the daemon: snapshot reads, control thread, effects, store)
//! does the work.
//! The client ([`client::Client`]) speaks just enough HTTP/1.1 for this
//! server: one request per connection, `Connection: close`, and a body
//! delimited by `Content-Length` (the server never chunks).

use crate::control::{ControlError, Request, Response};

mod capture_client;
mod capture_stream;
pub mod client;
mod events_client;
pub mod server;
mod stream;
mod stream_client;
/// The request and answer bodies; they belong to the control plane
/// ([`crate::control::types`]) and are re-exported here for clients.
pub use crate::control::types;

pub use client::{Client, ClientError};
pub use server::{ApiError, ApiServer, Reply, ShutdownHandle, route, serve};

use types::{DnsNetworkView, FdbView, PortView};

/// What the API server needs from the daemon.
///
/// Calls come from the API's connection threads, several at once. The
/// daemon answers reads from its last published snapshot without waiting,
/// and hands changes to its control thread, which carries out the effects
/// and persists the model before the call returns.
pub trait Backend: Send + Sync {
    /// Applies one control request.
    ///
    /// # Errors
    /// The controller's refusal, or [`ControlError::Internal`] when the
    /// daemon could not carry the request out.
    fn apply(&self, request: Request) -> Result<Response, ControlError>;

    /// The FDB, optionally of one network (name, id or id prefix).
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`] for an unknown network.
    fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ControlError>;

    /// Every endpoint port with its counters.
    ///
    /// # Errors
    /// [`ControlError::Internal`] when the datapath does not answer.
    fn ports(&self) -> Result<Vec<PortView>, ControlError>;

    /// The embedded DNS's records per user-defined network, as the
    /// resolver answers from them, optionally of one network (name, id or
    /// id prefix).
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`] for an unknown network.
    fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError>;

    /// The host connector's flows (`vsctl show-conntrack`), optionally of
    /// one network and one sandbox. A backend without a connector has none.
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`], [`ControlError::SandboxNotFound`].
    fn conntrack(
        &self,
        network: Option<&str>,
        sandbox: Option<&str>,
    ) -> Result<Vec<crate::control::types::ConntrackView>, ControlError> {
        let _ = (network, sandbox);
        Ok(Vec::new())
    }

    /// Every counter in the Prometheus text exposition format
    /// ([`crate::metrics`]). A backend without counters has none to show.
    ///
    /// # Errors
    /// [`ControlError::Internal`] when a thread holding counters does not
    /// answer.
    fn metrics(&self) -> Result<String, ControlError> {
        Ok(String::new())
    }

    /// The remote VTEPs, optionally of one overlay network.
    ///
    /// # Errors
    /// [`ControlError::NetworkNotFound`] for an unknown network; a 400 on
    /// a host without a VTEP.
    fn vteps(&self, network: Option<&str>) -> Result<Vec<types::VtepView>, ControlError> {
        let _ = network;
        Err(ControlError::Unsupported(
            "this daemon has no VTEP (vswitchd --vtep)".to_owned(),
        ))
    }

    /// This host's underlay counters.
    ///
    /// # Errors
    /// A 400 on a host without a VTEP.
    fn underlay(&self) -> Result<types::UnderlayView, ControlError> {
        Err(ControlError::Unsupported(
            "this daemon has no VTEP (vswitchd --vtep)".to_owned(),
        ))
    }

    /// Runs a frame through the pipeline in trace mode ([`crate::trace`]).
    ///
    /// # Errors
    /// A 400 or 404 for a bad request; [`ControlError::Internal`] when the
    /// datapath does not answer. A backend without a datapath refuses.
    fn trace(
        &self,
        request: &crate::trace::TraceRequest,
    ) -> Result<crate::trace::TraceReport, ControlError> {
        let _ = request;
        Err(ControlError::Unsupported(
            "this daemon has no datapath to trace".to_owned(),
        ))
    }

    /// Starts a capture of a port, named `SANDBOX[:IFACE]` or by number;
    /// returns its name for the capture file and the reader's end.
    ///
    /// # Errors
    /// A 404 for an unknown sandbox or port; [`ControlError::Internal`]
    /// when the datapath does not answer. A backend without a datapath
    /// refuses.
    fn capture(&self, target: &str) -> Result<(String, crate::datapath::Capture), ControlError> {
        let _ = target;
        Err(ControlError::Unsupported(
            "this daemon has no datapath to capture from".to_owned(),
        ))
    }

    /// Control-plane events: those kept since `since` (nanoseconds since
    /// the epoch), then a live queue ([`crate::events::EventHub`]).
    /// `None` for a backend that has no events.
    fn events(
        &self,
        since: Option<u64>,
    ) -> Option<(
        Vec<crate::events::Event>,
        crossbeam_channel::Receiver<crate::events::Event>,
    )> {
        let _ = since;
        None
    }
}
