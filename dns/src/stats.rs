//! Counters: what the resolver did, and why it dropped what it dropped.
//!
//! A drop is an outcome, not an error: the resolver counts it and tells the
//! caller (see [`Outcome::dropped`](crate::Outcome::dropped)), and nothing is
//! sent. Docker stays silent in the same cases (docker-reference §6.3, §6.4),
//! so a client sees a timeout.

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a query or an upstream reply led to nothing being sent.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name, as `vsctl` prints it.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Position in counter arrays.
            #[must_use]
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// A query shorter than the 12-byte DNS header: no reply, as a server
    /// must not answer what may be a spoofed amplification probe.
    Runt => "runt",
    /// A message with the QR bit set arrived on the query socket.
    NotAQuery => "not_a_query",
    /// A query with an empty question section (Docker does not reply).
    NoQuestion => "no_question",
    /// A PTR query whose name is not under `.in-addr.arpa.` or `.ip6.arpa.`
    /// (Docker does not reply).
    MalformedPtr => "malformed_ptr",
    /// The query came from a sandbox the current records do not know.
    UnknownSandbox => "unknown_sandbox",
    /// The local answer could not be encoded (a name too long for DNS).
    Unencodable => "unencodable",
    /// Nothing local and the sandbox has no upstream server.
    NoUpstreams => "no_upstreams",
    /// The sandbox already has the maximum number of forwarded queries in
    /// flight (Docker: 1024).
    TooManyInFlight => "too_many_in_flight",
    /// The last upstream tried timed out, so the client gets nothing.
    UpstreamTimeout => "upstream_timeout",
    /// Every upstream failed without a usable reply (unreachable, or sent
    /// something that is not DNS), and the last one did not time out.
    NoUpstreamReply => "no_upstream_reply",
    /// An upstream reply for an attempt that already ended (timed out, or
    /// answered before): it is ignored.
    LateReply => "late_reply",
    /// An upstream reply whose transaction id is not the one we sent: it is
    /// ignored and the attempt keeps waiting.
    UpstreamIdMismatch => "upstream_id_mismatch",
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl DropCounters {
    /// Drops counted for `reason`.
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

    pub(crate) fn bump(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

/// Everything a [`Resolver`](crate::Resolver) counted since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages given to `handle_query`.
    pub queries: u64,
    /// Replies built locally (answers, empty NOERRORs).
    pub local_replies: u64,
    /// FORMERR replies to queries that could not be parsed.
    pub formerr: u64,
    /// Queries handed to the upstream servers.
    pub forwarded: u64,
    /// Attempts sent to an upstream (a query may take up to three).
    pub upstream_attempts: u64,
    /// Attempts that ended in a timeout.
    pub upstream_timeouts: u64,
    /// Attempts the daemon could not dial or send.
    pub upstream_errors: u64,
    /// Upstream replies that were not DNS.
    pub upstream_malformed: u64,
    /// Upstream replies that sent us on to the next server (SERVFAIL,
    /// REFUSED, non-authoritative NXDOMAIN, other error codes).
    pub upstream_retries: u64,
    /// Upstream replies relayed to clients.
    pub relayed: u64,
    /// Queries answered SERVFAIL because a global cap was reached (pending
    /// forwards, upstream sockets) or the query was too long to forward.
    pub over_capacity: u64,
    /// Drops, by reason.
    pub drops: DropCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_names_and_dense_indexes() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn counters_count_per_reason() {
        let mut c = DropCounters::default();
        c.bump(DropReason::Runt);
        c.bump(DropReason::Runt);
        c.bump(DropReason::LateReply);
        assert_eq!(c.get(DropReason::Runt), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(
            c.nonzero().collect::<Vec<_>>(),
            [(DropReason::Runt, 2), (DropReason::LateReply, 1)]
        );
    }
}
