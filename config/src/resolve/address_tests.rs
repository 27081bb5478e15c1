//! Address pools, GatewayClass behaviours and DNS records, one rule per
//! test, each on the smallest YAML that shows it.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::dns::{DnsRecord, RecordType};
use crate::load::load_str;
use crate::status::{Condition, ConditionStatus, GatewayStatus};

fn pool(name: &str, cidrs: &str, extra: &str) -> String {
    format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: AddressPool\nmetadata: {{name: {name}}}\n\
         spec:\n  cidrs: {cidrs}\n{extra}"
    )
}

/// GatewayClass `name` with a GatewayClassConfig of the same name.
fn class(name: &str, config_spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\n\
         spec:\n  controllerName: switchyard.io/gateway-controller\n  parametersRef:\n    \
         group: switchyard.io\n    kind: GatewayClassConfig\n    name: {name}\n---\n\
         apiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\nmetadata: {{name: {name}}}\n\
         spec: {config_spec}\n"
    )
}

/// Gateway `ns/name` of `class`, created `minute` minutes after 12:00 when
/// given, with a TCP listener on 80 and a UDP listener on 53.
fn gateway(ns: &str, name: &str, class: &str, addresses: &str, minute: Option<u32>) -> String {
    let created = minute
        .map(|m| format!(", creationTimestamp: \"2024-05-01T12:{m:02}:00Z\""))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: {name}, namespace: {ns}{created}}}\n\
         spec:\n  gatewayClassName: {class}\n  addresses: {addresses}\n  listeners:\n  \
         - {{name: tcp, port: 80, protocol: TCP}}\n  - {{name: udp, port: 53, protocol: UDP}}\n"
    )
}

/// A TCPRoute on `ns/gateway` to Service `web` (80 -> 8080) with the
/// given endpoints, ready unless listed in `not_ready`.
fn backend(ns: &str, gateway: &str, ready: &[&str], not_ready: &[&str]) -> String {
    let endpoints: Vec<String> = ready
        .iter()
        .map(|a| format!("{{addresses: [\"{a}\"]}}"))
        .chain(
            not_ready
                .iter()
                .map(|a| format!("{{addresses: [\"{a}\"], conditions: {{ready: false}}}}")),
        )
        .collect();
    let family = if ready.iter().chain(not_ready).any(|a| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{name: {gateway}}}]\n  rules:\n  - backendRefs: [{{name: web, port: 80}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec:\n  ports: [{{port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: {ns}, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: {family}\nendpoints: [{}]\nports: [{{port: 8080}}]\n",
        endpoints.join(", ")
    )
}

fn compile_with(docs: &[&str], options: &Options) -> Resolution {
    let text = docs.join("---\n");
    match load_str("test.yaml", &text) {
        Ok(resources) => super::tests::checked(resolve_with(&resources, 1, options)),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn compile(docs: &[&str]) -> Resolution {
    compile_with(docs, &Options::default())
}

fn load_error(docs: &[&str]) -> String {
    match load_str("test.yaml", &docs.join("---\n")) {
        Ok(_) => panic!("loaded:\n{}", docs.join("---\n")),
        Err(e) => e.to_string(),
    }
}

/// The VIPs (address:port of the TCP listener) of Gateway `ns/name`.
/// `status.addresses` of a Gateway, as `(type, value)`.
fn status_addresses(res: &Resolution, ns: &str, name: &str) -> Vec<(String, String)> {
    let resource = res
        .statuses
        .iter()
        .find(|r| r.kind == "Gateway" && r.metadata.namespace == ns && r.metadata.name == name)
        .unwrap_or_else(|| panic!("no status for Gateway {ns}/{name}"));
    let crate::status::Status::Gateway(status) = &resource.status else {
        unreachable!("a Gateway's status")
    };
    status
        .addresses
        .iter()
        .map(|a| (a.address_type.clone(), a.value.clone()))
        .collect()
}

fn tcp_endpoints(res: &Resolution, ns: &str, name: &str) -> Vec<String> {
    res.snapshot
        .listeners()
        .iter()
        .filter(|l| l.name().to_string() == format!("{ns}/{name}/tcp"))
        .map(|l| l.vip().to_string())
        .collect()
}

fn reasons(res: &Resolution) -> Vec<(String, Reason)> {
    res.diagnostics
        .iter()
        .map(|d| (d.resource(), d.reason))
        .collect()
}

fn records(res: &Resolution) -> Vec<(String, RecordType, String)> {
    res.snapshot
        .dns()
        .iter()
        .map(|r| (r.name.clone(), r.record_type, r.value.clone()))
        .collect()
}

fn a(name: &str, value: &str) -> (String, RecordType, String) {
    let ip: IpAddr = value.parse().unwrap();
    let kind = if ip.is_ipv4() {
        RecordType::A
    } else {
        RecordType::AAAA
    };
    (name.to_owned(), kind, value.to_owned())
}

const CLUSTER_IP: &str = "{type: ClusterIP, addressPool: vips}";

// ------------------------------------------------------------- allocation

#[test]
fn gateway_without_addresses_gets_the_lowest_usable_pool_address() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class("sy", CLUSTER_IP),
        &gateway("lb", "edge", "sy", "[]", None),
    ]);
    // .0 is the /24's network address.
    assert_eq!(tcp_endpoints(&res, "lb", "edge"), ["198.18.100.1:80"]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
}

#[test]
fn ip_address_without_value_asks_the_pool_and_static_values_are_kept() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class("sy", CLUSTER_IP),
        &gateway(
            "lb",
            "edge",
            "sy",
            "[{type: IPAddress}, {value: 198.18.100.1}]",
            None,
        ),
    ]);
    assert_eq!(
        tcp_endpoints(&res, "lb", "edge"),
        ["198.18.100.1:80", "198.18.100.2:80"]
    );
}

#[test]
fn pools_are_walked_in_cidr_order_and_skip_buggy_addresses_when_asked() {
    let res = compile(&[
        &pool(
            "vips",
            "[198.18.100.254/31, 2001:db8::/126]",
            "  avoidBuggyIPs: true\n",
        ),
        &class("sy", CLUSTER_IP),
        &gateway(
            "lb",
            "a",
            "sy",
            "[{type: IPAddress}, {type: IPAddress}]",
            None,
        ),
    ]);
    // .255 is skipped as buggy; the IPv6 CIDR supplies the second address.
    assert_eq!(
        tcp_endpoints(&res, "lb", "a"),
        ["198.18.100.254:80", "[2001:db8::]:80"]
    );
    assert_eq!(reasons(&res), []);
}

#[test]
fn static_requests_are_placed_before_any_pool_allocation() {
    // The younger Gateway's static .1 is served although the older one
    // asks the pool first: pools only hand out what no one asked for.
    let res = compile(&[
        &pool("vips", "[198.18.100.0/30]", ""),
        &class("sy", CLUSTER_IP),
        &gateway("lb", "old", "sy", "[]", Some(1)),
        &gateway("lb", "young", "sy", "[{value: 198.18.100.1}]", Some(2)),
    ]);
    assert_eq!(tcp_endpoints(&res, "lb", "young"), ["198.18.100.1:80"]);
    assert_eq!(tcp_endpoints(&res, "lb", "old"), ["198.18.100.2:80"]);
}

#[test]
fn older_gateways_are_allocated_first_whatever_their_names() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class("sy", CLUSTER_IP),
        &gateway("a", "first-by-name", "sy", "[]", Some(9)),
        &gateway("z", "oldest", "sy", "[]", Some(1)),
        &gateway("m", "no-timestamp", "sy", "[]", None),
    ]);
    assert_eq!(tcp_endpoints(&res, "z", "oldest"), ["198.18.100.1:80"]);
    assert_eq!(
        tcp_endpoints(&res, "a", "first-by-name"),
        ["198.18.100.2:80"]
    );
    assert_eq!(
        tcp_endpoints(&res, "m", "no-timestamp"),
        ["198.18.100.3:80"]
    );
}

#[test]
fn exhausted_pool_is_address_not_assigned() {
    // A /30 has two usable addresses.
    let res = compile(&[
        &pool("vips", "[198.18.100.0/30]", ""),
        &class("sy", CLUSTER_IP),
        &gateway("lb", "a", "sy", "[]", Some(1)),
        &gateway("lb", "b", "sy", "[]", Some(2)),
        &gateway("lb", "c", "sy", "[]", Some(3)),
    ]);
    assert_eq!(tcp_endpoints(&res, "lb", "a"), ["198.18.100.1:80"]);
    assert_eq!(tcp_endpoints(&res, "lb", "b"), ["198.18.100.2:80"]);
    assert!(tcp_endpoints(&res, "lb", "c").is_empty());
    assert_eq!(
        reasons(&res),
        [("Gateway lb/c".to_owned(), Reason::AddressNotAssigned)]
    );
    assert_eq!(res.diagnostics[0].condition, ConditionType::Programmed);
    assert!(res.diagnostics[0].message.contains("exhausted"));
}

#[test]
fn gateway_without_address_of_a_class_without_pool_is_address_not_assigned() {
    let res = compile(&[
        &class("sy", "{type: ClusterIP}"),
        &gateway("lb", "edge", "sy", "[]", None),
    ]);
    assert!(res.snapshot.listeners().is_empty());
    assert_eq!(
        reasons(&res),
        [("Gateway lb/edge".to_owned(), Reason::AddressNotAssigned)]
    );
}

#[test]
fn static_address_outside_every_pool_is_fine() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class("sy", CLUSTER_IP),
        &gateway("lb", "edge", "sy", "[{value: 198.18.7.7}]", None),
    ]);
    assert_eq!(tcp_endpoints(&res, "lb", "edge"), ["198.18.7.7:80"]);
}

#[test]
fn unusable_static_addresses_are_address_not_usable() {
    for (address, why) in [
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("224.0.0.5", "multicast"),
        ("169.254.1.1", "link-local"),
        ("255.255.255.255", "broadcast"),
        ("\"::\"", "unspecified"),
        ("\"::1\"", "loopback"),
        ("\"ff02::1\"", "multicast"),
        ("\"fe80::1\"", "link-local"),
        ("198.18.100.0", "network or broadcast"),
        ("198.18.100.255", "network or broadcast"),
    ] {
        let res = compile(&[
            &pool("vips", "[198.18.100.0/24]", ""),
            &class("sy", CLUSTER_IP),
            &gateway("lb", "edge", "sy", &format!("[{{value: {address}}}]"), None),
        ]);
        assert!(res.snapshot.listeners().is_empty(), "{address}");
        assert_eq!(
            reasons(&res),
            [("Gateway lb/edge".to_owned(), Reason::AddressNotUsable)],
            "{address}"
        );
        assert!(
            res.diagnostics[0].message.contains(why),
            "{address}: {}",
            res.diagnostics[0].message
        );
    }
}

#[test]
fn node_address_is_not_usable_as_a_vip() {
    let res = compile(&[
        &class("np", "{type: NodePort, nodeAddresses: [198.18.1.1]}"),
        &gateway("lb", "nodes", "np", "[]", None),
        &class("sy", "{type: ClusterIP}"),
        &gateway("lb", "edge", "sy", "[{value: 198.18.1.1}]", None),
    ]);
    assert_eq!(
        reasons(&res),
        [("Gateway lb/edge".to_owned(), Reason::AddressNotUsable)]
    );
    assert!(res.diagnostics[0].message.contains("node address"));
}

/// Allocation depends on the objects, never on the order of the documents.
fn shuffled_docs() -> Vec<String> {
    vec![
        pool("vips", "[198.18.100.0/29]", ""),
        class("sy", CLUSTER_IP),
        class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30009}",
        ),
        gateway("lb", "a", "sy", "[]", Some(5)),
        gateway("lb", "b", "sy", "[{type: IPAddress}]", None),
        gateway("lb", "c", "sy", "[{value: 198.18.100.3}]", Some(7)),
        gateway("x", "d", "sy", "[]", Some(1)),
        gateway("x", "e", "np", "[]", Some(2)),
        gateway("x", "f", "np", "[]", None),
        gateway("y", "g", "sy", "[]", None),
        gateway("y", "h", "sy", "[]", Some(3)),
    ]
}

fn fingerprint(res: &Resolution) -> (Vec<String>, Vec<(String, Reason)>, Vec<DnsRecord>) {
    let listeners = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l.name(),
                l.protocol(),
                l.vip(),
                l.listener_port()
            )
        })
        .collect();
    (listeners, reasons(res), res.snapshot.dns().to_vec())
}

proptest! {
    #[test]
    fn allocation_does_not_depend_on_document_order(
        order in Just((0..shuffled_docs().len()).collect::<Vec<usize>>()).prop_shuffle()
    ) {
        let docs = shuffled_docs();
        let baseline: Vec<&str> = docs.iter().map(String::as_str).collect();
        let shuffled: Vec<&str> = order.iter().map(|&i| docs[i].as_str()).collect();
        prop_assert_eq!(fingerprint(&compile(&baseline)), fingerprint(&compile(&shuffled)));
    }
}

#[test]
fn shuffled_example_allocates_as_documented() {
    let docs = shuffled_docs();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let res = compile(&docs);
    // Oldest first: x/d (12:01), y/h (12:03), lb/a (12:05); lb/c's static
    // .3 is placed before; then those without timestamp by name: lb/b, y/g.
    // A /29 has .1-.6 usable.
    assert_eq!(tcp_endpoints(&res, "x", "d"), ["198.18.100.1:80"]);
    assert_eq!(tcp_endpoints(&res, "y", "h"), ["198.18.100.2:80"]);
    assert_eq!(tcp_endpoints(&res, "lb", "c"), ["198.18.100.3:80"]);
    assert_eq!(tcp_endpoints(&res, "lb", "a"), ["198.18.100.4:80"]);
    assert_eq!(tcp_endpoints(&res, "lb", "b"), ["198.18.100.5:80"]);
    assert_eq!(tcp_endpoints(&res, "y", "g"), ["198.18.100.6:80"]);
}

// ------------------------------------------------------------- parameters

#[test]
fn parameters_ref_to_a_missing_config_is_invalid_parameters_and_not_served() {
    let text =
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sy}\n\
        spec:\n  controllerName: switchyard.io/gateway-controller\n  parametersRef: \
        {group: switchyard.io, kind: GatewayClassConfig, name: nope}\n";
    let res = compile(&[
        text,
        &gateway("lb", "edge", "sy", "[{value: 198.18.100.1}]", None),
    ]);
    assert!(res.snapshot.listeners().is_empty());
    assert_eq!(
        reasons(&res),
        [("GatewayClass sy".to_owned(), Reason::InvalidParameters)]
    );
    assert_eq!(res.diagnostics[0].condition, ConditionType::Accepted);
}

#[test]
fn parameters_ref_of_a_foreign_kind_is_invalid_parameters() {
    let text =
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sy}\n\
        spec:\n  controllerName: switchyard.io/gateway-controller\n  parametersRef: \
        {group: \"\", kind: ConfigMap, name: sy, namespace: default}\n";
    let res = compile(&[
        text,
        &gateway("lb", "edge", "sy", "[{value: 198.18.100.1}]", None),
    ]);
    assert!(res.snapshot.listeners().is_empty());
    assert_eq!(
        reasons(&res),
        [("GatewayClass sy".to_owned(), Reason::InvalidParameters)]
    );
}

#[test]
fn config_naming_a_missing_pool_is_invalid_parameters() {
    let res = compile(&[
        &class("sy", CLUSTER_IP),
        &gateway("lb", "edge", "sy", "[]", None),
    ]);
    assert_eq!(
        reasons(&res),
        [("GatewayClass sy".to_owned(), Reason::InvalidParameters)]
    );
    assert!(res.diagnostics[0].message.contains("vips"));
}

#[test]
fn schema_rules_of_the_new_kinds_fail_the_load_at_their_line() {
    let err = load_error(&[&pool("p", "[198.18.100.1/24]", "")]);
    assert!(err.starts_with("test.yaml:5:"), "{err}");
    assert!(err.contains("host bits"), "{err}");
    let err = load_error(&[&pool("p", "[198.18.100.0/24, 198.18.100.128/25]", "")]);
    assert!(err.contains("overlaps"), "{err}");
    let err = load_error(&[&pool("p", "[224.0.0.0/4]", "")]);
    assert!(err.contains("multicast"), "{err}");
    let err = load_error(&[&class("np", "{type: NodePort}")]);
    assert!(err.contains("nodeAddresses: required"), "{err}");
    let err = load_error(&[&class("lbc", "{type: LoadBalancer, addressPool: p}")]);
    assert!(
        err.contains("allocateLoadBalancerNodePorts: false"),
        "{err}"
    );
    let err = load_error(&[&class(
        "np",
        "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 3-2}",
    )]);
    assert!(err.contains("FIRST-LAST"), "{err}");
    let err = load_error(&[&class("h", "{type: Headless, addressPool: p}")]);
    assert!(err.contains("serves no address"), "{err}");
}

// --------------------------------------------------- NodePort, LoadBalancer

#[test]
fn node_port_class_serves_each_listener_on_every_node_address_at_its_node_port() {
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1, 198.18.2.1], nodePortRange: 31000-31999}",
        ),
        &gateway("lb", "a", "np", "[]", Some(1)),
        &gateway("lb", "b", "np", "[]", Some(2)),
    ]);
    let served: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} <- {}",
                l.name(),
                l.protocol(),
                l.vip(),
                l.listener_port()
            )
        })
        .collect();
    // TCP and UDP node ports are numbered separately, as Kubernetes does.
    assert_eq!(
        served,
        [
            "lb/a/tcp TCP 198.18.1.1:31000 <- 80",
            "lb/a/tcp TCP 198.18.2.1:31000 <- 80",
            "lb/a/udp UDP 198.18.1.1:31000 <- 53",
            "lb/a/udp UDP 198.18.2.1:31000 <- 53",
            "lb/b/tcp TCP 198.18.1.1:31001 <- 80",
            "lb/b/tcp TCP 198.18.2.1:31001 <- 80",
            "lb/b/udp UDP 198.18.1.1:31001 <- 53",
            "lb/b/udp UDP 198.18.2.1:31001 <- 53",
        ]
    );
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let status = status_addresses(&res, "lb", "a");
    let status: Vec<&str> = status.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(status, ["198.18.1.1", "198.18.2.1"], "node addresses");
    // No VIP: no A record either.
    assert!(res.snapshot.dns().is_empty());
}

#[test]
fn exhausted_node_port_range_leaves_the_listener_without_node_port() {
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30000}",
        ),
        &gateway("lb", "a", "np", "[]", Some(1)),
        &gateway("lb", "b", "np", "[]", Some(2)),
    ]);
    assert_eq!(res.snapshot.listeners().len(), 2, "lb/a tcp and udp");
    let got: Vec<(String, Option<String>, Reason)> = res
        .diagnostics
        .iter()
        .map(|d| (d.resource(), d.listener.clone(), d.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("Gateway lb/b".to_owned(), None, Reason::AddressNotAssigned),
            (
                "Gateway lb/b".to_owned(),
                Some("tcp".to_owned()),
                Reason::AddressNotAssigned
            ),
            (
                "Gateway lb/b".to_owned(),
                Some("udp".to_owned()),
                Reason::AddressNotAssigned
            ),
        ]
    );
}

fn gateway_status<'a>(res: &'a Resolution, ns: &str, name: &str) -> &'a GatewayStatus {
    let resource = res
        .statuses
        .iter()
        .find(|r| r.kind == "Gateway" && r.metadata.namespace == ns && r.metadata.name == name)
        .unwrap_or_else(|| panic!("no status for Gateway {ns}/{name}"));
    match &resource.status {
        crate::status::Status::Gateway(status) => status,
        other => panic!("not a Gateway status: {other:?}"),
    }
}

/// (status, reason) of the one condition of `condition_type`; panics if
/// there is none or more than one.
#[track_caller]
fn only(conditions: &[Condition], condition_type: &str) -> (ConditionStatus, String) {
    let found: Vec<&Condition> = conditions
        .iter()
        .filter(|c| c.condition_type == condition_type)
        .collect();
    assert_eq!(found.len(), 1, "{condition_type}: {conditions:#?}");
    (found[0].status, found[0].reason.clone())
}

#[test]
fn listener_without_a_node_port_has_one_programmed_condition_saying_address_not_assigned() {
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30000}",
        ),
        &gateway("lb", "a", "np", "[]", Some(1)),
        &gateway("lb", "b", "np", "[]", Some(2)),
    ]);
    for listener in &gateway_status(&res, "lb", "b").listeners {
        assert_eq!(
            only(&listener.conditions, "Programmed"),
            (ConditionStatus::False, "AddressNotAssigned".to_owned()),
            "{listener:#?}"
        );
        assert_eq!(
            only(&listener.conditions, "Accepted"),
            (ConditionStatus::True, "Accepted".to_owned())
        );
    }
    for listener in &gateway_status(&res, "lb", "a").listeners {
        assert_eq!(
            only(&listener.conditions, "Programmed"),
            (ConditionStatus::True, "Programmed".to_owned())
        );
    }
}

#[test]
fn gateway_with_no_served_listener_and_no_address_is_not_programmed() {
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30000}",
        ),
        &gateway("lb", "a", "np", "[]", Some(1)),
        &gateway("lb", "b", "np", "[]", Some(2)),
    ]);
    let starved = gateway_status(&res, "lb", "b");
    assert!(starved.addresses.is_empty(), "{:?}", starved.addresses);
    assert_eq!(
        only(&starved.conditions, "Programmed"),
        (ConditionStatus::False, "AddressNotAssigned".to_owned())
    );
    assert_eq!(
        only(&starved.conditions, "Accepted"),
        (ConditionStatus::True, "Accepted".to_owned())
    );
    let served = gateway_status(&res, "lb", "a");
    assert_eq!(served.addresses.len(), 1);
    assert_eq!(
        only(&served.conditions, "Programmed"),
        (ConditionStatus::True, "Programmed".to_owned())
    );
}

#[test]
fn gateway_with_one_listener_on_a_node_port_is_programmed() {
    // TCP gets the last node port, UDP none: the Gateway is served on the
    // node address, its UDP listener is not.
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30000}",
        ),
        &gateway("lb", "a", "np", "[]", Some(1)).replace(
            "  - {name: udp, port: 53, protocol: UDP}\n",
            "  - {name: tcp2, port: 81, protocol: TCP}\n",
        ),
    ]);
    let status = gateway_status(&res, "lb", "a");
    assert_eq!(
        only(&status.conditions, "Programmed"),
        (ConditionStatus::True, "Programmed".to_owned())
    );
    let programmed: Vec<(String, String)> = status
        .listeners
        .iter()
        .map(|l| (l.name.clone(), only(&l.conditions, "Programmed").1))
        .collect();
    assert_eq!(
        programmed,
        [
            ("tcp".to_owned(), "Programmed".to_owned()),
            ("tcp2".to_owned(), "AddressNotAssigned".to_owned())
        ]
    );
}

#[test]
fn load_balancer_class_serves_a_pool_vip_and_node_ports_unless_turned_off() {
    let with = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class(
            "lbc",
            "{type: LoadBalancer, addressPool: vips, nodeAddresses: [198.18.1.1]}",
        ),
        &gateway("lb", "edge", "lbc", "[]", None),
    ]);
    assert_eq!(
        tcp_endpoints(&with, "lb", "edge"),
        ["198.18.1.1:30000", "198.18.100.1:80"]
    );
    let without = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class(
            "lbc",
            "{type: LoadBalancer, addressPool: vips, allocateLoadBalancerNodePorts: false}",
        ),
        &gateway("lb", "edge", "lbc", "[]", None),
    ]);
    assert_eq!(tcp_endpoints(&without, "lb", "edge"), ["198.18.100.1:80"]);
    let status = |res: &Resolution| -> Vec<String> {
        status_addresses(res, "lb", "edge")
            .iter()
            .map(|(kind, value)| format!("{kind} {value}"))
            .collect()
    };
    assert_eq!(
        status(&with),
        ["IPAddress 198.18.100.1", "IPAddress 198.18.1.1"]
    );
    assert_eq!(status(&without), ["IPAddress 198.18.100.1"]);
}

#[test]
fn load_balancer_gateway_without_address_gets_no_node_ports_either() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/31]", ""),
        &class(
            "lbc",
            "{type: LoadBalancer, addressPool: vips, nodeAddresses: [198.18.1.1]}",
        ),
        &gateway("lb", "a", "lbc", "[]", Some(1)),
        &gateway("lb", "b", "lbc", "[]", Some(2)),
        &gateway("lb", "c", "lbc", "[]", Some(3)),
    ]);
    assert!(tcp_endpoints(&res, "lb", "c").is_empty());
    assert_eq!(
        reasons(&res),
        [("Gateway lb/c".to_owned(), Reason::AddressNotAssigned)]
    );
}

// -------------------------------------------------------------------- DNS

#[test]
fn every_programmed_gateway_has_a_record_per_address() {
    let res = compile(&[
        &pool("vips", "[198.18.100.0/24]", ""),
        &class("sy", CLUSTER_IP),
        &gateway(
            "lb",
            "edge",
            "sy",
            "[{type: IPAddress}, {value: 198.18.200.5}]",
            None,
        ),
        &gateway("lb", "broken", "sy", "[{value: 127.0.0.1}]", None),
    ]);
    assert_eq!(
        records(&res),
        [
            a("edge.lb.gw.cluster.local", "198.18.100.1"),
            a("edge.lb.gw.cluster.local", "198.18.200.5"),
        ]
    );
}

#[test]
fn cluster_domain_is_a_resolver_option() {
    let options = Options {
        cluster_domain: "example.internal".to_owned(),
        ..Options::default()
    };
    let res = compile_with(
        &[
            &class("sy", "{}"),
            &gateway("lb", "edge", "sy", "[{value: 198.18.100.9}]", None),
        ],
        &options,
    );
    assert_eq!(
        records(&res),
        [a("edge.lb.gw.example.internal", "198.18.100.9")]
    );
}

#[test]
fn headless_gateway_has_no_listeners_and_answers_with_ready_endpoints_and_pod_names() {
    let res = compile(&[
        &class("hl", "{type: Headless}"),
        &gateway("db", "pg", "hl", "[]", None),
        &backend(
            "db",
            "pg",
            &["198.18.2.21", "198.18.2.22"],
            &["198.18.2.23"],
        ),
    ]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(
        records(&res),
        [
            a("198-18-2-21.pg.db.gw.cluster.local", "198.18.2.21"),
            a("198-18-2-22.pg.db.gw.cluster.local", "198.18.2.22"),
            a("pg.db.gw.cluster.local", "198.18.2.21"),
            a("pg.db.gw.cluster.local", "198.18.2.22"),
        ]
    );
}

#[test]
fn headless_pod_names_of_ipv6_endpoints_use_dashes_for_colons() {
    let res = compile(&[
        &class("hl", "{type: Headless}"),
        &gateway("db", "pg", "hl", "[]", None),
        &backend("db", "pg", &["2001:db8::21"], &[]),
    ]);
    assert_eq!(
        records(&res),
        [
            a("2001-db8--21.pg.db.gw.cluster.local", "2001:db8::21"),
            a("pg.db.gw.cluster.local", "2001:db8::21"),
        ]
    );
}

#[test]
fn headless_gateway_with_an_address_is_unsupported_address_and_has_no_records() {
    let res = compile(&[
        &class("hl", "{type: Headless}"),
        &gateway("db", "pg", "hl", "[{value: 198.18.100.1}]", None),
        &backend("db", "pg", &["198.18.2.21"], &[]),
    ]);
    assert_eq!(
        reasons(&res),
        [("Gateway db/pg".to_owned(), Reason::UnsupportedAddress)]
    );
    assert!(res.snapshot.dns().is_empty(), "{:?}", res.snapshot.dns());
}

#[test]
fn gateway_whose_name_is_not_a_dns_label_is_served_with_a_warning_and_no_record() {
    let long = format!("edge-{}", "a".repeat(60));
    for name in ["edge.v2", long.as_str()] {
        let res = compile(&[
            &class("sy", "{}"),
            &gateway("lb", name, "sy", "[{value: 198.18.100.9}]", None),
        ]);
        assert_eq!(tcp_endpoints(&res, "lb", name), ["198.18.100.9:80"]);
        assert!(res.snapshot.dns().is_empty(), "{:?}", res.snapshot.dns());
        assert_eq!(
            reasons(&res),
            [(format!("Gateway lb/{name}"), Reason::NoDnsName)],
            "{name}"
        );
        let status = gateway_status(&res, "lb", name);
        assert_eq!(
            only(&status.conditions, "Degraded"),
            (ConditionStatus::True, "NoDnsName".to_owned())
        );
        assert_eq!(
            only(&status.conditions, "Programmed"),
            (ConditionStatus::True, "Programmed".to_owned())
        );
    }
}

#[test]
fn gateway_served_on_node_ports_only_has_no_dns_record() {
    // An A record names an address, not a port: a client of the name
    // would reach the node at the listener's own port, which is not served.
    let res = compile(&[
        &class(
            "np",
            "{type: NodePort, nodeAddresses: [198.18.1.1], nodePortRange: 30000-30010}",
        ),
        &gateway("lb", "edge", "np", "[]", None),
    ]);
    assert_eq!(tcp_endpoints(&res, "lb", "edge"), ["198.18.1.1:30000"]);
    assert!(res.snapshot.dns().is_empty(), "{:?}", res.snapshot.dns());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
}

#[test]
fn external_name_gateway_is_a_cname_to_its_hostname_address() {
    let res = compile(&[
        &class("ext", "{type: ExternalName}"),
        &gateway(
            "lb",
            "db",
            "ext",
            "[{type: Hostname, value: db.example.com}]",
            None,
        ),
    ]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let status = status_addresses(&res, "lb", "db");
    assert_eq!(
        status,
        [("Hostname".to_owned(), "db.example.com".to_owned())]
    );
    assert_eq!(
        records(&res),
        [(
            "db.lb.gw.cluster.local".to_owned(),
            RecordType::CNAME,
            "db.example.com".to_owned()
        )]
    );
}

#[test]
fn external_name_gateway_needs_exactly_one_valid_hostname() {
    for (addresses, reason) in [
        ("[]", Reason::AddressNotAssigned),
        ("[{value: 198.18.100.1}]", Reason::UnsupportedAddress),
        (
            "[{type: Hostname, value: a.example}, {type: Hostname, value: b.example}]",
            Reason::UnsupportedAddress,
        ),
    ] {
        let res = compile(&[
            &class("ext", "{type: ExternalName}"),
            &gateway("lb", "db", "ext", addresses, None),
        ]);
        assert_eq!(
            reasons(&res),
            [("Gateway lb/db".to_owned(), reason)],
            "{addresses}"
        );
        assert!(res.snapshot.dns().is_empty(), "{addresses}");
    }
    // Not a DNS name at all: the CRD's pattern refuses it at load.
    let error = load_error(&[
        &class("ext", "{type: ExternalName}"),
        &gateway(
            "lb",
            "db",
            "ext",
            "[{type: Hostname, value: \"bad_name.example\"}]",
            None,
        ),
    ]);
    assert!(error.contains("bad_name.example"), "{error}");
}

#[test]
fn address_pool_example_resolves_as_its_comments_say() {
    let text = include_str!("../../examples/address-pool.yaml");
    let resources = load_str("address-pool.yaml", text).unwrap();
    let res = super::tests::checked(resolve(&resources, 1));
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let vips: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| l.vip().to_string())
        .collect();
    assert_eq!(vips, ["198.18.100.1:80", "198.18.100.1:53"]);
    assert!(records(&res).contains(&a("edge.demo.gw.cluster.local", "198.18.100.1")));
    assert!(records(&res).contains(&(
        "db.demo.gw.cluster.local".to_owned(),
        RecordType::CNAME,
        "db.example.com".to_owned()
    )));
    assert!(records(&res).contains(&a("198-18-2-21.echo.demo.gw.cluster.local", "198.18.2.21")));
}

/// (address, mode, gateway) of every announcement.
fn announced(res: &Resolution) -> Vec<(String, String, String)> {
    res.snapshot
        .announcements()
        .iter()
        .map(|a| (a.address.to_string(), a.mode.to_string(), a.gateway.clone()))
        .collect()
}

#[test]
fn a_class_that_announces_announces_the_vips_it_serves() {
    let res = compile(&[
        &class("l2", "{type: ClusterIP, announce: L2}"),
        &class("bgp", "{type: ClusterIP, announce: BGP}"),
        &class("quiet", "{type: ClusterIP}"),
        &gateway(
            "lb",
            "a",
            "l2",
            "[{value: 198.18.0.10}, {value: \"2001:db8::10\"}]",
            None,
        ),
        &gateway("lb", "b", "bgp", "[{value: 198.18.0.20}]", None),
        &gateway("lb", "c", "quiet", "[{value: 198.18.0.30}]", None),
        &backend("lb", "a", &["198.18.2.1"], &[]),
    ]);
    // Gateway b has no route: its listeners serve no backend, but a Gateway
    // listener is served (and refuses) without one, so it is announced.
    let got = announced(&res);
    assert!(
        got.contains(&("198.18.0.10".into(), "L2".into(), "lb/a".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("2001:db8::10".into(), "L2".into(), "lb/a".into())),
        "{got:?}"
    );
    assert!(!got.iter().any(|(a, ..)| a == "198.18.0.30"), "{got:?}");
}

#[test]
fn an_unknown_announce_mode_is_refused_with_the_field() {
    let err = load_error(&[&class("x", "{type: ClusterIP, announce: OSPF}")]);
    assert!(err.contains("announce") || err.contains("OSPF"), "{err}");
}

#[test]
fn a_gateway_that_serves_nowhere_is_not_announced() {
    // The second Gateway asks for the first's address: it is refused,
    // serves nothing, and nothing of it is announced.
    let res = compile(&[
        &class("l2", "{type: ClusterIP, announce: L2}"),
        &gateway("lb", "a", "l2", "[{value: 198.18.0.10}]", Some(1)),
        &gateway("lb", "b", "l2", "[{value: 198.18.0.10}]", Some(2)),
    ]);
    let got = announced(&res);
    assert!(
        got.iter().all(|(_, _, g)| g != "lb/b") || got.len() == 1,
        "{got:?}"
    );
    assert!(got.len() <= 1, "{got:?}");
}
