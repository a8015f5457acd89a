//! The requests the controller understands and what it answers.

use std::collections::BTreeMap;

use super::effect::Effect;
use super::types::{
    ConnectRequest, DisconnectRequest, EndpointView, HostBinding, NetworkCreateRequest,
    NetworkCreateResponse, NetworkInspect, SandboxCreateRequest, SandboxView,
};

/// One control request. Names may be a name, a full id or a unique id
/// prefix, looked up in that order as Docker does (full id, name, prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `network create`.
    CreateNetwork(NetworkCreateRequest),
    /// `network ls`.
    ListNetworks,
    /// `network inspect NAME`.
    InspectNetwork {
        /// The network.
        name: String,
    },
    /// `network rm NAME`.
    RemoveNetwork {
        /// The network.
        name: String,
    },
    /// `network connect NETWORK SANDBOX`.
    Connect {
        /// The network.
        network: String,
        /// The sandbox and endpoint settings.
        request: ConnectRequest,
    },
    /// `network disconnect NETWORK SANDBOX`.
    Disconnect {
        /// The network.
        network: String,
        /// The sandbox.
        request: DisconnectRequest,
    },
    /// `sandbox create`.
    CreateSandbox(SandboxCreateRequest),
    /// `sandbox ls`.
    ListSandboxes,
    /// One sandbox.
    InspectSandbox {
        /// The sandbox.
        name: String,
    },
    /// `sandbox rm NAME`: detaches every endpoint, then removes it.
    RemoveSandbox {
        /// The sandbox.
        name: String,
    },
    /// Renames a sandbox another runtime owns (an external sandbox, named
    /// after Docker's sandbox key until its container's name is known), as
    /// `docker rename` does: the tables operators read (`show-ports`,
    /// `show-fdb`, `show-conntrack`) then show the container's name. A
    /// sandbox whose namespace the daemon named after it keeps its name.
    RenameSandbox {
        /// The sandbox.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Replaces a sandbox's port bindings and publishes them on one of its
    /// endpoints, for a runtime that programs external connectivity after
    /// the endpoint exists (Docker's `ProgramExternalConnectivity`); an
    /// empty map withdraws them (`RevokeExternalConnectivity`). Answers
    /// the sandbox, with the ports in place.
    PublishPorts {
        /// The sandbox.
        sandbox: String,
        /// The endpoint's full id.
        endpoint: String,
        /// As Docker's `HostConfig.PortBindings`.
        port_bindings: BTreeMap<String, Vec<HostBinding>>,
    },
}

impl Request {
    /// Whether the request may change the model (and so must be persisted
    /// before the answer).
    #[must_use]
    pub const fn is_mutating(&self) -> bool {
        !matches!(
            self,
            Self::ListNetworks
                | Self::InspectNetwork { .. }
                | Self::ListSandboxes
                | Self::InspectSandbox { .. }
        )
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A network was created.
    NetworkCreated(NetworkCreateResponse),
    /// Every network, sorted by name.
    Networks(Vec<NetworkInspect>),
    /// One network.
    Network(NetworkInspect),
    /// A sandbox was connected; its new endpoint.
    Connected(EndpointView),
    /// One sandbox (created or inspected).
    Sandbox(SandboxView),
    /// Every sandbox, sorted by name.
    Sandboxes(Vec<SandboxView>),
    /// Removed or disconnected; nothing to show.
    Done,
}

/// What [`super::Controller::apply`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Outcome {
    /// The answer for the API, once the effects are done.
    pub response: Response,
    /// The steps for the daemon, in order.
    pub effects: Vec<Effect>,
    /// Whether the model changed (persist before answering).
    pub changed: bool,
}
