//! Names as Docker's resolver sees them: presentation text, the
//! `name.network` split, and the reverse-address keys of PTR lookups.
//!
//! Docker works on miekg/dns's presentation form of the query name (labels
//! joined by dots, special bytes escaped, trailing dot). Reproducing that
//! text, rather than comparing wire labels, keeps the corner cases equal:
//! a label holding a dot never matches a `name.network` split, and the PTR
//! suffix test is case-sensitive exactly as `strings.HasSuffix` is.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The presentation form of `name` without its trailing dot, as miekg/dns
/// prints it: `.`, `\`, `"`, `(`, `)`, `;`, `@`, `$` and space are
/// backslash-escaped, other bytes outside printable ASCII become `\DDD`.
/// The root name is the empty string.
pub(crate) fn text(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' | b' ' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
    }
    out
}

/// The (name, network) pairs Docker tries for a query name, in order
/// (`sandbox.ResolveName`): the whole name on every network, then for
/// each dot from the right, the part before it on the network named by the
/// part after it. `a.b.c` gives `(a.b.c, -)`, `(a.b, c)`, `(a, b.c)`.
pub(crate) fn candidates(name: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = vec![(name, None)];
    let mut rest = name;
    while let Some(i) = rest.rfind('.') {
        out.push((&name[..i], Some(&name[i + 1..])));
        rest = &rest[..i];
    }
    out
}

/// The lookup key of a registered name: Docker lower-cases names on insert
/// and on lookup (`strings.ToLower`), and trims one trailing dot.
pub(crate) fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_lowercase()
}

/// The PTR key of an IPv4 address: its octets reversed, `172.17.0.2` →
/// `2.0.17.172` (Docker's `netutils.ReverseIP`).
pub(crate) fn reverse_v4(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}")
}

/// The PTR key of an IPv6 address: its 32 nibbles in lower-case hex,
/// least significant first, joined by dots (the part of the name before
/// `.ip6.arpa.`).
pub(crate) fn reverse_v6(ip: Ipv6Addr) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(63);
    for (i, byte) in ip.octets().iter().rev().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        out.push('.');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
    }
    out
}

/// Where a PTR name points, after Docker's suffix test.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PtrName<'a> {
    /// Under `.in-addr.arpa.` or `.ip6.arpa.`: the reversed address before
    /// the first occurrence of the suffix (`strings.Split(..)[0]`).
    Key(&'a str),
    /// Neither suffix: Docker logs "invalid PTR query" and does not reply.
    Malformed,
}

/// Splits a PTR query name (presentation text with its trailing dot) the
/// way Docker's `handlePTRQuery` does. The suffix test is case-sensitive.
pub(crate) fn ptr_key(fqdn: &str) -> PtrName<'_> {
    const V4: &str = ".in-addr.arpa.";
    const V6: &str = ".ip6.arpa.";
    let suffix = if fqdn.ends_with(V4) {
        V4
    } else if fqdn.ends_with(V6) {
        V6
    } else {
        return PtrName::Malformed;
    };
    match fqdn.find(suffix) {
        Some(i) => PtrName::Key(&fqdn[..i]),
        None => PtrName::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_miekg_presentation() {
        let n = Name::from_ascii("Ref-A1.ref-dnet.").unwrap();
        assert_eq!(text(&n), "Ref-A1.ref-dnet");
        assert_eq!(text(&Name::root()), "");
        let odd = Name::from_labels(vec![&b"a.b"[..], &b"c d"[..], &[0x01, b'x'][..]]).unwrap();
        assert_eq!(text(&odd), "a\\.b.c\\ d.\\001x");
    }

    #[test]
    fn candidates_split_from_the_right() {
        assert_eq!(candidates("a"), [("a", None)]);
        assert_eq!(
            candidates("a.b.c"),
            [("a.b.c", None), ("a.b", Some("c")), ("a", Some("b.c"))]
        );
    }

    #[test]
    fn keys_are_lowercase_without_trailing_dot() {
        assert_eq!(key("Ref-A1."), "ref-a1");
        assert_eq!(key("x"), "x");
    }

    #[test]
    fn reverse_keys() {
        assert_eq!(reverse_v4(Ipv4Addr::new(172, 17, 0, 2)), "2.0.17.172");
        let v6: Ipv6Addr = "fd00:dead:beef::2".parse().unwrap();
        assert_eq!(
            reverse_v6(v6),
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.e.e.b.d.a.e.d.0.0.d.f"
        );
    }

    #[test]
    fn ptr_suffixes_are_case_sensitive() {
        assert_eq!(
            ptr_key("2.0.17.172.in-addr.arpa."),
            PtrName::Key("2.0.17.172")
        );
        assert_eq!(ptr_key("1.ip6.arpa."), PtrName::Key("1"));
        assert_eq!(ptr_key("2.0.17.172.IN-ADDR.ARPA."), PtrName::Malformed);
        assert_eq!(ptr_key("in-addr.arpa."), PtrName::Malformed);
        assert_eq!(ptr_key("example.com."), PtrName::Malformed);
        assert_eq!(ptr_key("1.in-addr.arpa.in-addr.arpa."), PtrName::Key("1"));
    }
}
