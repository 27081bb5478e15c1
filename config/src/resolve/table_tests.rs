//! Slot tables as resolution hands them out: shared between listeners
//! whose backends hash alike and across resolutions of an unchanged
//! backend set, and a table too small for its backends reported on the
//! listener whatever set its size.

use super::*;
use crate::load::load_str;
use crate::snapshot::{Listener, SlotTable};

const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.io/gateway-controller}
";

/// Gateway lb/edge on 10.0.0.1 and 10.0.0.2 with `a` (TCP 80) and `b`
/// (TCP 81).
const EDGE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: lb}
spec:
  gatewayClassName: sy
  addresses: [{value: 10.0.0.1}, {value: 10.0.0.2}]
  listeners: [{name: a, port: 80, protocol: TCP}, {name: b, port: 81, protocol: TCP}]
";

/// TCPRoute lb/`name` on listener `section` of lb/edge to Service
/// lb/`service`.
fn route(name: &str, section: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  parentRefs: [{{name: edge, sectionName: {section}}}]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

/// Service lb/`name` (80 -> 8080) with one ready endpoint per address.
fn service(name: &str, addresses: &[String]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{addresses: [\"{a}\"]}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nendpoints: [{}]\nports: [{{name: tcp, port: 8080}}]\n",
        endpoints.join(", ")
    )
}

fn addresses(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

fn compile(docs: &[&str], generation: u64) -> Resolution {
    let text = docs.join("---\n");
    let resources = load_str("test.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    super::tests::checked(resolve(&resources, generation))
}

fn served<'a>(res: &'a Resolution, name: &str, address: &str) -> &'a Listener {
    res.snapshot
        .listeners()
        .iter()
        .find(|l| l.name().to_string() == name && l.address().to_string() == address)
        .unwrap_or_else(|| panic!("no listener {name} on {address}: {:#?}", res.diagnostics))
}

#[test]
fn listeners_with_identical_backend_sets_share_one_table() {
    let echo = service("echo", &addresses("10.61", 3));
    let (ra, rb) = (route("ra", "a", "echo"), route("rb", "b", "echo"));
    let res = compile(&[CLASS, EDGE, &echo, &ra, &rb], 1);
    let tables: Vec<&SlotTable> = [("a", "10.0.0.1"), ("a", "10.0.0.2"), ("b", "10.0.0.1")]
        .iter()
        .map(|(l, address)| served(&res, &format!("lb/edge/{l}"), address).slots())
        .collect();
    assert!(SlotTable::ptr_eq(tables[0], tables[1]), "two addresses");
    assert!(SlotTable::ptr_eq(tables[0], tables[2]), "two listeners");
}

#[test]
fn listeners_with_other_backend_sets_have_their_own_tables() {
    let one = service("one", &addresses("10.62", 3));
    let two = service("two", &addresses("10.63", 3));
    let (ra, rb) = (route("ra", "a", "one"), route("rb", "b", "two"));
    let res = compile(&[CLASS, EDGE, &one, &two, &ra, &rb], 1);
    let a = served(&res, "lb/edge/a", "10.0.0.1").slots();
    let b = served(&res, "lb/edge/b", "10.0.0.1").slots();
    assert!(!SlotTable::ptr_eq(a, b));
}

#[test]
fn a_reload_keeps_the_table_of_a_listener_whose_backends_did_not_change() {
    let kept = service("kept", &addresses("10.64", 4));
    let (ra, rb) = (route("ra", "a", "kept"), route("rb", "b", "moved"));
    let before = compile(
        &[
            CLASS,
            EDGE,
            &kept,
            &service("moved", &addresses("10.65", 2)),
            &ra,
            &rb,
        ],
        1,
    );
    let after = compile(
        &[
            CLASS,
            EDGE,
            &kept,
            &service("moved", &addresses("10.65", 3)),
            &ra,
            &rb,
        ],
        2,
    );
    let table = |res: &Resolution, l: &str| served(res, l, "10.0.0.1").slots().clone();
    assert!(SlotTable::ptr_eq(
        &table(&before, "lb/edge/a"),
        &table(&after, "lb/edge/a")
    ));
    assert!(!SlotTable::ptr_eq(
        &table(&before, "lb/edge/b"),
        &table(&after, "lb/edge/b")
    ));
}

fn too_small(res: &Resolution) -> Vec<&Diagnostic> {
    res.diagnostics
        .iter()
        .filter(|d| d.kind == "Gateway" && d.reason == Reason::TableTooSmall)
        .collect()
}

#[test]
fn default_table_with_fewer_than_100_slots_per_backend_is_degraded_table_too_small() {
    // 656 backends want 65,600 slots; the default table has 65,537.
    let many = service("many", &addresses("10.66", 656));
    let ra = route("ra", "a", "many");
    let res = compile(&[CLASS, EDGE, &many, &ra], 1);
    let found = too_small(&res);
    assert_eq!(found.len(), 1, "{:#?}", res.diagnostics);
    let d = found[0];
    assert_eq!(
        (d.listener.as_deref(), d.condition),
        (Some("a"), ConditionType::Degraded)
    );
    assert!(
        d.message
            .contains("65537 slots (the default) for 656 backends")
            && d.message
                .contains("a spec.maglev.tableSize of 65609 would be enough"),
        "{d}"
    );
    // Still served with its table, and the listener's status says why.
    assert_eq!(served(&res, "lb/edge/a", "10.0.0.1").slots().len(), 65_537);
    let gateway = res
        .statuses
        .iter()
        .find_map(|s| match &s.status {
            crate::status::Status::Gateway(g) => Some(g),
            _ => None,
        })
        .unwrap();
    let a = gateway.listeners.iter().find(|l| l.name == "a").unwrap();
    let degraded = crate::status::condition(&a.conditions, "Degraded").unwrap();
    assert_eq!(degraded.reason, "TableTooSmall");

    // 655 backends have their 100 slots each.
    let enough = service("many", &addresses("10.66", 655));
    assert!(too_small(&compile(&[CLASS, EDGE, &enough, &ra], 1)).is_empty());
}

#[test]
fn a_policy_table_too_small_is_reported_on_the_listener_too() {
    let three = service("three", &addresses("10.67", 3));
    let ra = route("ra", "a", "three");
    let policy = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: p, namespace: lb}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: a}]
  maglev: {tableSize: 251}
";
    let res = compile(&[CLASS, EDGE, &three, &ra, policy], 1);
    let found = too_small(&res);
    assert_eq!(found.len(), 1, "{:#?}", res.diagnostics);
    assert!(
        found[0]
            .message
            .contains("251 slots (set by TrafficPolicy lb/p) for 3 backends")
            && found[0]
                .message
                .contains("a spec.maglev.tableSize of 307 would be enough"),
        "{}",
        found[0]
    );
}

#[test]
fn past_the_largest_table_the_message_names_the_largest() {
    let resources = load_str("test.yaml", &[CLASS, EDGE].join("---\n")).unwrap();
    let gateway = &resources.gateways[0];
    let d = status::table_too_small(gateway, "a", SlotTableSize::DEFAULT, None, 50_000).unwrap();
    assert!(
        d.message
            .contains("65537 slots (the default) for 50000 backends")
            && d.message
                .contains("even the largest spec.maglev.tableSize, 1048573"),
        "{d}"
    );
}
