//! The control plane: networks, sandboxes and endpoints, as Docker keeps
//! them, and the plan that turns an API request into device and switch
//! changes.
//!
//! ```text
//!  vswitch-control ── Request ──► Controller::apply(request, &Ctx)   (pure)
//!                                   │ validates, mutates Model + IPAM
//!                                   ▼
//!                        Outcome { response, effects, changed }
//!                                   │
//!  daemon (crate::daemon): intent written, effects carried out in order
//!          (netns, TAP/veth, addresses, routes, the switch configuration
//!          built once by the control thread → datapath), Store::save(model)
//!          in one transaction, then the answer and a new published snapshot.
//! ```
//!
//! - [`model`]: the persisted state (serde): networks, sandboxes, endpoints
//!   and the IPAM allocator, with Docker's default `bridge` network.
//! - [`controller`]: [`Controller::apply`], the plan of each request, and
//!   [`Controller::query`] for reads.
//! - `views`: what the API shows (`network inspect`, sandboxes,
//!   `show-ports`, `show-fdb`, `dns show`), built from a controller.
//! - `options`: Docker's network options with Go's parsing and texts.
//! - [`effect`]: what the daemon must do after a request, as data.
//! - [`request`]: the requests and responses the controller understands.
//! - [`types`]: the API's request and answer bodies (Docker's JSON shapes);
//!   [`crate::api`] re-exports them, and this module imports nothing from
//!   the API.
//! - [`error`]: [`ControlError`], Docker's error texts and their HTTP status.
//! - [`store`]: the redb database the model is written to before the API
//!   answers.
//!
//! The controller reads no clock and no random source of its own: the time
//! and the entropy for ids and MACs come in through [`Ctx`], so every plan
//! is reproducible in a test.

use core::cell::{Cell, RefCell};
use core::net::Ipv4Addr;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod controller;
pub mod effect;
pub mod error;
pub mod model;
mod options;
mod ports;
pub mod request;
pub mod store;
pub mod types;
mod views;

pub use controller::{Controller, ControllerConfig};
pub use effect::{Attachment, Effect, Touched};
pub use error::ControlError;
pub use model::{Endpoint, Model, Network, PortKind, PublishedRecord, Sandbox, SandboxDns};
pub use request::{Outcome, Request, Response};
pub use store::{Store, StoreError};

/// A source of random bytes for ids (64 hex digits) and gateway MACs.
///
/// Ids only need to be unique, not secret; the daemon uses
/// [`OsEntropy`], tests a [`SeededEntropy`].
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// Random bytes from the kernel (`getrandom(2)`, which holds no
/// descriptor: at a thousand endpoints under a limit of 1024 descriptors
/// each one counts), falling back to std's randomly keyed SipHash over a
/// counter and the clock when the call fails.
#[derive(Debug)]
pub struct OsEntropy {
    fallback: std::collections::hash_map::RandomState,
    counter: Cell<u64>,
}

impl OsEntropy {
    /// A source ready to use.
    #[must_use]
    pub fn new() -> Self {
        Self {
            fallback: std::collections::hash_map::RandomState::new(),
            counter: Cell::new(0),
        }
    }
}

/// Fills `buf` from `getrandom(2)`; false when the kernel refuses.
#[allow(unsafe_code)]
fn getrandom(buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes
        // for the duration of the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => filled += n,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
    true
}

impl Default for OsEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        if getrandom(buf) {
            return;
        }
        for chunk in buf.chunks_mut(8) {
            let n = self.counter.get().wrapping_add(1);
            self.counter.set(n);
            let mut h = self.fallback.build_hasher();
            h.write_u64(n);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            h.write_u128(nanos);
            let bytes = h.finish().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A deterministic [`Entropy`] (splitmix64), for tests and reproducible
/// runs: the same seed gives the same ids and MACs.
#[derive(Debug)]
pub struct SeededEntropy {
    state: Cell<u64>,
}

impl SeededEntropy {
    /// A generator starting from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self {
            state: Cell::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let s = self.state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// What a request may depend on besides the model: the time and a random
/// source, handed in so that [`Controller::apply`] stays pure.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The current time in Go's RFC 3339 with nanoseconds form
    /// ([`rfc3339_nano`]), stored as a network's or sandbox's `Created`.
    pub now: &'a str,
    /// Random bytes for ids and gateway MACs.
    pub entropy: &'a dyn Entropy,
    /// Host networks an automatically chosen subnet must not overlap
    /// (docker-reference §1.2: on-link routes and resolv.conf nameservers),
    /// as address and prefix length. Empty skips the check.
    pub host_networks: &'a [(Ipv4Addr, u8)],
    /// Where published ports are bound on the host (the daemon's sockets);
    /// `None` plans without a host, as if every bind succeeded.
    pub binder: Option<&'a RefCell<dyn nat::Binder + 'a>>,
}

impl core::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ctx")
            .field("now", &self.now)
            .field("host_networks", &self.host_networks)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// A context with no host networks to avoid.
    #[must_use]
    pub const fn new(now: &'a str, entropy: &'a dyn Entropy) -> Self {
        Self {
            now,
            entropy,
            host_networks: &[],
            binder: None,
        }
    }

    /// The same context, binding published ports through `binder`.
    #[must_use]
    pub const fn with_binder(self, binder: &'a RefCell<dyn nat::Binder + 'a>) -> Self {
        Self {
            binder: Some(binder),
            ..self
        }
    }
}

/// Formats a time as Go's `time.RFC3339Nano` in UTC, the form Docker's
/// `Created` fields take: `2026-11-23T11:45:59.123456789Z`, trailing zeros of
/// the fraction dropped (and the fraction with them when it is zero).
#[must_use]
pub fn rfc3339_nano(time: SystemTime) -> String {
    format_unix(time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

fn format_unix(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let nanos = since_epoch.subsec_nanos();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nano_matches_go() {
        assert_eq!(format_unix(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_unix(Duration::new(1_553_856_800, 483_235_411)),
            "2019-03-29T10:53:20.483235411Z"
        );
        assert_eq!(
            format_unix(Duration::new(951_782_400, 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            format_unix(Duration::new(4_102_444_799, 0)),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn seeded_entropy_is_reproducible() {
        let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        a.fill(&mut x);
        assert_ne!(x, y);
    }

    #[test]
    fn os_entropy_fills() {
        let e = OsEntropy::new();
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        e.fill(&mut x);
        e.fill(&mut y);
        assert_ne!(x, y);
    }
}
