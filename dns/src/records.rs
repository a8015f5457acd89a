//! The record store: who is called what, on which network, and what each
//! sandbox may see.
//!
//! Modelled on aardvark-dns's backend: plain maps, built by the control
//! thread from its model and handed to the resolver whole (as an
//! `Arc<Records>`); nothing edits a store the resolver is using. Every
//! lookup is scoped by the asking sandbox: only the networks it has an
//! endpoint on are searched, in Docker's endpoint order.
//!
//! Per network the store keeps Docker's three maps (`svcMap`,
//! `svcIPv6Map`, `ipMap` in libnetwork): lower-cased name → IPv4
//! addresses, lower-cased name → IPv6 addresses, reversed address →
//! container name. The names of an endpoint are its container name, its
//! network aliases, its 12-hex short id and its hostname; all share one
//! key space, so an alias held by several containers maps to all of them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ids::{NetworkId, SandboxId};
use crate::name;
use crate::upstream::Upstream;

/// A network's settings that matter to name resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The Docker network name: the suffix of `name.network` queries
    /// (compared case-sensitively, as Docker does) and of PTR answers.
    pub name: String,
    /// `--internal`: no route out. Internal networks come after the others
    /// in a sandbox's lookup order; forwarding still happens (and usually
    /// times out, docker-reference §6.4).
    pub internal: bool,
    /// `--ipv6`: when off, an AAAA query for a known name gets an empty
    /// NOERROR instead of being forwarded.
    pub ipv6: bool,
}

/// A sandbox's resolver settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Upstream servers in the order they are tried; only the first three
    /// are used. [`resolv_conf`](crate::resolv_conf) computes them.
    pub upstreams: Vec<Upstream>,
    /// The user set `ndots` (in `--dns-option` or the host's resolv.conf):
    /// single-label A/AAAA names that are not local get an empty NOERROR
    /// instead of being forwarded (docker-reference §6.4).
    pub ndots_set: bool,
    /// Legacy `--link target:alias` aliases of this sandbox, seen by it
    /// alone.
    pub links: Vec<Link>,
}

/// A legacy link alias: on `network`, the linking sandbox may ask for
/// `alias` and gets `target`'s addresses. Matched case-sensitively, as
/// Docker does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The network on which the alias applies.
    pub network: NetworkId,
    /// The name the linking container uses.
    pub alias: String,
    /// The linked container's name on that network.
    pub target: String,
}

/// One sandbox's attachment to one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The attached sandbox.
    pub sandbox: SandboxId,
    /// The network.
    pub network: NetworkId,
    /// The container name (without Docker's leading `/`): the name PTR
    /// answers give, followed by `.network`.
    pub name: String,
    /// `--network-alias` values on this network.
    pub aliases: Vec<String>,
    /// The first 12 hex digits of the container id.
    pub short_id: String,
    /// `--hostname`, if set.
    pub hostname: Option<String>,
    /// The endpoint's IPv4 address on this network.
    pub ipv4: Ipv4Addr,
    /// The endpoint's IPv6 address, on an IPv6 network.
    pub ipv6: Option<Ipv6Addr>,
}

impl Endpoint {
    /// Every name this endpoint answers to, in Docker's order: container
    /// name, aliases, short id, hostname.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        core::iter::once(self.name.as_str())
            .chain(self.aliases.iter().map(String::as_str))
            .chain(core::iter::once(self.short_id.as_str()))
            .chain(self.hostname.as_deref())
    }
}

/// Why a [`Records`] edit was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The network id is already in the store.
    #[error("network {0} already exists")]
    DuplicateNetwork(NetworkId),
    /// The sandbox id is already in the store.
    #[error("sandbox {0} already exists")]
    DuplicateSandbox(SandboxId),
    /// An endpoint or link refers to a network not in the store.
    #[error("no network {0}")]
    UnknownNetwork(NetworkId),
    /// An endpoint refers to a sandbox not in the store.
    #[error("no sandbox {0}")]
    UnknownSandbox(SandboxId),
    /// The sandbox already has an endpoint on that network.
    #[error("sandbox {sandbox} already has an endpoint on network {network}")]
    DuplicateEndpoint {
        /// The sandbox.
        sandbox: SandboxId,
        /// The network.
        network: NetworkId,
    },
}

/// What a name lookup found (Docker's `ResolveName` result).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The addresses of the first network that has the name, in insertion
    /// order, without duplicates. The resolver shuffles them per query.
    Found(Vec<IpAddr>),
    /// IPv6 asked, the name is known on a network without IPv6: answer
    /// NOERROR with no records, do not forward.
    Ipv6Miss,
    /// Not a local name: forward.
    NotFound,
}

/// Which address family a lookup wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

#[derive(Clone, Debug)]
struct NetworkEntry {
    spec: Network,
    v4: HashMap<String, Vec<Ipv4Addr>>,
    v6: HashMap<String, Vec<Ipv6Addr>>,
    reverse: HashMap<String, String>,
    endpoints: Vec<Endpoint>,
}

impl NetworkEntry {
    /// Docker's `network.ResolveName`.
    fn resolve(&self, req: &str, family: Family) -> Lookup {
        let key = name::key(req);
        match family {
            Family::V4 => match self.v4.get(&key) {
                Some(ips) if !ips.is_empty() => {
                    Lookup::Found(ips.iter().copied().map(IpAddr::V4).collect())
                }
                _ => Lookup::NotFound,
            },
            Family::V6 => {
                let miss = self.v4.contains_key(&key) && !self.spec.ipv6;
                match self.v6.get(&key) {
                    Some(ips) if !ips.is_empty() => {
                        Lookup::Found(ips.iter().copied().map(IpAddr::V6).collect())
                    }
                    _ if miss => Lookup::Ipv6Miss,
                    _ => Lookup::NotFound,
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct SandboxEntry {
    spec: Sandbox,
    /// Networks with an endpoint of this sandbox, in lookup order.
    networks: Vec<NetworkId>,
}

impl SandboxEntry {
    fn link(&self, network: NetworkId, alias: &str) -> Option<&str> {
        self.spec
            .links
            .iter()
            .find(|l| l.network == network && l.alias == alias)
            .map(|l| l.target.as_str())
    }
}

/// The names and addresses the resolver answers from, and each sandbox's
/// settings. Built whole, then shared read-only.
#[derive(Clone, Debug, Default)]
pub struct Records {
    networks: HashMap<NetworkId, NetworkEntry>,
    sandboxes: HashMap<SandboxId, SandboxEntry>,
}

impl Records {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a network with no endpoints.
    ///
    /// # Errors
    /// [`DnsError::DuplicateNetwork`] if `id` is taken.
    pub fn add_network(&mut self, id: NetworkId, network: Network) -> Result<(), DnsError> {
        if self.networks.contains_key(&id) {
            return Err(DnsError::DuplicateNetwork(id));
        }
        self.networks.insert(
            id,
            NetworkEntry {
                spec: network,
                v4: HashMap::new(),
                v6: HashMap::new(),
                reverse: HashMap::new(),
                endpoints: Vec::new(),
            },
        );
        Ok(())
    }

    /// Adds a sandbox, attached to nothing yet.
    ///
    /// # Errors
    /// [`DnsError::DuplicateSandbox`] if `id` is taken,
    /// [`DnsError::UnknownNetwork`] if a link names a network not added
    /// yet.
    pub fn add_sandbox(&mut self, id: SandboxId, sandbox: Sandbox) -> Result<(), DnsError> {
        if self.sandboxes.contains_key(&id) {
            return Err(DnsError::DuplicateSandbox(id));
        }
        if let Some(l) = sandbox
            .links
            .iter()
            .find(|l| !self.networks.contains_key(&l.network))
        {
            return Err(DnsError::UnknownNetwork(l.network));
        }
        self.sandboxes.insert(
            id,
            SandboxEntry {
                spec: sandbox,
                networks: Vec::new(),
            },
        );
        Ok(())
    }

    /// Attaches a sandbox to a network under the endpoint's names.
    ///
    /// # Errors
    /// [`DnsError::UnknownNetwork`], [`DnsError::UnknownSandbox`] if either
    /// was not added first; [`DnsError::DuplicateEndpoint`] if the sandbox
    /// is already on that network.
    pub fn add_endpoint(&mut self, endpoint: Endpoint) -> Result<(), DnsError> {
        let (sid, nid) = (endpoint.sandbox, endpoint.network);
        let Some(network) = self.networks.get_mut(&nid) else {
            return Err(DnsError::UnknownNetwork(nid));
        };
        let Some(sandbox) = self.sandboxes.get_mut(&sid) else {
            return Err(DnsError::UnknownSandbox(sid));
        };
        if sandbox.networks.contains(&nid) {
            return Err(DnsError::DuplicateEndpoint {
                sandbox: sid,
                network: nid,
            });
        }
        sandbox.networks.push(nid);

        for n in endpoint.names() {
            let key = name::key(n);
            let v4 = network.v4.entry(key.clone()).or_default();
            if !v4.contains(&endpoint.ipv4) {
                v4.push(endpoint.ipv4);
            }
            if let Some(ip) = endpoint.ipv6 {
                let v6 = network.v6.entry(key).or_default();
                if !v6.contains(&ip) {
                    v6.push(ip);
                }
            }
        }
        // The first endpoint registered for an address names it.
        network
            .reverse
            .entry(name::reverse_v4(endpoint.ipv4))
            .or_insert_with(|| endpoint.name.clone());
        if let Some(ip) = endpoint.ipv6 {
            network
                .reverse
                .entry(name::reverse_v6(ip))
                .or_insert_with(|| endpoint.name.clone());
        }
        network.endpoints.push(endpoint);

        // Docker orders a sandbox's endpoints with internal networks last,
        // then by network name (`epHeap.Less`; gateway-network and
        // priority rules do not apply to the endpoints we serve).
        let networks = &self.networks;
        sandbox.networks.sort_by_cached_key(|id| {
            let spec = networks.get(id).map(|n| &n.spec);
            (
                spec.is_some_and(|s| s.internal),
                spec.map(|s| s.name.clone()),
                *id,
            )
        });
        Ok(())
    }

    /// The sandbox's settings, if it is in the store.
    #[must_use]
    pub fn sandbox(&self, id: SandboxId) -> Option<&Sandbox> {
        self.sandboxes.get(&id).map(|s| &s.spec)
    }

    /// The network's settings, if it is in the store.
    #[must_use]
    pub fn network(&self, id: NetworkId) -> Option<&Network> {
        self.networks.get(&id).map(|n| &n.spec)
    }

    /// The networks `sandbox` is attached to, in lookup order (empty for an
    /// unknown sandbox).
    #[must_use]
    pub fn networks_of(&self, sandbox: SandboxId) -> &[NetworkId] {
        self.sandboxes
            .get(&sandbox)
            .map_or(&[], |s| s.networks.as_slice())
    }

    /// Resolves `query` (presentation text, any case, with or without a
    /// trailing dot) for `sandbox`, as Docker's `sandbox.ResolveName`: the
    /// whole name on each of the sandbox's networks, then `name.network`
    /// splits; link aliases before ordinary names at each step. The first
    /// network that knows the name wins.
    #[must_use]
    pub fn lookup(&self, sandbox: SandboxId, query: &str, family: Family) -> Lookup {
        let Some(sb) = self.sandboxes.get(&sandbox) else {
            return Lookup::NotFound;
        };
        let query = query.strip_suffix('.').unwrap_or(query);
        for (req, network) in name::candidates(query) {
            for links in [true, false] {
                match self.resolve_on(sb, req, network, links, family) {
                    Lookup::NotFound => {}
                    found => return found,
                }
            }
        }
        Lookup::NotFound
    }

    /// Docker's `sandbox.resolveName`: one pass over the sandbox's
    /// networks, for link aliases (`links`) or ordinary names.
    fn resolve_on(
        &self,
        sb: &SandboxEntry,
        req: &str,
        network: Option<&str>,
        links: bool,
        family: Family,
    ) -> Lookup {
        let mut miss = false;
        for nid in &sb.networks {
            let Some(n) = self.networks.get(nid) else {
                continue;
            };
            if network.is_some_and(|want| want != n.spec.name) {
                continue;
            }
            let link = sb.link(*nid, req);
            let target = match (links, link) {
                (true, Some(target)) => target,
                (false, None) => req,
                // A link alias shadows ordinary names on its network.
                (true, None) | (false, Some(_)) => continue,
            };
            match n.resolve(target, family) {
                Lookup::Found(ips) => return Lookup::Found(ips),
                Lookup::Ipv6Miss => miss = true,
                Lookup::NotFound => {}
            }
        }
        if miss {
            Lookup::Ipv6Miss
        } else {
            Lookup::NotFound
        }
    }

    /// The PTR target for a reversed address (`2.0.17.172`, or 32 dotted
    /// nibbles) on the sandbox's networks: `container.network`, from the
    /// first network in lookup order that has the address.
    #[must_use]
    pub fn lookup_ptr(&self, sandbox: SandboxId, reversed: &str) -> Option<String> {
        let sb = self.sandboxes.get(&sandbox)?;
        sb.networks.iter().find_map(|nid| {
            let n = self.networks.get(nid)?;
            let name = n.reverse.get(reversed)?;
            Some(format!("{name}.{}", n.spec.name))
        })
    }

    /// Every network with its records, sorted by network name: what
    /// `vsctl dns show` prints.
    #[must_use]
    pub fn view(&self) -> Vec<NetworkView> {
        let mut ids: Vec<_> = self
            .networks
            .iter()
            .map(|(id, n)| (&n.spec.name, *id))
            .collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|(_, id)| self.view_network(id))
            .collect()
    }

    /// What `sandbox` can resolve locally: its networks in lookup order,
    /// with their records. `None` for an unknown sandbox.
    #[must_use]
    pub fn view_for(&self, sandbox: SandboxId) -> Option<SandboxView> {
        let sb = self.sandboxes.get(&sandbox)?;
        Some(SandboxView {
            id: sandbox,
            settings: sb.spec.clone(),
            networks: sb
                .networks
                .iter()
                .filter_map(|&id| self.view_network(id))
                .collect(),
        })
    }

    /// One network's records, names sorted.
    #[must_use]
    pub fn view_network(&self, id: NetworkId) -> Option<NetworkView> {
        let n = self.networks.get(&id)?;
        let mut names: Vec<NameView> =
            n.v4.iter()
                .map(|(name, v4)| NameView {
                    name: name.clone(),
                    addrs: v4
                        .iter()
                        .copied()
                        .map(IpAddr::V4)
                        .chain(
                            n.v6.get(name)
                                .into_iter()
                                .flatten()
                                .copied()
                                .map(IpAddr::V6),
                        )
                        .collect(),
                })
                .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let mut reverse: Vec<(IpAddr, String)> = n
            .endpoints
            .iter()
            .flat_map(|ep| core::iter::once(IpAddr::V4(ep.ipv4)).chain(ep.ipv6.map(IpAddr::V6)))
            .filter_map(|ip| {
                let key = match ip {
                    IpAddr::V4(v4) => name::reverse_v4(v4),
                    IpAddr::V6(v6) => name::reverse_v6(v6),
                };
                let target = n.reverse.get(&key)?;
                Some((ip, format!("{target}.{}.", n.spec.name)))
            })
            .collect();
        reverse.sort();
        reverse.dedup();
        Some(NetworkView {
            id,
            network: n.spec.clone(),
            endpoints: n.endpoints.clone(),
            names,
            reverse,
        })
    }
}

/// One network as the resolver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkView {
    /// The network's id.
    pub id: NetworkId,
    /// Its settings.
    pub network: Network,
    /// Its endpoints, in the order they were added.
    pub endpoints: Vec<Endpoint>,
    /// Every lookup key (lower-cased) with its IPv4 then IPv6 addresses,
    /// sorted by name.
    pub names: Vec<NameView>,
    /// Every address with its PTR answer (`container.network.`), sorted.
    pub reverse: Vec<(IpAddr, String)>,
}

/// One lookup key and what it resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameView {
    /// The lower-cased name.
    pub name: String,
    /// Its IPv4 addresses, then its IPv6 addresses.
    pub addrs: Vec<IpAddr>,
}

/// What one sandbox sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxView {
    /// The sandbox's id.
    pub id: SandboxId,
    /// Its resolver settings (upstreams, ndots, links).
    pub settings: Sandbox,
    /// Its networks in lookup order.
    pub networks: Vec<NetworkView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> Network {
        Network {
            name: name.into(),
            internal: false,
            ipv6: false,
        }
    }

    fn ep(sandbox: u32, network: u32, name: &str, ip: [u8; 4]) -> Endpoint {
        Endpoint {
            sandbox: SandboxId(sandbox),
            network: NetworkId(network),
            name: name.into(),
            aliases: vec![],
            short_id: format!("{sandbox:012x}"),
            hostname: None,
            ipv4: ip.into(),
            ipv6: None,
        }
    }

    #[test]
    fn edits_are_validated() {
        let mut r = Records::new();
        r.add_network(NetworkId(1), net("a")).unwrap();
        assert_eq!(
            r.add_network(NetworkId(1), net("b")),
            Err(DnsError::DuplicateNetwork(NetworkId(1)))
        );
        assert_eq!(
            r.add_endpoint(ep(1, 1, "x", [10, 0, 0, 2])),
            Err(DnsError::UnknownSandbox(SandboxId(1)))
        );
        r.add_sandbox(SandboxId(1), Sandbox::default()).unwrap();
        assert_eq!(
            r.add_endpoint(ep(1, 2, "x", [10, 0, 0, 2])),
            Err(DnsError::UnknownNetwork(NetworkId(2)))
        );
        r.add_endpoint(ep(1, 1, "x", [10, 0, 0, 2])).unwrap();
        assert_eq!(
            r.add_endpoint(ep(1, 1, "x", [10, 0, 0, 3])),
            Err(DnsError::DuplicateEndpoint {
                sandbox: SandboxId(1),
                network: NetworkId(1)
            })
        );
        let bad_link = Sandbox {
            links: vec![Link {
                network: NetworkId(9),
                alias: "l".into(),
                target: "x".into(),
            }],
            ..Sandbox::default()
        };
        assert_eq!(
            r.add_sandbox(SandboxId(2), bad_link),
            Err(DnsError::UnknownNetwork(NetworkId(9)))
        );
        assert_eq!(
            DnsError::DuplicateEndpoint {
                sandbox: SandboxId(1),
                network: NetworkId(1)
            }
            .to_string(),
            "sandbox s1 already has an endpoint on network n1"
        );
    }

    #[test]
    fn lookup_order_puts_internal_networks_last_then_sorts_by_name() {
        let mut r = Records::new();
        r.add_network(
            NetworkId(1),
            Network {
                internal: true,
                ..net("aaa")
            },
        )
        .unwrap();
        r.add_network(NetworkId(2), net("zzz")).unwrap();
        r.add_network(NetworkId(3), net("mmm")).unwrap();
        r.add_sandbox(SandboxId(1), Sandbox::default()).unwrap();
        for n in 1..=3 {
            r.add_endpoint(ep(1, n, "x", [10, 0, 0, 2])).unwrap();
        }
        assert_eq!(
            r.networks_of(SandboxId(1)),
            [NetworkId(3), NetworkId(2), NetworkId(1)]
        );
    }

    #[test]
    fn shared_names_collect_addresses_without_duplicates() {
        let mut r = Records::new();
        r.add_network(NetworkId(1), net("n")).unwrap();
        for s in 1..=3 {
            r.add_sandbox(SandboxId(s), Sandbox::default()).unwrap();
        }
        let mut a = ep(1, 1, "a", [10, 0, 0, 2]);
        a.aliases = vec!["shared".into(), "a".into()];
        let mut b = ep(2, 1, "b", [10, 0, 0, 3]);
        b.aliases = vec!["SHARED".into()];
        r.add_endpoint(a).unwrap();
        r.add_endpoint(b).unwrap();
        r.add_endpoint(ep(3, 1, "c", [10, 0, 0, 4])).unwrap();
        assert_eq!(
            r.lookup(SandboxId(3), "Shared", Family::V4),
            Lookup::Found(vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()])
        );
        assert_eq!(
            r.lookup(SandboxId(3), "a.", Family::V4),
            Lookup::Found(vec![[10, 0, 0, 2].into()])
        );
        let view = r.view_network(NetworkId(1)).unwrap();
        let shared = view.names.iter().find(|n| n.name == "shared").unwrap();
        assert_eq!(shared.addrs.len(), 2);
        assert_eq!(
            view.reverse[0],
            ("10.0.0.2".parse().unwrap(), "a.n.".to_string())
        );
    }
}
