//! Docker's plugin protocol router on arbitrary call sequences, against a
//! real controller (effects are not carried out): whatever dockerd (or
//! anything on the socket) sends, the plugin answers with a status and
//! JSON, and never panics.
//!
//! Input: `path \0 body`, calls separated by `0xff`.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vswitch::api::Backend;
use vswitch::api::types::{DnsNetworkView, FdbView, PortView};
use vswitch::control::{
    ControlError, Controller, ControllerConfig, Ctx, Request, Response, SeededEntropy,
};
use vswitch::docker::{Plugin, route};
use vswitch::switch::PortStats;

const NOW: &str = "2026-11-23T11:45:59.123456789Z";

struct Fake {
    inner: Mutex<(Controller, SeededEntropy)>,
}

impl Backend for Fake {
    fn apply(&self, request: Request) -> Result<Response, ControlError> {
        let mut g = self.inner.lock().expect("lock");
        let (c, e) = &mut *g;
        c.apply(request, &Ctx::new(NOW, e)).map(|o| o.response)
    }

    fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ControlError> {
        self.inner.lock().expect("lock").0.fdb_views(&[], network)
    }

    fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        Ok(self
            .inner
            .lock()
            .expect("lock")
            .0
            .port_views(|_| PortStats::default()))
    }

    fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError> {
        let g = self.inner.lock().expect("lock");
        g.0.dns_views(&dns::Records::new(), network)
    }
}

fuzz_target!(|data: &[u8]| {
    let e = SeededEntropy::new(7);
    let Ok(c) = Controller::new(ControllerConfig::default(), &Ctx::new(NOW, &e)) else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(Fake {
        inner: Mutex::new((c, e)),
    });
    let Ok(plugin) = Plugin::new(backend, None) else {
        return;
    };
    for call in data.split(|&b| b == 0xff).take(32) {
        let mut parts = call.splitn(2, |&b| b == 0);
        let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
        let body = parts.next().unwrap_or_default();
        let reply = route(&plugin, "POST", &path, body);
        assert!((100..600).contains(&reply.status));
        assert!(serde_json::from_slice::<serde_json::Value>(&reply.body).is_ok());
    }
});
