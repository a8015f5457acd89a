//! Decapsulation and ARP suppression on arbitrary bytes: no panic, every
//! refusal counted, an accepted inner frame inside the input.
//!
//! Under `cargo fuzz` (`cfg(fuzzing)`) outer checksums always verify, so the
//! fuzzer reaches the VXLAN header, the inner frame and the table.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use fabric::vtep::{NetworkConfig, TableConfig};
use fabric::{
    Decapsulator, EthernetAddress, Headroom, PeerEvent, RemoteEndpoint, SliceBuf, Vni, VtepTable,
};
use libfuzzer_sys::fuzz_target;

const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn table(now: Instant) -> VtepTable {
    let mut t = VtepTable::new(TableConfig::default());
    let (learn, cp) = (Vni::new(4096).unwrap(), Vni::new(4097).unwrap());
    t.add_network(NetworkConfig::learning(learn));
    t.add_network(NetworkConfig::control_plane(cp));
    t.apply(
        now,
        &PeerEvent::Join {
            vni: learn,
            vtep: REMOTE,
        },
    )
    .unwrap();
    let ep = RemoteEndpoint {
        vni: cp,
        mac: EthernetAddress([2, 0x42, 10, 0, 0, 2]),
        ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        vtep: REMOTE,
    };
    t.apply(now, &PeerEvent::EndpointAdd(ep)).unwrap();
    t
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut t = table(now);
    let mut d = Decapsulator::default();

    match d.decap_frame(&mut t, now, data) {
        Ok(got) => assert!(got.inner.end <= data.len() && got.inner.len() >= 14),
        Err(reason) => assert_eq!(d.drops().get(reason), 1),
    }

    if let Some((src, payload)) = data.split_first_chunk::<4>() {
        let _ = d.decap_datagram(&mut t, now, Ipv4Addr::from(*src), payload);
    }

    let mut storage = data.to_vec();
    let len = storage.len();
    if let Some(mut buf) = SliceBuf::new(&mut storage, 0, len) {
        if d.decap_in_place(&mut t, now, &mut buf).is_err() {
            assert_eq!(buf.frame(), data, "a dropped frame is left as it was");
        }
    }

    let mut frame = data.to_vec();
    let _ = t.suppress_arp(Vni::new(4097).unwrap(), &mut frame);
    assert_eq!(frame.len(), data.len());
});
