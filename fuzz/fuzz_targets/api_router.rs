//! The control API's router on arbitrary method, URL and body, against a
//! real controller (effects are not carried out). Whatever arrives, the
//! router answers with a status and never panics.
//!
//! Input: `method \0 url \0 body`, repeated requests separated by `\0\0`.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use vswitch::api::types::{DnsNetworkView, FdbView, PortView};
use vswitch::api::{Backend, route};
use vswitch::control::{
    ControlError, Controller, ControllerConfig, Ctx, Request, Response, SeededEntropy,
};
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
    let backend = Fake {
        inner: Mutex::new((c, e)),
    };
    for request in data.split(|&b| b == 0xff).take(16) {
        let mut parts = request.splitn(3, |&b| b == 0);
        let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
        let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
        let body = parts.next().unwrap_or_default();
        let reply = route(&backend, &method, &url, body);
        assert!((100..600).contains(&reply.status));
    }
});
