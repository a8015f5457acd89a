//! Docker's plugin protocol without root and without Docker: calls in as
//! dockerd makes them (docker-reference §9 call order), JSON out, against
//! a real controller whose effects are not carried out.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use vswitch::api::types::{DnsNetworkView, FdbView, PortView};
use vswitch::api::{Backend, Reply};
use vswitch::control::{
    ControlError, Controller, ControllerConfig, Ctx, PortKind, Request, Response, SeededEntropy,
};
use vswitch::docker::wire::PortBinding;
use vswitch::docker::{ControlPlane, Plugin, PublishTarget, Publisher, route};
use vswitch::switch::PortStats;

const NOW: &str = "2026-11-23T11:45:59.123456789Z";
const NID: &str = "f150a77d8c60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
const EID: &str = "e1e1e1e1e1e1a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
const EID2: &str = "e2e2e2e2e2e2a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182930";
const KEY: &str = "/var/run/docker/netns/cbe51ab38395";

struct Fake {
    inner: Mutex<(Controller, SeededEntropy)>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let e = SeededEntropy::new(7);
        let c = Controller::new(ControllerConfig::default(), &Ctx::new(NOW, &e)).unwrap();
        Arc::new(Self {
            inner: Mutex::new((c, e)),
        })
    }

    fn model<T>(&self, f: impl FnOnce(&vswitch::control::Model) -> T) -> T {
        f(self.inner.lock().unwrap().0.model())
    }
}

impl Backend for Fake {
    fn apply(&self, request: Request) -> Result<Response, ControlError> {
        let mut g = self.inner.lock().unwrap();
        let (c, e) = &mut *g;
        c.apply(request, &Ctx::new(NOW, e)).map(|o| o.response)
    }

    fn fdb(&self, _: Option<&str>) -> Result<Vec<FdbView>, ControlError> {
        Ok(Vec::new())
    }

    fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .0
            .port_views(|_| PortStats::default()))
    }

    fn dns(&self, _: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError> {
        Ok(Vec::new())
    }
}

/// Records what it was asked to publish.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Publisher for Recorder {
    fn publish(
        &self,
        target: &PublishTarget,
        ports: &[PortBinding],
    ) -> Result<Vec<PortBinding>, String> {
        let p: Vec<String> = ports
            .iter()
            .map(|b| format!("{}:{}->{}", b.proto, b.host_port, b.port))
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("publish {} {}", target.address, p.join(",")));
        Ok(Vec::new())
    }

    fn revoke(&self, target: &PublishTarget) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("revoke {}", target.address));
        Ok(())
    }
}

fn call(p: &Plugin, path: &str, body: &Value) -> Value {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let r: Reply = route(p, "POST", path, &body);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type, "application/vnd.docker.plugins.v1.2+json");
    serde_json::from_slice(&r.body).unwrap()
}

fn ok(p: &Plugin, path: &str, body: &Value) -> Value {
    let v = call(p, path, body);
    assert!(
        v.get("Err").is_none() && v.get("Error").is_none(),
        "{path}: {v}"
    );
    v
}

fn plugin(backend: &Arc<Fake>) -> Plugin {
    let b: Arc<dyn Backend> = backend.clone();
    Plugin::new(b, None).unwrap()
}

/// Pool, gateway and network as dockerd asks for them; the pool id.
fn make_network(p: &Plugin, subnet: &str, range: &str, options: &Value) -> (String, String) {
    let pool = ok(
        p,
        "/IpamDriver.RequestPool",
        &json!({"AddressSpace": "LocalDefault", "Pool": subnet, "SubPool": range, "Options": {}, "V6": false}),
    );
    let id = pool["PoolID"].as_str().unwrap().to_owned();
    let gw = ok(
        p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    let gateway = gw["Address"].as_str().unwrap().to_owned();
    ok(
        p,
        "/NetworkDriver.CreateNetwork",
        &json!({"NetworkID": NID, "Options": options,
                "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool["Pool"], "Gateway": gateway}],
                "IPv6Data": []}),
    );
    (id, gateway)
}

#[test]
fn activation_and_capabilities() {
    let b = Fake::new();
    let p = plugin(&b);
    assert_eq!(
        call(&p, "/Plugin.Activate", &Value::Null),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    assert_eq!(
        call(&p, "/NetworkDriver.GetCapabilities", &Value::Null),
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    assert_eq!(
        call(&p, "/IpamDriver.GetCapabilities", &Value::Null),
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(
        call(&p, "/IpamDriver.GetDefaultAddressSpaces", &Value::Null),
        json!({"LocalDefaultAddressSpace": "LocalDefault", "GlobalDefaultAddressSpace": "GlobalDefault"})
    );
}

#[test]
fn ipam_hands_out_dockers_pools_and_addresses() {
    let b = Fake::new();
    let p = plugin(&b);
    let auto = json!({"AddressSpace": "LocalDefault", "Pool": "", "SubPool": "", "Options": {}, "V6": false});
    // The switch's own `bridge` holds 172.17.0.0/16, as docker0 does.
    let first = ok(&p, "/IpamDriver.RequestPool", &auto);
    assert_eq!(first["Pool"], "172.18.0.0/16");
    assert_eq!(first["Data"], json!({}));
    let second = ok(&p, "/IpamDriver.RequestPool", &auto);
    assert_eq!(second["Pool"], "172.19.0.0/16");
    ok(
        &p,
        "/IpamDriver.ReleasePool",
        &json!({"PoolID": second["PoolID"]}),
    );
    // The cursor moves on: a released pool is not handed out again at once.
    assert_eq!(
        ok(&p, "/IpamDriver.RequestPool", &auto)["Pool"],
        "172.20.0.0/16"
    );

    let gw = json!({"RequestAddressType": "com.docker.network.gateway"});
    let pool = ok(
        &p,
        "/IpamDriver.RequestPool",
        &json!({"AddressSpace": "LocalDefault", "Pool": "10.77.0.0/24", "SubPool": "10.77.0.128/25"}),
    );
    let id = &pool["PoolID"];
    // With an ip-range and no --gateway the gateway comes from the range.
    let g = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "", "Options": gw}),
    );
    assert_eq!(g["Address"], "10.77.0.128/24");
    let aux = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "10.77.0.129", "Options": null}),
    );
    assert_eq!(aux["Address"], "10.77.0.129/24");
    let c1 = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "", "Options": null}),
    );
    assert_eq!(c1["Address"], "10.77.0.130/24");
    let fixed = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "10.77.0.5"}),
    );
    assert_eq!(fixed["Address"], "10.77.0.5/24");
    let dup = call(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "10.77.0.5"}),
    );
    assert_eq!(dup, json!({"Error": "Address already in use"}));
    ok(
        &p,
        "/IpamDriver.ReleaseAddress",
        &json!({"PoolID": id, "Address": "10.77.0.130"}),
    );
    let again = ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": id}));
    assert_eq!(again["Address"], "10.77.0.130/24");

    let overlap = json!({"Error": "Pool overlaps with other one on this address space"});
    let own = json!({"AddressSpace": "LocalDefault", "Pool": "10.77.0.0/16"});
    assert_eq!(call(&p, "/IpamDriver.RequestPool", &own), overlap);
    let switch = json!({"AddressSpace": "LocalDefault", "Pool": "172.17.5.0/24"});
    assert_eq!(call(&p, "/IpamDriver.RequestPool", &switch), overlap);
    let v6 = json!({"AddressSpace": "LocalDefault", "V6": true});
    assert_eq!(
        call(&p, "/IpamDriver.RequestPool", &v6)["Error"],
        "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network"
    );
    assert_eq!(
        call(
            &p,
            "/IpamDriver.RequestPool",
            &json!({"AddressSpace": "Nope"})
        )["Error"],
        "cannot find address space Nope (most likely the backing datastore is not configured)"
    );
    assert!(call(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": "999"}))["Error"].is_string());
    assert!(call(&p, "/IpamDriver.ReleasePool", &json!({"PoolID": "x"}))["Error"].is_string());
}

#[test]
fn a_container_lifecycle_becomes_switch_objects_and_goes() {
    let b = Fake::new();
    let recorder = Arc::new(Recorder::default());
    let p = plugin(&b).with_publisher(recorder.clone());
    let options = json!({"com.docker.network.enable_ipv6": false,
        "com.docker.network.generic": {"mtu": "1400", "enable_icc": "false"}});
    let (pool, gateway) = make_network(&p, "10.99.0.0/24", "", &options);
    assert_eq!(gateway, "10.99.0.1/24");
    let (name, mtu, icc, label) = b.model(|m| {
        let n = m.networks.iter().find(|n| n.name != "bridge").unwrap();
        (
            n.name.clone(),
            n.mtu,
            n.icc,
            n.labels.get("com.docker.network.id").cloned(),
        )
    });
    assert_eq!(name, "docker-f150a77d8c60");
    assert_eq!((mtu, icc), (1400, false));
    assert_eq!(label.as_deref(), Some(NID));

    let addr = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": pool, "Address": "", "Options": null}),
    );
    assert_eq!(addr["Address"], "10.99.0.2/24");
    let ep = ok(
        &p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID,
                "Interface": {"Address": "10.99.0.2/24", "AddressIPv6": "", "MacAddress": ""},
                "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}]}}),
    );
    assert_eq!(
        ep,
        json!({"Interface": {"MacAddress": "02:42:0a:63:00:02"}})
    );
    let join = ok(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY, "Options": {}}),
    );
    let src = join["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(src.starts_with("vsp") && src.len() == 15, "{src}");
    assert_eq!(join["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(join["Gateway"], "10.99.0.1");
    assert_eq!(join["DisableGatewayService"], true);
    assert_eq!(join["StaticRoutes"], json!([]));
    let (kind, ip, host, sandbox, netns) = b.model(|m| {
        let e = &m.endpoints[0];
        let sb = m.sandbox(&e.sandbox).unwrap();
        (
            e.kind,
            e.ipv4.to_string(),
            e.host_ifname.clone(),
            sb.name.clone(),
            sb.netns_path.clone(),
        )
    });
    assert_eq!(kind, PortKind::Handoff);
    assert_eq!(ip, "10.99.0.2");
    assert_eq!(format!("vsp{}", &host[3..]), src);
    assert_eq!((sandbox.as_str(), netns.as_str()), ("cbe51ab38395", KEY));
    // Docker's namespace is recorded, not held: it does not exist yet when
    // Docker joins, and only handed-off ports may connect it.
    assert!(b.model(|m| m.sandboxes[0].external && m.sandboxes[0].netns_handle.is_none()));
    let tap = b.apply(Request::Connect {
        network: "bridge".into(),
        request: vswitch::api::types::ConnectRequest {
            container: "cbe51ab38395".into(),
            ..Default::default()
        },
    });
    assert!(matches!(tap, Err(ControlError::Unsupported(_))), "{tap:?}");

    // A second join of the endpoint is refused; a second endpoint of the
    // same sandbox on the network would be refused by the switch too.
    let again = call(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY}),
    );
    assert!(again["Err"].as_str().unwrap().contains("already joined"));

    let portmap = json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 18080, "HostPortEnd": 18080}]);
    ok(
        &p,
        "/NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": portmap}}),
    );
    let info = ok(
        &p,
        "/NetworkDriver.EndpointOperInfo",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(info["Value"]["com.docker.network.portmap"], portmap);
    assert_eq!(
        info["Value"]["com.docker.network.endpoint.exposedports"],
        json!([{"Proto": 6, "Port": 80}])
    );
    ok(
        &p,
        "/NetworkDriver.RevokeExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(
        *recorder.calls.lock().unwrap(),
        ["publish 10.99.0.2 6:18080->80", "revoke 10.99.0.2"]
    );

    ok(
        &p,
        "/NetworkDriver.Leave",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert!(b.model(|m| m.endpoints.is_empty() && m.sandboxes.is_empty()));
    ok(
        &p,
        "/NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    ok(
        &p,
        "/IpamDriver.ReleaseAddress",
        &json!({"PoolID": pool, "Address": "10.99.0.2"}),
    );
    ok(
        &p,
        "/IpamDriver.ReleaseAddress",
        &json!({"PoolID": pool, "Address": "10.99.0.1"}),
    );
    ok(&p, "/IpamDriver.ReleasePool", &json!({"PoolID": pool}));
    ok(
        &p,
        "/NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": NID}),
    );
    assert_eq!(b.model(|m| m.networks.len()), 1);
    let st = p.state();
    assert!(st.networks.is_empty() && st.endpoints.is_empty());
    assert_eq!(st.ipam.pools().count(), 0);
}

/// Creates and joins a Docker endpoint at `address` in sandbox `key`.
fn join(p: &Plugin, eid: &str, address: &str, key: &str) {
    ok(
        p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NID, "EndpointID": eid, "Interface": {"Address": address}}),
    );
    ok(
        p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": eid, "SandboxKey": key}),
    );
}

fn program(p: &Plugin, eid: &str, portmap: &Value) -> Value {
    call(
        p,
        "/NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": eid, "Options": {"com.docker.network.portmap": portmap}}),
    )
}

/// Host ports the switch's model has published, over every endpoint.
fn published(b: &Fake) -> Vec<u16> {
    b.model(|m| {
        m.endpoints
            .iter()
            .flat_map(|e| e.published.iter().map(|r| r.host_port))
            .collect()
    })
}

#[test]
fn port_maps_go_through_the_control_planes_publish_path() {
    let b = Fake::new();
    let backend: Arc<dyn Backend> = b.clone();
    let p = plugin(&b).with_publisher(Arc::new(ControlPlane::new(backend)));
    make_network(&p, "10.99.0.0/24", "", &json!({}));
    join(&p, EID, "10.99.0.2/24", KEY);
    join(
        &p,
        EID2,
        "10.99.0.3/24",
        "/var/run/docker/netns/0123456789ab",
    );

    let portmap = json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 18080, "HostPortEnd": 18080}]);
    let r = program(&p, EID, &portmap);
    assert!(r.get("Err").is_none(), "{r}");
    // As Docker's bridge, an unnamed host address is 0.0.0.0 and `::`.
    assert_eq!(published(&b), [18080, 18080]);
    let info = ok(
        &p,
        "/NetworkDriver.EndpointOperInfo",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    // What is served, as Docker's bridge driver reports it.
    assert_eq!(
        info["Value"]["com.docker.network.portmap"],
        json!([{"Proto": 6, "IP": "10.99.0.2", "Port": 80, "HostIP": "0.0.0.0", "HostPort": 18080, "HostPortEnd": 18080},
               {"Proto": 6, "IP": "10.99.0.2", "Port": 80, "HostIP": "::", "HostPort": 18080, "HostPortEnd": 18080}])
    );

    // The same host port for another container: the allocator's text,
    // which libnetwork wraps in its own "driver failed programming…".
    let taken = program(&p, EID2, &portmap);
    assert_eq!(
        taken["Err"],
        "Bind for 0.0.0.0:18080 failed: port is already allocated"
    );
    assert_eq!(published(&b), [18080, 18080]);

    // A chosen port, then a refused binding with the -p parser's text.
    let dynamic = json!([{"Proto": 17, "Port": 53, "HostPort": 0, "HostPortEnd": 0}]);
    assert!(program(&p, EID2, &dynamic).get("Err").is_none());
    assert_eq!(published(&b).len(), 4);
    let bad = json!([{"Proto": 6, "Port": 80, "HostIP": "1.2.3", "HostPort": 80}]);
    assert_eq!(program(&p, EID2, &bad)["Err"], "invalid IP address: 1.2.3");
    assert_eq!(
        published(&b).len(),
        4,
        "a refused map keeps what was served"
    );

    // Revoke and Leave release the ports; the host port is free again.
    ok(
        &p,
        "/NetworkDriver.RevokeExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(published(&b).len(), 2);
    ok(
        &p,
        "/NetworkDriver.Leave",
        &json!({"NetworkID": NID, "EndpointID": EID2}),
    );
    assert!(published(&b).is_empty());
    assert!(b.model(|m| m.sandboxes.iter().all(|s| s.port_bindings.is_empty())));
    assert!(program(&p, EID, &portmap).get("Err").is_none());
    assert_eq!(published(&b), [18080, 18080]);
}

/// The `IPAMConfig` the switch shows for the endpoint at `ip`.
fn ipam_config_of(b: &Fake, ip: &str) -> Value {
    let sandbox = b.model(|m| {
        let e = m
            .endpoints
            .iter()
            .find(|e| e.ipv4.to_string() == ip)
            .unwrap();
        m.sandbox(&e.sandbox).unwrap().name.clone()
    });
    let Ok(Response::Sandbox(view)) = b.apply(Request::InspectSandbox { name: sandbox }) else {
        panic!("sandbox inspect");
    };
    let view = serde_json::to_value(view).unwrap();
    let endpoints = view["Endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{view}");
    endpoints[0]
        .get("IPAMConfig")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn only_an_address_the_user_asked_for_is_static() {
    let b = Fake::new();
    let p = plugin(&b);
    let (pool, _) = make_network(&p, "10.98.0.0/24", "", &json!({}));
    // `docker run --network n`: Docker's IPAM picks.
    let picked = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": pool, "Address": ""}),
    );
    assert_eq!(picked["Address"], "10.98.0.2/24");
    join(&p, EID, "10.98.0.2/24", KEY);
    // `docker run --network n --ip 10.98.0.9`: the address is asked for.
    let asked = ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": pool, "Address": "10.98.0.9", "Options": {}}),
    );
    assert_eq!(asked["Address"], "10.98.0.9/24");
    join(
        &p,
        EID2,
        "10.98.0.9/24",
        "/var/run/docker/netns/0123456789ab",
    );

    let (picked, asked) = b.model(|m| {
        let of = |ip: [u8; 4]| {
            m.endpoints
                .iter()
                .find(|e| e.ipv4.octets() == ip)
                .map(|e| e.requested_ip.clone())
        };
        (of([10, 98, 0, 2]), of([10, 98, 0, 9]))
    });
    assert_eq!(picked, Some(None), "Docker's pick is dynamic");
    assert_eq!(
        asked,
        Some(Some("10.98.0.9".to_owned())),
        "--ip stays static"
    );
    assert_eq!(ipam_config_of(&b, "10.98.0.2"), Value::Null);
    assert_eq!(
        ipam_config_of(&b, "10.98.0.9"),
        json!({"IPv4Address": "10.98.0.9"})
    );
    let st = p.state();
    assert!(!st.endpoints[EID].requested && st.endpoints[EID2].requested);

    // Released, the address is no longer one asked for: whoever gets it
    // next, by pick or by value, says so anew.
    ok(
        &p,
        "/NetworkDriver.Leave",
        &json!({"NetworkID": NID, "EndpointID": EID2}),
    );
    ok(
        &p,
        "/NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID2}),
    );
    assert_eq!(p.state().requested.len(), 1);
    ok(
        &p,
        "/IpamDriver.ReleaseAddress",
        &json!({"PoolID": pool, "Address": "10.98.0.9"}),
    );
    assert!(p.state().requested.is_empty());
    // A gateway asked for by value is not an endpoint's `--ip`.
    ok(
        &p,
        "/IpamDriver.ReleaseAddress",
        &json!({"PoolID": pool, "Address": "10.98.0.1"}),
    );
    ok(
        &p,
        "/IpamDriver.RequestAddress",
        &json!({"PoolID": pool, "Address": "10.98.0.1", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert!(p.state().requested.is_empty());
}

#[test]
fn internal_networks_keep_their_gateway_and_port_maps_are_refused_without_a_publisher() {
    let b = Fake::new();
    let p = plugin(&b);
    let options = json!({"com.docker.network.internal": true, "com.docker.network.generic": {}});
    let (pool, _) = make_network(&p, "", "", &options);
    assert!(b.model(|m| m.networks.iter().any(|n| n.internal)));
    let addr = ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": pool}));
    assert_eq!(addr["Address"], "172.18.0.2/16");
    ok(
        &p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "172.18.0.2/16"}}),
    );
    let join = ok(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY}),
    );
    // As on Docker's bridge, the default route goes to the gateway, which
    // leads nowhere outside.
    assert_eq!(join["Gateway"], "172.18.0.1");
    assert_eq!(join["DisableGatewayService"], true);
    let portmap = json!([{"Proto": 6, "Port": 80, "HostPort": 18080, "HostPortEnd": 18080}]);
    let refused = call(
        &p,
        "/NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": portmap}}),
    );
    assert!(
        refused["Err"]
            .as_str()
            .unwrap()
            .contains("publishing ports")
    );
    // Without -p there is nothing to publish.
    ok(
        &p,
        "/NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": []}}),
    );
    // A second endpoint in the same sandbox shares the adopted namespace;
    // the sandbox goes with the last one.
    let pool2 = ok(
        &p,
        "/IpamDriver.RequestPool",
        &json!({"AddressSpace": "LocalDefault", "Pool": "10.98.0.0/24"}),
    );
    let nid2 = format!("aa{}", &NID[2..]);
    ok(
        &p,
        "/NetworkDriver.CreateNetwork",
        &json!({"NetworkID": nid2, "IPv4Data": [{"Pool": pool2["Pool"], "Gateway": "10.98.0.1/24"}]}),
    );
    ok(
        &p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": nid2, "EndpointID": EID2, "Interface": {"Address": "10.98.0.2/24", "MacAddress": "02:42:0a:62:00:02"}}),
    );
    let j2 = ok(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": nid2, "EndpointID": EID2, "SandboxKey": KEY}),
    );
    assert_eq!(j2["Gateway"], "10.98.0.1");
    assert_eq!(b.model(|m| (m.sandboxes.len(), m.endpoints.len())), (1, 2));
    ok(
        &p,
        "/NetworkDriver.Leave",
        &json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(b.model(|m| (m.sandboxes.len(), m.endpoints.len())), (1, 1));
    // Deleting the endpoint of a joined container undoes the join too.
    ok(
        &p,
        "/NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": nid2, "EndpointID": EID2}),
    );
    assert_eq!(b.model(|m| (m.sandboxes.len(), m.endpoints.len())), (0, 0));
}

#[test]
fn bad_calls_get_errors_not_panics() {
    let b = Fake::new();
    let p = plugin(&b);
    let r = route(&p, "POST", "/NetworkDriver.CreateNetwork", b"{");
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["Err"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body")
    );
    let r = route(&p, "POST", "/IpamDriver.RequestPool", br#"{"V6": "yes"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(route(&p, "POST", "/NetworkDriver.Nope", b"{}").status, 404);
    assert_eq!(route(&p, "POST", "/Other.Thing", b"{}").status, 404);
    assert_eq!(route(&p, "GET", "/Plugin.Activate", b"").status, 405);
    assert_eq!(route(&p, "POST", "nothing", b"").status, 404);

    let refuse = |path: &str, body: Value| {
        let v = call(&p, path, &body);
        v["Err"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {v}"))
            .to_owned()
    };
    assert_eq!(
        refuse(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "nope"}]})
        ),
        "unable to parse Gateway \"nope\""
    );
    assert_eq!(
        refuse(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}, {"Pool": "10.2.0.0/24", "Gateway": "10.2.0.1/24"}]})
        ),
        "vswitch driver doesn't support multiple subnets"
    );
    assert_eq!(
        refuse(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}], "IPv6Data": [{"Pool": "fd00::/64"}]})
        ),
        "vswitch driver does not support IPv6"
    );
    assert_eq!(
        refuse(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "x", "IPv4Data": []})
        ),
        "vswitch: invalid network id \"x\""
    );
    // The switch's own refusal comes back in Docker's words.
    assert_eq!(
        refuse(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": NID, "IPv4Data": [{"Pool": "172.17.0.0/24", "Gateway": "172.17.0.1/24"}]})
        ),
        "Pool overlaps with other one on this address space"
    );
    assert!(
        refuse(
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}})
        )
        .contains("not found")
    );
    ok(
        &p,
        "/NetworkDriver.CreateNetwork",
        &json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}),
    );
    assert!(
        refuse(
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2"}})
        )
        .contains("CIDR")
    );
    assert!(refuse("/NetworkDriver.CreateEndpoint", json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24", "MacAddress": "02:00:00:00:00:01"}})).contains("cannot be used"));
    assert!(
        refuse(
            "/NetworkDriver.Join",
            json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY})
        )
        .contains("not found")
    );
    ok(
        &p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}}),
    );
    assert!(
        refuse(
            "/NetworkDriver.Join",
            json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "relative"})
        )
        .contains("sandbox key")
    );
    assert!(refuse("/NetworkDriver.ProgramExternalConnectivity", json!({"NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": "x"}})).contains("portmap"));
    assert!(refuse("/NetworkDriver.AllocateNetwork", json!({})).contains("swarm"));
    // Calls that find nothing to undo succeed, as Docker retries them.
    ok(
        &p,
        "/NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID2}),
    );
    ok(
        &p,
        "/NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": format!("bb{}", &NID[2..])}),
    );
    ok(
        &p,
        "/NetworkDriver.DiscoverNew",
        &json!({"DiscoveryType": 1, "DiscoveryData": {}}),
    );
}

#[test]
fn state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("vswitch-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = vswitch::docker::state::state_file(&dir);
    let b = Fake::new();
    let backend: Arc<dyn Backend> = b.clone();
    let p = Plugin::new(Arc::clone(&backend), Some(path.clone())).unwrap();
    let (pool, _) = make_network(&p, "10.55.0.0/24", "", &json!({}));
    ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": pool}));
    let before = p.state();
    drop(p);
    let p = Plugin::new(backend, Some(path)).unwrap();
    assert_eq!(p.state(), before);
    // The restarted allocator carries on where it was.
    let next = ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": pool}));
    assert_eq!(next["Address"], "10.55.0.3/24");
    std::fs::remove_dir_all(&dir).unwrap();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const PATHS: [&str; 8] = [
        "/NetworkDriver.CreateNetwork",
        "/NetworkDriver.CreateEndpoint",
        "/NetworkDriver.Join",
        "/NetworkDriver.Leave",
        "/NetworkDriver.ProgramExternalConnectivity",
        "/IpamDriver.RequestPool",
        "/IpamDriver.RequestAddress",
        "/IpamDriver.ReleaseAddress",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_body_gets_an_answer(path in 0..PATHS.len(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Fake::new();
            let p = plugin(&b);
            let r = route(&p, "POST", PATHS[path], &body);
            prop_assert!(matches!(r.status, 200 | 400));
            prop_assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
        }
    }
}

mod socket {
    use std::os::unix::net::{UnixListener, UnixStream};

    use vswitch::docker::{ClaimError, PluginServer};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("vswitch-plugin-sock-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_live_socket_is_never_taken_and_a_stale_one_is_replaced() {
        let d = dir("claim");
        let path = d.join("vswitch.sock");
        // Another process's live plugin.
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            PluginServer::bind(&path, false),
            Err(ClaimError::InUse(_))
        ));
        assert!(path.exists(), "the live socket stays");
        drop(live);
        // Its process died: the file is stale and is replaced.
        let server = PluginServer::bind(&path, false).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        // Someone replaced the file meanwhile: dropping ours leaves theirs.
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        drop(server);
        assert!(
            path.exists(),
            "a socket this server did not make is left alone"
        );
        drop(theirs);
        std::fs::remove_file(&path).unwrap();
        // Its own file goes with it.
        let server = PluginServer::bind(&path, false).unwrap();
        drop(server);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            PluginServer::bind(&path, false),
            Err(ClaimError::NotASocket(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_server_answers_over_its_socket() {
        use std::io::{Read, Write};
        use std::sync::Arc;
        let d = dir("serve");
        let path = d.join("p.sock");
        let mut server = PluginServer::bind(&path, true).unwrap();
        let stop = server.shutdown_handle();
        let b: Arc<dyn vswitch::api::Backend> = super::Fake::new();
        let plugin = Arc::new(vswitch::docker::Plugin::new(b, None).unwrap());
        let t = std::thread::spawn(move || server.run(&plugin));
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(
            b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("Content-Type: application/vnd.docker.plugins.v1.2+json"));
        assert!(
            answer.ends_with(r#"{"Implements":["NetworkDriver","IpamDriver"]}"#),
            "{answer}"
        );
        stop.shutdown();
        t.join().unwrap();
        assert!(!path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_start_reconciles_the_plugin_with_the_switch() {
    use vswitch::api::types::{
        ConnectRequest, DisconnectRequest, EndpointIpamConfig, EndpointSettings, IpamRequest,
        NetworkCreateRequest, SandboxCreateRequest,
    };
    let b = Fake::new();
    let p = plugin(&b);
    let (pool, _) = make_network(&p, "10.60.0.0/24", "", &json!({}));
    let vswitch_net = p.state().networks[NID].vswitch.clone();
    // An interrupted join left a sandbox record of Docker's key: the next
    // join of that key uses it.
    b.apply(Request::CreateSandbox(SandboxCreateRequest {
        name: "leftover".into(),
        netns_path: Some(KEY.into()),
        external: true,
        ..Default::default()
    }))
    .unwrap();
    ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": pool}));
    ok(
        &p,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.60.0.2/24"}}),
    );
    ok(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY}),
    );
    assert_eq!(b.model(|m| m.sandboxes.len()), 1);
    assert_eq!(
        p.state().endpoints[EID]
            .joined
            .as_ref()
            .unwrap()
            .sandbox
            .len(),
        64
    );

    // What a crash between the switch's change and the plugin's save
    // leaves: a Docker network and a handed-off port the plugin does not
    // know.
    let handoff = |sandbox: &str, ip: &str| Request::Connect {
        network: vswitch_net.clone(),
        request: ConnectRequest {
            container: sandbox.into(),
            endpoint_config: Some(EndpointSettings {
                ipam_config: Some(EndpointIpamConfig {
                    ipv4_address: ip.into(),
                }),
                aliases: Vec::new(),
            }),
            port_kind: Some(PortKind::Handoff),
            assigned_ipv4: None,
        },
    };
    b.apply(Request::CreateSandbox(SandboxCreateRequest {
        name: "orphan".into(),
        netns_path: Some("/var/run/docker/netns/000000000000".into()),
        external: true,
        ..Default::default()
    }))
    .unwrap();
    b.apply(handoff("orphan", "10.60.0.9")).unwrap();
    b.apply(Request::CreateNetwork(NetworkCreateRequest {
        name: "docker-orphan".into(),
        ipam: Some(IpamRequest::default()),
        labels: [("com.docker.network.id".to_owned(), "9".repeat(64))].into(),
        ..NetworkCreateRequest::default()
    }))
    .unwrap();
    p.reconcile().unwrap();
    let (networks, sandboxes, endpoints) =
        b.model(|m| (m.networks.len(), m.sandboxes.len(), m.endpoints.len()));
    assert_eq!(
        (networks, sandboxes, endpoints),
        (2, 1, 1),
        "orphans removed, the join kept"
    );
    assert!(p.state().endpoints[EID].joined.is_some());

    // A join the switch lost is forgotten, so Leave and a new Join work.
    b.apply(Request::Disconnect {
        network: vswitch_net.clone(),
        request: DisconnectRequest {
            container: "leftover".into(),
            force: false,
        },
    })
    .unwrap();
    p.reconcile().unwrap();
    assert!(p.state().endpoints[EID].joined.is_none());
    ok(
        &p,
        "/NetworkDriver.Join",
        &json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": KEY}),
    );
    assert_eq!(b.model(|m| m.endpoints.len()), 1);
}

/// A Docker engine that answers `GET /networks/<NID>`: first without the
/// endpoint (the container is still starting), then with it as `web`.
fn fake_engine(path: std::path::PathBuf, asked: Arc<Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            asked.lock().unwrap().push(line);
            let containers = if n == 0 {
                json!({})
            } else {
                json!({"c0ffee": {"Name": "web", "EndpointID": EID, "IPv4Address": "10.61.0.2/24"},
                       "beef": {"Name": "other", "EndpointID": EID2}})
            };
            let body = json!({"Name": "n1", "Id": NID, "Containers": containers}).to_string();
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[test]
fn a_joined_sandbox_takes_its_containers_name_from_the_engine() {
    let dir = std::env::temp_dir().join(format!("vswitch-plugin-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("docker.sock");
    let asked = Arc::new(Mutex::new(Vec::new()));
    fake_engine(socket.clone(), Arc::clone(&asked));
    let b = Fake::new();
    let backend: Arc<dyn Backend> = b.clone();
    let namer = vswitch::docker::Namer::start(socket, Arc::clone(&backend)).unwrap();
    let p = Plugin::new(backend, None).unwrap().with_namer(namer);
    let (pool, _) = make_network(&p, "10.61.0.0/24", "", &json!({}));
    ok(&p, "/IpamDriver.RequestAddress", &json!({"PoolID": pool}));
    join(&p, EID, "10.61.0.2/24", KEY);
    // The join answered at once, under the sandbox key's name.
    let name = || b.model(|m| m.sandboxes[0].name.clone());
    assert_eq!(name(), "cbe51ab38395");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while name() != "web" {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox is not renamed: {}",
            name()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let asked = asked.lock().unwrap().clone();
    assert!(asked.len() >= 2, "asked again after a miss: {asked:?}");
    assert_eq!(asked[0], format!("GET /networks/{NID} HTTP/1.0"));
    // The tables read the new name.
    let ports = b.ports().unwrap();
    assert_eq!(ports[0].sandbox, "web");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn only_a_runtimes_sandbox_is_renamed_and_never_onto_a_taken_name() {
    use vswitch::api::types::SandboxCreateRequest;
    let b = Fake::new();
    let rename = |name: &str, new_name: &str| {
        b.apply(Request::RenameSandbox {
            name: name.into(),
            new_name: new_name.into(),
        })
    };
    for (name, external) in [("mine", false), ("theirs", true), ("taken", true)] {
        b.apply(Request::CreateSandbox(SandboxCreateRequest {
            name: name.into(),
            netns_path: external.then(|| format!("/var/run/docker/netns/{name}")),
            external,
            ..Default::default()
        }))
        .unwrap();
    }
    assert!(matches!(
        rename("mine", "web"),
        Err(ControlError::Unsupported(_))
    ));
    assert!(matches!(
        rename("theirs", "taken"),
        Err(ControlError::SandboxNameInUse { .. })
    ));
    assert!(matches!(
        rename("theirs", "-bad"),
        Err(ControlError::InvalidSandboxName(_))
    ));
    assert!(matches!(
        rename("nobody", "web"),
        Err(ControlError::SandboxNotFound(_))
    ));
    let Ok(Response::Sandbox(v)) = rename("theirs", "web") else {
        panic!("renamed");
    };
    assert_eq!(v.name, "web");
    assert!(
        rename("web", "web").is_ok(),
        "the same name again is no change"
    );
    let names = b.model(|m| {
        let mut n: Vec<String> = m.sandboxes.iter().map(|s| s.name.clone()).collect();
        n.sort();
        n
    });
    assert_eq!(names, ["mine", "taken", "web"]);
}
