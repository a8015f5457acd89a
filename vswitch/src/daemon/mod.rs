//! The `vswitchd` process: threads, the state directory, and the wiring
//! between the control plane and the datapath.
//!
//! ```text
//!  main (supervisor) ── signals, thread deaths ──► shutdown or exit 1
//!   ├ vswitch-api      accepts on the unix socket; one short-lived thread
//!   │                  per connection (vswitch-api-req) parses and routes
//!   │                    reads  ─► the published Snapshot (never waits)
//!   │                    writes ─► control mailbox ─► reply (with a timeout)
//!   ├ vswitch-control  owns Controller, Store, IntentLog, DnsSync, Executor:
//!   │                  plan → intent → effects → save → DNS → publish
//!   ├ datapath-N       one Worker per core: its ports, Switch::process
//!   └ dns              the embedded DNS (crate::dnsd): 127.0.0.11 per sandbox
//! ```
//!
//! One thread, `vswitch-control`, owns the model and everything that
//! changes with it, fed by one mailbox ([`Message`]); a batch of requests
//! is applied from start to end before the next is taken, so changes need
//! no lock. Changes already queued when the thread takes one are applied
//! with it, each all-or-nothing (those that touch different sandboxes with
//! their effects running at once, in waves), and committed by one store
//! write (group commit: the `fsync` is the largest cost of a change),
//! before any of them is answered.
//! After each committed change the control thread publishes a
//! [`Snapshot`] (the controller and the DNS records) that readers clone
//! an `Arc` of: `network ls`, `show-fdb` and `dns show` never wait for a
//! change in progress, however slow its devices are.
//!
//! Every wait on another thread is bounded: an API request waits
//! [`REQUEST_TIMEOUT`] for the control thread, the control thread waits
//! for the datapath workers and the DNS thread with their own timeouts, and
//! each answers with an error that names who did not answer.
//!
//! A request's effects are written down first ([`intent`]), so a crash at
//! any step is completed or undone at the next start; the model is saved
//! before the answer. After a request has been committed, the embedded DNS
//! is brought in line with the model ([`dns_sync::DnsSync`]); it takes no
//! part in the request's success, so a request stays all-or-nothing.

pub mod dns_sync;
pub mod effects;
pub mod hooks;
pub mod intent;
pub mod lock;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::RwLock;

use crate::api::Backend;
use crate::control::error::Cause;
use crate::control::types::{DnsNetworkView, FdbView, PortView, SandboxView};
use crate::control::{
    ControlError, Controller, ControllerConfig, Ctx, Effect, OsEntropy, Request, Response, Sandbox,
    Store, Touched, rfc3339_nano,
};
use crate::datapath::Datapath;
use crate::events::{self, Event, EventHub};
use crate::ids::PortId;
use crate::netns::Netns;
use dns_sync::DnsSync;
use effects::Executor;
use hooks::{Hooks, Point};
use intent::IntentLog;

/// How long an API request waits for the control thread to answer a
/// change before it reports that the daemon is busy. The change itself
/// goes on and is committed or undone as usual.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The most changes committed by one store write.
const MAX_BATCH: usize = 64;

/// Where a change's answer goes.
pub type Reply = Sender<Result<Response, ControlError>>;

/// A change's answer.
pub type Answer = Result<Response, ControlError>;

/// The daemon's settings that are not state.
#[derive(Clone)]
pub struct DaemonConfig {
    /// The state directory (database, intent).
    pub state_dir: PathBuf,
    /// The controller's settings (namespace and handle directories…).
    pub controller: ControllerConfig,
    /// Whether the daemon's own network namespace may be adopted.
    pub allow_host_netns: bool,
    /// Test hooks ([`hooks`]); all off in production.
    pub hooks: Hooks,
    /// This host's VTEP (`vswitchd --vtep`), if it takes part in overlays.
    pub overlay: Option<Arc<crate::overlay::Underlay>>,
    /// The etcd control plane (`vswitchd --etcd`), if any: overlay
    /// networks and their addresses are claimed from it, and this host's
    /// endpoints published to it.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Whoever serves published ports: the host connector in `vswitchd`;
    /// [`crate::publish::HoldSink`] keeps their sockets open and carries no
    /// traffic (tests of the control plane alone).
    pub port_sink: Arc<dyn crate::publish::PublishedPortSink>,
    /// How TAP ports move frames (`vswitchd --tap-io`).
    pub tap_io: crate::port::TapIo,
}

impl core::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("state_dir", &self.state_dir)
            .field("controller", &self.controller)
            .field("allow_host_netns", &self.allow_host_netns)
            .field("hooks", &self.hooks)
            .field("tap_io", &self.tap_io)
            .finish_non_exhaustive()
    }
}

/// What the control thread last committed: readers answer from it without
/// waiting for a change in progress.
#[derive(Debug)]
pub struct Snapshot {
    /// The controller (model and IPAM) as of the last committed change,
    /// shared with the control thread until its next change copies it.
    pub controller: Arc<Controller>,
    /// The DNS records handed to the DNS thread with it.
    pub records: Arc<dns::Records>,
}

/// One message in the control thread's mailbox.
#[derive(Debug)]
pub enum Message {
    /// A change from the API, and where to send its answer.
    Apply {
        /// The request (boxed: requests are far larger than the other
        /// messages).
        request: Box<Request>,
        /// The answer goes here (the sender may have given up waiting).
        reply: Reply,
    },
    /// The cluster's names of remote containers changed: bring the
    /// embedded DNS in line.
    ClusterChanged,
    /// Leave the loop.
    Shutdown,
}

/// The control plane of a running daemon: the handle other threads use,
/// and the API server's [`Backend`].
#[derive(Debug)]
pub struct Daemon {
    mailbox: Sender<Message>,
    published: Arc<RwLock<Arc<Snapshot>>>,
    datapath: Datapath,
    /// The DNS thread, asked for its counters by [`Backend::metrics`].
    dnsd: Option<crate::dnsd::Dnsd>,
    /// Control-plane events, published by the control thread.
    events: Arc<EventHub>,
    /// This host's VTEP, if any.
    overlay: Option<Arc<crate::overlay::Underlay>>,
    /// The etcd control plane, if any.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state database could not be opened or read.
    #[error(transparent)]
    Store(#[from] crate::control::StoreError),
    /// The stored model is inconsistent, or the defaults could not be made.
    #[error("state: {0}")]
    Model(#[from] ControlError),
    /// The datapath could not be configured.
    #[error(transparent)]
    Effect(#[from] effects::EffectError),
    /// The switch configuration built from the stored model is invalid.
    #[error("switch configuration: {0}")]
    Config(#[from] crate::switch::ConfigError),
    /// The control thread could not be started.
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
}

/// Everything the control thread owns.
#[derive(Debug)]
struct ControlThread {
    /// Shared with the published snapshot and the copies a batch keeps to
    /// roll back to: a change builds the next one from one copy of the
    /// model ([`Controller::applied`]), never unsharing this one.
    controller: Arc<Controller>,
    store: Store,
    intent: IntentLog,
    entropy: OsEntropy,
    dns: Option<DnsSync>,
    executor: Executor,
    published: Arc<RwLock<Arc<Snapshot>>>,
    events: Arc<EventHub>,
    overlay: Option<Arc<crate::overlay::Underlay>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Set while a [`Message::ClusterChanged`] waits in the mailbox.
    cluster_changed: Arc<std::sync::atomic::AtomicBool>,
    datapath: Datapath,
}

impl Daemon {
    /// Opens the state (creating Docker's default `bridge` network on a
    /// first start), settles the intent a crash may have left, puts veth host ends in
    /// `port_netns` ([`effects::open_port_netns`]), hands the
    /// datapath its configuration, reattaches every endpoint's device,
    /// brings the embedded DNS in line, and starts the control thread.
    ///
    /// # Errors
    /// When the store cannot be read or written, or the stored model is
    /// inconsistent. A device that cannot be reattached is logged, not
    /// fatal: the rest of the host keeps working.
    pub fn start(
        config: DaemonConfig,
        datapath: Datapath,
        port_netns: crate::netns::Netns,
        mut dns: Option<DnsSync>,
    ) -> Result<(Self, JoinHandle<std::io::Result<()>>), StartError> {
        let dnsd = dns.as_ref().map(|d| d.dnsd().clone());
        let hub = Arc::new(EventHub::new());
        let mut store = Store::open(&config.state_dir)?;
        let entropy = OsEntropy::new();
        let ports = Arc::new(crate::publish::HostPorts::new(Arc::clone(
            &config.port_sink,
        )));
        let executor = Executor::new(
            datapath.clone(),
            config.hooks,
            config.allow_host_netns,
            port_netns,
            ports,
        )
        .with_tap_io(config.tap_io);
        let controller = if let Some(model) = store.load()? {
            tracing::info!(
                networks = model.networks.len(),
                endpoints = model.endpoints.len(),
                "state restored"
            );
            let mut controller = Controller::from_model(config.controller.clone(), model)?;
            let now = rfc3339_nano(SystemTime::now());
            if controller.ensure_predefined(&Ctx::new(&now, &entropy))? {
                store.save(controller.model())?;
                tracing::info!("added the pre-defined host and none networks");
            }
            controller
        } else {
            let now = rfc3339_nano(SystemTime::now());
            let controller = Controller::new(config.controller.clone(), &Ctx::new(&now, &entropy))?;
            store.save(controller.model())?;
            tracing::info!("first start: created the default bridge network");
            controller
        };
        let intent = IntentLog::new(&config.state_dir);
        match intent.load() {
            Ok(Some(effects)) => {
                tracing::warn!(
                    effects = effects.len(),
                    "the previous run stopped during a request; settling it"
                );
                executor.settle(controller.model(), &effects);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "unreadable intent ignored"),
        }
        if let Err(e) = intent.clear() {
            tracing::error!(error = %e, "cannot clear the intent");
        }
        remove_stale_handles(&config.controller.handle_dir, &controller);
        executor.push_config(&Arc::new(controller.switch_config()?))?;
        if let Some(underlay) = &config.overlay {
            sync_overlay(underlay, &datapath, &controller);
            datapath
                .add_port(
                    crate::overlay::UNDERLAY_PORT,
                    Arc::clone(underlay) as Arc<dyn crate::port::PortIo>,
                )
                .map_err(effects::EffectError::from)?;
        }
        let model = controller.model();
        for sb in &model.sandboxes {
            if sb.netns_owned
                && model.sandbox_endpoints(&sb.id).next().is_none()
                && let Err(e) = effects::ensure_named_netns(Path::new(&sb.netns_path))
            {
                tracing::error!(sandbox = %sb.name, error = %e, "namespace not recreated");
            }
        }
        for attachment in controller.attachments() {
            let owned = model
                .sandbox(&attachment.sandbox)
                .is_some_and(|s| s.netns_owned);
            if let Err(e) = executor.reattach(&attachment, owned) {
                let sandbox = model
                    .sandbox(&attachment.sandbox)
                    .map_or(attachment.sandbox.as_str(), |s| s.name.as_str());
                let network = model
                    .network(attachment.network)
                    .map_or_else(|| attachment.network.to_string(), |n| n.name.clone());
                tracing::error!(endpoint = %attachment.endpoint, sandbox, network = %network, error = %e, "endpoint not reattached");
                hub.publish(Event::now(
                    "endpoint",
                    "port_failed",
                    &attachment.endpoint,
                    &[
                        ("sandbox", sandbox),
                        ("network", &network),
                        ("port", &attachment.port.0.to_string()),
                        ("error", &e.to_string()),
                    ],
                ));
            }
        }
        for e in model.endpoints.iter().filter(|e| !e.published.is_empty()) {
            let Some(net) = model.network(e.network) else {
                continue;
            };
            if let Err(err) = executor.publish(net.num, e.ipv4, net.gateway, &e.published) {
                let sandbox = model
                    .sandbox(&e.sandbox)
                    .map_or(e.sandbox.as_str(), |s| s.name.as_str());
                tracing::error!(endpoint = %e.id, sandbox, error = %err, "published port not restored");
                hub.publish(Event::now(
                    "endpoint",
                    "port_failed",
                    &e.id,
                    &[
                        ("sandbox", sandbox),
                        ("network", &net.name),
                        ("error", &err.to_string()),
                    ],
                ));
            }
        }
        executor.ports().commit();
        if let Some(cluster) = &config.cluster {
            cluster.publish(crate::cluster::Desired::from_model(
                controller.model(),
                cluster.vtep(),
            ));
            if let Some(dns) = &mut dns {
                dns.set_remote(cluster.remote_names());
            }
        }
        if let Some(dns) = &mut dns {
            dns.sync(controller.model());
        }
        let controller = Arc::new(controller);
        let published = Arc::new(RwLock::new(Arc::new(Snapshot {
            controller: Arc::clone(&controller),
            records: dns
                .as_ref()
                .map_or_else(|| Arc::new(dns::Records::new()), DnsSync::records),
        })));
        let (tx, rx) = crossbeam_channel::unbounded();
        // At most one ClusterChanged waits in the mailbox: a burst of
        // watch events (a host with many endpoints coming back) costs one
        // pass over the cluster's networks and names, not one per event.
        let cluster_changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(cluster) = &config.cluster {
            let mailbox = tx.clone();
            let flag = Arc::clone(&cluster_changed);
            cluster.on_names_changed(Box::new(move || {
                if !flag.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let _ = mailbox.send(Message::ClusterChanged);
                }
            }));
            // What the client read before it could say so.
            cluster_changed.store(true, std::sync::atomic::Ordering::Release);
            let _ = tx.send(Message::ClusterChanged);
        }
        let thread = ControlThread {
            controller,
            store,
            intent,
            entropy,
            dns,
            executor,
            published: Arc::clone(&published),
            events: Arc::clone(&hub),
            overlay: config.overlay.clone(),
            cluster: config.cluster.clone(),
            cluster_changed,
            datapath: datapath.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("vswitch-control".to_owned())
            .spawn(move || {
                thread.run(&rx);
                Ok(())
            })
            .map_err(StartError::Thread)?;
        Ok((
            Self {
                mailbox: tx,
                published,
                datapath,
                dnsd,
                events: hub,
                overlay: config.overlay,
                cluster: config.cluster,
            },
            handle,
        ))
    }

    /// The last committed state.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.published.read())
    }

    /// Asks the control thread to stop after the change in progress.
    pub fn shutdown(&self) {
        let _ = self.mailbox.send(Message::Shutdown);
    }

    /// Fills `Peers` of overlay networks: this host, then the other VTEPs
    /// taking part.
    fn add_peers(&self, snapshot: &Snapshot, views: &mut [crate::control::types::NetworkInspect]) {
        let Some(underlay) = &self.overlay else {
            return;
        };
        for v in views {
            let Some(vni) = snapshot
                .controller
                .model()
                .networks
                .iter()
                .find(|n| n.id == v.id)
                .and_then(|n| fabric::Vni::new(n.vni?).ok())
            else {
                continue;
            };
            let me = crate::control::types::PeerInfo {
                name: underlay.name().to_owned(),
                ip: underlay.local().ip().to_string(),
            };
            let others =
                underlay
                    .peers(vni)
                    .into_iter()
                    .map(|(name, ip)| crate::control::types::PeerInfo {
                        name,
                        ip: ip.to_string(),
                    });
            v.peers = Some(std::iter::once(me).chain(others).collect());
        }
    }

    /// Hands a change to the control thread and waits for its answer.
    fn change(&self, request: Request) -> Result<Response, ControlError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.mailbox
            .send(Message::Apply {
                request: Box::new(request),
                reply,
            })
            .map_err(|_| {
                ControlError::internal("handing the request over", "the control thread has stopped")
            })?;
        match answer.recv_timeout(REQUEST_TIMEOUT) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(ControlError::internal(
                "waiting for the control thread",
                format!(
                    "no answer within {} s; the request goes on and is committed or undone",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(ControlError::internal(
                "waiting for the control thread",
                "it stopped before answering",
            )),
        }
    }

    /// Takes from the cluster what `request` needs before the control
    /// thread sees it, and writes what it got into the request: an
    /// overlay network's VNI, subnet and gateway, an address on one.
    /// Fails, with nothing changed anywhere, when etcd cannot be reached.
    fn claim(
        &self,
        cluster: &crate::cluster::Cluster,
        request: &mut Request,
    ) -> Result<Claim, ControlError> {
        use crate::cluster::etcd::{AddressClaim, NetworkClaim};
        let cluster_err =
            |e: crate::cluster::ClusterError| ControlError::Unsupported(e.to_string());
        let snapshot = self.snapshot();
        let model = snapshot.controller.model();
        match request {
            Request::CreateNetwork(r) if r.driver == "overlay" => {
                if model.networks.iter().any(|n| n.name == r.name) {
                    // The controller answers with Docker's text.
                    return Ok(Claim::None);
                }
                let ipam = r.ipam.get_or_insert_with(Default::default);
                let first = ipam.config.iter().position(|c| {
                    c.subnet
                        .as_deref()
                        .is_some_and(|s| !s.is_empty() && !s.contains(':'))
                });
                let parse_err = |what: &str, v: &str| {
                    ControlError::Unsupported(format!("invalid {what} {v:?}"))
                };
                let (subnet, gateway) = match first.map(|i| &ipam.config[i]) {
                    Some(c) => {
                        let text = c.subnet.clone().unwrap_or_default();
                        let subnet: ipnet::Ipv4Net =
                            text.parse().map_err(|_| parse_err("subnet", &text))?;
                        let gateway = match c.gateway.as_deref().filter(|g| !g.is_empty()) {
                            Some(g) => Some(g.parse().map_err(|_| parse_err("gateway", g))?),
                            None => None,
                        };
                        (Some(subnet.trunc()), gateway)
                    }
                    None => (None, None),
                };
                let vni = match r.options.get(crate::control::model::OPT_VXLANID_LIST) {
                    Some(v) => Some(v.trim().parse::<u32>().map_err(|_| parse_err("VNI", v))?),
                    None => None,
                };
                let local_subnets = model
                    .networks
                    .iter()
                    .filter_map(|n| ipnet::Ipv4Net::new(n.gateway, n.prefix_len).ok())
                    .map(|n| n.trunc())
                    .collect();
                let (record, created) = cluster
                    .claim_network(NetworkClaim {
                        name: r.name.clone(),
                        subnet,
                        gateway,
                        vni,
                        attachable: r.attachable,
                        internal: r.internal,
                        options: r.options.clone(),
                        local_subnets,
                    })
                    .map_err(cluster_err)?;
                if !created {
                    // Names are cluster-wide, as in Docker's global scope:
                    // this host gets the network from the cluster, never
                    // by creating it again.
                    return Err(ControlError::NetworkExists(record.name));
                }
                let mut entry = first.map(|i| ipam.config.remove(i)).unwrap_or_default();
                entry.subnet = Some(record.subnet.to_string());
                entry.gateway = Some(record.gateway.to_string());
                ipam.config.insert(0, entry);
                r.options.insert(
                    crate::control::model::OPT_VXLANID_LIST.to_owned(),
                    record.vni.to_string(),
                );
                Ok(Claim::NewNetwork(record.name))
            }
            Request::Connect { network, request } => {
                let Some(net) = model
                    .networks
                    .iter()
                    .find(|n| {
                        n.name == *network || n.id == *network || n.id.starts_with(network.as_str())
                    })
                    .filter(|n| n.vni.is_some())
                else {
                    return Ok(Claim::None);
                };
                let typed = request
                    .endpoint_config
                    .as_ref()
                    .and_then(|s| s.ipam_config.as_ref())
                    .map(|c| c.ipv4_address.as_str())
                    .filter(|a| !a.is_empty());
                let requested = match typed {
                    None => None,
                    Some(text) => Some(text.parse().map_err(|_| {
                        ControlError::from(ipam::IpamError::InvalidIpv4Address {
                            value: text.to_owned(),
                        })
                    })?),
                };
                let subnet = ipnet::Ipv4Net::new(net.gateway, net.prefix_len)
                    .map_err(|e| ControlError::internal("the network's subnet", e))?
                    .trunc();
                let ip = cluster
                    .claim_address(AddressClaim {
                        network: net.name.clone(),
                        subnet,
                        gateway: net.gateway,
                        // An address another allocator already picked
                        // (Docker's IPAM) is claimed as it is.
                        requested: requested.or(request.assigned_ipv4),
                        local_taken: model.network_endpoints(net.num).map(|e| e.ipv4).collect(),
                    })
                    .map_err(cluster_err)?;
                // A `--ip` stays the user's; an address the cluster picked
                // is dynamic (Docker shows `IPAMConfig` only for the first).
                if requested.is_none() {
                    request.assigned_ipv4 = Some(ip);
                }
                Ok(Claim::Address(net.name.clone(), ip))
            }
            Request::RemoveNetwork { name, .. } => {
                let net = model
                    .networks
                    .iter()
                    .find(|n| n.name == *name || n.id == *name || n.id.starts_with(name.as_str()))
                    .filter(|n| n.vni.is_some());
                match net {
                    Some(_) if !cluster.is_up() => {
                        Err(cluster_err(cluster.unreachable("no session")))
                    }
                    // Docker refuses while any host has an endpoint on it.
                    Some(n) if cluster.remote_endpoints(&n.name) > 0 => {
                        Err(ControlError::ActiveEndpoints {
                            name: n.name.clone(),
                            id: n.id.clone(),
                        })
                    }
                    Some(n) => Ok(Claim::RemovedNetwork(n.name.clone())),
                    None => Ok(Claim::None),
                }
            }
            _ => Ok(Claim::None),
        }
    }

    /// After the change: what was claimed for a request that failed is
    /// given back; a removed overlay network is released.
    fn settle(cluster: &crate::cluster::Cluster, claim: Claim, ok: bool) {
        match claim {
            Claim::None => {}
            Claim::NewNetwork(name) => cluster.settle_network(name, ok),
            Claim::Address(network, ip) => cluster.settle(network, ip),
            Claim::RemovedNetwork(name) => {
                if ok {
                    // Gone here, so gone everywhere: the other hosts
                    // remove it when its record goes.
                    cluster.release_network(name, true);
                }
            }
        }
    }

    /// Marks the adopted namespaces that are gone in sandbox views.
    fn mark_gone(snapshot: &Snapshot, views: &mut [SandboxView]) {
        for v in views.iter_mut().filter(|v| !v.netns_owned) {
            if let Some(sb) = snapshot.controller.model().sandbox(&v.id) {
                v.netns_gone = netns_gone(sb);
            }
        }
    }
}

/// What a request took from the cluster.
#[derive(Debug)]
enum Claim {
    None,
    /// An overlay network this request made in the cluster.
    NewNetwork(String),
    /// An address on an overlay network.
    Address(String, core::net::Ipv4Addr),
    /// An overlay network to release once removed here.
    RemovedNetwork(String),
}

impl Backend for Daemon {
    fn apply(&self, request: Request) -> Result<Response, ControlError> {
        if !request.is_mutating() {
            let snapshot = self.snapshot();
            let mut response = snapshot.controller.query(&request)?;
            match &mut response {
                Response::Sandbox(v) => Self::mark_gone(&snapshot, std::slice::from_mut(v)),
                Response::Sandboxes(vs) => Self::mark_gone(&snapshot, vs),
                Response::Network(n) => self.add_peers(&snapshot, std::slice::from_mut(n)),
                Response::Networks(ns) => self.add_peers(&snapshot, ns),
                _ => {}
            }
            return Ok(response);
        }
        let Some(cluster) = &self.cluster else {
            return self.change(request);
        };
        let mut request = request;
        let claim = self.claim(cluster, &mut request)?;
        let result = self.change(request);
        Self::settle(cluster, claim, result.is_ok());
        result
    }

    fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ControlError> {
        let rows = self
            .datapath
            .fdb()
            .map_err(|e| ControlError::internal("reading the FDB from the datapath", e))?;
        let snapshot = self.snapshot();
        let mut views = snapshot.controller.fdb_views(&rows, network)?;
        if let Some(underlay) = &self.overlay {
            // A MAC learned on an overlay network's port lives behind the
            // VTEP the underlay's table names.
            let model = snapshot.controller.model();
            for view in &mut views {
                let Some(vni) = model
                    .networks
                    .iter()
                    .find(|n| n.vtep_port == Some(view.port))
                    .and_then(|n| fabric::Vni::new(n.vni?).ok())
                else {
                    continue;
                };
                view.vtep = underlay
                    .remote_macs(vni)
                    .iter()
                    .find(|m| crate::ids::MacAddr(m.mac).to_string() == view.mac_address)
                    .map(|m| m.vtep.to_string());
            }
        }
        Ok(views)
    }

    fn vteps(
        &self,
        network: Option<&str>,
    ) -> Result<Vec<crate::control::types::VtepView>, ControlError> {
        let Some(underlay) = &self.overlay else {
            return Err(ControlError::Unsupported(
                "this host has no VTEP: start vswitchd with --vtep ADDR".to_owned(),
            ));
        };
        let snapshot = self.snapshot();
        let model = snapshot.controller.model();
        let vni = match network {
            Some(name) => {
                let n = model
                    .networks
                    .iter()
                    .find(|n| n.name == name || n.id == name || n.id.starts_with(name))
                    .ok_or_else(|| ControlError::NetworkNotFound(name.to_owned()))?;
                Some(fabric::Vni::new(n.vni.unwrap_or(0)).map_err(|_| {
                    ControlError::Unsupported(format!("network {} is not an overlay", n.name))
                })?)
            }
            None => None,
        };
        let name_of = |v: fabric::Vni| {
            model
                .networks
                .iter()
                .find(|n| n.vni == Some(v.get()))
                .map_or_else(|| v.get().to_string(), |n| n.name.clone())
        };
        Ok(underlay
            .vteps(vni)
            .into_iter()
            .map(|s| crate::control::types::VtepView {
                vtep: s.vtep.to_string(),
                host: s.name,
                networks: s.networks.iter().map(|v| name_of(*v)).collect(),
                endpoints: s.endpoints + s.learned,
                last_seen: s.last_seen.map(|d| d.as_secs()),
                tx_packets: s.stats.tx_packets,
                rx_packets: s.stats.rx_packets,
                drops: s.stats.drops,
            })
            .collect())
    }

    fn underlay(&self) -> Result<crate::control::types::UnderlayView, ControlError> {
        let Some(underlay) = &self.overlay else {
            return Err(ControlError::Unsupported(
                "this host has no VTEP: start vswitchd with --vtep ADDR".to_owned(),
            ));
        };
        let (stats, drops) = underlay.stats();
        Ok(crate::control::types::UnderlayView {
            vtep: underlay.local().to_string(),
            counters: stats.named(),
            drops: drops.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
    }

    fn conntrack(
        &self,
        network: Option<&str>,
        sandbox: Option<&str>,
    ) -> Result<Vec<crate::control::types::ConntrackView>, ControlError> {
        let flows = self
            .datapath
            .host()
            .map(|h| h.flows().snapshot(std::time::Instant::now(), |_| true))
            .unwrap_or_default();
        self.snapshot()
            .controller
            .conntrack_views(&flows, network, sandbox)
    }

    fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        let stats = self
            .datapath
            .port_stats()
            .map_err(|e| ControlError::internal("reading counters from the datapath", e))?;
        Ok(self.snapshot().controller.port_views(|port| {
            stats
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        }))
    }

    fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError> {
        let snapshot = self.snapshot();
        snapshot.controller.dns_views(&snapshot.records, network)
    }

    fn events(
        &self,
        since: Option<u64>,
    ) -> Option<(Vec<Event>, crossbeam_channel::Receiver<Event>)> {
        Some(self.events.subscribe(since))
    }

    fn trace(
        &self,
        request: &crate::trace::TraceRequest,
    ) -> Result<crate::trace::TraceReport, ControlError> {
        let snapshot = self.snapshot();
        let model = snapshot.controller.model();
        let given = request
            .frame
            .as_deref()
            .map(crate::trace::parse_hex)
            .transpose()?;
        let ep = crate::trace::ingress(model, request, given.as_deref())?;
        let (frame, notes) = match given {
            Some(f) => (f, Vec::new()),
            None => {
                let config = snapshot
                    .controller
                    .switch_config()
                    .map_err(|e| ControlError::internal("building the switch configuration", e))?;
                crate::trace::build_frame(model, &config, ep, request)?
            }
        };
        let run = self
            .datapath
            .trace(ep.port, frame.clone())
            .map_err(|e| ControlError::internal("tracing in the datapath", e))?;
        Ok(crate::trace::explain(model, ep.port, &frame, notes, &run))
    }

    fn capture(&self, target: &str) -> Result<(String, crate::datapath::Capture), ControlError> {
        let snapshot = self.snapshot();
        let model = snapshot.controller.model();
        let port = if let Ok(n) = target.parse::<u32>() {
            model
                .endpoints
                .iter()
                .find(|e| e.port.0 == n)
                .map(|e| e.port)
                .ok_or_else(|| ControlError::SandboxNotFound(format!("port {n}")))?
        } else {
            let (sandbox, interface) = match target.split_once(':') {
                Some((s, i)) => (s.to_owned(), Some(i.to_owned())),
                None => (target.to_owned(), None),
            };
            let request = crate::trace::TraceRequest {
                sandbox: Some(sandbox),
                interface,
                ..crate::trace::TraceRequest::default()
            };
            crate::trace::ingress(model, &request, None)?.port
        };
        let named = crate::trace::port_ref(model, port);
        let name = format!(
            "{}:{} (port {}, network {})",
            named.sandbox, named.interface, port.0, named.network
        );
        let capture = self
            .datapath
            .capture(port)
            .map_err(|e| ControlError::internal("starting the capture in the datapath", e))?;
        Ok((name, capture))
    }

    fn metrics(&self) -> Result<String, ControlError> {
        let sample = crate::metrics::Sample {
            ports: self.ports()?,
            fdb_entries: self
                .datapath
                .fdb()
                .map_err(|e| ControlError::internal("reading the FDB from the datapath", e))?
                .len(),
            fdb: self
                .datapath
                .fdb_stats()
                .map_err(|e| ControlError::internal("reading FDB counters from the datapath", e))?,
            dns: match &self.dnsd {
                Some(d) => Some(
                    d.stats()
                        .map_err(|e| ControlError::internal("reading DNS counters", e))?,
                ),
                None => None,
            },
        };
        crate::metrics::render(&sample).map_err(|e| ControlError::internal("building /metrics", e))
    }
}

impl ControlThread {
    fn run(mut self, mailbox: &Receiver<Message>) {
        while let Ok(message) = mailbox.recv() {
            let (request, reply) = match message {
                Message::Apply { request, reply } => (request, reply),
                Message::ClusterChanged => {
                    self.follow_cluster();
                    continue;
                }
                Message::Shutdown => break,
            };
            // Whatever else is already queued joins this batch, so that its
            // changes share one store write (group commit).
            let mut batch = vec![(*request, reply)];
            let mut stop = false;
            let mut names = false;
            while batch.len() < MAX_BATCH {
                match mailbox.try_recv() {
                    Ok(Message::Apply { request, reply }) => batch.push((*request, reply)),
                    Ok(Message::ClusterChanged) => names = true,
                    Ok(Message::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if names {
                self.follow_cluster();
            }
            for (reply, result) in self.apply_batch(batch) {
                // The requester may have timed out; the change stands.
                let _ = reply.send(result);
            }
            if stop {
                break;
            }
        }
        tracing::debug!("control thread stopped");
    }

    /// Applies a batch of changes, each all-or-nothing, and commits those
    /// that succeeded with one store write; if that write fails, every one
    /// of them is undone. Returns the answers.
    ///
    /// Changes are planned one after another, each on the model the one
    /// before left; consecutive changes that touch different sandboxes form
    /// a wave whose effects run at once, one thread each ([`Self::run_wave`]),
    /// so that what the kernel makes them wait for (RCU grace periods when
    /// devices and namespaces come and go, tens of milliseconds on a busy
    /// host) is waited for once per wave rather than once per change.
    fn apply_batch(&mut self, batch: Vec<(Request, Reply)>) -> Vec<(Reply, Answer)> {
        let start = Arc::clone(&self.controller);
        // Published ports' sockets are opened while a change is planned:
        // each change can be taken back to its own mark, the batch to its.
        let ports = Arc::clone(self.executor.ports());
        let batch_mark = ports.mark();
        let mut st = BatchState::default();
        let mut queue: std::collections::VecDeque<(Request, Reply)> = batch.into();
        let mut wave: Vec<Planned> = Vec::new();
        while let Some((request, reply)) = queue.pop_front() {
            let before = Arc::clone(&self.controller);
            let mark = ports.mark();
            let asked = request.clone();
            let (response, effects) = match self.plan(request) {
                Ok(planned) => planned,
                Err(e) => {
                    self.controller = before;
                    ports.rollback_to(mark);
                    failed(&asked, &e);
                    st.answers.push((reply, Err(e)));
                    continue;
                }
            };
            let keys = conflict_keys(&effects);
            if !wave.is_empty()
                && (keys.is_none()
                    || wave.iter().any(|w| match (&w.keys, &keys) {
                        (Some(a), Some(b)) => !a.is_disjoint(b),
                        _ => true,
                    }))
            {
                // Planned again once the wave it depends on has run (a
                // namespace's file, say, exists until its removal runs).
                self.controller = before;
                ports.rollback_to(mark);
                queue.push_front((asked, reply));
                self.run_wave(std::mem::take(&mut wave), &mut st);
                continue;
            }
            if let Err(e) = self.precheck(&effects) {
                self.controller = before;
                ports.rollback_to(mark);
                failed(&asked, &e);
                st.answers.push((reply, Err(e)));
                continue;
            }
            wave.push(Planned {
                asked,
                reply,
                mark,
                before,
                after: Arc::clone(&self.controller),
                response,
                effects,
                keys,
            });
        }
        if !wave.is_empty() {
            self.run_wave(wave, &mut st);
        }
        let BatchState {
            done,
            mut answers,
            touched,
            happened,
        } = st;
        if touched.is_empty() {
            ports.commit();
            return answers;
        }
        let hooks = *self.executor.hooks();
        hooks.reached(Point::EffectsDone);
        if let Err(e) = self.store.save_touched(self.controller.model(), &touched) {
            tracing::error!(error = %e, "cannot save the state; undoing the batch");
            self.executor.undo_all(&done);
            ports.rollback_to(batch_mark);
            self.controller = start;
            self.restore_config();
            self.clear_intent();
            let cause = Cause::new(e);
            for (_, result) in &mut answers {
                if result.is_ok() {
                    *result = Err(ControlError::Internal {
                        context: "saving the state".to_owned(),
                        source: cause.clone(),
                    });
                }
            }
            return answers;
        }
        hooks.reached(Point::Saved);
        ports.commit();
        self.clear_intent();
        if let Some(dns) = &mut self.dns {
            dns.sync_touched(self.controller.model(), &touched);
        }
        self.publish();
        if let Some(underlay) = &self.overlay {
            sync_overlay(underlay, &self.datapath, &self.controller);
        }
        if let Some(cluster) = &self.cluster {
            // Before the answers: a request's claim is settled after its
            // answer, by when the client has the state that holds it.
            cluster.publish(crate::cluster::Desired::from_model(
                self.controller.model(),
                cluster.vtep(),
            ));
        }
        // Only now, with the batch saved, did these changes happen.
        for event in happened {
            self.events.publish(event);
        }
        answers
    }

    /// Plans one change on the current controller, which it replaces: the
    /// answer and the effects.
    fn plan(&mut self, request: Request) -> Result<(Response, Vec<Effect>), ControlError> {
        let now = rfc3339_nano(SystemTime::now());
        let ports = Arc::clone(self.executor.ports());
        let binder = core::cell::RefCell::new(ports.binder());
        let ctx = Ctx::new(&now, &self.entropy).with_binder(&binder);
        let (next, outcome) = self.controller.applied(request, &ctx)?;
        if !outcome.changed {
            return Err(ControlError::internal(
                "applying a request",
                "query routed as a change",
            ));
        }
        self.controller = Arc::new(next);
        Ok((outcome.response, outcome.effects))
    }

    /// Carries out the effects of a wave of planned changes, each on its
    /// own thread when there are several, and records those that
    /// succeeded in `st`. When one fails, the others are undone too, the
    /// controller goes back to where the wave began, and each change is
    /// planned and carried out again alone: the failing one fails by
    /// itself, the rest succeed as if the wave had never been.
    fn run_wave(&mut self, wave: Vec<Planned>, st: &mut BatchState) {
        let Some(first) = wave.first() else {
            return;
        };
        let start = Arc::clone(&first.before);
        let mark = first.mark;
        let ports = Arc::clone(self.executor.ports());
        let mut intent = st.done.clone();
        for p in &wave {
            intent.extend(p.effects.iter().cloned());
        }
        if let Err(e) = self.intent.write(&intent) {
            self.controller = start;
            ports.rollback_to(mark);
            let e = ControlError::internal("writing the intent", e);
            for p in wave {
                failed(&p.asked, &e);
                st.answers.push((p.reply, Err(e.clone())));
            }
            return;
        }
        self.executor.hooks().reached(Point::IntentWritten);
        let result = if let [one] = wave.as_slice() {
            self.run_one(one)
        } else {
            self.run_parallel(&start, &wave)
        };
        match result {
            Ok(()) => {
                for p in wave {
                    st.record(p);
                }
            }
            Err(e) if wave.len() == 1 => {
                // Back to the state before the request: model, IPAM and
                // the datapath's configuration (the executor undid its
                // devices), and the published ports.
                self.controller = start;
                ports.rollback_to(mark);
                self.restore_config();
                self.write_intent(&st.done);
                let e = ControlError::internal("carrying out the request", e);
                for p in wave {
                    failed(&p.asked, &e);
                    st.answers.push((p.reply, Err(e.clone())));
                }
            }
            Err(_) => {
                self.controller = start;
                ports.rollback_to(mark);
                self.restore_config();
                self.write_intent(&st.done);
                for p in wave {
                    let before = Arc::clone(&self.controller);
                    let mark = ports.mark();
                    match self.plan(p.asked.clone()) {
                        Ok((response, effects)) => {
                            let again = Planned {
                                keys: None,
                                mark,
                                asked: p.asked,
                                reply: p.reply,
                                after: Arc::clone(&self.controller),
                                before,
                                response,
                                effects,
                            };
                            match self.precheck(&again.effects) {
                                Ok(()) => self.run_wave(vec![again], st),
                                Err(e) => {
                                    self.controller = again.before;
                                    ports.rollback_to(mark);
                                    failed(&again.asked, &e);
                                    st.answers.push((again.reply, Err(e)));
                                }
                            }
                        }
                        Err(e) => {
                            self.controller = before;
                            ports.rollback_to(mark);
                            failed(&p.asked, &e);
                            st.answers.push((p.reply, Err(e)));
                        }
                    }
                }
            }
        }
    }

    /// One change's effects, in order, the switch configuration pushed
    /// where the plan puts it.
    fn run_one(&self, p: &Planned) -> Result<(), effects::EffectError> {
        let config = if p.effects.contains(&Effect::PushSwitchConfig) {
            Some(Arc::new(p.after.switch_config()?))
        } else {
            None
        };
        self.executor.run(&p.effects, config.as_ref())
    }

    /// Several independent changes' effects at once, one thread each. The
    /// switch configuration is pushed around them, not by each: first
    /// without the ports the wave removes nor those it adds (so no port is
    /// configured without its device), then the wave's final one.
    fn run_parallel(
        &self,
        start: &Controller,
        wave: &[Planned],
    ) -> Result<(), effects::EffectError> {
        let push = wave
            .iter()
            .any(|p| p.effects.contains(&Effect::PushSwitchConfig));
        let removes = wave.iter().any(|p| {
            p.effects
                .iter()
                .any(|e| matches!(e, Effect::DetachEndpoint(_)))
        });
        if push && removes {
            let before: std::collections::HashSet<PortId> =
                start.model().endpoints.iter().map(|e| e.port).collect();
            let config = self
                .controller
                .switch_config_where(|port| before.contains(&port))?;
            self.executor.push_config(&Arc::new(config))?;
        }
        let results: Vec<Result<(), effects::EffectError>> = std::thread::scope(|scope| {
            let running: Vec<_> = wave
                .iter()
                .map(|p| {
                    let effects: Vec<Effect> = p
                        .effects
                        .iter()
                        .filter(|e| **e != Effect::PushSwitchConfig)
                        .cloned()
                        .collect();
                    let executor = &self.executor;
                    std::thread::Builder::new()
                        .name("vswitch-effects".to_owned())
                        .spawn_scoped(scope, move || executor.run(&effects, None))
                })
                .collect();
            running
                .into_iter()
                .map(|spawned| match spawned {
                    Ok(handle) => match handle.join() {
                        Ok(result) => result,
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(e) => Err(effects::EffectError::Datapath(e)),
                })
                .collect()
        });
        let failed = results.iter().any(Result::is_err);
        let pushed = if failed || !push {
            Ok(())
        } else {
            self.controller
                .switch_config()
                .map_err(effects::EffectError::from)
                .and_then(|config| self.executor.push_config(&Arc::new(config)))
        };
        if failed || pushed.is_err() {
            // Each failed change undid its own effects; undo the others.
            for (p, result) in wave.iter().zip(&results).rev() {
                if result.is_ok() {
                    let effects: Vec<Effect> = p
                        .effects
                        .iter()
                        .filter(|e| **e != Effect::PushSwitchConfig)
                        .cloned()
                        .collect();
                    self.executor.undo_all(&effects);
                }
            }
        }
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => pushed,
        }
    }

    /// Pushes the current controller's configuration (after a rollback).
    fn restore_config(&self) {
        match self.controller.switch_config() {
            Ok(config) => {
                if let Err(push) = self.executor.push_config(&Arc::new(config)) {
                    tracing::error!(error = %push, "cannot restore the datapath configuration");
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot rebuild the datapath configuration"),
        }
    }

    fn write_intent(&self, effects: &[Effect]) {
        let result = if effects.is_empty() {
            self.intent.clear()
        } else {
            self.intent.write(effects)
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot rewrite the intent");
        }
    }

    /// Refusals that need the host: a named namespace that exists already
    /// (so a crash before the daemon makes it can never lead to deleting
    /// someone else's), and an adopted namespace that is gone.
    fn precheck(&self, effects: &[Effect]) -> Result<(), ControlError> {
        for effect in effects {
            match effect {
                Effect::CreateNetns { path, name, .. } if path.symlink_metadata().is_ok() => {
                    return Err(ControlError::internal(
                        "carrying out the request",
                        effects::EffectError::Netns {
                            name: name.clone(),
                            source: crate::netns::NetnsError::CreateFile {
                                path: path.clone(),
                                source: std::io::Error::from_raw_os_error(libc::EEXIST),
                            },
                        },
                    ));
                }
                Effect::AttachEndpoint(a) => {
                    if let Some(sb) = self.controller.model().sandbox(&a.sandbox)
                        && !sb.netns_owned
                        && sb.netns_handle.is_some()
                        && netns_gone(sb)
                    {
                        return Err(ControlError::NetnsGone {
                            sandbox: sb.name.clone(),
                            path: sb.netns_path.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn clear_intent(&self) {
        if let Err(e) = self.intent.clear() {
            tracing::error!(error = %e, "cannot clear the intent");
        }
    }

    /// Brings the local overlay networks in line with the cluster's, as
    /// Docker's global-scope networks are on every host: a network made
    /// on another host is created here with its record's VNI, subnet and
    /// gateway; one whose record is gone is removed here unless local
    /// containers are still on it. Then the embedded DNS's names.
    fn follow_cluster(&mut self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        // Cleared before reading: a change from now on sends another.
        self.cluster_changed
            .store(false, std::sync::atomic::Ordering::Release);
        let records = cluster.networks();
        let model = self.controller.model();
        let mut requests = Vec::new();
        for rec in &records {
            match model.networks.iter().find(|n| n.name == rec.name) {
                Some(n) if n.vni != Some(rec.vni) => {
                    tracing::warn!(network = %rec.name, "a local network has the name of a cluster overlay network; not joined");
                }
                Some(_) => {}
                None => requests.push(Request::CreateNetwork(
                    crate::control::types::NetworkCreateRequest {
                        name: rec.name.clone(),
                        driver: "overlay".to_owned(),
                        internal: rec.internal,
                        attachable: rec.attachable,
                        options: rec.options.clone(),
                        ipam: Some(crate::control::types::IpamRequest {
                            config: vec![crate::control::types::IpamConfigEntry {
                                subnet: Some(rec.subnet.to_string()),
                                gateway: Some(rec.gateway.to_string()),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
            }
        }
        // Removals only from a whole view: before the first read, every
        // network would look gone.
        if cluster.is_up() {
            for n in model.networks.iter().filter(|n| n.vni.is_some()) {
                if !records.iter().any(|r| r.name == n.name)
                    && model.network_endpoints(n.num).next().is_none()
                    && !cluster.is_pending(&n.name)
                {
                    requests.push(Request::RemoveNetwork {
                        name: n.name.clone(),
                    });
                }
            }
        }
        if !requests.is_empty() {
            let batch = requests
                .into_iter()
                .map(|r| (r, crossbeam_channel::bounded(1).0))
                .collect();
            for (_, answer) in self.apply_batch(batch) {
                if let Err(e) = answer {
                    tracing::warn!(error = %e, "cluster network not followed");
                }
            }
        }
        self.refresh_remote_names();
    }

    /// Brings the embedded DNS's names of remote containers in line with
    /// the cluster.
    fn refresh_remote_names(&mut self) {
        let (Some(cluster), Some(dns)) = (&self.cluster, &mut self.dns) else {
            return;
        };
        dns.set_remote(cluster.remote_names());
        dns.sync(self.controller.model());
        self.publish();
    }

    fn publish(&self) {
        let snapshot = Arc::new(Snapshot {
            controller: Arc::clone(&self.controller),
            records: self
                .dns
                .as_ref()
                .map_or_else(|| Arc::new(dns::Records::new()), DnsSync::records),
        });
        *self.published.write() = snapshot;
    }
}

/// Brings the underlay's networks and ports in line with the model's
/// overlay networks.
fn sync_overlay(underlay: &Arc<crate::overlay::Underlay>, datapath: &Datapath, c: &Controller) {
    let nets: Vec<(fabric::Vni, crate::ids::PortId)> = c
        .overlay_networks()
        .into_iter()
        .filter_map(|(vni, port)| Some((fabric::Vni::new(vni).ok()?, port)))
        .collect();
    if let Err(e) = underlay.sync(datapath, &nets) {
        tracing::error!(error = %e, "cannot bring the overlay networks in line");
    }
}

/// A change planned and prechecked, waiting for its wave to run.
#[derive(Debug)]
struct Planned {
    /// The request, to plan it again alone if its wave fails.
    asked: Request,
    reply: Reply,
    /// The published ports before it was planned (its sockets are opened
    /// while planning).
    mark: crate::publish::Mark,
    /// The controller before and after it.
    before: Arc<Controller>,
    after: Arc<Controller>,
    response: Response,
    effects: Vec<Effect>,
    /// What its effects touch ([`conflict_keys`]).
    keys: Option<BTreeSet<String>>,
}

/// What a batch has done so far.
#[derive(Debug, Default)]
struct BatchState {
    /// The effects carried out, in order: the intent, and what a failed
    /// save undoes.
    done: Vec<Effect>,
    answers: Vec<(Reply, Answer)>,
    touched: Touched,
    /// Events to publish once the batch is saved.
    happened: Vec<Event>,
}

impl BatchState {
    /// Records a change whose effects were carried out.
    fn record(&mut self, p: Planned) {
        let (old, new) = (p.before.model(), p.after.model());
        self.touched.add(&p.effects, |num| {
            new.network(num)
                .or_else(|| old.network(num))
                .is_some_and(|n| n.builtin)
        });
        self.happened
            .extend(events::of_change(&p.asked, &p.response, old, new));
        self.done.extend(p.effects);
        self.answers.push((p.reply, Ok(p.response)));
    }
}

/// Logs a change that failed and left nothing behind.
fn failed(asked: &Request, e: &ControlError) {
    let (sandbox, network) = events::subjects(asked);
    tracing::warn!(
        request = events::kind(asked),
        sandbox = sandbox.unwrap_or("-"),
        network = network.unwrap_or("-"),
        error = %e,
        "request failed and was rolled back"
    );
}

/// What a change's effects touch on the host: its sandboxes and their
/// namespace files and handles. Changes whose keys are disjoint can run at
/// once. `None` for a change of the networks alone (its only effect is the
/// switch configuration), which runs by itself.
fn conflict_keys(effects: &[Effect]) -> Option<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    let mut path = |p: &Path| keys.insert(p.display().to_string());
    let mut sandboxes = Vec::new();
    let mut publishes = false;
    for effect in effects {
        match effect {
            Effect::CreateNetns {
                sandbox, path: p, ..
            }
            | Effect::DeleteNetns {
                sandbox, path: p, ..
            } => {
                path(p);
                sandboxes.push(sandbox);
            }
            Effect::AdoptNetns {
                sandbox,
                path: p,
                handle,
                ..
            } => {
                path(p);
                path(handle);
                sandboxes.push(sandbox);
            }
            Effect::ReleaseNetns { sandbox, handle } => {
                path(handle);
                sandboxes.push(sandbox);
            }
            Effect::AttachEndpoint(a) | Effect::DetachEndpoint(a) => {
                path(&a.netns);
                sandboxes.push(&a.sandbox);
            }
            Effect::SetDefaultRoute { sandbox, netns, .. } => {
                path(netns);
                sandboxes.push(sandbox);
            }
            // Changes that open or close host ports never share a wave:
            // the host ports are one resource.
            Effect::PublishPorts { .. } => publishes = true,
            Effect::RenameSandbox { sandbox, .. } => sandboxes.push(sandbox),
            Effect::PushSwitchConfig => {}
        }
    }
    if publishes {
        keys.insert("published ports".to_owned());
    }
    keys.extend(sandboxes.into_iter().cloned());
    (!keys.is_empty()).then_some(keys)
}

/// Whether an adopted sandbox's namespace is gone: the path the caller
/// gave no longer leads to the namespace the daemon holds (the process
/// exited; its PID may be someone else's now), or the handle is missing.
fn netns_gone(sb: &Sandbox) -> bool {
    let Some(handle) = &sb.netns_handle else {
        return false;
    };
    let held = Netns::open(handle).and_then(|n| n.identity());
    let named = Netns::open(&sb.netns_path).and_then(|n| n.identity());
    !matches!((held, named), (Ok(a), Ok(b)) if a == b)
}

/// Removes handles in `dir` (the daemon's own directory) that belong to no
/// sandbox of the model: the remains of an adoption a crash interrupted.
fn remove_stale_handles(dir: &Path, controller: &Controller) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let known = controller
            .model()
            .sandboxes
            .iter()
            .any(|s| s.netns_handle.as_deref().map(Path::new) == Some(path.as_path()));
        if !known {
            match Netns::unbind(&path) {
                Ok(()) => {
                    tracing::info!(handle = %path.display(), "orphan namespace handle removed")
                }
                Err(e) => {
                    tracing::warn!(handle = %path.display(), error = %e, "orphan namespace handle not removed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(sandbox: &str, name: &str) -> Effect {
        Effect::CreateNetns {
            sandbox: sandbox.to_owned(),
            name: name.to_owned(),
            path: PathBuf::from(format!("/run/netns/{name}")),
        }
    }

    #[test]
    fn changes_of_different_sandboxes_can_run_together() {
        let a = conflict_keys(&[create("a", "one")]).unwrap();
        let b = conflict_keys(&[create("b", "two")]).unwrap();
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn a_namespace_removed_and_made_again_under_its_name_conflicts() {
        // `sandbox rm one` and `sandbox create one` from two clients: the
        // sandboxes differ, the namespace file is the same.
        let gone = conflict_keys(&[Effect::DeleteNetns {
            sandbox: "a".to_owned(),
            name: "one".to_owned(),
            path: PathBuf::from("/run/netns/one"),
        }])
        .unwrap();
        let made = conflict_keys(&[create("b", "one")]).unwrap();
        assert!(!gone.is_disjoint(&made));
    }

    #[test]
    fn a_change_of_the_networks_runs_alone() {
        assert_eq!(conflict_keys(&[Effect::PushSwitchConfig]), None);
    }
}
