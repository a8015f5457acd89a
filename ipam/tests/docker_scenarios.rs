//! The observed Docker sequences and messages of docker-reference §1 and §2,
//! replayed through the public API the daemon uses.

use std::net::Ipv4Addr;

use ipam::{
    AddressSpace, DefaultAddressPool, EndpointAddress, Ipam, IpamError, NetworkIpam,
    NetworkIpamConfig, NetworkIpamRequest, PoolRequest, PredefinedPools, format_mac,
};
use ipnet::Ipv4Net;

const ID: &str = "f150a77d8c60aaaabbbbccccddddeeeeffff00001111222233334444555566667777";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// A daemon's view right after start: docker0 holds 172.17.0.0/16.
fn daemon() -> (Ipam, NetworkIpam) {
    let mut ipam = Ipam::new();
    let bridge = ipam
        .create_network(&NetworkIpamRequest::new("bridge", "b0").builtin())
        .unwrap();
    (ipam, bridge)
}

fn create(
    ipam: &mut Ipam,
    name: &str,
    configs: &[NetworkIpamConfig],
) -> Result<NetworkIpam, IpamError> {
    let mut request = NetworkIpamRequest::new(name, ID);
    request.configs = configs.to_vec();
    ipam.create_network(&request)
}

fn subnet_of(ipam: &Ipam, network: &NetworkIpam) -> Ipv4Net {
    ipam.pool(network.pools()[0]).unwrap().subnet()
}

fn run(ipam: &mut Ipam, network: &NetworkIpam) -> Ipv4Addr {
    ipam.allocate_endpoint_address(network, None)
        .unwrap()
        .address
}

fn run_ip(
    ipam: &mut Ipam,
    network: &NetworkIpam,
    requested: &str,
) -> Result<EndpointAddress, IpamError> {
    ipam.allocate_endpoint_address(network, Some(requested))
}

fn err_text(result: Result<NetworkIpam, IpamError>) -> String {
    result.unwrap_err().to_string()
}

// ----- §1.1 / §1.2: which subnet a network gets -----

#[test]
fn docker0_gets_172_17_and_the_first_user_network_172_18() {
    let (mut ipam, bridge) = daemon();
    assert_eq!(subnet_of(&ipam, &bridge), net("172.17.0.0/16"));
    let n = create(&mut ipam, "n", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &n), net("172.18.0.0/16"));
}

#[test]
fn released_subnet_is_not_reused_at_once() {
    // Observed: n1=172.19, n2=172.20, n3=172.21; rm n2; n4 got 172.22, n5 172.23.
    let (mut ipam, _bridge) = daemon();
    let _n0 = create(&mut ipam, "n0", &[]).unwrap();
    let n1 = create(&mut ipam, "n1", &[]).unwrap();
    let n2 = create(&mut ipam, "n2", &[]).unwrap();
    let n3 = create(&mut ipam, "n3", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &n1), net("172.19.0.0/16"));
    assert_eq!(subnet_of(&ipam, &n2), net("172.20.0.0/16"));
    assert_eq!(subnet_of(&ipam, &n3), net("172.21.0.0/16"));
    ipam.delete_network(&n2);
    let n4 = create(&mut ipam, "n4", &[]).unwrap();
    let n5 = create(&mut ipam, "n5", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &n4), net("172.22.0.0/16"));
    assert_eq!(subnet_of(&ipam, &n5), net("172.23.0.0/16"));
}

#[test]
fn released_subnet_comes_back_after_the_cursor_wraps() {
    let mut ipam = Ipam::new();
    let first = create(&mut ipam, "first", &[]).unwrap();
    let mut rest = Vec::new();
    for i in 0..30 {
        rest.push(create(&mut ipam, &format!("n{i}"), &[]).unwrap());
    }
    assert_eq!(
        subnet_of(&ipam, rest.last().unwrap()),
        net("192.168.240.0/20"),
        "the 31st pool is the last /20"
    );
    assert_eq!(
        err_text(create(&mut ipam, "full", &[])),
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    );
    ipam.delete_network(&first);
    let again = create(&mut ipam, "again", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &again), net("172.17.0.0/16"));
}

#[test]
fn a_failed_create_still_moves_the_cursor() {
    // Observed with --ipv6: a v4 pool was taken and returned, and the next
    // network came out one pool further on. Here the second entry fails.
    let (mut ipam, _bridge) = daemon();
    let failing = [
        NetworkIpamConfig::default(),
        NetworkIpamConfig::subnet("172.17.5.0/24"),
    ];
    assert_eq!(
        err_text(create(&mut ipam, "bad", &failing)),
        "Pool overlaps with other one on this address space"
    );
    assert_eq!(
        ipam.pools().count(),
        1,
        "the automatic pool was rolled back"
    );
    let next = create(&mut ipam, "next", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &next), net("172.19.0.0/16"));
}

#[test]
fn on_link_host_network_is_skipped_and_the_cursor_moves_past_it() {
    // Observed: a bridge holding 192.168.64.1/20 made the next network skip
    // 192.168.64.0/20 and get 192.168.80.0/20.
    let mut ipam = Ipam::new();
    for i in 0..19 {
        create(&mut ipam, &format!("n{i}"), &[]).unwrap();
    }
    assert_eq!(
        ipam.cursor(AddressSpace::Local),
        19,
        "next is 192.168.64.0/20"
    );
    let host = vec![net("192.168.64.1/20").trunc(), net("192.0.2.0/24")];
    let request = NetworkIpamRequest::new("skip", ID).avoiding(host.clone());
    let skipped = ipam.create_network(&request).unwrap();
    assert_eq!(subnet_of(&ipam, &skipped), net("192.168.80.0/20"));
    // The rejected pool was only held during the search.
    assert!(ipam.pools().all(|p| p.subnet() != net("192.168.64.0/20")));
    let next = ipam
        .create_network(&NetworkIpamRequest::new("next", ID))
        .unwrap();
    assert_eq!(subnet_of(&ipam, &next), net("192.168.96.0/20"));
    // An explicit subnet inside the on-link route is accepted.
    let request = NetworkIpamRequest::new("explicit", ID)
        .with_config(NetworkIpamConfig::subnet("192.168.70.0/24"))
        .avoiding(host);
    assert!(ipam.create_network(&request).is_ok());
}

#[test]
fn nameserver_inside_a_candidate_pool_is_avoided() {
    let (mut ipam, _bridge) = daemon();
    let request = NetworkIpamRequest::new("dns", ID).avoiding(vec![net("172.18.0.53/32")]);
    let n = ipam.create_network(&request).unwrap();
    assert_eq!(subnet_of(&ipam, &n), net("172.19.0.0/16"));
}

#[test]
fn host_networks_covering_every_pool_exhaust_the_search() {
    let mut ipam = Ipam::new();
    let request = NetworkIpamRequest::new("none", ID)
        .avoiding(vec![net("172.16.0.0/12"), net("192.168.0.0/16")]);
    assert_eq!(
        err_text(ipam.create_network(&request)),
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    );
    assert_eq!(ipam.pools().count(), 0);
}

#[test]
fn overlapping_user_subnets_are_refused() {
    // Wider, narrower, equal, and inside docker0's 172.17/16.
    let (mut ipam, _bridge) = daemon();
    create(
        &mut ipam,
        "s1",
        &[NetworkIpamConfig::subnet("10.50.0.0/16")],
    )
    .unwrap();
    for subnet in [
        "10.0.0.0/8",
        "10.50.3.0/24",
        "10.50.0.0/16",
        "172.17.5.0/24",
        "10.50.0.9/16",
    ] {
        assert_eq!(
            err_text(create(
                &mut ipam,
                "s2",
                &[NetworkIpamConfig::subnet(subnet)]
            )),
            "Pool overlaps with other one on this address space",
            "{subnet}"
        );
    }
    assert!(
        create(
            &mut ipam,
            "s3",
            &[NetworkIpamConfig::subnet("10.51.0.0/16")]
        )
        .is_ok()
    );
}

#[test]
fn an_automatic_pool_skips_user_subnets() {
    let (mut ipam, _bridge) = daemon();
    create(
        &mut ipam,
        "user",
        &[NetworkIpamConfig::subnet("172.18.128.0/24")],
    )
    .unwrap();
    let auto = create(&mut ipam, "auto", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &auto), net("172.19.0.0/16"));
}

#[test]
fn a_deleted_user_subnet_can_be_created_again_at_once() {
    let mut ipam = Ipam::new();
    let config = [NetworkIpamConfig::subnet("10.60.0.0/24")];
    let first = create(&mut ipam, "a", &config).unwrap();
    ipam.delete_network(&first);
    ipam.delete_network(&first);
    assert!(create(&mut ipam, "b", &config).is_ok());
}

#[test]
fn swarm_overlays_come_from_10_0_0_0_8() {
    // Observed: ingress got 10.0.0.0/24, the first user overlay 10.0.1.0/24.
    let mut ipam = Ipam::new();
    let ingress = ipam
        .create_network(&NetworkIpamRequest::new("ingress", "i").in_space(AddressSpace::Global))
        .unwrap();
    let overlay = ipam
        .create_network(&NetworkIpamRequest::new("ov", "o").in_space(AddressSpace::Global))
        .unwrap();
    assert_eq!(subnet_of(&ipam, &ingress), net("10.0.0.0/24"));
    assert_eq!(subnet_of(&ipam, &overlay), net("10.0.1.0/24"));
    let first = ipam.allocate_endpoint_address(&overlay, None).unwrap();
    assert_eq!(first.address, ip("10.0.1.2"));
    assert_eq!(format_mac(first.mac()), "02:42:0a:00:01:02");
}

#[test]
fn default_address_pools_replace_the_local_list() {
    let pools =
        PredefinedPools::from_config(&[DefaultAddressPool::new("172.80.0.0/16", 24)]).unwrap();
    let mut ipam = Ipam::with_local_pools(pools);
    let a = create(&mut ipam, "a", &[]).unwrap();
    let b = create(&mut ipam, "b", &[]).unwrap();
    assert_eq!(subnet_of(&ipam, &a), net("172.80.0.0/24"));
    assert_eq!(subnet_of(&ipam, &b), net("172.80.1.0/24"));
    assert_eq!(
        PredefinedPools::from_config(&[DefaultAddressPool::new("172.80.0.0/16", 12)])
            .unwrap_err()
            .to_string(),
        "invalid pools size: 12"
    );
}

// ----- §1.3: addresses inside a pool -----

#[test]
fn containers_get_the_lowest_free_address_and_a_freed_one_at_once() {
    // Observed: .2, .3, .4; rm .3; next got .3.
    let (mut ipam, _bridge) = daemon();
    let n = create(&mut ipam, "n", &[]).unwrap();
    let first = ipam.allocate_endpoint_address(&n, None).unwrap();
    assert_eq!(first.gateway, Some(ip("172.18.0.1")));
    assert_eq!(first.cidr(), net("172.18.0.2/16"));
    assert_eq!(run(&mut ipam, &n), ip("172.18.0.3"));
    assert_eq!(run(&mut ipam, &n), ip("172.18.0.4"));
    ipam.release_endpoint_address(&n, ip("172.18.0.3")).unwrap();
    assert_eq!(run(&mut ipam, &n), ip("172.18.0.3"));
    assert_eq!(run(&mut ipam, &n), ip("172.18.0.5"));
}

#[test]
fn ip_range_with_aux_addresses_and_a_given_gateway() {
    // Observed: subnet 10.77.0.0/24, range 10.77.0.128/25, aux .129 and .130
    // → first container .128, next .131; after .128 was freed the next got
    // .128, then .132.
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.77.0.0/24")
        .with_range("10.77.0.128/25")
        .with_gateway("10.77.0.1")
        .with_aux("a", "10.77.0.129")
        .with_aux("b", "10.77.0.130");
    let n = create(&mut ipam, "r", &[config]).unwrap();
    let first = ipam.allocate_endpoint_address(&n, None).unwrap();
    assert_eq!(first.address, ip("10.77.0.128"));
    assert_eq!(first.gateway, Some(ip("10.77.0.1")));
    assert_eq!(format_mac(first.mac()), "02:42:0a:4d:00:80");
    assert_eq!(run(&mut ipam, &n), ip("10.77.0.131"));
    ipam.release_endpoint_address(&n, ip("10.77.0.128"))
        .unwrap();
    assert_eq!(run(&mut ipam, &n), ip("10.77.0.128"));
    assert_eq!(run(&mut ipam, &n), ip("10.77.0.132"));
}

#[test]
fn ip_range_without_gateway_puts_the_gateway_at_the_range_start() {
    // Observed: subnet 10.77.0.0/24, range 10.77.0.128/25 → gateway .128,
    // first container .129, and inspect shows no Gateway key.
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.77.0.0/24").with_range("10.77.0.128/25");
    let n = create(&mut ipam, "r", std::slice::from_ref(&config)).unwrap();
    let first = ipam.allocate_endpoint_address(&n, None).unwrap();
    assert_eq!(first.gateway, Some(ip("10.77.0.128")));
    assert_eq!(first.address, ip("10.77.0.129"));
    assert_eq!(ipam.network_ipam_config(&n), [config]);
}

#[test]
fn ip_range_with_aux_and_no_gateway() {
    // The gateway is allocated before the auxiliary addresses are reserved.
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.77.0.0/24")
        .with_range("10.77.0.128/25")
        .with_aux("a", "10.77.0.129")
        .with_aux("b", "10.77.0.130");
    let n = create(&mut ipam, "r", &[config]).unwrap();
    let first = ipam.allocate_endpoint_address(&n, None).unwrap();
    assert_eq!(first.gateway, Some(ip("10.77.0.128")));
    assert_eq!(first.address, ip("10.77.0.131"));
}

#[test]
fn aux_address_on_the_implicit_gateway_is_already_in_use() {
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.77.0.0/24")
        .with_range("10.77.0.128/25")
        .with_aux("a", "10.77.0.128");
    assert_eq!(
        err_text(create(&mut ipam, "r", &[config])),
        "failed to allocate secondary ip address (a:10.77.0.128): Address already in use"
    );
    assert_eq!(ipam.pools().count(), 0, "the pool was rolled back");
}

#[test]
fn a_slash_30_holds_exactly_one_container() {
    let mut ipam = Ipam::new();
    let n = create(
        &mut ipam,
        "ref-s30",
        &[NetworkIpamConfig::subnet("10.78.0.0/30")],
    )
    .unwrap();
    let only = ipam.allocate_endpoint_address(&n, None).unwrap();
    assert_eq!(
        (only.address, only.gateway),
        (ip("10.78.0.2"), Some(ip("10.78.0.1")))
    );
    assert_eq!(
        ipam.allocate_endpoint_address(&n, None)
            .unwrap_err()
            .to_string(),
        format!("no available IPv4 addresses on this network's address pools: ref-s30 ({ID})")
    );
    assert_eq!(
        ipam.network_ipam_config(&n),
        [NetworkIpamConfig::subnet("10.78.0.0/30")]
    );
}

#[test]
fn slash_31_and_32_cannot_even_hold_the_gateway() {
    let mut ipam = Ipam::new();
    for subnet in ["10.78.0.0/31", "10.78.1.0/32"] {
        assert_eq!(
            err_text(create(
                &mut ipam,
                "tiny",
                &[NetworkIpamConfig::subnet(subnet)]
            )),
            "failed to allocate gateway (): No available addresses on this pool"
        );
    }
    let with_gateway = NetworkIpamConfig::subnet("10.78.0.0/31").with_gateway("10.78.0.1");
    assert_eq!(
        err_text(create(&mut ipam, "tiny", &[with_gateway])),
        "failed to allocate gateway (10.78.0.1): No available addresses on this pool"
    );
    assert_eq!(ipam.pools().count(), 0);
}

#[test]
fn gateway_on_the_network_or_broadcast_address_is_in_use() {
    let mut ipam = Ipam::new();
    for (gateway, text) in [
        (
            "10.78.0.0",
            "failed to allocate gateway (10.78.0.0): Address already in use",
        ),
        (
            "10.78.0.255",
            "failed to allocate gateway (10.78.0.255): Address already in use",
        ),
    ] {
        let config = NetworkIpamConfig::subnet("10.78.0.0/24").with_gateway(gateway);
        assert_eq!(err_text(create(&mut ipam, "g", &[config])), text);
    }
}

#[test]
fn subnet_is_kept_as_typed_and_the_pool_is_masked() {
    let mut ipam = Ipam::new();
    let n = create(
        &mut ipam,
        "typed",
        &[NetworkIpamConfig::subnet("10.78.0.5/24")],
    )
    .unwrap();
    let pool = ipam.pool(n.pools()[0]).unwrap();
    assert_eq!(pool.subnet(), net("10.78.0.0/24"));
    assert_eq!(pool.subnet_as_typed(), "10.78.0.5/24");
    assert_eq!(pool.gateway(), Some(ip("10.78.0.1")));
    assert_eq!(
        ipam.network_ipam_config(&n),
        [NetworkIpamConfig::subnet("10.78.0.5/24")]
    );
    assert_eq!(
        serde_json::to_string(&ipam.network_ipam_config(&n)).unwrap(),
        r#"[{"Subnet":"10.78.0.5/24"}]"#
    );
}

#[test]
fn inspect_of_an_automatic_pool_shows_subnet_and_gateway() {
    let (mut ipam, _bridge) = daemon();
    for i in 0..4 {
        create(&mut ipam, &format!("n{i}"), &[]).unwrap();
    }
    let n = create(&mut ipam, "auto", &[]).unwrap();
    assert_eq!(
        serde_json::to_string(&ipam.network_ipam_config(&n)).unwrap(),
        r#"[{"Subnet":"172.22.0.0/16","Gateway":"172.22.0.1"}]"#
    );
}

#[test]
fn inspect_of_a_full_config_shows_what_was_given() {
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.77.0.0/24")
        .with_range("10.77.0.128/25")
        .with_gateway("10.77.0.1")
        .with_aux("host", "10.77.0.3");
    let n = create(&mut ipam, "full", std::slice::from_ref(&config)).unwrap();
    assert_eq!(ipam.network_ipam_config(&n), [config]);
    let info = ipam.pool(n.pools()[0]).unwrap().info();
    assert_eq!(info.subnet, "10.77.0.0/24");
    assert_eq!(info.ip_range.as_deref(), Some("10.77.0.128/25"));
    assert_eq!(info.aux_addresses.get("host"), Some(&ip("10.77.0.3")));
}

#[test]
fn aux_addresses_are_never_handed_out() {
    let mut ipam = Ipam::new();
    let config = NetworkIpamConfig::subnet("10.90.0.0/29")
        .with_aux("a", "10.90.0.2")
        .with_aux("b", "10.90.0.4");
    let n = create(&mut ipam, "aux", &[config]).unwrap();
    let got: Vec<_> = (0..3).map(|_| run(&mut ipam, &n)).collect();
    assert_eq!(got, [ip("10.90.0.3"), ip("10.90.0.5"), ip("10.90.0.6")]);
    assert!(ipam.allocate_endpoint_address(&n, None).is_err());
}

#[test]
fn several_subnets_fill_in_config_order() {
    let mut ipam = Ipam::new();
    let configs = [
        NetworkIpamConfig::subnet("10.91.0.0/30"),
        NetworkIpamConfig::subnet("10.92.0.0/30"),
    ];
    let n = create(&mut ipam, "multi", &configs).unwrap();
    assert_eq!(run(&mut ipam, &n), ip("10.91.0.2"));
    assert_eq!(run(&mut ipam, &n), ip("10.92.0.2"));
    assert!(ipam.allocate_endpoint_address(&n, None).is_err());
    // Libnetwork checks "pool full" before "address taken".
    assert_eq!(
        run_ip(&mut ipam, &n, "10.92.0.2").unwrap_err().to_string(),
        "No available addresses on this pool"
    );
}

#[test]
fn release_through_the_network_cannot_free_the_gateway() {
    let mut ipam = Ipam::new();
    let n = create(&mut ipam, "g", &[NetworkIpamConfig::subnet("10.93.0.0/24")]).unwrap();
    ipam.release_endpoint_address(&n, ip("10.93.0.1")).unwrap();
    assert_eq!(run(&mut ipam, &n), ip("10.93.0.2"));
    assert_eq!(
        ipam.release_endpoint_address(&n, ip("10.94.0.1"))
            .unwrap_err()
            .to_string(),
        "Invalid address 10.94.0.1: It does not belong to any of this network's subnets"
    );
}

// ----- §1.4: static addresses -----

#[test]
fn static_addresses_follow_dockers_rules() {
    let (mut ipam, bridge) = daemon();
    let config = NetworkIpamConfig::subnet("10.66.1.0/24")
        .with_range("10.66.1.128/25")
        .with_aux("host", "10.66.1.200");
    let user = create(&mut ipam, "user", &[config]).unwrap();
    let auto = create(&mut ipam, "auto", &[]).unwrap();

    // Outside the ip-range but inside the subnet: accepted.
    assert_eq!(
        run_ip(&mut ipam, &user, "10.66.1.7").unwrap().address,
        ip("10.66.1.7")
    );
    for (requested, text) in [
        ("10.66.1.7", "Address already in use"),
        ("10.66.1.200", "Address already in use"),
        ("10.66.1.128", "Address already in use"), // the gateway, from the range
        ("10.66.1.0", "Address already in use"),
        (
            "10.66.0.5",
            "Invalid address 10.66.0.5: It does not belong to any of this network's subnets",
        ),
        (
            "fd00::5",
            "Invalid address fd00::5: It does not belong to any of this network's subnets",
        ),
        ("abc", "Invalid IPv4 address: abc)"),
    ] {
        assert_eq!(
            run_ip(&mut ipam, &user, requested).unwrap_err().to_string(),
            text,
            "{requested}"
        );
    }
    assert_eq!(
        run_ip(&mut ipam, &bridge, "172.17.0.9")
            .unwrap_err()
            .to_string(),
        "user specified IP address is supported on user defined networks only"
    );
    assert_eq!(
        run_ip(&mut ipam, &auto, "172.18.0.9")
            .unwrap_err()
            .to_string(),
        "user specified IP address is supported only when connecting to networks with user configured subnets"
    );
    // An empty --ip is no --ip.
    assert_eq!(
        run_ip(&mut ipam, &bridge, "").unwrap().address,
        ip("172.17.0.2")
    );
    // A static address leaves the dynamic order alone.
    assert_eq!(run(&mut ipam, &user), ip("10.66.1.129"));
}

// ----- §1.4: configuration checks -----

#[test]
fn config_errors_use_the_clis_words() {
    let mut ipam = Ipam::new();
    let cases = [
        (
            vec![NetworkIpamConfig::subnet("10.79.0.0/24").with_gateway("10.79.1.1")],
            "no matching subnet for gateway 10.79.1.1",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.79.0.0/24").with_gateway("not-an-ip")],
            "no matching subnet for gateway not-an-ip",
        ),
        (
            vec![NetworkIpamConfig {
                gateway: Some("10.79.0.1".into()),
                ..NetworkIpamConfig::default()
            }],
            "every ip-range or gateway must have a corresponding subnet",
        ),
        (
            vec![NetworkIpamConfig {
                ip_range: Some("10.79.0.0/25".into()),
                ..NetworkIpamConfig::default()
            }],
            "every ip-range or gateway must have a corresponding subnet",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0/24").with_range("10.79.0.0/25")],
            "no matching subnet for range 10.79.0.0/25",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0/24").with_aux("x", "10.99.0.1")],
            "no matching subnet for aux-address 10.99.0.1",
        ),
        (
            vec![NetworkIpamConfig::default().with_aux("x", "10.99.0.1")],
            "no matching subnet for aux-address 10.99.0.1",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0")],
            "invalid CIDR address: 10.80.0.0",
        ),
        (
            vec![NetworkIpamConfig::subnet("300.0.0.0/8")],
            "invalid CIDR address: 300.0.0.0/8",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0/24").with_range("10.80.0.0/40")],
            "invalid CIDR address: 10.80.0.0/40",
        ),
        (
            vec![
                NetworkIpamConfig::subnet("10.80.0.0/16"),
                NetworkIpamConfig::subnet("10.80.7.0/24"),
            ],
            "multiple overlapping subnet configuration is not supported",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0/24").with_gateway("10.80.0.1/24")],
            "invalid gateway address 10.80.0.1/24 in Ipam configuration",
        ),
        (
            vec![NetworkIpamConfig::subnet("10.80.0.0/24").with_aux("x", "10.80.0.9/24")],
            "non parsable secondary ip address (x:10.80.0.9/24) passed for network bad",
        ),
    ];
    for (configs, text) in cases {
        assert_eq!(
            err_text(create(&mut ipam, "bad", &configs)),
            text,
            "{configs:?}"
        );
    }
    assert_eq!(
        ipam.pools().count(),
        0,
        "no failed create leaves a pool behind"
    );
    assert!(matches!(
        create(
            &mut ipam,
            "v6",
            &[NetworkIpamConfig::subnet("fd00:dead:beef::/64")]
        ),
        Err(IpamError::Ipv6NotSupported { .. })
    ));
}

// ----- The pool-level API (IPAM plugin protocol) -----

#[test]
fn pool_api_matches_the_ipam_driver_protocol() {
    let mut ipam = Ipam::new();
    let pool = ipam
        .request_pool(&PoolRequest::subnet(AddressSpace::Local, "10.99.0.0/24"))
        .unwrap();
    let (id, subnet) = (pool.id, pool.subnet);
    assert_eq!(subnet, net("10.99.0.0/24"));
    assert_eq!(ipam.request_gateway(id, None), Ok(ip("10.99.0.1")));
    assert_eq!(ipam.request_address(id, None), Ok(ip("10.99.0.2")));
    assert_eq!(
        ipam.request_address(id, Some(ip("10.98.0.1")))
            .unwrap_err()
            .to_string(),
        "Requested address is out of range"
    );
    ipam.release_address(id, ip("10.99.0.2")).unwrap();
    ipam.release_address(id, ip("10.99.0.1")).unwrap();
    ipam.release_pool(id).unwrap();
    assert_eq!(
        ipam.release_pool(id).unwrap_err().to_string(),
        "Address space does not contain specified address pool"
    );
    let space: AddressSpace = "LocalDefault".parse().unwrap();
    assert_eq!(space, AddressSpace::Local);
}
