//! The cluster as this host sees it: the etcd keys under [`PREFIX`], read
//! into records, and turned into what the VTEP table and the embedded DNS
//! need. Sans-IO: keys and values in, [`PeerEvent`]s and names out; the
//! etcd client ([`super::etcd`]) feeds it.
//!
//! **Key layout** (values are JSON):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `/vswitch/hosts/<vtep>` | [`HostRecord`]: name, VTEP, the overlay networks it has | the host's |
//! | `/vswitch/endpoints/<network>/<endpoint id>` | [`EndpointRecord`]: network, VNI, MAC, IP, VTEP, name, aliases | the host's |
//! | `/vswitch/networks/<network>` | [`NetworkRecord`]: VNI, subnet, gateway | none |
//! | `/vswitch/vnis/<vni>` | the network's name | none |
//! | `/vswitch/subnets/<a.b.c.d-len>` | the network's name | none |
//! | `/vswitch/ipam/<network>/<ip>` | [`AddressRecord`]: the VTEP and host holding it | the holder's |
//!
//! What lives under a host's lease is what must vanish with the host: its
//! presence, its endpoints and the addresses they hold (taken with a
//! transaction under the lease), so a dead host's addresses go back to
//! the pool within the TTL instead of leaking. A host that comes back
//! puts the addresses its containers still hold under its new lease, each
//! unless another host took it meanwhile. Networks, their VNI and subnet
//! belong to no host: they stay until removed.
//!
//! **From records to events.** The VTEP table's part of the view (remote
//! VTEPs with their names, which networks each takes part in, remote
//! endpoints) is recomputed after each change and compared with the part
//! before: the difference is the list of [`PeerEvent`]s, removals first.
//! The same comparison serves a single watch event and a full re-read
//! after a reconnection, so both leave the table exactly as the cluster
//! is.

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet};

use fabric::{PeerEvent, RemoteEndpoint, Vni};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ids::MacAddr;

/// The prefix of every key vswitch writes.
pub const PREFIX: &str = "/vswitch/";

/// The first VNI handed out (Docker's swarm allocator's first).
pub const FIRST_VNI: u32 = 4096;

/// A host taking part, under its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its name (`--vtep-name`).
    pub name: String,
    /// Its underlay address.
    pub vtep: Ipv4Addr,
    /// The overlay networks it has: it receives their broadcasts.
    #[serde(default)]
    pub networks: Vec<String>,
}

/// An overlay network, cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// Its VNI.
    pub vni: u32,
    /// Its IPv4 subnet.
    pub subnet: Ipv4Net,
    /// Its gateway (each host answers for it locally).
    pub gateway: Ipv4Addr,
    /// `--attachable`.
    #[serde(default)]
    pub attachable: bool,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// `-o key=value` (the MTU, say), the same on every host.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// An endpoint on an overlay network, under its host's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The endpoint's id.
    pub id: String,
    /// Its network's name.
    pub network: String,
    /// Its network's VNI.
    pub vni: u32,
    /// Its MAC, as `02:42:0a:00:00:02`.
    #[serde(with = "mac_text")]
    pub mac: MacAddr,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The VTEP it lives behind.
    pub vtep: Ipv4Addr,
    /// The container's name.
    pub name: String,
    /// Its network-scoped aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The first 12 digits of the container's id.
    #[serde(default)]
    pub short_id: String,
    /// The container's `--hostname`.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// A MAC as text in records, the way operators read it in etcdctl.
mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::MacAddr;

    pub(super) fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid MAC address {text:?}")))
    }
}

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The holding host's VTEP.
    pub vtep: Ipv4Addr,
    /// The holding host's name.
    pub host: String,
}

/// A key under [`PREFIX`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// `hosts/<vtep>`.
    Host(Ipv4Addr),
    /// `endpoints/<network>/<id>`.
    Endpoint {
        /// The network's name.
        network: String,
        /// The endpoint's id.
        id: String,
    },
    /// `networks/<name>`.
    Network(String),
    /// `vnis/<vni>`.
    Vni(u32),
    /// `subnets/<a.b.c.d-len>`.
    Subnet(Ipv4Net),
    /// `ipam/<network>/<ip>`.
    Address {
        /// The network's name.
        network: String,
        /// The address.
        ip: Ipv4Addr,
    },
}

impl Key {
    /// Reads a full key; `None` for keys this version does not know.
    #[must_use]
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(PREFIX)?;
        let (kind, rest) = rest.split_once('/')?;
        let one = |s: &str| (!s.is_empty() && !s.contains('/')).then(|| s.to_owned());
        Some(match kind {
            "hosts" => Self::Host(rest.parse().ok()?),
            "endpoints" => {
                let (network, id) = rest.split_once('/')?;
                Self::Endpoint {
                    network: one(network)?,
                    id: one(id)?,
                }
            }
            "networks" => Self::Network(one(rest)?),
            "vnis" => Self::Vni(rest.parse().ok()?),
            "subnets" => {
                let (addr, len) = rest.split_once('-')?;
                Self::Subnet(Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?)
            }
            "ipam" => {
                let (network, ip) = rest.split_once('/')?;
                Self::Address {
                    network: one(network)?,
                    ip: ip.parse().ok()?,
                }
            }
            _ => return None,
        })
    }

    /// The prefix of every key of one kind, e.g. `/vswitch/ipam/ov1/`.
    #[must_use]
    pub fn prefix(kind: &str) -> String {
        format!("{PREFIX}{kind}/")
    }
}

impl core::fmt::Display for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Host(v) => write!(f, "{PREFIX}hosts/{v}"),
            Self::Endpoint { network, id } => write!(f, "{PREFIX}endpoints/{network}/{id}"),
            Self::Network(n) => write!(f, "{PREFIX}networks/{n}"),
            Self::Vni(v) => write!(f, "{PREFIX}vnis/{v}"),
            Self::Subnet(s) => write!(f, "{PREFIX}subnets/{}-{}", s.network(), s.prefix_len()),
            Self::Address { network, ip } => write!(f, "{PREFIX}ipam/{network}/{ip}"),
        }
    }
}

/// A remote container's names on one network, for the embedded DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteName {
    /// The network's name.
    pub network: String,
    /// The container's name.
    pub name: String,
    /// Its aliases on the network.
    pub aliases: Vec<String>,
    /// Its short id.
    pub short_id: String,
    /// Its `--hostname`.
    pub hostname: Option<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its host's VTEP.
    pub vtep: Ipv4Addr,
}

/// The table's part of the view: what [`PeerEvent`]s describe.
#[derive(Debug, Default, PartialEq, Eq)]
struct PeerState {
    vteps: BTreeMap<Ipv4Addr, String>,
    joins: BTreeSet<(u32, Ipv4Addr)>,
    endpoints: BTreeMap<(u32, MacAddr), (Option<Ipv4Addr>, Ipv4Addr)>,
}

/// Every record under [`PREFIX`], as last read or watched.
#[derive(Debug)]
pub struct ClusterView {
    local: Ipv4Addr,
    hosts: BTreeMap<Ipv4Addr, HostRecord>,
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<(String, String), EndpointRecord>,
    addresses: BTreeMap<(String, Ipv4Addr), AddressRecord>,
    /// Keys with values this version cannot read: counted, else ignored.
    unreadable: u64,
}

impl ClusterView {
    /// An empty view for the host whose VTEP is `local`: its own records
    /// are kept but give no events (its endpoints are local ports).
    #[must_use]
    pub const fn new(local: Ipv4Addr) -> Self {
        Self {
            local,
            hosts: BTreeMap::new(),
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            addresses: BTreeMap::new(),
            unreadable: 0,
        }
    }

    /// This host's VTEP.
    #[must_use]
    pub const fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// One watched change: `value` is `None` for a deletion. Returns what
    /// the VTEP table must do.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Vec<PeerEvent> {
        let before = self.peer_state();
        self.set(key, value);
        diff(&before, &self.peer_state())
    }

    /// Replaces the whole view with a full read (after a reconnection):
    /// returns what the table must do to match it.
    pub fn reset<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Vec<PeerEvent> {
        let before = self.peer_state();
        self.hosts.clear();
        self.networks.clear();
        self.endpoints.clear();
        self.addresses.clear();
        for (k, v) in kvs {
            self.set(k, Some(v));
        }
        diff(&before, &self.peer_state())
    }

    fn set(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(k) = Key::parse(key) else {
            return;
        };
        fn read<T: serde::de::DeserializeOwned>(v: &[u8], bad: &mut u64) -> Option<T> {
            let r = serde_json::from_slice(v).ok();
            if r.is_none() {
                *bad += 1;
            }
            r
        }
        let bad = &mut self.unreadable;
        match (k, value) {
            (Key::Host(vtep), Some(v)) => match read::<HostRecord>(v, bad) {
                Some(h) if h.vtep == vtep => {
                    self.hosts.insert(vtep, h);
                }
                _ => {
                    self.hosts.remove(&vtep);
                }
            },
            (Key::Host(vtep), None) => {
                self.hosts.remove(&vtep);
            }
            (Key::Endpoint { network, id }, Some(v)) => {
                match read::<EndpointRecord>(v, bad).filter(|e| e.network == network && e.id == id)
                {
                    Some(e) => {
                        self.endpoints.insert((network, id), e);
                    }
                    None => {
                        self.endpoints.remove(&(network, id));
                    }
                }
            }
            (Key::Endpoint { network, id }, None) => {
                self.endpoints.remove(&(network, id));
            }
            (Key::Network(name), Some(v)) => match read::<NetworkRecord>(v, bad) {
                Some(n) if n.name == name => {
                    self.networks.insert(name, n);
                }
                _ => {
                    self.networks.remove(&name);
                }
            },
            (Key::Network(name), None) => {
                self.networks.remove(&name);
            }
            (Key::Address { network, ip }, Some(v)) => match read::<AddressRecord>(v, bad) {
                Some(a) => {
                    self.addresses.insert((network, ip), a);
                }
                None => {
                    self.addresses.remove(&(network, ip));
                }
            },
            (Key::Address { network, ip }, None) => {
                self.addresses.remove(&(network, ip));
            }
            // Claims only: transactions read them from etcd itself.
            (Key::Vni(_) | Key::Subnet(_), _) => {}
        }
    }

    fn peer_state(&self) -> PeerState {
        let mut s = PeerState::default();
        for h in self.hosts.values().filter(|h| h.vtep != self.local) {
            s.vteps.insert(h.vtep, h.name.clone());
            for n in &h.networks {
                if let Some(net) = self.networks.get(n) {
                    s.joins.insert((net.vni, h.vtep));
                }
            }
        }
        for e in self.endpoints.values().filter(|e| e.vtep != self.local) {
            s.endpoints.insert((e.vni, e.mac), (Some(e.ip), e.vtep));
        }
        s
    }

    /// What the table needs when it adds network `vni`: the VTEPs that
    /// take part and the endpoints behind them (events for a network the
    /// table did not have were refused when they came).
    #[must_use]
    pub fn join_events(&self, vni: Vni) -> Vec<PeerEvent> {
        let s = self.peer_state();
        let v = vni.get();
        let joins = s
            .joins
            .iter()
            .filter(|(n, _)| *n == v)
            .map(|&(_, vtep)| PeerEvent::Join { vni, vtep });
        let endpoints =
            s.endpoints
                .iter()
                .filter(|((n, _), _)| *n == v)
                .map(|(&(_, mac), &(ip, vtep))| {
                    PeerEvent::EndpointAdd(RemoteEndpoint {
                        vni,
                        mac: fabric::EthernetAddress(mac.0),
                        ip,
                        vtep,
                    })
                });
        joins.chain(endpoints).collect()
    }

    /// The names of containers on other hosts, for the embedded DNS.
    #[must_use]
    pub fn remote_names(&self) -> Vec<RemoteName> {
        self.endpoints
            .values()
            .filter(|e| e.vtep != self.local)
            .map(|e| RemoteName {
                network: e.network.clone(),
                name: e.name.clone(),
                aliases: e.aliases.clone(),
                short_id: e.short_id.clone(),
                hostname: e.hostname.clone(),
                ip: e.ip,
                vtep: e.vtep,
            })
            .collect()
    }

    /// A network's record.
    #[must_use]
    pub fn network(&self, name: &str) -> Option<&NetworkRecord> {
        self.networks.get(name)
    }

    /// Every overlay network of the cluster.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkRecord> {
        self.networks.values()
    }

    /// Every host record.
    pub fn hosts(&self) -> impl Iterator<Item = &HostRecord> {
        self.hosts.values()
    }

    /// Every endpoint record.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.values()
    }

    /// Every address taken, with its holder.
    pub fn addresses(&self) -> impl Iterator<Item = (&str, Ipv4Addr, &AddressRecord)> {
        self.addresses
            .iter()
            .map(|((n, ip), a)| (n.as_str(), *ip, a))
    }

    /// Values this version could not read.
    #[must_use]
    pub const fn unreadable(&self) -> u64 {
        self.unreadable
    }
}

/// What turns `before` into `after`: removals first (endpoints, joins,
/// VTEPs), then additions (VTEPs, joins, endpoints), so the table never
/// holds an endpoint behind a VTEP it was told is gone.
fn diff(before: &PeerState, after: &PeerState) -> Vec<PeerEvent> {
    let mut out = Vec::new();
    let vni = |v: u32| Vni::new(v).ok();
    for ((n, mac), _) in before
        .endpoints
        .iter()
        .filter(|(k, _)| !after.endpoints.contains_key(k))
    {
        if let Some(vni) = vni(*n) {
            out.push(PeerEvent::EndpointRemove {
                vni,
                mac: fabric::EthernetAddress(mac.0),
            });
        }
    }
    for &(n, vtep) in before.joins.difference(&after.joins) {
        if let Some(vni) = vni(n) {
            out.push(PeerEvent::Leave { vni, vtep });
        }
    }
    for vtep in before.vteps.keys().filter(|v| !after.vteps.contains_key(v)) {
        out.push(PeerEvent::VtepDown { vtep: *vtep });
    }
    for (vtep, name) in &after.vteps {
        if before.vteps.get(vtep) != Some(name) {
            out.push(PeerEvent::VtepUp {
                vtep: *vtep,
                name: name.clone(),
            });
        }
    }
    for &(n, vtep) in after.joins.difference(&before.joins) {
        if let Some(vni) = vni(n) {
            out.push(PeerEvent::Join { vni, vtep });
        }
    }
    for (&(n, mac), &(ip, vtep)) in &after.endpoints {
        if before.endpoints.get(&(n, mac)) != Some(&(ip, vtep))
            && let Some(vni) = vni(n)
        {
            out.push(PeerEvent::EndpointAdd(RemoteEndpoint {
                vni,
                mac: fabric::EthernetAddress(mac.0),
                ip,
                vtep,
            }));
        }
    }
    out
}

/// The lowest VNI from [`FIRST_VNI`] that `taken` does not hold.
#[must_use]
pub fn pick_vni(taken: &BTreeSet<u32>) -> Option<u32> {
    (FIRST_VNI..=Vni::MAX).find(|v| !taken.contains(v))
}

/// The first /24 of Docker's global pool (10.0.0.0/8) that overlaps none
/// of `taken`.
#[must_use]
pub fn pick_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let pool = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).ok()?;
    pool.subnets(24)
        .ok()?
        .find(|s| !taken.iter().any(|t| t.contains(s) || s.contains(t)))
}

/// The first host address of `subnet` that is not its gateway and not in
/// `taken`: Docker's sequential allocation.
#[must_use]
pub fn pick_address(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    subnet.hosts().find(|a| *a != gateway && !taken.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in [
            Key::Host(Ipv4Addr::new(192, 0, 2, 1)),
            Key::Endpoint {
                network: "ov1".into(),
                id: "abc".into(),
            },
            Key::Network("ov1".into()),
            Key::Vni(4096),
            Key::Subnet("10.0.1.0/24".parse().unwrap()),
            Key::Address {
                network: "ov1".into(),
                ip: Ipv4Addr::new(10, 0, 1, 2),
            },
        ] {
            assert_eq!(Key::parse(&k.to_string()), Some(k.clone()), "{k}");
        }
        assert_eq!(Key::parse("/vswitch/hosts/not-an-ip"), None);
        assert_eq!(Key::parse("/other/hosts/192.0.2.1"), None);
        assert_eq!(Key::parse("/vswitch/endpoints/ov1/a/b"), None);
        assert_eq!(Key::parse("/vswitch/subnets/10.0.0.0-33"), None);
    }

    #[test]
    fn picks_skip_what_is_taken() {
        assert_eq!(pick_vni(&BTreeSet::from([4096, 4097])), Some(4098));
        let taken = [
            "10.0.0.0/24".parse().unwrap(),
            "10.0.2.0/23".parse().unwrap(),
        ];
        assert_eq!(pick_subnet(&taken), "10.0.1.0/24".parse().ok());
        let subnet: Ipv4Net = "10.0.1.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 1, 1);
        let taken = BTreeSet::from([Ipv4Addr::new(10, 0, 1, 2)]);
        assert_eq!(
            pick_address(subnet, gw, &taken),
            Some(Ipv4Addr::new(10, 0, 1, 3))
        );
        let full: BTreeSet<Ipv4Addr> = subnet.hosts().collect();
        assert_eq!(pick_address(subnet, gw, &full), None);
    }
}
