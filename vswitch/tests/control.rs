//! Controller plans without root: every request's response and effects,
//! every refusal with Docker's text and status (and the model untouched
//! after it), Docker's addresses and names, and the store's round trip.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use vswitch::api::types::{
    ConnectRequest, DisconnectRequest, EndpointIpamConfig, EndpointSettings, EndpointView,
    IpamConfigEntry, IpamRequest, NetworkCreateRequest, NetworkInspect, SandboxCreateRequest,
    SandboxView,
};
use vswitch::control::{
    Attachment, ControlError, Controller, ControllerConfig, Ctx, Effect, Model, Outcome, PortKind,
    Request, Response, SeededEntropy, Store, StoreError,
};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{FdbRow, Origin, PortRole, PortStats};

const NOW: &str = "2026-11-23T11:45:59.123456789Z";

struct T {
    c: Controller,
    e: SeededEntropy,
}

impl T {
    /// A controller on a host with a VTEP, whose peer file names `pinned`
    /// with VNI 5000.
    fn with_overlay() -> Self {
        let e = SeededEntropy::new(42);
        let config = ControllerConfig {
            overlay: true,
            overlay_vnis: [("pinned".to_owned(), 5000)].into_iter().collect(),
            ..ControllerConfig::default()
        };
        let c = Controller::new(config, &Ctx::new(NOW, &e)).unwrap();
        Self { c, e }
    }

    fn new() -> Self {
        let e = SeededEntropy::new(42);
        let c = Controller::new(ControllerConfig::default(), &Ctx::new(NOW, &e)).unwrap();
        Self { c, e }
    }

    fn apply(&mut self, r: Request) -> Result<Outcome, ControlError> {
        self.c.apply(r, &Ctx::new(NOW, &self.e))
    }

    fn ok(&mut self, r: Request) -> Outcome {
        match self.apply(r.clone()) {
            Ok(o) => o,
            Err(e) => panic!("{r:?} refused: {e}"),
        }
    }

    fn state(&self) -> String {
        serde_json::to_string(self.c.model()).unwrap()
    }

    /// Asserts a refusal with this text and status, and that neither the
    /// model (IPAM included) nor the generation moved.
    fn refused(&mut self, r: Request, message: &str, status: u16) -> ControlError {
        let before = self.state();
        let generation = self.c.generation();
        let e = match self.apply(r.clone()) {
            Ok(o) => panic!("{r:?} accepted: {o:?}"),
            Err(e) => e,
        };
        assert_eq!(e.to_string(), message, "{r:?}");
        assert_eq!(e.status(), status, "{e}");
        assert_eq!(self.state(), before, "model changed by refused {r:?}");
        assert_eq!(self.c.generation(), generation);
        e
    }

    fn create_net(&mut self, r: NetworkCreateRequest) -> String {
        match self.ok(Request::CreateNetwork(r)).response {
            Response::NetworkCreated(c) => c.id,
            other => panic!("{other:?}"),
        }
    }

    fn sandbox(&mut self, name: &str) -> SandboxView {
        match self
            .ok(Request::CreateSandbox(SandboxCreateRequest {
                name: name.to_owned(),
                netns_path: None,
                ..Default::default()
            }))
            .response
        {
            Response::Sandbox(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn connect(&mut self, net: &str, sb: &str) -> (EndpointView, Vec<Effect>) {
        let o = self.ok(connect(net, sb, None, &[]));
        match o.response {
            Response::Connected(v) => (v, o.effects),
            other => panic!("{other:?}"),
        }
    }

    fn inspect(&mut self, name: &str) -> NetworkInspect {
        match self
            .ok(Request::InspectNetwork {
                name: name.to_owned(),
            })
            .response
        {
            Response::Network(n) => n,
            other => panic!("{other:?}"),
        }
    }
}

fn net(name: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.to_owned(),
        ..NetworkCreateRequest::default()
    }
}

fn net_with(name: &str, config: IpamConfigEntry) -> NetworkCreateRequest {
    NetworkCreateRequest {
        ipam: Some(IpamRequest {
            config: vec![config],
            ..IpamRequest::default()
        }),
        ..net(name)
    }
}

fn net_opts(name: &str, opts: &[(&str, &str)]) -> NetworkCreateRequest {
    NetworkCreateRequest {
        options: opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..net(name)
    }
}

fn connect(net: &str, sb: &str, ip: Option<&str>, aliases: &[&str]) -> Request {
    Request::Connect {
        network: net.to_owned(),
        request: ConnectRequest {
            container: sb.to_owned(),
            endpoint_config: Some(EndpointSettings {
                ipam_config: ip.map(|a| EndpointIpamConfig {
                    ipv4_address: a.to_owned(),
                }),
                aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            }),
            port_kind: None,
            assigned_ipv4: None,
        },
    }
}

fn disconnect(net: &str, sb: &str) -> Request {
    Request::Disconnect {
        network: net.to_owned(),
        request: DisconnectRequest {
            container: sb.to_owned(),
            force: false,
        },
    }
}

fn rm_net(name: &str) -> Request {
    Request::RemoveNetwork {
        name: name.to_owned(),
    }
}

fn rm_sb(name: &str) -> Request {
    Request::RemoveSandbox {
        name: name.to_owned(),
    }
}

fn attachment(effects: &[Effect]) -> &Attachment {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::AttachEndpoint(a) => Some(a),
            _ => None,
        })
        .expect("an AttachEndpoint effect")
}

fn ipam_config_json(n: &NetworkInspect) -> String {
    serde_json::to_string(&n.ipam.config).unwrap()
}

// ----- The default network. -----

#[test]
fn default_bridge_has_dockers_shape() {
    let mut t = T::new();
    let b = t.inspect("bridge");
    assert_eq!(b.id.len(), 64);
    assert_eq!(b.created, NOW);
    assert_eq!((b.scope.as_str(), b.driver.as_str()), ("local", "bridge"));
    assert_eq!(ipam_config_json(&b), r#"[{"Subnet":"172.17.0.0/16"}]"#);
    assert_eq!(b.ipam.options, None);
    let options: BTreeMap<&str, &str> = b
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        options,
        BTreeMap::from([
            ("com.docker.network.bridge.default_bridge", "true"),
            ("com.docker.network.bridge.enable_icc", "true"),
            ("com.docker.network.bridge.enable_ip_masquerade", "true"),
            ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
            ("com.docker.network.bridge.name", "docker0"),
            ("com.docker.network.driver.mtu", "1500"),
        ])
    );
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["IPAM"]["Options"], serde_json::Value::Null);
    assert_eq!(json["Containers"], serde_json::json!({}));
    assert_eq!(json["Labels"], serde_json::json!({}));

    let n = &t.c.model().networks[0];
    assert_eq!(n.num, NetworkId(0));
    assert_eq!(n.gateway, Ipv4Addr::new(172, 17, 0, 1));
    assert_eq!(n.prefix_len, 16);
    assert_eq!(&n.gateway_mac.0[..2], &[0x02, 0x42]);
    assert!(n.builtin && n.icc && n.mtu == 1500);
}

#[test]
fn first_container_on_bridge_gets_dockers_address_and_mac() {
    let mut t = T::new();
    let sb = t.sandbox("c1");
    let (ep, effects) = t.connect("bridge", "c1");
    assert_eq!(ep.ipv4_address, "172.17.0.2/16");
    assert_eq!(ep.mac_address, "02:42:ac:11:00:02");
    assert_eq!(ep.interface, "eth0");
    assert_eq!(ep.gateway, "172.17.0.1");
    assert_eq!(ep.aliases, None, "the default bridge has no aliases");
    assert!(ep.default_route);
    let e = t.c.model().endpoints[0].clone();
    assert_eq!(ep.endpoint_id, e.id);
    assert_eq!(
        effects,
        vec![
            Effect::AttachEndpoint(Attachment {
                endpoint: e.id.clone(),
                sandbox: sb.id.clone(),
                netns: PathBuf::from(&sb.netns_path),
                network: NetworkId(0),
                port: PortId(1),
                kind: PortKind::Tap,
                host_ifname: format!("vst{}", &e.id[..12]),
                ifname: "eth0".to_owned(),
                mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
                ipv4: Ipv4Addr::new(172, 17, 0, 2),
                prefix_len: 16,
                mtu: 1500,
                gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
                txqueuelen: 1000,
            }),
            Effect::PushSwitchConfig,
        ]
    );
    assert_eq!(e.host_ifname.len(), 15);
    let b = t.inspect("bridge");
    let c = &b.containers[&sb.id];
    assert_eq!(
        serde_json::to_string(c).unwrap(),
        format!(
            r#"{{"Name":"c1","EndpointID":"{}","MacAddress":"02:42:ac:11:00:02","IPv4Address":"172.17.0.2/16","IPv6Address":""}}"#,
            e.id
        )
    );
}

#[test]
fn user_networks_take_the_next_default_pools() {
    let mut t = T::new();
    t.create_net(net("n1"));
    let n1 = t.inspect("n1");
    assert_eq!(
        ipam_config_json(&n1),
        r#"[{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]"#
    );
    assert_eq!(n1.ipam.options, Some(BTreeMap::new()));
    assert!(n1.options.is_empty());
    t.create_net(net("n2"));
    assert_eq!(
        t.inspect("n2").ipam.config[0].subnet.as_deref(),
        Some("172.19.0.0/16")
    );
    // The cursor rotates: a removed subnet is not handed out again at once.
    let _ = t.ok(rm_net("n1"));
    t.create_net(net("n3"));
    assert_eq!(
        t.inspect("n3").ipam.config[0].subnet.as_deref(),
        Some("172.20.0.0/16")
    );
    // Dense network ids are reused.
    let nums: Vec<(String, u32)> =
        t.c.model()
            .networks
            .iter()
            .map(|n| (n.name.clone(), n.num.0))
            .collect();
    assert_eq!(
        nums,
        [("bridge".into(), 0), ("n2".into(), 2), ("n3".into(), 1)]
    );
}

#[test]
fn automatic_subnets_avoid_host_networks() {
    let mut t = T::new();
    let host = [(Ipv4Addr::new(172, 18, 3, 0), 24)];
    let e = SeededEntropy::new(5);
    let ctx = Ctx {
        host_networks: &host,
        ..Ctx::new(NOW, &e)
    };
    let o = t.c.apply(Request::CreateNetwork(net("n1")), &ctx).unwrap();
    assert!(o.changed);
    assert_eq!(
        t.inspect("n1").ipam.config[0].subnet.as_deref(),
        Some("172.19.0.0/16")
    );
    // Explicit subnets are never checked against the host.
    let o = t.c.apply(
        Request::CreateNetwork(net_with("n2", IpamConfigEntry::subnet("172.18.0.0/16"))),
        &ctx,
    );
    assert!(o.is_ok());
}

#[test]
fn inspect_shows_ipam_config_as_docker_does() {
    let mut t = T::new();
    t.create_net(net_with("s1", IpamConfigEntry::subnet("10.78.0.0/30")));
    assert_eq!(
        ipam_config_json(&t.inspect("s1")),
        r#"[{"Subnet":"10.78.0.0/30"}]"#
    );
    t.create_net(net_with("s2", IpamConfigEntry::subnet("10.79.0.5/24")));
    assert_eq!(
        ipam_config_json(&t.inspect("s2")),
        r#"[{"Subnet":"10.79.0.5/24"}]"#
    );
    t.create_net(net_with(
        "s3",
        IpamConfigEntry::subnet("10.77.0.0/24")
            .with_range("10.77.0.128/25")
            .with_aux("a", "10.77.0.129")
            .with_aux("b", "10.77.0.130"),
    ));
    let s3 = t.inspect("s3");
    assert_eq!(
        ipam_config_json(&s3),
        r#"[{"Subnet":"10.77.0.0/24","IPRange":"10.77.0.128/25","AuxiliaryAddresses":{"a":"10.77.0.129","b":"10.77.0.130"}}]"#
    );
    // The gateway comes from the range; containers skip the aux addresses.
    assert_eq!(
        t.c.model().networks.last().unwrap().gateway,
        Ipv4Addr::new(10, 77, 0, 128)
    );
    t.sandbox("c1");
    let (ep, _) = t.connect("s3", "c1");
    assert_eq!(ep.ipv4_address, "10.77.0.131/24");
    t.create_net(net_with(
        "s4",
        IpamConfigEntry::subnet("10.80.0.0/24").with_gateway("10.80.0.254"),
    ));
    assert_eq!(
        ipam_config_json(&t.inspect("s4")),
        r#"[{"Subnet":"10.80.0.0/24","Gateway":"10.80.0.254"}]"#
    );
}

// ----- Endpoints. -----

#[test]
fn interfaces_are_named_in_attach_order_and_the_first_network_holds_the_route() {
    let mut t = T::new();
    t.create_net(net("n1"));
    t.create_net(net("n2"));
    let sb = t.sandbox("c1");
    let (e0, fx0) = t.connect("n1", "c1");
    let (e1, fx1) = t.connect("n2", "c1");
    assert_eq!(
        (e0.interface.as_str(), e1.interface.as_str()),
        ("eth0", "eth1")
    );
    assert_eq!(attachment(&fx0).gateway, Some(Ipv4Addr::new(172, 18, 0, 1)));
    assert_eq!(attachment(&fx1).gateway, None);
    assert_eq!(e0.aliases, Some(vec![sb.id[..12].to_owned()]));
    assert!(e0.default_route && !e1.default_route);

    // Disconnecting the route's network moves the route to the next one.
    let o = t.ok(disconnect("n1", "c1"));
    assert_eq!(o.response, Response::Done);
    assert_eq!(
        o.effects,
        vec![
            Effect::PushSwitchConfig,
            // The endpoint as it was attached, so an undo can attach it
            // again, default route included.
            Effect::DetachEndpoint(attachment(&fx0).clone()),
            Effect::SetDefaultRoute {
                sandbox: sb.id.clone(),
                netns: PathBuf::from(&sb.netns_path),
                ifname: "eth1".to_owned(),
                gateway: Ipv4Addr::new(172, 19, 0, 1),
            },
        ]
    );
    // Interface indexes are not reused (libnetwork's nextIfIndex).
    let (e2, fx2) = t.connect("n1", "c1");
    assert_eq!(e2.interface, "eth2");
    assert_eq!(attachment(&fx2).gateway, None);
    // The freed port id and address are reused.
    assert_eq!(e2.port, e0.port);
    assert_eq!(e2.ipv4_address, "172.18.0.2/16");
}

#[test]
fn aliases_are_user_aliases_then_the_short_id() {
    let mut t = T::new();
    t.create_net(net("n1"));
    let sb = t.sandbox("c1");
    let o = t.ok(connect("n1", "c1", None, &["shared", "second"]));
    let Response::Connected(ep) = o.response else {
        panic!()
    };
    assert_eq!(
        ep.aliases,
        Some(vec![
            "shared".to_owned(),
            "second".to_owned(),
            sb.id[..12].to_owned()
        ])
    );
}

#[test]
fn released_addresses_are_reused_at_once() {
    let mut t = T::new();
    for name in ["c1", "c2", "c3"] {
        t.sandbox(name);
        t.connect("bridge", name);
    }
    let _ = t.ok(rm_sb("c2"));
    t.sandbox("c4");
    let (ep, _) = t.connect("bridge", "c4");
    assert_eq!(ep.ipv4_address, "172.17.0.3/16");
    assert_eq!(ep.mac_address, "02:42:ac:11:00:03");
}

#[test]
fn static_addresses_on_user_subnets() {
    let mut t = T::new();
    t.create_net(net_with("s1", IpamConfigEntry::subnet("10.66.0.0/24")));
    t.sandbox("c1");
    let o = t.ok(connect("s1", "c1", Some("10.66.0.9"), &[]));
    let Response::Connected(ep) = o.response else {
        panic!()
    };
    assert_eq!(ep.ipv4_address, "10.66.0.9/24");
    assert_eq!(ep.mac_address, "02:42:0a:42:00:09");
    assert_eq!(
        t.c.model().endpoints[0].requested_ip.as_deref(),
        Some("10.66.0.9")
    );
}

#[test]
fn an_address_the_cluster_picked_is_dynamic_and_a_given_one_static() {
    // On an overlay with etcd the daemon hands the controller the address
    // the cluster's transaction took: it is used as is, but it is not the
    // user's `--ip`, so Docker's `IPAMConfig` stays null for it.
    let mut t = T::new();
    t.create_net(net_with("ov", IpamConfigEntry::subnet("10.67.0.0/24")));
    t.sandbox("picked");
    t.sandbox("given");
    let mut r = connect("ov", "picked", None, &[]);
    if let Request::Connect { request, .. } = &mut r {
        request.assigned_ipv4 = Some(Ipv4Addr::new(10, 67, 0, 7));
    }
    let Response::Connected(ep) = t.ok(r).response else {
        panic!()
    };
    assert_eq!(ep.ipv4_address, "10.67.0.7/24");
    assert_eq!(ep.ipam_config, None);
    let json = serde_json::to_value(&ep).unwrap();
    assert_eq!(json.get("IPAMConfig"), Some(&serde_json::Value::Null));
    let Response::Connected(ep) = t
        .ok(connect("ov", "given", Some("10.67.0.9"), &[]))
        .response
    else {
        panic!()
    };
    assert_eq!(
        ep.ipam_config,
        Some(EndpointIpamConfig {
            ipv4_address: "10.67.0.9".to_owned()
        })
    );
    let m = t.c.model();
    let requested: Vec<Option<&str>> = m
        .endpoints
        .iter()
        .map(|e| e.requested_ip.as_deref())
        .collect();
    assert_eq!(requested, [None, Some("10.67.0.9")]);
    // The picked address is taken in the local IPAM like any other.
    t.sandbox("third");
    let mut r = connect("ov", "third", None, &[]);
    if let Request::Connect { request, .. } = &mut r {
        request.assigned_ipv4 = Some(Ipv4Addr::new(10, 67, 0, 7));
    }
    let err = t.apply(r).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn options_are_kept_as_given_and_parsed() {
    let mut t = T::new();
    t.create_net(net_opts(
        "quiet",
        &[
            ("com.docker.network.bridge.enable_icc", "false"),
            ("com.docker.network.driver.mtu", "1400"),
            ("custom.key", "anything"),
        ],
    ));
    let n = t.inspect("quiet");
    assert_eq!(n.options.len(), 3);
    assert_eq!(n.options["com.docker.network.driver.mtu"], "1400");
    t.sandbox("c1");
    let (_, fx) = t.connect("quiet", "c1");
    assert_eq!(attachment(&fx).mtu, 1400);
    let cfg = t.c.switch_config().unwrap();
    let net = cfg.networks().find(|n| n.id == NetworkId(1)).unwrap();
    assert!(!net.icc);
    assert_eq!(net.mtu, 1400);
    // MTU 0 means the default.
    t.create_net(net_opts("zero", &[("com.docker.network.driver.mtu", "0")]));
    assert_eq!(t.c.model().networks.last().unwrap().mtu, 1500);
}

#[test]
fn switch_config_follows_the_model() {
    let mut t = T::new();
    let g0 = t.c.generation();
    t.create_net(net("n1"));
    assert_eq!(t.c.generation(), g0 + 1);
    t.sandbox("c1");
    assert_eq!(
        t.c.generation(),
        g0 + 1,
        "a sandbox alone changes no switch state"
    );
    t.connect("bridge", "c1");
    t.connect("n1", "c1");
    let cfg = t.c.switch_config().unwrap();
    assert_eq!(cfg.generation(), t.c.generation());
    assert_eq!(cfg.networks().count(), 2);
    let bridge = cfg.network(NetworkId(0)).unwrap();
    let gw = bridge.gateway.unwrap();
    assert_eq!(gw.ip, Ipv4Addr::new(172, 17, 0, 1));
    assert_eq!(gw.mac, t.c.model().networks[0].gateway_mac);
    let p1 = cfg.port(PortId(1)).unwrap();
    assert_eq!(p1.network, NetworkId(0));
    assert_eq!(
        p1.role,
        PortRole::Container {
            mac: MacAddr([2, 0x42, 172, 17, 0, 2]),
            ipv4: Some(Ipv4Addr::new(172, 17, 0, 2)),
        }
    );
    assert_eq!(cfg.port(PortId(2)).unwrap().network, NetworkId(1));
    assert_eq!(cfg.network_ports(NetworkId(1)), &[PortId(2)]);
}

#[test]
fn queries_change_nothing() {
    let mut t = T::new();
    t.create_net(net("zeta"));
    t.create_net(net("alpha"));
    t.sandbox("c1");
    let before = t.state();
    let o = t.ok(Request::ListNetworks);
    assert!(!o.changed && o.effects.is_empty());
    let Response::Networks(list) = o.response else {
        panic!()
    };
    let names: Vec<&str> = list.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bridge", "host", "none", "zeta"]);
    let o = t.ok(Request::ListSandboxes);
    assert!(matches!(o.response, Response::Sandboxes(ref s) if s.len() == 1));
    let _ = t.ok(Request::InspectSandbox { name: "c1".into() });
    assert_eq!(t.state(), before);
}

#[test]
fn networks_are_found_by_id_name_and_unique_prefix() {
    let mut t = T::new();
    let id = t.create_net(net("n1"));
    assert_eq!(t.inspect(&id).name, "n1");
    assert_eq!(t.inspect(&id[..12]).name, "n1");
    assert_eq!(t.inspect("n1").id, id);
    // Make two ids share a first digit, then ask for that digit.
    for i in 0..20 {
        t.create_net(net(&format!("x{i}")));
    }
    let mut by_digit: BTreeMap<char, usize> = BTreeMap::new();
    // host and none count too: every network is looked up alike.
    let m = t.c.model();
    for id in m
        .networks
        .iter()
        .map(|n| &n.id)
        .chain(m.predefined.iter().map(|p| &p.id))
    {
        *by_digit.entry(id.chars().next().unwrap()).or_default() += 1;
    }
    let (digit, count) = by_digit.into_iter().find(|&(_, c)| c > 1).unwrap();
    t.refused(
        Request::InspectNetwork {
            name: digit.to_string(),
        },
        &format!("network {digit} is ambiguous ({count} matches found based on ID prefix)"),
        400,
    );
}

// ----- Sandboxes. -----

#[test]
fn sandboxes_create_or_adopt_namespaces() {
    let mut t = T::new();
    let o = t.ok(Request::CreateSandbox(SandboxCreateRequest {
        name: "c1".into(),
        netns_path: None,
        ..Default::default()
    }));
    let Response::Sandbox(sb) = o.response else {
        panic!()
    };
    assert_eq!(sb.netns_path, "/run/netns/c1");
    assert!(sb.netns_owned);
    assert_eq!(
        o.effects,
        vec![Effect::CreateNetns {
            sandbox: sb.id.clone(),
            name: "c1".into(),
            path: PathBuf::from(&sb.netns_path),
        }]
    );
    let o = t.ok(Request::CreateSandbox(SandboxCreateRequest {
        name: "adopted".into(),
        netns_path: Some("/proc/1234/ns/net".into()),
        ..Default::default()
    }));
    let Response::Sandbox(ad) = o.response else {
        panic!()
    };
    assert!(!ad.netns_owned);
    assert_eq!(
        o.effects,
        vec![Effect::AdoptNetns {
            sandbox: ad.id.clone(),
            name: "adopted".into(),
            path: PathBuf::from("/proc/1234/ns/net"),
            handle: PathBuf::from("/run/vswitch/netns").join(&ad.id),
            host: false,
        }]
    );
    // Removing an adopted sandbox releases the daemon's handle and leaves
    // the namespace itself alone.
    let o = t.ok(rm_sb("adopted"));
    assert_eq!(
        o.effects,
        vec![Effect::ReleaseNetns {
            sandbox: ad.id.clone(),
            handle: PathBuf::from("/run/vswitch/netns").join(&ad.id),
        }]
    );
}

#[test]
fn removing_a_sandbox_detaches_everything_first() {
    let mut t = T::new();
    t.create_net(net("n1"));
    let sb = t.sandbox("c1");
    t.connect("bridge", "c1");
    t.connect("n1", "c1");
    let o = t.ok(rm_sb("c1"));
    let kinds: Vec<String> = o
        .effects
        .iter()
        .map(|e| match e {
            Effect::PushSwitchConfig => "push".to_owned(),
            Effect::DetachEndpoint(d) => format!("detach {}", d.ifname),
            Effect::DeleteNetns { path, .. } => format!("delete {}", path.display()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "push".to_owned(),
            "detach eth1".to_owned(),
            "detach eth0".to_owned(),
            format!("delete {}", sb.netns_path),
        ]
    );
    assert!(t.c.model().endpoints.is_empty() && t.c.model().sandboxes.is_empty());
    // The addresses went back to IPAM.
    t.sandbox("c2");
    assert_eq!(t.connect("n1", "c2").0.ipv4_address, "172.18.0.2/16");
    // And the network can go now.
    let _ = t.ok(disconnect("n1", "c2"));
    let _ = t.ok(rm_net("n1"));
}

#[test]
fn veth_ports_use_the_veth_prefix() {
    let mut t = T::new();
    t.sandbox("c1");
    let mut r = connect("bridge", "c1", None, &[]);
    if let Request::Connect { request, .. } = &mut r {
        request.port_kind = Some(PortKind::Veth);
    }
    let o = t.ok(r);
    let a = attachment(&o.effects);
    assert_eq!(a.kind, PortKind::Veth);
    assert!(a.host_ifname.starts_with("vsv") && a.host_ifname.len() == 15);
}

// ----- Refusals: Docker's texts, fitting statuses, nothing changed. -----

#[test]
fn network_create_refusals() {
    let mut t = T::new();
    t.create_net(net("n1"));
    t.refused(
        Request::CreateNetwork(net("n1")),
        "network with name n1 already exists",
        409,
    );
    for name in ["bridge", "host", "none", "default"] {
        t.refused(
            Request::CreateNetwork(net(name)),
            &format!("{name} is a pre-defined network and cannot be created"),
            403,
        );
    }
    t.refused(
        Request::CreateNetwork(net("a/b")),
        r#"invalid network name "a/b": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"#,
        400,
    );
    t.refused(
        Request::CreateNetwork(net("")),
        r#"invalid network name "": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"#,
        400,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            driver: "macvlan".into(),
            ..net("o1")
        }),
        "could not find plugin macvlan in v1 plugin registry: plugin not found",
        404,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            driver: "overlay".into(),
            ..net("o1")
        }),
        "overlay networks need a VTEP: start vswitchd with --vtep ADDR",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with("x", IpamConfigEntry::subnet("172.17.5.0/24"))),
        "Pool overlaps with other one on this address space",
        403,
    );
    t.refused(
        Request::CreateNetwork(net_with("x", IpamConfigEntry::subnet("172.0.0.0/8"))),
        "Pool overlaps with other one on this address space",
        403,
    );
    t.refused(
        Request::CreateNetwork(net_with("x", IpamConfigEntry::subnet("10.0.0.0/33"))),
        "invalid CIDR address: 10.0.0.0/33",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with("x", IpamConfigEntry::subnet("banana"))),
        "invalid CIDR address: banana",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with(
            "x",
            IpamConfigEntry::subnet("10.79.1.0/24").with_gateway("10.79.0.1"),
        )),
        "no matching subnet for gateway 10.79.0.1",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with(
            "x",
            IpamConfigEntry::default().with_range("10.79.0.0/25"),
        )),
        "every ip-range or gateway must have a corresponding subnet",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with(
            "x",
            IpamConfigEntry::subnet("10.79.1.0/24").with_range("10.79.0.0/25"),
        )),
        "no matching subnet for range 10.79.0.0/25",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with(
            "x",
            IpamConfigEntry::subnet("10.79.1.0/24").with_aux("a", "10.99.0.1"),
        )),
        "no matching subnet for aux-address 10.99.0.1",
        400,
    );
    t.refused(
        Request::CreateNetwork(net_with(
            "x",
            IpamConfigEntry::subnet("10.78.0.0/24").with_gateway("10.78.0.0"),
        )),
        "failed to allocate gateway (10.78.0.0): Address already in use",
        403,
    );
    t.refused(
        Request::CreateNetwork(net_with("x", IpamConfigEntry::subnet("10.78.0.0/31"))),
        "failed to allocate gateway (): No available addresses on this pool",
        503,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            ipam: Some(IpamRequest {
                config: vec![
                    IpamConfigEntry::subnet("10.1.0.0/24"),
                    IpamConfigEntry::subnet("10.2.0.0/24"),
                ],
                ..IpamRequest::default()
            }),
            ..net("x")
        }),
        "bridge driver doesn't support multiple subnets",
        400,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            enable_ipv6: true,
            ..net("x")
        }),
        "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network",
        503,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            ipam: Some(IpamRequest {
                driver: "dhcp".into(),
                ..IpamRequest::default()
            }),
            ..net("x")
        }),
        "could not find plugin dhcp in v1 plugin registry: plugin not found",
        404,
    );
}

#[test]
fn driver_option_refusals_use_dockers_parse_errors() {
    let mut t = T::new();
    let cases = [
        (
            "com.docker.network.driver.mtu",
            "abc",
            r#"failed to parse com.docker.network.driver.mtu value: abc (strconv.Atoi: parsing "abc": invalid syntax)"#,
        ),
        (
            "com.docker.network.driver.mtu",
            "99999999999999999999",
            r#"failed to parse com.docker.network.driver.mtu value: 99999999999999999999 (strconv.Atoi: parsing "99999999999999999999": value out of range)"#,
        ),
        (
            "com.docker.network.driver.mtu",
            "-1",
            "invalid MTU number: -1",
        ),
        (
            "com.docker.network.driver.mtu",
            "67",
            "invalid MTU number: 67",
        ),
        (
            "com.docker.network.driver.mtu",
            "65536",
            "invalid MTU number: 65536",
        ),
        (
            "com.docker.network.bridge.enable_icc",
            "maybe",
            r#"failed to parse com.docker.network.bridge.enable_icc value: maybe (strconv.ParseBool: parsing "maybe": invalid syntax)"#,
        ),
        (
            "com.docker.network.bridge.enable_ip_masquerade",
            "",
            r#"failed to parse com.docker.network.bridge.enable_ip_masquerade value:  (strconv.ParseBool: parsing "": invalid syntax)"#,
        ),
        (
            "com.docker.network.bridge.host_binding_ipv4",
            "1.2.3",
            "failed to parse com.docker.network.bridge.host_binding_ipv4 value: 1.2.3 (nil ip)",
        ),
    ];
    for (key, value, message) in cases {
        t.refused(
            Request::CreateNetwork(net_opts("o", &[(key, value)])),
            message,
            400,
        );
    }
}

#[test]
fn network_remove_refusals() {
    let mut t = T::new();
    let id = t.create_net(net("n1"));
    t.sandbox("c1");
    t.connect("n1", "c1");
    t.refused(
        rm_net("bridge"),
        "bridge is a pre-defined network and cannot be removed",
        403,
    );
    t.refused(rm_net("nope"), "network nope not found", 404);
    t.refused(
        rm_net("n1"),
        &format!("error while removing network: network n1 id {id} has active endpoints"),
        409,
    );
    t.refused(
        Request::InspectNetwork {
            name: "nope".into(),
        },
        "network nope not found",
        404,
    );
}

#[test]
fn connect_refusals() {
    let mut t = T::new();
    let auto_id = t.create_net(net("auto"));
    let _ = auto_id;
    t.create_net(net_with("s1", IpamConfigEntry::subnet("10.66.1.0/24")));
    let tiny = t.create_net(net_with("tiny", IpamConfigEntry::subnet("10.78.0.0/30")));
    t.sandbox("c1");
    t.sandbox("c2");
    t.refused(
        connect("bridge", "c1", Some("172.17.0.9"), &[]),
        "user specified IP address is supported on user defined networks only",
        400,
    );
    t.refused(
        connect("bridge", "c1", None, &["web"]),
        "network-scoped alias is supported only for containers in user defined networks",
        400,
    );
    t.refused(
        connect("auto", "c1", Some("172.18.0.9"), &[]),
        "user specified IP address is supported only when connecting to networks with user configured subnets",
        400,
    );
    t.refused(
        connect("s1", "c1", Some("10.66.0.5"), &[]),
        "Invalid address 10.66.0.5: It does not belong to any of this network's subnets",
        400,
    );
    t.refused(
        connect("s1", "c1", Some("10.66.1.1"), &[]),
        "Address already in use",
        403,
    );
    t.refused(
        connect("s1", "c1", Some("10.66.1.255"), &[]),
        "Address already in use",
        403,
    );
    t.refused(connect("s1", "c1", None, &[""]), r#"invalid alias """#, 400);
    t.refused(
        connect("s1", "ghost", None, &[]),
        "No such sandbox: ghost",
        404,
    );
    t.refused(
        connect("ghost", "c1", None, &[]),
        "network ghost not found",
        404,
    );
    let _ = t.ok(connect("s1", "c1", Some("10.66.1.7"), &[]));
    t.refused(
        connect("s1", "c2", Some("10.66.1.7"), &[]),
        "Address already in use",
        403,
    );
    t.refused(
        connect("s1", "c1", None, &[]),
        "endpoint with name c1 already exists in network s1",
        409,
    );
    // A /30 holds exactly one container.
    let _ = t.ok(connect("tiny", "c1", None, &[]));
    t.refused(
        connect("tiny", "c2", None, &[]),
        &format!("no available IPv4 addresses on this network's address pools: tiny ({tiny})"),
        503,
    );
    t.refused(
        disconnect("bridge", "c2"),
        "sandbox c2 is not connected to network bridge",
        409,
    );
    t.refused(disconnect("bridge", "ghost"), "No such sandbox: ghost", 404);
}

#[test]
fn sandbox_refusals() {
    let mut t = T::new();
    let sb = t.sandbox("c1");
    t.refused(
        Request::CreateSandbox(SandboxCreateRequest {
            name: "c1".into(),
            netns_path: None,
            ..Default::default()
        }),
        &format!(
            "Conflict. The sandbox name \"c1\" is already in use by sandbox \"{}\". You have to remove (or rename) that sandbox to be able to reuse that name.",
            sb.id
        ),
        409,
    );
    for bad in ["a", "-ab", "a b", "ab/c", ""] {
        t.refused(
            Request::CreateSandbox(SandboxCreateRequest {
                name: bad.into(),
                netns_path: None,
                ..Default::default()
            }),
            &format!("Invalid sandbox name ({bad}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
            400,
        );
    }
    t.refused(
        Request::CreateSandbox(SandboxCreateRequest {
            name: "c2".into(),
            netns_path: Some("relative/ns".into()),
            ..Default::default()
        }),
        r#"invalid netns path "relative/ns": must be an absolute path"#,
        400,
    );
    t.refused(
        Request::CreateSandbox(SandboxCreateRequest {
            name: "c2".into(),
            netns_path: Some(sb.netns_path.clone()),
            ..Default::default()
        }),
        &format!("netns {} is already used by sandbox c1", sb.netns_path),
        409,
    );
    t.refused(rm_sb("ghost"), "No such sandbox: ghost", 404);
    t.refused(
        Request::InspectSandbox {
            name: "ghost".into(),
        },
        "No such sandbox: ghost",
        404,
    );
}

// ----- Views for the daemon. -----

#[test]
fn fdb_and_port_views_name_ports_and_networks() {
    let mut t = T::new();
    t.create_net(net("n1"));
    t.sandbox("c1");
    t.connect("bridge", "c1");
    t.connect("n1", "c1");
    let rows = [
        FdbRow {
            network: NetworkId(0),
            mac: MacAddr([2, 0x42, 172, 17, 0, 2]),
            port: PortId(1),
            age: None,
            origin: Origin::Static,
        },
        FdbRow {
            network: NetworkId(1),
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            port: PortId(2),
            age: Some(Duration::from_millis(12_500)),
            origin: Origin::Learned,
        },
    ];
    let all = t.c.fdb_views(&rows, None).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        serde_json::to_string(&all[1]).unwrap(),
        r#"{"Port":2,"Sandbox":"c1","Network":"n1","MacAddress":"02:00:00:00:00:09","Age":12}"#
    );
    let n1 = t.c.fdb_views(&rows, Some("n1")).unwrap();
    assert_eq!(n1.len(), 1);
    assert_eq!(
        t.c.fdb_views(&rows, Some("ghost")).unwrap_err().to_string(),
        "network ghost not found"
    );
    let ports = t.c.port_views(|p| PortStats {
        rx_packets: u64::from(p.0) * 10,
        ..PortStats::default()
    });
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[1].port, 2);
    assert_eq!(ports[1].sandbox, "c1");
    assert_eq!(ports[1].network, "n1");
    assert_eq!(ports[1].interface, "eth1");
    assert_eq!(ports[1].ipv4_address, "172.18.0.2/16");
    assert_eq!(ports[1].rx_packets, 20);
    assert_eq!(t.c.attachments().len(), 2);
}

// ----- Persistence. -----

static NEXT_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("vswitch-control-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn store_round_trip_restores_an_identical_model() {
    let dir = temp_dir("store");
    let mut t = T::new();
    t.create_net(net_with(
        "s1",
        IpamConfigEntry::subnet("10.77.0.5/24")
            .with_range("10.77.0.128/25")
            .with_aux("a", "10.77.0.129"),
    ));
    t.create_net(net_opts("n1", &[("com.docker.network.driver.mtu", "1400")]));
    t.sandbox("c1");
    t.connect("s1", "c1");
    let _ = t.ok(connect("n1", "c1", None, &["web"]));
    {
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None, "a new store is empty");
        store.save(t.c.model()).unwrap();
    }
    let mut store = Store::open(&dir).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(&loaded, t.c.model());
    assert_eq!(
        serde_json::to_string(&loaded).unwrap(),
        serde_json::to_string(t.c.model()).unwrap()
    );
    // The restored controller continues where the old one stopped: same
    // IPAM cursor, same next interface index.
    let mut restored = T {
        c: Controller::from_model(ControllerConfig::default(), loaded).unwrap(),
        e: SeededEntropy::new(99),
    };
    restored.create_net(net("n2"));
    t.create_net(net("n2"));
    assert_eq!(
        restored.inspect("n2").ipam.config,
        t.inspect("n2").ipam.config
    );
    assert_eq!(restored.connect("n2", "c1").0.interface, "eth2");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_refuses_an_inconsistent_model() {
    let dir = temp_dir("bad");
    let t = T::new();
    let mut model: Model = t.c.model().clone();
    let mut twin = model.networks[0].clone();
    twin.num = NetworkId(5);
    model.networks.push(twin);
    let mut store = Store::open(&dir).unwrap();
    store.save(&model).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(Controller::from_model(ControllerConfig::default(), model).is_err());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_whose_endpoint_address_ipam_does_not_hold_is_refused() {
    let mut t = T::new();
    t.sandbox("c1");
    t.connect("bridge", "c1");
    let mut model = t.c.model().clone();
    assert!(model.validate().is_ok());
    model.endpoints[0].ipv4 = Ipv4Addr::new(172, 17, 0, 99);
    let err = model.validate().unwrap_err();
    assert!(
        err.to_string().contains("that IPAM does not hold for it"),
        "{err}"
    );
    assert_eq!(err.status(), 500);
}

fn overlay(name: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        driver: "overlay".into(),
        attachable: true,
        ..net(name)
    }
}

#[test]
fn overlay_networks_get_docker_vnis_global_subnets_and_mtu_1450() {
    let mut t = T::with_overlay();
    t.create_net(overlay("o1"));
    t.create_net(overlay("o2"));
    let o1 = t.inspect("o1");
    assert_eq!(o1.driver, "overlay");
    assert!(o1.attachable);
    assert_eq!(
        o1.options
            .get("com.docker.network.driver.overlay.vxlanid_list")
            .map(String::as_str),
        Some("4096")
    );
    assert_eq!(o1.ipam.config[0].subnet.as_deref(), Some("10.0.0.0/24"));
    let o2 = t.inspect("o2");
    assert_eq!(
        o2.options["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );
    assert_eq!(o2.ipam.config[0].subnet.as_deref(), Some("10.0.1.0/24"));
    // The peer file's VNI for its name; an explicit one as given.
    t.create_net(overlay("pinned"));
    assert_eq!(
        t.inspect("pinned").options["com.docker.network.driver.overlay.vxlanid_list"],
        "5000"
    );
    t.create_net(NetworkCreateRequest {
        options: [(
            "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
            "7000".to_owned(),
        )]
        .into_iter()
        .collect(),
        ..overlay("given")
    });
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            options: [(
                "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
                "7000".to_owned(),
            )]
            .into_iter()
            .collect(),
            ..overlay("again")
        }),
        "VNI 7000 is taken by another overlay network",
        400,
    );
    t.refused(
        Request::CreateNetwork(NetworkCreateRequest {
            options: [(
                "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
                "16777216".to_owned(),
            )]
            .into_iter()
            .collect(),
            ..overlay("big")
        }),
        "failed to parse com.docker.network.driver.overlay.vxlanid_list value: 16777216 (a VNI is an integer from 1 to 16777215)",
        400,
    );

    // Each overlay network is an uplink port of the switch, numbered with
    // the endpoints, and containers get MTU 1500 - 50.
    let overlays = t.c.overlay_networks();
    assert_eq!(overlays.len(), 4);
    let cfg = t.c.switch_config().unwrap();
    for (_, port) in &overlays {
        assert_eq!(cfg.port(*port).unwrap().role, PortRole::Uplink);
    }
    t.sandbox("c1");
    let (_, effects) = t.connect("o1", "c1");
    let a = effects
        .iter()
        .find_map(|e| match e {
            Effect::AttachEndpoint(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(a.mtu, 1450);
    assert!(overlays.iter().all(|(_, p)| *p != a.port), "{overlays:?}");

    // Removing a network frees its VNI and port.
    let _ = t.ok(Request::RemoveNetwork { name: "o2".into() });
    t.create_net(overlay("o3"));
    assert_eq!(
        t.inspect("o3").options["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );
}

#[test]
fn a_state_without_host_and_none_gets_them_once() {
    let t = T::new();
    let mut model = t.c.model().clone();
    assert_eq!(
        model
            .predefined
            .iter()
            .map(|p| (p.name.as_str(), p.driver.as_str()))
            .collect::<Vec<_>>(),
        [("host", "host"), ("none", "null")]
    );
    // A state written before they existed.
    model.predefined.clear();
    let json = serde_json::to_string(&model).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.get("predefined").is_none());
    let old: Model = serde_json::from_str(&json).unwrap();
    let mut c = Controller::from_model(ControllerConfig::default(), old).unwrap();
    assert!(c.ensure_predefined(&Ctx::new(NOW, &t.e)).unwrap());
    let ids: Vec<String> = c.model().predefined.iter().map(|p| p.id.clone()).collect();
    assert!(!c.ensure_predefined(&Ctx::new(NOW, &t.e)).unwrap());
    let again: Vec<String> = c.model().predefined.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, again, "ids are kept once made");
}
