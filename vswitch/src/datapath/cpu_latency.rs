//! Idle CPUs that poll instead of halting while the low-latency mode runs:
//! a CPU-latency request (Linux PM QoS, `/dev/cpu_dma_latency`).
//!
//! A worker that never sleeps (`--busy-poll always`) removes its own
//! wakeups, but not the one a round trip through a userspace switch always
//! has: the worker's write that hands the reply to the sandbox wakes the
//! application that waits for it (`ping` in `recvmsg`), and that thread
//! sleeps on another CPU, which the kernel has put in its idle state. On a
//! virtual machine that idle state is a halt (the `haltpoll` cpuidle
//! driver's, or `HLT`), so the wakeup is an inter-processor interrupt that
//! the hypervisor delivers by scheduling the halted vCPU again: tens of
//! microseconds, most of what the low-latency mode still added to a ping
//! over the kernel bridge (whose reply is delivered inside the sender's
//! own `sendmsg`, with no thread woken). On bare metal the same cost is a
//! deep C-state's exit latency.
//!
//! A CPU-latency request of 0 µs tells cpuidle that no idle state may take
//! longer than that to leave, so idle CPUs poll (cpuidle's `POLL` state):
//! a thread woken on one is noticed at once, with no interrupt at all (the
//! CPU advertises that it polls, and the waker only sets the flag it
//! watches). The request holds while the file stays open and ends when it
//! is closed, so when the daemon exits, however it exits, the kernel drops
//! it: nothing is left changed on the machine. It is what `tuned`'s
//! latency profiles and DPDK deployments do, for the same reason.
//!
//! The price is the machine's, not the daemon's: every idle CPU polls,
//! which on a virtual machine is host CPU time whether or not frames move
//! (the daemon's own CPU time, in `/proc/PID/stat`, does not show it). So
//! only the low-latency mode, which already spends a core per worker, asks
//! for it by default (`vswitchd --cpu-latency-qos`). Between the two,
//! [`TrafficGate`] holds the request only while frames move: from the first
//! frame after a quiet spell until [`TRAFFIC_HOLD`] passes without one, so
//! a daemon without traffic leaves every CPU free to halt, and one that
//! forwards a request every few milliseconds has its CPUs polling between
//! them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The kernel's CPU-latency request device.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// The kernel's "no constraint" (`PM_QOS_CPU_LATENCY_DEFAULT_VALUE`, 2000
/// s): what a [`TrafficGate`] asks for while no frames move.
pub const NO_CONSTRAINT_MICROS: i32 = 2_000_000_000;

/// How long after the last frame a [`TrafficGate`] keeps idle CPUs
/// polling: longer than the gap between the requests of an exchange that
/// should not pay a halted CPU's wakeup (a ping every 5 ms, a 100 Hz
/// RPC), short enough that the CPUs halt again soon after traffic stops.
pub const TRAFFIC_HOLD: Duration = Duration::from_millis(10);

/// Whether the daemon holds a CPU-latency request (`--cpu-latency-qos`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuLatencyQos {
    /// Hold one with the low-latency mode (`--busy-poll always`), where a
    /// failure to open the device is a warning; not otherwise.
    #[default]
    Auto,
    /// Always hold one; failing to is an error at start.
    On,
    /// Hold one while frames move ([`TrafficGate`]); failing to open the
    /// device is an error at start.
    Traffic,
    /// Never hold one.
    Off,
}

/// When the daemon keeps idle CPUs polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Never: the kernel's idle policy applies.
    Never,
    /// While the daemon runs ([`CpuLatencyRequest`]).
    Always,
    /// While frames move ([`TrafficGate`]).
    WhileTraffic,
}

impl CpuLatencyQos {
    /// When a daemon whose workers never sleep (`always_polling`) or sleep
    /// when idle keeps idle CPUs polling. Workers that never sleep never
    /// see a quiet spell end, so with them `Traffic` holds always.
    #[must_use]
    pub fn hold(self, always_polling: bool) -> Hold {
        match self {
            Self::Auto if always_polling => Hold::Always,
            Self::Auto | Self::Off => Hold::Never,
            Self::On => Hold::Always,
            Self::Traffic if always_polling => Hold::Always,
            Self::Traffic => Hold::WhileTraffic,
        }
    }
}

/// Why a CPU-latency request could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot hold a CPU-latency request on {path}: {source}")]
pub struct CpuLatencyError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// A CPU-latency request that holds while this value lives.
#[derive(Debug)]
pub struct CpuLatencyRequest {
    // Never read: closing it is what ends the request.
    _file: File,
}

impl CpuLatencyRequest {
    /// Asks that idle CPUs be left within 0 µs: they poll.
    ///
    /// # Errors
    /// When the device is missing (a kernel without PM QoS) or may not be
    /// opened (it is root's).
    pub fn hold() -> Result<Self, CpuLatencyError> {
        Self::hold_at(Path::new(DEVICE), 0)
    }

    /// Asks, through the device at `path`, that idle CPUs be left within
    /// `max_exit_micros` µs.
    ///
    /// # Errors
    /// When `path` cannot be opened for writing or the write fails.
    pub fn hold_at(path: &Path, max_exit_micros: i32) -> Result<Self, CpuLatencyError> {
        let error = |source| CpuLatencyError {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new().write(true).open(path).map_err(error)?;
        // Four bytes are read as a native s32; any other length as text.
        file.write_all(&max_exit_micros.to_ne_bytes())
            .map_err(error)?;
        Ok(Self { _file: file })
    }
}

/// A CPU-latency request that asks for polling idle CPUs only while frames
/// move, shared by every worker.
///
/// A worker tells it when it moved frames ([`TrafficGate::frames_moved`],
/// one relaxed load per batch while it holds) and asks it, before it
/// sleeps, how long it may sleep ([`TrafficGate::idle`]): the worker that
/// finds [`TRAFFIC_HOLD`] passed without frames releases the request. The
/// request's value changes only on those two edges, under a lock.
#[derive(Debug)]
pub struct TrafficGate {
    hold: Duration,
    epoch: Instant,
    /// When a frame last moved, in nanoseconds since `epoch`; advanced
    /// in steps of a tenth of `hold`, so workers do not write the line on
    /// every batch.
    last_frame: AtomicU64,
    /// Whether the request asks for polling CPUs now; written under `file`.
    active: AtomicBool,
    file: Mutex<File>,
}

impl TrafficGate {
    /// A gate on the kernel's device, released until frames move.
    ///
    /// # Errors
    /// As [`CpuLatencyRequest::hold`].
    pub fn open(hold: Duration) -> Result<Self, CpuLatencyError> {
        Self::open_at(Path::new(DEVICE), hold)
    }

    /// A gate on the device at `path`.
    ///
    /// # Errors
    /// When `path` cannot be opened for writing or the write fails.
    pub fn open_at(path: &Path, hold: Duration) -> Result<Self, CpuLatencyError> {
        let request = CpuLatencyRequest::hold_at(path, NO_CONSTRAINT_MICROS)?;
        Ok(Self {
            hold,
            epoch: Instant::now(),
            last_frame: AtomicU64::new(0),
            active: AtomicBool::new(false),
            file: Mutex::new(request._file),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn hold_nanos(&self) -> u64 {
        u64::try_from(self.hold.as_nanos()).unwrap_or(u64::MAX)
    }

    /// A worker moved frames at `now`: idle CPUs poll from now until the
    /// hold has passed without frames.
    pub fn frames_moved(&self, now: Instant) {
        let t = self.nanos(now);
        if t.saturating_sub(self.last_frame.load(Ordering::Relaxed)) > self.hold_nanos() / 10 {
            self.last_frame.fetch_max(t, Ordering::Relaxed);
        }
        if !self.active.load(Ordering::Relaxed) {
            self.set(true, now);
        }
    }

    /// Whether idle CPUs are asked to poll now.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// A worker with nothing to move is about to sleep at `now`: the
    /// longest it may sleep before it must come back to release the
    /// request (`None`: as long as it likes). Releases it when the hold has
    /// passed since the last frame.
    #[must_use]
    pub fn idle(&self, now: Instant) -> Option<Duration> {
        if !self.is_active() {
            return None;
        }
        match self.quiet_for(now) {
            Some(left) => Some(left),
            None => {
                self.set(false, now);
                None
            }
        }
    }

    /// How much of the hold is left at `now`; `None` when it has passed.
    fn quiet_for(&self, now: Instant) -> Option<Duration> {
        let since = self
            .nanos(now)
            .saturating_sub(self.last_frame.load(Ordering::Relaxed));
        let hold = self.hold_nanos();
        (since < hold).then(|| Duration::from_nanos(hold - since))
    }

    fn set(&self, active: bool, now: Instant) {
        let file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another worker may have made the change, or (releasing) moved a
        // frame since this one looked.
        if self.active.load(Ordering::Relaxed) == active
            || (!active && self.quiet_for(now).is_some())
        {
            return;
        }
        let value = if active { 0 } else { NO_CONSTRAINT_MICROS };
        match (&*file).write_all(&value.to_ne_bytes()) {
            Ok(()) => self.active.store(active, Ordering::Relaxed),
            Err(e) => {
                // Left as it was; the next edge tries again.
                tracing::warn!(error = %e, "cannot change the CPU-latency request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_low_latency_mode() {
        assert_eq!(CpuLatencyQos::Auto.hold(true), Hold::Always);
        assert_eq!(CpuLatencyQos::Auto.hold(false), Hold::Never);
        assert_eq!(CpuLatencyQos::On.hold(false), Hold::Always);
        assert_eq!(CpuLatencyQos::Off.hold(true), Hold::Never);
        assert_eq!(CpuLatencyQos::Traffic.hold(false), Hold::WhileTraffic);
        assert_eq!(CpuLatencyQos::Traffic.hold(true), Hold::Always);
        assert_eq!(CpuLatencyQos::default(), CpuLatencyQos::Auto);
    }

    fn scratch(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cpu-latency-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qos");
        std::fs::write(&path, b"").unwrap();
        (dir, path)
    }

    /// The last value written: the device takes each write of one s32 as
    /// the request's new value (a file keeps them one after the other).
    fn value(path: &Path) -> i32 {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.is_empty() && bytes.len().is_multiple_of(4),
            "{} bytes",
            bytes.len()
        );
        i32::from_ne_bytes(bytes[bytes.len() - 4..].try_into().unwrap())
    }

    #[test]
    fn the_gate_holds_from_the_first_frame_until_the_hold_passes() {
        let (dir, path) = scratch("gate");
        let hold = Duration::from_millis(10);
        let gate = TrafficGate::open_at(&path, hold).unwrap();
        let t0 = Instant::now();
        assert_eq!(value(&path), NO_CONSTRAINT_MICROS);
        assert!(!gate.is_active());
        assert_eq!(gate.idle(t0), None, "no traffic yet: sleep freely");

        gate.frames_moved(t0);
        assert!(gate.is_active());
        assert_eq!(value(&path), 0);
        // Quiet for less than the hold: still held, and the worker is told
        // to come back when the hold ends.
        let left = gate.idle(t0 + Duration::from_millis(4)).unwrap();
        assert!(
            left <= Duration::from_millis(6) && left > Duration::from_millis(5),
            "{left:?}"
        );
        assert_eq!(value(&path), 0);
        // A frame within the hold starts it again.
        gate.frames_moved(t0 + Duration::from_millis(8));
        assert!(gate.idle(t0 + Duration::from_millis(15)).is_some());
        assert!(gate.is_active());
        // The hold passes: released, and sleeping is unbounded again.
        assert_eq!(gate.idle(t0 + Duration::from_millis(19)), None);
        assert!(!gate.is_active());
        assert_eq!(value(&path), NO_CONSTRAINT_MICROS);
        // Traffic again: held again.
        gate.frames_moved(t0 + Duration::from_millis(30));
        assert_eq!(value(&path), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_the_limit_as_one_native_s32() {
        let (dir, path) = scratch("request");
        let held = CpuLatencyRequest::hold_at(&path, 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), 0i32.to_ne_bytes());
        drop(held);
        drop(CpuLatencyRequest::hold_at(&path, 20).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), 20i32.to_ne_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_device_is_an_error_naming_it() {
        let path = Path::new("/nonexistent/cpu_dma_latency");
        let e = CpuLatencyRequest::hold_at(path, 0).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/cpu_dma_latency"),
            "{e}"
        );
    }
}
