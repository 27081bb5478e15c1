//! Address families: a listener only ever serves endpoints of its VIP's
//! family, as kube-proxy splits a dual-stack Service per family, and a
//! Gateway is bound (status, DNS, listeners) only to the addresses of a
//! family the packet path forwards. One rule per test, each on the
//! smallest YAML that shows it.

use super::*;
use crate::dns::RecordType;
use crate::load::load_str;
use crate::snapshot::{Slot, SLOT_TABLE_SIZE};
use crate::status::{Condition, ConditionStatus, GatewayStatus, RouteParentStatus, Status};

const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.io/gateway-controller}
";

/// Gateway lb/edge on `addresses` with `tcp` (TCP 80).
fn gateway(addresses: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: lb}}\n\
         spec:\n  gatewayClassName: sy\n  addresses: {addresses}\n  \
         listeners: [{{name: tcp, port: 80, protocol: TCP}}]\n"
    )
}

/// Gateway lb/edge on 10.0.0.1 only.
fn edge() -> String {
    gateway("[{value: 10.0.0.1}]")
}

/// TCPRoute lb/r on lb/edge with `backends` (a YAML list).
fn route(backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: r, namespace: lb}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n  - backendRefs: {backends}\n"
    )
}

/// Service lb/`name`, port 80 -> 8080 named `tcp`.
fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n"
    )
}

/// EndpointSlice `slice` of Service lb/`service` with `endpoints` (a YAML
/// list), its `addressType` IPv6 if an address has `::`.
fn slice(service: &str, slice: &str, endpoints: &str) -> String {
    let family = if endpoints.contains("::") {
        "IPv6"
    } else {
        "IPv4"
    };
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {slice}, namespace: lb, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: {family}\nendpoints: {endpoints}\nports: [{{name: tcp, port: 8080}}]\n"
    )
}

/// Service lb/web as a cluster makes a dual-stack Service: an IPv4 slice
/// (10.1.0.1, 10.1.0.2) and an IPv6 slice (fd00::1), all ready.
fn dual_stack_web() -> Vec<String> {
    vec![
        service("web"),
        slice(
            "web",
            "web-ipv4",
            "[{addresses: [10.1.0.1]}, {addresses: [10.1.0.2]}]",
        ),
        slice("web", "web-ipv6", "[{addresses: [\"fd00::1\"]}]"),
    ]
}

fn compile(docs: &[String]) -> Resolution {
    let text = docs.join("---\n");
    match load_str("test.yaml", &text) {
        Ok(resources) => super::tests::checked(resolve(&resources, 1)),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn with(base: &[&str], more: Vec<String>) -> Vec<String> {
    base.iter().map(|d| (*d).to_owned()).chain(more).collect()
}

fn listener<'a>(res: &'a Resolution, name: &str) -> &'a Listener {
    res.snapshot
        .find_listener(name)
        .unwrap_or_else(|| panic!("no listener {name}; diagnostics: {:#?}", res.diagnostics))
}

/// `(endpoint, effective weight)` of each backend.
fn weights(l: &Listener) -> Vec<(String, f64)> {
    l.backends()
        .iter()
        .map(|b| (b.endpoint.to_string(), b.effective_weight))
        .collect()
}

fn share(l: &Listener, owner: Slot) -> f64 {
    l.slots().iter().filter(|&s| s == owner).count() as f64 / l.slots().len() as f64
}

#[track_caller]
fn assert_share(l: &Listener, owner: Slot, expected: f64) {
    let got = share(l, owner);
    assert!(
        (got - expected).abs() * SLOT_TABLE_SIZE as f64 <= 2.0,
        "{owner:?}: share {got}, expected {expected}"
    );
}

fn gateway_status(res: &Resolution) -> &GatewayStatus {
    let found = res
        .statuses
        .iter()
        .find(|s| s.kind == "Gateway" && s.metadata.name == "edge");
    match found.map(|s| &s.status) {
        Some(Status::Gateway(status)) => status,
        other => panic!("no Gateway lb/edge status: {other:?}"),
    }
}

fn route_parents(res: &Resolution) -> &[RouteParentStatus] {
    let found = res
        .statuses
        .iter()
        .find(|s| s.kind == "TCPRoute" && s.metadata.name == "r");
    match found.map(|s| &s.status) {
        Some(Status::Route(status)) => &status.parents,
        other => panic!("no TCPRoute lb/r status: {other:?}"),
    }
}

#[track_caller]
fn condition<'a>(conditions: &'a [Condition], condition_type: &str) -> &'a Condition {
    crate::status::condition(conditions, condition_type)
        .unwrap_or_else(|| panic!("no {condition_type} in {conditions:#?}"))
}

#[track_caller]
fn assert_condition(conditions: &[Condition], condition_type: &str, status: bool, reason: &str) {
    let c = condition(conditions, condition_type);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::from_bool(status), reason),
        "{c:#?}"
    );
}

fn vips(res: &Resolution) -> Vec<String> {
    res.snapshot
        .listeners()
        .iter()
        .map(|l| l.vip().to_string())
        .collect()
}

fn dns(res: &Resolution) -> Vec<(RecordType, String)> {
    res.snapshot
        .dns()
        .iter()
        .map(|r| (r.record_type, r.value.clone()))
        .collect()
}

// ------------------------------------------------------------- backends

#[test]
fn an_ipv4_listener_spreads_a_dual_stack_services_weight_over_its_ipv4_endpoints_only() {
    let res = compile(&with(
        &[CLASS, &edge(), &route("[{name: web, port: 80}]")],
        dual_stack_web(),
    ));
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(
        weights(tcp),
        [("10.1.0.1:8080".into(), 0.5), ("10.1.0.2:8080".into(), 0.5)]
    );
    assert_share(tcp, Slot::Backend(0), 0.5);
    assert_share(tcp, Slot::Backend(1), 0.5);
    assert_share(tcp, Slot::Unavailable, 0.0);
    // Every dual-stack Service looks like this: nothing to report.
    let conditions = &route_parents(&res)[0].conditions;
    assert!(
        crate::status::condition(conditions, "Degraded").is_none(),
        "{conditions:#?}"
    );
}

#[test]
fn a_backend_ref_with_no_endpoint_of_the_listeners_family_keeps_its_share_unavailable() {
    // web has IPv4 endpoints; v6 only IPv6 ones: on the IPv4 VIP, v6's half
    // of the traffic is refused, exactly as if v6 had no endpoints at all,
    // and never moved to web.
    let refs = "[{name: web, port: 80}, {name: v6, port: 80}]";
    let web = [
        service("web"),
        slice("web", "web-ipv4", "[{addresses: [10.1.0.1]}]"),
    ];
    let v6_only = with(
        &[CLASS, &edge(), &route(refs), &web[0], &web[1]],
        vec![
            service("v6"),
            slice("v6", "v6-ipv6", "[{addresses: [\"fd00::2\"]}]"),
        ],
    );
    let res = compile(&v6_only);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(weights(tcp), [("10.1.0.1:8080".into(), 1.0)]);
    assert_share(tcp, Slot::Backend(0), 0.5);
    assert_share(tcp, Slot::Unavailable, 0.5);

    let empty = with(
        &[CLASS, &edge(), &route(refs), &web[0], &web[1]],
        vec![service("v6"), slice("v6", "v6-ipv6", "[]")],
    );
    let without_endpoints = compile(&empty);
    assert_eq!(
        tcp.slots(),
        listener(&without_endpoints, "lb/edge/tcp").slots(),
        "the same slots as a backendRef without endpoints"
    );
}

#[test]
fn a_backend_ref_without_endpoints_of_the_family_says_so_on_the_route_parent() {
    let res = compile(&with(
        &[CLASS, &edge(), &route("[{name: v6, port: 80}]")],
        vec![
            service("v6"),
            slice("v6", "v6-ipv6", "[{addresses: [\"fd00::2\"]}]"),
        ],
    ));
    let parents = route_parents(&res);
    assert_eq!(parents.len(), 1);
    let conditions = &parents[0].conditions;
    // The reference resolves: a Service without endpoints is a valid
    // backendRef in the Gateway API, only one that refuses traffic.
    assert_condition(conditions, "Accepted", true, "Accepted");
    assert_condition(conditions, "ResolvedRefs", true, "ResolvedRefs");
    assert_condition(conditions, "Degraded", true, "NoEndpointsOfFamily");
    let message = &condition(conditions, "Degraded").message;
    assert!(
        message.contains("Service lb/v6") && message.contains("IPv4") && message.contains("IPv6"),
        "{message}"
    );
    let tcp = listener(&res, "lb/edge/tcp");
    assert!(tcp.backends().is_empty());
    assert_share(tcp, Slot::Unavailable, 1.0);
}

#[test]
fn terminating_endpoints_are_a_fallback_within_their_family() {
    // kube-proxy picks endpoints per family: the IPv4 ones are all serving
    // and terminating, so the IPv4 VIP drains to them, whatever the ready
    // IPv6 ones do.
    let res = compile(&with(
        &[CLASS, &edge(), &route("[{name: web, port: 80}]")],
        vec![
            service("web"),
            slice(
                "web",
                "web-ipv4",
                "[{addresses: [10.1.0.1], conditions: {ready: false, serving: true, terminating: true}}]",
            ),
            slice("web", "web-ipv6", "[{addresses: [\"fd00::1\"]}]"),
        ],
    ));
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(weights(tcp), [("10.1.0.1:8080".into(), 1.0)]);
    assert!(res.snapshot.is_terminating(&tcp.backends()[0].endpoint));
}

#[test]
fn endpoint_selector_pods_give_an_ipv4_listener_their_ipv4_addresses() {
    let docs = with(
        &[
            CLASS,
            &edge(),
            &route("[{group: switchyard.io, kind: EndpointSelector, name: web, port: 80}]"),
        ],
        vec![
            "apiVersion: switchyard.io/v1alpha1\nkind: EndpointSelector\n\
             metadata: {name: web, namespace: lb}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
             ports: [{name: tcp, port: 80, targetPort: 8080}]\n"
                .to_owned(),
            pod("a", &["10.1.0.1", "fd00::1"]),
            pod("b", &["fd00::2"]),
        ],
    );
    let res = compile(&docs);
    assert_eq!(
        weights(listener(&res, "lb/edge/tcp")),
        [("10.1.0.1:8080".into(), 1.0)]
    );
}

/// A ready Pod lb/`name` labelled app=web with `ips`.
fn pod(name: &str, ips: &[&str]) -> String {
    let ips: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: lb, labels: {{app: web}}}}\n\
         status:\n  phase: Running\n  podIPs: [{}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
        ips.join(", ")
    )
}

#[test]
fn service_import_slices_of_the_other_family_are_not_served_on_an_ipv4_listener() {
    let exported = |cluster: &str, family: &str, address: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: store-{cluster}\n  namespace: lb\n  labels:\n    \
             multicluster.kubernetes.io/service-name: store\n\
             addressType: {family}\nendpoints: [{{addresses: [\"{address}\"]}}]\n\
             ports: [{{name: tcp, port: 8443}}]\n"
        )
    };
    let docs = with(
        &[
            CLASS,
            &edge(),
            &route("[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 80}]"),
        ],
        vec![
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
             metadata: {name: store, namespace: lb}\nspec:\n  type: ClusterSetIP\n  \
             ports: [{name: tcp, port: 80}]\n"
                .to_owned(),
            exported("east", "IPv4", "10.2.0.1"),
            exported("west", "IPv6", "fd00::9"),
        ],
    );
    let res = compile(&docs);
    assert_eq!(
        weights(listener(&res, "lb/edge/tcp")),
        [("10.2.0.1:8443".into(), 1.0)]
    );
}

#[test]
fn a_single_stack_ipv6_route_serves_nothing_on_an_ipv4_address_and_says_why() {
    // As a SingleStack IPv6 Service has no IPv4 ClusterIP: the IPv4 VIP
    // has none of the endpoints the route keeps.
    let policy = "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
                  metadata: {name: p, namespace: lb}\nspec:\n  \
                  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: r}]\n  \
                  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n";
    let mut docs = with(
        &[CLASS, &edge(), &route("[{name: web, port: 80}]"), policy],
        dual_stack_web(),
    );
    let res = compile(&docs);
    let tcp = listener(&res, "lb/edge/tcp");
    assert!(tcp.backends().is_empty());
    assert_share(tcp, Slot::Unavailable, 1.0);
    let conditions = &route_parents(&res)[0].conditions;
    assert_condition(conditions, "Degraded", true, "NoEndpointsOfFamily");
    assert!(
        condition(conditions, "Degraded")
            .message
            .contains("SingleStack"),
        "{conditions:#?}"
    );

    docs[3] = policy.replace("[IPv6]", "[IPv4]");
    let res = compile(&docs);
    assert_eq!(
        weights(listener(&res, "lb/edge/tcp")),
        [("10.1.0.1:8080".into(), 0.5), ("10.1.0.2:8080".into(), 0.5)]
    );
}

// ------------------------------------------------------------ addresses

#[test]
fn a_dual_stack_gateway_is_bound_to_both_addresses_each_with_its_familys_endpoints() {
    let res = compile(&with(
        &[
            CLASS,
            &gateway("[{value: \"2001:db8::1\"}, {value: 10.0.0.1}]"),
            &route("[{name: web, port: 80}]"),
        ],
        dual_stack_web(),
    ));
    let mut served = vips(&res);
    served.sort();
    assert_eq!(served, ["10.0.0.1:80", "[2001:db8::1]:80"]);
    let by_vip = |vip: &str| {
        res.snapshot
            .listeners()
            .iter()
            .find(|l| l.vip().to_string() == vip)
            .unwrap_or_else(|| panic!("no listener on {vip}"))
    };
    assert_eq!(
        weights(by_vip("10.0.0.1:80")),
        [("10.1.0.1:8080".into(), 0.5), ("10.1.0.2:8080".into(), 0.5)]
    );
    assert_eq!(
        weights(by_vip("[2001:db8::1]:80")),
        [("[fd00::1]:8080".into(), 1.0)]
    );
    let status = gateway_status(&res);
    let mut addresses: Vec<&str> = status.addresses.iter().map(|a| a.value.as_str()).collect();
    addresses.sort();
    assert_eq!(addresses, ["10.0.0.1", "2001:db8::1"]);
    assert_condition(&status.conditions, "Accepted", true, "Accepted");
    assert_condition(&status.conditions, "Programmed", true, "Programmed");
    for l in &status.listeners {
        assert_condition(&l.conditions, "Programmed", true, "Programmed");
    }
    let mut records = dns(&res);
    records.sort();
    assert_eq!(
        records,
        [
            (RecordType::A, "10.0.0.1".to_owned()),
            (RecordType::AAAA, "2001:db8::1".to_owned())
        ]
    );
}

#[test]
fn an_ipv6_only_gateway_is_served_on_its_address_with_an_aaaa_record() {
    let res = compile(&with(
        &[
            CLASS,
            &gateway("[{value: \"2001:db8::1\"}]"),
            &route("[{name: web, port: 80}]"),
        ],
        dual_stack_web(),
    ));
    assert_eq!(vips(&res), ["[2001:db8::1]:80"]);
    assert_eq!(dns(&res), [(RecordType::AAAA, "2001:db8::1".to_owned())]);
    let status = gateway_status(&res);
    assert_condition(&status.conditions, "Programmed", true, "Programmed");
    assert_condition(
        &status.listeners[0].conditions,
        "Programmed",
        true,
        "Programmed",
    );
}

#[test]
fn an_ipv6_address_from_a_pool_is_assigned_and_served() {
    let pool = "apiVersion: switchyard.io/v1alpha1\nkind: AddressPool\nmetadata: {name: vips}\n\
                spec:\n  cidrs: [198.18.100.254/31, 2001:db8::/126]\n  avoidBuggyIPs: true\n";
    let class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sy}\n\
                 spec:\n  controllerName: switchyard.io/gateway-controller\n  parametersRef:\n    \
                 group: switchyard.io\n    kind: GatewayClassConfig\n    name: sy\n---\n\
                 apiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\nmetadata: {name: sy}\n\
                 spec: {type: ClusterIP, addressPool: vips}\n";
    let two = gateway("[{type: IPAddress}, {type: IPAddress}]").replace(
        "namespace: lb}",
        "namespace: lb, creationTimestamp: \"2024-05-01T12:00:00Z\"}",
    );
    let later = gateway("[]").replace("name: edge", "name: later");
    let res = compile(&[pool.to_owned(), class.to_owned(), two, later]);
    // .255 is buggy: the second address is the IPv6 CIDR's first; the
    // younger Gateway gets the next one.
    let mut served = vips(&res);
    served.sort();
    assert_eq!(
        served,
        ["198.18.100.254:80", "[2001:db8::1]:80", "[2001:db8::]:80"]
    );
    let status = gateway_status(&res);
    let addresses: Vec<&str> = status.addresses.iter().map(|a| a.value.as_str()).collect();
    assert_eq!(addresses, ["198.18.100.254", "2001:db8::"]);
    assert_condition(&status.conditions, "Programmed", true, "Programmed");
    assert!(dns(&res).contains(&(RecordType::AAAA, "2001:db8::".to_owned())));
}

#[test]
fn node_ports_are_served_on_the_node_addresses_of_both_families() {
    let class = |nodes: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sy}}\n\
             spec:\n  controllerName: switchyard.io/gateway-controller\n  parametersRef:\n    \
             group: switchyard.io\n    kind: GatewayClassConfig\n    name: np\n---\n\
             apiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\nmetadata: {{name: np}}\n\
             spec: {{type: NodePort, nodeAddresses: {nodes}, nodePortRange: 30000-30009}}\n"
        )
    };
    let res = compile(&[class("[198.18.1.1, \"2001:db8::1\"]"), gateway("[]")]);
    let mut served = vips(&res);
    served.sort();
    assert_eq!(served, ["198.18.1.1:30000", "[2001:db8::1]:30000"]);
    let status = gateway_status(&res);
    assert_condition(&status.conditions, "Programmed", true, "Programmed");

    let res = compile(&[class("[\"2001:db8::1\"]"), gateway("[]")]);
    assert_eq!(vips(&res), ["[2001:db8::1]:30000"]);
    assert_condition(
        &gateway_status(&res).conditions,
        "Programmed",
        true,
        "Programmed",
    );
}
