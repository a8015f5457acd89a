//! From the controller's model to what the embedded DNS needs: the
//! [`Records`] the resolver answers from, which sandboxes get listeners,
//! and every sandbox's resolv.conf (docker-reference §6.1, §6.2).
//!
//! Pure: the daemon reads the host's resolv.conf and passes its text in.
//!
//! - Only user-defined networks have service discovery: the default
//!   `bridge` (the model's `builtin` network) is left out of the records,
//!   as in Docker.
//! - An endpoint answers to its sandbox's name, its network aliases and the
//!   sandbox's 12-hex short id (the model keeps that as the last alias), on
//!   its IPv4 address; PTR gives `sandbox.network`.
//! - A sandbox with at least one user-network endpoint gets listeners and
//!   the user-network resolv.conf (127.0.0.11, the host's IPv4 nameservers
//!   as upstreams); any other sandbox gets the default bridge's (the host's
//!   file without loopback nameservers). So a sandbox connected to a user
//!   network later switches over then, and one whose last user network is
//!   disconnected switches back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dns::resolv_conf::{self, DnsSettings};
use dns::{Endpoint, Network, Records, Sandbox, SandboxId};

use crate::control::Model;
use crate::control::model::Sandbox as ModelSandbox;
use crate::netns::NETNS_RUN_DIR;

/// Where `ip netns exec NAME` takes files to bind over `/etc` from:
/// `/etc/netns/NAME/resolv.conf` becomes the command's `/etc/resolv.conf`.
pub const ETC_NETNS: &str = "/etc/netns";

/// The small numbers the records know sandboxes by, assigned to the
/// model's 64-hex ids as they appear and never reused by one daemon.
#[derive(Clone, Debug, Default)]
pub struct SandboxIds {
    ids: HashMap<String, SandboxId>,
    next: u32,
}

impl SandboxIds {
    /// No sandbox known yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the sandbox whose model id is `sandbox`, assigned now if
    /// it has none.
    pub fn get_or_assign(&mut self, sandbox: &str) -> SandboxId {
        if let Some(&id) = self.ids.get(sandbox) {
            return id;
        }
        let id = SandboxId(self.next);
        self.next = self.next.wrapping_add(1);
        self.ids.insert(sandbox.to_owned(), id);
        id
    }

    /// The id assigned to `sandbox`, if any.
    #[must_use]
    pub fn get(&self, sandbox: &str) -> Option<SandboxId> {
        self.ids.get(sandbox).copied()
    }

    /// Forgets sandboxes the model no longer has, and assigns ids to the
    /// new ones.
    pub fn sync(&mut self, model: &Model) {
        let live: std::collections::HashSet<&str> =
            model.sandboxes.iter().map(|s| s.id.as_str()).collect();
        self.ids.retain(|id, _| live.contains(id.as_str()));
        for s in &model.sandboxes {
            self.get_or_assign(&s.id);
        }
    }

    /// Forgets `sandbox` (removed from the model).
    pub fn forget(&mut self, sandbox: &str) {
        self.ids.remove(sandbox);
    }
}

/// A sandbox that gets listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The model's id.
    pub sandbox: String,
    /// The records' id.
    pub id: SandboxId,
    /// Its namespace file.
    pub netns: PathBuf,
}

/// A sandbox's resolv.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConfFile {
    /// The model's id.
    pub sandbox: String,
    /// Where it goes.
    pub path: PathBuf,
    /// What it says.
    pub contents: String,
}

/// Everything the embedded DNS needs from one model.
#[derive(Debug, Default)]
pub struct DnsPlan {
    /// What the resolver answers from.
    pub records: Records,
    /// Sandboxes with a user-network endpoint, in model order.
    pub listeners: Vec<Listener>,
    /// One file per sandbox in a named namespace (`/run/netns/NAME`);
    /// other sandboxes are not reached with `ip netns exec` and get none.
    pub resolv_confs: Vec<ResolvConfFile>,
}

/// The two resolv.conf texts a sandbox can get, made from the host's file
/// and the daemon's settings once per sync.
#[derive(Clone, Debug)]
pub struct ResolvConfs {
    /// For a sandbox on no user-defined network: the host's file without
    /// loopback nameservers.
    pub bridge: String,
    /// For a sandbox on a user-defined network: the embedded server, and
    /// its upstreams; an error when the host names none.
    pub user: Result<resolv_conf::SandboxResolvConf, resolv_conf::ResolvConfError>,
    /// What they were made from, for a sandbox with its own `--dns*`.
    host: String,
    settings: DnsSettings,
}

impl ResolvConfs {
    /// Both texts for the host's resolv.conf `host` and `settings`.
    #[must_use]
    pub fn new(host: &str, settings: &DnsSettings) -> Self {
        Self {
            bridge: resolv_conf::default_bridge(host, settings, false),
            user: resolv_conf::user_network(host, settings),
            host: host.to_owned(),
            settings: settings.clone(),
        }
    }

    /// The texts for `sandbox`: these, or, when it has its own `--dns`,
    /// `--dns-search` or `--dns-option`, these with each kind it gives
    /// replaced, as dockerd combines a container's options with its own.
    #[must_use]
    pub fn for_sandbox(&self, sandbox: &ModelSandbox) -> std::borrow::Cow<'_, Self> {
        if sandbox.dns.is_empty() {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(Self::new(&self.host, &sandbox.dns.over(&self.settings)))
        }
    }

    /// `sandbox`'s file under `etc_netns`, as one `served` by the embedded
    /// DNS (with an endpoint on a user-defined network) or not; `None` for
    /// a sandbox that `ip netns exec` does not reach
    /// ([`resolv_conf_path`]).
    #[must_use]
    pub fn file(
        &self,
        etc_netns: &Path,
        sandbox: &ModelSandbox,
        served: bool,
    ) -> Option<ResolvConfFile> {
        // Docker writes its own sandboxes' files.
        if sandbox.external {
            return None;
        }
        let path = resolv_conf_path(etc_netns, sandbox)?;
        let confs = self.for_sandbox(sandbox);
        let contents = if served {
            match &confs.user {
                Ok(conf) => conf.contents.clone(),
                // Docker refuses to start such a container; we still let
                // the sandbox resolve its peers.
                Err(_) => resolv_conf::build(
                    &[resolv_conf::EMBEDDED_DNS.to_string()],
                    &[],
                    &["ndots:0".to_owned()],
                ),
            }
        } else {
            confs.bridge.clone()
        };
        Some(ResolvConfFile {
            sandbox: sandbox.id.clone(),
            path,
            contents,
        })
    }
}

/// Where `ip netns exec` finds a sandbox's resolv.conf, under `etc_netns`
/// ([`ETC_NETNS`]): only for a namespace mounted in `/run/netns`, under its
/// name there.
#[must_use]
pub fn resolv_conf_path(etc_netns: &Path, sandbox: &ModelSandbox) -> Option<PathBuf> {
    let netns = Path::new(&sandbox.netns_path);
    if netns.parent() != Some(Path::new(NETNS_RUN_DIR)) {
        return None;
    }
    let name = netns.file_name()?;
    Some(etc_netns.join(name).join("resolv.conf"))
}

/// Builds the records, the listener list and the resolv.conf files for
/// `model`, with `host_resolv_conf` the text of the host's resolv.conf and
/// `settings` the daemon's `--dns`, `--dns-search` and `--dns-option` (each
/// non-empty one replaces the host's values of its kind, as dockerd's
/// daemon options do).
/// Every sandbox of the model must have an id in `ids`
/// ([`SandboxIds::sync`]); one without is left out.
#[must_use]
pub fn build(
    model: &Model,
    ids: &SandboxIds,
    host_resolv_conf: &str,
    settings: &DnsSettings,
    etc_netns: &Path,
) -> DnsPlan {
    let mut plan = DnsPlan::default();
    let user_networks: Vec<_> = model.networks.iter().filter(|n| !n.builtin).collect();
    for n in &user_networks {
        let added = plan.records.add_network(
            dns::NetworkId(n.num.0),
            Network {
                name: n.name.clone(),
                internal: n.internal,
                ipv6: false,
            },
        );
        if let Err(e) = added {
            tracing::warn!(network = %n.name, error = %e, "network left out of the dns records");
        }
    }
    let confs = ResolvConfs::new(host_resolv_conf, settings);
    if let Err(e) = &confs.user {
        tracing::warn!(error = %e, "host resolv.conf: no upstreams for the embedded dns");
    }
    // Each sandbox's user-network endpoints, in attach order, found in one
    // pass (a scan per sandbox would make a sync quadratic).
    let mut by_sandbox: HashMap<&str, Vec<&crate::control::Endpoint>> = HashMap::new();
    for e in &model.endpoints {
        if user_networks.iter().any(|n| n.num == e.network) {
            by_sandbox.entry(e.sandbox.as_str()).or_default().push(e);
        }
    }

    for sb in &model.sandboxes {
        let Some(id) = ids.get(&sb.id) else {
            continue;
        };
        let endpoints = by_sandbox.remove(sb.id.as_str()).unwrap_or_default();
        let served = !endpoints.is_empty();
        // Docker answers at 127.0.0.11 in its own sandboxes (it moved their
        // handed-off interfaces in): their names stay in the records, for
        // `dns show`, but the sandbox gets no listener and no resolv.conf.
        let docker = served
            && model
                .sandbox_endpoints(&sb.id)
                .all(|e| e.kind == crate::control::PortKind::Handoff);
        if let Some(file) = confs.file(etc_netns, sb, served).filter(|_| !docker) {
            plan.resolv_confs.push(file);
        }
        if !served {
            continue;
        }
        let settings = confs
            .for_sandbox(sb)
            .user
            .as_ref()
            .map(|c| Sandbox {
                upstreams: c.upstreams.clone(),
                ndots_set: c.ndots_set,
                links: Vec::new(),
            })
            .unwrap_or_default();
        if let Err(e) = plan.records.add_sandbox(id, settings) {
            tracing::warn!(sandbox = %sb.name, error = %e, "sandbox left out of the dns records");
            continue;
        }
        for e in endpoints {
            let short_id = sb.short_id().to_owned();
            let aliases = e
                .aliases
                .iter()
                .flatten()
                .filter(|a| **a != short_id && Some(*a) != sb.hostname.as_ref())
                .cloned()
                .collect();
            let added = plan.records.add_endpoint(Endpoint {
                sandbox: id,
                network: dns::NetworkId(e.network.0),
                name: sb.name.clone(),
                aliases,
                short_id,
                hostname: sb.hostname.clone(),
                ipv4: e.ipv4,
                ipv6: None,
            });
            if let Err(err) = added {
                tracing::warn!(endpoint = %e.id, error = %err, "endpoint left out of the dns records");
            }
        }
        if docker {
            continue;
        }
        plan.listeners.push(Listener {
            sandbox: sb.id.clone(),
            id,
            netns: PathBuf::from(sb.netns_file()),
        });
    }
    plan
}

/// Adds the containers of other hosts (from the etcd control plane) on
/// this host's overlay networks of the same name. Each gets a sandbox of
/// its own in the records, numbered down from `u32::MAX` (local sandboxes
/// count up from 0), with no listener: it only answers.
pub fn add_remote(
    records: &mut dns::Records,
    model: &Model,
    remote: &[crate::cluster::RemoteName],
) {
    let mut next = u32::MAX;
    for r in remote {
        let Some(net) = model
            .networks
            .iter()
            .find(|n| n.vni.is_some() && n.name == r.network)
        else {
            continue;
        };
        let id = SandboxId(next);
        next = next.saturating_sub(1);
        if let Err(e) = records.add_sandbox(id, Sandbox::default()) {
            tracing::warn!(name = %r.name, error = %e, "remote container left out of the dns records");
            continue;
        }
        let added = records.add_endpoint(Endpoint {
            sandbox: id,
            network: dns::NetworkId(net.num.0),
            name: r.name.clone(),
            aliases: r.aliases.clone(),
            short_id: r.short_id.clone(),
            hostname: r.hostname.clone(),
            ipv4: r.ip,
            ipv6: None,
        });
        if let Err(e) = added {
            tracing::warn!(name = %r.name, error = %e, "remote container left out of the dns records");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use dns::{DialFrom, Family, Lookup};

    use super::*;
    use crate::control::types::{ConnectRequest, EndpointSettings, NetworkCreateRequest};
    use crate::control::{Controller, ControllerConfig, Ctx, Request, SeededEntropy};

    const HOST: &str = "search example.org\nnameserver 127.0.0.53\nnameserver 192.0.2.53\n";

    fn controller() -> Controller {
        let e = SeededEntropy::new(9);
        let ctx = Ctx::new("t", &e);
        let mut c = Controller::new(ControllerConfig::default(), &ctx).unwrap();
        let mut apply = |r| drop(c.apply(r, &ctx).unwrap());
        apply(Request::CreateNetwork(NetworkCreateRequest {
            name: "web".to_owned(),
            ..Default::default()
        }));
        for s in ["alpha", "beta", "gamma"] {
            apply(Request::CreateSandbox(
                crate::control::types::SandboxCreateRequest {
                    name: s.to_owned(),
                    ..Default::default()
                },
            ));
        }
        let connect = |net: &str, sb: &str, aliases: &[&str]| Request::Connect {
            network: net.to_owned(),
            request: ConnectRequest {
                container: sb.to_owned(),
                endpoint_config: Some(EndpointSettings {
                    aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        apply(connect("web", "alpha", &["db"]));
        apply(connect("web", "beta", &[]));
        apply(connect("bridge", "beta", &[]));
        apply(connect("bridge", "gamma", &[]));
        c
    }

    fn v4(l: Lookup) -> Vec<IpAddr> {
        match l {
            Lookup::Found(ips) => ips,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containers_of_other_hosts_answer_on_the_overlay_of_their_name() {
        let e = SeededEntropy::new(3);
        let ctx = Ctx::new("t", &e);
        let config = ControllerConfig {
            overlay: true,
            ..ControllerConfig::default()
        };
        let mut c = Controller::new(config, &ctx).unwrap();
        let mut apply = |r| drop(c.apply(r, &ctx).unwrap());
        for (name, driver) in [("ov1", "overlay"), ("local", "")] {
            apply(Request::CreateNetwork(NetworkCreateRequest {
                name: name.to_owned(),
                driver: driver.to_owned(),
                ..Default::default()
            }));
        }
        apply(Request::CreateSandbox(
            crate::control::types::SandboxCreateRequest {
                name: "here".to_owned(),
                ..Default::default()
            },
        ));
        apply(Request::Connect {
            network: "ov1".to_owned(),
            request: ConnectRequest {
                container: "here".to_owned(),
                ..Default::default()
            },
        });
        let m = c.model();
        let mut ids = SandboxIds::new();
        ids.sync(m);
        let mut plan = build(
            m,
            &ids,
            HOST,
            &DnsSettings::default(),
            Path::new("/etc/netns"),
        );
        let remote = |network: &str, name: &str, last: u8| crate::cluster::RemoteName {
            network: network.to_owned(),
            name: name.to_owned(),
            aliases: vec![format!("{name}-alias")],
            short_id: format!("{name}0123456789")[..12].to_owned(),
            hostname: None,
            ip: Ipv4Addr::new(10, 0, 0, last),
            vtep: Ipv4Addr::new(192, 0, 2, 2),
        };
        add_remote(
            &mut plan.records,
            m,
            &[
                remote("ov1", "there", 20),
                // Not an overlay here, and not a network here: left out.
                remote("local", "bridged", 21),
                remote("elsewhere", "absent", 22),
            ],
        );
        let here = ids
            .get(&m.sandboxes.iter().find(|s| s.name == "here").unwrap().id)
            .unwrap();
        let r = &plan.records;
        let there = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 20))];
        assert_eq!(v4(r.lookup(here, "there", Family::V4)), there);
        assert_eq!(v4(r.lookup(here, "there-alias", Family::V4)), there);
        assert_eq!(v4(r.lookup(here, "there.ov1", Family::V4)), there);
        assert_eq!(r.lookup(here, "bridged", Family::V4), Lookup::NotFound);
        assert_eq!(r.lookup(here, "absent", Family::V4), Lookup::NotFound);
        assert_eq!(
            r.lookup_ptr(here, "20.0.0.10").as_deref(),
            Some("there.ov1")
        );
        // The remote container gets no listener.
        assert_eq!(plan.listeners.len(), 1);
    }

    #[test]
    fn user_networks_only_with_names_aliases_and_short_ids() {
        let c = controller();
        let m = c.model();
        let mut ids = SandboxIds::new();
        ids.sync(m);
        let plan = build(
            m,
            &ids,
            HOST,
            &DnsSettings::default(),
            Path::new("/etc/netns"),
        );
        let sid = |name: &str| {
            let sb = m.sandboxes.iter().find(|s| s.name == name).unwrap();
            (ids.get(&sb.id).unwrap(), sb.short_id().to_owned())
        };
        let (alpha, alpha_short) = sid("alpha");
        let (beta, _) = sid("beta");
        let (gamma, _) = sid("gamma");
        let alpha_ip = IpAddr::V4(m.endpoints[0].ipv4);
        let r = &plan.records;
        assert_eq!(v4(r.lookup(beta, "alpha", Family::V4)), [alpha_ip]);
        assert_eq!(v4(r.lookup(beta, "DB.", Family::V4)), [alpha_ip]);
        assert_eq!(v4(r.lookup(beta, &alpha_short, Family::V4)), [alpha_ip]);
        assert_eq!(v4(r.lookup(beta, "alpha.web", Family::V4)), [alpha_ip]);
        assert_eq!(r.lookup(beta, "alpha", Family::V6), Lookup::Ipv6Miss);
        // The default bridge has no names, and a sandbox only on it has
        // no records at all.
        assert_eq!(r.lookup(alpha, "gamma", Family::V4), Lookup::NotFound);
        assert!(r.sandbox(gamma).is_none());
        assert_eq!(r.networks_of(beta).len(), 1);

        let listeners: Vec<_> = plan.listeners.iter().map(|l| l.id).collect();
        assert_eq!(listeners, [alpha, beta]);
        assert_eq!(plan.listeners[0].netns, Path::new("/run/netns/alpha"));

        let up = &r.sandbox(alpha).unwrap().upstreams;
        assert_eq!(up.len(), 2);
        assert_eq!(up[0].dial_from, DialFrom::Host);
        assert_eq!(up[1].dial_from, DialFrom::Sandbox);
        assert_eq!(up[1].addr.ip(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)));

        let conf = |name: &str| {
            plan.resolv_confs
                .iter()
                .find(|f| f.path == Path::new("/etc/netns").join(name).join("resolv.conf"))
                .unwrap()
                .contents
                .clone()
        };
        assert_eq!(
            conf("alpha"),
            "search example.org\nnameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert_eq!(conf("beta"), conf("alpha"));
        assert!(conf("gamma").contains("nameserver 192.0.2.53"));
        assert!(!conf("gamma").contains("127.0.0"));
    }

    #[test]
    fn daemon_dns_options_replace_the_hosts_servers_search_and_options() {
        let c = controller();
        let m = c.model();
        let mut ids = SandboxIds::new();
        ids.sync(m);
        let settings = DnsSettings {
            servers: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))],
            search: vec!["corp.test".to_owned()],
            options: vec!["ndots:2".to_owned()],
        };
        let plan = build(m, &ids, HOST, &settings, Path::new("/etc/netns"));
        let alpha = m.sandboxes.iter().find(|s| s.name == "alpha").unwrap();
        let up = &plan
            .records
            .sandbox(ids.get(&alpha.id).unwrap())
            .unwrap()
            .upstreams;
        assert_eq!(up.len(), 1, "--dns replaces the host's servers: {up:?}");
        assert_eq!(up[0].addr.ip(), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(
            up[0].dial_from,
            DialFrom::Sandbox,
            "--dns servers are dialled from the sandbox"
        );
        let file = plan
            .resolv_confs
            .iter()
            .find(|f| f.path == Path::new("/etc/netns/alpha/resolv.conf"))
            .unwrap();
        assert_eq!(
            file.contents,
            "search corp.test\nnameserver 127.0.0.11\noptions ndots:2\n"
        );
    }

    #[test]
    fn ids_are_stable_and_not_reused() {
        let c = controller();
        let m = c.model();
        let mut ids = SandboxIds::new();
        ids.sync(m);
        let first: Vec<_> = m.sandboxes.iter().map(|s| ids.get(&s.id)).collect();
        ids.sync(m);
        let again: Vec<_> = m.sandboxes.iter().map(|s| ids.get(&s.id)).collect();
        assert_eq!(first, again);
        let mut smaller = m.clone();
        let gone = smaller.sandboxes.remove(0);
        ids.sync(&smaller);
        assert_eq!(ids.get(&gone.id), None);
        assert_eq!(ids.get_or_assign("new"), SandboxId(3));
    }

    #[test]
    fn only_named_namespaces_get_a_file() {
        let c = controller();
        let mut sb = c.model().sandboxes[0].clone();
        assert_eq!(
            resolv_conf_path(Path::new("/x"), &sb),
            Some(PathBuf::from("/x/alpha/resolv.conf"))
        );
        sb.netns_path = "/proc/1/ns/net".to_owned();
        assert_eq!(resolv_conf_path(Path::new("/x"), &sb), None);
    }
}
