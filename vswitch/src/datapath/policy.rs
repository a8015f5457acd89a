//! When a datapath worker with nothing to move may sleep: the latency
//! policy (`vswitchd --busy-poll`).
//!
//! A frame that arrives while its worker sleeps in `epoll_wait` pays for
//! the wakeup: on a virtual machine an inter-processor interrupt to a
//! halted vCPU, which the hypervisor has to schedule again (30–50 µs on
//! the development VM, most of a round trip through the switch). Two
//! policies trade that against CPU:
//!
//! - [`BusyPoll::Window`]: after moving frames a worker keeps polling for
//!   the window, then sleeps. Bounded, so an idle daemon uses no CPU; it
//!   covers the gaps inside a burst (paced TCP super-frames, an ACK), not
//!   the gap between the requests of a slow request-response exchange
//!   (a ping every 5 ms), whose every request finds the worker asleep.
//! - [`BusyPoll::Always`]: the worker never sleeps, as the poll-mode
//!   threads of a DPDK switch: each worker takes a whole core, and no
//!   frame waits for a wakeup. The low-latency mode.
//!
//! While it polls with nothing to do a worker calls `sched_yield`, so a
//! task woken on its core (the sandbox process its last frame woke) runs
//! at once rather than after the worker's time slice.
//!
//! Neither policy spares the application its wakeup when a reply reaches
//! it: that one is on another CPU, idle, and on a virtual machine halted.
//! Whether idle CPUs halt is the machine's idle policy, which the daemon
//! can ask to keep them polling ([`super::cpu_latency`]).
//!
//! What a round trip costs, traced (`perf sched timehist -w`, a ping every
//! 5 ms between two TAP sandboxes, two workers, default window): `ping`'s
//! send wakes the worker that polls the sender's port, on the other vCPU,
//! halted (scheduling delay 30–70 µs); that worker's write queues the
//! reply, which wakes the second worker on the waker's own CPU (4–6 µs:
//! no halted vCPU, as the worker that wakes it goes to sleep); the second
//! worker's write wakes `ping`, on the halted vCPU again. The two costly
//! wakeups are the ones that cross to a halted vCPU, not the hand-off
//! between the workers, which is why putting a network's ports on one
//! worker saved no latency.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest window `--busy-poll` accepts, in microseconds (10 s):
/// beyond it the window is no longer a window; `always` says so.
pub const MAX_WINDOW_MICROS: u64 = 10_000_000;

/// How long a worker keeps polling after it last moved a frame, by
/// default. Longer than the gap between paced GSO frames of a fast flow,
/// short enough that the CPU cost of a quiet port is nil.
pub const BUSY_POLL: Duration = Duration::from_micros(50);

/// When a worker with nothing to move may sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyPoll {
    /// Keep polling for this long after the last frame moved, then sleep
    /// until a port is readable.
    Window(Duration),
    /// Never sleep: poll the ports all the time.
    Always,
}

impl BusyPoll {
    /// The default policy: a [`BUSY_POLL`] window.
    pub const DEFAULT: Self = Self::Window(BUSY_POLL);

    /// Whether a worker that last moved a frame `since_last_frame` ago
    /// (`None`: not since it last slept) keeps polling.
    #[must_use]
    pub fn keeps_polling(self, since_last_frame: Option<Duration>) -> bool {
        match self {
            Self::Always => true,
            Self::Window(window) => since_last_frame.is_some_and(|d| d < window),
        }
    }
}

impl Default for BusyPoll {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for BusyPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Window(d) => write!(f, "{}", d.as_micros()),
            Self::Always => f.write_str("always"),
        }
    }
}

/// Why a `--busy-poll` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseBusyPollError {
    /// Neither a number of microseconds nor `always`.
    #[error("`{0}` is neither a number of microseconds nor `always`")]
    Invalid(String),
    /// A window longer than [`MAX_WINDOW_MICROS`].
    #[error(
        "{0} µs is longer than the longest window ({MAX_WINDOW_MICROS} µs); use `always` to never sleep"
    )]
    TooLong(u64),
}

impl FromStr for BusyPoll {
    type Err = ParseBusyPollError;

    /// `always`, or a window in microseconds from 0 (sleep as soon as
    /// there is nothing to read) to [`MAX_WINDOW_MICROS`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("always") {
            return Ok(Self::Always);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseBusyPollError::Invalid(s.to_owned()));
        }
        let micros: u64 = s
            .parse()
            // All digits, so only an overflow of u64 fails: too long.
            .map_err(|_| ParseBusyPollError::TooLong(u64::MAX))?;
        if micros > MAX_WINDOW_MICROS {
            return Err(ParseBusyPollError::TooLong(micros));
        }
        Ok(Self::Window(Duration::from_micros(micros)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows_and_always() {
        assert_eq!("0".parse(), Ok(BusyPoll::Window(Duration::ZERO)));
        assert_eq!("50".parse(), Ok(BusyPoll::DEFAULT));
        assert_eq!(
            "10000000".parse(),
            Ok(BusyPoll::Window(Duration::from_secs(10)))
        );
        assert_eq!("always".parse(), Ok(BusyPoll::Always));
        assert_eq!("ALWAYS".parse(), Ok(BusyPoll::Always));
    }

    #[test]
    fn refuses_what_is_not_a_window() {
        assert_eq!(
            "10000001".parse::<BusyPoll>(),
            Err(ParseBusyPollError::TooLong(10_000_001))
        );
        assert_eq!(
            "99999999999999999999999".parse::<BusyPoll>(),
            Err(ParseBusyPollError::TooLong(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "50us", "never", "+5"] {
            assert!(
                matches!(bad.parse::<BusyPoll>(), Err(ParseBusyPollError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for p in [
            BusyPoll::Always,
            BusyPoll::DEFAULT,
            BusyPoll::Window(Duration::ZERO),
        ] {
            assert_eq!(p.to_string().parse(), Ok(p));
        }
    }

    #[test]
    fn a_window_ends_and_always_does_not() {
        let w = BusyPoll::Window(Duration::from_micros(50));
        assert!(w.keeps_polling(Some(Duration::from_micros(49))));
        assert!(!w.keeps_polling(Some(Duration::from_micros(50))));
        assert!(!w.keeps_polling(None));
        assert!(!BusyPoll::Window(Duration::ZERO).keeps_polling(Some(Duration::ZERO)));
        assert!(BusyPoll::Always.keeps_polling(None));
        assert!(BusyPoll::Always.keeps_polling(Some(Duration::from_secs(3600))));
    }
}
