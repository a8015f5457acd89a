//! TCP connection states and their transitions, as nf_conntrack has them.
//!
//! The transition table is the kernel's `tcp_conntracks[2][6][10]`
//! (net/netfilter/nf_conntrack_proto_tcp.c): the next state depends on the
//! direction, the class of the segment (SYN, SYN-ACK, FIN, ACK, RST, none)
//! and the current state. Keeping the kernel's table, rather than a TCP
//! endpoint's RFC 793 machine, makes timeouts and `show-conntrack` states
//! match what an operator knows from `conntrack -L`, including its
//! idiosyncrasies (a FIN from either side moves ESTABLISHED to FIN_WAIT, its
//! ACK to CLOSE_WAIT).
//!
//! Not modelled: the kernel's sequence-window tracking (`tcp_in_window`) and
//! the RETRANS/UNACK timeouts it selects from it. A flow engine that
//! terminates TCP itself does not need them; a packet-NAT mode that wants
//! them would add them here.

use core::fmt;
use std::time::Duration;

/// A tracked TCP connection's state (`TCP_CONNTRACK_*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TcpState {
    /// A SYN was seen in the original direction.
    SynSent,
    /// The SYN-ACK came back.
    SynRecv,
    /// The handshake completed, or an ACK picked the connection up mid-stream.
    Established,
    /// A FIN was seen.
    FinWait,
    /// The FIN was acknowledged.
    CloseWait,
    /// The second FIN was seen.
    LastAck,
    /// The second FIN was acknowledged.
    TimeWait,
    /// A RST was seen.
    Close,
    /// Simultaneous open: a SYN came back instead of a SYN-ACK.
    SynSent2,
}

impl TcpState {
    /// The name `conntrack -L` prints.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::SynSent2 => "SYN_SENT2",
        }
    }

    const fn column(self) -> usize {
        match self {
            Self::SynSent => 1,
            Self::SynRecv => 2,
            Self::Established => 3,
            Self::FinWait => 4,
            Self::CloseWait => 5,
            Self::LastAck => 6,
            Self::TimeWait => 7,
            Self::Close => 8,
            Self::SynSent2 => 9,
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TCP flags the state machine looks at, as they appear in the header's
/// 13th byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: Self = Self(0x01);
    /// SYN.
    pub const SYN: Self = Self(0x02);
    /// RST.
    pub const RST: Self = Self(0x04);
    /// PSH.
    pub const PSH: Self = Self(0x08);
    /// ACK.
    pub const ACK: Self = Self(0x10);

    /// Whether every flag of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The kernel's `get_conntrack_index`: RST wins, then SYN (with or
    /// without ACK), then FIN, then ACK.
    const fn class(self) -> Class {
        if self.contains(Self::RST) {
            Class::Rst
        } else if self.contains(Self::SYN) {
            if self.contains(Self::ACK) {
                Class::SynAck
            } else {
                Class::Syn
            }
        } else if self.contains(Self::FIN) {
            Class::Fin
        } else if self.contains(Self::ACK) {
            Class::Ack
        } else {
            Class::None
        }
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

#[derive(Clone, Copy)]
enum Class {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

/// What a segment does to a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transition {
    /// The connection moves to (or stays in) this state; its timeout restarts.
    To(TcpState),
    /// The kernel's `sIG`: the segment passes but changes nothing, and
    /// does not refresh the timeout (a SYN repeated on an established
    /// connection, a SYN-ACK after the handshake).
    Ignore,
    /// The kernel's `sIV`: the segment does not fit the connection (an
    /// ACK before any SYN-ACK, a segment with no flags). It is counted;
    /// the state and the timeout do not change.
    Invalid,
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, SynRecv as SR,
    SynSent as SS, SynSent2 as S2, TimeWait as TW,
};
use Transition::{Ignore as IG, Invalid as IV};

const fn t(s: TcpState) -> Transition {
    Transition::To(s)
}

/// `tcp_conntracks`, columns: none, SS, SR, ES, FW, CW, LA, TW, CL, S2.
const TABLE: [[[Transition; 10]; 6]; 2] = [
    // Original direction.
    [
        /* syn    */ [t(SS), t(SS), IG, IG, IG, IG, IG, t(SS), t(SS), t(S2)],
        /* synack */ [IV, IV, t(SR), IV, IV, IV, IV, IV, IV, t(SR)],
        /* fin    */ [IV, IV, t(FW), t(FW), t(LA), t(LA), t(LA), t(TW), t(CL), IV],
        /* ack    */
        [
            t(ES),
            IV,
            t(ES),
            t(ES),
            t(CW),
            t(CW),
            t(TW),
            t(TW),
            t(CL),
            IV,
        ],
        /* rst    */
        [
            IV,
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
        ],
        /* none   */ [IV; 10],
    ],
    // Reply direction.
    [
        /* syn    */ [IV, t(S2), IV, IV, IV, IV, IV, t(SS), IV, t(S2)],
        /* synack */ [IV, t(SR), IG, IG, IG, IG, IG, IG, IG, t(SR)],
        /* fin    */ [IV, IV, t(FW), t(FW), t(LA), t(LA), t(LA), t(TW), t(CL), IV],
        /* ack    */ [IV, IG, t(SR), t(ES), t(CW), t(CW), t(TW), t(TW), t(CL), IG],
        /* rst    */
        [
            IV,
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
            t(CL),
        ],
        /* none   */ [IV; 10],
    ],
];

/// The state a new connection starts in when its first segment (in the
/// original direction) has `flags`, or `None` when the kernel would not
/// create a connection for it (SYN-ACK, FIN, RST or no flags first; an ACK
/// first unless `loose`, the kernel's `nf_conntrack_tcp_loose`, allows
/// picking up a connection mid-stream).
#[must_use]
pub const fn initial_state(flags: TcpFlags, loose: bool) -> Option<TcpState> {
    match TABLE[0][flags.class() as usize][0] {
        Transition::To(ES) if !loose => None,
        Transition::To(s) => Some(s),
        Transition::Ignore | Transition::Invalid => None,
    }
}

/// The transition a segment with `flags` causes in `state`, travelling in
/// the original (`reply == false`) or reply direction.
#[must_use]
pub const fn transition(state: TcpState, reply: bool, flags: TcpFlags) -> Transition {
    TABLE[reply as usize][flags.class() as usize][state.column()]
}

/// Per-state timeouts, nf_conntrack's defaults unless configured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TcpTimeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent`, 120 s (also SYN_SENT2).
    pub syn_sent: Duration,
    /// `…_syn_recv`, 60 s.
    pub syn_recv: Duration,
    /// `…_established`, 5 days.
    pub established: Duration,
    /// `…_fin_wait`, 120 s.
    pub fin_wait: Duration,
    /// `…_close_wait`, 60 s.
    pub close_wait: Duration,
    /// `…_last_ack`, 30 s.
    pub last_ack: Duration,
    /// `…_time_wait`, 120 s.
    pub time_wait: Duration,
    /// `…_close`, 10 s.
    pub close: Duration,
    /// `…_unacknowledged`, 300 s: used instead of `established` while a
    /// connection picked up mid-stream has not been answered, as the
    /// kernel does, so a stray ACK cannot pin an entry for 5 days.
    pub unacknowledged: Duration,
}

impl Default for TcpTimeouts {
    fn default() -> Self {
        Self {
            syn_sent: Duration::from_secs(120),
            syn_recv: Duration::from_secs(60),
            established: Duration::from_secs(432_000),
            fin_wait: Duration::from_secs(120),
            close_wait: Duration::from_secs(60),
            last_ack: Duration::from_secs(30),
            time_wait: Duration::from_secs(120),
            close: Duration::from_secs(10),
            unacknowledged: Duration::from_secs(300),
        }
    }
}

impl TcpTimeouts {
    /// How long a connection in `state` lives without a valid segment.
    #[must_use]
    pub const fn for_state(&self, state: TcpState) -> Duration {
        match state {
            TcpState::SynSent | TcpState::SynSent2 => self.syn_sent,
            TcpState::SynRecv => self.syn_recv,
            TcpState::Established => self.established,
            TcpState::FinWait => self.fin_wait,
            TcpState::CloseWait => self.close_wait,
            TcpState::LastAck => self.last_ack,
            TcpState::TimeWait => self.time_wait,
            TcpState::Close => self.close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags::SYN;
    const SYNACK: TcpFlags = TcpFlags(0x12);
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN: TcpFlags = TcpFlags(0x11);
    const RST: TcpFlags = TcpFlags::RST;
    const NONE: TcpFlags = TcpFlags(0);

    #[test]
    fn new_connections_start_as_the_kernel_starts_them() {
        assert_eq!(initial_state(SYN, false), Some(SS));
        assert_eq!(initial_state(ACK, true), Some(ES));
        assert_eq!(initial_state(ACK | TcpFlags::PSH, true), Some(ES));
        assert_eq!(initial_state(ACK, false), None);
        for f in [SYNACK, FIN, RST, NONE, TcpFlags(0x06)] {
            assert_eq!(initial_state(f, true), None, "{f:?}");
        }
    }

    #[test]
    fn flag_classes_follow_get_conntrack_index_precedence() {
        // RST beats SYN; SYN beats FIN; FIN beats ACK.
        assert_eq!(transition(SS, false, TcpFlags(0x06)), t(CL));
        assert_eq!(transition(ES, false, TcpFlags(0x03)), IG);
        assert_eq!(transition(ES, false, FIN), t(FW));
    }

    #[test]
    fn every_state_has_the_kernels_timeout() {
        let d = TcpTimeouts::default();
        let secs = |s| d.for_state(s).as_secs();
        assert_eq!(secs(SS), 120);
        assert_eq!(secs(S2), 120);
        assert_eq!(secs(SR), 60);
        assert_eq!(secs(ES), 432_000);
        assert_eq!(secs(FW), 120);
        assert_eq!(secs(CW), 60);
        assert_eq!(secs(LA), 30);
        assert_eq!(secs(TW), 120);
        assert_eq!(secs(CL), 10);
        assert_eq!(d.unacknowledged.as_secs(), 300);
    }

    #[test]
    fn segments_without_flags_are_invalid_everywhere() {
        for s in [SS, SR, ES, FW, CW, LA, TW, CL, S2] {
            assert_eq!(transition(s, false, NONE), IV, "{s}");
            assert_eq!(transition(s, true, NONE), IV, "{s}");
        }
    }

    #[test]
    fn rst_closes_every_state_from_either_side() {
        for s in [SS, SR, ES, FW, CW, LA, TW, CL, S2] {
            assert_eq!(transition(s, false, RST), t(CL), "{s}");
            assert_eq!(transition(s, true, RST), t(CL), "{s}");
        }
    }
}
