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
    /// Where the host ends of veth ports live ([`open_port_netns`]).
    port_netns: Netns,
}

impl Executor {
    /// An executor feeding `datapath`, with veth host ends in `port_netns`.
    #[must_use]
    pub const fn new(datapath: Datapath, port_netns: Netns) -> Self {
        Self {
            datapath,
            port_netns,
        }
    }

    /// A netlink handle in the namespace of the veth host ends.
    fn port_netlink(&self, device: &str) -> Result<Netlink, EffectError> {
        Netlink::in_netns(&self.port_netns).map_err(netconf_err(device))
    }

    /// Opens the packet socket of a veth host end, inside its namespace.
    fn open_packet_socket(&self, host_ifname: &str) -> Result<PacketSocketPort, EffectError> {
        run_in(&self.port_netns, || PacketSocketPort::open(host_ifname))
            .map_err(netns_err(host_ifname))?
            .map_err(EffectError::from)
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
        let port: Arc<dyn PortIo> = match a.kind {
            PortKind::Tap => {
                let mut host = Netlink::new().map_err(netconf_err(&a.host_ifname))?;
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
                Arc::new(tap)
            }
            PortKind::Veth => {
                // The pair is made in the ports namespace; its peer moves
                // into the sandbox and the host end stays where only the
                // daemon sees it.
                let mut host = self.port_netlink(&a.host_ifname)?;
                let peer = veth_peer_name(&a.host_ifname);
                host.create_veth(&a.host_ifname, &peer)
                    .map_err(netconf_err(&a.host_ifname))?;
                let opened = (|| {
                    host.configure_endpoint(&ns, &peer, &config)
                        .map_err(netconf_err(&peer))?;
                    // The host end carries the containers' frames only; no
                    // stack answers ARP on it.
                    host.set_arp(&a.host_ifname, false)
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_txqueuelen(&a.host_ifname, a.txqueuelen)
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_mtu(&a.host_ifname, u32::from(a.mtu))
                        .map_err(netconf_err(&a.host_ifname))?;
                    host.set_up(&a.host_ifname, true)
                        .map_err(netconf_err(&a.host_ifname))?;
                    self.open_packet_socket(&a.host_ifname)
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
            PortKind::Veth => self.port_netlink(&d.host_ifname).and_then(|mut nl| {
                nl.delete_link(&d.host_ifname)
                    .map_err(netconf_err(&d.host_ifname))
            }),
        };
        if let Err(e) = result {
            tracing::warn!(endpoint = %d.endpoint, error = %e, "endpoint device not deleted");
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
        let reopened: Result<Arc<dyn PortIo>, EffectError> = match a.kind {
            PortKind::Tap => Netns::open(&a.netns)
                .map_err(netns_err(&a.sandbox))
                .and_then(|ns| {
                    run_in(&ns, || TapPort::open(&a.ifname))
                        .map_err(netns_err(&a.sandbox))?
                        .map_err(EffectError::from)
                })
                .map(|t| Arc::new(t) as Arc<dyn PortIo>),
            PortKind::Veth => {
                self.adopt_host_end(&a.host_ifname);
                self.open_packet_socket(&a.host_ifname)
                    .map(|p| Arc::new(p) as Arc<dyn PortIo>)
            }
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
