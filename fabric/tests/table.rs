//! The VTEP table driven by control-plane events and received frames.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use fabric::decap::DropReason;
use fabric::vtep::{EventError, NetworkConfig, Origin, TableConfig};
use fabric::{EthernetAddress, PeerEvent, RemoteEndpoint, Vni, VtepTable};

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn mac(last: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0x42, 10, 0, 0, last])
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn add(vtep: Ipv4Addr, net: u32, last: u8) -> PeerEvent {
    PeerEvent::EndpointAdd(RemoteEndpoint {
        vni: vni(net),
        mac: mac(last),
        ip: Some(ip(last)),
        vtep,
    })
}

fn table() -> VtepTable {
    let mut t = VtepTable::new(TableConfig {
        local_vtep: Some(LOCAL),
        ..TableConfig::default()
    });
    t.add_network(NetworkConfig::control_plane(vni(4096)));
    t.add_network(NetworkConfig::learning(vni(4097)));
    t
}

#[test]
fn endpoints_from_events_fill_lookups_and_flood_list() {
    let mut t = table();
    let now = Instant::now();
    assert_eq!(t.apply(now, &add(A, 4096, 2)), Ok(true));
    assert_eq!(
        t.apply(now, &add(A, 4096, 2)),
        Ok(false),
        "a repeated record changes nothing"
    );
    t.apply(now, &add(A, 4096, 3)).unwrap();
    t.apply(now, &add(B, 4096, 4)).unwrap();
    assert_eq!(t.lookup(now, vni(4096), mac(2)), Some(A));
    assert_eq!(t.lookup(now, vni(4096), mac(4)), Some(B));
    assert_eq!(
        t.lookup(now, vni(4097), mac(2)),
        None,
        "networks are separate"
    );
    assert_eq!(t.lookup_ip(vni(4096), ip(3)), Some(mac(3)));
    assert_eq!(t.flood_list(vni(4096)), [A, B]);
    assert_eq!(
        t.entry(vni(4096), mac(2)).unwrap().origin,
        Origin::ControlPlane
    );

    // Removing one of A's two endpoints keeps A in the flood list; the last
    // one takes it out.
    let rm = |l| PeerEvent::EndpointRemove {
        vni: vni(4096),
        mac: mac(l),
    };
    assert_eq!(t.apply(now, &rm(2)), Ok(true));
    assert_eq!(t.lookup(now, vni(4096), mac(2)), None);
    assert_eq!(t.lookup_ip(vni(4096), ip(2)), None);
    assert_eq!(t.flood_list(vni(4096)), [A, B]);
    t.apply(now, &rm(3)).unwrap();
    assert_eq!(t.flood_list(vni(4096)), [B]);
    assert_eq!(t.apply(now, &rm(3)), Ok(false));
}

#[test]
fn moves_and_reassigned_addresses() {
    let mut t = table();
    let now = Instant::now();
    t.apply(now, &add(A, 4096, 2)).unwrap();
    // The endpoint moved to B (a later record wins).
    t.apply(now, &add(B, 4096, 2)).unwrap();
    assert_eq!(t.lookup(now, vni(4096), mac(2)), Some(B));
    assert_eq!(t.flood_list(vni(4096)), [B]);
    // 10.0.0.2 now belongs to a new MAC before the old record is withdrawn.
    let ep = RemoteEndpoint {
        vni: vni(4096),
        mac: mac(9),
        ip: Some(ip(2)),
        vtep: A,
    };
    t.apply(now, &PeerEvent::EndpointAdd(ep)).unwrap();
    assert_eq!(t.lookup_ip(vni(4096), ip(2)), Some(mac(9)));
    // Withdrawing the old MAC must not take the address from the new one.
    t.apply(
        now,
        &PeerEvent::EndpointRemove {
            vni: vni(4096),
            mac: mac(2),
        },
    )
    .unwrap();
    assert_eq!(t.lookup_ip(vni(4096), ip(2)), Some(mac(9)));
}

#[test]
fn vtep_down_removes_everything_behind_it() {
    let mut t = table();
    let now = Instant::now();
    t.apply(
        now,
        &PeerEvent::VtepUp {
            vtep: A,
            name: "a".into(),
        },
    )
    .unwrap();
    t.apply(now, &add(A, 4096, 2)).unwrap();
    t.apply(now, &add(B, 4096, 3)).unwrap();
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: A,
        },
    )
    .unwrap();
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: B,
        },
    )
    .unwrap();
    t.accept_rx(now, vni(4097), A, mac(7), 60).unwrap(); // learned behind A
    assert_eq!(t.lookup(now, vni(4097), mac(7)), Some(A));

    assert_eq!(t.apply(now, &PeerEvent::VtepDown { vtep: A }), Ok(true));
    assert_eq!(t.lookup(now, vni(4096), mac(2)), None);
    assert_eq!(t.lookup_ip(vni(4096), ip(2)), None);
    assert_eq!(
        t.lookup(now, vni(4097), mac(7)),
        None,
        "learned entries go too"
    );
    assert_eq!(t.flood_list(vni(4096)), [B]);
    assert_eq!(t.flood_list(vni(4097)), [B]);
    assert_eq!(t.lookup(now, vni(4096), mac(3)), Some(B));
    assert!(t.snapshot(now, None).iter().all(|s| s.vtep != A));
    assert_eq!(t.apply(now, &PeerEvent::VtepDown { vtep: A }), Ok(false));
}

#[test]
fn local_vtep_unknown_networks_and_bad_macs() {
    let mut t = table();
    let now = Instant::now();
    assert_eq!(t.apply(now, &add(LOCAL, 4096, 2)), Ok(false));
    assert_eq!(
        t.apply(
            now,
            &PeerEvent::Join {
                vni: vni(4097),
                vtep: LOCAL
            }
        ),
        Ok(false)
    );
    assert!(
        t.flood_list(vni(4096)).is_empty() && t.flood_list(vni(4097)).is_empty(),
        "never flood to ourselves"
    );
    assert_eq!(
        t.apply(now, &add(A, 5000, 2)),
        Err(EventError::UnknownVni(vni(5000)))
    );
    let bcast = EthernetAddress([0xff; 6]);
    let ev = PeerEvent::EndpointAdd(RemoteEndpoint {
        vni: vni(4096),
        mac: bcast,
        ip: None,
        vtep: A,
    });
    assert_eq!(t.apply(now, &ev), Err(EventError::BadMac(bcast)));
    assert_eq!(t.lookup(now, vni(4096), bcast), None);
}

#[test]
fn join_and_leave_shape_the_flood_list() {
    let mut t = table();
    let now = Instant::now();
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: B,
        },
    )
    .unwrap();
    t.apply(
        now,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: A,
        },
    )
    .unwrap();
    assert_eq!(t.flood_list(vni(4097)), [A, B], "sorted");
    assert_eq!(
        t.apply(
            now,
            &PeerEvent::Join {
                vni: vni(4097),
                vtep: A
            }
        ),
        Ok(false)
    );
    t.apply(
        now,
        &PeerEvent::Leave {
            vni: vni(4097),
            vtep: A,
        },
    )
    .unwrap();
    assert_eq!(t.flood_list(vni(4097)), [B]);
    assert!(t.flood_list(vni(9)).is_empty());
    t.remove_network(vni(4097));
    assert!(t.flood_list(vni(4097)).is_empty());
}

#[test]
fn source_checks_learning_and_ageing() {
    let mut t = table();
    let t0 = Instant::now();
    t.apply(t0, &add(A, 4096, 2)).unwrap();
    t.apply(
        t0,
        &PeerEvent::Join {
            vni: vni(4096),
            vtep: B,
        },
    )
    .unwrap();
    t.apply(
        t0,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: A,
        },
    )
    .unwrap();
    t.apply(
        t0,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: B,
        },
    )
    .unwrap();
    t.apply(
        t0,
        &PeerEvent::EndpointAdd(RemoteEndpoint {
            vni: vni(4097),
            mac: mac(8),
            ip: None,
            vtep: A,
        }),
    )
    .unwrap();

    // Control-plane network: only the owner may use the MAC, nothing is learned.
    assert_eq!(t.accept_rx(t0, vni(4096), A, mac(2), 60), Ok(()));
    assert_eq!(
        t.accept_rx(t0, vni(4096), B, mac(2), 60),
        Err(DropReason::SourceNotOwned)
    );
    assert_eq!(
        t.accept_rx(t0, vni(4096), A, mac(5), 60),
        Err(DropReason::SourceNotOwned)
    );
    assert_eq!(t.lookup(t0, vni(4096), mac(5)), None);
    let stranger = Ipv4Addr::new(203, 0, 113, 5);
    assert_eq!(
        t.accept_rx(t0, vni(4096), stranger, mac(2), 60),
        Err(DropReason::UnknownVtep)
    );
    assert_eq!(
        t.accept_rx(t0, vni(1), A, mac(2), 60),
        Err(DropReason::UnknownVni)
    );

    // Learning network: unknown MACs are learned, follow moves, age out;
    // a MAC the control plane pins stays pinned.
    assert_eq!(t.accept_rx(t0, vni(4097), B, mac(5), 60), Ok(()));
    assert_eq!(t.entry(vni(4097), mac(5)).unwrap().origin, Origin::Learned);
    assert_eq!(t.lookup(t0, vni(4097), mac(5)), Some(B));
    let t1 = t0 + Duration::from_secs(100);
    t.accept_rx(t1, vni(4097), A, mac(5), 60).unwrap();
    assert_eq!(t.lookup(t1, vni(4097), mac(5)), Some(A), "moved");
    assert_eq!(
        t.accept_rx(t1, vni(4097), B, mac(8), 60),
        Err(DropReason::SourceNotOwned)
    );
    let t2 = t1 + Duration::from_secs(299);
    assert_eq!(t.lookup(t2, vni(4097), mac(5)), Some(A));
    let t3 = t1 + Duration::from_secs(300);
    assert_eq!(
        t.lookup(t3, vni(4097), mac(5)),
        None,
        "aged out before the sweep"
    );
    assert_eq!(t.expire(t3), 1);
    assert!(t.entry(vni(4097), mac(5)).is_none());
    assert_eq!(
        t.lookup(t3, vni(4097), mac(8)),
        Some(A),
        "control-plane entries do not age"
    );
    assert_eq!(t.lookup(t3, vni(4096), mac(2)), Some(A));
}

#[test]
fn learning_is_capped_and_strangers_optional() {
    let mut t = VtepTable::new(TableConfig {
        max_learned: 2,
        ..TableConfig::default()
    });
    let open = NetworkConfig {
        require_known_vtep: false,
        ..NetworkConfig::learning(vni(4097))
    };
    t.add_network(open);
    let now = Instant::now();
    for l in 1..=3 {
        assert_eq!(
            t.accept_rx(now, vni(4097), A, mac(l), 60),
            Ok(()),
            "frames pass even when the table is full"
        );
    }
    assert_eq!(t.entries(vni(4097)).count(), 2);
    assert!(
        t.snapshot(now, None).is_empty(),
        "a sender that is not a VTEP gets no state"
    );
    // Expiry frees room again.
    assert_eq!(t.expire(now + Duration::from_secs(300)), 2);
    t.accept_rx(now, vni(4097), A, mac(3), 60).unwrap();
    assert_eq!(t.lookup(now, vni(4097), mac(3)), Some(A));
}

#[test]
fn snapshot_for_show_vteps() {
    let mut t = table();
    let t0 = Instant::now();
    t.apply(
        t0,
        &PeerEvent::VtepUp {
            vtep: A,
            name: "host-a".into(),
        },
    )
    .unwrap();
    t.apply(t0, &add(A, 4096, 2)).unwrap();
    t.apply(t0, &add(A, 4096, 3)).unwrap();
    t.apply(
        t0,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: A,
        },
    )
    .unwrap();
    t.apply(
        t0,
        &PeerEvent::Join {
            vni: vni(4097),
            vtep: B,
        },
    )
    .unwrap();
    t.accept_rx(t0, vni(4097), A, mac(7), 100).unwrap();
    t.accept_rx(t0, vni(4096), A, mac(2), 50).unwrap();
    t.record_tx(A, 1000);
    t.record_drop(A);
    t.record_drop(Ipv4Addr::new(203, 0, 113, 5));

    let later = t0 + Duration::from_secs(5);
    let all = t.snapshot(later, None);
    assert_eq!(all.len(), 2);
    let a = &all[0];
    assert_eq!((a.vtep, a.name.as_str()), (A, "host-a"));
    assert_eq!(a.networks, [vni(4096), vni(4097)]);
    assert_eq!((a.endpoints, a.learned), (2, 1));
    assert_eq!(a.last_seen, Some(Duration::from_secs(5)));
    assert_eq!(
        (
            a.stats.rx_packets,
            a.stats.rx_bytes,
            a.stats.tx_packets,
            a.stats.tx_bytes,
            a.stats.drops
        ),
        (2, 150, 1, 1000, 1)
    );
    let b = &all[1];
    assert_eq!(
        (b.vtep, b.endpoints, b.learned, b.last_seen),
        (B, 0, 0, None)
    );
    assert_eq!(b.networks, [vni(4097)]);

    let only = t.snapshot(later, Some(vni(4096)));
    assert_eq!(only.len(), 1);
    assert_eq!(
        (only[0].vtep, only[0].endpoints, only[0].learned),
        (A, 2, 0)
    );
    assert_eq!(only[0].networks, [vni(4096)]);
    // It serializes for the API.
    let json = serde_json::to_value(&only[0]).unwrap();
    assert_eq!(json["vtep"], "192.0.2.10");
    assert_eq!(json["networks"][0], 4096);
    assert_eq!(json["stats"]["tx_bytes"], 1000);
}
