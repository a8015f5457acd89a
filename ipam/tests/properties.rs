//! Property tests: random sequences of requests against a simple model.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipam::{
    AddressSpace, Ipam, IpamError, NetworkIpamConfig, NetworkIpamRequest, PoolId, PoolRequest,
    PredefinedPools,
};
use ipnet::Ipv4Net;
use proptest::prelude::*;

/// One step against a single pool.
#[derive(Debug, Clone)]
enum AddrOp {
    Dynamic,
    /// A static request for host number `n` (taken modulo the pool size).
    Static(u32),
    /// Release the `n`-th taken address (modulo), or a random one if none.
    Release(usize),
    /// Release host number `n`, taken or not (reserved ones included).
    ReleaseAny(u32),
}

fn addr_op() -> impl Strategy<Value = AddrOp> {
    prop_oneof![
        4 => Just(AddrOp::Dynamic),
        2 => any::<u32>().prop_map(AddrOp::Static),
        3 => any::<usize>().prop_map(AddrOp::Release),
        1 => any::<u32>().prop_map(AddrOp::ReleaseAny),
    ]
}

/// A pool set-up: prefix, optional range (prefix, host offset), aux hosts,
/// the gateway's host if given.
type Setup = (u8, Option<(u8, u32)>, Vec<u32>, Option<u32>);

fn pool_setup() -> impl Strategy<Value = Setup> {
    (22u8..=30).prop_flat_map(|prefix| {
        (
            Just(prefix),
            proptest::option::of((prefix..=30, any::<u32>())),
            proptest::collection::vec(any::<u32>(), 0..4),
            proptest::option::of(any::<u32>()),
        )
    })
}

fn host(subnet: Ipv4Net, n: u32) -> Ipv4Addr {
    let size = 1u32 << (32 - subnet.prefix_len());
    Ipv4Addr::from(u32::from(subnet.network()) + n % size)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No address is handed out twice, reserved addresses never, dynamic
    /// requests get the lowest free address of the range, and static requests
    /// succeed exactly when the address is free.
    #[test]
    fn addresses_are_never_handed_out_twice(
        (prefix, range, aux, gateway) in pool_setup(),
        ops in proptest::collection::vec(addr_op(), 1..200),
    ) {
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), prefix).unwrap().trunc();
        let mut config = NetworkIpamConfig::subnet(subnet.to_string());
        if let Some((range_prefix, offset)) = range {
            let range = Ipv4Net::new(host(subnet, offset), range_prefix).unwrap().trunc();
            config = config.with_range(range.to_string());
        }
        if let Some(g) = gateway {
            config = config.with_gateway(host(subnet, g).to_string());
        }
        for (i, a) in aux.iter().enumerate() {
            config = config.with_aux(format!("aux{i}"), host(subnet, *a).to_string());
        }
        let mut ipam = Ipam::new();
        let request = NetworkIpamRequest::new("p", "id").with_config(config);
        let Ok(network) = ipam.create_network(&request) else {
            // A clash among gateway, aux and reserved addresses: fine, as
            // long as nothing is left behind.
            prop_assert_eq!(ipam.pools().count(), 0);
            return Ok(());
        };
        let pool = ipam.pool(network.pools()[0]).unwrap().clone();
        let mut reserved: BTreeSet<Ipv4Addr> = pool.aux_addresses().values().copied().collect();
        reserved.insert(subnet.network());
        reserved.insert(subnet.broadcast());
        reserved.insert(pool.gateway().unwrap());
        let (lo, hi) = match pool.ip_range() {
            Some(r) => (r.effective().network(), r.effective().broadcast()),
            None => (subnet.network(), subnet.broadcast()),
        };
        let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for op in ops {
            match op {
                AddrOp::Dynamic => {
                    let expected = (u32::from(lo)..=u32::from(hi))
                        .map(Ipv4Addr::from)
                        .find(|a| !taken.contains(a) && !reserved.contains(a));
                    match ipam.allocate_endpoint_address(&network, None) {
                        Ok(got) => {
                            prop_assert_eq!(Some(got.address), expected);
                            prop_assert!(taken.insert(got.address));
                        }
                        Err(err) => {
                            prop_assert_eq!(expected, None);
                            let exhausted = matches!(err, IpamError::NetworkExhausted { .. });
                            prop_assert!(exhausted);
                        }
                    }
                }
                AddrOp::Static(n) => {
                    let a = host(subnet, n);
                    let free = !taken.contains(&a) && !reserved.contains(&a);
                    let result = ipam.allocate_endpoint_address(&network, Some(&a.to_string()));
                    prop_assert_eq!(result.is_ok(), free, "{} {:?}", a, result);
                    if free {
                        taken.insert(a);
                    }
                }
                AddrOp::Release(i) => {
                    if taken.is_empty() {
                        continue;
                    }
                    let a = *taken.iter().nth(i % taken.len()).unwrap();
                    ipam.release_endpoint_address(&network, a).unwrap();
                    taken.remove(&a);
                }
                AddrOp::ReleaseAny(n) => {
                    let a = host(subnet, n);
                    ipam.release_endpoint_address(&network, a).unwrap();
                    taken.remove(&a);
                }
            }
            let pool = ipam.pool(network.pools()[0]).unwrap();
            let listed: BTreeSet<Ipv4Addr> = pool.endpoint_addresses().collect();
            prop_assert_eq!(&listed, &taken);
            for r in &reserved {
                prop_assert!(pool.is_taken(*r), "{} must stay reserved", r);
            }
        }
    }
}

/// One step of pool traffic.
#[derive(Debug, Clone)]
enum PoolOp {
    Auto {
        global: bool,
        host: Option<(u32, u8)>,
    },
    Explicit {
        global: bool,
        addr: u32,
        prefix: u8,
    },
    Release(usize),
}

fn pool_op() -> impl Strategy<Value = PoolOp> {
    // Explicit subnets are drawn near the predefined ranges so they clash.
    let near = prop_oneof![
        (0u32..1 << 24).prop_map(|x| 0x0a00_0000 | x),
        (0u32..1 << 20).prop_map(|x| 0xac10_0000 | x),
        (0u32..1 << 16).prop_map(|x| 0xc0a8_0000 | x),
    ];
    prop_oneof![
        3 => (any::<bool>(), proptest::option::of((0xac10_0000u32..0xac20_0000, 12u8..=24)))
            .prop_map(|(global, host)| PoolOp::Auto { global, host }),
        3 => (any::<bool>(), near, 8u8..=30)
            .prop_map(|(global, addr, prefix)| PoolOp::Explicit { global, addr, prefix }),
        2 => any::<usize>().prop_map(PoolOp::Release),
    ]
}

fn space(global: bool) -> AddressSpace {
    if global {
        AddressSpace::Global
    } else {
        AddressSpace::Local
    }
}

fn clash(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b) || b.contains(&a)
}

/// Applies `ops` and checks that no two pools of a space overlap, that an
/// explicit request fails exactly when it would overlap, and that automatic
/// local pools avoid the host networks.
fn run_pool_ops(ipam: &mut Ipam, ops: &[PoolOp]) -> Result<(), TestCaseError> {
    let mut live: Vec<(PoolId, AddressSpace, Ipv4Net)> = Vec::new();
    for op in ops {
        match op {
            PoolOp::Auto { global, host } => {
                let hosts: Vec<Ipv4Net> = host
                    .iter()
                    .map(|&(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())
                    .collect();
                let request = PoolRequest::auto(space(*global)).avoiding(&hosts);
                if let Ok(pool) = ipam.request_pool(&request) {
                    let net = pool.subnet;
                    prop_assert!(
                        ipam.predefined(space(*global)).iter().any(|p| p == net),
                        "{} is predefined",
                        net
                    );
                    if !global {
                        prop_assert!(hosts.iter().all(|h| !clash(*h, net)));
                    }
                    live.push((pool.id, space(*global), net));
                }
            }
            PoolOp::Explicit {
                global,
                addr,
                prefix,
            } => {
                let typed = Ipv4Net::new(Ipv4Addr::from(*addr), *prefix).unwrap();
                let text = typed.to_string();
                let request = PoolRequest::subnet(space(*global), &text);
                let expect_clash = live
                    .iter()
                    .any(|&(_, s, n)| s == space(*global) && clash(n, typed.trunc()));
                match ipam.request_pool(&request) {
                    Ok(pool) => {
                        prop_assert!(!expect_clash);
                        prop_assert_eq!(ipam.pool(pool.id).unwrap().subnet_as_typed(), text);
                        live.push((pool.id, space(*global), pool.subnet));
                    }
                    Err(err) => {
                        prop_assert!(expect_clash);
                        let overlap = matches!(err, IpamError::PoolOverlap { .. });
                        prop_assert!(overlap);
                    }
                }
            }
            PoolOp::Release(i) => {
                if !live.is_empty() {
                    let (id, _, _) = live.remove(i % live.len());
                    ipam.release_pool(id).unwrap();
                }
            }
        }
        for (i, &(_, s1, n1)) in live.iter().enumerate() {
            for &(_, s2, n2) in &live[i + 1..] {
                prop_assert!(s1 != s2 || !clash(n1, n2), "{} and {} overlap", n1, n2);
            }
        }
    }
    prop_assert_eq!(ipam.pools().count(), live.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pools_never_overlap(ops in proptest::collection::vec(pool_op(), 1..120)) {
        let mut ipam = Ipam::new();
        run_pool_ops(&mut ipam, &ops)?;
    }

    /// A small overlapping predefined list stresses the overlap checks of the
    /// automatic search.
    #[test]
    fn pools_never_overlap_with_a_custom_list(ops in proptest::collection::vec(pool_op(), 1..120)) {
        let pools = PredefinedPools::from_config(&[
            ipam::DefaultAddressPool::new("172.16.0.0/12", 16),
            ipam::DefaultAddressPool::new("172.16.0.0/12", 14),
            ipam::DefaultAddressPool::new("192.168.0.0/16", 24),
        ])
        .unwrap();
        let mut ipam = Ipam::with_local_pools(pools);
        run_pool_ops(&mut ipam, &ops)?;
    }

    /// A JSON round trip restores the state exactly, and the restored
    /// allocator then answers exactly as the original.
    #[test]
    fn serde_round_trip_restores_everything(
        ops in proptest::collection::vec(pool_op(), 1..60),
        addresses in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut ipam = Ipam::new();
        run_pool_ops(&mut ipam, &ops)?;
        let ids: Vec<PoolId> = ipam.pools().map(|p| p.id()).collect();
        for (i, n) in addresses.iter().enumerate() {
            if let Some(&id) = ids.get(i % ids.len().max(1)) {
                let _ = ipam.request_address(id, None);
                if n % 3 == 0 {
                    let subnet = ipam.pool(id).unwrap().subnet();
                    let _ = ipam.release_address(id, host(subnet, u32::from(*n)));
                }
            }
        }
        let json = serde_json::to_string(&ipam).unwrap();
        let mut back: Ipam = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &ipam);
        for s in [AddressSpace::Local, AddressSpace::Global] {
            let a = ipam.request_pool(&PoolRequest::auto(s)).map(|p| p.subnet);
            let b = back.request_pool(&PoolRequest::auto(s)).map(|p| p.subnet);
            prop_assert_eq!(a, b);
        }
        for &id in &ids {
            prop_assert_eq!(ipam.request_address(id, None), back.request_address(id, None));
        }
    }

    /// Damaged state never panics the restore.
    #[test]
    fn damaged_state_is_refused_without_panic(
        ops in proptest::collection::vec(pool_op(), 1..20),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut ipam = Ipam::new();
        run_pool_ops(&mut ipam, &ops)?;
        let mut bytes = serde_json::to_vec(&ipam).unwrap();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        if let Ok(restored) = serde_json::from_slice::<Ipam>(&bytes) {
            // Whatever survived must still be a coherent allocator.
            let json = serde_json::to_string(&restored).unwrap();
            prop_assert!(serde_json::from_str::<Ipam>(&json).is_ok());
        }
    }

    /// Arbitrary API text never panics.
    #[test]
    fn arbitrary_text_never_panics(
        subnet in "[0-9./:a-f]{0,24}",
        range in "[0-9./:a-f]{0,24}",
        gateway in "[0-9./:a-f]{0,20}",
        aux in "[0-9./:a-f]{0,20}",
        requested in "[0-9./:a-f]{0,20}",
        space_name in "[A-Za-z]{0,14}",
        pool_id in "[0-9a-z]{0,22}",
    ) {
        let mut ipam = Ipam::new();
        let config = NetworkIpamConfig {
            subnet: Some(subnet.clone()),
            ip_range: Some(range.clone()),
            gateway: Some(gateway),
            aux_addresses: [("x".to_owned(), aux)].into_iter().collect(),
        };
        let request = NetworkIpamRequest::new("t", "id").with_config(config);
        if let Ok(network) = ipam.create_network(&request) {
            let _ = ipam.allocate_endpoint_address(&network, Some(&requested));
            let _ = ipam.allocate_endpoint_address(&network, None);
            let _ = ipam.network_ipam_config(&network);
            ipam.delete_network(&network);
        }
        let pool = PoolRequest::subnet(AddressSpace::Global, &subnet).with_range(&range);
        let _ = ipam.request_pool(&pool);
        let _ = space_name.parse::<AddressSpace>();
        let _ = pool_id.parse::<PoolId>();
    }
}
