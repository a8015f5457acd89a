//! `-p`/`--publish`, `--expose` and `-P`, parsed as Docker parses them
//! (docker-reference §4.1; go-connections `nat.ParsePortSpec`, docker/cli
//! `opts.go`), with Docker's error texts, so a user's muscle memory and
//! scripts that match on messages keep working.
//!
//! Syntax: `[hostIP:][hostPort[-hostPortEnd]:]containerPort[-containerPortEnd][/tcp|/udp|/sctp]`.
//! IPv6 host addresses are written in brackets (`[::1]:8080:80`); without
//! brackets the string is split on its last two colons (`::1:8080:80`).
//!
//! A [`PortSpec`] keeps the request as written (one `-p` argument); its
//! [`bindings`](PortSpec::bindings) expand it as Docker does: a container
//! range maps 1:1 onto a host range of the same length; a single container
//! port with a host range gets one port chosen from that range.
//!
//! Where Docker's parser is laxer than its own syntax, this one refuses,
//! with the error Docker gives for the nearest malformed input: container
//! port 0 (`invalid containerPort: 0`) and a range with two dashes
//! (`invalid hostPort: 1-2-3`, which Docker reads as `1-2`).

use core::fmt;
use core::str::FromStr;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The protocol of a published or exposed port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Proto {
    /// TCP, the default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP: accepted by the syntax, as Docker's; serving it is the
    /// daemon's business.
    Sctp,
}

impl Proto {
    /// The lower-case name Docker prints.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// Case-insensitive, as Docker (`/TCP` is tcp); the empty string is
    /// the default, tcp.
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            "sctp" => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports, `start <= end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range, or `None` when `end < start`.
    #[must_use]
    pub const fn new(start: u16, end: u16) -> Option<Self> {
        if end < start {
            None
        } else {
            Some(Self { start, end })
        }
    }

    /// One port.
    #[must_use]
    pub const fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// First port.
    #[must_use]
    pub const fn start(self) -> u16 {
        self.start
    }

    /// Last port.
    #[must_use]
    pub const fn end(self) -> u16 {
        self.end
    }

    /// Number of ports minus one (so a full 0–65535 range fits).
    #[must_use]
    pub const fn span(self) -> u16 {
        self.end - self.start
    }

    /// Whether it is a single port.
    #[must_use]
    pub const fn is_single(self) -> bool {
        self.start == self.end
    }

    /// Whether `port` is inside.
    #[must_use]
    pub const fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// go-connections `ParsePortRange`.
    fn parse(s: &str) -> Result<Self, RangeError> {
        if s.is_empty() {
            return Err(RangeError::Empty);
        }
        let (a, b) = match s.split_once('-') {
            None => (s, None),
            Some((a, b)) => (a, Some(b)),
        };
        let start = parse_u16(a)?;
        let end = match b {
            None => start,
            Some(b) => parse_u16(b)?,
        };
        Self::new(start, end).ok_or_else(|| RangeError::Reversed(s.to_owned()))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Go's `strconv.ParseUint(s, 10, 16)`: ASCII digits only (no sign, no
/// spaces), at most 65535.
fn parse_u16(s: &str) -> Result<u16, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Syntax(s.to_owned()));
    }
    s.parse::<u16>()
        .map_err(|_| RangeError::OutOfRange(s.to_owned()))
}

/// Why a port range did not parse; the texts are Go's, because Docker
/// embeds them in `--expose` errors.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
enum RangeError {
    #[error("empty string specified for ports")]
    Empty,
    #[error("strconv.ParseUint: parsing {0:?}: invalid syntax")]
    Syntax(String),
    #[error("strconv.ParseUint: parsing {0:?}: value out of range")]
    OutOfRange(String),
    #[error("invalid range specified for port: {0}")]
    Reversed(String),
}

/// Why a `-p` or `--expose` argument was refused, with Docker's text.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The protocol after `/` is not tcp, udp or sctp.
    #[error("invalid proto: {0}")]
    InvalidProto(String),
    /// The host address does not parse.
    #[error("invalid IP address: {0}")]
    InvalidIp(String),
    /// The container port or range does not parse.
    #[error("invalid containerPort: {0}")]
    InvalidContainerPort(String),
    /// The host port or range does not parse.
    #[error("invalid hostPort: {0}")]
    InvalidHostPort(String),
    /// A container range with a host range of another length.
    #[error("invalid ranges specified for container and host Ports: {container} and {host}")]
    RangeMismatch {
        /// The container part as written.
        container: String,
        /// The host part as written.
        host: String,
    },
    /// `--expose` with a host part.
    #[error("invalid port format for --expose: {0}")]
    ExposeFormat(String),
    /// `--expose` whose range does not parse.
    #[error("invalid range format for --expose: {arg}, error: {detail}")]
    ExposeRange {
        /// The argument.
        arg: String,
        /// Go's parse error text.
        detail: String,
    },
}

/// One `-p` argument as written: host address and ports optional.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortSpec {
    /// The host address; `None` means the network's default
    /// (`host_binding_ipv4`, and `::` when that is 0.0.0.0).
    pub host_ip: Option<IpAddr>,
    /// The host port or range; `None` (or port 0) means "any free port".
    pub host_ports: Option<PortRange>,
    /// The container port or range.
    pub container_ports: PortRange,
    /// Protocol.
    pub proto: Proto,
}

/// Splits on `:` as go-connections' `splitParts`: the last part is the
/// container port, the one before the host port, the rest the address.
fn split_parts(raw: &str) -> (&str, &str, &str) {
    let Some((rest, container)) = raw.rsplit_once(':') else {
        return ("", "", raw);
    };
    match rest.rsplit_once(':') {
        None => ("", rest, container),
        Some((ip, host)) => (ip, host, container),
    }
}

impl FromStr for PortSpec {
    type Err = SpecError;

    /// Parses as go-connections' `ParsePortSpec`, checking in its order:
    /// protocol, address, container port, host port, range lengths.
    fn from_str(raw: &str) -> Result<Self, SpecError> {
        let (ip, host, container) = split_parts(raw);
        let (container, proto) = container.split_once('/').unwrap_or((container, ""));
        // go-connections' `SplitProtoPort` returns no protocol at all for an
        // empty port, so a missing port is reported as `invalid proto: `.
        let proto = if container.is_empty() { "-" } else { proto };
        let proto =
            Proto::parse(proto).ok_or_else(|| SpecError::InvalidProto(proto_text(proto)))?;
        let host_ip = parse_host_ip(ip)?;
        let container_ports = PortRange::parse(container)
            .ok()
            .filter(|r| r.start() != 0)
            .ok_or_else(|| SpecError::InvalidContainerPort(container.to_owned()))?;
        let host_ports = if host.is_empty() {
            None
        } else {
            let r =
                PortRange::parse(host).map_err(|_| SpecError::InvalidHostPort(host.to_owned()))?;
            if r.span() != container_ports.span() && !container_ports.is_single() {
                return Err(SpecError::RangeMismatch {
                    container: container.to_owned(),
                    host: host.to_owned(),
                });
            }
            Some(r)
        };
        Ok(Self {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }
}

/// Go lower-cases the protocol before printing it; the empty protocol of
/// an empty port prints as nothing.
fn proto_text(p: &str) -> String {
    if p == "-" {
        String::new()
    } else {
        p.to_ascii_lowercase()
    }
}

fn parse_host_ip(ip: &str) -> Result<Option<IpAddr>, SpecError> {
    if ip.is_empty() {
        return Ok(None);
    }
    let bare = match ip.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .filter(|s| !s.contains(['[', ']']))
            .ok_or_else(|| SpecError::InvalidIp(ip.to_owned()))?,
        None => ip,
    };
    bare.parse()
        .map(Some)
        .map_err(|_| SpecError::InvalidIp(bare.to_owned()))
}

impl fmt::Display for PortSpec {
    /// Prints the spec so that parsing the text gives it back: the
    /// protocol always, IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        match self.host_ports {
            Some(r) => write!(f, "{r}:")?,
            None if self.host_ip.is_some() => f.write_str(":")?,
            None => {}
        }
        write!(f, "{}/{}", self.container_ports, self.proto)
    }
}

/// One container port's request for a host port: what Docker keeps in
/// `HostConfig.PortBindings`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortBinding {
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Host address as requested (`None`: the network's default).
    pub host_ip: Option<IpAddr>,
    /// Host port or range to choose from; `None` for any free port.
    pub host_ports: Option<PortRange>,
}

impl PortBinding {
    /// Whether the host port is chosen by the allocator (and so a failed
    /// bind is retried with the next one, docker-reference §4.2).
    #[must_use]
    pub fn is_dynamic(&self) -> bool {
        self.host_ports.is_none_or(|r| r.start() == 0)
    }
}

impl PortSpec {
    /// The per-container-port requests, as go-connections expands them.
    #[must_use]
    pub fn bindings(&self) -> Vec<PortBinding> {
        let c = self.container_ports;
        (0..=c.span())
            .map(|i| {
                let host_ports = self.host_ports.map(|h| {
                    if c.is_single() {
                        h
                    } else {
                        PortRange::single(h.start() + i)
                    }
                });
                PortBinding {
                    container_port: c.start() + i,
                    proto: self.proto,
                    host_ip: self.host_ip,
                    host_ports,
                }
            })
            .collect()
    }
}

/// Parses one `--expose` argument (`80`, `80/udp`, `8000-8010/tcp`) into
/// the ports it exposes.
///
/// # Errors
///
/// Docker's texts: `invalid port format for --expose: …` for a host part,
/// `invalid range format for --expose: …, error: …` for a bad range.
pub fn parse_expose(arg: &str) -> Result<Vec<(u16, Proto)>, SpecError> {
    if arg.contains(':') {
        return Err(SpecError::ExposeFormat(arg.to_owned()));
    }
    let (port, proto) = arg.split_once('/').unwrap_or((arg, ""));
    let range = PortRange::parse(port).map_err(|e| SpecError::ExposeRange {
        arg: arg.to_owned(),
        detail: e.to_string(),
    })?;
    let proto = Proto::parse(proto).ok_or_else(|| SpecError::InvalidProto(proto_text(proto)))?;
    Ok((range.start()..=range.end()).map(|p| (p, proto)).collect())
}

/// `-P`: every exposed port (image `EXPOSE`, `--expose`, and every port
/// `-p` publishes) that has no binding yet gets one to any free port on
/// the default address; explicit bindings are kept first, in order.
#[must_use]
pub fn publish_all(explicit: &[PortBinding], exposed: &[(u16, Proto)]) -> Vec<PortBinding> {
    let bound: BTreeSet<(u16, Proto)> = explicit
        .iter()
        .map(|b| (b.container_port, b.proto))
        .collect();
    let mut out = explicit.to_vec();
    let mut added = BTreeSet::new();
    for &(port, proto) in exposed {
        if !bound.contains(&(port, proto)) && added.insert((port, proto)) {
            out.push(PortBinding {
                container_port: port,
                proto,
                host_ip: None,
                host_ports: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(s: &str) -> Result<PortSpec, String> {
        s.parse::<PortSpec>().map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_form_of_the_reference_table() {
        let p = parse("18080:80").unwrap();
        assert_eq!(p.host_ip, None);
        assert_eq!(p.host_ports, Some(PortRange::single(18080)));
        assert_eq!(p.container_ports, PortRange::single(80));
        assert_eq!(p.proto, Proto::Tcp);

        let p = parse("127.0.0.1:18081:81/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(p.proto, Proto::Udp);

        let p = parse("127.0.0.1::86").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(p.host_ports, None);

        let p = parse("[::]:18502:80").unwrap();
        assert_eq!(p.host_ip, Some(Ipv6Addr::UNSPECIFIED.into()));
        let p = parse("[::1]:18503:80/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv6Addr::LOCALHOST.into()));
        let p = parse("::1:8080:80").unwrap();
        assert_eq!(p.host_ip, Some(Ipv6Addr::LOCALHOST.into()));
        assert_eq!(p.host_ports, Some(PortRange::single(8080)));

        assert_eq!(parse("85/TCP").unwrap().proto, Proto::Tcp);
        assert_eq!(parse("85/Sctp").unwrap().proto, Proto::Sctp);
        assert_eq!(parse("85/").unwrap().proto, Proto::Tcp);
    }

    #[test]
    fn ranges_expand_one_to_one_or_into_a_host_range() {
        let b = parse("18082-18084:82-84").unwrap().bindings();
        let pairs: Vec<_> = b
            .iter()
            .map(|b| (b.container_port, b.host_ports.unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [
                (82, PortRange::single(18082)),
                (83, PortRange::single(18083)),
                (84, PortRange::single(18084))
            ]
        );
        assert!(b.iter().all(|b| !b.is_dynamic()));

        let b = parse("18090-18092:88").unwrap().bindings();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host_ports, PortRange::new(18090, 18092));

        let b = parse("127.0.0.1::80-81").unwrap().bindings();
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(PortBinding::is_dynamic));
        assert_eq!(b[1].container_port, 81);
        assert!(parse("0:80").unwrap().bindings()[0].is_dynamic());
    }

    #[test]
    fn errors_are_dockers_texts() {
        let cases = [
            ("80/xyz", "invalid proto: xyz"),
            ("80/XYZ", "invalid proto: xyz"),
            ("/xyz", "invalid proto: "),
            ("70000:80", "invalid hostPort: 70000"),
            ("abc:80", "invalid hostPort: abc"),
            ("+80:80", "invalid hostPort: +80"),
            ("1-2-3:80", "invalid hostPort: 1-2-3"),
            ("80:abc", "invalid containerPort: abc"),
            ("80-79:80-79", "invalid containerPort: 80-79"),
            ("0", "invalid containerPort: 0"),
            ("1.2.3:80:80", "invalid IP address: 1.2.3"),
            ("[::1:80:80", "invalid IP address: [::1"),
            ("[nope]:80:80", "invalid IP address: nope"),
            (
                "18097-18098:80-82",
                "invalid ranges specified for container and host Ports: 80-82 and 18097-18098",
            ),
            (
                "18097:80-82",
                "invalid ranges specified for container and host Ports: 80-82 and 18097",
            ),
            ("127.0.0.1:80:", "invalid proto: "),
            ("", "invalid proto: "),
        ];
        for (arg, want) in cases {
            assert_eq!(parse(arg).unwrap_err(), want, "{arg}");
        }
    }

    #[test]
    fn display_is_the_canonical_form() {
        for (arg, shown) in [
            ("18080:80", "18080:80/tcp"),
            ("85", "85/tcp"),
            ("127.0.0.1::86/UDP", "127.0.0.1::86/udp"),
            ("::1:8080:80", "[::1]:8080:80/tcp"),
            ("18090-18092:88", "18090-18092:88/tcp"),
            (":80:80", "80:80/tcp"),
        ] {
            assert_eq!(parse(arg).unwrap().to_string(), shown, "{arg}");
        }
    }

    #[test]
    fn expose_takes_ranges_and_refuses_host_parts() {
        assert_eq!(
            parse_expose("99").unwrap(),
            [(99, Proto::Tcp)],
            "a bare port is tcp"
        );
        assert_eq!(
            parse_expose("8000-8002/udp").unwrap(),
            [(8000, Proto::Udp), (8001, Proto::Udp), (8002, Proto::Udp)]
        );
        let e = |a| parse_expose(a).unwrap_err().to_string();
        assert_eq!(e("80:80"), "invalid port format for --expose: 80:80");
        assert_eq!(
            e("abc"),
            "invalid range format for --expose: abc, error: strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            e("70000"),
            "invalid range format for --expose: 70000, error: strconv.ParseUint: parsing \"70000\": value out of range"
        );
        assert_eq!(
            e("9-3"),
            "invalid range format for --expose: 9-3, error: invalid range specified for port: 9-3"
        );
        assert_eq!(e("80/xyz"), "invalid proto: xyz");
    }

    #[test]
    fn publish_all_adds_only_unbound_exposed_ports_once() {
        let explicit = parse("18080:80").unwrap().bindings();
        let all = publish_all(
            &explicit,
            &[
                (80, Proto::Tcp),
                (99, Proto::Tcp),
                (99, Proto::Tcp),
                (80, Proto::Udp),
            ],
        );
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], explicit[0]);
        assert_eq!((all[1].container_port, all[1].proto), (99, Proto::Tcp));
        assert_eq!((all[2].container_port, all[2].proto), (80, Proto::Udp));
        assert!(
            all[1..]
                .iter()
                .all(|b| b.is_dynamic() && b.host_ip.is_none())
        );
    }

    fn arb_spec_text() -> impl Strategy<Value = String> {
        let ip = prop_oneof![
            Just(String::new()),
            any::<[u8; 4]>().prop_map(|o| format!("{}:", Ipv4Addr::from(o))),
            any::<[u16; 8]>().prop_map(|s| format!("[{}]:", Ipv6Addr::from(s))),
            any::<[u16; 8]>().prop_map(|s| format!("{}:", Ipv6Addr::from(s))),
            Just("garbage:".to_owned()),
        ];
        let range = prop_oneof![
            Just(String::new()),
            any::<u16>().prop_map(|p| p.to_string()),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("{a}-{b}")),
            (0u16..100, 0u16..3).prop_map(|(a, n)| format!("{a}-{}", a + n)),
            (0u32..100_000).prop_map(|p| p.to_string()),
            "[0-9a-z-]{0,6}",
        ];
        let proto = prop_oneof![
            Just(""),
            Just("/tcp"),
            Just("/UDP"),
            Just("/sctp"),
            Just("/"),
            Just("/icmp")
        ];
        (ip, range.clone(), range, proto).prop_map(|(ip, h, c, p)| {
            if ip.is_empty() && h.is_empty() {
                format!("{c}{p}")
            } else {
                format!("{ip}{h}:{c}{p}")
            }
        })
    }

    proptest! {
        #[test]
        fn every_accepted_spec_prints_back_to_an_equal_spec(text in arb_spec_text()) {
            if let Ok(spec) = text.parse::<PortSpec>() {
                let shown = spec.to_string();
                let again: PortSpec = shown.parse().map_err(|e: SpecError| {
                    TestCaseError::fail(format!("{text} -> {shown}: {e}"))
                })?;
                prop_assert_eq!(again, spec);
                prop_assert_eq!(again.to_string(), shown);
                let n = spec.bindings().len();
                prop_assert_eq!(n, usize::from(spec.container_ports.span()) + 1);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<PortSpec>();
            let _ = parse_expose(&text);
        }
    }
}
