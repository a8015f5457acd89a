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
//! changes with it, fed by one mailbox ([`Message`]); a request is applied
//! from start to end before the next is taken, so changes need no lock.
//! Changes already queued when the thread takes one are applied with it,
//! each all-or-nothing, and committed by one store write (group commit: the
//! `fsync` is the largest cost of a change), before any of them is
//! answered.
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
    Store, rfc3339_nano,
};
use crate::datapath::Datapath;
use crate::events::{self, Event, EventHub};
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
    /// Whoever serves published ports: the host connector in `vswitchd`;
    /// [`crate::publish::HoldSink`] keeps their sockets open and carries no
    /// traffic (tests of the control plane alone).
    pub port_sink: Arc<dyn crate::publish::PublishedPortSink>,
}

impl core::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("state_dir", &self.state_dir)
            .field("controller", &self.controller)
            .field("allow_host_netns", &self.allow_host_netns)
            .field("hooks", &self.hooks)
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
    /// roll back to: a change copies it once (`Arc::make_mut`), instead of
    /// a copy for the rollback, one per request and one to publish.
    controller: Arc<Controller>,
    store: Store,
    intent: IntentLog,
    entropy: OsEntropy,
    dns: Option<DnsSync>,
    executor: Executor,
    published: Arc<RwLock<Arc<Snapshot>>>,
    events: Arc<EventHub>,
    overlay: Option<Arc<crate::overlay::Underlay>>,
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
        );
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

    /// Marks the adopted namespaces that are gone in sandbox views.
    fn mark_gone(snapshot: &Snapshot, views: &mut [SandboxView]) {
        for v in views.iter_mut().filter(|v| !v.netns_owned) {
            if let Some(sb) = snapshot.controller.model().sandbox(&v.id) {
                v.netns_gone = netns_gone(sb);
            }
        }
    }
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
            let Message::Apply { request, reply } = message else {
                break;
            };
            // Whatever else is already queued joins this batch, so that its
            // changes share one store write (group commit).
            let mut batch = vec![(*request, reply)];
            let mut stop = false;
            while batch.len() < MAX_BATCH {
                match mailbox.try_recv() {
                    Ok(Message::Apply { request, reply }) => batch.push((*request, reply)),
                    Ok(Message::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
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
    /// of them is undone. Returns the answers, in order.
    fn apply_batch(&mut self, batch: Vec<(Request, Reply)>) -> Vec<(Reply, Answer)> {
        let start = Arc::clone(&self.controller);
        let ports = Arc::clone(self.executor.ports());
        let batch_mark = ports.mark();
        let mut done: Vec<Effect> = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        let mut changed = false;
        let mut happened: Vec<Event> = Vec::new();
        for (request, reply) in batch {
            let before = Arc::clone(&self.controller);
            let mark = ports.mark();
            let asked = request.clone();
            let (sandbox, network) = events::subjects(&asked);
            match self.stage(request, &mut done) {
                Ok((response, ch)) => {
                    changed |= ch;
                    if ch {
                        happened.extend(events::of_change(
                            &asked,
                            &response,
                            before.model(),
                            self.controller.model(),
                        ));
                    }
                    answers.push((reply, Ok(response)));
                }
                Err(e) => {
                    // Back to the state before this request: model, IPAM
                    // and the datapath's configuration (the executor undid
                    // its devices).
                    self.controller = before;
                    ports.rollback_to(mark);
                    self.restore_config();
                    tracing::warn!(
                        request = events::kind(&asked),
                        sandbox = sandbox.unwrap_or("-"),
                        network = network.unwrap_or("-"),
                        error = %e,
                        "request failed and was rolled back"
                    );
                    answers.push((reply, Err(e)));
                }
            }
        }
        if !changed {
            ports.commit();
            return answers;
        }
        let hooks = *self.executor.hooks();
        hooks.reached(Point::EffectsDone);
        if let Err(e) = self.store.save(self.controller.model()) {
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
            dns.sync(self.controller.model());
        }
        self.publish();
        if let Some(underlay) = &self.overlay {
            sync_overlay(underlay, &self.datapath, &self.controller);
        }
        // Only now, with the batch saved, did these changes happen.
        for event in happened {
            self.events.publish(event);
        }
        answers
    }

    /// Plans one change and carries out its effects (recorded in the
    /// intent after those of the batch so far, `done`). Does not save.
    fn stage(
        &mut self,
        request: Request,
        done: &mut Vec<Effect>,
    ) -> Result<(Response, bool), ControlError> {
        let now = rfc3339_nano(SystemTime::now());
        let ports = Arc::clone(self.executor.ports());
        let binder = core::cell::RefCell::new(ports.binder());
        let ctx = Ctx::new(&now, &self.entropy).with_binder(&binder);
        let outcome = Arc::make_mut(&mut self.controller).apply(request, &ctx);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                ports.discard_pending();
                return Err(e);
            }
        };
        if !outcome.changed {
            return Ok((outcome.response, false));
        }
        let effects = outcome.effects;
        self.precheck(&effects)?;
        let config = if effects.contains(&Effect::PushSwitchConfig) {
            Some(Arc::new(self.controller.switch_config().map_err(|e| {
                ControlError::internal("building the switch configuration", e)
            })?))
        } else {
            None
        };
        let mut intent = done.clone();
        intent.extend(effects.iter().cloned());
        self.intent
            .write(&intent)
            .map_err(|e| ControlError::internal("writing the intent", e))?;
        self.executor.hooks().reached(Point::IntentWritten);
        if let Err(e) = self.executor.run(&effects, config.as_ref()) {
            self.write_intent(done);
            return Err(ControlError::internal("carrying out the request", e));
        }
        done.extend(effects);
        Ok((outcome.response, true))
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
