//! IPAM requests per second, one core, no I/O.
//!
//! - `address/*`: one endpoint address taken and given back, on a /16 that
//!   is half full, either as one block (the lowest free address is found
//!   after one long run) or as every other address (the map is 16k runs).
//! - `pool/*`: one automatic pool taken and given back: in the local space
//!   with docker0 and a few networks, and in the global space with half of
//!   `10.0.0.0/8`'s 65536 /24s taken.
//!
//! Each iteration is one request and one release, counted as one element.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipam::{AddressSpace, Ipam, NetworkIpam, NetworkIpamConfig, NetworkIpamRequest, PoolRequest};

/// A network on 10.0.0.0/16 (65534 usable addresses) with 32767 taken,
/// gateway included: the lower half, or every other address.
fn half_full(every_other: bool) -> (Ipam, NetworkIpam) {
    let mut ipam = Ipam::new();
    let request = NetworkIpamRequest::new("bench", "0123456789ab")
        .with_config(NetworkIpamConfig::subnet("10.0.0.0/16"));
    let network = ipam
        .create_network(&request)
        .expect("a /16 on an empty ipam is free");
    let mut taken = Vec::new();
    // Every usable address but the gateway's.
    while taken.len() < 65533 {
        let ep = ipam
            .allocate_endpoint_address(&network, None)
            .expect("a /16 holds 65533 endpoints");
        taken.push(ep.address);
    }
    let release: Vec<Ipv4Addr> = if every_other {
        taken.iter().copied().step_by(2).collect()
    } else {
        taken[32766..].to_vec()
    };
    for address in release {
        ipam.release_endpoint_address(&network, address)
            .expect("the address belongs to the network");
    }
    (ipam, network)
}

fn address(c: &mut Criterion) {
    let mut group = c.benchmark_group("address");
    group.throughput(Throughput::Elements(1));
    for (name, every_other) in [
        ("allocate_release_16_half_block", false),
        ("allocate_release_16_half_alternate", true),
    ] {
        let (mut ipam, network) = half_full(every_other);
        group.bench_function(name, |b| {
            b.iter(|| {
                let ep = ipam
                    .allocate_endpoint_address(black_box(&network), None)
                    .expect("half the /16 is free");
                ipam.release_endpoint_address(&network, black_box(ep.address))
                    .expect("the address was just allocated");
            });
        });
    }
    group.finish();
}

fn pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));

    let mut local = Ipam::new();
    for _ in 0..5 {
        local
            .request_pool(&PoolRequest::auto(AddressSpace::Local))
            .expect("the local list has 31 pools");
    }
    group.bench_function("request_release_local", |b| {
        b.iter(|| {
            let grant = local
                .request_pool(black_box(&PoolRequest::auto(AddressSpace::Local)))
                .expect("26 local pools are free");
            local
                .release_pool(grant.id)
                .expect("the pool was just allocated");
        });
    });

    let mut global = Ipam::new();
    for i in 0..65536u32 {
        let grant = global
            .request_pool(&PoolRequest::auto(AddressSpace::Global))
            .expect("the global list has 65536 pools");
        if i % 2 == 1 {
            global
                .release_pool(grant.id)
                .expect("the pool was just allocated");
        }
    }
    group.bench_function("request_release_global_half_full", |b| {
        b.iter(|| {
            let grant = global
                .request_pool(black_box(&PoolRequest::auto(AddressSpace::Global)))
                .expect("32768 global pools are free");
            global
                .release_pool(grant.id)
                .expect("the pool was just allocated");
        });
    });

    let mut networks = Ipam::new();
    group.bench_function("create_delete_network_local", |b| {
        let request = NetworkIpamRequest::new("bench", "0123456789ab");
        b.iter(|| {
            let network = networks
                .create_network(black_box(&request))
                .expect("the local list is empty but for this network");
            networks.delete_network(&network);
        });
    });
    group.finish();
}

criterion_group!(benches, address, pool);
criterion_main!(benches);
