//! `vsctl trace`: "why can't web reach db?" answered by the switch itself
//! (Open vSwitch's `ofproto/trace`).
//!
//! The daemon builds the frame the sandbox would send ([`build_frame`]):
//! its MAC and address as source, the destination's MAC resolved as the
//! sandbox would (a neighbour on the network, the gateway for anything off
//! the subnet, an ARP request for an address nobody holds), then hands it
//! to the worker that polls the sandbox's port, which runs it through a
//! copy of its switch ([`crate::switch::DryRun`]): the real pipeline, with
//! no learning, no counter moved and nothing sent. [`explain`] turns the
//! pipeline's steps into lines that name ports by sandbox and network.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};

use crate::control::ControlError;
use crate::control::model::{Endpoint, Model};
use crate::ids::{MacAddr, PortId};
use crate::switch::{Action, DropReason, DryRun, SwitchConfig, TraceEvent};

/// `POST /v1/trace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// The sending sandbox (name or id); with `Frame`, may be left out to
    /// take the endpoint whose MAC is the frame's source.
    #[serde(rename = "Sandbox", default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Its interface (default: its first, by name).
    #[serde(rename = "Interface", default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Destination: an IPv4 address or a MAC.
    #[serde(rename = "Dst", default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Source override, an IPv4 address or a MAC (to see a spoofed frame
    /// refused).
    #[serde(rename = "Src", default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// `icmp` (default), `tcp` or `udp`.
    #[serde(rename = "Proto", default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination port for tcp (default 80) and udp (default 53).
    #[serde(rename = "Dport", default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// An exact frame, in hex, instead of one built from the above.
    #[serde(rename = "Frame", default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

/// A port, named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRef {
    /// The switch port.
    #[serde(rename = "Port")]
    pub port: u32,
    /// The sandbox it belongs to (empty for an uplink).
    #[serde(rename = "Sandbox")]
    pub sandbox: String,
    /// Its interface in the sandbox.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// Its network.
    #[serde(rename = "Network")]
    pub network: String,
}

/// One decision of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The stage: `ingress`, `learn`, `gateway`, `policy`, `fdb`,
    /// `output`, `drop`.
    #[serde(rename = "Stage")]
    pub stage: String,
    /// What it decided and why.
    #[serde(rename = "Detail")]
    pub detail: String,
}

/// What `vsctl trace` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReport {
    /// The port the frame entered on.
    #[serde(rename = "Ingress")]
    pub ingress: PortRef,
    /// The frame traced, in hex.
    #[serde(rename = "Frame")]
    pub frame: String,
    /// Each decision, in order.
    #[serde(rename = "Steps")]
    pub steps: Vec<Step>,
    /// `output`, `flood`, `local` (answered by the gateway) or `drop`.
    #[serde(rename = "Verdict")]
    pub verdict: String,
    /// Why: a drop reason, `gateway`, or `unknown_destination` for a flood.
    #[serde(rename = "Reason")]
    pub reason: String,
    /// The ports the frame leaves on.
    #[serde(rename = "Outputs")]
    pub outputs: Vec<PortRef>,
}

/// A bad trace request.
fn invalid(message: impl Into<String>) -> ControlError {
    ControlError::Unsupported(message.into())
}

/// Names `port` from the model.
#[must_use]
pub fn port_ref(model: &Model, port: PortId) -> PortRef {
    model.endpoints.iter().find(|e| e.port == port).map_or(
        PortRef {
            port: port.0,
            ..PortRef::default()
        },
        |e| PortRef {
            port: port.0,
            sandbox: model
                .sandbox(&e.sandbox)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            interface: e.ifname.clone(),
            network: model
                .network(e.network)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
        },
    )
}

/// The endpoint the traced frame enters from.
///
/// # Errors
/// [`ControlError::SandboxNotFound`]; a 400 when the sandbox has no such
/// interface or nothing names the ingress.
pub fn ingress<'m>(
    model: &'m Model,
    request: &TraceRequest,
    frame: Option<&[u8]>,
) -> Result<&'m Endpoint, ControlError> {
    let Some(term) = &request.sandbox else {
        let src = frame
            .and_then(|f| MacAddr::from_slice(f.get(6..12)?))
            .ok_or_else(|| invalid("name the sandbox, or give a frame of at least 12 bytes"))?;
        return model
            .endpoints
            .iter()
            .find(|e| e.mac == src)
            .ok_or_else(|| {
                invalid(format!(
                    "no endpoint has the frame's source MAC {src}; name the sandbox"
                ))
            });
    };
    let sandbox = model
        .sandboxes
        .iter()
        .find(|s| &s.name == term || &s.id == term)
        .or_else(|| {
            let mut by_prefix = model
                .sandboxes
                .iter()
                .filter(|s| s.id.starts_with(term.as_str()));
            match (by_prefix.next(), by_prefix.next()) {
                (Some(s), None) => Some(s),
                _ => None,
            }
        })
        .ok_or_else(|| ControlError::SandboxNotFound(term.clone()))?;
    let mut eps: Vec<&Endpoint> = model
        .endpoints
        .iter()
        .filter(|e| e.sandbox == sandbox.id)
        .collect();
    eps.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    match &request.interface {
        Some(ifname) => eps
            .into_iter()
            .find(|e| &e.ifname == ifname)
            .ok_or_else(|| {
                invalid(format!(
                    "sandbox {} has no interface {ifname}",
                    sandbox.name
                ))
            }),
        None => eps.into_iter().next().ok_or_else(|| {
            invalid(format!(
                "sandbox {} is connected to no network",
                sandbox.name
            ))
        }),
    }
}

/// Parses a hex frame (spaces, colons and a `0x` prefix allowed).
///
/// # Errors
/// A 400 for anything but an even number of hex digits.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, ControlError> {
    let digits: Vec<u8> = text
        .trim()
        .trim_start_matches("0x")
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'\n' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) || digits.is_empty() {
        return Err(invalid(
            "the frame must be an even, non-zero number of hex digits",
        ));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| invalid("the frame must be hex digits"))
        })
        .collect()
}

/// The frame `ep` would send for `request`, and notes on how its
/// destination was resolved (a policy step, when the destination is a
/// sandbox on a network `ep` is not on).
///
/// # Errors
/// A 400 for a destination or source that is neither an IPv4 address nor
/// a MAC, an unknown protocol, or a missing destination.
pub fn build_frame(
    model: &Model,
    config: &SwitchConfig,
    ep: &Endpoint,
    request: &TraceRequest,
) -> Result<(Vec<u8>, Vec<Step>), ControlError> {
    let mut notes = Vec::new();
    let gateway = config.network(ep.network).and_then(|n| n.gateway);
    let (mut src_mac, mut src_ip) = (ep.mac, ep.ipv4);
    if let Some(src) = &request.src {
        if let Ok(ip) = src.parse::<Ipv4Addr>() {
            src_ip = ip;
        } else if let Ok(mac) = src.parse::<MacAddr>() {
            src_mac = mac;
        } else {
            return Err(invalid(format!(
                "--src {src:?} is neither an IPv4 address nor a MAC"
            )));
        }
    }
    let dst = request
        .dst
        .as_deref()
        .ok_or_else(|| invalid("give a destination (--dst IP|MAC) or a frame (--frame HEX)"))?;
    let net_name = |id| {
        model
            .network(id)
            .map_or_else(String::new, |n| n.name.clone())
    };
    let (dst_mac, dst_ip) = if let Ok(ip) = dst.parse::<Ipv4Addr>() {
        let same_net = model
            .endpoints
            .iter()
            .find(|e| e.network == ep.network && e.ipv4 == ip);
        let in_subnet = in_prefix(ip, ep.ipv4, ep.prefix_len);
        if let Some(peer) = same_net {
            notes.push(Step {
                stage: "resolve".to_owned(),
                detail: format!(
                    "{ip} is {} on {}: to {}",
                    name_of(model, peer),
                    net_name(ep.network),
                    peer.mac
                ),
            });
            (Some(peer.mac), ip)
        } else if gateway.is_some_and(|g| g.ip == ip) || !in_subnet {
            let Some(gw) = gateway else {
                return Err(invalid(format!(
                    "{ip} is off the subnet and the network has no gateway"
                )));
            };
            if let Some(other) = model
                .endpoints
                .iter()
                .find(|e| e.ipv4 == ip && e.network != ep.network)
            {
                notes.push(Step {
                    stage: "policy".to_owned(),
                    detail: format!(
                        "isolation: {ip} is {} on network {}, which {} is not connected to; networks are isolated from each other",
                        name_of(model, other),
                        net_name(other.network),
                        name_of(model, ep)
                    ),
                });
            }
            notes.push(Step {
                stage: "resolve".to_owned(),
                detail: if gw.ip == ip {
                    format!(
                        "{ip} is the gateway of {}: to {}",
                        net_name(ep.network),
                        gw.mac
                    )
                } else {
                    format!(
                        "{ip} is off the subnet: routed through the gateway {} ({})",
                        gw.ip, gw.mac
                    )
                },
            });
            (Some(gw.mac), ip)
        } else {
            notes.push(Step {
                stage: "resolve".to_owned(),
                detail: format!(
                    "no endpoint holds {ip} on {}: the sandbox sends an ARP request",
                    net_name(ep.network)
                ),
            });
            (None, ip)
        }
    } else if let Ok(mac) = dst.parse::<MacAddr>() {
        let ip = model
            .endpoints
            .iter()
            .find(|e| e.network == ep.network && e.mac == mac)
            .map(|e| e.ipv4)
            .or_else(|| gateway.filter(|g| g.mac == mac).map(|g| g.ip))
            .unwrap_or(Ipv4Addr::BROADCAST);
        (Some(mac), ip)
    } else {
        return Err(invalid(format!(
            "--dst {dst:?} is neither an IPv4 address nor a MAC"
        )));
    };

    let Some(dst_mac) = dst_mac else {
        return Ok((arp_request(src_mac, src_ip, dst_ip), notes));
    };
    let builder = etherparse::PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(
        src_ip.octets(),
        dst_ip.octets(),
        64,
    );
    let payload = [0u8; 32];
    let mut out = Vec::with_capacity(128);
    let written = match request.proto.as_deref().unwrap_or("icmp") {
        "icmp" => builder
            .icmpv4_echo_request(0x7463, 1)
            .write(&mut out, &payload),
        "tcp" => builder
            .tcp(40000, request.dport.unwrap_or(80), 1, 64240)
            .syn()
            .write(&mut out, &[]),
        "udp" => builder
            .udp(40000, request.dport.unwrap_or(53))
            .write(&mut out, &payload),
        other => return Err(invalid(format!("--proto {other:?}: tcp, udp or icmp"))),
    };
    written.map_err(|e| ControlError::internal("building the frame", e))?;
    Ok((out, notes))
}

fn in_prefix(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn arp_request(src_mac: MacAddr, src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 42];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&src_mac.0);
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac.0),
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
    frame
}

fn name_of(model: &Model, ep: &Endpoint) -> String {
    model
        .sandbox(&ep.sandbox)
        .map_or_else(|| ep.id.clone(), |s| s.name.clone())
}

fn age(d: Option<Duration>) -> String {
    d.map_or_else(|| "static".to_owned(), |d| format!("age {} s", d.as_secs()))
}

/// The report for `run`, naming ports from `model`; `notes` (from
/// [`build_frame`]) go first.
#[must_use]
pub fn explain(
    model: &Model,
    ingress: PortId,
    frame: &[u8],
    notes: Vec<Step>,
    run: &DryRun,
) -> TraceReport {
    let named = |p: PortId| {
        let r = port_ref(model, p);
        if r.sandbox.is_empty() {
            format!("port {}", p.0)
        } else {
            format!(
                "port {} ({} {}, network {})",
                p.0, r.sandbox, r.interface, r.network
            )
        }
    };
    let isolation = notes
        .iter()
        .any(|s| s.stage == "policy" && s.detail.starts_with("isolation"));
    let mut steps = notes;
    let step = |stage: &str, detail: String| Step {
        stage: stage.to_owned(),
        detail,
    };
    for e in &run.events {
        steps.push(match *e {
            TraceEvent::Received { port, len } => step("ingress", format!("{len} bytes on {}", named(port))),
            TraceEvent::IngressChecked { src, dst, ethertype, .. } => step(
                "ingress",
                format!("checks passed (size, source MAC and address are the port's): {src} > {dst}, ethertype 0x{ethertype:04x}"),
            ),
            TraceEvent::Learned { mac, outcome } => step(
                "learn",
                format!("{mac} on the ingress port: {outcome:?} (trace mode: nothing is learned)"),
            ),
            TraceEvent::Lookup { mac, port: Some(p) } => {
                step("fdb", format!("{mac} is at {} ({})", named(p), age(run.entry_age)))
            }
            TraceEvent::Lookup { mac, port: None } => step("fdb", format!("{mac} is unknown")),
            TraceEvent::GatewayArpReply => step("gateway", "ARP for the gateway: answered locally".to_owned()),
            TraceEvent::GatewayEchoReply => step("gateway", "ICMP echo to the gateway: answered locally".to_owned()),
            TraceEvent::ToL3 => step("gateway", "for the gateway's MAC, not for it: to the L3 stage".to_owned()),
            TraceEvent::Dropped(r) => step("drop", drop_detail(r)),
            TraceEvent::Decided(_) => continue,
        });
    }
    let (verdict, reason, outputs) = match run.action {
        Action::Output(p) => ("output", String::new(), vec![p]),
        Action::Reply(p) => ("local", "gateway".to_owned(), vec![p]),
        Action::Flood { .. } => (
            "flood",
            "unknown_destination".to_owned(),
            run.flooded.clone(),
        ),
        Action::Drop(DropReason::NoRoute) | Action::Host(_) if isolation => {
            ("drop", "isolation".to_owned(), Vec::new())
        }
        Action::Host(_) => ("host", "host_connector".to_owned(), Vec::new()),
        Action::Drop(r) => ("drop", r.as_str().to_owned(), Vec::new()),
    };
    let outputs: Vec<PortRef> = outputs.into_iter().map(|p| port_ref(model, p)).collect();
    match verdict {
        "output" => steps.push(step(
            "output",
            outputs.iter().map(describe).collect::<Vec<_>>().join(", "),
        )),
        "local" => steps.push(step(
            "output",
            format!("the gateway's reply, back to {}", named(ingress)),
        )),
        "host" => steps.push(step(
            "output",
            "to the host connector, which carries it through a host socket (policy permitting)"
                .to_owned(),
        )),
        "flood" => steps.push(step(
            "output",
            format!(
                "flooded to {} port(s): {}",
                outputs.len(),
                outputs.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
        )),
        _ => {}
    }
    TraceReport {
        ingress: port_ref(model, ingress),
        frame: frame.iter().map(|b| format!("{b:02x}")).collect(),
        steps,
        verdict: verdict.to_owned(),
        reason,
        outputs,
    }
}

fn describe(o: &PortRef) -> String {
    if o.sandbox.is_empty() {
        format!("port {}", o.port)
    } else {
        format!("port {} ({} {})", o.port, o.sandbox, o.interface)
    }
}

fn drop_detail(r: DropReason) -> String {
    let why = match r {
        DropReason::IccDisabled => {
            "ICC is off on this network: container-to-container traffic other than ARP is dropped"
        }
        DropReason::SrcMacSpoofed => "the source MAC is not the port's",
        DropReason::SrcIpSpoofed => "the source address is not the port's",
        DropReason::NoRoute => "for the gateway but not answered by it, and there is no route",
        DropReason::SamePort => "the destination is on the ingress port",
        _ => "",
    };
    if why.is_empty() {
        r.as_str().to_owned()
    } else {
        format!("{}: {why}", r.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_frames_are_parsed_and_bad_ones_refused() {
        assert_eq!(parse_hex("0x0a:0B ff").unwrap(), vec![0x0a, 0x0b, 0xff]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
    }

    #[test]
    fn prefixes() {
        let net = Ipv4Addr::new(10, 0, 0, 2);
        assert!(in_prefix(Ipv4Addr::new(10, 0, 0, 200), net, 24));
        assert!(!in_prefix(Ipv4Addr::new(10, 0, 1, 2), net, 24));
        assert!(in_prefix(Ipv4Addr::new(1, 2, 3, 4), net, 0));
    }

    #[test]
    fn arp_requests_are_well_formed() {
        let f = arp_request(
            MacAddr([2, 0x42, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 9),
        );
        let (eth, rest) = etherparse::Ethernet2Header::from_slice(&f).unwrap();
        assert_eq!(eth.destination, [0xff; 6]);
        assert_eq!(eth.ether_type, etherparse::EtherType::ARP);
        let arp = etherparse::ArpPacketSlice::from_slice(rest).unwrap();
        assert_eq!(arp.operation(), etherparse::ArpOperation::REQUEST);
        assert_eq!(arp.target_protocol_addr(), &[10, 0, 0, 9]);
        assert_eq!(arp.sender_hw_addr(), &[2, 0x42, 0, 0, 0, 2]);
    }
}
