//! Resolution rules, one test per rule, each on the smallest YAML that
//! shows it.

use std::path::{Path, PathBuf};

use super::*;
use crate::load::load_str;
use crate::resources::GatewayClass;
use crate::snapshot::Protocol;
use crate::snapshot::{Slot, SLOT_TABLE_SIZE};

const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.io/gateway-controller}
";

fn gateway(ns: &str, name: &str, addresses: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  gatewayClassName: sy\n  addresses: {addresses}\n  listeners: {listeners}\n"
    )
}

/// Gateway lb/edge on 10.0.0.1 with `tcp` (TCP 80) and `udp` (UDP 53).
fn edge() -> String {
    gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: tcp, port: 80, protocol: TCP}, {name: udp, port: 53, protocol: UDP}]",
    )
}

fn route(kind: &str, ns: &str, name: &str, parents: &str, backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  parentRefs: {parents}\n  rules:\n  - backendRefs: {backends}\n"
    )
}

fn tcp_route(ns: &str, name: &str, parents: &str, backends: &str) -> String {
    route("TCPRoute", ns, name, parents, backends)
}

fn service(ns: &str, name: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: {ports}\n"
    )
}

fn slice(ns: &str, name: &str, service: &str, endpoints: &str, ports: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nendpoints: {endpoints}\nports: {ports}\n"
    )
}

/// Service `ns/name` with port 80 -> 8080 named `tcp`, and one slice with
/// the given ready addresses.
fn web(ns: &str, name: &str, addresses: &[&str]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{addresses: [\"{a}\"]}}"))
        .collect();
    [
        service(ns, name, "[{name: tcp, port: 80, targetPort: 8080}]"),
        slice(
            ns,
            &format!("{name}-1"),
            name,
            &format!("[{}]", endpoints.join(", ")),
            "[{name: tcp, port: 8080}]",
        ),
    ]
    .join("---\n")
}

/// The assertion every resolution in these tests passes through: no
/// condition list repeats a type.
#[track_caller]
pub(super) fn checked(res: Resolution) -> Resolution {
    let repeated = res.repeated_condition_types();
    assert!(
        repeated.is_empty(),
        "repeated condition types: {repeated:#?}"
    );
    res
}

fn compile(docs: &[&str]) -> Resolution {
    let text = docs.join("---\n");
    match load_str("test.yaml", &text) {
        Ok(resources) => checked(resolve(&resources, 7)),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn listener<'a>(res: &'a Resolution, name: &str) -> &'a Listener {
    res.snapshot
        .find_listener(name)
        .unwrap_or_else(|| panic!("no listener {name}; diagnostics: {:#?}", res.diagnostics))
}

/// The backends taking new flows (a draining one has weight 0).
fn endpoints(l: &Listener) -> Vec<String> {
    l.backends()
        .iter()
        .filter(|b| b.effective_weight > 0.0)
        .map(|b| b.endpoint.to_string())
        .collect()
}

fn reasons(res: &Resolution) -> Vec<(String, Reason)> {
    res.diagnostics
        .iter()
        .map(|d| (d.resource(), d.reason))
        .collect()
}

fn has(res: &Resolution, resource: &str, reason: Reason) -> bool {
    reasons(res)
        .iter()
        .any(|(r, why)| r == resource && *why == reason)
}

fn slot_count(l: &Listener, owner: Slot) -> usize {
    l.slots().iter().filter(|&s| s == owner).count()
}

fn assert_share(l: &Listener, owner: Slot, share: f64) {
    let expected = share * SLOT_TABLE_SIZE as f64;
    let got = slot_count(l, owner) as f64;
    assert!(
        (got - expected).abs() <= 2.0,
        "{owner:?}: {got} slots, expected {expected}"
    );
}

// ------------------------------------------------------------------- demo

fn demo_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml")
}

#[test]
fn demo_yaml_serves_tcp_and_udp_on_translated_endpoint_ports() {
    let res = checked(crate::compile_file(demo_path(), 1).unwrap());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(res.snapshot.generation(), 1);
    assert_eq!(res.snapshot.listeners().len(), 2);

    let tcp = listener(&res, "demo/edge/tcp-echo");
    assert_eq!(tcp.vip().to_string(), "198.18.100.10:80");
    assert_eq!(tcp.protocol(), Protocol::Tcp);
    assert_eq!(tcp.route(), "demo/echo-tcp");
    assert_eq!(endpoints(tcp), ["198.18.2.21:8080", "198.18.2.22:8080"]);

    let udp = listener(&res, "demo/edge/udp-echo");
    assert_eq!(udp.vip().to_string(), "198.18.100.10:53");
    assert_eq!(udp.protocol(), Protocol::Udp);
    assert_eq!(udp.route(), "demo/echo-udp");
    assert_eq!(endpoints(udp), ["198.18.2.21:5353", "198.18.2.22:5353"]);

    for l in [tcp, udp] {
        assert_eq!(l.slots().len(), SLOT_TABLE_SIZE);
        assert_share(l, Slot::Backend(0), 0.5);
        assert_share(l, Slot::Backend(1), 0.5);
        assert_eq!(l.groups().len(), 1);
        assert_eq!(l.groups()[0].service, "demo/echo");
    }
    let key = ServiceKey {
        endpoint: tcp.vip(),
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        res.snapshot.listener_for_vip(&key).map(|l| l.id().index()),
        Some(0)
    );
}

// --------------------------------------------------------------- gateways

#[test]
fn gateway_of_another_controller_is_ignored_silently() {
    let other = CLASS
        .replace("name: sy", "name: theirs")
        .replace("switchyard.io", "example.com");
    let gw = edge().replace("gatewayClassName: sy", "gatewayClassName: theirs");
    let res = compile(&[&other, &gw]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
}

#[test]
fn gateway_without_address_has_no_listeners_and_is_address_not_assigned() {
    let gw = edge().replace("[{value: 10.0.0.1}]", "[]");
    let res = compile(&[CLASS, &gw]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(has(&res, "Gateway lb/edge", Reason::AddressNotAssigned));
    assert_eq!(res.diagnostics[0].condition, ConditionType::Programmed);

    let no_value = edge().replace("[{value: 10.0.0.1}]", "[{type: IPAddress}]");
    let res = compile(&[CLASS, &no_value]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(has(&res, "Gateway lb/edge", Reason::AddressNotAssigned));
}

#[test]
fn gateway_with_non_ip_address_type_is_unsupported_address() {
    let gw = edge().replace(
        "[{value: 10.0.0.1}]",
        "[{value: 10.0.0.1}, {type: Hostname, value: lb.example.com}]",
    );
    let res = compile(&[CLASS, &gw]);
    assert!(res.snapshot.listeners().is_empty());
    assert!(has(&res, "Gateway lb/edge", Reason::UnsupportedAddress));
}

#[test]
fn every_listener_is_served_on_every_gateway_address() {
    let gw = edge().replace(
        "[{value: 10.0.0.1}]",
        "[{value: 10.0.0.2}, {value: 10.0.0.1}]",
    );
    let res = compile(&[CLASS, &gw]);
    let vips: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| format!("{} {}", l.name(), l.vip()))
        .collect();
    assert_eq!(
        vips,
        [
            "lb/edge/tcp 10.0.0.1:80",
            "lb/edge/tcp 10.0.0.2:80",
            "lb/edge/udp 10.0.0.1:53",
            "lb/edge/udp 10.0.0.2:53",
        ]
    );
}

#[test]
fn listener_without_route_refuses_all_traffic() {
    let res = compile(&[CLASS, &edge()]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.route(), "");
    assert!(tcp.groups().is_empty());
    assert_eq!(tcp.slots().len(), SLOT_TABLE_SIZE);
    assert!(tcp.slots().iter().all(|s| s == Slot::Unavailable));
}

#[test]
fn listener_with_unsupported_protocol_is_unsupported_protocol_and_carries_no_traffic() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: web, port: 80, protocol: HTTP}, {name: tcp, port: 81, protocol: TCP}]",
    );
    let res = compile(&[CLASS, &gw]);
    assert_eq!(res.snapshot.listeners().len(), 1);
    let d = &res.diagnostics[0];
    assert_eq!(
        (d.reason, d.listener.as_deref(), d.condition),
        (
            Reason::UnsupportedProtocol,
            Some("web"),
            ConditionType::Accepted
        )
    );
}

#[test]
fn allowed_kind_the_protocol_cannot_carry_is_invalid_route_kinds() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: tcp, port: 80, protocol: TCP, allowedRoutes: {kinds: [{kind: UDPRoute}]}}]",
    );
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &gw, &r, &web("lb", "web", &["10.1.0.1"])]);
    assert!(has(&res, "Gateway lb/edge", Reason::InvalidRouteKinds));
    assert!(has(&res, "TCPRoute lb/r", Reason::NotAllowedByListeners));
    assert_eq!(listener(&res, "lb/edge/tcp").route(), "");
}

// ------------------------------------------------------------- attachment

fn attached_route(res: &Resolution, listener_name: &str) -> String {
    listener(res, listener_name).route().to_owned()
}

#[test]
fn parent_ref_section_name_selects_the_listener() {
    let r = route(
        "UDPRoute",
        "lb",
        "dns",
        "[{name: edge, sectionName: udp}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &edge(), &r]);
    assert_eq!(attached_route(&res, "lb/edge/udp"), "lb/dns");
    assert_eq!(attached_route(&res, "lb/edge/tcp"), "");
}

#[test]
fn parent_ref_port_selects_the_listener() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: a, port: 80, protocol: TCP}, {name: b, port: 81, protocol: TCP}]",
    );
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge, port: 81}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &gw, &r]);
    assert_eq!(attached_route(&res, "lb/edge/a"), "");
    assert_eq!(attached_route(&res, "lb/edge/b"), "lb/r");
}

#[test]
fn bare_parent_ref_attaches_to_every_listener_of_its_kind() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: a, port: 80, protocol: TCP}, {name: b, port: 81, protocol: TCP}, {name: u, port: 80, protocol: UDP}]",
    );
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &gw, &r]);
    assert_eq!(attached_route(&res, "lb/edge/a"), "lb/r");
    assert_eq!(attached_route(&res, "lb/edge/b"), "lb/r");
    assert_eq!(attached_route(&res, "lb/edge/u"), "");
    assert!(!has(&res, "TCPRoute lb/r", Reason::NotAllowedByListeners));
}

#[test]
fn parent_ref_matching_no_section_or_port_is_no_matching_parent() {
    for parent in [
        "[{name: edge, sectionName: nope}]",
        "[{name: edge, port: 8080}]",
        "[{name: edge, sectionName: tcp, port: 53}]",
    ] {
        let r = tcp_route("lb", "r", parent, "[{name: web, port: 80}]");
        let res = compile(&[CLASS, &edge(), &r]);
        assert!(
            has(&res, "TCPRoute lb/r", Reason::NoMatchingParent),
            "{parent}"
        );
        assert_eq!(attached_route(&res, "lb/edge/tcp"), "");
    }
}

#[test]
fn parent_ref_to_a_missing_gateway_is_no_matching_parent() {
    let r = tcp_route("lb", "r", "[{name: ghost}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r]);
    let d = &res.diagnostics[0];
    assert_eq!(
        (d.reason, d.parent.as_deref()),
        (Reason::NoMatchingParent, Some("lb/ghost"))
    );
}

#[test]
fn parent_ref_namespace_defaults_to_the_route_namespace() {
    let r = tcp_route("other", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r]);
    assert!(has(&res, "TCPRoute other/r", Reason::NoMatchingParent));
    assert!(res.diagnostics[0].message.contains("other/edge"));
}

#[test]
fn parent_ref_of_another_kind_is_ignored() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge, kind: Service, group: \"\"}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &edge(), &r]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(attached_route(&res, "lb/edge/tcp"), "");
}

#[test]
fn tcp_route_on_udp_listener_is_not_allowed_by_listeners() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge, sectionName: udp}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &edge(), &r]);
    assert!(has(&res, "TCPRoute lb/r", Reason::NotAllowedByListeners));
    assert_eq!(attached_route(&res, "lb/edge/udp"), "");
}

#[test]
fn route_from_another_namespace_is_not_allowed_by_default() {
    let r = tcp_route(
        "app",
        "r",
        "[{name: edge, namespace: lb}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &edge(), &r]);
    assert!(has(&res, "TCPRoute app/r", Reason::NotAllowedByListeners));
    assert_eq!(attached_route(&res, "lb/edge/tcp"), "");
}

#[test]
fn from_all_allows_routes_from_any_namespace() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: tcp, port: 80, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}]",
    );
    let r = tcp_route(
        "app",
        "r",
        "[{name: edge, namespace: lb}]",
        "[{name: web, port: 80}]",
    );
    let res = compile(&[CLASS, &gw, &r, &web("app", "web", &["10.1.0.1"])]);
    assert_eq!(attached_route(&res, "lb/edge/tcp"), "app/r");
    assert_eq!(endpoints(listener(&res, "lb/edge/tcp")), ["10.1.0.1:8080"]);
}

#[test]
fn from_selector_matches_namespace_labels_from_the_file() {
    let gw = |selector: &str| {
        gateway(
            "lb",
            "edge",
            "[{value: 10.0.0.1}]",
            &format!("[{{name: tcp, port: 80, protocol: TCP, allowedRoutes: {{namespaces: {{from: Selector, selector: {selector}}}}}}}]"),
        )
    };
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: app, labels: {team: blue}}\n";
    let r = tcp_route(
        "app",
        "r",
        "[{name: edge, namespace: lb}]",
        "[{name: web, port: 80}]",
    );
    for (selector, allowed) in [
        ("{matchLabels: {team: blue}}", true),
        ("{matchLabels: {team: red}}", false),
        (
            "{matchExpressions: [{key: team, operator: In, values: [red, blue]}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: team, operator: NotIn, values: [blue]}]}",
            false,
        ),
        ("{matchExpressions: [{key: team, operator: Exists}]}", true),
        (
            "{matchExpressions: [{key: team, operator: DoesNotExist}]}",
            false,
        ),
        // The API server labels every namespace with its name.
        ("{matchLabels: {kubernetes.io/metadata.name: app}}", true),
        ("{}", true),
    ] {
        let res = compile(&[CLASS, &gw(selector), ns, &r]);
        let attached = attached_route(&res, "lb/edge/tcp") == "app/r";
        assert_eq!(attached, allowed, "{selector}");
        assert_eq!(
            has(&res, "TCPRoute app/r", Reason::NotAllowedByListeners),
            !allowed
        );
    }
}

#[test]
fn oldest_route_carries_the_listener_traffic_and_all_attach() {
    let stamped = |name: &str, ts: &str| {
        tcp_route(
            "lb",
            name,
            "[{name: edge, sectionName: tcp}]",
            &format!("[{{name: {name}, port: 80}}]"),
        )
        .replace(
            &format!("name: {name}, namespace: lb}}"),
            &format!("name: {name}, namespace: lb, creationTimestamp: \"{ts}\"}}"),
        )
    };
    let older = stamped("zeta", "2024-01-01T00:00:00Z");
    let newer = stamped("alpha", "2024-06-01T00:00:00Z");
    let res = compile(&[CLASS, &edge(), &newer, &older]);
    assert_eq!(attached_route(&res, "lb/edge/tcp"), "lb/zeta");
    assert!(res
        .diagnostics
        .iter()
        .all(|d| d.reason == Reason::BackendNotFound));

    // Same age: alphabetical by namespace/name.
    let a = tcp_route("lb", "b-route", "[{name: edge}]", "[{name: web, port: 80}]");
    let b = tcp_route("lb", "a-route", "[{name: edge}]", "[{name: web, port: 80}]");
    assert_eq!(
        attached_route(&compile(&[CLASS, &edge(), &a, &b]), "lb/edge/tcp"),
        "lb/a-route"
    );
    // A route without a timestamp is younger than one with.
    let stamped_b = stamped("b-route", "2030-01-01T00:00:00Z");
    assert_eq!(
        attached_route(&compile(&[CLASS, &edge(), &stamped_b, &b]), "lb/edge/tcp"),
        "lb/b-route"
    );
}

// --------------------------------------------------------------- backends

#[test]
fn route_without_grant_is_ref_not_permitted() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: web, namespace: app, port: 80}]",
    );
    let res = compile(&[CLASS, &edge(), &r, &web("app", "web", &["10.1.0.1"])]);
    assert!(has(&res, "TCPRoute lb/r", Reason::RefNotPermitted));
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.groups()[0].service, "app/web");
    assert!(tcp.backends().is_empty());
    assert!(tcp.slots().iter().all(|s| s == Slot::Unavailable));
}

/// ReferenceGrant `g` in `ns` with one `from` and one `to` entry, each a
/// YAML flow mapping.
fn grant(ns: &str, from: &str, to: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: {ns}}}\n\
         spec:\n  from: [{from}]\n  to: [{to}]\n"
    )
}

/// A grant `from` entry for routes of `kind` in `namespace`.
fn from_routes(kind: &str, namespace: &str) -> String {
    format!("{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {namespace}}}")
}

const TO_SERVICES: &str = "{group: \"\", kind: Service}";

#[test]
fn reference_grant_in_the_target_namespace_permits_the_backend() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: web, namespace: app, port: 80}]",
    );
    for to in [
        "{group: \"\", kind: Service}",
        "{group: \"\", kind: Service, name: web}",
    ] {
        let res = compile(&[
            CLASS,
            &edge(),
            &r,
            &web("app", "web", &["10.1.0.1"]),
            &grant("app", &from_routes("TCPRoute", "lb"), to),
        ]);
        assert!(res.diagnostics.is_empty(), "{to}: {:#?}", res.diagnostics);
        assert_eq!(endpoints(listener(&res, "lb/edge/tcp")), ["10.1.0.1:8080"]);
    }
}

/// Each grant differs from a permitting one in one field, as the upstream
/// invalid-reference-grant conformance manifests do: from group, kind or
/// namespace; to group, kind or name; or the grant's own namespace.
#[test]
fn reference_grant_for_another_group_kind_namespace_or_name_does_not_permit() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: web, namespace: app, port: 80}]",
    );
    let tcp_from_lb = from_routes("TCPRoute", "lb");
    for g in [
        grant(
            "app",
            "{group: not-the-group-youre-looking-for, kind: TCPRoute, namespace: lb}",
            TO_SERVICES,
        ),
        grant("app", &from_routes("UDPRoute", "lb"), TO_SERVICES),
        grant("app", &from_routes("Gateway", "lb"), TO_SERVICES),
        grant("app", &from_routes("TCPRoute", "elsewhere"), TO_SERVICES),
        grant(
            "app",
            &tcp_from_lb,
            "{group: not-the-group-youre-looking-for, kind: Service}",
        ),
        grant("app", &tcp_from_lb, "{group: \"\", kind: Secret}"),
        grant(
            "app",
            &tcp_from_lb,
            "{group: \"\", kind: Service, name: other}",
        ),
        grant("lb", &tcp_from_lb, TO_SERVICES),
    ] {
        let res = compile(&[CLASS, &edge(), &r, &web("app", "web", &["10.1.0.1"]), &g]);
        assert!(has(&res, "TCPRoute lb/r", Reason::RefNotPermitted), "{g}");
        assert!(listener(&res, "lb/edge/tcp").backends().is_empty(), "{g}");
    }
    // The control: the same grant with every field right permits.
    let res = compile(&[
        CLASS,
        &edge(),
        &r,
        &web("app", "web", &["10.1.0.1"]),
        &grant("app", &tcp_from_lb, TO_SERVICES),
    ]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
}

#[test]
fn missing_service_is_backend_not_found() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: ghost, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r]);
    let d = &res.diagnostics[0];
    assert_eq!(
        (d.reason, d.condition, d.message.as_str()),
        (
            Reason::BackendNotFound,
            ConditionType::ResolvedRefs,
            "Service lb/ghost not found"
        )
    );
    assert_eq!(
        listener(&res, "lb/edge/tcp").groups()[0].service,
        "lb/ghost"
    );
}

#[test]
fn backend_ref_to_a_missing_service_port_is_backend_not_found() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 81}]");
    let res = compile(&[CLASS, &edge(), &r, &web("lb", "web", &["10.1.0.1"])]);
    assert!(has(&res, "TCPRoute lb/r", Reason::BackendNotFound));
    assert!(res.diagnostics[0].message.contains("no TCP port 81"));
}

#[test]
fn backend_of_another_kind_is_invalid_kind_and_keeps_its_share_unavailable() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: web, port: 80, weight: 3}, {group: example.com, kind: Bucket, name: web, port: 80, weight: 1}]",
    );
    let res = compile(&[CLASS, &edge(), &r, &web("lb", "web", &["10.1.0.1"])]);
    assert!(has(&res, "TCPRoute lb/r", Reason::InvalidKind));
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.groups().len(), 2);
    assert!(tcp.groups()[1].endpoints.is_empty());
    assert_share(tcp, Slot::Backend(0), 0.75);
    assert_share(tcp, Slot::Unavailable, 0.25);
}

#[test]
fn udp_route_uses_the_services_udp_port_of_the_same_number() {
    let svc = service(
        "lb",
        "dns",
        "[{name: dns-tcp, port: 53, targetPort: 5353}, {name: dns, port: 53, protocol: UDP, targetPort: 5354}]",
    );
    let s = slice(
        "lb",
        "dns-1",
        "dns",
        "[{addresses: [10.1.0.9]}]",
        "[{name: dns-tcp, port: 5353, protocol: TCP}, {name: dns, port: 5354, protocol: UDP}]",
    );
    let r = route(
        "UDPRoute",
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: dns, port: 53}]",
    );
    let res = compile(&[CLASS, &edge(), &r, &svc, &s]);
    assert_eq!(endpoints(listener(&res, "lb/edge/udp")), ["10.1.0.9:5354"]);
}

#[test]
fn unnamed_service_port_matches_unnamed_slice_port() {
    let svc = service("lb", "web", "[{port: 80}]");
    let s = slice(
        "lb",
        "web-1",
        "web",
        "[{addresses: [10.1.0.1]}]",
        "[{port: 9000}]",
    );
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r, &svc, &s]);
    assert_eq!(endpoints(listener(&res, "lb/edge/tcp")), ["10.1.0.1:9000"]);
}

#[test]
fn slice_without_ports_falls_back_to_the_numeric_target_port() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    for (ports, expected) in [
        (
            "[{name: tcp, port: 80, targetPort: 8080}]",
            vec!["10.1.0.1:8080"],
        ),
        ("[{name: tcp, port: 80}]", vec!["10.1.0.1:80"]),
        // A named target port needs the slice to say which number it is.
        ("[{name: tcp, port: 80, targetPort: http}]", vec![]),
    ] {
        let svc = service("lb", "web", ports);
        let s = slice("lb", "web-1", "web", "[{addresses: [10.1.0.1]}]", "[]");
        let res = compile(&[CLASS, &edge(), &r, &svc, &s]);
        assert_eq!(
            endpoints(listener(&res, "lb/edge/tcp")),
            expected,
            "{ports}"
        );
    }
}

#[test]
fn slice_with_other_port_names_contributes_nothing() {
    let svc = service("lb", "web", "[{name: tcp, port: 80}]");
    let s = slice(
        "lb",
        "web-1",
        "web",
        "[{addresses: [10.1.0.1]}]",
        "[{name: metrics, port: 9100}]",
    );
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r, &svc, &s]);
    assert!(listener(&res, "lb/edge/tcp").backends().is_empty());
}

fn conditions_world(endpoints: &str, publish: bool) -> Resolution {
    let mut svc = service("lb", "web", "[{name: tcp, port: 80}]");
    if publish {
        svc.push_str("  publishNotReadyAddresses: true\n");
    }
    let s = slice("lb", "web-1", "web", endpoints, "[{name: tcp, port: 80}]");
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    compile(&[CLASS, &edge(), &r, &svc, &s])
}

#[test]
fn only_ready_endpoints_serve_and_absent_ready_means_ready() {
    let res = conditions_world(
        "[{addresses: [10.1.0.1]}, {addresses: [10.1.0.2], conditions: {ready: true}}, \
          {addresses: [10.1.0.3], conditions: {ready: false}}, \
          {addresses: [10.1.0.4], conditions: {ready: false, serving: true, terminating: true}}]",
        false,
    );
    assert_eq!(
        endpoints(listener(&res, "lb/edge/tcp")),
        ["10.1.0.1:80", "10.1.0.2:80"]
    );
}

#[test]
fn serving_terminating_endpoints_serve_when_none_is_ready() {
    let res = conditions_world(
        "[{addresses: [10.1.0.3], conditions: {ready: false}}, \
          {addresses: [10.1.0.4], conditions: {ready: false, serving: true, terminating: true}}, \
          {addresses: [10.1.0.5], conditions: {ready: false, serving: false, terminating: true}}]",
        false,
    );
    assert_eq!(endpoints(listener(&res, "lb/edge/tcp")), ["10.1.0.4:80"]);
}

/// Served endpoints the snapshot marks terminating.
fn terminating(res: &Resolution, l: &Listener) -> Vec<String> {
    l.backends()
        .iter()
        .filter(|b| res.snapshot.is_terminating(&b.endpoint))
        .map(|b| b.endpoint.to_string())
        .collect()
}

#[test]
fn serving_terminating_endpoints_are_marked_terminating_and_their_group_too() {
    let res = conditions_world(
        "[{addresses: [10.1.0.4], conditions: {ready: false, serving: true, terminating: true}}]",
        false,
    );
    let l = listener(&res, "lb/edge/tcp");
    assert_eq!(terminating(&res, l), ["10.1.0.4:80"]);
    assert!(l.groups()[0].terminating, "every endpoint of the group is");
}

#[test]
fn a_terminating_endpoint_beside_ready_ones_drains() {
    let res = conditions_world(
        "[{addresses: [10.1.0.1]}, \
          {addresses: [10.1.0.4], conditions: {ready: false, serving: true, terminating: true}}]",
        false,
    );
    let l = listener(&res, "lb/edge/tcp");
    assert_eq!(
        endpoints(l),
        ["10.1.0.1:80"],
        "new flows go to the ready one"
    );
    // Still a backend, of weight 0: its established flows carry over.
    let draining = l
        .backends()
        .iter()
        .find(|b| b.endpoint.to_string() == "10.1.0.4:80")
        .expect("the terminating endpoint stays a backend");
    assert_eq!(draining.effective_weight, 0.0);
    assert_eq!(terminating(&res, l), ["10.1.0.4:80"]);
    assert!(!l.groups()[0].terminating);
    assert!(
        l.slots().iter().all(|slot| slot != Slot::Backend(1)),
        "no slot goes to it"
    );
}

#[test]
fn published_not_ready_addresses_mark_terminating_per_endpoint_not_per_group() {
    let res = conditions_world(
        "[{addresses: [10.1.0.1]}, \
          {addresses: [10.1.0.4], conditions: {ready: true, serving: true, terminating: true}}]",
        true,
    );
    let l = listener(&res, "lb/edge/tcp");
    assert_eq!(endpoints(l), ["10.1.0.1:80", "10.1.0.4:80"]);
    assert_eq!(terminating(&res, l), ["10.1.0.4:80"]);
    assert!(
        !l.groups()[0].terminating,
        "the group still has a ready endpoint"
    );
}

#[test]
fn an_address_listed_ready_in_another_slice_is_not_terminating() {
    let svc = service("lb", "web", "[{name: tcp, port: 80}]");
    let ports = "[{name: tcp, port: 80}]";
    let leaving = slice(
        "lb",
        "web-1",
        "web",
        "[{addresses: [10.1.0.4], conditions: {ready: true, serving: true, terminating: true}}]",
        ports,
    );
    let staying = slice("lb", "web-2", "web", "[{addresses: [10.1.0.4]}]", ports);
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r, &svc, &leaving, &staying]);
    let l = listener(&res, "lb/edge/tcp");
    assert_eq!(endpoints(l), ["10.1.0.4:80"]);
    assert!(terminating(&res, l).is_empty());
}

#[test]
fn absent_serving_means_serving_as_kube_proxy_reads_it() {
    // Terminating and not ready, with no word on serving: kube-proxy's
    // `Serving == nil || *Serving` keeps it as a fallback.
    let res = conditions_world(
        "[{addresses: [10.1.0.3], conditions: {ready: false}}, \
          {addresses: [10.1.0.6], conditions: {ready: false, terminating: true}}]",
        false,
    );
    assert_eq!(endpoints(listener(&res, "lb/edge/tcp")), ["10.1.0.6:80"]);
    let absent = crate::resources::EndpointConditions::default();
    assert!(absent.is_ready() && absent.is_serving() && !absent.is_terminating());
}

#[test]
fn publish_not_ready_addresses_serves_every_endpoint() {
    let res = conditions_world(
        "[{addresses: [10.1.0.1]}, {addresses: [10.1.0.3], conditions: {ready: false, serving: false}}]",
        true,
    );
    assert_eq!(
        endpoints(listener(&res, "lb/edge/tcp")),
        ["10.1.0.1:80", "10.1.0.3:80"]
    );
}

#[test]
fn slices_of_a_service_are_merged_and_endpoints_deduplicated() {
    let svc = service("lb", "web", "[{name: tcp, port: 80}]");
    let ports = "[{name: tcp, port: 80}]";
    let s1 = slice(
        "lb",
        "web-1",
        "web",
        "[{addresses: [10.1.0.2, 10.1.0.1]}]",
        ports,
    );
    let s2 = slice(
        "lb",
        "web-2",
        "web",
        "[{addresses: [10.1.0.1]}, {addresses: [10.1.0.3]}]",
        ports,
    );
    // Same label, other namespace; other service, same namespace.
    let s3 = slice("app", "web-3", "web", "[{addresses: [10.9.0.1]}]", ports);
    let s4 = slice("lb", "api-1", "api", "[{addresses: [10.9.0.2]}]", ports);
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: web, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r, &svc, &s1, &s2, &s3, &s4]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(
        endpoints(tcp),
        ["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"]
    );
    assert_eq!(tcp.groups()[0].endpoints.len(), 3);
}

// ------------------------------------------------------------------ slots

#[test]
fn slot_shares_follow_backend_ref_weights() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: a, port: 80, weight: 70}, {name: b, port: 80, weight: 30}, {name: c, port: 80, weight: 0}]",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &r,
        &web("lb", "a", &["10.1.0.1", "10.1.0.2"]),
        &web("lb", "b", &["10.2.0.1"]),
        &web("lb", "c", &["10.3.0.1"]),
    ]);
    let tcp = listener(&res, "lb/edge/tcp");
    let all: Vec<String> = tcp
        .backends()
        .iter()
        .map(|b| b.endpoint.to_string())
        .collect();
    assert_eq!(
        all,
        [
            "10.1.0.1:8080",
            "10.1.0.2:8080",
            "10.2.0.1:8080",
            "10.3.0.1:8080"
        ]
    );
    let weights: Vec<f64> = tcp.backends().iter().map(|b| b.effective_weight).collect();
    assert_eq!(weights, [35.0, 35.0, 30.0, 0.0]);
    assert_share(tcp, Slot::Backend(0), 0.35);
    assert_share(tcp, Slot::Backend(1), 0.35);
    assert_share(tcp, Slot::Backend(2), 0.30);
    assert_eq!(slot_count(tcp, Slot::Backend(3)), 0);
    assert_eq!(slot_count(tcp, Slot::Unavailable), 0);
}

#[test]
fn weight_defaults_to_one() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: a, port: 80}, {name: b, port: 80, weight: 3}]",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &r,
        &web("lb", "a", &["10.1.0.1"]),
        &web("lb", "b", &["10.2.0.1"]),
    ]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.groups()[0].weight, 1);
    assert_share(tcp, Slot::Backend(0), 0.25);
    assert_share(tcp, Slot::Backend(1), 0.75);
}

#[test]
fn endpoint_in_two_groups_is_one_backend_with_both_shares() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: a, port: 80, weight: 2}, {name: b, port: 80, weight: 1}]",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &r,
        &web("lb", "a", &["10.1.0.1", "10.1.0.2"]),
        &web("lb", "b", &["10.1.0.2"]),
    ]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(endpoints(tcp), ["10.1.0.1:8080", "10.1.0.2:8080"]);
    assert_eq!(tcp.backends()[1].group, 0);
    assert_eq!(tcp.backends()[1].effective_weight, 2.0);
    assert_share(tcp, Slot::Backend(0), 1.0 / 3.0);
    assert_share(tcp, Slot::Backend(1), 2.0 / 3.0);
}

#[test]
fn all_zero_weights_refuse_all_traffic() {
    let r = tcp_route(
        "lb",
        "r",
        "[{name: edge}]",
        "[{name: a, port: 80, weight: 0}]",
    );
    let res = compile(&[CLASS, &edge(), &r, &web("lb", "a", &["10.1.0.1"])]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.backends().len(), 1);
    assert!(tcp.slots().iter().all(|s| s == Slot::Unavailable));
}

// ------------------------------------------------- conflicts, determinism

#[test]
fn address_of_one_gateway_is_not_usable_by_another_even_on_other_ports() {
    // Gateways own their addresses whole (see resolve/addresses.rs): the
    // first in allocation order keeps it, the other is not programmed.
    let other = gateway(
        "lb",
        "other",
        "[{value: 10.0.0.1}]",
        "[{name: t, port: 80, protocol: TCP}, {name: u, port: 54, protocol: UDP}]",
    );
    let res = compile(&[CLASS, &edge(), &other]);
    let names: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    assert_eq!(names, ["lb/edge/tcp", "lb/edge/udp"]);
    assert_eq!(
        reasons(&res),
        [("Gateway lb/other".to_owned(), Reason::AddressNotUsable)]
    );
    assert_eq!(res.diagnostics[0].condition, ConditionType::Programmed);
    assert!(res.diagnostics[0].message.contains("lb/edge"));
}

#[test]
fn same_port_over_tcp_and_udp_does_not_conflict() {
    let gw = gateway(
        "lb",
        "edge",
        "[{value: 10.0.0.1}]",
        "[{name: t, port: 53, protocol: TCP}, {name: u, port: 53, protocol: UDP}]",
    );
    let res = compile(&[CLASS, &gw]);
    assert_eq!(res.snapshot.listeners().len(), 2);
    assert!(res.diagnostics.is_empty());
}

#[test]
fn resolution_does_not_depend_on_document_order() {
    let docs = [
        CLASS.to_owned(),
        edge(),
        gateway("lb", "second", "[{value: 10.0.0.2}]", "[{name: t, port: 80, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}]"),
        tcp_route("lb", "r1", "[{name: edge}]", "[{name: a, port: 80, weight: 5}, {name: b, port: 80, weight: 2}, {name: ghost, port: 80}]"),
        tcp_route("lb", "r0", "[{name: edge, sectionName: tcp}]", "[{name: b, port: 80}]"),
        tcp_route("app", "r2", "[{name: second, namespace: lb}]", "[{name: a, namespace: lb, port: 80}]"),
        route("UDPRoute", "lb", "u", "[{name: edge}]", "[{name: b, port: 80}]"),
        web("lb", "a", &["10.1.0.3", "10.1.0.1", "10.1.0.2"]),
        web("lb", "b", &["10.2.0.1", "10.1.0.1"]),
    ];
    let reference = compile(&docs.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!reference.diagnostics.is_empty());
    let mut order: Vec<usize> = (0..docs.len()).collect();
    // A fixed set of permutations (rotations and reversals) is enough to
    // catch order-dependence without a random source.
    for round in 0..docs.len() * 2 {
        order.rotate_left(1);
        if round % 2 == 1 {
            order.reverse();
        }
        let shuffled: Vec<&str> = order.iter().map(|&i| docs[i].as_str()).collect();
        let res = compile(&shuffled);
        assert_eq!(
            res.snapshot.listeners(),
            reference.snapshot.listeners(),
            "order {order:?}"
        );
        assert_eq!(res.diagnostics, reference.diagnostics, "order {order:?}");
    }
}

#[test]
fn listeners_are_sorted_by_name() {
    let b = gateway(
        "lb",
        "b",
        "[{value: 10.0.0.2}]",
        "[{name: z, port: 1, protocol: TCP}, {name: a, port: 2, protocol: TCP}]",
    );
    let a = gateway(
        "lb",
        "a",
        "[{value: 10.0.0.3}]",
        "[{name: m, port: 1, protocol: UDP}]",
    );
    let res = compile(&[CLASS, &b, &a]);
    let names: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    assert_eq!(names, ["lb/a/m", "lb/b/a", "lb/b/z"]);
}

#[test]
fn diagnostic_reads_as_a_status_condition() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: ghost, port: 80}]");
    let res = compile(&[CLASS, &edge(), &r]);
    assert_eq!(
        res.diagnostics[0].to_string(),
        "TCPRoute lb/r: ResolvedRefs=False BackendNotFound: Service lb/ghost not found"
    );
}

// ---------------------------------------------------------- TrafficPolicy

/// TrafficPolicy `ns/name` created at `created` (RFC 3339, or "" for no
/// timestamp) with the given targetRefs (flow list) and tableSize.
fn traffic_policy(ns: &str, name: &str, created: &str, targets: &str, size: u32) -> String {
    let created = if created.is_empty() {
        String::new()
    } else {
        format!(", creationTimestamp: \"{created}\"")
    };
    format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: {ns}{created}}}\n\
         spec:\n  targetRefs: {targets}\n  maglev: {{tableSize: {size}}}\n"
    )
}

const WHOLE_EDGE: &str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]";

fn edge_section(section: &str) -> String {
    format!(
        "[{{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: {section}}}]"
    )
}

fn policy_diagnostics(res: &Resolution) -> Vec<&Diagnostic> {
    res.diagnostics
        .iter()
        .filter(|d| d.kind == "TrafficPolicy")
        .collect()
}

#[test]
fn default_table_size_stays_65537_without_policy() {
    let res = compile(&[CLASS, &edge()]);
    for name in ["lb/edge/tcp", "lb/edge/udp"] {
        assert_eq!(listener(&res, name).slots().len(), SLOT_TABLE_SIZE);
    }
    assert_eq!(SLOT_TABLE_SIZE, 65_537);
}

#[test]
fn policy_on_whole_gateway_applies_to_all_its_listeners() {
    let p = traffic_policy("lb", "p", "", WHOLE_EDGE, 4093);
    let res = compile(&[CLASS, &edge(), &p]);
    assert!(
        policy_diagnostics(&res).is_empty(),
        "{:#?}",
        res.diagnostics
    );
    for name in ["lb/edge/tcp", "lb/edge/udp"] {
        assert_eq!(listener(&res, name).slots().len(), 4093, "{name}");
    }
}

#[test]
fn policy_table_size_keeps_weighted_shares() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: echo, port: 80}]");
    let p = traffic_policy("lb", "p", "", &edge_section("tcp"), 4093);
    let res = compile(&[
        CLASS,
        &edge(),
        &r,
        &web("lb", "echo", &["10.1.0.1", "10.1.0.2"]),
        &p,
    ]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.slots().len(), 4093);
    let first = slot_count(tcp, Slot::Backend(0));
    assert!(first.abs_diff(4093 / 2) <= 1, "{first}");
    assert_eq!(first + slot_count(tcp, Slot::Backend(1)), 4093);
}

#[test]
fn section_name_policy_wins_over_whole_gateway_policy() {
    // The whole-Gateway policy is older; specificity still wins, and being
    // overridden on one listener is layering, not a conflict.
    let whole = traffic_policy("lb", "whole", "2024-01-01T00:00:00Z", WHOLE_EDGE, 4093);
    let tcp_only = traffic_policy(
        "lb",
        "tcp-only",
        "2024-06-01T00:00:00Z",
        &edge_section("tcp"),
        8191,
    );
    let res = compile(&[CLASS, &edge(), &whole, &tcp_only]);
    assert_eq!(listener(&res, "lb/edge/tcp").slots().len(), 8191);
    assert_eq!(listener(&res, "lb/edge/udp").slots().len(), 4093);
    assert!(
        policy_diagnostics(&res).is_empty(),
        "{:#?}",
        res.diagnostics
    );
}

#[test]
fn conflicting_policies_oldest_wins_and_the_other_is_conflicted() {
    // Age beats name: "a-new" sorts first but was created later.
    let new = traffic_policy("lb", "a-new", "2024-06-01T00:00:00Z", WHOLE_EDGE, 8191);
    let old = traffic_policy("lb", "z-old", "2024-01-01T00:00:00Z", WHOLE_EDGE, 4093);
    let res = compile(&[CLASS, &edge(), &new, &old]);
    for name in ["lb/edge/tcp", "lb/edge/udp"] {
        assert_eq!(listener(&res, name).slots().len(), 4093, "{name}");
    }
    let diags = policy_diagnostics(&res);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    for (d, parent) in diags.iter().zip(["lb/edge/tcp", "lb/edge/udp"]) {
        assert_eq!(d.resource(), "TrafficPolicy lb/a-new");
        assert_eq!(d.reason, Reason::Conflicted);
        assert_eq!(d.condition, ConditionType::Accepted);
        assert_eq!(d.parent.as_deref(), Some(parent));
        assert!(
            d.message.contains("TrafficPolicy lb/z-old"),
            "{}",
            d.message
        );
    }
    assert!(diags[0]
        .to_string()
        .starts_with("TrafficPolicy lb/a-new (parent lb/edge/tcp): Accepted=False Conflicted: "));
}

#[test]
fn conflicting_policies_of_the_same_age_are_decided_by_name() {
    let b = traffic_policy(
        "lb",
        "b",
        "2024-01-01T00:00:00Z",
        &edge_section("tcp"),
        8191,
    );
    let a = traffic_policy(
        "lb",
        "a",
        "2024-01-01T00:00:00Z",
        &edge_section("tcp"),
        4093,
    );
    // No timestamp: not created yet, so the newest.
    let c = traffic_policy("lb", "c", "", &edge_section("tcp"), 251);
    let res = compile(&[CLASS, &edge(), &c, &b, &a]);
    assert_eq!(listener(&res, "lb/edge/tcp").slots().len(), 4093);
    assert_eq!(listener(&res, "lb/edge/udp").slots().len(), SLOT_TABLE_SIZE);
    assert!(has(&res, "TrafficPolicy lb/b", Reason::Conflicted));
    assert!(has(&res, "TrafficPolicy lb/c", Reason::Conflicted));
    assert!(!has(&res, "TrafficPolicy lb/a", Reason::Conflicted));
}

#[test]
fn policy_target_not_found_is_target_not_found() {
    let other_class = gateway(
        "lb",
        "theirs",
        "[{value: 10.0.0.9}]",
        "[{name: tcp, port: 80, protocol: TCP}]",
    )
    .replace("gatewayClassName: sy", "gatewayClassName: not-ours");
    let missing = traffic_policy(
        "lb",
        "missing",
        "",
        "[{group: gateway.networking.k8s.io, kind: Gateway, name: ghost}]",
        4093,
    );
    let no_section = traffic_policy("lb", "no-section", "", &edge_section("nope"), 4093);
    let theirs = traffic_policy(
        "lb",
        "theirs",
        "",
        "[{group: gateway.networking.k8s.io, kind: Gateway, name: theirs}]",
        4093,
    );
    // Namespace-local: a policy in another namespace cannot reach lb/edge.
    let elsewhere = traffic_policy("other", "elsewhere", "", WHOLE_EDGE, 4093);
    let res = compile(&[
        CLASS,
        &edge(),
        &other_class,
        &missing,
        &no_section,
        &theirs,
        &elsewhere,
    ]);
    for policy in [
        "lb/missing",
        "lb/no-section",
        "lb/theirs",
        "other/elsewhere",
    ] {
        assert!(
            has(
                &res,
                &format!("TrafficPolicy {policy}"),
                Reason::TargetNotFound
            ),
            "{policy}: {:#?}",
            res.diagnostics
        );
    }
    let d = res
        .diagnostics
        .iter()
        .find(|d| d.name == "no-section")
        .unwrap();
    assert_eq!(d.condition, ConditionType::Accepted);
    assert_eq!(d.parent.as_deref(), Some("lb/edge/nope"));
    assert_eq!(d.message, "Gateway lb/edge has no listener \"nope\"");
    for name in ["lb/edge/tcp", "lb/edge/udp"] {
        assert_eq!(listener(&res, name).slots().len(), SLOT_TABLE_SIZE);
    }
}

#[test]
fn policy_target_of_a_kind_without_settings_is_invalid() {
    let p = traffic_policy(
        "lb",
        "p",
        "",
        "[{group: \"\", kind: Service, name: echo}]",
        4093,
    );
    let res = compile(&[CLASS, &edge(), &p]);
    assert!(
        has(&res, "TrafficPolicy lb/p", Reason::Invalid),
        "{:#?}",
        res.diagnostics
    );
    assert_eq!(listener(&res, "lb/edge/tcp").slots().len(), SLOT_TABLE_SIZE);
}

#[test]
fn table_too_small_for_backends_is_a_warning_and_still_used() {
    let r = tcp_route("lb", "r", "[{name: edge}]", "[{name: echo, port: 80}]");
    let three = web("lb", "echo", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
    let p = traffic_policy("lb", "p", "", &edge_section("tcp"), 251);
    let res = compile(&[CLASS, &edge(), &r, &three, &p]);
    let tcp = listener(&res, "lb/edge/tcp");
    assert_eq!(tcp.slots().len(), 251);
    assert_eq!(tcp.backends().len(), 3);
    let diags = policy_diagnostics(&res);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].reason, Reason::TableTooSmall);
    assert_eq!(diags[0].condition, ConditionType::Degraded);
    assert_eq!(diags[0].parent.as_deref(), Some("lb/edge/tcp"));
    assert!(
        diags[0].to_string().contains("Degraded=True TableTooSmall"),
        "{}",
        diags[0]
    );

    // 100 slots per backend is enough: two backends in 251 slots.
    let two = web("lb", "echo", &["10.1.0.1", "10.1.0.2"]);
    let res = compile(&[CLASS, &edge(), &r, &two, &p]);
    assert!(
        policy_diagnostics(&res).is_empty(),
        "{:#?}",
        res.diagnostics
    );
}

#[test]
fn traffic_policy_example_sets_4093_on_tcp_echo_and_leaves_udp_echo_at_65537() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traffic-policy.yaml");
    let res = checked(crate::compile_file(path, 1).unwrap());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let tcp = listener(&res, "demo/edge/tcp-echo");
    assert_eq!(tcp.slots().len(), 4093);
    assert_eq!(endpoints(tcp), ["198.18.2.21:8080", "198.18.2.22:8080"]);
    assert!(tcp.slots().iter().all(|s| s != Slot::Unavailable));
    assert_eq!(listener(&res, "demo/edge/udp-echo").slots().len(), 65_537);
}

// ---------------------------------------------------------------- upstream

/// Upstream examples and conformance manifests, vendored with the crate.
fn upstream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/upstream")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Makes every Gateway in `resources` Switchyard's and gives address-less
/// ones a distinct test address, so resolution runs all the way to slots.
fn adopt(resources: &mut Resources) {
    let mut classes: Vec<String> = resources
        .gateways
        .iter()
        .map(|g| g.spec.gateway_class_name.clone())
        .collect();
    classes.sort();
    classes.dedup();
    resources.gateway_classes = classes
        .into_iter()
        .map(|name| GatewayClass {
            metadata: crate::resources::ObjectMeta {
                name,
                namespace: String::new(),
                labels: Default::default(),
                creation_timestamp: None,
                generation: None,
            },
            spec: crate::resources::GatewayClassSpec {
                controller_name: CONTROLLER_NAME.to_owned(),
                parameters_ref: None,
            },
        })
        .collect();
    for (i, gateway) in resources.gateways.iter_mut().enumerate() {
        if gateway.spec.addresses.is_empty() {
            gateway
                .spec
                .addresses
                .push(crate::resources::GatewayAddress {
                    address_type: "IPAddress".to_owned(),
                    value: Some(format!("192.0.2.{}", i % 250 + 1)),
                });
        }
    }
}

#[test]
fn upstream_examples_and_conformance_manifests_resolve_without_panicking() {
    let shared = upstream_dir();
    let base = crate::load::load_file(shared.join("conformance/base/manifests.yaml"))
        .expect("the vendored base manifests load");
    let mut files = Vec::new();
    yaml_files(&shared.join("examples/standard"), &mut files);
    yaml_files(&shared.join("conformance/tests"), &mut files);
    let mut resolved = 0;
    let mut outcomes = std::collections::BTreeMap::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains("kind: TCPRoute") && !text.contains("kind: UDPRoute") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut resources = match crate::load::load_str(&name, &text) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        // As found: nobody's Gateways, so nothing to serve.
        checked(resolve(&resources, 1));
        if path.starts_with(shared.join("conformance")) {
            resources.extend(base.clone());
        }
        adopt(&mut resources);
        let res = checked(resolve(&resources, 1));
        for l in res.snapshot.listeners() {
            assert_eq!(l.slots().len(), SLOT_TABLE_SIZE, "{name}");
        }
        outcomes.insert(name, res);
        resolved += 1;
    }
    assert!(resolved >= 20, "only {resolved} upstream files resolved");

    let expect = |file: &str, resource: &str, reason: Reason| {
        let res = &outcomes[file];
        assert!(has(res, resource, reason), "{file}: {:#?}", res.diagnostics);
    };
    let infra = "gateway-conformance-infra";
    expect(
        "tcproute-invalid-cross-namespace-backend-ref.yaml",
        &format!("TCPRoute {infra}/tcp-invalid-cross-namespace-backend-ref"),
        Reason::RefNotPermitted,
    );
    expect(
        "tcproute-invalid-backendref-nonexistent.yaml",
        &format!("TCPRoute {infra}/tcp-route-invalid-backend-ref-nonexistent"),
        Reason::BackendNotFound,
    );
    expect(
        "tcproute-invalid-non-tcp-listener.yaml",
        &format!("TCPRoute {infra}/tcp-route"),
        Reason::NotAllowedByListeners,
    );
    expect(
        "udproute-not-allowed-by-listeners.yaml",
        &format!("UDPRoute {infra}/udproute-not-allowed-by-listeners"),
        Reason::NotAllowedByListeners,
    );
    for granted in [
        "tcproute-reference-grant.yaml",
        "udproute-reference-grant.yaml",
    ] {
        let res = &outcomes[granted];
        assert!(
            !res.diagnostics
                .iter()
                .any(|d| d.reason == Reason::RefNotPermitted),
            "{granted}: {:#?}",
            res.diagnostics
        );
    }
    let all = &outcomes["tcproute-parentref-attach-all.yaml"];
    let routes: std::collections::BTreeSet<&str> = all
        .snapshot
        .listeners()
        .iter()
        .filter(|l| l.protocol() == Protocol::Tcp)
        .map(|l| l.route())
        .collect();
    assert_eq!(routes.len(), 1, "{routes:?}");
    let weighted = &outcomes["tcproute-weighted-routing.yaml"];
    let weights: Vec<u32> = weighted.snapshot.listeners()[0]
        .groups()
        .iter()
        .map(|g| g.weight)
        .collect();
    assert_eq!(weights, [70, 30, 0]);
}

// ------------------------------------------------------- session affinity

/// TrafficPolicy `ns/name` with `spec.sessionAffinity` (a flow mapping).
fn affinity_policy(ns: &str, name: &str, created: &str, targets: &str, affinity: &str) -> String {
    let created = if created.is_empty() {
        String::new()
    } else {
        format!(", creationTimestamp: \"{created}\"")
    };
    format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: {ns}{created}}}\n\
         spec:\n  targetRefs: {targets}\n  sessionAffinity: {affinity}\n"
    )
}

const ON_ROUTE_R: &str = "[{group: gateway.networking.k8s.io, kind: TCPRoute, name: r}]";

fn on_service(name: &str) -> String {
    format!("[{{group: \"\", kind: Service, name: {name}}}]")
}

/// Service `ns/name` like `web`, with the given extra spec lines.
fn web_with(ns: &str, name: &str, addresses: &[&str], extra: &str) -> String {
    web(ns, name, addresses).replacen("  ports:", &format!("{extra}  ports:"), 1)
}

const CLIENT_IP: &str = "sessionAffinity: ClientIP\n";

fn affinity_of(res: &Resolution) -> Option<u32> {
    listener(res, "lb/edge/tcp")
        .affinity()
        .map(|a| a.timeout_secs)
}

fn one_backend_route() -> String {
    tcp_route(
        "lb",
        "r",
        "[{name: edge, sectionName: tcp}]",
        "[{name: echo, port: 80}]",
    )
}

fn two_backend_route() -> String {
    tcp_route(
        "lb",
        "r",
        "[{name: edge, sectionName: tcp}]",
        "[{name: echo, port: 80}, {name: other, port: 80}]",
    )
}

#[test]
fn listener_without_any_affinity_hashes_the_five_tuple() {
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
    ]);
    assert_eq!(affinity_of(&res), None);
}

#[test]
fn policy_on_route_sets_client_ip_affinity_with_default_timeout_10800() {
    let p = affinity_policy("lb", "p", "", ON_ROUTE_R, "{type: ClientIP}");
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &p,
    ]);
    assert!(
        policy_diagnostics(&res).is_empty(),
        "{:#?}",
        res.diagnostics
    );
    assert_eq!(affinity_of(&res), Some(10_800));
}

#[test]
fn policy_on_route_applies_even_with_several_backend_refs() {
    let p = affinity_policy(
        "lb",
        "p",
        "",
        ON_ROUTE_R,
        "{type: ClientIP, clientIP: {timeoutSeconds: 60}}",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &two_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &web("lb", "other", &["10.1.0.2"]),
        &p,
    ]);
    assert_eq!(affinity_of(&res), Some(60));
}

#[test]
fn service_spec_client_ip_applies_when_it_is_the_routes_only_backend_ref() {
    let svc = web_with(
        "lb",
        "echo",
        &["10.1.0.1"],
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}\n",
    );
    let res = compile(&[CLASS, &edge(), &one_backend_route(), &svc]);
    assert_eq!(affinity_of(&res), Some(300));
    let bare = web_with("lb", "echo", &["10.1.0.1"], &format!("  {CLIENT_IP}"));
    let res = compile(&[CLASS, &edge(), &one_backend_route(), &bare]);
    assert_eq!(affinity_of(&res), Some(10_800));
}

#[test]
fn policy_on_service_applies_when_it_is_the_routes_only_backend_ref() {
    let p = affinity_policy(
        "lb",
        "p",
        "",
        &on_service("echo"),
        "{type: ClientIP, clientIP: {timeoutSeconds: 90}}",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &p,
    ]);
    assert!(
        policy_diagnostics(&res).is_empty(),
        "{:#?}",
        res.diagnostics
    );
    assert_eq!(affinity_of(&res), Some(90));
}

#[test]
fn route_policy_beats_service_level_affinity() {
    let svc = web_with("lb", "echo", &["10.1.0.1"], &format!("  {CLIENT_IP}"));
    let off = affinity_policy("lb", "off", "", ON_ROUTE_R, "{type: None}");
    let res = compile(&[CLASS, &edge(), &one_backend_route(), &svc, &off]);
    assert_eq!(affinity_of(&res), None);
    let short = affinity_policy(
        "lb",
        "short",
        "",
        ON_ROUTE_R,
        "{type: ClientIP, clientIP: {timeoutSeconds: 5}}",
    );
    let res = compile(&[CLASS, &edge(), &one_backend_route(), &svc, &short]);
    assert_eq!(affinity_of(&res), Some(5));
}

#[test]
fn service_policy_beats_the_services_own_spec() {
    let svc = web_with("lb", "echo", &["10.1.0.1"], &format!("  {CLIENT_IP}"));
    let p = affinity_policy(
        "lb",
        "p",
        "",
        &on_service("echo"),
        "{type: ClientIP, clientIP: {timeoutSeconds: 77}}",
    );
    let res = compile(&[CLASS, &edge(), &one_backend_route(), &svc, &p]);
    assert_eq!(affinity_of(&res), Some(77));
}

#[test]
fn service_spec_affinity_with_several_backend_refs_is_not_applied_and_degrades_the_service() {
    let svc = web_with("lb", "echo", &["10.1.0.1"], &format!("  {CLIENT_IP}"));
    let res = compile(&[
        CLASS,
        &edge(),
        &two_backend_route(),
        &svc,
        &web("lb", "other", &["10.1.0.2"]),
    ]);
    assert_eq!(affinity_of(&res), None);
    let d = res
        .diagnostics
        .iter()
        .find(|d| d.reason == Reason::AffinityNotApplied)
        .expect("AffinityNotApplied");
    assert_eq!(d.resource(), "Service lb/echo");
    assert_eq!(d.condition, ConditionType::Degraded);
    assert_eq!(d.parent.as_deref(), Some("lb/r"));
}

#[test]
fn service_policy_with_several_backend_refs_is_not_applied_and_degrades_the_policy() {
    let p = affinity_policy("lb", "p", "", &on_service("echo"), "{type: ClientIP}");
    let res = compile(&[
        CLASS,
        &edge(),
        &two_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &web("lb", "other", &["10.1.0.2"]),
        &p,
    ]);
    assert_eq!(affinity_of(&res), None);
    assert!(
        has(&res, "TrafficPolicy lb/p", Reason::AffinityNotApplied),
        "{:#?}",
        res.diagnostics
    );
}

#[test]
fn session_affinity_targeting_a_gateway_is_invalid() {
    let p = affinity_policy("lb", "p", "", WHOLE_EDGE, "{type: ClientIP}");
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &p,
    ]);
    assert!(
        has(&res, "TrafficPolicy lb/p", Reason::Invalid),
        "{:#?}",
        res.diagnostics
    );
    assert_eq!(Reason::Invalid.condition(), ConditionType::Accepted);
    assert_eq!(affinity_of(&res), None);
}

#[test]
fn session_affinity_target_that_does_not_exist_is_target_not_found() {
    let p = affinity_policy("lb", "p", "", &on_service("missing"), "{type: ClientIP}");
    let res = compile(&[CLASS, &edge(), &p]);
    assert!(
        has(&res, "TrafficPolicy lb/p", Reason::TargetNotFound),
        "{:#?}",
        res.diagnostics
    );
}

#[test]
fn session_affinity_targets_only_objects_in_the_policys_namespace() {
    let p = affinity_policy("other", "p", "", ON_ROUTE_R, "{type: ClientIP}");
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &p,
    ]);
    assert_eq!(affinity_of(&res), None);
    assert!(has(&res, "TrafficPolicy other/p", Reason::TargetNotFound));
}

#[test]
fn older_of_two_route_affinity_policies_wins_and_the_other_is_conflicted() {
    let old = affinity_policy(
        "lb",
        "old",
        "2024-01-01T00:00:00Z",
        ON_ROUTE_R,
        "{type: ClientIP, clientIP: {timeoutSeconds: 11}}",
    );
    let new = affinity_policy(
        "lb",
        "new",
        "2025-01-01T00:00:00Z",
        ON_ROUTE_R,
        "{type: ClientIP, clientIP: {timeoutSeconds: 22}}",
    );
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &new,
        &old,
    ]);
    assert_eq!(affinity_of(&res), Some(11));
    assert!(has(&res, "TrafficPolicy lb/new", Reason::Conflicted));
}

#[test]
fn maglev_only_policy_targeting_a_route_is_still_invalid() {
    let p = traffic_policy("lb", "p", "", ON_ROUTE_R, 4093);
    let res = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
    ]);
    assert_eq!(affinity_of(&res), None);
    let res2 = compile(&[
        CLASS,
        &edge(),
        &one_backend_route(),
        &web("lb", "echo", &["10.1.0.1"]),
        &p,
    ]);
    assert!(has(&res2, "TrafficPolicy lb/p", Reason::Invalid));
}

#[test]
fn the_maglev_seed_changes_the_table_but_not_the_shares() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml");
    let resources = crate::load::load_file(path).unwrap();
    let table = |seed: u32| {
        let options = crate::resolve::Options {
            maglev_seed: seed,
            ..Default::default()
        };
        let res = checked(crate::resolve::resolve_with(&resources, 1, &options));
        listener(&res, "demo/edge/tcp-echo").slots().clone()
    };
    let share = |slots: &SlotTable| slots.iter().filter(|&s| s == Slot::Backend(0)).count();
    let (default, again, other) = (table(0), table(0), table(0x5eed));
    assert_eq!(default, again, "same seed, same table");
    assert_ne!(default, other, "another seed, another table");
    assert!(share(&default).abs_diff(share(&other)) <= 1);
}
