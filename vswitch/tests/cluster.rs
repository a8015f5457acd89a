//! The etcd control plane's translation, without etcd: keys and values as
//! a watch delivers them go through `cluster::ClusterView`, and the events
//! it gives are applied to a real `fabric::VtepTable`, as the daemon does.

use std::net::Ipv4Addr;
use std::time::Instant;

use fabric::vtep::{NetworkConfig, TableConfig};
use fabric::{EthernetAddress, PeerEvent, Vni, VtepTable};
use vswitch::cluster::view::{EndpointRecord, HostRecord, Key, NetworkRecord};
use vswitch::cluster::{ClusterView, Desired};
use vswitch::ids::MacAddr;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

fn vni() -> Vni {
    Vni::new(4096).unwrap()
}

fn host(vtep: Ipv4Addr, name: &str, networks: &[&str]) -> (String, Vec<u8>) {
    (
        Key::Host(vtep).to_string(),
        serde_json::to_vec(&HostRecord {
            name: name.to_owned(),
            vtep,
            networks: networks.iter().map(|n| (*n).to_owned()).collect(),
        })
        .unwrap(),
    )
}

fn network() -> (String, Vec<u8>) {
    (
        Key::Network("ov1".to_owned()).to_string(),
        serde_json::to_vec(&NetworkRecord {
            name: "ov1".to_owned(),
            vni: 4096,
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            attachable: true,
            internal: false,
            options: std::collections::BTreeMap::new(),
        })
        .unwrap(),
    )
}

fn endpoint(id: &str, vtep: Ipv4Addr, last: u8, name: &str) -> (String, Vec<u8>) {
    let rec = EndpointRecord {
        id: id.to_owned(),
        network: "ov1".to_owned(),
        vni: 4096,
        mac: MacAddr([0x02, 0x42, 10, 0, 0, last]),
        ip: Ipv4Addr::new(10, 0, 0, last),
        vtep,
        name: name.to_owned(),
        aliases: vec![format!("{name}-alias")],
        short_id: format!("{id:0<12}"),
        hostname: None,
    };
    (
        Key::Endpoint {
            network: "ov1".to_owned(),
            id: id.to_owned(),
        }
        .to_string(),
        serde_json::to_vec(&rec).unwrap(),
    )
}

fn mac(last: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0x42, 10, 0, 0, last])
}

struct Host {
    view: ClusterView,
    table: VtepTable,
}

impl Host {
    fn new() -> Self {
        let mut table = VtepTable::new(TableConfig {
            local_vtep: Some(LOCAL),
            ..TableConfig::default()
        });
        table.add_network(NetworkConfig::control_plane(vni()));
        Self {
            view: ClusterView::new(LOCAL),
            table,
        }
    }

    fn put(&mut self, kv: &(String, Vec<u8>)) -> Vec<PeerEvent> {
        let events = self.view.apply(&kv.0, Some(&kv.1));
        self.apply(&events);
        events
    }

    fn delete(&mut self, key: &str) -> Vec<PeerEvent> {
        let events = self.view.apply(key, None);
        self.apply(&events);
        events
    }

    fn apply(&mut self, events: &[PeerEvent]) {
        for e in events {
            self.table.apply(Instant::now(), e).unwrap();
        }
    }
}

#[test]
fn published_endpoints_fill_the_table_and_a_lost_lease_empties_it() {
    let mut h = Host::new();
    h.put(&network());
    let events = h.put(&host(B, "b", &["ov1"]));
    assert_eq!(
        events,
        [
            PeerEvent::VtepUp {
                vtep: B,
                name: "b".into()
            },
            PeerEvent::Join {
                vni: vni(),
                vtep: B
            },
        ]
    );
    assert_eq!(h.table.flood_list(vni()), [B], "a member gets broadcasts");
    h.put(&endpoint("e1", B, 2, "web"));
    h.put(&host(C, "c", &[]));
    h.put(&endpoint("e2", C, 3, "db"));
    // Remote MAC → VTEP, IP → MAC for ARP suppression, and the flood list:
    // hosts of the network and hosts with endpoints on it.
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(2)), Some(B));
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(3)), Some(C));
    assert_eq!(
        h.table.lookup_ip(vni(), Ipv4Addr::new(10, 0, 0, 3)),
        Some(mac(3))
    );
    assert_eq!(h.table.flood_list(vni()), [B, C]);
    let names: Vec<String> = h.view.remote_names().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["web", "db"]);

    // Host B's lease expires: etcd deletes its keys, one event each.
    h.delete(&endpoint("e1", B, 2, "web").0);
    let events = h.delete(&Key::Host(B).to_string());
    assert!(
        events.contains(&PeerEvent::VtepDown { vtep: B }),
        "{events:?}"
    );
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(2)), None);
    assert_eq!(h.table.lookup_ip(vni(), Ipv4Addr::new(10, 0, 0, 2)), None);
    assert_eq!(h.table.flood_list(vni()), [C]);
    let names: Vec<String> = h.view.remote_names().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["db"]);
}

#[test]
fn this_hosts_own_records_give_no_events() {
    let mut h = Host::new();
    h.put(&network());
    assert!(h.put(&host(LOCAL, "me", &["ov1"])).is_empty());
    assert!(h.put(&endpoint("mine", LOCAL, 9, "local")).is_empty());
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(9)), None);
    assert!(
        h.table.flood_list(vni()).is_empty(),
        "never floods to itself"
    );
    assert!(h.view.remote_names().is_empty());
}

#[test]
fn a_moved_endpoint_is_replaced_and_bad_records_are_ignored() {
    let mut h = Host::new();
    h.put(&network());
    h.put(&host(B, "b", &["ov1"]));
    h.put(&host(C, "c", &["ov1"]));
    h.put(&endpoint("e1", B, 2, "web"));
    // The same endpoint republished behind C (a later record wins).
    let moved = h.put(&endpoint("e1", C, 2, "web"));
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(2)), Some(C));
    // A value that does not parse, or a record under another key, changes
    // nothing but a counter.
    let bad = Key::Endpoint {
        network: "ov1".into(),
        id: "e9".into(),
    }
    .to_string();
    assert!(h.view.apply(&bad, Some(b"{not json")).is_empty());
    let (_, other) = endpoint("e1", B, 7, "x");
    assert!(h.view.apply(&bad, Some(&other)).is_empty());
    assert_eq!(h.view.unreadable(), 1);
    // Keys of other programs or versions are ignored.
    assert!(h.view.apply("/vswitch/future/x", Some(b"{}")).is_empty());
    assert!(
        h.view
            .apply("/elsewhere/hosts/192.0.2.9", Some(b"{}"))
            .is_empty()
    );
}

#[test]
fn a_full_read_after_a_reconnection_gives_only_the_difference() {
    let mut h = Host::new();
    h.put(&network());
    h.put(&host(B, "b", &["ov1"]));
    h.put(&endpoint("e1", B, 2, "web"));
    h.put(&endpoint("e2", B, 3, "db"));
    // While disconnected: B lost e2, C came with one endpoint.
    let now = [
        network(),
        host(B, "b", &["ov1"]),
        endpoint("e1", B, 2, "web"),
        host(C, "c", &["ov1"]),
        endpoint("e4", C, 4, "cache"),
    ];
    let events = h
        .view
        .reset(now.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    h.apply(&events);
    assert_eq!(
        events,
        [
            PeerEvent::EndpointRemove {
                vni: vni(),
                mac: mac(3)
            },
            PeerEvent::VtepUp {
                vtep: C,
                name: "c".into()
            },
            PeerEvent::Join {
                vni: vni(),
                vtep: C
            },
            PeerEvent::EndpointAdd(fabric::RemoteEndpoint {
                vni: vni(),
                mac: mac(4),
                ip: Some(Ipv4Addr::new(10, 0, 0, 4)),
                vtep: C,
            }),
        ]
    );
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(2)), Some(B));
    assert_eq!(h.table.lookup(Instant::now(), vni(), mac(3)), None);
    assert_eq!(h.table.flood_list(vni()), [B, C]);
    // The same read again changes nothing.
    assert!(
        h.view
            .reset(now.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .is_empty()
    );
}

#[test]
fn a_network_added_later_joins_with_what_the_view_holds() {
    let mut view = ClusterView::new(LOCAL);
    for kv in [
        network(),
        host(B, "b", &["ov1"]),
        endpoint("e1", B, 2, "web"),
    ] {
        view.apply(&kv.0, Some(&kv.1));
    }
    // The table did not have the network when the events came.
    let mut table = VtepTable::new(TableConfig {
        local_vtep: Some(LOCAL),
        ..TableConfig::default()
    });
    table.add_network(NetworkConfig::control_plane(vni()));
    for e in view.join_events(vni()) {
        table.apply(Instant::now(), &e).unwrap();
    }
    assert_eq!(table.lookup(Instant::now(), vni(), mac(2)), Some(B));
    assert_eq!(table.flood_list(vni()), [B]);
    assert!(view.join_events(Vni::new(4097).unwrap()).is_empty());
}

#[test]
fn desired_state_is_the_models_overlay_endpoints() {
    use vswitch::control::types::{
        ConnectRequest, EndpointSettings, IpamConfigEntry, IpamRequest, NetworkCreateRequest,
    };
    use vswitch::control::{Controller, ControllerConfig, Ctx, Request, SeededEntropy};
    let config = ControllerConfig {
        overlay: true,
        ..ControllerConfig::default()
    };
    let entropy = SeededEntropy::new(7);
    let ctx = Ctx::new("2026-01-01T00:00:00Z", &entropy);
    let mut c = Controller::new(config, &ctx).unwrap();
    let apply = |c: &mut Controller, r: Request| {
        let (next, _) = c.applied(r, &ctx).unwrap();
        *c = next;
    };
    apply(
        &mut c,
        Request::CreateNetwork(NetworkCreateRequest {
            name: "ov1".into(),
            driver: "overlay".into(),
            ipam: Some(IpamRequest {
                config: vec![IpamConfigEntry::subnet("10.0.0.0/24")],
                ..IpamRequest::default()
            }),
            ..NetworkCreateRequest::default()
        }),
    );
    apply(
        &mut c,
        Request::CreateNetwork(NetworkCreateRequest {
            name: "local".into(),
            ..NetworkCreateRequest::default()
        }),
    );
    for sb in ["web", "other"] {
        apply(
            &mut c,
            Request::CreateSandbox(vswitch::control::types::SandboxCreateRequest {
                name: sb.into(),
                ..Default::default()
            }),
        );
    }
    let connect = |net: &str, sb: &str, alias: &[&str]| Request::Connect {
        network: net.into(),
        request: ConnectRequest {
            container: sb.into(),
            endpoint_config: Some(EndpointSettings {
                aliases: alias.iter().map(|a| (*a).to_owned()).collect(),
                ..EndpointSettings::default()
            }),
            ..ConnectRequest::default()
        },
    };
    apply(&mut c, connect("ov1", "web", &["www"]));
    apply(&mut c, connect("local", "other", &[]));
    let d = Desired::from_model(c.model(), LOCAL);
    assert_eq!(d.networks, ["ov1"]);
    assert_eq!(d.endpoints.len(), 1, "only overlay endpoints: {d:?}");
    let e = &d.endpoints[0];
    assert_eq!(
        (e.network.as_str(), e.vni, e.name.as_str(), e.vtep),
        ("ov1", 4096, "web", LOCAL)
    );
    assert_eq!(e.aliases, ["www"], "the short id is not an alias");
    assert_eq!(e.short_id.len(), 12);
    assert_eq!(e.ip, Ipv4Addr::new(10, 0, 0, 2));
}
