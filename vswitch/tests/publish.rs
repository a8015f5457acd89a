//! Published ports in the controller's plans, without a host: a fake
//! binder stands for the kernel (ports held by other processes, addresses
//! that are not local) and records what is open.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use nat::{BindError, Binder, Proto};
use vswitch::api::types::{
    ConnectRequest, DisconnectRequest, HostBinding, HostConfig, NetworkCreateRequest,
    SandboxCreateRequest,
};
use vswitch::control::{
    ControlError, Controller, ControllerConfig, Ctx, Effect, Outcome, Request, SeededEntropy,
};

const NOW: &str = "2026-11-23T11:45:59.123456789Z";

#[derive(Default)]
struct Host {
    held: BTreeSet<(IpAddr, Proto, u16)>,
    open: BTreeSet<(IpAddr, Proto, u16)>,
}

impl Binder for Host {
    fn bind(&mut self, ip: IpAddr, proto: Proto, port: u16) -> Result<(), BindError> {
        if self.held.contains(&(ip, proto, port)) || !self.open.insert((ip, proto, port)) {
            return Err(BindError::AddrInUse);
        }
        Ok(())
    }

    fn unbind(&mut self, ip: IpAddr, proto: Proto, port: u16) {
        self.open.remove(&(ip, proto, port));
    }
}

struct T {
    c: Controller,
    e: SeededEntropy,
    host: RefCell<Host>,
}

impl T {
    fn new() -> Self {
        let e = SeededEntropy::new(7);
        let c = Controller::new(ControllerConfig::default(), &Ctx::new(NOW, &e)).unwrap();
        let mut t = Self {
            c,
            e,
            host: RefCell::new(Host::default()),
        };
        let _ = t.ok(Request::CreateNetwork(NetworkCreateRequest {
            name: "n1".into(),
            ..Default::default()
        }));
        let _ = t.ok(Request::CreateNetwork(NetworkCreateRequest {
            name: "n2".into(),
            ..Default::default()
        }));
        let _ = t.ok(Request::CreateNetwork(NetworkCreateRequest {
            name: "in1".into(),
            internal: true,
            ..Default::default()
        }));
        t
    }

    fn apply(&mut self, r: Request) -> Result<Outcome, ControlError> {
        let ctx = Ctx::new(NOW, &self.e).with_binder(&self.host);
        self.c.apply(r, &ctx)
    }

    /// A change's effects, or its refusal.
    fn change(&mut self, r: Request) -> Result<Vec<Effect>, ControlError> {
        self.apply(r).map(|o| o.effects)
    }

    fn ok(&mut self, r: Request) -> Outcome {
        match self.apply(r.clone()) {
            Ok(o) => o,
            Err(e) => panic!("{r:?} refused: {e}"),
        }
    }

    /// A sandbox with `-p` specs, as vsctl sends them.
    fn sandbox(&mut self, name: &str, specs: &[(&str, &str, &str)]) {
        let mut port_bindings: BTreeMap<String, Vec<HostBinding>> = BTreeMap::new();
        for (key, ip, port) in specs {
            port_bindings
                .entry((*key).to_owned())
                .or_default()
                .push(HostBinding {
                    host_ip: (*ip).to_owned(),
                    host_port: (*port).to_owned(),
                });
        }
        let _ = self.ok(Request::CreateSandbox(SandboxCreateRequest {
            name: name.into(),
            host_config: Some(HostConfig {
                port_bindings,
                publish_all_ports: false,
                ..HostConfig::default()
            }),
            ..Default::default()
        }));
    }

    fn connect(&mut self, net: &str, sb: &str) -> Result<Vec<Effect>, ControlError> {
        self.change(Request::Connect {
            network: net.into(),
            request: ConnectRequest {
                container: sb.into(),
                ..Default::default()
            },
        })
    }

    /// `vsctl port`'s lines for a sandbox, from the model.
    fn ports(&self, sb: &str) -> Vec<String> {
        let m = self.c.model();
        let id = &m.sandboxes.iter().find(|s| s.name == sb).unwrap().id;
        let mut lines: Vec<String> = m
            .endpoints
            .iter()
            .filter(|e| &e.sandbox == id)
            .flat_map(|e| &e.published)
            .map(|&p| nat::PublishedPort::from(p).to_string())
            .collect();
        lines.sort();
        lines
    }

    fn open(&self) -> usize {
        self.host.borrow().open.len()
    }
}

#[test]
fn dynamic_ports_follow_the_cursor_and_a_failed_request_moves_nothing() {
    let mut t = T::new();
    t.sandbox("a1", &[("85/tcp", "", "")]);
    let effects = t.connect("n1", "a1").unwrap();
    // The sockets are handed over after the device and the configuration.
    let kinds: Vec<&str> = effects
        .iter()
        .map(|e| match e {
            Effect::AttachEndpoint(_) => "attach",
            Effect::PushSwitchConfig => "config",
            Effect::PublishPorts { .. } => "publish",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["attach", "config", "publish"]);
    assert_eq!(
        t.ports("a1"),
        ["85/tcp -> 0.0.0.0:32768", "85/tcp -> [::]:32768"]
    );

    // A dynamic port, then an explicit one the host refuses: all or nothing.
    t.host
        .borrow_mut()
        .held
        .insert(("0.0.0.0".parse().unwrap(), Proto::Tcp, 18100));
    t.sandbox("a2", &[("86/tcp", "", ""), ("80/tcp", "", "18100")]);
    let before = serde_json::to_string(t.c.model()).unwrap();
    let err = t.connect("n1", "a2").unwrap_err();
    assert!(
        err.to_string().ends_with(
            "Error starting userland proxy: listen tcp4 0.0.0.0:18100: bind: address already in use"
        ),
        "{err}"
    );
    assert_eq!(serde_json::to_string(t.c.model()).unwrap(), before);
    assert_eq!(t.open(), 2, "the request's sockets were closed");

    // The cursor did not move: the next dynamic port is 32769.
    t.sandbox("a3", &[("87/tcp", "", "")]);
    t.connect("n1", "a3").unwrap();
    assert_eq!(
        t.ports("a3"),
        ["87/tcp -> 0.0.0.0:32769", "87/tcp -> [::]:32769"]
    );
}

#[test]
fn ports_live_on_the_gateway_endpoint_and_move_with_it() {
    let mut t = T::new();
    t.sandbox("w1", &[("80/tcp", "", "18080")]);
    // An internal network gives no external connectivity.
    t.connect("in1", "w1").unwrap();
    assert!(t.ports("w1").is_empty());
    assert_eq!(t.open(), 0);
    t.change(Request::Disconnect {
        network: "in1".into(),
        request: DisconnectRequest {
            container: "w1".into(),
            force: false,
        },
    })
    .unwrap();
    t.connect("n1", "w1").unwrap();
    // A second network does not publish again.
    let effects = t.connect("n2", "w1").unwrap();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::PublishPorts { .. }))
    );
    assert_eq!(t.open(), 2);
    let on = |t: &T, net: &str| {
        let m = t.c.model();
        let num = m.networks.iter().find(|n| n.name == net).unwrap().num;
        m.endpoints
            .iter()
            .find(|e| e.network == num)
            .is_some_and(|e| !e.published.is_empty())
    };
    assert!(on(&t, "n1") && !on(&t, "n2"));
    // Leaving n1 hands the gateway, and the ports, to n2.
    let effects = t
        .change(Request::Disconnect {
            network: "n1".into(),
            request: DisconnectRequest {
                container: "w1".into(),
                force: false,
            },
        })
        .unwrap();
    assert!(matches!(
        effects.last(),
        Some(Effect::SetDefaultRoute { .. })
    ));
    assert!(on(&t, "n2"));
    assert_eq!(
        t.ports("w1"),
        ["80/tcp -> 0.0.0.0:18080", "80/tcp -> [::]:18080"]
    );
    assert_eq!(t.open(), 2);
    // Removing the sandbox releases them; another may take the port.
    t.change(Request::RemoveSandbox { name: "w1".into() })
        .unwrap();
    assert_eq!(t.open(), 0);
    t.sandbox("w2", &[("81/tcp", "", "18080")]);
    t.connect("n1", "w2").unwrap();
    assert_eq!(
        t.ports("w2"),
        ["81/tcp -> 0.0.0.0:18080", "81/tcp -> [::]:18080"]
    );
}

#[test]
fn a_restored_controller_keeps_its_allocations() {
    let mut t = T::new();
    t.sandbox("r1", &[("80/tcp", "127.0.0.1", "18090")]);
    t.connect("n1", "r1").unwrap();
    let model = t.c.model().clone();
    t.c = Controller::from_model(ControllerConfig::default(), model).unwrap();
    // Nothing is open on the fake host now, so only the allocator refuses.
    t.host.borrow_mut().open.clear();
    t.sandbox("r2", &[("80/tcp", "127.0.0.1", "18090")]);
    let err = t.connect("n1", "r2").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("Bind for 127.0.0.1:18090 failed: port is already allocated"),
        "{err}"
    );
    assert_eq!(err.status(), 500);
}

#[test]
fn network_options_are_kept_and_read_back_typed() {
    let mut t = T::new();
    let _ = t.ok(Request::CreateNetwork(NetworkCreateRequest {
        name: "o1".into(),
        options: [
            ("com.docker.network.bridge.enable_ip_masquerade", "false"),
            ("com.docker.network.bridge.enable_icc", "0"),
            ("com.docker.network.bridge.host_binding_ipv4", "127.0.0.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        internal: true,
        ..Default::default()
    }));
    let m = t.c.model();
    let o1 = m.networks.iter().find(|n| n.name == "o1").unwrap();
    assert!(!o1.ip_masquerade() && !o1.icc && o1.internal);
    assert_eq!(o1.host_binding_ipv4(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(
        o1.options["com.docker.network.bridge.enable_ip_masquerade"],
        "false"
    );
    let n1 = m.networks.iter().find(|n| n.name == "n1").unwrap();
    assert!(n1.ip_masquerade() && n1.icc && !n1.internal);
    assert!(n1.host_binding_ipv4().is_unspecified());
}

#[test]
fn without_ipv6_a_binding_without_an_address_is_made_on_ipv4_only() {
    let mut t = T::new();
    let config = ControllerConfig {
        host_ipv6: false,
        ..ControllerConfig::default()
    };
    t.c = Controller::from_model(config, t.c.model().clone()).unwrap();
    t.sandbox("v4", &[("80/tcp", "", "18080"), ("81/tcp", "::1", "18081")]);
    t.connect("n1", "v4").unwrap();
    assert_eq!(
        t.ports("v4"),
        ["80/tcp -> 0.0.0.0:18080", "81/tcp -> [::1]:18081"]
    );
}

#[test]
fn bad_bindings_through_the_api_get_the_cli_texts() {
    let mut t = T::new();
    let err = t
        .apply(Request::CreateSandbox(SandboxCreateRequest {
            name: "b1".into(),
            host_config: Some(HostConfig {
                port_bindings: [(
                    "80/tcp".to_owned(),
                    vec![HostBinding {
                        host_ip: String::new(),
                        host_port: "70000".into(),
                    }],
                )]
                .into_iter()
                .collect(),
                publish_all_ports: false,
                ..HostConfig::default()
            }),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid hostPort: 70000");
    assert_eq!(err.status(), 400);
    assert!(t.c.model().sandboxes.is_empty());
}
