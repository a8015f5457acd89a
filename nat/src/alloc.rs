//! Docker's host-port allocator (docker-reference §4.2; libnetwork
//! `portallocator` and the retry loop of the bridge driver's
//! `allocatePort`), so `-p 85` gets the port Docker would give.
//!
//! - One table per (host address, protocol). `0.0.0.0`, `::` and
//!   `127.0.0.1` are different keys: the allocator lets `127.0.0.1:P` and
//!   `0.0.0.0:P` coexist, and it is the host's `bind` that then fails with
//!   `address already in use`, exactly as with Docker's proxy.
//! - Each (address, protocol, range) has a cursor that starts at the
//!   range's end; a search starts after the cursor and wraps. So the first
//!   dynamic port on a fresh daemon is the range start, the next one the
//!   port after it, and a released port is not reused before a wrap-around.
//!   A host range written by the user (`18090-18092:88`) has its own cursor;
//!   one equal to the ephemeral range shares the ephemeral cursor, as in
//!   Docker, where both are keyed by the text `start-end`.
//! - When the port was chosen by the allocator and the host refuses the
//!   bind (another process holds it), the next port is tried, 10 attempts
//!   in all; explicit ports and ranges are tried once.
//!
//! No socket is opened here: [`Binder`] is the daemon's side, called with
//! each candidate and asked to undo on rollback.

use core::fmt;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::spec::{PortBinding, PortRange, Proto};

/// libnetwork's fallback when the kernel's range cannot be read.
pub const FALLBACK_EPHEMERAL: PortRange = match PortRange::new(49153, 65535) {
    Some(r) => r,
    None => PortRange::single(49153),
};

/// Docker's `maxAllocatePortAttempts`.
pub const MAX_ATTEMPTS: usize = 10;

/// Reads `/proc/sys/net/ipv4/ip_local_port_range`'s text (`32768\t60999`).
///
/// # Errors
///
/// The text when it is not two ports in order; the caller then uses
/// [`FALLBACK_EPHEMERAL`], as Docker does.
pub fn parse_ephemeral_range(text: &str) -> Result<PortRange, AllocError> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) if a > 0 => PortRange::new(a, b)
            .ok_or_else(|| AllocError::BadEphemeralRange(text.trim().to_owned())),
        _ => Err(AllocError::BadEphemeralRange(text.trim().to_owned())),
    }
}

/// The address Docker's messages print: Go's `net.IP.String()`, which
/// shows an IPv4-mapped address as IPv4 and IPv6 without brackets.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Why the allocator refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The port is already published on this address and protocol.
    #[error("Bind for {ip}:{port} failed: port is already allocated")]
    AlreadyAllocated {
        /// Host address (printed as Go prints it: `:::18502` for `::`).
        ip: IpAddr,
        /// Port.
        port: u16,
    },
    /// Every port of the range is taken.
    #[error("all ports are allocated")]
    AllAllocated,
    /// A host range that starts at 0.
    #[error("invalid port range: {0}-{1}")]
    InvalidRange(u16, u16),
    /// `ip_local_port_range` did not parse.
    #[error("invalid ip_local_port_range: {0:?}")]
    BadEphemeralRange(String),
}

/// Why the host refused to listen, as the daemon reports it to
/// [`publish`]; the texts are the kernel's, as Go prints them.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// `EADDRINUSE`.
    #[error("address already in use")]
    AddrInUse,
    /// `EADDRNOTAVAIL`: the address is not local.
    #[error("cannot assign requested address")]
    AddrNotAvailable,
    /// `EPROTONOSUPPORT` (SCTP without kernel SCTP).
    #[error("protocol not supported")]
    ProtocolNotSupported,
    /// Anything else, with the system's text.
    #[error("{0}")]
    Other(String),
}

/// A failed publication, with Docker's `<cause>` text (§4.5).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The allocator refused.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The host refused to listen.
    #[error("Error starting userland proxy: {}", userland(.proto, .ip, .port, .source))]
    Bind {
        /// Protocol.
        proto: Proto,
        /// Host address.
        ip: IpAddr,
        /// Host port.
        port: u16,
        /// What the host said.
        source: BindError,
    },
}

fn userland(proto: &Proto, ip: &IpAddr, port: &u16, e: &BindError) -> String {
    if *e == BindError::ProtocolNotSupported {
        return e.to_string();
    }
    let family = if ip.is_ipv4() { '4' } else { '6' };
    let addr = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    format!("listen {proto}{family} {addr}: bind: {e}")
}

/// The daemon's side of publishing: listen on a host address and port, and
/// stop listening when a later binding of the same request fails.
pub trait Binder {
    /// Starts listening.
    ///
    /// # Errors
    ///
    /// What the host said.
    fn bind(&mut self, ip: IpAddr, proto: Proto, port: u16) -> Result<(), BindError>;

    /// Stops listening on something `bind` accepted.
    fn unbind(&mut self, ip: IpAddr, proto: Proto, port: u16);
}

/// A binding in place: what Docker shows in `NetworkSettings.Ports` and
/// `docker port`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PublishedPort {
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Host address.
    pub host_ip: IpAddr,
    /// Host port.
    pub host_port: u16,
}

impl fmt::Display for PublishedPort {
    /// `docker port`'s line: `80/tcp -> 0.0.0.0:18080`, `80/tcp -> [::]:18080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} -> ", self.container_port, self.proto)?;
        match self.host_ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.host_port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.host_port),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct PortMap {
    used: HashSet<u16>,
    /// Cursor (`last`) per range.
    cursors: HashMap<PortRange, u16>,
}

/// The allocator: one per daemon. `Clone`, so a caller can try a request
/// on a copy and keep it only when the whole request succeeded.
#[derive(Clone, Debug)]
pub struct PortAllocator {
    ephemeral: PortRange,
    maps: HashMap<(IpAddr, Proto), PortMap>,
}

impl PortAllocator {
    /// An allocator whose dynamic ports come from `ephemeral` (the host's
    /// `ip_local_port_range`, see [`parse_ephemeral_range`]).
    #[must_use]
    pub fn new(ephemeral: PortRange) -> Self {
        Self {
            ephemeral,
            maps: HashMap::new(),
        }
    }

    /// The dynamic range.
    #[must_use]
    pub const fn ephemeral(&self) -> PortRange {
        self.ephemeral
    }

    /// Reserves a host port: `ports` `None` (or starting at 0 and ending
    /// at 0) for a dynamic one, a single port for exactly that port, a
    /// range for the next free port of that range after its cursor.
    ///
    /// # Errors
    ///
    /// [`AllocError::AlreadyAllocated`] for a taken explicit port,
    /// [`AllocError::AllAllocated`] for a full range,
    /// [`AllocError::InvalidRange`] for a range starting at 0.
    pub fn request(
        &mut self,
        ip: IpAddr,
        proto: Proto,
        ports: Option<PortRange>,
    ) -> Result<u16, AllocError> {
        let ip = canonical(ip);
        let map = self.maps.entry((ip, proto)).or_default();
        let range = match ports {
            None => self.ephemeral,
            Some(r) if r.start() == 0 && r.end() == 0 => self.ephemeral,
            Some(r) if r.start() == 0 => return Err(AllocError::InvalidRange(r.start(), r.end())),
            Some(r) if r.is_single() => {
                let port = r.start();
                return if map.used.insert(port) {
                    Ok(port)
                } else {
                    Err(AllocError::AlreadyAllocated { ip, port })
                };
            }
            Some(r) => r,
        };
        let last = map.cursors.entry(range).or_insert(range.end());
        let mut port = *last;
        for _ in 0..=u32::from(range.span()) {
            port = if port >= range.end() {
                range.start()
            } else {
                port + 1
            };
            if map.used.insert(port) {
                *last = port;
                return Ok(port);
            }
        }
        Err(AllocError::AllAllocated)
    }

    /// Gives a port back. The cursor does not move back, so the port is
    /// reused only after a wrap-around.
    pub fn release(&mut self, ip: IpAddr, proto: Proto, port: u16) {
        if let Some(map) = self.maps.get_mut(&(canonical(ip), proto)) {
            map.used.remove(&port);
        }
    }

    /// Whether the port is reserved on exactly this address (a wildcard
    /// reservation does not count, as in Docker).
    #[must_use]
    pub fn is_allocated(&self, ip: IpAddr, proto: Proto, port: u16) -> bool {
        self.maps
            .get(&(canonical(ip), proto))
            .is_some_and(|m| m.used.contains(&port))
    }

    /// Reserves and binds one host port for `binding` on `ip`, retrying the
    /// next dynamic port when the host refuses a dynamic one (Docker's
    /// `allocatePort`). `retries` receives Docker's log line for each retry.
    ///
    /// # Errors
    ///
    /// The last failure, with Docker's text.
    pub fn map_port(
        &mut self,
        ip: IpAddr,
        binding: &PortBinding,
        binder: &mut dyn Binder,
        retries: &mut Vec<String>,
    ) -> Result<u16, PublishError> {
        let attempts = if binding.is_dynamic() {
            MAX_ATTEMPTS
        } else {
            1
        };
        let mut last = None;
        for attempt in 1..=attempts {
            let result = self
                .request(ip, binding.proto, binding.host_ports)
                .map_err(PublishError::from)
                .and_then(|port| match binder.bind(ip, binding.proto, port) {
                    Ok(()) => Ok(port),
                    Err(source) => {
                        self.release(ip, binding.proto, port);
                        Err(PublishError::Bind {
                            proto: binding.proto,
                            ip: canonical(ip),
                            port,
                            source,
                        })
                    }
                });
            match result {
                Ok(port) => return Ok(port),
                Err(e) => {
                    if attempts > 1 {
                        retries.push(format!(
                            "Failed to allocate and map port: {e}, retry: {attempt}"
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(PublishError::Alloc(AllocError::AllAllocated)))
    }
}

/// The host addresses a binding is made on: the one it names, or the
/// network's `host_binding_ipv4` and, when that is 0.0.0.0, `::` too
/// (docker-reference §4.1).
#[must_use]
pub fn host_addresses(binding: &PortBinding, host_binding_ipv4: Ipv4Addr) -> Vec<IpAddr> {
    match binding.host_ip {
        Some(ip) => vec![ip],
        None if host_binding_ipv4.is_unspecified() => {
            vec![
                IpAddr::V4(host_binding_ipv4),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        }
        None => vec![IpAddr::V4(host_binding_ipv4)],
    }
}

/// All the bindings of one container, all or nothing: on the first
/// failure every port already reserved is released and every listener
/// already opened is closed, and the error is returned with Docker's text.
/// Log lines for retried ports go to `retries`.
///
/// # Errors
///
/// The failing binding's [`PublishError`].
pub fn publish(
    alloc: &mut PortAllocator,
    bindings: &[PortBinding],
    host_binding_ipv4: Ipv4Addr,
    binder: &mut dyn Binder,
    retries: &mut Vec<String>,
) -> Result<Vec<PublishedPort>, PublishError> {
    let mut done: Vec<PublishedPort> = Vec::new();
    for b in bindings {
        for ip in host_addresses(b, host_binding_ipv4) {
            match alloc.map_port(ip, b, binder, retries) {
                Ok(port) => done.push(PublishedPort {
                    container_port: b.container_port,
                    proto: b.proto,
                    host_ip: canonical(ip),
                    host_port: port,
                }),
                Err(e) => {
                    unpublish(alloc, &done, binder);
                    return Err(e);
                }
            }
        }
    }
    Ok(done)
}

/// Releases the ports and closes the listeners of `ports`.
pub fn unpublish(alloc: &mut PortAllocator, ports: &[PublishedPort], binder: &mut dyn Binder) {
    for p in ports.iter().rev() {
        binder.unbind(p.host_ip, p.proto, p.host_port);
        alloc.release(p.host_ip, p.proto, p.host_port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PortSpec;
    use std::collections::BTreeSet;

    const V4ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    const V6ANY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn range(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    fn fresh() -> PortAllocator {
        PortAllocator::new(range(32768, 60999))
    }

    /// A host where some (address, protocol, port) are held by other
    /// processes and some addresses are not local; it records what is open.
    #[derive(Default)]
    struct Host {
        held: BTreeSet<(IpAddr, Proto, u16)>,
        open: BTreeSet<(IpAddr, Proto, u16)>,
        not_local: BTreeSet<IpAddr>,
        binds: usize,
    }

    impl Binder for Host {
        fn bind(&mut self, ip: IpAddr, proto: Proto, port: u16) -> Result<(), BindError> {
            self.binds += 1;
            if self.not_local.contains(&ip) {
                return Err(BindError::AddrNotAvailable);
            }
            // The kernel's rule: a wildcard listener conflicts with a
            // specific one of the same family and port, and vice versa.
            let clash = |&(i, p, n): &(IpAddr, Proto, u16)| {
                p == proto
                    && n == port
                    && i.is_ipv4() == ip.is_ipv4()
                    && (i == ip || i.is_unspecified() || ip.is_unspecified())
            };
            if self.held.iter().any(clash) || self.open.iter().any(clash) {
                return Err(BindError::AddrInUse);
            }
            self.open.insert((ip, proto, port));
            Ok(())
        }

        fn unbind(&mut self, ip: IpAddr, proto: Proto, port: u16) {
            assert!(
                self.open.remove(&(ip, proto, port)),
                "unbind of {ip}:{port} never bound"
            );
        }
    }

    fn bindings(spec: &str) -> Vec<PortBinding> {
        spec.parse::<PortSpec>().unwrap().bindings()
    }

    fn run(a: &mut PortAllocator, host: &mut Host, spec: &str) -> Result<Vec<String>, String> {
        let mut retries = Vec::new();
        publish(
            a,
            &bindings(spec),
            Ipv4Addr::UNSPECIFIED,
            host,
            &mut retries,
        )
        .map(|ps| ps.iter().map(ToString::to_string).collect())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn ephemeral_range_reads_the_proc_file_or_refuses() {
        assert_eq!(
            parse_ephemeral_range("32768\t60999\n").unwrap(),
            range(32768, 60999)
        );
        for bad in ["", "1", "60999 32768", "0 10", "a b", "1 2 3"] {
            assert!(parse_ephemeral_range(bad).is_err(), "{bad:?}");
        }
        assert_eq!(FALLBACK_EPHEMERAL, range(49153, 65535));
    }

    #[test]
    fn dynamic_ports_start_at_the_range_start_and_follow_the_cursor() {
        let mut a = fresh();
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(32768));
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(32769));
        // Released ports are not reused before the cursor wraps.
        a.release(V4ANY, Proto::Tcp, 32768);
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(32770));
        // Each (address, protocol) has its own cursor.
        assert_eq!(a.request(V6ANY, Proto::Tcp, None), Ok(32768));
        assert_eq!(a.request(V4ANY, Proto::Udp, None), Ok(32768));
        // Port 0 is "any".
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, Some(PortRange::single(0))),
            Ok(32771)
        );
    }

    #[test]
    fn the_cursor_wraps_and_skips_ports_in_use() {
        let mut a = PortAllocator::new(range(100, 103));
        for want in [100, 101, 102, 103] {
            assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(want));
        }
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, None),
            Err(AllocError::AllAllocated)
        );
        a.release(V4ANY, Proto::Tcp, 102);
        a.release(V4ANY, Proto::Tcp, 100);
        // Search starts after the last port given (103), wraps to 100.
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(100));
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(102));
        // An explicit port inside the dynamic range blocks it for the cursor.
        a.release(V4ANY, Proto::Tcp, 101);
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, Some(PortRange::single(101))),
            Ok(101)
        );
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, None),
            Err(AllocError::AllAllocated)
        );
    }

    #[test]
    fn host_ranges_have_their_own_cursor() {
        let mut a = fresh();
        let r = Some(range(18090, 18092));
        assert_eq!(a.request(V4ANY, Proto::Tcp, r), Ok(18090));
        assert_eq!(a.request(V4ANY, Proto::Tcp, r), Ok(18091));
        a.release(V4ANY, Proto::Tcp, 18090);
        assert_eq!(a.request(V4ANY, Proto::Tcp, r), Ok(18092));
        assert_eq!(a.request(V4ANY, Proto::Tcp, r), Ok(18090));
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, r),
            Err(AllocError::AllAllocated)
        );
        // The dynamic cursor did not move.
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(32768));
        // A range written equal to the ephemeral range shares its cursor.
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, Some(range(32768, 60999))),
            Ok(32769)
        );
        assert_eq!(a.request(V4ANY, Proto::Tcp, None), Ok(32770));
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, Some(range(0, 5)))
                .unwrap_err()
                .to_string(),
            "invalid port range: 0-5"
        );
    }

    #[test]
    fn explicit_ports_clash_per_address_and_protocol_with_dockers_text() {
        let mut a = fresh();
        let p = Some(PortRange::single(18100));
        assert_eq!(a.request(V4ANY, Proto::Tcp, p), Ok(18100));
        assert_eq!(
            a.request(V4ANY, Proto::Tcp, p).unwrap_err().to_string(),
            "Bind for 0.0.0.0:18100 failed: port is already allocated"
        );
        assert_eq!(a.request(V4ANY, Proto::Udp, p), Ok(18100));
        // 127.0.0.1 and :: are other keys for the allocator.
        assert_eq!(a.request(LO, Proto::Tcp, p), Ok(18100));
        assert_eq!(a.request(V6ANY, Proto::Tcp, p), Ok(18100));
        assert_eq!(
            a.request(V6ANY, Proto::Tcp, p).unwrap_err().to_string(),
            "Bind for :::18100 failed: port is already allocated"
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(a.is_allocated(mapped, Proto::Tcp, 18100));
    }

    #[test]
    fn publishing_without_an_address_binds_v4_and_v6_separately() {
        let mut a = fresh();
        let mut host = Host::default();
        assert_eq!(
            run(&mut a, &mut host, "18080:80").unwrap(),
            ["80/tcp -> 0.0.0.0:18080", "80/tcp -> [::]:18080"]
        );
        assert_eq!(
            run(&mut a, &mut host, "85").unwrap(),
            ["85/tcp -> 0.0.0.0:32768", "85/tcp -> [::]:32768"]
        );
        assert_eq!(
            run(&mut a, &mut host, "85").unwrap(),
            ["85/tcp -> 0.0.0.0:32769", "85/tcp -> [::]:32769"]
        );
        assert_eq!(
            run(&mut a, &mut host, "127.0.0.1:18081:81/udp").unwrap(),
            ["81/udp -> 127.0.0.1:18081"]
        );
        let mut retries = Vec::new();
        let got = publish(
            &mut a,
            &bindings("18200:80"),
            Ipv4Addr::LOCALHOST,
            &mut host,
            &mut retries,
        )
        .unwrap();
        assert_eq!(got.len(), 1, "host_binding_ipv4=127.0.0.1 binds only there");
        assert_eq!(got[0].host_ip, LO);
    }

    #[test]
    fn a_dynamic_port_held_by_another_process_is_retried_with_the_next() {
        let mut a = fresh();
        let mut host = Host::default();
        host.held.insert((V4ANY, Proto::Tcp, 32768));
        host.held.insert((V4ANY, Proto::Tcp, 32769));
        let mut retries = Vec::new();
        let b = bindings("85")[0];
        assert_eq!(a.map_port(V4ANY, &b, &mut host, &mut retries), Ok(32770));
        assert_eq!(
            retries,
            [
                "Failed to allocate and map port: Error starting userland proxy: listen tcp4 0.0.0.0:32768: bind: address already in use, retry: 1",
                "Failed to allocate and map port: Error starting userland proxy: listen tcp4 0.0.0.0:32769: bind: address already in use, retry: 2",
            ]
        );
        // The refused ports were released: they are free for Docker again.
        assert!(!a.is_allocated(V4ANY, Proto::Tcp, 32768));
    }

    #[test]
    fn retries_stop_after_ten_attempts() {
        let mut a = fresh();
        let mut host = Host::default();
        for p in 32768..32778 {
            host.held.insert((V4ANY, Proto::Udp, p));
        }
        let mut retries = Vec::new();
        let b = bindings("85/udp")[0];
        let e = a.map_port(V4ANY, &b, &mut host, &mut retries).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error starting userland proxy: listen udp4 0.0.0.0:32777: bind: address already in use"
        );
        assert_eq!(host.binds, MAX_ATTEMPTS);
        assert_eq!(retries.len(), MAX_ATTEMPTS);
        // With one more port free it would have succeeded at the 11th: it is
        // what the cursor gives next.
        assert_eq!(
            a.map_port(V4ANY, &b, &mut Host::default(), &mut retries),
            Ok(32778)
        );
    }

    #[test]
    fn explicit_ports_and_ranges_are_not_retried() {
        let mut a = fresh();
        let mut host = Host::default();
        host.held.insert((V4ANY, Proto::Tcp, 18095));
        host.held.insert((V4ANY, Proto::Tcp, 18090));
        assert_eq!(
            run(&mut a, &mut host, "18095:80").unwrap_err(),
            "Error starting userland proxy: listen tcp4 0.0.0.0:18095: bind: address already in use"
        );
        assert_eq!(host.binds, 1);
        let mut retries = Vec::new();
        let b = bindings("18090-18092:88")[0];
        assert!(a.map_port(V4ANY, &b, &mut host, &mut retries).is_err());
        assert!(retries.is_empty());
        // The range's cursor moved past the refused port.
        assert_eq!(a.map_port(V4ANY, &b, &mut host, &mut retries), Ok(18091));
    }

    #[test]
    fn failures_roll_back_everything_already_made() {
        let mut a = fresh();
        let mut host = Host::default();
        // `[::]:P` already published, then `-p P:80`: the v4 half succeeds
        // and is rolled back.
        run(&mut a, &mut host, "[::]:18502:80").unwrap();
        assert_eq!(
            run(&mut a, &mut host, "18502:80").unwrap_err(),
            "Bind for :::18502 failed: port is already allocated"
        );
        assert!(!a.is_allocated(V4ANY, Proto::Tcp, 18502));
        assert_eq!(host.open.len(), 1);
        // A range of three where the third is taken leaves nothing behind.
        run(&mut a, &mut host, "127.0.0.1:18084:84").unwrap();
        assert_eq!(
            run(&mut a, &mut host, "127.0.0.1:18082-18084:82-84").unwrap_err(),
            "Bind for 127.0.0.1:18084 failed: port is already allocated"
        );
        assert!(!a.is_allocated(LO, Proto::Tcp, 18082));
        assert!(!a.is_allocated(LO, Proto::Tcp, 18083));
        assert_eq!(host.open.len(), 2);
    }

    #[test]
    fn a_specific_address_under_a_wildcard_fails_at_bind_as_in_docker() {
        let mut a = fresh();
        let mut host = Host::default();
        run(&mut a, &mut host, "0.0.0.0:18080:80").unwrap();
        assert_eq!(
            run(&mut a, &mut host, "127.0.0.1:18080:80").unwrap_err(),
            "Error starting userland proxy: listen tcp4 127.0.0.1:18080: bind: address already in use"
        );
        assert!(!a.is_allocated(LO, Proto::Tcp, 18080));
        let other: IpAddr = "1.2.3.4".parse().unwrap();
        host.not_local.insert(other);
        assert_eq!(
            run(&mut a, &mut host, "1.2.3.4:18099:80").unwrap_err(),
            "Error starting userland proxy: listen tcp4 1.2.3.4:18099: bind: cannot assign requested address"
        );
    }

    #[test]
    fn protocol_not_supported_has_dockers_short_text() {
        let e = PublishError::Bind {
            proto: Proto::Sctp,
            ip: V4ANY,
            port: 1,
            source: BindError::ProtocolNotSupported,
        };
        assert_eq!(
            e.to_string(),
            "Error starting userland proxy: protocol not supported"
        );
    }
}
