//! A sandbox's published and exposed ports, between Docker's API shapes
//! (`HostConfig.PortBindings`, `Config.ExposedPorts`,
//! `NetworkSettings.Ports`) and the `nat` crate's allocator.
//!
//! Requests are checked when the sandbox is created, with the `-p`
//! parser's texts (docker-reference §4.1), and kept as Docker keeps them;
//! the host ports are chosen and bound when the sandbox gets the endpoint
//! that gives it external connectivity (§4.2, §4.5).

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet};

use nat::spec::{self, PortBinding, PortSpec, Proto, SpecError};

use super::model::{Endpoint, Network, Sandbox};
use super::types::{Empty, HostBinding, HostConfig, NetworkSettings, SandboxConfig};

/// Port bindings by `port/proto`, as Docker's `HostConfig.PortBindings`.
pub(super) type Bindings = BTreeMap<String, Vec<HostBinding>>;

/// `80/tcp`.
fn port_key(port: u16, proto: Proto) -> String {
    format!("{port}/{proto}")
}

/// A `port[/proto]` key as Docker's `nat.NewPort` reads it: one port, the
/// protocol case-insensitive and tcp by default.
fn parse_key(key: &str) -> Result<(u16, Proto), SpecError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    if port.contains(':') {
        return Err(SpecError::InvalidContainerPort(port.to_owned()));
    }
    let spec: PortSpec = format!("{port}/{proto}").parse()?;
    if !spec.container_ports.is_single() {
        return Err(SpecError::InvalidContainerPort(port.to_owned()));
    }
    Ok((spec.container_ports.start(), spec.proto))
}

/// One requested binding as the `-p` text it came from, parsed back with
/// the `-p` parser so the API refuses what the CLI refuses, with its texts.
fn parse_binding(port: u16, proto: Proto, b: &HostBinding) -> Result<PortBinding, SpecError> {
    let ip = if b.host_ip.contains(':') && !b.host_ip.starts_with('[') {
        format!("[{}]", b.host_ip)
    } else {
        b.host_ip.clone()
    };
    let text = match (ip.is_empty(), b.host_port.is_empty()) {
        (true, true) => format!("{port}/{proto}"),
        (true, false) => format!("{}:{port}/{proto}", b.host_port),
        (false, _) => format!("{ip}:{}:{port}/{proto}", b.host_port),
    };
    let spec: PortSpec = text.parse()?;
    spec.bindings()
        .into_iter()
        .next()
        .ok_or(SpecError::InvalidContainerPort(port.to_string()))
}

/// What a sandbox create asks for, checked and normalised: port bindings by
/// `port/proto`, and the exposed ports (`--expose`, plus every port `-p`
/// names, as Docker's `Config.ExposedPorts`), sorted by port.
///
/// # Errors
///
/// The `-p`/`--expose` parser's error for the first bad entry.
pub(super) fn requested(
    host_config: &HostConfig,
    exposed: &BTreeMap<String, Empty>,
) -> Result<(Bindings, Vec<String>), SpecError> {
    let mut bindings = BTreeMap::new();
    let mut all: BTreeSet<(u16, Proto)> = BTreeSet::new();
    for (key, list) in &host_config.port_bindings {
        let (port, proto) = parse_key(key)?;
        for b in list {
            parse_binding(port, proto, b)?;
        }
        all.insert((port, proto));
        let entry: &mut Vec<HostBinding> = bindings.entry(port_key(port, proto)).or_default();
        entry.extend(list.iter().cloned());
    }
    for key in exposed.keys() {
        all.extend(spec::parse_expose(key)?);
    }
    Ok((
        bindings,
        all.into_iter().map(|(p, pr)| port_key(p, pr)).collect(),
    ))
}

/// The bindings to publish for a sandbox, in the order they are allocated:
/// by container port and protocol, each port's bindings as given, then
/// (`-P`) a dynamic one for every exposed port that has none.
#[must_use]
pub(super) fn bindings(sb: &Sandbox) -> Vec<PortBinding> {
    let mut keyed: Vec<((u16, Proto), &Vec<HostBinding>)> = sb
        .port_bindings
        .iter()
        .filter_map(|(k, v)| parse_key(k).ok().map(|pp| (pp, v)))
        .collect();
    keyed.sort_by_key(|(pp, _)| *pp);
    let explicit: Vec<PortBinding> = keyed
        .into_iter()
        .flat_map(|((port, proto), list)| {
            let list: Vec<HostBinding> = if list.is_empty() {
                vec![HostBinding::default()]
            } else {
                list.clone()
            };
            list.into_iter()
                .filter_map(move |b| parse_binding(port, proto, &b).ok())
        })
        .collect();
    if !sb.publish_all {
        return explicit;
    }
    let exposed: Vec<(u16, Proto)> = sb
        .exposed_ports
        .iter()
        .filter_map(|k| parse_key(k).ok())
        .collect();
    spec::publish_all(&explicit, &exposed)
}

/// Whether the sandbox asks for any published port.
#[must_use]
pub(super) fn publishes(sb: &Sandbox) -> bool {
    !sb.port_bindings.is_empty() || (sb.publish_all && !sb.exposed_ports.is_empty())
}

/// The network's default host address for bindings without one.
#[must_use]
pub(super) fn host_binding_ipv4(net: &Network) -> Ipv4Addr {
    net.host_binding_ipv4()
}

/// `HostConfig`, `Config` and `NetworkSettings` as `docker inspect` shows
/// them for the sandbox.
#[must_use]
pub(super) fn views<'a>(
    sb: &Sandbox,
    endpoints: impl Iterator<Item = &'a Endpoint>,
) -> (HostConfig, SandboxConfig, NetworkSettings) {
    let mut ports: BTreeMap<String, Option<Vec<HostBinding>>> =
        sb.exposed_ports.iter().map(|k| (k.clone(), None)).collect();
    for e in endpoints {
        for p in &e.published {
            ports
                .entry(port_key(p.container_port, p.proto))
                .or_insert(None)
                .get_or_insert_with(Vec::new)
                .push(HostBinding {
                    host_ip: p.host_ip.to_string(),
                    host_port: p.host_port.to_string(),
                });
        }
    }
    (
        HostConfig {
            port_bindings: sb.port_bindings.clone(),
            publish_all_ports: sb.publish_all,
            network_mode: sb
                .network_mode
                .as_ref()
                .map(|m| m.network.clone())
                .unwrap_or_default(),
            dns: sb.dns.servers.iter().map(ToString::to_string).collect(),
            dns_search: sb.dns.search.clone(),
            dns_options: sb.dns.options.clone(),
        },
        SandboxConfig {
            hostname: sb.hostname.clone().unwrap_or_default(),
            exposed_ports: sb
                .exposed_ports
                .iter()
                .map(|k| (k.clone(), Empty {}))
                .collect(),
        },
        NetworkSettings { ports },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(ip: &str, port: &str) -> HostBinding {
        HostBinding {
            host_ip: ip.to_owned(),
            host_port: port.to_owned(),
        }
    }

    #[test]
    fn api_bindings_are_refused_with_the_cli_texts() {
        let cfg = |k: &str, b: HostBinding| HostConfig {
            port_bindings: [(k.to_owned(), vec![b])].into_iter().collect(),
            ..HostConfig::default()
        };
        let none = BTreeMap::new();
        let err = |c: HostConfig| requested(&c, &none).unwrap_err().to_string();
        assert_eq!(
            err(cfg("80/tcp", hb("", "70000"))),
            "invalid hostPort: 70000"
        );
        assert_eq!(
            err(cfg("80/tcp", hb("1.2.3", "80"))),
            "invalid IP address: 1.2.3"
        );
        assert_eq!(err(cfg("80/xyz", hb("", ""))), "invalid proto: xyz");
        assert_eq!(
            err(cfg("abc/tcp", hb("", ""))),
            "invalid containerPort: abc"
        );
        let (b, exposed) = requested(&cfg("80/TCP", hb("::1", "18080")), &none).unwrap();
        assert_eq!(b.keys().collect::<Vec<_>>(), ["80/tcp"]);
        assert_eq!(exposed, ["80/tcp"]);
    }

    #[test]
    fn publish_all_adds_every_exposed_port_without_a_binding() {
        let sb = Sandbox {
            id: "a".repeat(64),
            name: "s1".to_owned(),
            netns_path: String::new(),
            netns_owned: true,
            created: String::new(),
            next_ifindex: 0,
            netns_handle: None,
            external: false,
            port_bindings: [
                ("90/udp".to_owned(), vec![hb("", "18090")]),
                ("100/tcp".to_owned(), vec![hb("", "")]),
            ]
            .into_iter()
            .collect(),
            publish_all: true,
            exposed_ports: vec!["100/tcp".into(), "90/udp".into(), "99/tcp".into()],
            network_mode: None,
            dns: crate::control::model::SandboxDns::default(),
            hostname: None,
        };
        let got: Vec<(u16, Proto, bool)> = bindings(&sb)
            .iter()
            .map(|b| (b.container_port, b.proto, b.host_ports.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                (90, Proto::Udp, true),
                (100, Proto::Tcp, false),
                (99, Proto::Tcp, false)
            ]
        );
    }
}
