//! Who may talk to whom, as Docker's iptables rules decide it
//! (docker-reference §3.2, §3.3, §5), written as pure functions so the
//! gateway, the host connector and `vsctl trace` all give one answer.
//!
//! | from → to | Docker's rule | here |
//! |---|---|---|
//! | container → same network | `-i B -o B -j ACCEPT` (DROP when `enable_icc=false`) | [`Decision::Switch`] or [`PolicyDrop::Icc`] |
//! | container → its gateway or any host address | INPUT is not filtered | [`Decision::Local`], even on `--internal` |
//! | container → another network | `DOCKER-ISOLATION-STAGE-1/2` | [`PolicyDrop::InterNetwork`] |
//! | container → outside | `POSTROUTING -s S ! -o B -j MASQUERADE` | [`Decision::Masquerade`], or [`PolicyDrop::Internal`], [`PolicyDrop::MasqueradeDisabled`] |
//! | outside → container address | `FORWARD -o B -j DOCKER`: only published container ports | [`Decision::Forward`] or [`PolicyDrop::NotPublished`] ([`PolicyDrop::Internal`] on `--internal`) |
//! | host → container address | OUTPUT, not FORWARD | [`Decision::Forward`] |
//! | anyone → host address:published port | DNAT / docker-proxy | [`crate::PortMap::lookup`] |

use core::fmt;

/// A network's external-connectivity options.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NetworkPolicy {
    /// `--internal`: nothing leaves, nothing enters from outside.
    pub internal: bool,
    /// `com.docker.network.bridge.enable_ip_masquerade` (default true).
    pub masquerade: bool,
    /// `com.docker.network.bridge.enable_icc` (default true).
    pub icc: bool,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self {
            internal: false,
            masquerade: true,
            icc: true,
        }
    }
}

/// Where a container's packet is going, as the gateway classifies the
/// destination address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destination {
    /// Another endpoint of the same network.
    SameNetwork,
    /// The network's gateway or another address of the host (including a
    /// host address with a published port: hairpin and cross-network
    /// access go through the host, as with Docker's proxy).
    Host,
    /// An endpoint of another network of this daemon.
    OtherNetwork,
    /// Anything else.
    Outside,
}

/// Where a packet towards a container's own address comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The host itself.
    Host,
    /// Anything beyond the host (a route to the container's subnet).
    Outside,
}

/// What to do with a packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Switch it within the network.
    Switch,
    /// Hand it to the gateway or host side (local answer, published port).
    Local,
    /// Send it out with the host's address (a masquerade flow).
    Masquerade,
    /// Deliver it to the container untranslated.
    Forward,
    /// Drop it and count the reason.
    Drop(PolicyDrop),
}

/// Why policy dropped a packet; one counter each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum PolicyDrop {
    /// `enable_icc=false` and both ends on one network.
    Icc,
    /// Between two networks (Docker's isolation chains).
    InterNetwork,
    /// An `--internal` network, towards or from outside.
    Internal,
    /// Egress from a network with `enable_ip_masquerade=false`.
    MasqueradeDisabled,
    /// From outside to a container port that is not published.
    NotPublished,
    /// To a host address and port that no binding serves.
    NoBinding,
}

impl PolicyDrop {
    /// Counter name, for `show-ports` and the API.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Icc => "icc",
            Self::InterNetwork => "inter_network",
            Self::Internal => "internal",
            Self::MasqueradeDisabled => "masquerade_disabled",
            Self::NotPublished => "not_published",
            Self::NoBinding => "no_binding",
        }
    }
}

impl fmt::Display for PolicyDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packet from a container on a network with `policy`, towards `dst`.
#[must_use]
pub const fn from_container(policy: NetworkPolicy, dst: Destination) -> Decision {
    match dst {
        Destination::SameNetwork if policy.icc => Decision::Switch,
        Destination::SameNetwork => Decision::Drop(PolicyDrop::Icc),
        Destination::Host => Decision::Local,
        Destination::OtherNetwork => Decision::Drop(PolicyDrop::InterNetwork),
        Destination::Outside if policy.internal => Decision::Drop(PolicyDrop::Internal),
        Destination::Outside if !policy.masquerade => {
            Decision::Drop(PolicyDrop::MasqueradeDisabled)
        }
        Destination::Outside => Decision::Masquerade,
    }
}

/// A packet addressed to a container's own address (not through a
/// published host port) on a network with `policy`. `published` says
/// whether the destination port is one the container publishes; a
/// container that publishes nothing is unreachable from outside, even for
/// a client with a route to its subnet.
#[must_use]
pub const fn to_container(policy: NetworkPolicy, src: Source, published: bool) -> Decision {
    match src {
        Source::Host => Decision::Forward,
        Source::Outside if policy.internal => Decision::Drop(PolicyDrop::Internal),
        Source::Outside if published => Decision::Forward,
        Source::Outside => Decision::Drop(PolicyDrop::NotPublished),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: NetworkPolicy = NetworkPolicy {
        internal: false,
        masquerade: true,
        icc: true,
    };

    #[test]
    fn default_networks_switch_locally_and_masquerade_out() {
        assert_eq!(NetworkPolicy::default(), DEFAULT);
        assert_eq!(
            from_container(DEFAULT, Destination::SameNetwork),
            Decision::Switch
        );
        assert_eq!(from_container(DEFAULT, Destination::Host), Decision::Local);
        assert_eq!(
            from_container(DEFAULT, Destination::Outside),
            Decision::Masquerade
        );
    }

    #[test]
    fn internal_networks_never_leave_but_reach_their_gateway() {
        let p = NetworkPolicy {
            internal: true,
            ..DEFAULT
        };
        assert_eq!(
            from_container(p, Destination::Outside),
            Decision::Drop(PolicyDrop::Internal)
        );
        assert_eq!(from_container(p, Destination::Host), Decision::Local);
        assert_eq!(
            to_container(p, Source::Outside, true),
            Decision::Drop(PolicyDrop::Internal)
        );
        assert_eq!(to_container(p, Source::Host, false), Decision::Forward);
    }

    #[test]
    fn masquerade_off_blocks_egress_only() {
        let p = NetworkPolicy {
            masquerade: false,
            ..DEFAULT
        };
        assert_eq!(
            from_container(p, Destination::Outside),
            Decision::Drop(PolicyDrop::MasqueradeDisabled)
        );
        assert_eq!(
            from_container(p, Destination::SameNetwork),
            Decision::Switch
        );
        assert_eq!(to_container(p, Source::Outside, true), Decision::Forward);
    }

    #[test]
    fn networks_are_isolated_from_each_other_whatever_their_options() {
        for internal in [false, true] {
            for icc in [false, true] {
                let p = NetworkPolicy {
                    internal,
                    icc,
                    masquerade: true,
                };
                assert_eq!(
                    from_container(p, Destination::OtherNetwork),
                    Decision::Drop(PolicyDrop::InterNetwork)
                );
            }
        }
    }

    #[test]
    fn icc_off_drops_same_network_but_not_the_gateway() {
        let p = NetworkPolicy {
            icc: false,
            ..DEFAULT
        };
        assert_eq!(
            from_container(p, Destination::SameNetwork),
            Decision::Drop(PolicyDrop::Icc)
        );
        assert_eq!(from_container(p, Destination::Host), Decision::Local);
    }

    #[test]
    fn a_container_that_publishes_nothing_is_unreachable_from_outside() {
        assert_eq!(
            to_container(DEFAULT, Source::Outside, false),
            Decision::Drop(PolicyDrop::NotPublished)
        );
        assert_eq!(
            to_container(DEFAULT, Source::Outside, true),
            Decision::Forward
        );
        assert_eq!(
            to_container(DEFAULT, Source::Host, false),
            Decision::Forward
        );
        assert_eq!(PolicyDrop::NotPublished.to_string(), "not_published");
    }
}
