//! The static peer file: parsing, validation, and the events it gives.

use std::net::Ipv4Addr;
use std::time::Instant;

use fabric::peer_file::{PeerFile, PeerFileError};
use fabric::vtep::{NetworkConfig, TableConfig};
use fabric::{EthernetAddress, PeerEvent, RemoteEndpoint, Vni, VtepTable};

const EXAMPLE: &str = r#"
port = 4790

[[vtep]]
name = "host-a"
address = "192.0.2.1"

[[vtep]]
name = "host-b"
address = "192.0.2.2"

[[vtep]]
name = "host-c"
address = "192.0.2.3"

[[network]]
vni = 4096
name = "ov1"

[[network.endpoint]]
mac = "02:42:0A:00:00:02"
ip = "10.0.0.2"
vtep = "192.0.2.2"

[[network]]
vni = 4097
vteps = ["192.0.2.1", "192.0.2.3"]
"#;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

#[test]
fn example_parses_into_events() {
    let f = PeerFile::parse(EXAMPLE).unwrap();
    assert_eq!(f.port, 4790);
    assert_eq!(
        f.networks[0].vteps,
        [A, B, C],
        "all VTEPs when the list is omitted"
    );
    assert_eq!(f.networks[0].name.as_deref(), Some("ov1"));
    let pinned = RemoteEndpoint {
        vni: vni(4096),
        mac: EthernetAddress([0x02, 0x42, 0x0a, 0, 0, 2]),
        ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        vtep: B,
    };
    let events = f.events(A).unwrap();
    assert_eq!(
        events,
        [
            PeerEvent::VtepUp {
                vtep: B,
                name: "host-b".into()
            },
            PeerEvent::VtepUp {
                vtep: C,
                name: "host-c".into()
            },
            PeerEvent::Join {
                vni: vni(4096),
                vtep: B
            },
            PeerEvent::Join {
                vni: vni(4096),
                vtep: C
            },
            PeerEvent::EndpointAdd(pinned),
            PeerEvent::Join {
                vni: vni(4097),
                vtep: C
            },
        ]
    );
    // Host B is not in network 4097 and does not hear about it.
    assert_eq!(
        f.networks_of(B).map(|n| n.vni.get()).collect::<Vec<_>>(),
        [4096]
    );
    assert!(
        f.events(B)
            .unwrap()
            .iter()
            .all(|e| !matches!(e, PeerEvent::Join { vni: v, .. } if v.get() == 4097))
    );
    assert!(matches!(
        f.events(Ipv4Addr::new(192, 0, 2, 9)),
        Err(PeerFileError::LocalNotListed(_))
    ));

    // Fed to a table, as the daemon does.
    let mut t = VtepTable::new(TableConfig {
        local_vtep: Some(A),
        ..TableConfig::default()
    });
    for n in f.networks_of(A) {
        t.add_network(NetworkConfig::learning(n.vni));
    }
    for e in &events {
        t.apply(Instant::now(), e).unwrap();
    }
    assert_eq!(t.flood_list(vni(4096)), [B, C]);
    assert_eq!(t.flood_list(vni(4097)), [C]);
    assert_eq!(
        t.lookup_ip(vni(4096), Ipv4Addr::new(10, 0, 0, 2)),
        Some(pinned.mac)
    );
}

#[test]
fn defaults() {
    let f = PeerFile::parse("[[vtep]]\nname = \"a\"\naddress = \"192.0.2.1\"\n").unwrap();
    assert_eq!(f.port, 4789);
    assert!(f.networks.is_empty());
    assert_eq!(f.events(A).unwrap(), []);
}

#[test]
fn errors_name_the_problem() {
    let vteps = "[[vtep]]\nname = \"a\"\naddress = \"192.0.2.1\"\n[[vtep]]\nname = \"b\"\naddress = \"192.0.2.2\"\n";
    let cases: [(&str, &str); 12] = [
        ("port = 0\n", "port 0"),
        (
            "[[vtep]]\nname = \"a\"\naddress = \"192.0.2.9\"\n",
            "name \"a\" is used twice",
        ),
        (
            "[[vtep]]\nname = \"z\"\naddress = \"192.0.2.1\"\n",
            "VTEP 192.0.2.1 is listed twice",
        ),
        ("[[network]]\nvni = 16777216\n", "out of range"),
        (
            "[[network]]\nvni = 5\n[[network]]\nvni = 5\n",
            "VNI 5 is listed twice",
        ),
        (
            "[[network]]\nvni = 5\nvteps = [\"192.0.2.7\"]\n",
            "names VTEP 192.0.2.7",
        ),
        (
            "[[network]]\nvni = 5\nvteps = [\"192.0.2.1\"]\n[[network.endpoint]]\nmac = \"02:00:00:00:00:01\"\nvtep = \"192.0.2.2\"\n",
            "not in its vteps",
        ),
        (
            "[[network]]\nvni = 5\n[[network.endpoint]]\nmac = \"02:00:00:00:00\"\nvtep = \"192.0.2.2\"\n",
            "invalid MAC",
        ),
        (
            "[[network]]\nvni = 5\n[[network.endpoint]]\nmac = \"01:00:5e:00:00:01\"\nvtep = \"192.0.2.2\"\n",
            "not unicast",
        ),
        (
            "[[network]]\nvni = 5\n[[network.endpoint]]\nmac = \"02:00:00:00:00:01\"\nvtep = \"192.0.2.2\"\n[[network.endpoint]]\nmac = \"02:00:00:00:00:01\"\nvtep = \"192.0.2.1\"\n",
            "MAC 02-00-00-00-00-01 twice",
        ),
        (
            "[[network]]\nvni = 5\n[[network.endpoint]]\nmac = \"02:00:00:00:00:01\"\nip = \"10.0.0.1\"\nvtep = \"192.0.2.2\"\n[[network.endpoint]]\nmac = \"02:00:00:00:00:02\"\nip = \"10.0.0.1\"\nvtep = \"192.0.2.1\"\n",
            "IP 10.0.0.1 twice",
        ),
        ("colour = \"blue\"\n", "unknown field"),
    ];
    for (extra, want) in cases {
        // Top-level keys must come before the first table.
        let text = if extra.starts_with('[') {
            format!("{vteps}{extra}")
        } else {
            format!("{extra}{vteps}")
        };
        let err = PeerFile::parse(&text).expect_err(extra).to_string();
        assert!(err.contains(want), "{extra:?}: {err:?} lacks {want:?}");
    }
    let err = PeerFile::parse("[[vtep]]\nname = \"a\"\naddress = \"not-an-ip\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
}
