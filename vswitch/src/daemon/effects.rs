//! Carries out the controller's [`Effect`]s on real devices: namespaces,
//! TAPs and veth pairs, their configuration, and the datapath's ports.
//!
//! Each effect that succeeded can be undone, so a request whose later
//! effect fails leaves no device behind (the controller itself is rolled
//! back by restoring the copy taken before the request).

use std::io;
use std::sync::Arc;

use crate::control::{Attachment, Controller, Detachment, Effect, PortKind};
use crate::datapath::Datapath;
use crate::netconf::{EndpointConfig, NetconfError, Netlink};
use crate::netns::{Netns, NetnsError, run_in};
use crate::port::{PacketSocketPort, PortError, PortIo, TapPort};

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
    /// The datapath thread is gone.
    #[error("datapath: {0}")]
    Datapath(#[from] io::Error),
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
}

impl Executor {
    /// An executor feeding `datapath`.
    #[must_use]
    pub const fn new(datapath: Datapath) -> Self {
        Self { datapath }
    }

    /// Carries out `effects` in order. On the first failure, undoes the
    /// ones already done (newest first) and returns the error.
    ///
    /// # Errors
    /// The first effect that failed.
    pub fn run(&self, controller: &Controller, effects: &[Effect]) -> Result<(), EffectError> {
        for (i, effect) in effects.iter().enumerate() {
            if let Err(e) = self.execute(controller, effect) {
                for done in effects[..i].iter().rev() {
                    self.undo(done);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Carries out one effect.
    ///
    /// # Errors
    /// When the device, namespace or datapath operation fails.
    pub fn execute(&self, controller: &Controller, effect: &Effect) -> Result<(), EffectError> {
        match effect {
            Effect::CreateNetns { path, .. } => {
                let name = file_name(path);
                Netns::create(name).map(drop).map_err(netns_err(name))
            }
            Effect::AdoptNetns { path, name, .. } => {
                Netns::open(path).map(drop).map_err(netns_err(name))
            }
            Effect::DeleteNetns { path, .. } => {
                let name = file_name(path);
                Netns::delete(name).map_err(netns_err(name))
            }
            Effect::AttachEndpoint(a) => self.attach(a),
            Effect::DetachEndpoint(d) => {
                self.detach(d);
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
            Effect::PushSwitchConfig => self.push_config(controller),
        }
    }

    /// Hands the datapath the configuration the model now describes.
    ///
    /// # Errors
    /// When the configuration is invalid or the datapath is gone.
    pub fn push_config(&self, controller: &Controller) -> Result<(), EffectError> {
        let config = controller.switch_config()?;
        self.datapath.set_config(&Arc::new(config))?;
        Ok(())
    }

    /// Best-effort reversal of an effect that succeeded.
    fn undo(&self, effect: &Effect) {
        let result = match effect {
            Effect::CreateNetns { path, .. } => {
                let name = file_name(path);
                Netns::delete(name).map_err(netns_err(name))
            }
            Effect::AttachEndpoint(a) => {
                self.detach(&Detachment {
                    endpoint: a.endpoint.clone(),
                    sandbox: a.sandbox.clone(),
                    netns: a.netns.clone(),
                    port: a.port,
                    kind: a.kind,
                    host_ifname: a.host_ifname.clone(),
                    ifname: a.ifname.clone(),
                });
                Ok(())
            }
            // Nothing to undo, or nothing that can be: a detached endpoint's
            // device is gone, and the configuration is pushed again by the
            // caller after restoring the controller.
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "rolling back a failed request left something behind");
        }
    }

    /// Creates the endpoint's device, configures it inside the sandbox and
    /// gives it to the datapath.
    fn attach(&self, a: &Attachment) -> Result<(), EffectError> {
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
                if let Err(e) = host.configure_endpoint(&ns, &a.host_ifname, &config) {
                    // The TAP may have moved already; deleting the device by
                    // its fd works wherever it is.
                    let _ = tap.destroy();
                    return Err(EffectError::Netconf {
                        device: a.host_ifname.clone(),
                        source: e,
                    });
                }
                Arc::new(watch_tap(tap, &ns, &a.ifname))
            }
            PortKind::Veth => {
                let peer = veth_peer_name(&a.host_ifname);
                host.create_veth(&a.host_ifname, &peer)
                    .map_err(netconf_err(&a.host_ifname))?;
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
                    Ok(port) => Arc::new(port),
                    Err(e) => {
                        let _ = host.delete_link(&a.host_ifname);
                        return Err(e);
                    }
                }
            }
        };
        self.datapath.add_port(a.port, port)?;
        Ok(())
    }

    /// Takes the port from the datapath and deletes its device. Failures
    /// are logged: the endpoint is gone from the model either way, and a
    /// device left behind is removed with its namespace.
    fn detach(&self, d: &Detachment) {
        if let Err(e) = self.datapath.remove_port(d.port) {
            tracing::warn!(port = %d.port, error = %e, "datapath did not release the port");
        }
        let result = match d.kind {
            PortKind::Tap => Netns::open(&d.netns)
                .map_err(netns_err(&d.sandbox))
                .and_then(|ns| Netlink::in_netns(&ns).map_err(netconf_err(&d.ifname)))
                .and_then(|mut nl| nl.delete_link(&d.ifname).map_err(netconf_err(&d.ifname))),
            PortKind::Veth => Netlink::new()
                .and_then(|mut nl| nl.delete_link(&d.host_ifname))
                .map_err(netconf_err(&d.host_ifname)),
        };
        if let Err(e) = result {
            tracing::warn!(endpoint = %d.endpoint, error = %e, "endpoint device not deleted");
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
                        .map(|tap| watch_tap(tap, &ns, &a.ifname))
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
                tracing::warn!(endpoint = %a.endpoint, error = %e, "device gone; creating it again");
                if netns_owned && Netns::open(&a.netns).is_err() {
                    let name = file_name(&a.netns);
                    Netns::create(name).map_err(netns_err(name))?;
                }
                self.attach(a)
            }
        }
    }
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

/// Lets a TAP report its kernel drops, read in the sandbox's namespace; a
/// TAP whose namespace cannot be reached reports none (and says so once).
fn watch_tap(tap: TapPort, ns: &Netns, ifname: &str) -> TapPort {
    match Netlink::in_netns(ns) {
        Ok(nl) => tap.watch_kernel_drops(nl, ifname),
        Err(e) => {
            tracing::warn!(device = %ifname, error = %e, "kernel drops of this port will not be counted");
            tap
        }
    }
}
