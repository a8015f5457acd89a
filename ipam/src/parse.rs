//! Parsing of the untrusted text the API hands us, with Docker's error texts.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

use crate::error::IpamError;

/// Parses `a.b.c.d/n`, keeping host bits (the caller masks when it wants the
/// network, and keeps the text when it wants the subnet "as typed").
pub(crate) fn cidr_v4(text: &str) -> Result<Ipv4Net, IpamError> {
    match Ipv4Net::from_str(text) {
        Ok(net) => Ok(net),
        Err(_) if IpNet::from_str(text).is_ok() => Err(IpamError::Ipv6NotSupported {
            value: text.to_owned(),
        }),
        Err(_) => Err(IpamError::InvalidCidr {
            value: text.to_owned(),
        }),
    }
}

/// Parses an address; an IPv4-mapped IPv6 address counts as IPv4, as Go's
/// `net.ParseIP` treats it.
pub(crate) fn ip(text: &str) -> Option<IpAddr> {
    IpAddr::from_str(text).ok().map(|a| a.to_canonical())
}

/// What the docker CLI's `subnetMatches(subnet, data)` sees in `data`: the
/// address of a CIDR when `data` has a `/` (a CIDR that does not parse is an
/// error), else the address itself (text that does not parse matches
/// nothing).
pub(crate) enum Matched {
    /// A plain address inside the subnet.
    Address(Ipv4Addr),
    /// A CIDR whose address is inside the subnet. The CLI accepts it; the
    /// daemon then cannot use it as an address.
    Cidr,
    /// Not inside the subnet, or not an address.
    No,
}

/// The CLI's `subnetMatches`, for a gateway or an auxiliary address.
pub(crate) fn matches_subnet(subnet: Ipv4Net, data: &str) -> Result<Matched, IpamError> {
    if data.contains('/') {
        let inside = match IpNet::from_str(data) {
            Ok(IpNet::V4(net)) => subnet.contains(&net.addr()),
            Ok(IpNet::V6(net)) => match net.addr().to_canonical() {
                IpAddr::V4(a) => subnet.contains(&a),
                IpAddr::V6(_) => false,
            },
            Err(_) => {
                return Err(IpamError::InvalidCidr {
                    value: data.to_owned(),
                });
            }
        };
        return Ok(if inside { Matched::Cidr } else { Matched::No });
    }
    Ok(match ip(data) {
        Some(IpAddr::V4(a)) if subnet.contains(&a) => Matched::Address(a),
        _ => Matched::No,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_keeps_host_bits_and_names_bad_text() {
        assert_eq!(cidr_v4("10.78.0.5/24").unwrap().to_string(), "10.78.0.5/24");
        for bad in ["10.0.0.0", "10.0.0.0/33", "nonsense", "", "10.0.0.0/-1"] {
            assert_eq!(
                cidr_v4(bad).unwrap_err().to_string(),
                format!("invalid CIDR address: {bad}")
            );
        }
        assert!(matches!(
            cidr_v4("fd00::/64"),
            Err(IpamError::Ipv6NotSupported { .. })
        ));
    }

    #[test]
    fn subnet_matches_like_the_cli() {
        let subnet: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        assert!(matches!(
            matches_subnet(subnet, "10.0.0.1"),
            Ok(Matched::Address(_))
        ));
        assert!(matches!(
            matches_subnet(subnet, "::ffff:10.0.0.1"),
            Ok(Matched::Address(_))
        ));
        assert!(matches!(
            matches_subnet(subnet, "10.0.0.1/24"),
            Ok(Matched::Cidr)
        ));
        assert!(matches!(
            matches_subnet(subnet, "10.0.1.1"),
            Ok(Matched::No)
        ));
        assert!(matches!(matches_subnet(subnet, "bogus"), Ok(Matched::No)));
        assert!(matches!(matches_subnet(subnet, "fd00::1"), Ok(Matched::No)));
        assert_eq!(
            matches_subnet(subnet, "10.0.0.1/99")
                .err()
                .unwrap()
                .to_string(),
            "invalid CIDR address: 10.0.0.1/99"
        );
    }
}
