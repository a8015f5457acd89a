//! IPAM driven by arbitrary JSON: a list of operations, as the API and the
//! Docker IPAM driver would pass them on (networks with `IPAM.Config`
//! entries, static and automatic addresses, releases, raw pool requests),
//! and an arbitrary persisted state. No input panics, and every address
//! handed out lies in its network's subnets and is never handed out twice.
#![no_main]

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipam::{AddressSpace, Ipam, NetworkIpamConfig, NetworkIpamRequest, PoolRequest};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
enum Op {
    Create {
        global: bool,
        builtin: bool,
        configs: Vec<NetworkIpamConfig>,
    },
    Delete(usize),
    Address(usize, Option<String>),
    Release(usize, Ipv4Addr),
    Pool {
        global: bool,
        subnet: Option<String>,
        range: Option<String>,
    },
    Restore(serde_json::Value),
}

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = serde_json::from_slice::<Vec<Op>>(data) else {
        // Arbitrary bytes as a persisted state must be refused cleanly.
        let _ = serde_json::from_slice::<Ipam>(data);
        return;
    };
    let mut ipam = Ipam::new();
    let mut networks = Vec::new();
    let mut given: HashSet<Ipv4Addr> = HashSet::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Create {
                global,
                builtin,
                configs,
            } => {
                let mut req = NetworkIpamRequest::new(format!("n{}", networks.len()), "id");
                if global {
                    req = req.in_space(AddressSpace::Global);
                }
                if builtin {
                    req = req.builtin();
                }
                for c in configs.into_iter().take(4) {
                    req = req.with_config(c);
                }
                if let Ok(n) = ipam.create_network(&req) {
                    networks.push(n);
                }
            }
            Op::Delete(i) => {
                if i < networks.len() {
                    let n = networks.remove(i);
                    ipam.delete_network(&n);
                    given.clear();
                }
            }
            Op::Address(i, requested) => {
                if let Some(n) = networks.get(i) {
                    if let Ok(a) = ipam.allocate_endpoint_address(n, requested.as_deref()) {
                        assert!(given.insert(a.address), "{} handed out twice", a.address);
                        assert!(ipam.network_ipam_config(n).iter().any(|c| {
                            c.subnet
                                .as_deref()
                                .and_then(|s| s.parse::<ipnet::Ipv4Net>().ok())
                                .is_some_and(|s| s.contains(&a.address))
                        }));
                    }
                }
            }
            Op::Release(i, address) => {
                if let Some(n) = networks.get(i) {
                    if ipam.release_endpoint_address(n, address).is_ok() {
                        given.remove(&address);
                    }
                }
            }
            Op::Pool {
                global,
                subnet,
                range,
            } => {
                let space = if global {
                    AddressSpace::Global
                } else {
                    AddressSpace::Local
                };
                let req = PoolRequest {
                    space,
                    subnet: subnet.as_deref(),
                    ip_range: range.as_deref(),
                    host_networks: &[],
                };
                let _ = ipam.request_pool(&req);
            }
            Op::Restore(v) => {
                if let Ok(restored) = serde_json::from_value::<Ipam>(v) {
                    ipam = restored;
                    networks.clear();
                    given.clear();
                }
            }
        }
    }
    // What is persisted is restored identically.
    let saved = serde_json::to_string(&ipam).expect("state serialises");
    let back: Ipam = serde_json::from_str(&saved).expect("state restores");
    assert_eq!(serde_json::to_string(&back).expect("again"), saved);
});
