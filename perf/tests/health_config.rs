//! The configuration `yard-health` runs the daemon on, checked without a
//! daemon: every endpoint lands in an EndpointSlice of at most 1,000, the
//! file resolves to one listener over all of them, and only the probing
//! runs carry a health check: a TCP connect to each endpoint.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use switchyard_config::snapshot::{Probe, WhenAllUnhealthy};

use switchyard_perf::health::config::{
    config_yaml, endpoints, slices, table_size, ActiveCheck, MAX_ENDPOINTS_PER_SLICE,
};

fn resolve(yaml: &str) -> switchyard_config::Resolution {
    let resources = switchyard_config::load_str("health.yaml", yaml).expect("the file loads");
    switchyard_config::resolve(&resources, 1)
}

#[test]
fn slices_hold_one_port_and_at_most_1000_endpoints_each() {
    let base = u32::from(Ipv4Addr::new(198, 18, 4, 0));
    let mut chosen: Vec<SocketAddrV4> = (0..2500)
        .map(|i| SocketAddrV4::new(Ipv4Addr::from(base + i), 20_000))
        .collect();
    chosen.extend((0..10).map(|i| SocketAddrV4::new(Ipv4Addr::from(base + i), 20_001)));
    let cut = slices(&chosen);
    let shape: Vec<(u16, usize)> = cut.iter().map(|s| (s.port, s.addresses.len())).collect();
    assert_eq!(
        shape,
        [(20_000, 1000), (20_000, 1000), (20_000, 500), (20_001, 10)]
    );
    let listed: BTreeSet<SocketAddrV4> = cut
        .iter()
        .flat_map(|s| s.addresses.iter().map(|a| SocketAddrV4::new(*a, s.port)))
        .collect();
    assert_eq!(listed, chosen.iter().copied().collect());
}

#[test]
fn endpoints_spread_over_100_addresses_and_a_smaller_count_is_a_prefix() {
    let all = endpoints(10_000);
    assert_eq!(all.len(), 10_000);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 10_000);
    assert_eq!(
        all.iter().map(|e| e.ip()).collect::<BTreeSet<_>>().len(),
        100
    );
    assert_eq!(endpoints(1000), all[..1000]);
}

#[test]
fn the_idle_config_serves_every_endpoint_on_one_listener_without_a_check() {
    let chosen = endpoints(10_000);
    let yaml = config_yaml(&chosen, None);
    assert!(!yaml.contains("healthCheck"));
    let slices = yaml.matches("kind: EndpointSlice").count();
    assert!(slices >= chosen.len() / MAX_ENDPOINTS_PER_SLICE);
    let resolution = resolve(&yaml);
    assert!(
        resolution.diagnostics.is_empty(),
        "{:#?}",
        resolution.diagnostics
    );
    let listeners = resolution.snapshot.listeners();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].backends().len(), chosen.len());
    assert_eq!(
        listeners[0].slots().len() as u64,
        table_size(chosen.len()).unwrap()
    );
    assert!(listeners[0]
        .groups()
        .iter()
        .all(|g| g.health_check.is_none()));
}

#[test]
fn tables_are_the_next_prime_with_100_slots_per_endpoint() {
    assert_eq!(table_size(600), None);
    assert_eq!(table_size(1000), Some(100_003));
    assert_eq!(table_size(10_000), Some(1_000_003));
    assert_eq!(table_size(20_000), Some(1_048_573));
}

#[test]
fn the_probing_config_checks_every_endpoint_with_a_tcp_connect() {
    let chosen = endpoints(1000);
    let check = ActiveCheck::default();
    let resolution = resolve(&config_yaml(&chosen, Some(&check)));
    assert!(
        resolution.diagnostics.is_empty(),
        "{:#?}",
        resolution.diagnostics
    );
    let listeners = resolution.snapshot.listeners();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].backends().len(), chosen.len());
    let groups = listeners[0].groups();
    assert!(!groups.is_empty());
    for group in groups {
        let health = group
            .health_check
            .as_deref()
            .expect("the Service's endpoints are checked");
        assert_eq!(
            health.probe,
            Probe::Tcp {
                send: Vec::new(),
                receive: Vec::new()
            }
        );
        assert_eq!(health.port, None);
        assert_eq!(health.interval, Duration::from_secs(1));
        assert_eq!(health.timeout, Duration::from_millis(500));
        assert_eq!(
            (health.healthy_threshold, health.unhealthy_threshold),
            (check.healthy_threshold, check.unhealthy_threshold)
        );
        assert_eq!(health.when_all_unhealthy, WhenAllUnhealthy::FailOpen);
    }
}
