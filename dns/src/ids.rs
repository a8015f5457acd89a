//! Typed identifiers.
//!
//! The daemon keeps Docker's 64-hex network and sandbox ids; it maps them to
//! these small numbers when it builds a [`Records`](crate::Records) snapshot,
//! so that a sandbox can never be passed where a network is meant.

use core::fmt;

/// A network with service discovery (a user-defined Docker network).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NetworkId(pub u32);

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A sandbox: one container's network namespace, which may be attached to
/// several networks and owns one embedded-DNS listener.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SandboxId(pub u32);

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// One attempt at forwarding a query to one upstream server.
///
/// The resolver hands one out with every
/// [`Forward`](crate::Forward); the daemon keeps it next to the socket it
/// opened for that attempt and gives it back with the reply
/// ([`Resolver::handle_upstream`](crate::Resolver::handle_upstream)). Ids are
/// never reused by one resolver.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ForwardId(pub(crate) u64);

impl ForwardId {
    /// The raw number, for logs and maps keyed by integers.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ForwardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f{}", self.0)
    }
}
