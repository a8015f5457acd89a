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
use std::path::Path;
use std::sync::Arc;

use crate::control::{Attachment, Effect, Model, PortKind};
use crate::datapath::Datapath;
use crate::netconf::{EndpointConfig, NetconfError, Netlink};
use crate::netns::{Netns, NetnsError, run_in};
use crate::port::{PacketSocketPort, PortError, PortIo, TapPort};
use crate::publish::{HostPorts, Publication};
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
    /// A published port's socket could not be bound.
    #[error("publishing {port}: {source}")]
    Publish {
        /// The binding.
        port: nat::PublishedPort,
        /// The host's refusal.
        source: nat::BindError,
    },
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

/// The name of the namespace that holds the host ends of veth ports,
/// unless `vswitchd --port-netns` names another.
pub const DEFAULT_PORT_NETNS: &str = "vswitchd-ports";

/// Opens the namespace that holds the host ends of veth ports, creating it
/// on first use, with IPv6 off for every interface in it.
///
/// A veth's host end left in the host's namespace is an interface of the
/// host: the kernel gives it an `fe80::` address and takes every frame the
/// container sends into its own stack beside the packet socket, past the
/// switch's checks (a container could reach services on `[::]` over
/// link-local, or send IPv4 with a forged source to the host). In a
/// namespace of their own, with no address, no route and IPv6 off, the host
/// ends are seen by nothing but the daemon's packet sockets. The namespace
/// outlives the daemon, so a restart finds its ports there.
///
/// # Errors
/// When the namespace can neither be opened nor created, or IPv6 cannot be
/// turned off in it.
pub fn open_port_netns(name: &str) -> Result<Netns, EffectError> {
    let ns = match Netns::open_named(name) {
        Ok(ns) => ns,
        Err(_) => Netns::create(name).map_err(netns_err(name))?,
    };
    let result = run_in(&ns, || {
        // Per-namespace sysctls: the helper thread is inside `ns`.
        for conf in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")?;
        }
        Ok::<_, io::Error>(())
    })
    .map_err(netns_err(name))?;
    result.map_err(|e| EffectError::Netns {
        name: name.to_owned(),
        source: NetnsError::Enter {
            path: ns.path().to_owned(),
            source: e,
        },
    })?;
    Ok(ns)
}

/// Executes effects against the host and the datapath.
#[derive(Debug)]
pub struct Executor {
    datapath: Datapath,
    hooks: Hooks,
    allow_host_netns: bool,
    /// Where the host ends of veth ports live ([`open_port_netns`]).
    port_netns: Netns,
    /// Published ports' sockets and their sink.
    ports: Arc<HostPorts>,
}

impl Executor {
    /// An executor feeding `datapath`, with veth host ends in `port_netns`.
    /// With `allow_host_netns`, the daemon's own namespace may be adopted as
    /// a sandbox.
    #[must_use]
    pub const fn new(
        datapath: Datapath,
        hooks: Hooks,
        allow_host_netns: bool,
        port_netns: Netns,
        ports: Arc<HostPorts>,
    ) -> Self {
        Self {
            datapath,
            hooks,
            allow_host_netns,
            port_netns,
            ports,
        }
    }

    /// The published ports' sockets.
    #[must_use]
    pub fn ports(&self) -> &Arc<HostPorts> {
        &self.ports
    }

    /// Hands published ports to the sink (their sockets were bound while
    /// the request was planned; at restart they are bound here).
    ///
    /// # Errors
    /// The host's refusal for a socket that had to be bound now.
    pub fn publish(
        &self,
        network: crate::ids::NetworkId,
        container: std::net::Ipv4Addr,
        gateway: std::net::Ipv4Addr,
        ports: &[crate::control::PublishedRecord],
    ) -> Result<(), EffectError> {
        for &p in ports {
            let publication = Publication {
                network,
                container: std::net::SocketAddrV4::new(container, p.container_port),
                gateway,
                port: p.into(),
            };
            self.ports
                .attach(publication)
                .map_err(|source| EffectError::Publish {
                    port: p.into(),
                    source,
                })?;
        }
        Ok(())
    }

    /// A netlink handle in the namespace of the veth host ends.
    fn port_netlink(&self, device: &str) -> Result<Netlink, EffectError> {
        Netlink::in_netns(&self.port_netns).map_err(netconf_err(device))
    }

    /// Readies a veth's host end in the ports namespace and opens the
    /// packet socket the switch reads it with. The host end carries the
    /// containers' frames only, so no stack answers ARP on it.
    fn open_host_end(
        &self,
        host: &mut Netlink,
        a: &Attachment,
    ) -> Result<PacketSocketPort, EffectError> {
        host.set_arp(&a.host_ifname, false)
            .map_err(netconf_err(&a.host_ifname))?;
        host.set_txqueuelen(&a.host_ifname, a.txqueuelen)
            .map_err(netconf_err(&a.host_ifname))?;
        host.set_mtu(&a.host_ifname, u32::from(a.mtu))
            .map_err(netconf_err(&a.host_ifname))?;
        host.set_up(&a.host_ifname, true)
            .map_err(netconf_err(&a.host_ifname))?;
        self.open_packet_socket(&a.host_ifname)
    }

    /// Opens the packet socket of a veth host end, inside its namespace.
    fn open_packet_socket(&self, host_ifname: &str) -> Result<PacketSocketPort, EffectError> {
        run_in(&self.port_netns, || PacketSocketPort::open(host_ifname))
            .map_err(netns_err(host_ifname))?
            .map_err(EffectError::from)
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
            let result = match effect {
                // The namespace this request deletes takes the device with
                // it, in the kernel's own time: deleting the device first
                // would wait here for RCU (the kernel's unregistration),
                // tens of milliseconds on a busy host.
                Effect::DetachEndpoint(a) if deletes_netns(&effects[i..], &a.sandbox) => {
                    self.release(a);
                    Ok(())
                }
                _ => self.execute(effect, config),
            };
            if let Err(e) = result {
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
                create_netns(file_name(path))?;
                self.hooks.reached(Point::NetnsCreated);
                Ok(())
            }
            Effect::AdoptNetns {
                path,
                name,
                handle,
                host,
                ..
            } => {
                let ns = Netns::open(path).map_err(netns_err(name))?;
                if !*host && !self.allow_host_netns && ns.is_host().map_err(netns_err(name))? {
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
            Effect::RenameSandbox { .. } => Ok(()),
            Effect::PublishPorts {
                network,
                container,
                gateway,
                ports,
                ..
            } => self.publish(*network, *container, *gateway, ports),
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
            // The device is reopened where it was kept (its namespace was
            // to take it), or made again, with the default route it had.
            Effect::DetachEndpoint(a) => match self.reopen(a) {
                Ok(port) => self
                    .datapath
                    .add_port(a.port, port)
                    .map_err(EffectError::from),
                Err(_) => self.attach(a),
            },
            // The configuration is pushed again by the caller after it
            // restores the controller.
            Effect::PushSwitchConfig | Effect::RenameSandbox { .. } => Ok(()),
            Effect::PublishPorts { ports, .. } => {
                for &p in ports {
                    self.ports.detach(&p.into());
                }
                Ok(())
            }
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
        // A handed-off port never enters its sandbox (which may not exist
        // yet when Docker joins it).
        let open_ns = || Netns::open(&a.netns).map_err(netns_err(&a.sandbox));
        let config = EndpointConfig {
            name: a.ifname.clone(),
            mac: a.mac,
            address: a.ipv4,
            prefix_len: a.prefix_len,
            mtu: u32::from(a.mtu),
            gateway: a.gateway,
            txqueuelen: Some(a.txqueuelen),
        };
        let port: Arc<dyn PortIo> = match a.kind {
            PortKind::Tap => {
                let ns = open_ns()?;
                // Made inside the sandbox, with the netlink socket that
                // configures it, by one helper thread: no device crosses
                // namespaces (a move costs the kernel an unregistration and
                // a registration of the device) and the host's namespace
                // never sees it.
                let (tap, mut nl) = run_in(&ns, || {
                    let tap = TapPort::create(&a.host_ifname)?;
                    match Netlink::new() {
                        Ok(nl) => Ok((tap, nl)),
                        Err(e) => {
                            let _ = tap.destroy();
                            Err(netconf_err(&a.host_ifname)(e))
                        }
                    }
                })
                .map_err(netns_err(&a.sandbox))??;
                drop(ns);
                self.hooks.reached(Point::DeviceCreated);
                if let Err(e) = nl.configure_local(&a.host_ifname, &config) {
                    let _ = tap.destroy();
                    return Err(EffectError::Netconf {
                        device: a.host_ifname.clone(),
                        source: e,
                    });
                }
                self.hooks.reached(Point::DeviceConfigured);
                Arc::new(watch_tap(tap, &a.netns, &a.ifname))
            }
            PortKind::Veth => {
                // The pair is made in the ports namespace; its peer moves
                // into the sandbox and the host end stays where only the
                // daemon sees it.
                let ns = open_ns()?;
                let mut host = self.port_netlink(&a.host_ifname)?;
                let peer = veth_peer_name(&a.host_ifname);
                host.create_veth(&a.host_ifname, &peer)
                    .map_err(netconf_err(&a.host_ifname))?;
                self.hooks.reached(Point::DeviceCreated);
                let opened = (|| {
                    host.configure_endpoint(&ns, &peer, &config)
                        .map_err(netconf_err(&peer))?;
                    self.open_host_end(&mut host, a)
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
            PortKind::Handoff => Arc::new(self.attach_handoff(a)?),
        };
        if let Err(e) = self.datapath.add_port(a.port, port) {
            self.remove_devices(a);
            return Err(e.into());
        }
        Ok(())
    }

    /// Makes a [`PortKind::Handoff`] pair: the host end in the ports
    /// namespace, read by a packet socket; the peer, named `vsp…`, with the
    /// endpoint's MAC and MTU but no address, in the daemon's own namespace,
    /// where Docker's `Join` looks it up, moves it into the sandbox,
    /// renames and addresses it. Whichever namespace the peer is in later,
    /// the host end keeps carrying its frames.
    fn attach_handoff(&self, a: &Attachment) -> Result<PacketSocketPort, EffectError> {
        let mut host = self.port_netlink(&a.host_ifname)?;
        let peer = veth_peer_name(&a.host_ifname);
        host.create_veth(&a.host_ifname, &peer)
            .map_err(netconf_err(&a.host_ifname))?;
        self.hooks.reached(Point::DeviceCreated);
        let opened = (|| {
            let own = Netns::current().map_err(netns_err(&peer))?;
            host.set_mac(&peer, a.mac).map_err(netconf_err(&peer))?;
            host.set_mtu(&peer, u32::from(a.mtu))
                .map_err(netconf_err(&peer))?;
            host.set_txqueuelen(&peer, a.txqueuelen)
                .map_err(netconf_err(&peer))?;
            host.move_to_netns(&peer, &own)
                .map_err(netconf_err(&peer))?;
            self.open_host_end(&mut host, a)
        })();
        match opened {
            Ok(port) => {
                self.hooks.reached(Point::DeviceConfigured);
                Ok(port)
            }
            Err(e) => {
                // Deleting the host end deletes the peer wherever it is.
                let _ = host.delete_link(&a.host_ifname);
                Err(e)
            }
        }
    }

    /// Takes the port from the datapath, closing the daemon's descriptor
    /// of its device, and leaves the device to its namespace.
    fn release(&self, a: &Attachment) {
        if let Err(e) = self.datapath.remove_port(a.port) {
            tracing::warn!(port = %a.port, sandbox = %a.sandbox, network = %a.network, error = %e, "datapath did not release the port");
        }
    }

    /// Takes the port from the datapath and deletes its device. Failures
    /// are logged: the endpoint is gone from the model either way, and a
    /// device left behind is removed with its namespace.
    fn detach(&self, a: &Attachment) {
        self.release(a);
        let result = match a.kind {
            PortKind::Tap => Netns::open(&a.netns)
                .map_err(netns_err(&a.sandbox))
                .and_then(|ns| Netlink::in_netns(&ns).map_err(netconf_err(&a.ifname)))
                .and_then(|mut nl| nl.delete_link(&a.ifname).map_err(netconf_err(&a.ifname))),
            PortKind::Veth | PortKind::Handoff => {
                self.port_netlink(&a.host_ifname).and_then(|mut nl| {
                    nl.delete_link(&a.host_ifname)
                        .map_err(netconf_err(&a.host_ifname))
                })
            }
        };
        // A veth pair goes with either end: when the container's namespace
        // went first (a Docker container that ended), both ends are gone.
        let gone = matches!(
            &result,
            Err(EffectError::Netconf {
                source: NetconfError::DeleteLink { source, .. },
                ..
            }) if a.kind != PortKind::Tap && source.raw_os_error() == Some(libc::ENODEV)
        );
        if gone {
            tracing::debug!(endpoint = %a.endpoint, sandbox = %a.sandbox, "endpoint device already gone with its peer");
        } else if let Err(e) = result {
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
        // Host ends live in the ports namespace; an older daemon left them
        // in its own.
        let places = [Netlink::new().ok(), self.port_netlink(&a.host_ifname).ok()];
        for mut host in places.into_iter().flatten() {
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

    /// Moves a veth host end that an older daemon left in the host's
    /// namespace into the ports namespace, so the host stops seeing it.
    fn adopt_host_end(&self, host_ifname: &str) {
        let Ok(mut host) = Netlink::new() else {
            return;
        };
        if !host.link_exists(host_ifname).unwrap_or(false) {
            return;
        }
        let moved = host
            .move_to_netns(host_ifname, &self.port_netns)
            .and_then(|()| {
                let mut nl = Netlink::in_netns(&self.port_netns)?;
                nl.set_arp(host_ifname, false)?;
                nl.set_up(host_ifname, true)
            });
        match moved {
            Ok(()) => tracing::info!(device = host_ifname, "veth host end moved out of the host"),
            Err(e) => {
                tracing::warn!(device = host_ifname, error = %e, "veth host end not moved");
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
        let reopened = self.reopen(a);
        if a.kind == PortKind::Handoff {
            // The sandbox side belongs to the runtime that configured it:
            // a pair made again here would reach no container.
            return match reopened {
                Ok(port) => Ok(self.datapath.add_port(a.port, port)?),
                Err(e) => {
                    self.remove_devices(a);
                    Err(e)
                }
            };
        }
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

    /// Opens an endpoint's existing device: the persistent TAP inside its
    /// sandbox, or the veth's host end.
    fn reopen(&self, a: &Attachment) -> Result<Arc<dyn PortIo>, EffectError> {
        match a.kind {
            PortKind::Tap => Netns::open(&a.netns)
                .map_err(netns_err(&a.sandbox))
                .and_then(|ns| {
                    run_in(&ns, || TapPort::open(&a.ifname))
                        .map_err(netns_err(&a.sandbox))?
                        .map_err(EffectError::from)
                        .map(|tap| watch_tap(tap, &a.netns, &a.ifname))
                })
                .map(|t| Arc::new(t) as Arc<dyn PortIo>),
            PortKind::Veth | PortKind::Handoff => {
                self.adopt_host_end(&a.host_ifname);
                self.open_packet_socket(&a.host_ifname)
                    .map(|p| Arc::new(p) as Arc<dyn PortIo>)
            }
        }
    }
}

/// Whether `effects` delete the namespace of `sandbox` (always the last
/// effect of a sandbox's removal).
fn deletes_netns(effects: &[Effect], sandbox: &str) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::DeleteNetns { sandbox: s, .. } if s == sandbox))
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
        create_netns(name)?;
    }
    Ok(())
}

/// Creates the named namespace of a sandbox, with IPv6 off on the
/// interfaces that will appear in it, as Docker does for endpoints of
/// IPv4-only networks (all of vswitch's networks, for now): no link-local
/// address, duplicate address detection, router or multicast listener
/// messages, which the switch would flood to every port of the network at
/// each interface's start.
fn create_netns(name: &str) -> Result<(), EffectError> {
    Netns::create_with(name, || {
        match std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") {
            // A kernel without IPv6 has no such file, and nothing to disable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    })
    .map(drop)
    .map_err(netns_err(name))
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

/// Lets a TAP report its kernel drops, read in the sandbox's namespace
/// (reached by its path when counters are asked for, so that an endpoint
/// holds no descriptor beyond its TAP); a TAP whose namespace cannot be
/// reached then reports none.
fn watch_tap(tap: TapPort, netns: &Path, ifname: &str) -> TapPort {
    tap.watch_kernel_drops(netns, ifname)
}
