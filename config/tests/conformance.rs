//! The upstream Gateway API conformance tests for TCPRoute, UDPRoute,
//! ReferenceGrant and listeners, as assertions on what Switchyard resolves
//! from the same manifests. Each test loads, as the suite does, the base
//! manifests and one test's manifest (both vendored, unchanged, in
//! `conformance/upstream/`), plus what a cluster would supply
//! (`conformance/fixtures.yaml`: the GatewayClass and EndpointSlices). The
//! upstream Gateways have no addresses; a cluster would assign them, so
//! each gets a static one from 192.0.2.0/24 here.
//!
//! Where an upstream test needs a second object applied later (the newer
//! route of the multiple-routes tests) the test adds it with a later
//! creationTimestamp. Where an upstream manifest uses HTTP listeners to
//! make a point about listeners in general, a second test makes the same
//! point with the L4 equivalent (TCP, TCPRoute), since Switchyard serves
//! no HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard_config::resources::{GatewayAddress, Resources};
use switchyard_config::snapshot::{Listener, Protocol, Slot};
use switchyard_config::status::{
    Condition, ConditionStatus, ListenerStatus, ResourceStatus, RouteGroupKind, RouteParentStatus,
    Status,
};
use switchyard_config::{load_str, Resolution};

/// `--gateway-class` of the upstream suite's runs against Switchyard.
const CLASS: &str = "gateway-conformance";
const INFRA: &str = "gateway-conformance-infra";
const CONTROLLER: &str = "switchyard.io/gateway-controller";

/// Resolution as every test here sees it: checked, whatever it is
/// otherwise asserted on, for a condition type repeated in one list
/// (which an API server would refuse to store).
#[track_caller]
fn resolve(resources: &Resources, generation: u64) -> Resolution {
    let res = switchyard_config::resolve(resources, generation);
    let repeated = res.repeated_condition_types();
    assert!(
        repeated.is_empty(),
        "repeated condition types: {repeated:#?}"
    );
    res
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// A vendored file with the suite's `{GATEWAY_CLASS_NAME}` and
/// `{GATEWAY_CONTROLLER_NAME}` placeholders filled in, as the suite does
/// before applying it.
fn text(relative: &str) -> String {
    let path = dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.replace("{GATEWAY_CLASS_NAME}", CLASS)
        .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER)
}

fn load(name: &str, text: &str) -> Resources {
    load_str(name, text).unwrap_or_else(|e| panic!("{e}"))
}

/// Base manifests, fixtures and one test manifest (given as text, so a
/// test can state an L4 reading of it), with addresses assigned.
fn world_from(test_name: &str, test_text: &str) -> Resources {
    let mut resources = load(
        "base/manifests.yaml",
        &text("upstream/conformance/base/manifests.yaml"),
    );
    resources.extend(load("fixtures.yaml", &text("fixtures.yaml")));
    resources.extend(load(test_name, test_text));
    assign_addresses(&mut resources);
    resources
}

fn world(test: &str) -> Resources {
    world_from(test, &text(&format!("upstream/conformance/tests/{test}")))
}

fn run(test: &str) -> Resolution {
    resolve(&world(test), 1)
}

/// A distinct address per Gateway, by namespace/name, so the result does
/// not depend on document order.
fn assign_addresses(resources: &mut Resources) {
    let mut names: Vec<String> = resources
        .gateways
        .iter()
        .map(|g| g.metadata.key())
        .collect();
    names.sort();
    for gateway in &mut resources.gateways {
        if gateway.spec.addresses.is_empty() {
            let n = names
                .iter()
                .position(|k| *k == gateway.metadata.key())
                .unwrap();
            gateway.spec.addresses.push(GatewayAddress {
                address_type: "IPAddress".to_owned(),
                value: Some(format!("192.0.2.{}", n + 1)),
            });
        }
    }
}

// ----------------------------------------------------------------- lookups

fn resource<'a>(res: &'a Resolution, kind: &str, name: &str) -> &'a ResourceStatus {
    res.statuses
        .iter()
        .find(|s| s.kind == kind && s.metadata.namespace == INFRA && s.metadata.name == name)
        .unwrap_or_else(|| panic!("no status for {kind} {INFRA}/{name}: {:#?}", res.statuses))
}

fn gateway_conditions<'a>(res: &'a Resolution, gateway: &str) -> &'a [Condition] {
    resource(res, "Gateway", gateway).status.conditions()
}

fn listeners<'a>(res: &'a Resolution, gateway: &str) -> &'a [ListenerStatus] {
    match &resource(res, "Gateway", gateway).status {
        Status::Gateway(s) => &s.listeners,
        other => panic!("not a Gateway status: {other:?}"),
    }
}

fn listener_status<'a>(res: &'a Resolution, gateway: &str, name: &str) -> &'a ListenerStatus {
    listeners(res, gateway)
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name} on {gateway}"))
}

/// The route's status for its parentRef to `gateway`, which upstream's
/// `*RouteMustHaveCondition` looks up by the Gateway's namespace/name.
fn parent<'a>(
    res: &'a Resolution,
    kind: &str,
    route: &str,
    gateway: &str,
) -> &'a RouteParentStatus {
    let Status::Route(status) = &resource(res, kind, route).status else {
        panic!("not a route status");
    };
    status
        .parents
        .iter()
        .find(|p| p.parent_ref.name == gateway && p.parent_ref.namespace.as_deref() == Some(INFRA))
        .unwrap_or_else(|| panic!("{kind} {route} has no parent {gateway}: {status:#?}"))
}

/// Like upstream's condition matchers: type, status and reason must match
/// (an empty reason matches any), and the observed generation is current.
#[track_caller]
fn assert_condition(conditions: &[Condition], condition_type: &str, status: bool, reason: &str) {
    let found = conditions
        .iter()
        .find(|c| c.condition_type == condition_type)
        .unwrap_or_else(|| panic!("no {condition_type} condition in {conditions:#?}"));
    assert_eq!(
        (found.status, found.reason.as_str()),
        (
            ConditionStatus::from_bool(status),
            if reason.is_empty() {
                found.reason.as_str()
            } else {
                reason
            }
        ),
        "{condition_type}: {found:#?}"
    );
    assert_eq!(found.observed_generation, 1);
    assert!(!found.message.is_empty());
}

/// Upstream `GatewayAndTCPRoutesMustBeAccepted` / `...UDPRoutes...`: the
/// Gateway is Accepted and Programmed with an address, and each route is
/// Accepted by it, written by Switchyard's controller.
#[track_caller]
fn assert_gateway_and_routes_accepted(
    res: &Resolution,
    gateway: &str,
    kind: &str,
    routes: &[&str],
) {
    let conditions = gateway_conditions(res, gateway);
    assert_condition(conditions, "Accepted", true, "");
    assert_condition(conditions, "Programmed", true, "Programmed");
    let Status::Gateway(status) = &resource(res, "Gateway", gateway).status else {
        unreachable!()
    };
    assert!(!status.addresses.is_empty(), "{status:#?}");
    for route in routes {
        let parent = parent(res, kind, route, gateway);
        assert_eq!(parent.controller_name, CONTROLLER);
        assert_condition(&parent.conditions, "Accepted", true, "Accepted");
    }
}

/// Upstream `GatewayMustHaveZeroRoutes`.
#[track_caller]
fn assert_zero_routes(res: &Resolution, gateway: &str) {
    for l in listeners(res, gateway) {
        assert_eq!(l.attached_routes, 0, "{l:#?}");
    }
}

fn snapshot_listener<'a>(res: &'a Resolution, gateway: &str, listener: &str) -> &'a Listener {
    let name = format!("{INFRA}/{gateway}/{listener}");
    res.snapshot
        .find_listener(&name)
        .unwrap_or_else(|| panic!("no listener {name} in the snapshot"))
}

/// Share of the slot table per backendRef (`namespace/name`); unavailable
/// slots count under `""`.
fn shares(listener: &Listener) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = listener
        .groups()
        .iter()
        .map(|g| (g.service.clone(), 0))
        .collect();
    for slot in listener.slots() {
        let owner = match slot {
            Slot::Backend(i) => {
                let group = listener.backends()[i as usize].group as usize;
                listener.groups()[group].service.clone()
            }
            Slot::Unavailable => String::new(),
        };
        *counts.entry(owner).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| (k, n as f64 / listener.slots().len() as f64))
        .collect()
}

fn endpoint_addresses(listener: &Listener) -> Vec<String> {
    listener
        .backends()
        .iter()
        .map(|b| b.endpoint.address.to_string())
        .collect()
}

// ----------------------------------------------------- the GatewayClass

#[test]
fn conformance_gateway_class_is_accepted() {
    let res = run("tcproute-parentref-attach-all.yaml");
    let class = res
        .statuses
        .iter()
        .find(|s| s.kind == "GatewayClass" && s.metadata.name == CLASS)
        .expect("the conformance GatewayClass has status");
    assert!(class.metadata.namespace.is_empty());
    assert_condition(class.status.conditions(), "Accepted", true, "Accepted");
}

// ------------------------------------------------------------- TCPRoute

#[test]
fn tcproute_invalid_cross_namespace_backend_ref_is_ref_not_permitted() {
    // TCPRouteInvalidCrossNamespaceBackendRef
    let res = run("tcproute-invalid-cross-namespace-backend-ref.yaml");
    let gateway = "tcp-invalid-cross-namespace-backend-ref-gateway";
    let route = "tcp-invalid-cross-namespace-backend-ref";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    let parent = parent(&res, "TCPRoute", route, gateway);
    assert_condition(&parent.conditions, "ResolvedRefs", false, "RefNotPermitted");
    // The denied backend's share is refused, not given to another.
    let listener = snapshot_listener(&res, gateway, "tcp");
    assert!(listener.backends().is_empty());
    assert!(listener.slots().iter().all(|s| s == Slot::Unavailable));
}

#[test]
fn tcproute_invalid_backendref_nonexistent_is_backend_not_found() {
    // TCPRouteInvalidBackendRefNonexistent
    let res = run("tcproute-invalid-backendref-nonexistent.yaml");
    let gateway = "tcp-gateway-invalid-backend";
    let route = "tcp-route-invalid-backend-ref-nonexistent";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    let parent = parent(&res, "TCPRoute", route, gateway);
    assert_condition(&parent.conditions, "ResolvedRefs", false, "BackendNotFound");
    let listener = snapshot_listener(&res, gateway, "tcp");
    assert!(listener.slots().iter().all(|s| s == Slot::Unavailable));
}

#[test]
fn tcproute_on_a_non_tcp_listener_is_not_allowed() {
    // TCPRouteInvalidNonTCPListener
    let res = run("tcproute-invalid-non-tcp-listener.yaml");
    let gateway = "tcp-mixed-protocol-gateway";
    let parent = parent(&res, "TCPRoute", "tcp-route", gateway);
    assert_condition(
        &parent.conditions,
        "Accepted",
        false,
        "NotAllowedByListeners",
    );
    assert_zero_routes(&res, gateway);
}

#[test]
fn tcproute_parent_ref_without_section_or_port_attaches_to_all_listeners() {
    // TCPRouteParentRefAttachAll
    let res = run("tcproute-parentref-attach-all.yaml");
    let gateway = "tcp-attach-all-gateway";
    let route = "tcp-route-attach-all";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let names: Vec<&str> = listeners(&res, gateway)
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["one", "two", "three", "four"]);
    for name in names {
        let status = listener_status(&res, gateway, name);
        assert_eq!(status.attached_routes, 1, "{status:#?}");
        assert_eq!(status.supported_kinds.len(), 1);
        assert_eq!(status.supported_kinds[0].kind, "TCPRoute");
        assert_eq!(status.supported_kinds[0].group, "gateway.networking.k8s.io");
        assert_condition(&status.conditions, "Accepted", true, "");
        assert_condition(&status.conditions, "ResolvedRefs", true, "");
        assert_condition(&status.conditions, "Programmed", true, "Programmed");
        assert_condition(&status.conditions, "Conflicted", false, "NoConflicts");
        let served = snapshot_listener(&res, gateway, name);
        assert_eq!(served.route(), format!("{INFRA}/{route}"));
        assert_eq!(served.backends().len(), 2);
    }
}

#[test]
fn tcproute_parent_ref_port_and_section_name_select_one_listener_each() {
    // TCPRouteParentRefPortAndSectionName
    let res = run("tcproute-parentref-port-and-section-name.yaml");
    let gateway = "tcp-multi-listener-gateway";
    let routes = [
        ("one", "tcp-route-by-port", "tcp-echo-one"),
        ("two", "tcp-route-by-section", "tcp-echo-two"),
        ("three", "tcp-route-by-section-and-port", "tcp-echo-three"),
    ];
    let names: Vec<&str> = routes.iter().map(|r| r.1).collect();
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &names);
    for (listener, route, service) in routes {
        assert_eq!(listener_status(&res, gateway, listener).attached_routes, 1);
        let served = snapshot_listener(&res, gateway, listener);
        assert_eq!(served.route(), format!("{INFRA}/{route}"));
        assert_eq!(served.groups().len(), 1);
        assert_eq!(served.groups()[0].service, format!("{INFRA}/{service}"));
    }
    // The parentRef is echoed as given, defaults applied.
    let by_port = &parent(&res, "TCPRoute", "tcp-route-by-port", gateway).parent_ref;
    assert_eq!(
        (by_port.group.as_str(), by_port.kind.as_str(), by_port.port),
        ("gateway.networking.k8s.io", "Gateway", Some(9300))
    );
    assert_eq!(by_port.section_name, None);
}

#[test]
fn tcproute_multiple_routes_on_one_listener_are_all_accepted_and_the_oldest_carries() {
    // TCPRouteMultipleRoutesAttachment
    let mut resources = world("tcproute-multiple-routes-attachment.yaml");
    add_newer_route(
        &mut resources,
        "TCPRoute",
        "tcproute-attach-older",
        "tcproute-attach-newer",
        "tcp-multi-route-attach-gateway",
        "tcp",
        "tcp-attach-backend-2",
        3000,
    );
    let res = resolve(&resources, 1);
    let gateway = "tcp-multi-route-attach-gateway";
    assert_gateway_and_routes_accepted(
        &res,
        gateway,
        "TCPRoute",
        &["tcproute-attach-older", "tcproute-attach-newer"],
    );
    let listener = listener_status(&res, gateway, "tcp");
    assert_eq!(listener.attached_routes, 2);
    assert_eq!(listener.supported_kinds.len(), 1);
    assert_eq!(listener.supported_kinds[0].kind, "TCPRoute");
    assert_condition(&listener.conditions, "Accepted", true, "Accepted");
    let served = snapshot_listener(&res, gateway, "tcp");
    assert_eq!(served.route(), format!("{INFRA}/tcproute-attach-older"));
    assert_eq!(
        served
            .groups()
            .iter()
            .map(|g| g.service.as_str())
            .collect::<Vec<_>>(),
        [format!("{INFRA}/tcp-attach-backend-1")]
    );
}

#[test]
fn tcproute_reference_grant_permits_the_cross_namespace_backend() {
    // TCPRouteReferenceGrant
    let res = run("tcproute-reference-grant.yaml");
    let gateway = "tcp-reference-grant-gateway";
    let route = "tcp-reference-grant";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let served = snapshot_listener(&res, gateway, "tcp");
    assert_eq!(
        served.groups()[0].service,
        "gateway-conformance-web-backend/tcp-reference-grant-backend"
    );
    assert_eq!(served.backends().len(), 2);
    assert!(served.slots().iter().all(|s| s != Slot::Unavailable));
}

#[test]
fn tcproute_reference_grant_for_another_route_kind_does_not_permit() {
    // The grant names TCPRoutes only: the same reference from a UDPRoute
    // stays refused (ReferenceGrant `from` is per kind).
    let manifest = text("upstream/conformance/tests/tcproute-reference-grant.yaml").replace(
        "kind: TCPRoute\n      namespace",
        "kind: UDPRoute\n      namespace",
    );
    let res = resolve(&world_from("tcproute-reference-grant.yaml", &manifest), 1);
    let parent = parent(
        &res,
        "TCPRoute",
        "tcp-reference-grant",
        "tcp-reference-grant-gateway",
    );
    assert_condition(&parent.conditions, "ResolvedRefs", false, "RefNotPermitted");
}

#[test]
fn tcproute_weighted_routing_splits_70_30_0() {
    // TCPRouteWeightedRouting (the slot shares the traffic follows)
    let res = run("tcproute-weighted-routing.yaml");
    let gateway = "tcp-weighted-gateway";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &["tcp-weighted-route"]);
    assert_weighted(snapshot_listener(&res, gateway, "tcp"), "tcp-backend");
}

// ------------------------------------------------------------- UDPRoute

#[test]
fn udproute_simple_is_accepted_and_served() {
    // UDPRouteTest
    let res = run("udproute-simple.yaml");
    assert_gateway_and_routes_accepted(&res, "udp-gateway", "UDPRoute", &["udp-coredns"]);
    let served = snapshot_listener(&res, "udp-gateway", "coredns");
    assert_eq!(served.protocol(), Protocol::Udp);
    assert_eq!(served.port(), 5300);
    assert_eq!(served.backends().len(), 2);
    assert!(served.backends().iter().all(|b| b.endpoint.port == 53));
}

#[test]
fn udproute_invalid_backendref_nonexistent_is_backend_not_found() {
    // UDPRouteInvalidBackendRefNonexistent
    let res = run("udproute-invalid-backendref-nonexistent.yaml");
    let gateway = "udp-gateway-invalid-backend";
    let route = "udp-route-invalid-backend-ref-nonexistent";
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &[route]);
    let parent = parent(&res, "UDPRoute", route, gateway);
    assert_condition(&parent.conditions, "ResolvedRefs", false, "BackendNotFound");
    let listener = snapshot_listener(&res, gateway, "udp");
    assert!(listener.slots().iter().all(|s| s == Slot::Unavailable));
}

#[test]
fn udproute_invalid_cross_namespace_backend_ref_is_ref_not_permitted() {
    // UDPRouteInvalidCrossNamespaceBackendRef
    let res = run("udproute-invalid-cross-namespace-backend-ref.yaml");
    let gateway = "udp-gateway-invalid-cross-namespace-backend-ref";
    let route = "udp-route-invalid-cross-namespace-backend-ref";
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &[route]);
    let parent = parent(&res, "UDPRoute", route, gateway);
    assert_condition(&parent.conditions, "ResolvedRefs", false, "RefNotPermitted");
    assert!(snapshot_listener(&res, gateway, "udp")
        .backends()
        .is_empty());
}

#[test]
fn udproute_on_a_non_udp_listener_is_not_allowed() {
    // UDPRouteNotAllowedByListener
    let res = run("udproute-not-allowed-by-listeners.yaml");
    let gateway = "udproute-tls-only-gateway";
    let parent = parent(
        &res,
        "UDPRoute",
        "udproute-not-allowed-by-listeners",
        gateway,
    );
    assert_condition(
        &parent.conditions,
        "Accepted",
        false,
        "NotAllowedByListeners",
    );
    assert_zero_routes(&res, gateway);
}

#[test]
fn udproute_parent_ref_without_section_or_port_attaches_to_all_listeners() {
    // UDPRouteParentRefAttachAllListeners
    let res = run("udproute-parentref-attach-all-listeners.yaml");
    let gateway = "udp-attach-all-listeners-gateway";
    let route = "udp-route-attach-all";
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &[route]);
    let parent = parent(&res, "UDPRoute", route, gateway);
    // Upstream expects exactly this parentRef: defaults and the route's
    // namespace filled in.
    let echoed = &parent.parent_ref;
    assert_eq!(
        (
            echoed.group.as_str(),
            echoed.kind.as_str(),
            echoed.namespace.as_deref(),
            echoed.name.as_str(),
            echoed.section_name.as_deref(),
            echoed.port
        ),
        (
            "gateway.networking.k8s.io",
            "Gateway",
            Some(INFRA),
            gateway,
            None,
            None
        )
    );
    for name in ["udp-1", "udp-2", "udp-3"] {
        let status = listener_status(&res, gateway, name);
        assert_eq!(status.attached_routes, 1);
        assert_eq!(status.supported_kinds.len(), 1);
        assert_eq!(status.supported_kinds[0].kind, "UDPRoute");
        assert_condition(&status.conditions, "Accepted", true, "");
        assert_condition(&status.conditions, "ResolvedRefs", true, "");
        let served = snapshot_listener(&res, gateway, name);
        assert_eq!(
            served.groups()[0].service,
            format!("{INFRA}/udp-echo-attach-all")
        );
        assert_eq!(served.backends().len(), 2);
    }
}

#[test]
fn udproute_parent_ref_port_and_section_name_select_one_listener_each() {
    // UDPRouteParentRefPortAndSectionName
    let res = run("udproute-parentref-port-and-section-name.yaml");
    let gateway = "udp-multi-listener-gateway";
    let routes = [
        ("by-port", "udp-route-by-port", "udp-echo-by-port"),
        ("by-section", "udp-route-by-section", "udp-echo-by-section"),
        (
            "by-section-and-port",
            "udp-route-by-section-and-port",
            "udp-echo-by-section-and-port",
        ),
    ];
    let names: Vec<&str> = routes.iter().map(|r| r.1).collect();
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &names);
    for (listener, route, service) in routes {
        assert_eq!(listener_status(&res, gateway, listener).attached_routes, 1);
        let served = snapshot_listener(&res, gateway, listener);
        assert_eq!(served.route(), format!("{INFRA}/{route}"));
        assert_eq!(served.groups()[0].service, format!("{INFRA}/{service}"));
    }
}

#[test]
fn udproute_multiple_routes_on_one_listener_are_all_accepted_and_the_oldest_carries() {
    // UDPRouteMultipleRoutesAttachment
    let mut resources = world("udproute-multiple-routes-attachment.yaml");
    add_newer_route(
        &mut resources,
        "UDPRoute",
        "udproute-attach-older",
        "udproute-attach-newer",
        "udp-multi-route-attach-gateway",
        "udp",
        "udp-attach-backend-2",
        8080,
    );
    let res = resolve(&resources, 1);
    let gateway = "udp-multi-route-attach-gateway";
    assert_gateway_and_routes_accepted(
        &res,
        gateway,
        "UDPRoute",
        &["udproute-attach-older", "udproute-attach-newer"],
    );
    let listener = listener_status(&res, gateway, "udp");
    assert_eq!(listener.attached_routes, 2);
    assert_eq!(listener.supported_kinds[0].kind, "UDPRoute");
    assert_condition(&listener.conditions, "Accepted", true, "Accepted");
    let served = snapshot_listener(&res, gateway, "udp");
    assert_eq!(served.route(), format!("{INFRA}/udproute-attach-older"));
    assert_eq!(
        served.groups()[0].service,
        format!("{INFRA}/udp-attach-backend-1")
    );
}

#[test]
fn udproute_reference_grant_permits_the_cross_namespace_backend() {
    // UDPRouteReferenceGrant
    let res = run("udproute-reference-grant.yaml");
    let gateway = "udp-gateway-reference-grant";
    let route = "udp-route-reference-grant";
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &[route]);
    assert_condition(
        &parent(&res, "UDPRoute", route, gateway).conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let served = snapshot_listener(&res, gateway, "udp");
    assert_eq!(
        served.groups()[0].service,
        "gateway-conformance-app-backend/udp-echo-reference-grant"
    );
    assert_eq!(endpoint_addresses(served).len(), 2);
}

#[test]
fn udproute_reference_grant_naming_another_service_does_not_permit() {
    // A grant `to` a named Service covers that Service only.
    let manifest = text("upstream/conformance/tests/udproute-reference-grant.yaml").replace(
        "      name: udp-echo-reference-grant\n---",
        "      name: some-other-service\n---",
    );
    assert!(manifest.contains("some-other-service"));
    let res = resolve(&world_from("udproute-reference-grant.yaml", &manifest), 1);
    let parent = parent(
        &res,
        "UDPRoute",
        "udp-route-reference-grant",
        "udp-gateway-reference-grant",
    );
    assert_condition(&parent.conditions, "ResolvedRefs", false, "RefNotPermitted");
}

#[test]
fn udproute_weighted_routing_splits_70_30_0() {
    // UDPRouteWeightedRouting (the slot shares the traffic follows)
    let res = run("udproute-weighted-routing.yaml");
    let gateway = "udp-weighted-gateway";
    assert_gateway_and_routes_accepted(&res, gateway, "UDPRoute", &["udp-weighted-route"]);
    assert_weighted(snapshot_listener(&res, gateway, "udp"), "udp-backend");
}

#[track_caller]
fn assert_weighted(listener: &Listener, prefix: &str) {
    let shares = shares(listener);
    let share = |v: &str| shares[&format!("{INFRA}/{prefix}-{v}")];
    // Maglev fills M = 65537 slots within a slot or so of the weights;
    // the upstream test allows ±5% over real traffic.
    assert!((share("v1") - 0.70).abs() < 0.001, "{shares:?}");
    assert!((share("v2") - 0.30).abs() < 0.001, "{shares:?}");
    assert_eq!(share("v3"), 0.0, "{shares:?}");
    assert!(
        !shares.contains_key(""),
        "no slot is unavailable: {shares:?}"
    );
}

// ------------------------------------------------------------- listeners

#[test]
fn gateway_listener_with_unsupported_protocol_is_not_accepted() {
    // GatewayListenerUnsupportedProtocol, as written: Switchyard serves
    // neither INVALID nor HTTP, so no listener of either Gateway is
    // accepted, and neither is the Gateway.
    let res = run("gateway-invalid-listeners-unsupported-protocol.yaml");
    for gateway in [
        "gateway-only-unsupported-protocols",
        "gateway-supported-and-unsupported-protocols",
    ] {
        assert_condition(
            gateway_conditions(&res, gateway),
            "Accepted",
            false,
            "ListenersNotValid",
        );
        let invalid = listener_status(&res, gateway, "invalid");
        assert!(invalid.supported_kinds.is_empty());
        assert_eq!(invalid.attached_routes, 0);
        assert_condition(
            &invalid.conditions,
            "Accepted",
            false,
            "UnsupportedProtocol",
        );
    }
    let http = listener_status(&res, "gateway-supported-and-unsupported-protocols", "http");
    assert_condition(&http.conditions, "Accepted", false, "UnsupportedProtocol");
}

#[test]
fn gateway_with_one_supported_listener_is_accepted_with_listeners_not_valid() {
    // GatewayListenerUnsupportedProtocol, L4 reading: the supported
    // listener is TCP.
    let manifest =
        text("upstream/conformance/tests/gateway-invalid-listeners-unsupported-protocol.yaml")
            .replace("protocol: HTTP", "protocol: TCP");
    let res = resolve(
        &world_from(
            "gateway-invalid-listeners-unsupported-protocol.yaml",
            &manifest,
        ),
        1,
    );
    let gateway = "gateway-supported-and-unsupported-protocols";
    assert_condition(
        gateway_conditions(&res, gateway),
        "Accepted",
        true,
        "ListenersNotValid",
    );
    let tcp = listener_status(&res, gateway, "http");
    assert_eq!(tcp.supported_kinds.len(), 1);
    assert_eq!(tcp.supported_kinds[0].kind, "TCPRoute");
    assert_eq!(tcp.attached_routes, 0);
    assert_condition(&tcp.conditions, "Accepted", true, "Accepted");
    let invalid = listener_status(&res, gateway, "invalid");
    assert!(invalid.supported_kinds.is_empty());
    assert_condition(
        &invalid.conditions,
        "Accepted",
        false,
        "UnsupportedProtocol",
    );
    assert_condition(&invalid.conditions, "Programmed", false, "Invalid");
}

#[test]
fn gateway_listener_with_invalid_route_kind_has_resolved_refs_false() {
    // GatewayInvalidRouteKind, L4 reading: the listeners are TCP and the
    // supported kind is TCPRoute.
    let manifest = text("upstream/conformance/tests/gateway-invalid-route-kind.yaml")
        .replace("protocol: HTTP", "protocol: TCP")
        .replace("kind: HTTPRoute", "kind: TCPRoute");
    let res = resolve(&world_from("gateway-invalid-route-kind.yaml", &manifest), 1);

    let only = listener_status(&res, "gateway-only-invalid-route-kind", "http");
    assert!(only.supported_kinds.is_empty(), "{only:#?}");
    assert_eq!(only.attached_routes, 0);
    assert_condition(&only.conditions, "ResolvedRefs", false, "InvalidRouteKinds");

    let both = listener_status(&res, "gateway-supported-and-invalid-route-kind", "http");
    assert_eq!(both.supported_kinds.len(), 1);
    assert_eq!(both.supported_kinds[0].kind, "TCPRoute");
    assert_eq!(both.supported_kinds[0].group, "gateway.networking.k8s.io");
    assert_eq!(both.attached_routes, 0);
    assert_condition(&both.conditions, "ResolvedRefs", false, "InvalidRouteKinds");
}

#[test]
fn base_gateways_with_http_listeners_are_not_accepted() {
    // The base manifests' Gateways are HTTP(S) only; Switchyard says so
    // rather than pretending to serve them.
    let res = run("udproute-simple.yaml");
    for gateway in ["same-namespace", "all-namespaces", "backend-namespaces"] {
        assert_condition(
            gateway_conditions(&res, gateway),
            "Accepted",
            false,
            "ListenersNotValid",
        );
        assert_condition(
            gateway_conditions(&res, gateway),
            "Programmed",
            false,
            "Invalid",
        );
    }
}

/// The L4 reading of an HTTP listener manifest: HTTP listeners become TCP
/// ones, HTTPRoutes TCPRoutes. Listener hostnames (which TCP listeners may
/// not have) and documents naming `drop` go, since L4 has no hostnames to
/// match.
fn l4_reading(manifest: &str, drop: &[&str]) -> String {
    manifest
        .split("\n---\n")
        .filter(|doc| {
            !drop
                .iter()
                .any(|name| doc.contains(&format!("name: {name}\n")))
        })
        .map(|doc| {
            doc.lines()
                .filter(|l| !l.trim_start().starts_with("hostname:"))
                .map(|l| {
                    if l.trim_end().ends_with("protocol: HTTP") {
                        l.replace("protocol: HTTP", "protocol: TCP")
                    } else {
                        l.replace("kind: HTTPRoute", "kind: TCPRoute")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn gateway_with_attached_routes_counts_each_attached_route() {
    // GatewayWithAttachedRoutes, L4 reading. http-route-not-accepted
    // differs from the others only by a hostname, which L4 cannot match
    // on, so it is left out.
    let file = "gateway-with-attached-routes.yaml";
    let manifest = l4_reading(
        &text(&format!("upstream/conformance/tests/{file}")),
        &["http-route-not-accepted"],
    );
    let res = resolve(&world_from(file, &manifest), 1);
    for (gateway, attached) in [
        ("gateway-with-one-attached-route", 1),
        ("gateway-with-two-attached-routes", 2),
    ] {
        let listener = listener_status(&res, gateway, "http");
        assert_eq!(listener.attached_routes, attached, "{listener:#?}");
        assert_eq!(listener.supported_kinds[0].kind, "TCPRoute");
        assert_condition(&listener.conditions, "Accepted", true, "");
        assert_condition(&listener.conditions, "ResolvedRefs", true, "");
    }
    // Attaching to a listener that is not accepted (HTTPS) is refused and
    // not counted.
    let gateway = "unresolved-gateway-with-one-attached-unresolved-route";
    assert_zero_routes(&res, gateway);
    let parent = parent(&res, "TCPRoute", "http-route-4", gateway);
    assert_condition(
        &parent.conditions,
        "Accepted",
        false,
        "NotAllowedByListeners",
    );
}

#[test]
fn gateway_with_attached_routes_on_port_8080_counts_per_listener() {
    // GatewayWithAttachedRoutesWithPort8080, L4 reading.
    let file = "gateway-with-attached-routes-with-port-8080.yaml";
    let manifest = l4_reading(&text(&format!("upstream/conformance/tests/{file}")), &[]);
    let res = resolve(&world_from(file, &manifest), 1);
    let gateway = "gateway-with-two-listeners-and-one-attached-route";
    for (listener, attached) in [("http-unattached", 0), ("http", 1)] {
        let status = listener_status(&res, gateway, listener);
        assert_eq!(status.attached_routes, attached, "{status:#?}");
        assert_condition(&status.conditions, "Accepted", true, "");
        assert_condition(&status.conditions, "ResolvedRefs", true, "");
    }
}

#[test]
fn gateway_observed_generation_follows_the_spec_generation() {
    // GatewayObservedGenerationBump, L4 reading: after a listener is added
    // (generation 2), every condition of the Gateway and its listeners
    // reports generation 2.
    let file = "gateway-observed-generation-bump.yaml";
    let manifest = l4_reading(&text(&format!("upstream/conformance/tests/{file}")), &[]);
    let mut resources = world_from(file, &manifest);
    let gateway = "gateway-observed-generation-bump";
    let generations = |res: &Resolution| -> Vec<i64> {
        let mut all: Vec<i64> = gateway_conditions(res, gateway)
            .iter()
            .map(|c| c.observed_generation)
            .collect();
        for l in listeners(res, gateway) {
            all.extend(l.conditions.iter().map(|c| c.observed_generation));
        }
        all
    };
    let before = resolve(&resources, 1);
    assert!(generations(&before).iter().all(|&g| g == 1));
    assert_condition(
        gateway_conditions(&before, gateway),
        "Accepted",
        true,
        "Accepted",
    );

    let spec = resources
        .gateways
        .iter_mut()
        .find(|g| g.metadata.name == gateway)
        .unwrap();
    let mut added = spec.spec.listeners[0].clone();
    added.name = "tcp-2".to_owned();
    added.port += 1;
    spec.spec.listeners.push(added);
    spec.metadata.generation = Some(2);
    let after = resolve(&resources, 2);
    assert_eq!(listeners(&after, gateway).len(), 2);
    assert!(
        generations(&after).iter().all(|&g| g == 2),
        "{:?}",
        generations(&after)
    );
}

// ----------------------------------------------------------------- helpers

/// The second route an upstream multiple-routes test applies once the
/// first is accepted: same listener, another backend, created later.
#[allow(clippy::too_many_arguments)]
fn add_newer_route(
    resources: &mut Resources,
    kind: &str,
    older: &str,
    newer: &str,
    gateway: &str,
    section: &str,
    backend: &str,
    port: u16,
) {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\n\
         kind: {kind}\n\
         metadata:\n  name: {newer}\n  namespace: {INFRA}\n  \
         creationTimestamp: \"2026-01-01T00:00:05Z\"\n\
         spec:\n  parentRefs:\n  - name: {gateway}\n    sectionName: {section}\n  \
         rules:\n  - backendRefs:\n    - name: {backend}\n      port: {port}\n"
    );
    let added = load("newer-route.yaml", &yaml);
    let older_yaml = yaml.replace(newer, older).replace("00:00:05Z", "00:00:00Z");
    let older_time = load("older-route.yaml", &older_yaml).routes[0]
        .metadata
        .creation_timestamp
        .clone();
    let older_route = resources
        .routes
        .iter_mut()
        .find(|r| r.metadata.name == older)
        .expect("the older route is in the manifest");
    older_route.metadata.creation_timestamp = older_time;
    resources.extend(added);
}

#[test]
fn upstream_files_are_vendored() {
    // The tests above must never skip for want of their input.
    for file in [
        "upstream/README.md",
        "upstream/LICENSE",
        "upstream/conformance/base/manifests.yaml",
        "fixtures.yaml",
    ] {
        assert!(dir().join(file).is_file(), "{file} is missing");
    }
}

// --------------------------------------------------------------- addresses

fn gateway_addresses(res: &Resolution, gateway: &str) -> Vec<String> {
    match &resource(res, "Gateway", gateway).status {
        Status::Gateway(s) => s.addresses.iter().map(|a| a.value.clone()).collect(),
        other => panic!("not a Gateway status: {other:?}"),
    }
}

#[test]
fn gateway_static_addresses_unsupported_then_unusable_then_programmed() {
    // GatewayStaticAddresses, L4 reading, with the suite's placeholders
    // filled as a run against Switchyard would fill them: loopback is never
    // usable for a VIP, a documentation address is.
    let manifest = l4_reading(
        &text("upstream/conformance/tests/gateway-static-addresses.yaml"),
        &[],
    )
    .replace("PLACEHOLDER_UNUSABLE_ADDRS", "127.0.0.1")
    .replace("PLACEHOLDER_USABLE_ADDRS", "192.0.2.200");
    let gateway = "gateway-static-addresses";

    // As applied: the fake address type makes the Gateway not accepted.
    let mut resources = world_from("gateway-static-addresses.yaml", &manifest);
    let res = resolve(&resources, 1);
    assert_condition(
        gateway_conditions(&res, gateway),
        "Accepted",
        false,
        "UnsupportedAddress",
    );

    // The suite removes the fake type: accepted, but an address is unusable.
    let spec = &mut resources
        .gateways
        .iter_mut()
        .find(|g| g.metadata.name == gateway)
        .unwrap()
        .spec;
    spec.addresses.retain(|a| a.address_type == "IPAddress");
    let res = resolve(&resources, 1);
    let conditions = gateway_conditions(&res, gateway);
    assert_condition(conditions, "Accepted", true, "");
    assert_condition(conditions, "Programmed", false, "AddressNotUsable");

    // Then the unusable one: programmed on the usable address.
    let spec = &mut resources
        .gateways
        .iter_mut()
        .find(|g| g.metadata.name == gateway)
        .unwrap()
        .spec;
    spec.addresses
        .retain(|a| a.value.as_deref() != Some("127.0.0.1"));
    let res = resolve(&resources, 1);
    assert_condition(
        gateway_conditions(&res, gateway),
        "Programmed",
        true,
        "Programmed",
    );
    assert_eq!(gateway_addresses(&res, gateway), ["192.0.2.200"]);
}

#[test]
fn gateway_static_addresses_with_a_multicast_address_is_not_programmed_until_it_is_removed() {
    // GatewayStaticAddresses with an IPv6 multicast address as the
    // unusable one (no host is reached at it; since IPv6 is forwarded, a
    // unicast IPv6 address is usable): accepted, Programmed False with
    // AddressNotUsable as the test expects; with the address removed, as
    // the test then does, programmed on the usable one.
    let manifest = l4_reading(
        &text("upstream/conformance/tests/gateway-static-addresses.yaml"),
        &[],
    )
    .replace("PLACEHOLDER_UNUSABLE_ADDRS", "ff0e::200")
    .replace("PLACEHOLDER_USABLE_ADDRS", "192.0.2.200");
    let gateway = "gateway-static-addresses";
    let mut resources = world_from("gateway-static-addresses.yaml", &manifest);
    let spec = &mut resources
        .gateways
        .iter_mut()
        .find(|g| g.metadata.name == gateway)
        .unwrap()
        .spec;
    spec.addresses.retain(|a| a.address_type == "IPAddress");
    let res = resolve(&resources, 1);
    let conditions = gateway_conditions(&res, gateway);
    assert_condition(conditions, "Accepted", true, "Accepted");
    assert_condition(conditions, "Programmed", false, "AddressNotUsable");

    let spec = &mut resources
        .gateways
        .iter_mut()
        .find(|g| g.metadata.name == gateway)
        .unwrap()
        .spec;
    spec.addresses
        .retain(|a| a.value.as_deref() != Some("ff0e::200"));
    let res = resolve(&resources, 2);
    let conditions = gateway_conditions(&res, gateway);
    assert_condition(conditions, "Programmed", true, "Programmed");
    assert_eq!(gateway_addresses(&res, gateway), ["192.0.2.200"]);
    for listener in listeners(&res, gateway) {
        assert_condition(&listener.conditions, "Programmed", true, "Programmed");
    }
    let vips: Vec<String> = res
        .snapshot
        .listeners()
        .iter()
        .filter(|l| l.name().gateway == gateway)
        .map(|l| l.vip().to_string())
        .collect();
    assert_eq!(vips, ["192.0.2.200:8080"]);
}

#[test]
fn gateway_optional_address_value_is_assigned_from_the_class_pool() {
    // GatewayOptionalAddressValue, L4 reading: `type: IPAddress` without a
    // value asks the implementation for one. The cluster's class points at
    // an AddressPool.
    let manifest = l4_reading(
        &text("upstream/conformance/tests/gateway-optional-address-value.yaml"),
        &[],
    );
    let mut resources = world_from("gateway-optional-address-value.yaml", &manifest);
    resources.extend(load(
        "pool.yaml",
        "apiVersion: switchyard.io/v1alpha1\nkind: AddressPool\nmetadata: {name: conformance}\n\
         spec: {cidrs: [198.51.100.0/24]}\n---\n\
         apiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\nmetadata: {name: conformance}\n\
         spec: {type: ClusterIP, addressPool: conformance}\n",
    ));
    let class = resources
        .gateway_classes
        .iter_mut()
        .find(|c| c.metadata.name == CLASS)
        .unwrap();
    class.spec.parameters_ref = Some(switchyard_config::resources::ParametersReference {
        group: "switchyard.io".into(),
        kind: "GatewayClassConfig".into(),
        name: "conformance".into(),
        namespace: None,
    });
    let res = resolve(&resources, 1);
    let gateway = "gateway-without-address-value";
    assert_condition(
        gateway_conditions(&res, gateway),
        "Programmed",
        true,
        "Programmed",
    );
    let addresses = gateway_addresses(&res, gateway);
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(addresses[0].starts_with("198.51.100."), "{addresses:?}");
}

// ------------------------------------------- HTTP, TLS and ListenerSet manifests
//
// These upstream tests are about HTTPRoutes, TLSRoutes, ListenerSets or
// Gateway fields with no traffic of their own. Each gets two readings:
// as written (what Switchyard says about kinds and protocols it does not
// serve: an HTTPRoute, TLSRoute or ListenerSet is not read, so it gets
// no status and counts in no listener's attachedRoutes, and HTTP, HTTPS
// and TLS listeners are Accepted=False/UnsupportedProtocol with no
// supportedKinds), and, where the test's point is not about HTTP, the L4
// reading: the same objects with TCPRoutes and TCP listeners, and the
// upstream assertions that apply to them.

/// The L4 reading of a test manifest: every `kind: HTTPRoute` (routes,
/// ReferenceGrant `from` entries, allowedRoutes kinds) becomes TCPRoute,
/// `edit` makes any other change, and the listeners of `gateways` (in the
/// base or the test manifest) become TCP listeners without hostname or
/// TLS settings.
fn l4_world(test: &str, gateways: &[&str], edit: impl Fn(String) -> String) -> Resources {
    let manifest = edit(text(&format!("upstream/conformance/tests/{test}")))
        .replace("kind: HTTPRoute", "kind: TCPRoute");
    let mut resources = world_from(test, &manifest);
    let mut converted = 0;
    for gateway in &mut resources.gateways {
        if !gateways.contains(&gateway.metadata.name.as_str()) {
            continue;
        }
        converted += 1;
        for listener in &mut gateway.spec.listeners {
            if matches!(listener.protocol.as_str(), "HTTP" | "HTTPS" | "TLS") {
                listener.protocol = "TCP".to_owned();
                listener.hostname = None;
                listener.tls = None;
            }
        }
    }
    assert_eq!(converted, gateways.len(), "{gateways:?} must all exist");
    resources
}

/// As written: the documents of `kind` named `names` were read past
/// (Switchyard does not read the kind), and no status is written for them.
#[track_caller]
fn assert_not_read(resources: &Resources, res: &Resolution, kind: &str, names: &[&str]) {
    for name in names {
        assert!(
            resources
                .ignored
                .iter()
                .any(|i| i.kind == kind && i.name.as_deref() == Some(*name)),
            "{kind} {name} is not among the ignored documents: {:#?}",
            resources.ignored
        );
    }
    assert!(
        res.statuses.iter().all(|s| s.kind != kind),
        "no {kind} gets status"
    );
}

/// As written: a listener of a protocol Switchyard does not serve.
#[track_caller]
fn assert_unsupported_listener(res: &Resolution, gateway: &str, listener: &str) {
    let status = listener_status(res, gateway, listener);
    assert!(status.supported_kinds.is_empty(), "{status:#?}");
    assert_eq!(status.attached_routes, 0);
    assert_condition(&status.conditions, "Accepted", false, "UnsupportedProtocol");
    assert_condition(&status.conditions, "Programmed", false, "Invalid");
}

fn world_as_written(test: &str) -> (Resources, Resolution) {
    let resources = world(test);
    let res = resolve(&resources, 1);
    (resources, res)
}

#[test]
fn httproute_reference_grant_as_written_and_as_tcp_routes() {
    // HTTPRouteReferenceGrant
    let test = "httproute-reference-grant.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(&resources, &res, "HTTPRoute", &["reference-grant"]);
    assert_unsupported_listener(&res, "same-namespace", "http");

    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    let gateway = "same-namespace";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &["reference-grant"]);
    assert_condition(
        &parent(&res, "TCPRoute", "reference-grant", gateway).conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
    let served = snapshot_listener(&res, gateway, "http");
    assert_eq!(
        served.groups()[0].service,
        "gateway-conformance-web-backend/web-backend"
    );
    assert_eq!(served.backends().len(), 2);
    assert!(served.slots().iter().all(|s| s != Slot::Unavailable));
}

#[test]
fn httproute_partially_invalid_via_reference_grant_refuses_only_the_ungranted_share() {
    // HTTPRoutePartiallyInvalidViaInvalidReferenceGrant, L4 reading: the
    // two rules (a TCPRoute of v1alpha2 may have several; their matches
    // mean nothing at L4) share the listener, and the share of the
    // backend the grant does not name is refused (the upstream 500)
    // while its sibling serves.
    let test = "httproute-partially-invalid-via-invalid-reference-grant.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(&resources, &res, "HTTPRoute", &["invalid-reference-grant"]);

    let resources = l4_world(test, &["same-namespace"], |t| {
        t.replace(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute",
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: HTTPRoute",
        )
    });
    let res = resolve(&resources, 1);
    let gateway = "same-namespace";
    let route = "invalid-reference-grant";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        false,
        "RefNotPermitted",
    );
    let served = snapshot_listener(&res, gateway, "http");
    let shares = shares(served);
    let app = "gateway-conformance-app-backend";
    assert_eq!(shares[&format!("{app}/app-backend-v2")], 0.0, "{shares:?}");
    assert!(
        (shares[&format!("{app}/app-backend-v1")] - 0.5).abs() < 0.001,
        "{shares:?}"
    );
    assert!((shares[""] - 0.5).abs() < 0.001, "{shares:?}");
    assert_eq!(endpoint_addresses(served), ["10.244.1.1", "10.244.1.2"]);
}

#[test]
fn httproute_invalid_reference_grant_none_of_the_near_miss_grants_permits() {
    // HTTPRouteInvalidReferenceGrant: each grant misses in one field (its
    // own namespace, from group/kind/namespace, to group/kind/name).
    let test = "httproute-invalid-reference-grant.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(&resources, &res, "HTTPRoute", &["reference-grant"]);
    assert_eq!(resources.reference_grants.len(), 7);

    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    let gateway = "same-namespace";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &["reference-grant"]);
    assert_condition(
        &parent(&res, "TCPRoute", "reference-grant", gateway).conditions,
        "ResolvedRefs",
        false,
        "RefNotPermitted",
    );
    let served = snapshot_listener(&res, gateway, "http");
    assert!(served.backends().is_empty());
    assert!(served.slots().iter().all(|s| s == Slot::Unavailable));
}

#[test]
fn tlsroute_invalid_reference_grant_none_of_the_near_miss_grants_permits() {
    // TLSRouteInvalidReferenceGrant, L4 reading: the TLSRoute becomes a
    // TCPRoute (and so do the grants' `from` kinds), the TLS listener a
    // TCP one.
    let test = "tlsroute-invalid-reference-grant.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "TLSRoute",
        &["gateway-conformance-infra-test"],
    );
    assert_unsupported_listener(&res, "gateway-tlsroute-referencegrant", "https");

    let resources = l4_world(test, &["gateway-tlsroute-referencegrant"], |t| {
        t.replace("kind: TLSRoute", "kind: TCPRoute")
    });
    let res = resolve(&resources, 1);
    let gateway = "gateway-tlsroute-referencegrant";
    let route = "gateway-conformance-infra-test";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        false,
        "RefNotPermitted",
    );
    let https = listener_status(&res, gateway, "https");
    assert_eq!(https.attached_routes, 1);
    assert_eq!(
        https.supported_kinds,
        [RouteGroupKind {
            group: "gateway.networking.k8s.io".into(),
            kind: "TCPRoute".into()
        }]
    );
    assert!(snapshot_listener(&res, gateway, "https")
        .backends()
        .is_empty());
}

#[test]
fn httproute_invalid_backend_ref_of_unknown_kind_is_invalid_kind() {
    // HTTPRouteInvalidBackendRefUnknownKind, L4 reading: accepted, with
    // ResolvedRefs=False/InvalidKind and the share refused (the upstream 500).
    let test = "httproute-invalid-backendref-unknown-kind.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["invalid-backend-ref-unknown-kind"],
    );

    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    let gateway = "same-namespace";
    let route = "invalid-backend-ref-unknown-kind";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        false,
        "InvalidKind",
    );
    let served = snapshot_listener(&res, gateway, "http");
    assert!(served.slots().iter().all(|s| s == Slot::Unavailable));
}

/// Upstream `*RouteMustHaveNoAcceptedParents` and `GatewayMustHaveZeroRoutes`,
/// with the reason the one parent gives.
#[track_caller]
fn assert_not_attached(
    res: &Resolution,
    route: &str,
    namespace: &str,
    gateway: &str,
    reason: &str,
) {
    let status = res
        .statuses
        .iter()
        .find(|s| {
            s.kind == "TCPRoute" && s.metadata.namespace == namespace && s.metadata.name == route
        })
        .unwrap_or_else(|| panic!("no status for TCPRoute {namespace}/{route}"));
    let Status::Route(status) = &status.status else {
        panic!("not a route status")
    };
    assert_eq!(status.parents.len(), 1, "{status:#?}");
    let parent = &status.parents[0];
    assert_eq!(parent.parent_ref.name, gateway);
    assert_condition(&parent.conditions, "Accepted", false, reason);
    assert_zero_routes(res, gateway);
    assert!(
        res.snapshot
            .listeners()
            .iter()
            .all(|l| !l.route().ends_with(&format!("/{route}"))),
        "{route} carries no traffic"
    );
}

#[test]
fn httproute_parent_ref_port_matching_no_listener_is_no_matching_parent() {
    // HTTPRouteInvalidParentRefNotMatchingListenerPort, L4 reading.
    let test = "httproute-invalid-parentref-not-matching-listener-port.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["httproute-listener-not-matching-route-port"],
    );
    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    assert_not_attached(
        &res,
        "httproute-listener-not-matching-route-port",
        INFRA,
        "same-namespace",
        "NoMatchingParent",
    );
}

#[test]
fn httproute_parent_ref_section_name_matching_no_listener_is_no_matching_parent() {
    // HTTPRouteInvalidParentRefNotMatchingSectionName, L4 reading.
    let test = "httproute-invalid-parentref-not-matching-section-name.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["httproute-listener-not-matching-section-name"],
    );
    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    assert_not_attached(
        &res,
        "httproute-listener-not-matching-section-name",
        INFRA,
        "same-namespace",
        "NoMatchingParent",
    );
}

#[test]
fn httproute_parent_ref_section_name_with_another_port_is_no_matching_parent() {
    // HTTPRouteInvalidParentRefSectionNameNotMatchingPort, L4 reading:
    // the listener named by sectionName exists, on another port.
    let test = "httproute-invalid-parentref-section-name-not-matching-port.yaml";
    let gateway = "gateway-with-one-not-matching-port-and-section-name-route";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["httproute-listener-section-name-not-matching-port"],
    );
    assert_unsupported_listener(&res, gateway, "http");
    let res = resolve(&l4_world(test, &[gateway], |t| t), 1);
    assert_not_attached(
        &res,
        "httproute-listener-section-name-not-matching-port",
        INFRA,
        gateway,
        "NoMatchingParent",
    );
    // The listener itself is fine: it allows TCPRoutes from all namespaces.
    let listener = listener_status(&res, gateway, "http");
    assert_eq!(listener.supported_kinds[0].kind, "TCPRoute");
    assert_condition(&listener.conditions, "Accepted", true, "Accepted");
}

#[test]
fn httproute_cross_namespace_backend_ref_without_grant_is_ref_not_permitted() {
    // HTTPRouteInvalidCrossNamespaceBackendRef, L4 reading.
    let test = "httproute-invalid-cross-namespace-backend-ref.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["invalid-cross-namespace-backend-ref"],
    );
    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    let gateway = "same-namespace";
    let route = "invalid-cross-namespace-backend-ref";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[route]);
    assert_condition(
        &parent(&res, "TCPRoute", route, gateway).conditions,
        "ResolvedRefs",
        false,
        "RefNotPermitted",
    );
    assert!(snapshot_listener(&res, gateway, "http")
        .backends()
        .is_empty());
}

#[test]
fn httproute_from_another_namespace_is_not_allowed_by_a_same_namespace_listener() {
    // HTTPRouteInvalidCrossNamespaceParentRef, L4 reading: not attached
    // (NotAllowedByListeners), yet its own backend resolves.
    let test = "httproute-invalid-cross-namespace-parent-ref.yaml";
    let web = "gateway-conformance-web-backend";
    let (resources, res) = world_as_written(test);
    assert!(resources.ignored.iter().any(|i| i.kind == "HTTPRoute"
        && i.name.as_deref() == Some("invalid-cross-namespace-parent-ref")));
    assert!(res.statuses.iter().all(|s| s.kind != "HTTPRoute"));
    let res = resolve(&l4_world(test, &["same-namespace"], |t| t), 1);
    let route = "invalid-cross-namespace-parent-ref";
    assert_not_attached(&res, route, web, "same-namespace", "NotAllowedByListeners");
    let status = res
        .statuses
        .iter()
        .find(|s| s.kind == "TCPRoute" && s.metadata.name == route)
        .unwrap();
    let Status::Route(status) = &status.status else {
        unreachable!()
    };
    assert_condition(
        &status.parents[0].conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
}

#[test]
fn httproute_on_a_gateway_allowing_only_another_kind_is_not_allowed() {
    // HTTPRouteDisallowedKind, L4 reading: the route is a TCPRoute, the
    // Gateway as written (a TLS listener taking TLSRoutes only).
    let test = "httproute-disallowed-kind.yaml";
    let gateway = "tlsroutes-only";
    let (resources, res) = world_as_written(test);
    assert_not_read(&resources, &res, "HTTPRoute", &["disallowed-kind"]);
    assert_unsupported_listener(&res, gateway, "tls");
    assert_condition(
        gateway_conditions(&res, gateway),
        "Accepted",
        false,
        "ListenersNotValid",
    );

    let manifest = text(&format!("upstream/conformance/tests/{test}"))
        .replace("kind: HTTPRoute", "kind: TCPRoute");
    let res = resolve(&world_from(test, &manifest), 1);
    assert_not_attached(
        &res,
        "disallowed-kind",
        INFRA,
        gateway,
        "NotAllowedByListeners",
    );
    let status = resource(&res, "TCPRoute", "disallowed-kind");
    let Status::Route(status) = &status.status else {
        unreachable!()
    };
    assert_condition(
        &status.parents[0].conditions,
        "ResolvedRefs",
        true,
        "ResolvedRefs",
    );
}

#[test]
fn listenerset_protocol_conflict_listener_sets_are_not_read() {
    // ListenerSetProtocolConflict needs ListenerSets (and HTTP), neither
    // of which Switchyard serves: the ListenerSets are read past and get
    // no status, so their TCP listeners conflict with nothing, and the
    // Gateway's own HTTP listeners are not accepted.
    let test = "listenerset-protocol-conflict.yaml";
    let gateway = "gateway-with-listenerset-protocol-conflict";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "ListenerSet",
        &[
            "listenerset-with-protocol-conflict-with-gateway-1",
            "listenerset-with-protocol-conflict-with-gateway-2",
            "listenerset-with-protocol-conflict-with-listener-set-1",
            "listenerset-with-protocol-conflict-with-listener-set-2",
        ],
    );
    for listener in [
        "gateway-listener",
        "protocol-conflict-with-gateway-listener",
    ] {
        assert_unsupported_listener(&res, gateway, listener);
    }
    assert_eq!(
        listeners(&res, gateway).len(),
        2,
        "no listener of a ListenerSet"
    );
    assert_condition(
        gateway_conditions(&res, gateway),
        "Accepted",
        false,
        "ListenersNotValid",
    );
    assert!(res
        .snapshot
        .listeners()
        .iter()
        .all(|l| l.name().gateway != gateway));
}

// ---------------------------------------------- Gateway and GatewayClass fields

#[test]
fn gateway_invalid_parameters_ref_is_not_accepted_and_not_served() {
    // GatewayInvalidParametersRef: as written, and with a TCP listener.
    let test = "gateway-invalid-parameters-ref.yaml";
    let gateway = "gateway-invalid-parameters-ref";
    for res in [run(test), resolve(&l4_world(test, &[gateway], |t| t), 1)] {
        let conditions = gateway_conditions(&res, gateway);
        assert_condition(conditions, "Accepted", false, "InvalidParameters");
        assert_condition(conditions, "Programmed", false, "Invalid");
        assert!(gateway_addresses(&res, gateway).is_empty());
        assert!(res
            .snapshot
            .listeners()
            .iter()
            .all(|l| l.name().gateway != gateway));
        assert!(res
            .snapshot
            .dns()
            .iter()
            .all(|r| !r.name.starts_with(gateway)));
    }
}

#[test]
fn gateway_infrastructure_labels_and_annotations_leave_the_gateway_accepted() {
    // GatewayInfrastructure, L4 reading: the Gateway is accepted with its
    // infrastructure stanza. Switchyard creates no Pods, Services or
    // ServiceAccounts to carry the labels and annotations
    // (GatewayInfrastructurePropagation is not a feature it claims).
    let test = "gateway-infrastructure.yaml";
    let gateway = "gateway-with-infrastructure-metadata";
    let resources = l4_world(test, &[gateway], |t| t);
    let infrastructure = resources
        .gateways
        .iter()
        .find(|g| g.metadata.name == gateway)
        .and_then(|g| g.spec.infrastructure.clone())
        .expect("spec.infrastructure is read");
    assert_eq!(infrastructure.labels["key2"], "value2");
    assert_eq!(infrastructure.annotations["key1"], "value1");
    let res = resolve(&resources, 1);
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &[]);
    assert_eq!(snapshot_listener(&res, gateway, "http").port(), 8080);
}

#[test]
fn gateway_with_a_253_character_name_is_reconciled_without_a_dns_name() {
    // GatewayNameMaximumLength: every condition is for the current
    // generation. L4 reading: served, and Degraded=True/NoDnsName, since
    // such a name cannot be a DNS label.
    let test = "gateway-name-maximum-length.yaml";
    let gateway = format!("gateway-name-maximum-length-{}", "a".repeat(253 - 28));
    assert_eq!(gateway.len(), 253);
    let res = run(test);
    assert!(listeners(&res, &gateway)
        .iter()
        .flat_map(|l| &l.conditions)
        .chain(gateway_conditions(&res, &gateway))
        .all(|c| c.observed_generation == 1));

    let res = resolve(&l4_world(test, &[&gateway], |t| t), 1);
    let conditions = gateway_conditions(&res, &gateway);
    assert_condition(conditions, "Accepted", true, "Accepted");
    assert_condition(conditions, "Programmed", true, "Programmed");
    assert_condition(conditions, "Degraded", true, "NoDnsName");
    assert_eq!(snapshot_listener(&res, &gateway, "http").port(), 80);
    assert!(res
        .snapshot
        .dns()
        .iter()
        .all(|r| !r.name.contains("maximum-length")));
}

#[test]
fn gateway_modify_listeners_adding_and_removing_listeners() {
    // GatewayModifyListeners, L4 reading: the HTTPS and HTTP listeners are
    // TCP ones; the routes attach to every listener.
    let test = "gateway-modify-listeners.yaml";
    let (resources, res) = world_as_written(test);
    assert_not_read(
        &resources,
        &res,
        "HTTPRoute",
        &["http-route-1", "http-route-2"],
    );
    assert_unsupported_listener(&res, "gateway-add-listener", "https");

    let mut resources = l4_world(
        test,
        &["gateway-add-listener", "gateway-remove-listener"],
        |t| t,
    );
    let gateway = |resources: &mut Resources, name: &str| {
        resources
            .gateways
            .iter_mut()
            .find(|g| g.metadata.name == name)
            .unwrap()
            .clone()
    };

    // Adding "http" on port 80 (the suite's patch bumps the generation).
    let mut add = gateway(&mut resources, "gateway-add-listener");
    let mut http = add.spec.listeners[0].clone();
    http.name = "http".to_owned();
    http.port = 80;
    add.spec.listeners.push(http);
    add.metadata.generation = Some(2);
    for g in &mut resources.gateways {
        if g.metadata.name == "gateway-add-listener" {
            *g = add.clone();
        }
    }
    // Removing "https", leaving "http".
    for g in &mut resources.gateways {
        if g.metadata.name == "gateway-remove-listener" {
            g.spec.listeners.retain(|l| l.name == "http");
            g.metadata.generation = Some(2);
        }
    }
    let res = resolve(&resources, 2);

    let added = "gateway-add-listener";
    for name in ["https", "http"] {
        let status = listener_status(&res, added, name);
        assert_eq!(status.attached_routes, 1, "{status:#?}");
        assert_eq!(status.supported_kinds[0].kind, "TCPRoute");
        assert!(status.conditions.iter().all(|c| c.observed_generation == 2));
        for condition in ["Accepted", "ResolvedRefs"] {
            let c = status
                .conditions
                .iter()
                .find(|c| c.condition_type == condition)
                .unwrap();
            assert_eq!(c.status, ConditionStatus::True, "{c:#?}");
        }
    }
    assert_eq!(snapshot_listener(&res, added, "http").port(), 80);
    assert_eq!(snapshot_listener(&res, added, "https").port(), 443);

    let removed = "gateway-remove-listener";
    let left = listeners(&res, removed);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "http");
    assert_eq!(left[0].attached_routes, 1);
    assert!(left[0]
        .conditions
        .iter()
        .all(|c| c.observed_generation == 2));
    assert!(
        res.snapshot
            .find_listener(&format!("{INFRA}/{removed}/https"))
            .is_none(),
        "the removed listener no longer routes"
    );
    assert_eq!(snapshot_listener(&res, removed, "http").port(), 80);
}

#[test]
fn gatewayclass_observed_generation_follows_the_spec_generation() {
    // GatewayClassObservedGenerationBump: Accepted before and after a spec
    // change, each time for the class's current generation.
    let test = "gatewayclass-observed-generation-bump.yaml";
    let class = "gatewayclass-observed-generation-bump";
    let mut resources = world(test);
    let conditions = |res: &Resolution| -> Vec<Condition> {
        res.statuses
            .iter()
            .find(|s| s.kind == "GatewayClass" && s.metadata.name == class)
            .expect("the class is Switchyard's and has status")
            .status
            .conditions()
            .to_vec()
    };
    let before = conditions(&resolve(&resources, 1));
    assert!(
        before.iter().all(|c| c.observed_generation == 1),
        "{before:#?}"
    );
    assert!(before
        .iter()
        .any(|c| c.condition_type == "Accepted" && c.status == ConditionStatus::True));

    let spec = resources
        .gateway_classes
        .iter_mut()
        .find(|c| c.metadata.name == class)
        .unwrap();
    spec.metadata.generation = Some(2);
    let after = conditions(&resolve(&resources, 2));
    assert!(
        after.iter().all(|c| c.observed_generation == 2),
        "{after:#?}"
    );
    assert!(after
        .iter()
        .any(|c| c.condition_type == "Accepted" && c.status == ConditionStatus::True));
}

#[test]
fn every_vendored_conformance_manifest_has_a_test_here() {
    // A manifest added to the vendored tree without assertions fails here.
    let source = include_str!("conformance.rs");
    let tests = dir().join("upstream/conformance/tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&tests).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !source.contains(&format!("\"{name}\"")) {
            missing.push(name);
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "manifests without a test: {missing:?}");
}

// ------------------------------------------------------------ health checks

#[test]
fn health_checks_on_the_upstream_weighted_route_follow_the_closest_target() {
    // TCPRouteWeightedRouting's manifests, plus a check on the route and a
    // newer one on its second Service: that Service's endpoints take the
    // Service's check, the others the route's, and the traffic split is
    // the upstream test's, unchanged.
    let policies = format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: route-health, namespace: {INFRA}, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: TCPRoute, name: tcp-weighted-route}}]\n\
         \x20 healthCheck: {{active: {{type: TCP, interval: 1s, timeout: 500ms}}}}\n\
         ---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: v2-health, namespace: {INFRA}, creationTimestamp: \"2026-02-01T00:00:00Z\"}}\n\
         spec:\n  targetRefs: [{{group: \"\", kind: Service, name: tcp-backend-v2}}]\n\
         \x20 healthCheck:\n    whenAllUnhealthy: Refuse\n    active:\n      type: HTTP\n      \
         http: {{path: /healthz, expectedStatuses: [200]}}\n"
    );
    let mut resources = world("tcproute-weighted-routing.yaml");
    resources.extend(load("health.yaml", &policies));
    let res = resolve(&resources, 1);
    let gateway = "tcp-weighted-gateway";
    assert_gateway_and_routes_accepted(&res, gateway, "TCPRoute", &["tcp-weighted-route"]);
    let listener = snapshot_listener(&res, gateway, "tcp");
    assert_weighted(listener, "tcp-backend");
    let by_service: BTreeMap<String, Option<String>> = listener
        .groups()
        .iter()
        .map(|g| {
            let policy = g.health_check.as_ref().map(|c| c.policy.clone());
            (g.service.clone(), policy)
        })
        .collect();
    let route = Some(format!("{INFRA}/route-health"));
    let v2 = Some(format!("{INFRA}/v2-health"));
    assert_eq!(
        by_service,
        BTreeMap::from([
            (format!("{INFRA}/tcp-backend-v1"), route.clone()),
            (format!("{INFRA}/tcp-backend-v2"), v2),
            (format!("{INFRA}/tcp-backend-v3"), route),
        ])
    );
    for name in ["route-health", "v2-health"] {
        let status = resource(&res, "TrafficPolicy", name);
        let Status::Policy(policy) = &status.status else {
            panic!("{name}: {status:?}");
        };
        for ancestor in &policy.ancestors {
            assert_condition(&ancestor.conditions, "Accepted", true, "Accepted");
        }
    }
}
