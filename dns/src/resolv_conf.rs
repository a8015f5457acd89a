//! resolv.conf: reading the host's and writing each sandbox's
//! (docker-reference §6.2; libnetwork `sandbox_dns_unix.go` and
//! `resolvconf/resolvconf.go`).
//!
//! Text in, text out: the daemon reads the host file (`/etc/resolv.conf`,
//! or `/run/systemd/resolve/resolv.conf` when [`ResolvConf::is_systemd_stub`]
//! says so) and writes the result into the container. Docker reads these
//! files with regular expressions; the readers here reproduce what those
//! expressions accept (comments start at `#` only, the last `search` and
//! `options` lines win, a nameserver line must hold an address and nothing
//! else), and the writers reproduce Docker's output byte for byte.
//!
//! On a user-defined network the sandbox's file is:
//!
//! ```text
//! search <host or --dns-search domains>      (if any)
//! nameserver 127.0.0.11
//! nameserver <each IPv6 nameserver>          (if any)
//! options <host or --dns-option options> ndots:0
//! ```
//!
//! and the IPv4 nameservers (first three) become the resolver's upstreams;
//! `ndots:0` is left out when the options already set ndots.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::upstream::{DialFrom, Upstream};

/// The embedded server's address inside every sandbox.
pub const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// How many upstreams Docker keeps (`maxExtDNS`).
pub const MAX_UPSTREAMS: usize = 3;

/// Docker's fallback when no usable nameserver is left (Google Public DNS).
const DEFAULT_V4: [&str; 2] = ["8.8.8.8", "8.8.4.4"];
const DEFAULT_V6: [&str; 2] = ["2001:4860:4860::8888", "2001:4860:4860::8844"];

/// The option the embedded server adds unless the user set ndots.
const NDOTS_0: &str = "ndots:0";

/// One `nameserver` line's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Nameserver {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// Anything Docker's IPv6 pattern accepts, kept as written (it may
    /// carry a `%zone`, and Docker copies the text verbatim).
    V6(String),
}

impl fmt::Display for Nameserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(ip) => ip.fmt(f),
            Self::V6(text) => f.write_str(text),
        }
    }
}

/// What Docker reads from a resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// Every nameserver, in file order.
    pub nameservers: Vec<Nameserver>,
    /// The domains of the last `search` line.
    pub search: Vec<String>,
    /// The options of the last `options` line.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `text` as Docker does. Lines that match nothing are ignored;
    /// reading never fails.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.split('\n') {
            let line = line.split('#').next().unwrap_or_default();
            let body = line.trim_start_matches(is_space);
            if let Some(ns) = nameserver(body) {
                conf.nameservers.push(ns);
            } else if let Some(rest) = body.strip_prefix("search") {
                conf.search = rest.split_whitespace().map(str::to_owned).collect();
            } else if let Some(rest) = body.strip_prefix("options") {
                conf.options = rest.split_whitespace().map(str::to_owned).collect();
            }
        }
        conf
    }

    /// The IPv4 nameservers, in order.
    pub fn ipv4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.nameservers.iter().filter_map(|ns| match ns {
            Nameserver::V4(ip) => Some(*ip),
            Nameserver::V6(_) => None,
        })
    }

    /// The IPv6 nameservers, as written.
    pub fn ipv6(&self) -> impl Iterator<Item = &str> + '_ {
        self.nameservers.iter().filter_map(|ns| match ns {
            Nameserver::V4(_) => None,
            Nameserver::V6(text) => Some(text.as_str()),
        })
    }

    /// The file lists `127.0.0.53` and nothing else: systemd-resolved's
    /// stub, so Docker reads `/run/systemd/resolve/resolv.conf` instead.
    #[must_use]
    pub fn is_systemd_stub(&self) -> bool {
        self.nameservers == [Nameserver::V4(Ipv4Addr::new(127, 0, 0, 53))]
    }
}

/// A container's `--dns`, `--dns-search` and `--dns-option` values. Any
/// non-empty one replaces the host's value of the same kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `--dns`.
    pub servers: Vec<IpAddr>,
    /// `--dns-search`.
    pub search: Vec<String>,
    /// `--dns-option`.
    pub options: Vec<String>,
}

impl DnsSettings {
    /// No `--dns*` flag was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// A sandbox on a user-defined network: its file and its resolver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxResolvConf {
    /// The container's `/etc/resolv.conf`.
    pub contents: String,
    /// The embedded server's upstreams (at most three), each marked with
    /// the namespace it is dialled from.
    pub upstreams: Vec<Upstream>,
    /// The options set ndots, which turns on the resolver's ndots rule.
    pub ndots_set: bool,
}

/// Why a sandbox's resolv.conf could not be made (Docker's messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolvConfError {
    /// An option mentioning `ndots` is not `ndots:<n>`.
    #[error("invalid ndots option {0}")]
    InvalidNdotsOption(String),
    /// The ndots value is not a number, or is negative.
    #[error("invalid number for ndots option: {0}")]
    InvalidNdotsNumber(String),
}

/// The resolv.conf and upstreams of a sandbox on a user-defined network
/// (Docker's `setupDNS` followed by `rebuildDNS`).
///
/// Without `--dns*` flags, the host's IPv4 nameservers are the upstreams,
/// loopback ones dialled from the host namespace; the file keeps the
/// host's search and options and its non-loopback IPv6 nameservers. If the
/// host has no usable nameserver at all, Docker's fallback applies: the
/// upstreams become 8.8.8.8 and 8.8.4.4, and Google's two IPv6 servers are
/// written after 127.0.0.11.
///
/// With flags, `--dns` replaces the nameservers (all dialled from the
/// sandbox, loopback or not), `--dns-search` the search list and
/// `--dns-option` the options.
///
/// # Errors
/// A malformed ndots option (`ndots`, `ndots:x`, `ndots:-1`) is refused
/// with Docker's message.
pub fn user_network(
    host: &str,
    settings: &DnsSettings,
) -> Result<SandboxResolvConf, ResolvConfError> {
    let (staged, mut upstreams): (String, Vec<Upstream>) = if settings.is_empty() {
        let host_conf = ResolvConf::parse(host);
        let upstreams = host_conf
            .ipv4()
            .map(|ip| {
                let from = if ip.is_loopback() {
                    DialFrom::Host
                } else {
                    DialFrom::Sandbox
                };
                upstream(ip, from)
            })
            .collect();
        (filter(host, true), upstreams)
    } else {
        let staged = with_settings(host, settings);
        let upstreams = ResolvConf::parse(&staged)
            .ipv4()
            .map(|ip| upstream(ip, DialFrom::Sandbox))
            .collect();
        (staged, upstreams)
    };

    let conf = ResolvConf::parse(&staged);
    if upstreams.is_empty() {
        upstreams = conf
            .ipv4()
            .map(|ip| upstream(ip, DialFrom::Sandbox))
            .collect();
    }
    upstreams.truncate(MAX_UPSTREAMS);

    let nameservers: Vec<String> = core::iter::once(EMBEDDED_DNS.to_string())
        .chain(conf.ipv6().map(str::to_owned))
        .collect();
    let mut options = conf.options;
    let ndots_set = ndots_set(&options)?;
    if !ndots_set {
        options.push(NDOTS_0.to_owned());
    }
    Ok(SandboxResolvConf {
        contents: build(&nameservers, &conf.search, &options),
        upstreams,
        ndots_set,
    })
}

/// The resolv.conf of a container on the default bridge, which has no
/// embedded server: with `--dns*` flags, a file built from them (and the
/// host's values for the kinds not given); otherwise the host's file with
/// loopback nameservers removed, IPv6 ones too unless `ipv6`, and
/// 8.8.8.8/8.8.4.4 (plus Google's IPv6 pair with `ipv6`) if none is left.
#[must_use]
pub fn default_bridge(host: &str, settings: &DnsSettings, ipv6: bool) -> String {
    if settings.is_empty() {
        // Docker filters once when the sandbox is made (keeping IPv6) and
        // again when it joins the network (with the network's IPv6 flag).
        filter(&filter(host, true), ipv6)
    } else {
        with_settings(host, settings)
    }
}

/// The resolv.conf of a `--network host` container: the host's, verbatim.
#[must_use]
pub fn host_network(host: &str) -> String {
    host.to_owned()
}

/// Docker's `resolvconf.Build`: `search`, `nameserver` and `options`
/// lines, each line only if it has content (a search list of just `.` is
/// left out).
#[must_use]
pub fn build(nameservers: &[String], search: &[String], options: &[String]) -> String {
    let mut out = String::new();
    let domains = search.join(" ");
    if !search.is_empty() && domains.trim_matches(' ') != "." {
        out.push_str("search ");
        out.push_str(&domains);
        out.push('\n');
    }
    for ns in nameservers {
        out.push_str("nameserver ");
        out.push_str(ns);
        out.push('\n');
    }
    let opts = options.join(" ");
    if !opts.trim_matches(' ').is_empty() {
        out.push_str("options ");
        out.push_str(&opts);
        out.push('\n');
    }
    out
}

/// Docker's `FilterResolvDNS`: removes loopback nameserver lines (and IPv6
/// ones unless `ipv6`) from the text, then appends the fallback servers if
/// no nameserver is left. Everything else in the file is kept.
#[must_use]
pub fn filter(text: &str, ipv6: bool) -> String {
    let mut out = remove_lines(text, match_loopback_line);
    if !ipv6 {
        out = remove_lines(&out, match_ipv6_line);
    }
    if ResolvConf::parse(&out).nameservers.is_empty() {
        let servers = DEFAULT_V4
            .iter()
            .chain(if ipv6 { &DEFAULT_V6[..] } else { &[] })
            .map(|ns| format!("nameserver {ns}"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out.push_str(&servers);
    }
    out
}

/// The staged file of a sandbox with `--dns*` flags.
fn with_settings(host: &str, settings: &DnsSettings) -> String {
    let host = ResolvConf::parse(host);
    let nameservers: Vec<String> = if settings.servers.is_empty() {
        host.nameservers.iter().map(ToString::to_string).collect()
    } else {
        settings.servers.iter().map(ToString::to_string).collect()
    };
    let search = if settings.search.is_empty() {
        &host.search
    } else {
        &settings.search
    };
    let options = if settings.options.is_empty() {
        &host.options
    } else {
        &settings.options
    };
    build(&nameservers, search, options)
}

fn upstream(ip: Ipv4Addr, dial_from: DialFrom) -> Upstream {
    Upstream {
        addr: SocketAddr::new(IpAddr::V4(ip), Upstream::PORT),
        dial_from,
    }
}

/// Whether the options set ndots (libnetwork `rebuildDNS`): the first
/// option containing "ndots" decides; it must be `<name>:<integer >= 0>`.
fn ndots_set(options: &[String]) -> Result<bool, ResolvConfError> {
    let Some(option) = options.iter().find(|o| o.contains("ndots")) else {
        return Ok(false);
    };
    let parts: Vec<&str> = option.split(':').collect();
    let [_, value] = parts.as_slice() else {
        return Err(ResolvConfError::InvalidNdotsOption(option.clone()));
    };
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(true),
        Ok(n) => Err(ResolvConfError::InvalidNdotsNumber(n.to_string())),
        Err(_) => Err(ResolvConfError::InvalidNdotsNumber((*value).to_owned())),
    }
}

/// Go's `\s`: `[\t\n\f\r ]`.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

fn space_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_space(char::from(b))).count()
}

fn run_len(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&b| pred(b)).count()
}

/// A nameserver line (comment stripped, leading space trimmed), as
/// Docker's `^\s*nameserver\s*(<ipv4>|<ipv6>)\s*$` reads it.
fn nameserver(body: &str) -> Option<Nameserver> {
    let addr = body.strip_prefix("nameserver")?.trim_matches(is_space);
    if is_ipv4_text(addr) {
        addr.parse().ok().map(Nameserver::V4)
    } else if is_ipv6_text(addr) {
        Some(Nameserver::V6(addr.to_owned()))
    } else {
        None
    }
}

/// Four decimal numbers 0–255 without leading zeros.
fn is_ipv4_text(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// Docker's loose IPv6 pattern, matched whole:
/// `([0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(%\w+)?`.
fn is_ipv6_text(s: &str) -> bool {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    let colons = addr.bytes().filter(|&b| b == b':').count();
    (2..=7).contains(&colons)
        && addr
            .split(':')
            .all(|p| p.len() <= 4 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && zone.is_none_or(|z| !z.is_empty() && z.bytes().all(is_word))
}

/// Go's `\w`: `[0-9A-Za-z_]`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Removes every match of a `(?m)^…` pattern, the way Go's
/// `Regexp.ReplaceAll` does: a match may start only at the beginning of a
/// line of the original text, and the next search starts where the last
/// match ended (so a match that swallowed the next line's indentation
/// leaves that line alone).
fn remove_lines(text: &str, matcher: fn(&[u8]) -> Option<usize>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let line_start = i == 0 || bytes[i - 1] == b'\n';
        if line_start && let Some(n) = matcher(&bytes[i..]) {
            out.push_str(&text[copied..i]);
            i += n;
            copied = i;
            continue;
        }
        match bytes[i..].iter().position(|&b| b == b'\n') {
            Some(k) => i += k + 1,
            None => break,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `nameserver\s+` at the start of `s`: the offset after it.
fn after_keyword(s: &[u8]) -> Option<usize> {
    let rest = s.strip_prefix(b"nameserver")?;
    let ws = space_len(rest);
    (ws > 0).then_some(b"nameserver".len() + ws)
}

/// `nameserver\s+((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)\s*\n*`
/// (Docker's `localhostNSRegexp`): the length of the match.
fn match_loopback_line(s: &[u8]) -> Option<usize> {
    let mut i = after_keyword(s)?;
    if s[i..].starts_with(b"127.") {
        i += 4;
        for _ in 0..2 {
            let n = run_len(&s[i..], |b| b.is_ascii_digit());
            if !(1..=3).contains(&n) || s.get(i + n) != Some(&b'.') {
                return None;
            }
            i += n + 1;
        }
        let n = run_len(&s[i..], |b| b.is_ascii_digit()).min(3);
        if n == 0 {
            return None;
        }
        i += n;
    } else if s[i..].starts_with(b"::1") && matches!(s.get(i + 3), None | Some(b'\n')) {
        i += 3;
    } else {
        return None;
    }
    Some(i + space_len(&s[i..]))
}

/// `nameserver\s+([0-9A-Fa-f]{0,4}:){2,7}([0-9A-Fa-f]{0,4})(%\w+)?\s*\n*`
/// (Docker's `nsIPv6Regexp`): the length of the match.
fn match_ipv6_line(s: &[u8]) -> Option<usize> {
    let mut i = after_keyword(s)?;
    let mut groups = 0;
    while groups < 7 {
        let n = run_len(&s[i..], |b| b.is_ascii_hexdigit()).min(4);
        if s.get(i + n) != Some(&b':') {
            break;
        }
        i += n + 1;
        groups += 1;
    }
    if groups < 2 {
        return None;
    }
    i += run_len(&s[i..], |b| b.is_ascii_hexdigit()).min(4);
    if s.get(i) == Some(&b'%') {
        let n = run_len(&s[i + 1..], is_word);
        if n > 0 {
            i += 1 + n;
        }
    }
    Some(i + space_len(&s[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(ip: [u8; 4], from: DialFrom) -> Upstream {
        upstream(ip.into(), from)
    }

    const HOST: &str = "\
# Generated by NetworkManager
search corp.example lab.example
nameserver 10.0.0.2
nameserver 2001:db8::53
nameserver 10.0.0.3 # secondary
options edns0 rotate
";

    #[test]
    fn parse_reads_what_docker_reads() {
        let c = ResolvConf::parse(HOST);
        assert_eq!(
            c.nameservers,
            [
                Nameserver::V4([10, 0, 0, 2].into()),
                Nameserver::V6("2001:db8::53".into()),
                Nameserver::V4([10, 0, 0, 3].into()),
            ]
        );
        assert_eq!(c.search, ["corp.example", "lab.example"]);
        assert_eq!(c.options, ["edns0", "rotate"]);

        // The last search/options line wins; `;` is not a comment marker,
        // so trailing junk makes a nameserver line unreadable.
        let c = ResolvConf::parse(
            "search a\nsearch b c\n  nameserver\t1.1.1.1  \nnameserver 9.9.9.9 ; x\n\
             nameserver 010.0.0.1\nnameserver fe80::1%eth0\nnameserver 1:2\noptions\n",
        );
        assert_eq!(c.search, ["b", "c"]);
        assert!(c.options.is_empty());
        assert_eq!(
            c.nameservers,
            [
                Nameserver::V4([1, 1, 1, 1].into()),
                Nameserver::V6("fe80::1%eth0".into())
            ]
        );
    }

    #[test]
    fn systemd_stub_detection() {
        assert!(ResolvConf::parse("nameserver 127.0.0.53\noptions edns0\n").is_systemd_stub());
        assert!(
            !ResolvConf::parse("nameserver 127.0.0.53\nnameserver 1.1.1.1\n").is_systemd_stub()
        );
    }

    #[test]
    fn user_network_from_host_file() {
        let r = user_network(HOST, &DnsSettings::default()).unwrap();
        assert_eq!(
            r.contents,
            "search corp.example lab.example\n\
             nameserver 127.0.0.11\n\
             nameserver 2001:db8::53\n\
             options edns0 rotate ndots:0\n"
        );
        assert_eq!(
            r.upstreams,
            [
                up([10, 0, 0, 2], DialFrom::Sandbox),
                up([10, 0, 0, 3], DialFrom::Sandbox)
            ]
        );
        assert!(!r.ndots_set);
    }

    #[test]
    fn host_loopback_upstreams_are_dialled_from_the_host() {
        let host = "nameserver 127.0.0.1\nnameserver ::1\nnameserver 192.168.1.1\n";
        let r = user_network(host, &DnsSettings::default()).unwrap();
        assert_eq!(
            r.upstreams,
            [
                up([127, 0, 0, 1], DialFrom::Host),
                up([192, 168, 1, 1], DialFrom::Sandbox)
            ]
        );
        assert_eq!(r.contents, "nameserver 127.0.0.11\noptions ndots:0\n");
    }

    #[test]
    fn only_the_first_three_ipv4_servers_are_upstreams() {
        let host =
            "nameserver 1.1.1.1\nnameserver 2.2.2.2\nnameserver 3.3.3.3\nnameserver 4.4.4.4\n";
        let r = user_network(host, &DnsSettings::default()).unwrap();
        assert_eq!(r.upstreams.len(), 3);
        assert_eq!(r.upstreams[2], up([3, 3, 3, 3], DialFrom::Sandbox));
    }

    #[test]
    fn loopback_only_host_gets_docker_fallback_in_the_file() {
        // The host upstream stays (dialled from the host); the file gets
        // the IPv6 half of the fallback that FilterResolvDNS appended.
        let r = user_network("nameserver 127.0.0.53\n", &DnsSettings::default()).unwrap();
        assert_eq!(r.upstreams, [up([127, 0, 0, 53], DialFrom::Host)]);
        assert_eq!(
            r.contents,
            "nameserver 127.0.0.11\n\
             nameserver 2001:4860:4860::8888\n\
             nameserver 2001:4860:4860::8844\n\
             options ndots:0\n"
        );
        // A host without any nameserver: the fallback is also the upstream.
        let r = user_network("", &DnsSettings::default()).unwrap();
        assert_eq!(
            r.upstreams,
            [
                up([8, 8, 8, 8], DialFrom::Sandbox),
                up([8, 8, 4, 4], DialFrom::Sandbox)
            ]
        );
    }

    #[test]
    fn user_flags_replace_host_values() {
        // Observed: --dns-option ndots:2 --dns-search example.com.
        let settings = DnsSettings {
            search: vec!["example.com".into()],
            options: vec!["ndots:2".into()],
            ..DnsSettings::default()
        };
        let r = user_network(HOST, &settings).unwrap();
        assert_eq!(
            r.contents,
            "search example.com\nnameserver 127.0.0.11\nnameserver 2001:db8::53\noptions ndots:2\n"
        );
        assert!(r.ndots_set);
        // Host servers kept, but now dialled from the sandbox.
        assert_eq!(r.upstreams[0], up([10, 0, 0, 2], DialFrom::Sandbox));

        let settings = DnsSettings {
            servers: vec!["127.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            ..DnsSettings::default()
        };
        let r = user_network(HOST, &settings).unwrap();
        assert_eq!(r.upstreams, [up([127, 0, 0, 1], DialFrom::Sandbox)]);
        assert_eq!(
            r.contents,
            "search corp.example lab.example\nnameserver 127.0.0.11\nnameserver 2001:db8::1\n\
             options edns0 rotate ndots:0\n"
        );

        // A search list of "." writes no search line.
        let settings = DnsSettings {
            search: vec![".".into()],
            ..DnsSettings::default()
        };
        let r = user_network("nameserver 1.1.1.1\n", &settings).unwrap();
        assert_eq!(r.contents, "nameserver 127.0.0.11\noptions ndots:0\n");
    }

    #[test]
    fn ndots_from_host_is_kept_and_bad_values_are_refused() {
        let r = user_network(
            "nameserver 1.1.1.1\noptions ndots:3 timeout:1\n",
            &DnsSettings::default(),
        )
        .unwrap();
        assert_eq!(
            r.contents,
            "nameserver 127.0.0.11\noptions ndots:3 timeout:1\n"
        );
        assert!(r.ndots_set);

        let r = user_network("options ndots:0\n", &DnsSettings::default()).unwrap();
        assert!(r.ndots_set, "an explicit ndots:0 counts as set");

        let bad = |opt: &str| {
            let settings = DnsSettings {
                options: vec![opt.into()],
                ..DnsSettings::default()
            };
            user_network("", &settings).unwrap_err().to_string()
        };
        assert_eq!(
            bad("ndots:foobar"),
            "invalid number for ndots option: foobar"
        );
        assert_eq!(bad("ndots:-1"), "invalid number for ndots option: -1");
        assert_eq!(bad("ndots"), "invalid ndots option ndots");
        assert_eq!(bad("ndots:1:2"), "invalid ndots option ndots:1:2");
    }

    #[test]
    fn default_bridge_copies_host_without_loopback() {
        let host = "# comment\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\n\
                    nameserver 2001:db8::53\nsearch x\n";
        assert_eq!(
            default_bridge(host, &DnsSettings::default(), false),
            "# comment\nnameserver 10.0.0.2\nsearch x\n"
        );
        assert_eq!(
            default_bridge(host, &DnsSettings::default(), true),
            "# comment\nnameserver 10.0.0.2\nnameserver 2001:db8::53\nsearch x\n"
        );
    }

    #[test]
    fn default_bridge_falls_back_to_google() {
        let host = "nameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(
            default_bridge(host, &DnsSettings::default(), false),
            "options edns0\n\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            default_bridge(host, &DnsSettings::default(), true),
            "options edns0\n\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844"
        );
        // Only IPv6 servers and IPv6 off: they go, and the fallback comes.
        assert_eq!(
            default_bridge("nameserver 2001:db8::1\n", &DnsSettings::default(), false),
            "\nnameserver 8.8.8.8\nnameserver 8.8.4.4"
        );
    }

    #[test]
    fn default_bridge_with_flags_is_built_from_them() {
        let settings = DnsSettings {
            servers: vec!["127.0.0.1".parse().unwrap()],
            ..DnsSettings::default()
        };
        assert_eq!(
            default_bridge(HOST, &settings, false),
            "search corp.example lab.example\nnameserver 127.0.0.1\noptions edns0 rotate\n"
        );
    }

    #[test]
    fn host_network_is_verbatim() {
        assert_eq!(host_network(HOST), HOST);
    }

    #[test]
    fn filter_follows_go_regexp_quirks() {
        // Whitespace after a removed line is swallowed, indentation included.
        assert_eq!(
            filter("nameserver 127.0.0.1\n\n  nameserver 1.1.1.1\n", true),
            "nameserver 1.1.1.1\n"
        );
        // Indented loopback lines are not removed (the pattern is anchored
        // at the line start) but still count as nameservers.
        assert_eq!(
            filter(" nameserver 127.0.0.1\n", true),
            " nameserver 127.0.0.1\n"
        );
        // `::1` must end its line.
        assert_eq!(
            filter("nameserver ::1 \nnameserver ::1\nnameserver 1.1.1.1", true),
            "nameserver ::1 \nnameserver 1.1.1.1"
        );
        assert_eq!(
            filter("nameserver fe80::1%eth0\nnameserver 1.1.1.1\n", false),
            "nameserver 1.1.1.1\n"
        );
    }
}
