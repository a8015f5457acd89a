//! The static peer file: a fixed set of hosts, no etcd.
//!
//! The same TOML file on every host lists the VTEPs and the overlay
//! networks; each host finds itself in it by its `--vtep` address and
//! turns the rest into [`PeerEvent`]s. Networks from the file learn remote
//! MACs from traffic and replicate broadcast and unknown unicast to every
//! other VTEP listed for them; endpoints may be pinned, which also makes
//! ARP for them answered locally. IPAM is not shared: give each host its
//! own `--ip-range` slice of each subnet so addresses never collide.
//!
//! ```toml
//! port = 4789                       # optional, the VXLAN UDP port
//!
//! [[vtep]]
//! name = "host-a"                   # shown by `vsctl show-vteps`
//! address = "192.0.2.1"             # its underlay (VTEP) address
//!
//! [[vtep]]
//! name = "host-b"
//! address = "192.0.2.2"
//!
//! [[network]]
//! vni = 4096
//! name = "ov1"                      # optional, the Docker network name
//! vteps = ["192.0.2.1", "192.0.2.2"] # optional, default: every VTEP
//!
//! [[network.endpoint]]              # optional, pinned remote endpoints
//! mac = "02:42:0a:00:00:02"
//! ip = "10.0.0.2"                   # optional
//! vtep = "192.0.2.2"
//! ```
//!
//! TOML because operators write this file by hand: comments, and errors
//! that name the line.

use core::net::Ipv4Addr;
use std::collections::HashSet;

use serde::Deserialize;
use smoltcp::wire::EthernetAddress;

use crate::peers::{PeerEvent, RemoteEndpoint};
use crate::wire::{self, Vni};

/// A parsed, validated peer file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFile {
    /// The VXLAN UDP port.
    pub port: u16,
    /// Every host.
    pub vteps: Vec<VtepSpec>,
    /// Every overlay network.
    pub networks: Vec<NetworkSpec>,
}

/// A host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtepSpec {
    /// Its name.
    pub name: String,
    /// Its VTEP address.
    pub address: Ipv4Addr,
}

/// A network, its VTEPs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Its VNI.
    pub vni: Vni,
    /// Its name, if given.
    pub name: Option<String>,
    /// VTEPs taking part.
    pub vteps: Vec<Ipv4Addr>,
    /// Pinned endpoints.
    pub endpoints: Vec<RemoteEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    port: Option<u16>,
    #[serde(default, rename = "vtep")]
    vteps: Vec<VtepSpec>,
    #[serde(default, rename = "network")]
    networks: Vec<RawNetwork>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    vni: Vni,
    name: Option<String>,
    vteps: Option<Vec<Ipv4Addr>>,
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(deserialize_with = "unicast_mac")]
    mac: EthernetAddress,
    ip: Option<Ipv4Addr>,
    vtep: Ipv4Addr,
}

fn unicast_mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EthernetAddress, D::Error> {
    let s = String::deserialize(d)?;
    let mac = parse_mac(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("invalid MAC address {s:?}")))?;
    if !mac.is_unicast() || mac.as_bytes() == [0; 6] {
        return Err(serde::de::Error::custom(format!(
            "MAC address {s} is not unicast"
        )));
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`, case-insensitive.
fn parse_mac(s: &str) -> Option<EthernetAddress> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut b {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(EthernetAddress(b))
}

/// A peer file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerFileError {
    /// Not TOML, or not the expected shape (the message names the line).
    #[error("peer file: {0}")]
    Syntax(#[from] toml::de::Error),
    /// Port 0.
    #[error("peer file: port 0 is not a UDP port")]
    ZeroPort,
    /// Two `[[vtep]]` with one address.
    #[error("peer file: VTEP {0} is listed twice")]
    DuplicateVtep(Ipv4Addr),
    /// Two `[[vtep]]` with one name.
    #[error("peer file: VTEP name {0:?} is used twice")]
    DuplicateName(String),
    /// Two `[[network]]` with one VNI.
    #[error("peer file: VNI {0} is listed twice")]
    DuplicateVni(Vni),
    /// A network or endpoint names a VTEP that is not listed.
    #[error("peer file: network {vni} names VTEP {vtep}, which is not a [[vtep]]")]
    UnknownVtep {
        /// The network.
        vni: Vni,
        /// The address.
        vtep: Ipv4Addr,
    },
    /// An endpoint behind a VTEP that does not take part in its network.
    #[error(
        "peer file: network {vni} has an endpoint behind VTEP {vtep}, which is not in its vteps"
    )]
    EndpointOutside {
        /// The network.
        vni: Vni,
        /// The address.
        vtep: Ipv4Addr,
    },
    /// Two endpoints with one MAC in a network.
    #[error("peer file: network {vni} lists MAC {mac} twice")]
    DuplicateMac {
        /// The network.
        vni: Vni,
        /// The MAC.
        mac: EthernetAddress,
    },
    /// Two endpoints with one IP in a network.
    #[error("peer file: network {vni} lists IP {ip} twice")]
    DuplicateIp {
        /// The network.
        vni: Vni,
        /// The address.
        ip: Ipv4Addr,
    },
    /// This host's address is not among the VTEPs.
    #[error("peer file: this host's VTEP address {0} is not listed")]
    LocalNotListed(Ipv4Addr),
}

impl PeerFile {
    /// Parses and validates a peer file.
    pub fn parse(text: &str) -> Result<Self, PeerFileError> {
        let raw: RawFile = toml::from_str(text)?;
        let port = raw.port.unwrap_or(wire::DEFAULT_PORT);
        if port == 0 {
            return Err(PeerFileError::ZeroPort);
        }
        let mut addrs = HashSet::new();
        let mut names = HashSet::new();
        for v in &raw.vteps {
            if !addrs.insert(v.address) {
                return Err(PeerFileError::DuplicateVtep(v.address));
            }
            if !names.insert(v.name.as_str()) {
                return Err(PeerFileError::DuplicateName(v.name.clone()));
            }
        }
        let mut vnis = HashSet::new();
        let mut networks = Vec::with_capacity(raw.networks.len());
        for n in raw.networks {
            let vni = n.vni;
            if !vnis.insert(vni) {
                return Err(PeerFileError::DuplicateVni(vni));
            }
            let vteps = match n.vteps {
                Some(list) => {
                    let mut seen = HashSet::new();
                    let mut out = Vec::new();
                    for vtep in list {
                        if !addrs.contains(&vtep) {
                            return Err(PeerFileError::UnknownVtep { vni, vtep });
                        }
                        if seen.insert(vtep) {
                            out.push(vtep);
                        }
                    }
                    out
                }
                None => raw.vteps.iter().map(|v| v.address).collect(),
            };
            let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
            let mut endpoints = Vec::with_capacity(n.endpoints.len());
            for e in n.endpoints {
                if !addrs.contains(&e.vtep) {
                    return Err(PeerFileError::UnknownVtep { vni, vtep: e.vtep });
                }
                if !vteps.contains(&e.vtep) {
                    return Err(PeerFileError::EndpointOutside { vni, vtep: e.vtep });
                }
                if !macs.insert(e.mac) {
                    return Err(PeerFileError::DuplicateMac { vni, mac: e.mac });
                }
                if let Some(ip) = e.ip
                    && !ips.insert(ip)
                {
                    return Err(PeerFileError::DuplicateIp { vni, ip });
                }
                endpoints.push(RemoteEndpoint {
                    vni,
                    mac: e.mac,
                    ip: e.ip,
                    vtep: e.vtep,
                });
            }
            networks.push(NetworkSpec {
                vni,
                name: n.name,
                vteps,
                endpoints,
            });
        }
        Ok(Self {
            port,
            vteps: raw.vteps,
            networks,
        })
    }

    /// The events that give host `local` its view: every other VTEP up,
    /// joined to its networks, and the pinned endpoints behind them. The
    /// daemon first adds, as learning networks, the networks
    /// [`PeerFile::networks_of`] gives for `local`.
    pub fn events(&self, local: Ipv4Addr) -> Result<Vec<PeerEvent>, PeerFileError> {
        if !self.vteps.iter().any(|v| v.address == local) {
            return Err(PeerFileError::LocalNotListed(local));
        }
        let mut out: Vec<PeerEvent> = self
            .vteps
            .iter()
            .filter(|v| v.address != local)
            .map(|v| PeerEvent::VtepUp {
                vtep: v.address,
                name: v.name.clone(),
            })
            .collect();
        for n in self.networks_of(local) {
            out.extend(
                n.vteps
                    .iter()
                    .filter(|&&v| v != local)
                    .map(|&vtep| PeerEvent::Join { vni: n.vni, vtep }),
            );
            out.extend(
                n.endpoints
                    .iter()
                    .filter(|e| e.vtep != local)
                    .map(|e| PeerEvent::EndpointAdd(*e)),
            );
        }
        Ok(out)
    }

    /// The networks host `local` takes part in.
    pub fn networks_of(&self, local: Ipv4Addr) -> impl Iterator<Item = &NetworkSpec> {
        self.networks
            .iter()
            .filter(move |n| n.vteps.contains(&local))
    }
}
