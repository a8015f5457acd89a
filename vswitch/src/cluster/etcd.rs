//! The etcd client: one thread (`vswitch-etcd`) running a current-thread
//! tokio runtime, driven through a channel by [`Cluster`].
//!
//! A *session* is one connection's life: grant a lease of
//! [`ClusterConfig::ttl`], keep it alive every third of it, put this
//! host's record and endpoints under it, read everything under
//! [`PREFIX`] into the [`ClusterView`] (the difference with what the VTEP
//! table had becomes [`fabric::PeerEvent`]s), then watch from the read's
//! revision on. Any error (etcd gone, lease lost, watch cancelled) ends
//! the session; the client then answers cluster requests with
//! [`ClusterError::Unreachable`] and tries again every second. The VTEP
//! table is left as it was: traffic does not need etcd.

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use ipnet::Ipv4Net;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Desired;
use super::view::{
    AddressRecord, ClusterView, HostRecord, Key, NetworkRecord, PREFIX, RemoteName, pick_address,
    pick_subnet, pick_vni,
};
use crate::control::model::OPT_VXLANID_LIST;
use crate::overlay::{PeerSource, Underlay};

/// How long a caller waits for the client's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// How long one etcd call may take before the connection is deemed lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait between two connection attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How many times a transaction that lost a race is tried again.
const TXN_ATTEMPTS: usize = 16;

/// The client's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd's client URLs (`--etcd`).
    pub endpoints: Vec<String>,
    /// This host's VTEP.
    pub vtep: Ipv4Addr,
    /// This host's name.
    pub name: String,
    /// The lease's time to live: how long a dead host's entries stay
    /// (`--etcd-ttl`).
    pub ttl: Duration,
}

/// Why a cluster request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// etcd cannot be reached (or did not answer in time).
    #[error(
        "the cluster's etcd ({endpoint}) is unreachable: {reason}; overlay networks and their addresses cannot change until it is back"
    )]
    Unreachable {
        /// The URL.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// What was asked for is taken, or does not match the cluster.
    #[error("{0}")]
    Conflict(String),
    /// Nothing left to hand out.
    #[error("{0}")]
    Exhausted(String),
}

/// A network claimed from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkClaim {
    /// Its name.
    pub name: String,
    /// `--subnet`, if given.
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`, if given.
    pub gateway: Option<Ipv4Addr>,
    /// `-o …vxlanid_list`, if given.
    pub vni: Option<u32>,
    /// `--attachable`.
    pub attachable: bool,
    /// `--internal`.
    pub internal: bool,
    /// `-o key=value`.
    pub options: BTreeMap<String, String>,
    /// This host's other networks' subnets, which a picked subnet avoids.
    pub local_subnets: Vec<Ipv4Net>,
}

/// An address claimed from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressClaim {
    /// The network's name.
    pub network: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its gateway.
    pub gateway: Ipv4Addr,
    /// `--ip`, if given.
    pub requested: Option<Ipv4Addr>,
    /// Addresses this host's model already holds on the network.
    pub local_taken: BTreeSet<Ipv4Addr>,
}

type Reply<T> = crossbeam_channel::Sender<Result<T, ClusterError>>;

#[derive(Debug)]
enum Command {
    Network(NetworkClaim, Reply<(NetworkRecord, bool)>),
    Address(AddressClaim, Reply<Ipv4Addr>),
    /// The request that claimed this address is over: from now on the
    /// desired state alone says whether it is held.
    Settle(String, Ipv4Addr),
    Desired(Desired),
    /// Remove a network's records: `force` for one this host just made
    /// and could not create locally; otherwise only when no other host
    /// has the network and no address is held on it.
    ReleaseNetwork {
        name: String,
        force: bool,
    },
    Shutdown,
}

/// Shared between the client thread and the daemon.
#[derive(Debug)]
struct Shared {
    config: ClusterConfig,
    view: Mutex<ClusterView>,
    up: AtomicBool,
    /// Told when the remote names or the networks change (the control
    /// thread, for DNS and the networks every host has).
    notify: Mutex<Option<Notify>>,
    /// Networks being created through this host's API: the control
    /// thread leaves them to that request rather than creating them from
    /// the cluster's record.
    pending: Mutex<BTreeSet<String>>,
}

struct Notify(Box<dyn Fn() + Send>);

impl core::fmt::Debug for Notify {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Notify")
    }
}

/// The view as the VTEP table's [`PeerSource`].
#[derive(Debug)]
struct ViewSource(Arc<Shared>);

impl PeerSource for ViewSource {
    fn join_events(&self, vni: fabric::Vni) -> Vec<fabric::PeerEvent> {
        self.0.view.lock().join_events(vni)
    }
}

/// The daemon's handle on the cluster.
#[derive(Debug)]
pub struct Cluster {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// Taken by [`Self::start`].
    rx: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl Cluster {
    /// A handle whose client is not started yet: the underlay needs the
    /// view ([`Self::source`]) before it opens, the client needs the
    /// underlay.
    #[must_use]
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            tx,
            shared: Arc::new(Shared {
                view: Mutex::new(ClusterView::new(config.vtep)),
                config,
                up: AtomicBool::new(false),
                notify: Mutex::new(None),
                pending: Mutex::new(BTreeSet::new()),
            }),
            rx: Mutex::new(Some(rx)),
        })
    }

    /// The view as a source of the VTEP table.
    #[must_use]
    pub fn source(&self) -> Arc<dyn PeerSource> {
        Arc::new(ViewSource(Arc::clone(&self.shared)))
    }

    /// Starts the client thread, which feeds `underlay`'s table.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be made, or it was started
    /// already.
    pub fn start(
        &self,
        underlay: Arc<Underlay>,
    ) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
        let rx = self
            .rx
            .lock()
            .take()
            .ok_or_else(|| std::io::Error::other("the etcd client is already running"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("vswitch-etcd".to_owned())
            .spawn(move || {
                runtime.block_on(run(rx, shared, underlay));
                Ok(())
            })
    }

    /// Calls `f` (from the client thread) whenever the names of remote
    /// containers change.
    pub fn on_names_changed(&self, f: Box<dyn Fn() + Send>) {
        *self.shared.notify.lock() = Some(Notify(f));
    }

    /// The names of containers on other hosts.
    #[must_use]
    pub fn remote_names(&self) -> Vec<RemoteName> {
        self.shared.view.lock().remote_names()
    }

    /// This host's VTEP.
    #[must_use]
    pub fn vtep(&self) -> Ipv4Addr {
        self.shared.config.vtep
    }

    /// Whether a session is established.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// The error a request that needs the cluster gets while it is down.
    #[must_use]
    pub fn unreachable(&self, reason: &str) -> ClusterError {
        ClusterError::Unreachable {
            endpoint: self.shared.config.endpoints.join(","),
            reason: reason.to_owned(),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClusterError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tx
            .send(make(reply))
            .map_err(|_| self.unreachable("the etcd client has stopped"))?;
        answer
            .recv_timeout(ANSWER_TIMEOUT)
            .map_err(|_| self.unreachable("no answer in time"))?
    }

    /// Takes network `claim.name` for this host: its record if the cluster
    /// has it (`false`), else a new one with a free VNI and subnet, taken
    /// in one transaction (`true`).
    ///
    /// # Errors
    /// [`ClusterError`].
    pub fn claim_network(
        &self,
        claim: NetworkClaim,
    ) -> Result<(NetworkRecord, bool), ClusterError> {
        self.shared.pending.lock().insert(claim.name.clone());
        let r = self.ask(|r| Command::Network(claim.clone(), r));
        if !matches!(r, Ok((_, true))) {
            self.shared.pending.lock().remove(&claim.name);
            // Another host's record of the name may have come while it
            // was pending, and was left to this request then: the
            // control thread follows it now, or no later change of the
            // cluster may come to tell it.
            if let Some(notify) = self.shared.notify.lock().as_ref() {
                (notify.0)();
            }
        }
        r
    }

    /// The request that made network `name` in the cluster is over (see
    /// [`Self::claim_network`]); `ok`: it made the network here too,
    /// otherwise the cluster's records are removed again.
    pub fn settle_network(&self, name: String, ok: bool) {
        self.shared.pending.lock().remove(&name);
        if !ok {
            self.release_network(name, true);
        }
    }

    /// Every overlay network of the cluster, except those a request of
    /// this host is creating right now.
    #[must_use]
    pub fn networks(&self) -> Vec<NetworkRecord> {
        let pending = self.shared.pending.lock().clone();
        self.shared
            .view
            .lock()
            .networks()
            .filter(|n| !pending.contains(&n.name))
            .cloned()
            .collect()
    }

    /// Whether a request of this host is creating network `name`.
    #[must_use]
    pub fn is_pending(&self, name: &str) -> bool {
        self.shared.pending.lock().contains(name)
    }

    /// Endpoints of other hosts on network `name`.
    #[must_use]
    pub fn remote_endpoints(&self, name: &str) -> usize {
        let local = self.shared.config.vtep;
        self.shared
            .view
            .lock()
            .endpoints()
            .filter(|e| e.network == name && e.vtep != local)
            .count()
    }

    /// Takes an address on a network; [`Self::settle`] must follow once
    /// the request that needed it is over.
    ///
    /// # Errors
    /// [`ClusterError`].
    pub fn claim_address(&self, claim: AddressClaim) -> Result<Ipv4Addr, ClusterError> {
        self.ask(|r| Command::Address(claim, r))
    }

    /// See [`Self::claim_address`].
    pub fn settle(&self, network: String, ip: Ipv4Addr) {
        let _ = self.tx.send(Command::Settle(network, ip));
    }

    /// Hands the client this host's desired state.
    pub fn publish(&self, desired: Desired) {
        let _ = self.tx.send(Command::Desired(desired));
    }

    /// Removes a network's records (name, VNI and subnet): with `force`,
    /// one this host just made and could not create locally; otherwise
    /// only when no other host has the network and no address is held on
    /// it.
    pub fn release_network(&self, name: String, force: bool) {
        let _ = self.tx.send(Command::ReleaseNetwork { name, force });
    }

    /// Revokes the lease (this host's entries vanish at once) and stops
    /// the client.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// The client's state across sessions.
#[derive(Debug, Default)]
struct Agent {
    desired: Desired,
    /// Addresses claimed by requests still running.
    in_flight: BTreeSet<(String, Ipv4Addr)>,
    /// Addresses this process has put (the view may not show them yet).
    claimed: BTreeSet<(String, Ipv4Addr)>,
    /// What this session has put under its lease, key → value.
    published: BTreeMap<String, Vec<u8>>,
    /// The addresses this session has put under its lease.
    leased: BTreeSet<(String, Ipv4Addr)>,
    lease: i64,
}

fn unreachable(shared: &Shared, reason: impl core::fmt::Display) -> ClusterError {
    ClusterError::Unreachable {
        endpoint: shared.config.endpoints.join(","),
        reason: reason.to_string(),
    }
}

/// One etcd call, bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    shared: &Shared,
    f: impl core::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(shared, e)),
        Err(_) => Err(unreachable(shared, "timed out")),
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    underlay: Arc<Underlay>,
) {
    let mut agent = Agent::default();
    let mut logged_down = false;
    loop {
        let err = match connect(&shared).await {
            Ok(client) => match session(client, &mut rx, &mut agent, &shared, &underlay).await {
                Ok(()) => return,
                Err(e) => e,
            },
            Err(e) => e,
        };
        if shared.up.swap(false, Ordering::AcqRel) || !logged_down {
            tracing::warn!(error = %err, "etcd session lost; traffic continues, cluster changes wait");
            logged_down = true;
        }
        let retry = tokio::time::sleep(RETRY_EVERY);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = &mut retry => break,
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => return,
                    Some(c) => refuse(c, &mut agent, &err),
                },
            }
        }
    }
}

/// Answers a command while etcd is away: claims fail, the desired state
/// waits for the next session.
fn refuse(cmd: Command, agent: &mut Agent, err: &ClusterError) {
    match cmd {
        Command::Network(_, reply) => {
            let _ = reply.send(Err(err.clone()));
        }
        Command::Address(_, reply) => {
            let _ = reply.send(Err(err.clone()));
        }
        Command::Settle(n, ip) => {
            agent.in_flight.remove(&(n, ip));
        }
        Command::Desired(d) => agent.desired = d,
        Command::ReleaseNetwork { name, .. } => {
            tracing::warn!(network = %name, "etcd unreachable: the network's cluster records stay");
        }
        Command::Shutdown => {}
    }
}

async fn connect(shared: &Shared) -> Result<Client, ClusterError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    call(
        shared,
        Client::connect(shared.config.endpoints.clone(), Some(options)),
    )
    .await
}

async fn session(
    mut client: Client,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    agent: &mut Agent,
    shared: &Arc<Shared>,
    underlay: &Underlay,
) -> Result<(), ClusterError> {
    let ttl = i64::try_from(shared.config.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = call(shared, client.lease_grant(ttl, None)).await?.id();
    let (mut keeper, mut alive) = call(shared, client.lease_keep_alive(lease)).await?;
    agent.lease = lease;
    agent.published.clear();
    agent.leased.clear();

    // Everything, then what this host publishes, then the watch from the
    // read's revision on: the watch brings this host's own puts back too.
    let all = call(
        shared,
        client.get(PREFIX, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = all
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let kvs: Vec<(&str, &[u8])> = all
        .kvs()
        .iter()
        .filter_map(|kv| Some((kv.key_str().ok()?, kv.value())))
        .collect();
    apply(shared, underlay, |v| v.reset(kvs));
    reconcile(&mut client, agent, shared).await?;
    let mut watch = call(
        shared,
        client.watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        ),
    )
    .await?;
    shared.up.store(true, Ordering::Release);
    tracing::info!(lease, ttl, revision, "etcd session established");
    // With a whole view again, the control thread brings the local
    // networks and names in line with it.
    if let Some(notify) = shared.notify.lock().as_ref() {
        (notify.0)();
    }

    let mut tick = tokio::time::interval(shared.config.ttl / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => call(shared, keeper.keep_alive()).await?,
            m = alive.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => return Err(unreachable(shared, "the lease expired")),
                Ok(None) => return Err(unreachable(shared, "the keep-alive stream ended")),
                Err(e) => return Err(unreachable(shared, e)),
            },
            m = watch.message() => match m {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return Err(unreachable(shared, "the watch was cancelled"));
                    }
                    let changes: Vec<(String, Option<Vec<u8>>)> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            let key = kv.key_str().ok()?.to_owned();
                            Some(match e.event_type() {
                                EventType::Put => (key, Some(kv.value().to_vec())),
                                EventType::Delete => (key, None),
                            })
                        })
                        .collect();
                    apply(shared, underlay, |v| {
                        changes
                            .iter()
                            .flat_map(|(k, val)| v.apply(k, val.as_deref()))
                            .collect()
                    });
                }
                Ok(None) => return Err(unreachable(shared, "the watch stream ended")),
                Err(e) => return Err(unreachable(shared, e)),
            },
            cmd = rx.recv() => match cmd {
                None | Some(Command::Shutdown) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
                    shared.up.store(false, Ordering::Release);
                    return Ok(());
                }
                Some(cmd) => handle(&mut client, cmd, agent, shared).await?,
            },
        }
    }
}

/// Changes the view with `f`, applies the events to the table, and tells
/// the DNS when remote names changed.
fn apply(
    shared: &Shared,
    underlay: &Underlay,
    f: impl FnOnce(&mut ClusterView) -> Vec<fabric::PeerEvent>,
) {
    let (events, names_changed) = {
        let mut view = shared.view.lock();
        let before = (
            view.remote_names(),
            view.networks().cloned().collect::<Vec<_>>(),
        );
        let events = f(&mut view);
        let after = (
            view.remote_names(),
            view.networks().cloned().collect::<Vec<_>>(),
        );
        (events, after != before)
    };
    // The view changes before the table: an overlay network added in
    // between takes its entries from the view already changed, and the
    // events then find them there (see `PeerSource`).
    underlay.apply_events(&events);
    if names_changed && let Some(notify) = shared.notify.lock().as_ref() {
        (notify.0)();
    }
}

/// Carries out one command; an error that means etcd is gone ends the
/// session (the command's caller gets it too).
async fn handle(
    client: &mut Client,
    cmd: Command,
    agent: &mut Agent,
    shared: &Shared,
) -> Result<(), ClusterError> {
    match cmd {
        Command::Network(claim, reply) => {
            let r = claim_network(client, shared, &claim).await;
            let lost = matches!(r, Err(ClusterError::Unreachable { .. })).then(|| r.clone());
            if let Err(mpsc_err) = reply.send(r)
                && let Ok((rec, true)) = mpsc_err.into_inner()
            {
                // The caller gave up waiting: nobody will create it here.
                release_network(client, shared, &rec.name, true).await?;
            }
            if let Some(Err(e)) = lost {
                return Err(e);
            }
        }
        Command::Address(claim, reply) => {
            let r = claim_address(client, shared, agent, &claim).await;
            let lost = matches!(r, Err(ClusterError::Unreachable { .. })).then(|| r.clone());
            if let Err(mpsc_err) = reply.send(r)
                && let Ok(ip) = mpsc_err.into_inner()
            {
                // The caller gave up waiting and will not settle it.
                agent.in_flight.remove(&(claim.network.clone(), ip));
                reconcile(client, agent, shared).await?;
            }
            if let Some(Err(e)) = lost {
                return Err(e);
            }
        }
        Command::Settle(network, ip) => {
            agent.in_flight.remove(&(network, ip));
            reconcile(client, agent, shared).await?;
        }
        Command::Desired(d) => {
            agent.desired = d;
            reconcile(client, agent, shared).await?;
        }
        Command::ReleaseNetwork { name, force } => {
            release_network(client, shared, &name, force).await?
        }
        Command::Shutdown => {}
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Brings etcd in line with the desired state: the addresses this host's
/// endpoints hold under its lease, then its record and those endpoints,
/// then the release of what it no longer holds.
async fn reconcile(
    client: &mut Client,
    agent: &mut Agent,
    shared: &Shared,
) -> Result<(), ClusterError> {
    let local = shared.config.vtep;
    let held: BTreeSet<(String, Ipv4Addr)> = agent
        .desired
        .endpoints
        .iter()
        .map(|e| (e.network.clone(), e.ip))
        .collect();
    // Held locally but not under this session's lease: first published,
    // left under the lease of an earlier session (or of the process
    // before a restart), or lost by etcd. Taken (back) under this lease
    // unless another host holds it: after this host was gone for longer
    // than the TTL, its addresses were free to take. An endpoint whose
    // address is another host's is not published, so the cluster never
    // sees two holders of one address.
    let mut lost = BTreeSet::new();
    let unleased: Vec<(String, Ipv4Addr)> = held.difference(&agent.leased).cloned().collect();
    for (network, ip) in unleased {
        if lease_address(client, agent, shared, &network, ip).await? {
            agent.claimed.insert((network.clone(), ip));
            agent.leased.insert((network, ip));
        } else {
            tracing::error!(network = %network, ip = %ip, "an address this host's container holds was taken by another host while this host was away; its endpoint is not published");
            lost.insert((network, ip));
        }
    }

    let lease = Some(PutOptions::new().with_lease(agent.lease));
    let mut wanted: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    wanted.insert(
        Key::Host(local).to_string(),
        json(&HostRecord {
            name: shared.config.name.clone(),
            vtep: local,
            networks: agent.desired.networks.clone(),
        }),
    );
    for e in &agent.desired.endpoints {
        if lost.contains(&(e.network.clone(), e.ip)) {
            continue;
        }
        let key = Key::Endpoint {
            network: e.network.clone(),
            id: e.id.clone(),
        };
        wanted.insert(key.to_string(), json(e));
    }
    let (own_endpoints, own_addresses) = {
        let view = shared.view.lock();
        let endpoints: BTreeSet<String> = view
            .endpoints()
            .filter(|e| e.vtep == local)
            .map(|e| {
                Key::Endpoint {
                    network: e.network.clone(),
                    id: e.id.clone(),
                }
                .to_string()
            })
            .collect();
        let addresses: BTreeSet<(String, Ipv4Addr)> = view
            .addresses()
            .filter(|(_, _, a)| a.vtep == local)
            .map(|(n, ip, _)| (n.to_owned(), ip))
            .collect();
        (endpoints, addresses)
    };
    for (key, value) in &wanted {
        if agent.published.get(key) != Some(value) {
            call(
                shared,
                client.put(key.as_str(), value.clone(), lease.clone()),
            )
            .await?;
            agent.published.insert(key.clone(), value.clone());
        }
    }
    let stale: Vec<String> = own_endpoints
        .into_iter()
        .chain(agent.published.keys().cloned())
        .filter(|k| !wanted.contains_key(k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for key in stale {
        call(shared, client.delete(key.as_str(), None)).await?;
        agent.published.remove(&key);
    }

    // Released after the endpoints that held them are gone, and only
    // while this host's record is the one there: once an expired lease
    // has let another host take an address, it is that host's.
    let record = json(&AddressRecord {
        vtep: local,
        host: shared.config.name.clone(),
    });
    let mine: BTreeSet<(String, Ipv4Addr)> = own_addresses.union(&agent.claimed).cloned().collect();
    for (network, ip) in mine.difference(&held) {
        if agent.in_flight.contains(&(network.clone(), *ip)) {
            continue;
        }
        let key = Key::Address {
            network: network.clone(),
            ip: *ip,
        }
        .to_string();
        let txn = Txn::new()
            .when(vec![Compare::value(
                key.as_str(),
                CompareOp::Equal,
                record.clone(),
            )])
            .and_then(vec![TxnOp::delete(key.as_str(), None)]);
        call(shared, client.txn(txn)).await?;
        agent.claimed.remove(&(network.clone(), *ip));
        agent.leased.remove(&(network.clone(), *ip));
    }
    Ok(())
}

/// Puts address `ip` of `network` under this session's lease if it is
/// free or already this host's (under an older lease); `false` when
/// another host holds it.
async fn lease_address(
    client: &mut Client,
    agent: &Agent,
    shared: &Shared,
    network: &str,
    ip: Ipv4Addr,
) -> Result<bool, ClusterError> {
    let key = Key::Address {
        network: network.to_owned(),
        ip,
    }
    .to_string();
    let record = json(&AddressRecord {
        vtep: shared.config.vtep,
        host: shared.config.name.clone(),
    });
    let lease = Some(PutOptions::new().with_lease(agent.lease));
    for _ in 0..TXN_ATTEMPTS {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                record.clone(),
                lease.clone(),
            )])
            .or_else(vec![TxnOp::get(key.as_str(), None)]);
        let r = call(shared, client.txn(txn)).await?;
        if r.succeeded() {
            return Ok(true);
        }
        let holder = r.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.mod_revision(), kv.lease(), kv.value().to_vec())),
            _ => None,
        });
        let Some((revision, held_under, value)) = holder else {
            // Gone between the compare and the read: try again.
            continue;
        };
        let ours = serde_json::from_slice::<AddressRecord>(&value)
            .is_ok_and(|a| a.vtep == shared.config.vtep);
        if !ours {
            return Ok(false);
        }
        if held_under == agent.lease {
            return Ok(true);
        }
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                record.clone(),
                lease.clone(),
            )]);
        if call(shared, client.txn(txn)).await?.succeeded() {
            return Ok(true);
        }
    }
    Err(ClusterError::Conflict(format!(
        "address {ip} on network {network}: the cluster kept changing under the transaction; try again"
    )))
}

async fn keys_under(
    client: &mut Client,
    shared: &Shared,
    prefix: &str,
) -> Result<Vec<Key>, ClusterError> {
    Ok(keys_and_revision(client, shared, prefix).await?.0)
}

/// The keys under `prefix`, and the store's revision they were read at.
async fn keys_and_revision(
    client: &mut Client,
    shared: &Shared,
    prefix: &str,
) -> Result<(Vec<Key>, i64), ClusterError> {
    let r = call(
        shared,
        client.get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        ),
    )
    .await?;
    let revision = r.header().map_or(0, etcd_client::ResponseHeader::revision);
    let keys = r
        .kvs()
        .iter()
        .filter_map(|kv| Key::parse(kv.key_str().ok()?))
        .collect();
    Ok((keys, revision))
}

async fn claim_network(
    client: &mut Client,
    shared: &Shared,
    claim: &NetworkClaim,
) -> Result<(NetworkRecord, bool), ClusterError> {
    let key = Key::Network(claim.name.clone()).to_string();
    for _ in 0..TXN_ATTEMPTS {
        let existing = call(shared, client.get(key.as_str(), None)).await?;
        if let Some(kv) = existing.kvs().first() {
            let rec: NetworkRecord = serde_json::from_slice(kv.value()).map_err(|e| {
                ClusterError::Conflict(format!("unreadable record of network {}: {e}", claim.name))
            })?;
            let differs = claim.subnet.is_some_and(|s| s != rec.subnet)
                || claim.gateway.is_some_and(|g| g != rec.gateway)
                || claim.vni.is_some_and(|v| v != rec.vni);
            if differs {
                return Err(ClusterError::Conflict(format!(
                    "network {} exists in the cluster with subnet {}, gateway {} and VNI {}",
                    rec.name, rec.subnet, rec.gateway, rec.vni
                )));
            }
            return Ok((rec, false));
        }
        let vnis: BTreeSet<u32> = keys_under(client, shared, &Key::prefix("vnis"))
            .await?
            .into_iter()
            .filter_map(|k| match k {
                Key::Vni(v) => Some(v),
                _ => None,
            })
            .collect();
        let subnets_prefix = Key::prefix("subnets");
        let (subnet_keys, read_at) = keys_and_revision(client, shared, &subnets_prefix).await?;
        let subnets: Vec<Ipv4Net> = subnet_keys
            .into_iter()
            .filter_map(|k| match k {
                Key::Subnet(s) => Some(s),
                _ => None,
            })
            .collect();
        let vni = match claim.vni {
            Some(v) if vnis.contains(&v) => {
                return Err(ClusterError::Conflict(format!(
                    "VNI {v} is taken by another overlay network"
                )));
            }
            Some(v) => v,
            None => pick_vni(&vnis)
                .ok_or_else(|| ClusterError::Exhausted("no VNI left in the cluster".to_owned()))?,
        };
        let subnet = match claim.subnet {
            Some(s) if subnets.iter().any(|t| t.contains(&s) || s.contains(t)) => {
                return Err(ClusterError::Conflict(
                    "invalid pool request: Pool overlaps with other one on this address space"
                        .to_owned(),
                ));
            }
            Some(s) => s,
            None => {
                let mut avoid = subnets.clone();
                avoid.extend(claim.local_subnets.iter().copied());
                pick_subnet(&avoid).ok_or_else(|| {
                    ClusterError::Exhausted(
                        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
                            .to_owned(),
                    )
                })?
            }
        };
        let gateway = match claim.gateway {
            Some(g) => g,
            None => subnet.hosts().next().ok_or_else(|| {
                ClusterError::Conflict(format!("subnet {subnet} has no room for a gateway"))
            })?,
        };
        let mut options = claim.options.clone();
        options.insert(OPT_VXLANID_LIST.to_owned(), vni.to_string());
        let rec = NetworkRecord {
            name: claim.name.clone(),
            vni,
            subnet,
            gateway,
            attachable: claim.attachable,
            internal: claim.internal,
            options,
        };
        let vni_key = Key::Vni(vni).to_string();
        let subnet_key = Key::Subnet(subnet).to_string();
        // Overlap is not equality: a /16 taken by another host since the
        // read has another key than this /24. No subnet key may have been
        // written since the read, so the overlap check above still holds
        // when the transaction commits (a removal since is harmless).
        let txn = Txn::new()
            .when(vec![
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(vni_key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(subnet_key.as_str(), CompareOp::Equal, 0),
                Compare::mod_revision(subnets_prefix.as_str(), CompareOp::Less, read_at + 1)
                    .with_prefix(),
            ])
            .and_then(vec![
                TxnOp::put(key.as_str(), json(&rec), None),
                TxnOp::put(vni_key.as_str(), claim.name.as_str(), None),
                TxnOp::put(subnet_key.as_str(), claim.name.as_str(), None),
            ]);
        if call(shared, client.txn(txn)).await?.succeeded() {
            tracing::info!(network = %rec.name, vni, subnet = %subnet, "overlay network taken in the cluster");
            return Ok((rec, true));
        }
        // Another host took the name, the VNI or the subnet first: read
        // again and try with what is left.
    }
    Err(ClusterError::Conflict(format!(
        "network {}: the cluster kept changing under the transaction; try again",
        claim.name
    )))
}

async fn claim_address(
    client: &mut Client,
    shared: &Shared,
    agent: &mut Agent,
    claim: &AddressClaim,
) -> Result<Ipv4Addr, ClusterError> {
    let record = json(&AddressRecord {
        vtep: shared.config.vtep,
        host: shared.config.name.clone(),
    });
    for _ in 0..TXN_ATTEMPTS {
        let mut taken: BTreeSet<Ipv4Addr> = keys_under(
            client,
            shared,
            &Key::prefix(&format!("ipam/{}", claim.network)),
        )
        .await?
        .into_iter()
        .filter_map(|k| match k {
            Key::Address { ip, .. } => Some(ip),
            _ => None,
        })
        .collect();
        taken.extend(claim.local_taken.iter().copied());
        let ip = match claim.requested {
            Some(ip) if taken.contains(&ip) => {
                return Err(ClusterError::Conflict("Address already in use".to_owned()));
            }
            Some(ip) => ip,
            None => pick_address(claim.subnet, claim.gateway, &taken).ok_or_else(|| {
                ClusterError::Exhausted(format!(
                    "no available IPv4 addresses on this network's address pools: {}",
                    claim.network
                ))
            })?,
        };
        let key = Key::Address {
            network: claim.network.clone(),
            ip,
        }
        .to_string();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                record.clone(),
                Some(PutOptions::new().with_lease(agent.lease)),
            )]);
        if call(shared, client.txn(txn)).await?.succeeded() {
            agent.in_flight.insert((claim.network.clone(), ip));
            agent.claimed.insert((claim.network.clone(), ip));
            agent.leased.insert((claim.network.clone(), ip));
            return Ok(ip);
        }
        if claim.requested.is_some() {
            return Err(ClusterError::Conflict("Address already in use".to_owned()));
        }
    }
    Err(ClusterError::Conflict(format!(
        "network {}: the cluster kept changing under the transaction; try again",
        claim.network
    )))
}

async fn release_network(
    client: &mut Client,
    shared: &Shared,
    name: &str,
    force: bool,
) -> Result<(), ClusterError> {
    let key = Key::Network(name.to_owned()).to_string();
    let existing = call(shared, client.get(key.as_str(), None)).await?;
    let Some(rec) = existing
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice::<NetworkRecord>(kv.value()).ok())
    else {
        return Ok(());
    };
    if !force {
        let view = shared.view.lock();
        let local = shared.config.vtep;
        let used = view
            .hosts()
            .any(|h| h.vtep != local && h.networks.iter().any(|n| n == name))
            || view.addresses().any(|(n, _, _)| n == name);
        if used {
            return Ok(());
        }
    }
    let txn = Txn::new().and_then(vec![
        TxnOp::delete(key.as_str(), None),
        TxnOp::delete(Key::Vni(rec.vni).to_string(), None),
        TxnOp::delete(Key::Subnet(rec.subnet).to_string(), None),
    ]);
    call(shared, client.txn(txn)).await?;
    tracing::info!(network = %name, "overlay network released in the cluster");
    Ok(())
}
