//! The `vswitchd` process: threads, the state directory, and the wiring
//! between the control plane and the datapath.
//!
//! ```text
//!  main ── signals (TERM, INT) ─────────────── shutdown
//!   ├ api       HTTP on the unix socket → Daemon::apply
//!   │           (controller → effects on devices → store → dns → answer)
//!   ├ datapath  one Worker per core: its ports, Switch::process, mailbox
//!   └ dns       the embedded DNS (crate::dnsd): 127.0.0.11 in each sandbox
//! ```
//!
//! Requests are applied one at a time under one lock: the controller is
//! pure, so applying a request, carrying out its effects and writing the
//! model to the store before answering is a short critical section, and the
//! datapath never waits on it (it gets a new configuration through its
//! mailbox).
//!
//! After a request has been committed (its effects done, the model saved),
//! the embedded DNS is brought in line with the model ([`dns_sync::DnsSync`]):
//! records, listeners, resolv.conf files. It takes no part in the
//! request's success, so a request stays all-or-nothing.

pub mod dns_sync;
pub mod effects;
pub mod lock;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::api::Backend;
use crate::api::types::{DnsNetworkView, FdbView, PortView};
use crate::control::{
    ControlError, Controller, ControllerConfig, Ctx, OsEntropy, Request, Response, Store,
    rfc3339_nano,
};
use crate::datapath::Datapath;
use dns_sync::DnsSync;
use effects::Executor;

/// The control plane of a running daemon; the API server's [`Backend`].
#[derive(Debug)]
pub struct Daemon {
    state: Mutex<State>,
    executor: Executor,
    datapath: Datapath,
}

#[derive(Debug)]
struct State {
    controller: Controller,
    store: Store,
    entropy: OsEntropy,
    dns: Option<DnsSync>,
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
}

impl Daemon {
    /// Opens the state in `state_dir` (creating Docker's default `bridge`
    /// network on a first start), puts veth host ends in `port_netns`
    /// ([`effects::open_port_netns`]), hands the datapath its configuration,
    /// reattaches every endpoint's device and, with `dns`, opens the
    /// embedded DNS listeners of every sandbox on a user network and
    /// rewrites their resolv.conf files.
    ///
    /// # Errors
    /// When the store cannot be read or written, or the stored model is
    /// inconsistent. A device that cannot be reattached is logged, not
    /// fatal: the rest of the host keeps working.
    pub fn start(
        state_dir: &Path,
        config: ControllerConfig,
        datapath: Datapath,
        port_netns: crate::netns::Netns,
        mut dns: Option<DnsSync>,
    ) -> Result<Self, StartError> {
        let store = Store::open(state_dir)?;
        let entropy = OsEntropy::new();
        let controller = if let Some(model) = store.load()? {
            tracing::info!(
                networks = model.networks.len(),
                endpoints = model.endpoints.len(),
                "state restored"
            );
            Controller::from_model(config, model)?
        } else {
            let now = rfc3339_nano(SystemTime::now());
            let controller = Controller::new(config, &Ctx::new(&now, &entropy))?;
            store.save(controller.model())?;
            tracing::info!("first start: created the default bridge network");
            controller
        };
        let executor = Executor::new(datapath.clone(), port_netns);
        executor.push_config(&controller)?;
        for attachment in controller.attachments() {
            let owned = controller
                .model()
                .sandbox(&attachment.sandbox)
                .is_some_and(|s| s.netns_owned);
            if let Err(e) = executor.reattach(&attachment, owned) {
                tracing::error!(endpoint = %attachment.endpoint, error = %e, "endpoint not reattached");
            }
        }
        if let Some(dns) = &mut dns {
            dns.sync(controller.model());
        }
        Ok(Self {
            state: Mutex::new(State {
                controller,
                store,
                entropy,
                dns,
            }),
            executor,
            datapath,
        })
    }
}

impl Backend for Daemon {
    fn apply(&self, request: Request) -> Result<Response, ControlError> {
        let mut state = self.state.lock();
        let State {
            controller,
            store,
            entropy,
            dns,
        } = &mut *state;
        let before = controller.clone();
        let now = rfc3339_nano(SystemTime::now());
        let outcome = controller.apply(request, &Ctx::new(&now, entropy))?;
        let done = self
            .executor
            .run(controller, &outcome.effects)
            .map_err(|e| ControlError::Internal(e.to_string()))
            .and_then(|()| {
                if outcome.changed {
                    store
                        .save(controller.model())
                        .map_err(|e| ControlError::Internal(e.to_string()))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = done {
            // Back to the state before the request: model, IPAM and the
            // datapath's configuration (the executor undid the devices).
            *controller = before;
            if let Err(push) = self.executor.push_config(controller) {
                tracing::error!(error = %push, "cannot restore the datapath configuration");
            }
            tracing::warn!(error = %e, "request failed and was rolled back");
            return Err(e);
        }
        if outcome.changed
            && let Some(dns) = dns
        {
            dns.sync(controller.model());
        }
        Ok(outcome.response)
    }

    fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ControlError> {
        let rows = self
            .datapath
            .fdb()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.state.lock().controller.fdb_views(&rows, network)
    }

    fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        let stats = self
            .datapath
            .port_stats()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let state = self.state.lock();
        Ok(state.controller.port_views(|port| {
            stats
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        }))
    }

    fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError> {
        let state = self.state.lock();
        let records = state
            .dns
            .as_ref()
            .map_or_else(|| Arc::new(dns::Records::new()), DnsSync::records);
        state.controller.dns_views(&records, network)
    }
}
