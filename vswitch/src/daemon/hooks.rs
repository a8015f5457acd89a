//! Test hooks: ways for the end-to-end tests to put the daemon in the
//! situations it must survive (a slow device operation, a crash at a named
//! step, a datapath worker that dies).
//!
//! **These are test hooks, not features.** They are off unless their
//! environment variable is set, read once at start; with none set the
//! daemon behaves exactly as without this module.
//!
//! | variable | effect |
//! | --- | --- |
//! | `VSWITCHD_TEST_CRASH_AT=POINT` | the daemon kills itself with `SIGKILL` on reaching `POINT` (see [`Point`]) |
//! | `VSWITCHD_TEST_SLOW_ATTACH_MS=N` | each endpoint attachment sleeps `N` ms before creating its device |
//! | `VSWITCHD_TEST_STOP_WORKER_MS=N` | `N` ms after start, datapath worker 0 is stopped as if it had died |
//! | `VSWITCHD_TEST_PUBLISH=SANDBOX:CPORT:HPORT[/udp],…` | (`vswitchd`) once SANDBOX has an endpoint, `0.0.0.0:HPORT` is bound and handed to the host connector for its port CPORT, until `-p` reaches the control plane |

use std::time::Duration;

/// A step of a request at which [`Hooks::reached`] may kill the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The intent is written; no effect has run (`intent-written`).
    IntentWritten,
    /// A namespace was created or adopted (`netns-created`).
    NetnsCreated,
    /// An endpoint's device exists on the host, not yet configured
    /// (`device-created`).
    DeviceCreated,
    /// The device is configured (a TAP moved and renamed into its sandbox),
    /// not yet given to the datapath (`device-configured`).
    DeviceConfigured,
    /// Every effect is done; the model is not saved (`effects-done`).
    EffectsDone,
    /// The model is saved; the intent is not cleared (`saved`).
    Saved,
}

impl Point {
    /// Every point, in the order a request reaches them.
    pub const ALL: [Self; 6] = [
        Self::IntentWritten,
        Self::NetnsCreated,
        Self::DeviceCreated,
        Self::DeviceConfigured,
        Self::EffectsDone,
        Self::Saved,
    ];

    /// The name used in `VSWITCHD_TEST_CRASH_AT`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::IntentWritten => "intent-written",
            Self::NetnsCreated => "netns-created",
            Self::DeviceCreated => "device-created",
            Self::DeviceConfigured => "device-configured",
            Self::EffectsDone => "effects-done",
            Self::Saved => "saved",
        }
    }
}

/// The hooks in force (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Where to die.
    pub crash_at: Option<Point>,
    /// How long each attachment sleeps first.
    pub slow_attach: Option<Duration>,
    /// When to stop datapath worker 0.
    pub stop_worker_after: Option<Duration>,
}

impl Hooks {
    /// The hooks the environment asks for. An unknown point or a number
    /// that does not parse is logged and ignored.
    #[must_use]
    pub fn from_env() -> Self {
        let ms = |var: &str| {
            let v = std::env::var(var).ok()?;
            match v.parse::<u64>() {
                Ok(n) => Some(Duration::from_millis(n)),
                Err(_) => {
                    tracing::warn!(%var, value = %v, "test hook ignored: not a number of milliseconds");
                    None
                }
            }
        };
        let crash_at = std::env::var("VSWITCHD_TEST_CRASH_AT").ok().and_then(|v| {
            let p = Point::ALL.into_iter().find(|p| p.name() == v);
            if p.is_none() {
                tracing::warn!(value = %v, "test hook ignored: unknown crash point");
            }
            p
        });
        let hooks = Self {
            crash_at,
            slow_attach: ms("VSWITCHD_TEST_SLOW_ATTACH_MS"),
            stop_worker_after: ms("VSWITCHD_TEST_STOP_WORKER_MS"),
        };
        if hooks != Self::default() {
            tracing::warn!(?hooks, "test hooks enabled");
        }
        hooks
    }

    /// Kills the process with `SIGKILL`, as a crash would, when `point` is
    /// the configured crash point.
    pub fn reached(&self, point: Point) {
        if self.crash_at == Some(point) {
            tracing::warn!(point = point.name(), "test hook: crashing");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Sleeps as long as `VSWITCHD_TEST_SLOW_ATTACH_MS` says.
    pub fn before_attach(&self) {
        if let Some(d) = self.slow_attach {
            std::thread::sleep(d);
        }
    }
}
