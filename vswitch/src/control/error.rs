//! Why a control request was refused, in Docker's words where Docker has
//! words for it (docker-reference §1.4), and the HTTP status it maps to.

use ipam::IpamError;

/// A refused or failed control request.
///
/// The `Display` text is what the API puts in `{"message": …}` and what
/// `vsctl` prints after `Error response from daemon: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    // ----- Networks. -----
    /// No network has this name, id or id prefix.
    #[error("network {0} not found")]
    NetworkNotFound(String),

    /// An id prefix matches more than one network.
    #[error("network {name} is ambiguous ({matches} matches found based on ID prefix)")]
    AmbiguousNetwork {
        /// The name or prefix asked for.
        name: String,
        /// How many networks it matches.
        matches: usize,
    },

    /// A network with this name exists.
    #[error("network with name {0} already exists")]
    NetworkExists(String),

    /// `bridge`, `host`, `none` and `default` are Docker's own names.
    #[error("{0} is a pre-defined network and cannot be created")]
    PredefinedNetworkCreate(String),

    /// The default `bridge` network stays.
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedNetworkRemove(String),

    /// Endpoints are still attached to the network.
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints {
        /// The network's name.
        name: String,
        /// The network's id.
        id: String,
    },

    /// A network name that is empty or would not survive a URL path. Docker
    /// accepts any non-blank name; we keep to the characters container names
    /// may use (netavark does the same).
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidNetworkName(String),

    /// A network or IPAM driver other than `bridge` / `default`.
    #[error("could not find plugin {0} in v1 plugin registry: plugin not found")]
    PluginNotFound(String),

    /// More than one IPv4 subnet on a bridge network.
    #[error("bridge driver doesn't support multiple subnets")]
    MultipleSubnets,

    /// A driver option (`-o key=value`) whose value does not parse; Docker's
    /// `parseErr` text with Go's `strconv` reason.
    #[error("failed to parse {label} value: {value} ({reason})")]
    InvalidOption {
        /// The option's key.
        label: String,
        /// The value as given.
        value: String,
        /// Go's error text.
        reason: String,
    },

    /// `com.docker.network.driver.mtu` below zero (Docker), or one the
    /// switch cannot carry (1 to 67, above 65535: ours).
    #[error("invalid MTU number: {0}")]
    InvalidMtu(i64),

    /// An address-management refusal, Docker's text unchanged.
    #[error(transparent)]
    Ipam(#[from] IpamError),

    // ----- Sandboxes. -----
    /// No sandbox has this name, id or id prefix.
    #[error("No such sandbox: {0}")]
    SandboxNotFound(String),

    /// An id prefix matches more than one sandbox.
    #[error("Multiple IDs found with provided prefix: {0}")]
    AmbiguousSandbox(String),

    /// Docker's container-name rule: two or more characters from the set.
    #[error("Invalid sandbox name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidSandboxName(String),

    /// A sandbox with this name exists.
    #[error(
        "Conflict. The sandbox name \"{name}\" is already in use by sandbox \"{id}\". You have to remove (or rename) that sandbox to be able to reuse that name."
    )]
    SandboxNameInUse {
        /// The name.
        name: String,
        /// The sandbox holding it.
        id: String,
    },

    /// An adopted namespace path that is not absolute.
    #[error("invalid netns path {0:?}: must be an absolute path")]
    RelativeNetnsPath(String),

    /// An adopted namespace path already belongs to a sandbox.
    #[error("netns {path} is already used by sandbox {sandbox}")]
    NetnsInUse {
        /// The path.
        path: String,
        /// The sandbox using it.
        sandbox: String,
    },

    // ----- Endpoints. -----
    /// The sandbox already has an endpoint on the network.
    #[error("endpoint with name {sandbox} already exists in network {network}")]
    AlreadyConnected {
        /// The sandbox's name.
        sandbox: String,
        /// The network's name.
        network: String,
    },

    /// The sandbox has no endpoint on the network.
    #[error("sandbox {sandbox} is not connected to network {network}")]
    NotConnected {
        /// The sandbox's name.
        sandbox: String,
        /// The network's name.
        network: String,
    },

    /// `--alias` on the default bridge.
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasOnDefaultNetwork,

    /// An empty alias, or one with characters a DNS name cannot hold.
    #[error("invalid alias {0:?}")]
    InvalidAlias(String),

    /// Every port id is taken.
    #[error("no free switch port id is left")]
    PortsExhausted,

    /// Every network id is taken.
    #[error("no free network id is left")]
    NetworksExhausted,

    // ----- Docker's host and none networks. -----
    /// A sandbox on `host` joining or leaving another network, or one on
    /// other networks joining `host`.
    #[error("container cannot be disconnected from host network or connected to host network")]
    HostNetworkConflict,

    /// A sandbox on `none` joining another network, or one on other
    /// networks joining `none`.
    #[error(
        "container cannot be connected to multiple networks with one of the networks in private (none) mode"
    )]
    NoneNetworkConflict,

    // ----- A sandbox's resolver and name. -----
    /// A `--dns` value that is not an address.
    #[error("{0} is not an ip address")]
    InvalidDnsServer(String),

    /// A malformed `--dns-option ndots`.
    #[error(transparent)]
    ResolvConf(#[from] dns::resolv_conf::ResolvConfError),

    /// A `--hostname` that is not a host name.
    #[error("invalid hostname format: {0}")]
    InvalidHostname(String),

    // ----- Published ports. -----
    /// A `-p`/`--expose` request that does not parse.
    #[error(transparent)]
    PortSpec(#[from] nat::SpecError),

    /// The sandbox's ports could not be published when it got its gateway
    /// endpoint (docker-reference §4.5); nothing of the request was kept.
    #[error(
        "driver failed programming external connectivity on endpoint {sandbox} ({endpoint}): {cause}"
    )]
    ExternalConnectivity {
        /// The sandbox's name.
        sandbox: String,
        /// The endpoint's id.
        endpoint: String,
        /// The allocator's or the host's refusal.
        cause: nat::PublishError,
    },

    // ----- Requests and state. -----
    /// The request body is not the JSON the route expects.
    #[error("invalid JSON in request body: {0}")]
    InvalidJson(String),

    /// A well-formed request that asks for something not supported.
    #[error("{0}")]
    Unsupported(String),

    /// A stored model that breaks an invariant.
    #[error("invalid stored state: {0}")]
    InvalidState(String),

    /// An adopted namespace's process is gone: the path given at adoption
    /// leads elsewhere now, so nothing is configured through it.
    #[error(
        "network namespace {path} of sandbox {sandbox} is gone (its process exited); remove the sandbox"
    )]
    NetnsGone {
        /// The sandbox.
        sandbox: String,
        /// The path it was adopted from.
        path: String,
    },

    /// The daemon could not carry the request out (an effect failed, the
    /// control thread is gone, the store could not be written).
    #[error("{context}: {source}")]
    Internal {
        /// What the daemon was doing.
        context: String,
        /// Why it failed: the original error, kept for logs and callers
        /// that walk [`std::error::Error::source`].
        #[source]
        source: Cause,
    },
}

/// The error behind a [`ControlError::Internal`]: shared so that the error
/// stays `Clone`, compared by its text.
#[derive(Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps an error.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(std::sync::Arc::from(e.into()))
    }
}

impl core::fmt::Debug for Cause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&*self.0, f)
    }
}

impl core::fmt::Display for Cause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

impl ControlError {
    /// A failure of the daemon itself while `context`, keeping its cause.
    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context: context.into(),
            source: Cause::new(source),
        }
    }

    /// The HTTP status the API answers with: 400 bad request, 403 forbidden
    /// (pre-defined network, and the IPAM errors Docker classes as
    /// forbidden), 404 not found, 409 conflict with the current state, 503
    /// when addresses or pools are exhausted (Docker's "no service"), 500
    /// for internal failures.
    #[must_use]
    pub const fn status(&self) -> u16 {
        match self {
            Self::NetworkNotFound(_) | Self::SandboxNotFound(_) | Self::PluginNotFound(_) => 404,
            Self::NetworkExists(_)
            | Self::ActiveEndpoints { .. }
            | Self::SandboxNameInUse { .. }
            | Self::NetnsInUse { .. }
            | Self::AlreadyConnected { .. }
            | Self::NotConnected { .. }
            | Self::NetnsGone { .. } => 409,
            Self::PredefinedNetworkCreate(_)
            | Self::PredefinedNetworkRemove(_)
            | Self::HostNetworkConflict
            | Self::NoneNetworkConflict => 403,
            Self::PortsExhausted | Self::NetworksExhausted => 503,
            Self::InvalidState(_) | Self::Internal { .. } | Self::ExternalConnectivity { .. } => {
                500
            }
            Self::Ipam(e) => ipam_status(e),
            Self::AmbiguousNetwork { .. }
            | Self::AmbiguousSandbox(_)
            | Self::InvalidNetworkName(_)
            | Self::MultipleSubnets
            | Self::InvalidOption { .. }
            | Self::InvalidMtu(_)
            | Self::InvalidSandboxName(_)
            | Self::RelativeNetnsPath(_)
            | Self::AliasOnDefaultNetwork
            | Self::InvalidAlias(_)
            | Self::InvalidJson(_)
            | Self::PortSpec(_)
            | Self::InvalidDnsServer(_)
            | Self::ResolvConf(_)
            | Self::InvalidHostname(_)
            | Self::Unsupported(_) => 400,
        }
    }

    /// Whether the error says that something named does not exist (404).
    #[must_use]
    pub const fn is_not_found(&self) -> bool {
        self.status() == 404
    }
}

/// libnetwork's classes for IPAM errors (`ipamapi/contract.go`): forbidden
/// for overlaps and taken addresses, no-service for exhaustion, internal for
/// broken state, bad request for the rest.
const fn ipam_status(e: &IpamError) -> u16 {
    match e {
        IpamError::PoolOverlap { .. } | IpamError::AddressInUse { .. } => 403,
        IpamError::NoAvailableDefaultPool { .. }
        | IpamError::NoAvailableAddresses { .. }
        | IpamError::NetworkExhausted { .. } => 503,
        IpamError::GatewayAllocation { cause, .. }
        | IpamError::AuxAddressAllocation { cause, .. } => match **cause {
            IpamError::AddressInUse { .. } => 403,
            IpamError::NoAvailableAddresses { .. } => 503,
            _ => 400,
        },
        IpamError::InvalidState { .. }
        | IpamError::UnknownPool { .. }
        | IpamError::BadPool { .. }
        | IpamError::GatewayAlreadySet { .. } => 500,
        _ => 400,
    }
}
