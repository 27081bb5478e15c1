//! Every LB node behind one ECMP router must send a flow to the same
//! backend, so that a flow the router moves to another node keeps it.
//! The nodes share nothing but their config and seeds: each compiles the
//! config on its own, reads its documents in whatever order its source
//! gave them, and numbers its generations its own way. These tests take
//! two such independently compiled snapshots and check that `choose`, the
//! one decision the packet path takes for a new flow, gives every 5-tuple
//! the same backend endpoint under both.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use switchyard_config::snapshot::{Endpoint, Snapshot};
use switchyard_config::{load_str, resolve_with, Options};
use switchyard_dataplane::packet::FlowKey;
use switchyard_dataplane::worker::choose;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A Gateway with a TCP and a UDP listener, the TCP one split 3:1 over two
/// Services, one of them also behind the UDP listener.
fn documents() -> Vec<String> {
    let endpoints = |addresses: &[&str]| -> String {
        let list: Vec<String> = addresses
            .iter()
            .map(|a| format!("{{addresses: [\"{a}\"]}}"))
            .collect();
        format!("[{}]", list.join(", "))
    };
    let service = |name: &str, addresses: &[&str]| -> Vec<String> {
        vec![
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\n\
                 spec:\n  ports: [{{name: tcp, protocol: TCP, port: 80, targetPort: 8080}}, \
                 {{name: udp, protocol: UDP, port: 53, targetPort: 5353}}]\n"
            ),
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nendpoints: {}\n\
                 ports: [{{name: tcp, protocol: TCP, port: 8080}}, {{name: udp, protocol: UDP, port: 5353}}]\n",
                endpoints(addresses)
            ),
        ]
    };
    let mut docs = vec![
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sy}\n\
         spec: {controllerName: switchyard.io/gateway-controller}\n"
            .to_owned(),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: lb}}\n\
             spec:\n  gatewayClassName: sy\n  addresses: [{{value: {VIP}}}]\n  \
             listeners: [{{name: tcp, port: 80, protocol: TCP}}, {{name: udp, port: 53, protocol: UDP}}]\n"
        ),
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {name: web, namespace: lb}\n\
         spec:\n  parentRefs: [{name: edge, sectionName: tcp}]\n  \
         rules: [{backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]}]\n"
            .to_owned(),
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\n\
         metadata: {name: dns, namespace: lb}\n\
         spec:\n  parentRefs: [{name: edge, sectionName: udp}]\n  \
         rules: [{backendRefs: [{name: b, port: 53}]}]\n"
            .to_owned(),
    ];
    docs.extend(service(
        "a",
        &["10.1.0.5", "10.1.0.1", "10.1.0.3", "10.1.0.2", "10.1.0.4"],
    ));
    docs.extend(service("b", &["10.2.0.3", "10.2.0.1", "10.2.0.2"]));
    docs
}

/// What one node compiles from `docs` in this order.
fn compile(docs: &[String], order: &[usize], generation: u64, maglev_seed: u32) -> Snapshot {
    let text: Vec<&str> = order.iter().map(|&i| docs[i].as_str()).collect();
    let resources = load_str("node.yaml", &text.join("---\n")).expect("the config loads");
    let options = Options {
        maglev_seed,
        ..Options::default()
    };
    let resolution = resolve_with(&resources, generation, &options);
    assert!(
        resolution.diagnostics.is_empty(),
        "{:#?}",
        resolution.diagnostics
    );
    resolution.snapshot
}

/// The endpoint a new flow with `key` goes to, if any.
fn backend(snapshot: &Snapshot, key: &FlowKey, hash_seed: u32) -> Option<Endpoint> {
    let choice = choose(snapshot, key, hash_seed).ok()?;
    let index = choice.backend?;
    Some(choice.listener.backends()[index as usize].endpoint)
}

fn key(src: u32, src_port: u16, udp: bool) -> FlowKey {
    FlowKey {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(VIP),
        src_port,
        dst_port: if udp { 53 } else { 80 },
        protocol: if udp { 17 } else { 6 },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn independently_compiled_nodes_send_every_flow_to_the_same_backend(
        order in Just((0..documents().len()).collect::<Vec<usize>>()).prop_shuffle(),
        generations in (1u64..1_000_000, 1u64..1_000_000),
        maglev_seed in any::<u32>(),
        hash_seed in any::<u32>(),
        flows in prop::collection::vec((any::<u32>(), any::<u16>(), any::<bool>()), 500),
    ) {
        let docs = documents();
        let in_file_order: Vec<usize> = (0..docs.len()).collect();
        let one = compile(&docs, &in_file_order, generations.0, maglev_seed);
        let other = compile(&docs, &order, generations.1, maglev_seed);
        for (src, src_port, udp) in flows {
            let key = key(src, src_port, udp);
            let chosen = backend(&one, &key, hash_seed);
            prop_assert!(chosen.is_some(), "{key:?}: no backend");
            prop_assert_eq!(chosen, backend(&other, &key, hash_seed), "{:?}", key);
        }
    }
}

/// The seeds are part of what the nodes must share: with another Maglev
/// seed or another hash seed, flows land elsewhere. (Without this, the
/// test above could pass by comparing a node with itself.)
#[test]
fn nodes_with_different_seeds_disagree_on_some_flows() {
    let docs = documents();
    let order: Vec<usize> = (0..docs.len()).collect();
    let base = compile(&docs, &order, 1, 7);
    let other_table = compile(&docs, &order, 1, 8);
    let keys: Vec<FlowKey> = (0..1000u32)
        .map(|i| key(0x0a63_0000 + i, 40_000 + i as u16, i % 2 == 0))
        .collect();
    let differ = |a: &Snapshot, seed_a: u32, b: &Snapshot, seed_b: u32| {
        keys.iter()
            .filter(|k| backend(a, k, seed_a) != backend(b, k, seed_b))
            .count()
    };
    assert_eq!(differ(&base, 3, &base, 3), 0);
    assert!(differ(&base, 3, &other_table, 3) > 100);
    assert!(differ(&base, 3, &base, 4) > 100);
}
