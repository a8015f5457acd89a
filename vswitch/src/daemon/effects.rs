//! Carries out the controller's [`Effect`]s on real devices: namespaces,
//! TAPs and veth pairs, their configuration, and the datapath's ports.
//!
//! Each effect that succeeded can be undone, so a request whose later
//! effect fails (or whose store write fails) leaves no device behind; the
//! controller itself is rolled back by restoring the copy taken before the
//! request. Effects carry everything they need (the switch configuration is
//! handed in, built by the control thread), so executing one never calls
//! back into the controller.
//!
//! Every device and mount the daemon makes has a name it can recognise:
//! `vst…`/`vsv…`/`vsp…` plus the endpoint's short id on the host (a TAP
//! becomes `ethN` inside its sandbox), named namespaces after their sandbox,
//! and adoption handles `<run dir>/netns/<sandbox id>`.

use std::io;
use std::sync::Arc;

use crate::control::{Attachment, Effect, Model, PortKind};
use crate::datapath::Datapath;
use crate::netconf::{EndpointConfig, NetconfError, Netlink};
use crate::netns::{Netns, NetnsError, run_in};
use crate::port::{PacketSocketPort, PortError, PortIo, TapPort};
use crate::switch::SwitchConfig;

use super::hooks::{Hooks, Point};

/// Why an effect could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// A namespace operation failed.
    #[error("namespace {name}: {source}")]
    Netns {
        /// The namespace.
        name: String,
        /// The cause.
        source: NetnsError,
    },
    /// Configuring a device failed.
    #[error("configuring {device}: {source}")]
    Netconf {
        /// The device.
        device: String,
        /// The cause.
        source: NetconfError,
    },
    /// Opening a port device failed.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The switch configuration built from the model is invalid.
    #[error("switch configuration: {0}")]
    Config(#[from] crate::switch::ConfigError),
    /// The datapath thread is gone or did not answer.
    #[error("datapath: {0}")]
    Datapath(#[from] io::Error),
    /// A switch configuration was to be pushed and none was built.
    #[error("no switch configuration was built for the request")]
    NoConfig,
    /// An adopted namespace is the daemon's (or the host's) own.
    #[error("{} is the host's network namespace; vswitchd --allow-host-netns permits adopting it", path.display())]
    HostNetns {
        /// The path offered.
        path: std::path::PathBuf,
    },
}

fn netns_err(name: &str) -> impl FnOnce(NetnsError) -> EffectError + '_ {
    move |source| EffectError::Netns {
        name: name.to_owned(),
        source,
    }
}

fn netconf_err(device: &str) -> impl FnOnce(NetconfError) -> EffectError + '_ {
    move |source| EffectError::Netconf {
        device: device.to_owned(),
        source,
    }
}

/// Executes effects against the host and the datapath.
#[derive(Debug)]
pub struct Executor {
    datapath: Datapath,
    hooks: Hooks,
    allow_host_netns: bool,
}

impl Executor {
    /// An executor feeding `datapath`. With `allow_host_netns`, the
    /// daemon's own namespace may be adopted as a sandbox.
    #[must_use]
    pub const fn new(datapath: Datapath, hooks: Hooks, allow_host_netns: bool) -> Self {
        Self {
            datapath,
            hooks,
            allow_host_netns,
        }
    }

    /// The test hooks in force.
    #[must_use]
    pub const fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Carries out `effects` in order, handing the datapath `config` at
    /// [`Effect::PushSwitchConfig`] (the caller builds it only when the
    /// effects ask for it). On the first failure, undoes the ones already
    /// done (newest first) and returns the error.
    ///
    /// # Errors
    /// The first effect that failed; [`EffectError::NoConfig`] when a
    /// configuration is asked for and none was given.
    pub fn run(
        &self,
        effects: &[Effect],
        config: Option<&Arc<SwitchConfig>>,
    ) -> Result<(), EffectError> {
        for (i, effect) in effects.iter().enumerate() {
            if let Err(e) = self.execute(effect, config) {
                self.undo_all(&effects[..i]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Undoes effects that succeeded, newest first (best effort; what
    /// cannot be undone is logged).
    pub fn undo_all(&self, effects: &[Effect]) {
        for done in effects.iter().rev() {
            self.undo(done);
        }
    }

    /// Carries out one effect.
    ///
    /// # Errors
    /// When the device, namespace or datapath operation fails.
    pub fn execute(
        &self,
        effect: &Effect,
        config: Option<&Arc<SwitchConfig>>,
    ) -> Result<(), EffectError> {
        match effect {
            Effect::CreateNetns { path, .. } => {
                let name = file_name(path);
                Netns::create(name).map_err(netns_err(name))?;
                self.hooks.reached(Point::NetnsCreated);
                Ok(())
            }
            Effect::AdoptNetns {
                path, name, handle, ..
            } => {
                let ns = Netns::open(path).map_err(netns_err(name))?;
                if !self.allow_host_netns && ns.is_host().map_err(netns_err(name))? {
                    return Err(EffectError::HostNetns { path: path.clone() });
                }
                ns.bind_to(handle).map_err(netns_err(name))?;
                self.hooks.reached(Point::NetnsCreated);
                Ok(())
            }
            Effect::DeleteNetns { path, .. } => {
                let name = file_name(path);
                Netns::delete(name).map_err(netns_err(name))
            }
            Effect::ReleaseNetns { handle, sandbox } => {
                Netns::unbind(handle).map_err(netns_err(sandbox))
            }
            Effect::AttachEndpoint(a) => self.attach(a),
            Effect::DetachEndpoint(a) => {
                self.detach(a);
                Ok(())
            }
            Effect::SetDefaultRoute {
                netns,
                ifname,
                gateway,
                ..
            } => {
                let ns = Netns::open(netns).map_err(netns_err(ifname))?;
                let mut nl = Netlink::in_netns(&ns).map_err(netconf_err(ifname))?;
                nl.add_default_route(ifname, *gateway)
                    .map_err(netconf_err(ifname))
            }
            Effect::PushSwitchConfig => self.push_config(config.ok_or(EffectError::NoConfig)?),
        }
    }

    /// Hands the datapath a configuration.
    ///
    /// # Errors
    /// When a datapath worker is gone or does not take it.
    pub fn push_config(&self, config: &Arc<SwitchConfig>) -> Result<(), EffectError> {
        self.datapath.set_config(config)?;
        Ok(())
    }

    /// Best-effort reversal of an effect that succeeded.
    fn undo(&self, effect: &Effect) {
        let result = match effect {
            Effect::CreateNetns { path, .. } => {
                let name = file_name(path);
                Netns::delete(name).map_err(netns_err(name))
            }
            Effect::AdoptNetns { handle, name, .. } => {
                Netns::unbind(handle).map_err(netns_err(name))
            }
            Effect::AttachEndpoint(a) => {
                self.detach(a);
                Ok(())
            }
            // The device is made again, with the default route it had.
            Effect::DetachEndpoint(a) => self.attach(a),
            // The configuration is pushed again by the caller after it
            // restores the controller.
            Effect::PushSwitchConfig => Ok(()),
            // Always last in their request: when they ran, nothing after
            // them can fail, and when they fail, they did nothing to undo.
            Effect::DeleteNetns { .. }
            | Effect::ReleaseNetns { .. }
            | Effect::SetDefaultRoute { .. } => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "rolling back a failed request left something behind");
        }
    }

    /// Creates the endpoint's device, configures it inside the sandbox and
    /// gives it to the datapath.
    fn attach(&self, a: &Attachment) -> Result<(), EffectError> {
        self.hooks.before_attach();
        let ns = Netns::open(&a.netns).map_err(netns_err(&a.sandbox))?;
        let config = EndpointConfig {
            name: a.ifname.clone(),
            mac: a.mac,
            address: a.ipv4,
            prefix_len: a.prefix_len,
            mtu: u32::from(a.mtu),
            gateway: a.gateway,
            txqueuelen: Some(a.txqueuelen),
        };
        let mut host = Netlink::new().map_err(netconf_err(&a.host_ifname))?;
        let port: Arc<dyn PortIo> = match a.kind {
            PortKind::Tap => {
                let tap = TapPort::create(&a.host_ifname)?;
                self.hooks.reached(Point::DeviceCreated);
                if let Err(e) = host.configure_endpoint(&ns, &a.host_ifname, &config) {
                    // The TAP may have moved already; deleting the device by
                    // its fd works wherever it is.
                    let _ = tap.destroy();
                    return Err(EffectError::Netconf {
                        device: a.host_ifname.clone(),
                        source: e,
                    });
                }
                self.hooks.reached(Point::DeviceConfigured);
                Arc::new(tap)
            }
            PortKind::Veth => {
                let peer = veth_peer_name(&a.host_ifname);
                host.create_veth(&a.host_ifname, &peer)
                    .map_err(netconf_err(&a.host_ifname))?;
                self.hooks.reached(Point::DeviceCreated);
                let opened = (|| {
                    host.configure_endpoint(&ns, &peer, &config)
                        .map_err(netconf_err(&peer))?;
                    // The host end carries the containers' frames only; the
                    // host's own stack must not answer ARP on it.
                    host.set_arp(&a.host_ifname, false)
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_txqueuelen(&a.host_ifname, a.txqueuelen)
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_mtu(&a.host_ifname, u32::from(a.mtu))
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_up(&a.host_ifname, true)
                        .map_err(netconf_err(&a.host_ifname))?;
                    Ok::<_, EffectError>(PacketSocketPort::open(&a.host_ifname)?)
                })();
                match opened {
                    Ok(port) => {
                        self.hooks.reached(Point::DeviceConfigured);
                        Arc::new(port)
                    }
                    Err(e) => {
                        let _ = host.delete_link(&a.host_ifname);
                        return Err(e);
                    }
                }
            }
        };
        if let Err(e) = self.datapath.add_port(a.port, port) {
            self.remove_devices(a);
            return Err(e.into());
        }
        Ok(())
    }

    /// Takes the port from the datapath and deletes its device. Failures
    /// are logged: the endpoint is gone from the model either way, and a
    /// device left behind is removed with its namespace.
    fn detach(&self, a: &Attachment) {
        if let Err(e) = self.datapath.remove_port(a.port) {
            tracing::warn!(port = %a.port, sandbox = %a.sandbox, network = %a.network, error = %e, "datapath did not release the port");
        }
        let result = match a.kind {
            PortKind::Tap => Netns::open(&a.netns)
                .map_err(netns_err(&a.sandbox))
                .and_then(|ns| Netlink::in_netns(&ns).map_err(netconf_err(&a.ifname)))
                .and_then(|mut nl| nl.delete_link(&a.ifname).map_err(netconf_err(&a.ifname))),
            PortKind::Veth => Netlink::new()
                .and_then(|mut nl| nl.delete_link(&a.host_ifname))
                .map_err(netconf_err(&a.host_ifname)),
        };
        if let Err(e) = result {
            tracing::warn!(endpoint = %a.endpoint, sandbox = %a.sandbox, network = %a.network, error = %e, "endpoint device not deleted");
        }
    }

    /// Removes whatever exists of an endpoint's devices, wherever an
    /// interrupted attachment may have left them: the host end or an
    /// unmoved TAP on the host, the veth peer, and inside the sandbox the
    /// device under its temporary name or, when its MAC is the endpoint's,
    /// under its final name. Idempotent.
    pub fn remove_devices(&self, a: &Attachment) {
        let peer = veth_peer_name(&a.host_ifname);
        if let Ok(mut host) = Netlink::new() {
            for name in [&a.host_ifname, &peer] {
                if host.link_exists(name).unwrap_or(false) {
                    if let Err(e) = host.delete_link(name) {
                        tracing::warn!(device = %name, error = %e, "orphan device not deleted");
                    } else {
                        tracing::info!(device = %name, "orphan device deleted");
                    }
                }
            }
        }
        let Ok(ns) = Netns::open(&a.netns) else {
            return;
        };
        let Ok(mut nl) = Netlink::in_netns(&ns) else {
            return;
        };
        for name in [&a.host_ifname, &peer] {
            if nl.link_exists(name).unwrap_or(false) {
                let _ = nl.delete_link(name);
            }
        }
        if nl.link_mac(&a.ifname).ok().flatten() == Some(a.mac) {
            match nl.delete_link(&a.ifname) {
                Ok(()) => {
                    tracing::info!(device = %a.ifname, sandbox = %a.sandbox, "orphan device deleted");
                }
                Err(e) => {
                    tracing::warn!(device = %a.ifname, error = %e, "orphan device not deleted");
                }
            }
        }
    }

    /// Completes or undoes the intent a crashed run left (see
    /// [`super::intent`]) against the saved `model`: what the intent
    /// created that the model does not hold is removed; what it removed
    /// that the model no longer holds is removed for good.
    pub fn settle(&self, model: &Model, intent: &[Effect]) {
        let has_sandbox = |id: &str| model.sandbox(id).is_some();
        let has_endpoint = |id: &str| model.endpoints.iter().any(|e| e.id == id);
        for effect in intent.iter().rev() {
            match effect {
                Effect::CreateNetns { sandbox, path, .. }
                | Effect::DeleteNetns { sandbox, path, .. }
                    if !has_sandbox(sandbox) =>
                {
                    let name = file_name(path);
                    match Netns::delete(name) {
                        Ok(()) => tracing::info!(netns = %name, "orphan namespace deleted"),
                        Err(NetnsError::Remove { source, .. })
                            if source.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(netns = %name, error = %e, "orphan namespace not deleted")
                        }
                    }
                }
                Effect::AdoptNetns {
                    sandbox, handle, ..
                }
                | Effect::ReleaseNetns { sandbox, handle }
                    if !has_sandbox(sandbox) =>
                {
                    if let Err(e) = Netns::unbind(handle) {
                        tracing::warn!(handle = %handle.display(), error = %e, "orphan namespace handle not removed");
                    }
                }
                Effect::AttachEndpoint(a) | Effect::DetachEndpoint(a)
                    if !has_endpoint(&a.endpoint) =>
                {
                    self.remove_devices(a);
                }
                // The model holds the object: the usual reattachment at
                // start brings its device back, as after any restart.
                _ => {}
            }
        }
    }

    /// Reopens an endpoint's device after a restart: the persistent TAP
    /// inside its sandbox, or the veth's host end. Falls back to creating
    /// the device anew when it is gone (the host rebooted, the namespace was
    /// deleted by hand).
    ///
    /// # Errors
    /// When the device can neither be reopened nor recreated.
    pub fn reattach(&self, a: &Attachment, netns_owned: bool) -> Result<(), EffectError> {
        let reopened: Result<Arc<dyn PortIo>, EffectError> = match a.kind {
            PortKind::Tap => Netns::open(&a.netns)
                .map_err(netns_err(&a.sandbox))
                .and_then(|ns| {
                    run_in(&ns, || TapPort::open(&a.ifname))
                        .map_err(netns_err(&a.sandbox))?
                        .map_err(EffectError::from)
                })
                .map(|t| Arc::new(t) as Arc<dyn PortIo>),
            PortKind::Veth => PacketSocketPort::open(&a.host_ifname)
                .map(|p| Arc::new(p) as Arc<dyn PortIo>)
                .map_err(EffectError::from),
        };
        match reopened {
            Ok(port) => {
                self.datapath.add_port(a.port, port)?;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(endpoint = %a.endpoint, sandbox = %a.sandbox, network = %a.network, error = %e, "device gone; creating it again");
                if netns_owned {
                    ensure_named_netns(&a.netns)?;
                }
                self.remove_devices(a);
                self.attach(a)
            }
        }
    }
}

/// Creates the named namespace at `path` again when it is gone (the host
/// rebooted, or a crash came between its deletion and the model's save).
///
/// # Errors
/// When it cannot be created.
pub fn ensure_named_netns(path: &std::path::Path) -> Result<(), EffectError> {
    if Netns::open(path).is_err() {
        let name = file_name(path);
        // A file with nothing mounted on it is the remains of a half-made
        // namespace.
        let _ = Netns::delete(name);
        Netns::create(name).map_err(netns_err(name))?;
    }
    Ok(())
}

/// The name of a named namespace: its file's name under the namespace
/// directory.
fn file_name(path: &std::path::Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// The name of a veth's sandbox end before it is moved and renamed: the
/// host end's name with its `vsv` prefix replaced by `vsp`.
fn veth_peer_name(host: &str) -> String {
    format!("vsp{}", host.get(3..).unwrap_or(host))
}
