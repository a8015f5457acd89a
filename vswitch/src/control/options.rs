//! Docker's network options as the bridge driver reads them, with Go's
//! parsing rules and error texts, so `network create -o` accepts and
//! refuses what Docker does.

use core::net::IpAddr;

use super::error::ControlError;
use super::model::{
    self, OPT_ENABLE_ICC, OPT_ENABLE_IP_MASQUERADE, OPT_HOST_BINDING_IPV4, OPT_INHIBIT_IPV4,
    OPT_MTU,
};

/// The bridge driver's option parsing (libnetwork `bridge.go`
/// `parseNetworkGenericOptions`): ICC and MTU are used, the masquerade,
/// host-binding and inhibit options are checked; the rest is kept as given.
pub(super) fn parse_options(
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(bool, u16), ControlError> {
    let mut icc = true;
    let mut mtu = model::DEFAULT_MTU;
    for (label, value) in options {
        let err = |reason: String| ControlError::InvalidOption {
            label: label.clone(),
            value: value.clone(),
            reason,
        };
        match label.as_str() {
            OPT_ENABLE_ICC => icc = go_parse_bool(value).map_err(err)?,
            OPT_ENABLE_IP_MASQUERADE | OPT_INHIBIT_IPV4 => {
                go_parse_bool(value).map_err(err)?;
            }
            OPT_HOST_BINDING_IPV4 => {
                value
                    .parse::<IpAddr>()
                    .map_err(|_| err("nil ip".to_owned()))?;
            }
            OPT_MTU => {
                let n = go_atoi(value).map_err(err)?;
                mtu = match n {
                    0 => model::DEFAULT_MTU,
                    68..=65535 => u16::try_from(n).map_err(|_| ControlError::InvalidMtu(n))?,
                    _ => return Err(ControlError::InvalidMtu(n)),
                };
            }
            _ => {}
        }
    }
    Ok((icc, mtu))
}

/// Go's `strconv.ParseBool`, with its error text.
pub(super) fn go_parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

/// Go's `strconv.Atoi` on 64-bit, with its error texts.
fn go_atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {s:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_atoi_texts() {
        assert_eq!(go_atoi("1400"), Ok(1400));
        assert_eq!(go_atoi("-5"), Ok(-5));
        assert_eq!(go_atoi("+7"), Ok(7));
        assert_eq!(
            go_atoi("abc").unwrap_err(),
            r#"strconv.Atoi: parsing "abc": invalid syntax"#
        );
        assert_eq!(
            go_atoi("").unwrap_err(),
            r#"strconv.Atoi: parsing "": invalid syntax"#
        );
        assert_eq!(
            go_atoi("99999999999999999999").unwrap_err(),
            r#"strconv.Atoi: parsing "99999999999999999999": value out of range"#
        );
    }

    #[test]
    fn go_parse_bool_texts() {
        assert_eq!(go_parse_bool("T"), Ok(true));
        assert_eq!(go_parse_bool("0"), Ok(false));
        assert_eq!(
            go_parse_bool("yes").unwrap_err(),
            r#"strconv.ParseBool: parsing "yes": invalid syntax"#
        );
    }
}
