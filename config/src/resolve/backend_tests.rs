//! Resolution of ServiceImport and EndpointSelector backends, and of the
//! Service settings a TrafficPolicy sets at route level (GEP-3539).

use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::load::load_str;

const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.io/gateway-controller}
";

/// Gateway lb/edge on 10.0.0.1 with `tcp` (TCP 80) and `udp` (UDP 53).
const EDGE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: lb}
spec:
  gatewayClassName: sy
  addresses: [{value: 10.0.0.1}]
  listeners: [{name: tcp, port: 80, protocol: TCP}, {name: udp, port: 53, protocol: UDP}]
";

fn route(kind: &str, name: &str, backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n  - backendRefs: {backends}\n"
    )
}

fn tcp_route(backends: &str) -> String {
    route("TCPRoute", "r", backends)
}

fn import(ns: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  type: ClusterSetIP\n  \
         ports: [{{name: tcp, port: 80}}, {{name: dns, protocol: UDP, port: 53}}]\n{extra}"
    )
}

/// An exported slice of `import` from `cluster`, ports `tcp` 8080 and
/// `dns` 5353.
fn exported(ns: &str, import: &str, cluster: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {import}-{cluster}\n  namespace: {ns}\n  labels:\n    \
         multicluster.kubernetes.io/service-name: {import}\n    \
         multicluster.kubernetes.io/source-cluster: {cluster}\n\
         addressType: IPv4\nendpoints: {endpoints}\n\
         ports: [{{name: tcp, port: 8080}}, {{name: dns, protocol: UDP, port: 5353}}]\n"
    )
}

fn selector(ns: &str, name: &str, selector: &str, extra: &str) -> String {
    format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: EndpointSelector\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {selector}\n  \
         ports: [{{name: tcp, port: 80, targetPort: 8080}}, {{name: dns, protocol: UDP, port: 53, targetPort: 5353}}]\n{extra}"
    )
}

/// A running Pod; `state` is `ready`, `unready`, `terminating` (ready and
/// deleted), `unready-terminating` or `finished`.
fn pod(ns: &str, name: &str, labels: &str, ips: &[&str], state: &str) -> String {
    let ready = matches!(state, "ready" | "terminating");
    let deleted = if state.ends_with("terminating") {
        "  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n"
    } else {
        ""
    };
    let phase = if state == "finished" {
        "Succeeded"
    } else {
        "Running"
    };
    let ips: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\n{deleted}\
         spec:\n  containers: [{{name: c, ports: [{{name: web, containerPort: 9090}}]}}]\n\
         status:\n  phase: {phase}\n  podIPs: [{}]\n  conditions: [{{type: Ready, status: \"{}\"}}]\n",
        ips.join(", "),
        if ready { "True" } else { "False" }
    )
}

fn policy(name: &str, created: &str, route_kind: &str, route: &str, settings: &str) -> String {
    format!(
        "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: lb, creationTimestamp: \"{created}\"}}\nspec:\n  \
         targetRefs: [{{group: gateway.networking.k8s.io, kind: {route_kind}, name: {route}}}]\n{settings}"
    )
}

fn grant(ns: &str, to: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {{name: g, namespace: {ns}}}\nspec:\n  \
         from: [{{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: lb}}]\n  to: [{to}]\n"
    )
}

fn compile(docs: &[&str]) -> Resolution {
    let text = docs.join("---\n");
    match load_str("test.yaml", &text) {
        Ok(resources) => super::tests::checked(resolve(&resources, 1)),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn listener<'a>(res: &'a Resolution, name: &str) -> &'a Listener {
    res.snapshot
        .find_listener(name)
        .unwrap_or_else(|| panic!("no listener {name}; diagnostics: {:#?}", res.diagnostics))
}

/// The backends taking new flows (a draining one has weight 0).
fn served(res: &Resolution, name: &str) -> Vec<String> {
    listener(res, name)
        .backends()
        .iter()
        .filter(|b| b.effective_weight > 0.0)
        .map(|b| b.endpoint.to_string())
        .collect()
}

/// The backends that keep their established flows and take no new one.
fn draining(res: &Resolution, name: &str) -> Vec<String> {
    listener(res, name)
        .backends()
        .iter()
        .filter(|b| b.effective_weight == 0.0)
        .map(|b| b.endpoint.to_string())
        .collect()
}

fn reasons(res: &Resolution) -> Vec<(String, Reason)> {
    res.diagnostics
        .iter()
        .map(|d| (d.resource(), d.reason))
        .collect()
}

fn only_reason(res: &Resolution, resource: &str, reason: Reason) {
    assert_eq!(
        reasons(res),
        [(resource.to_owned(), reason)],
        "{:#?}",
        res.diagnostics
    );
}

// -------------------------------------------------------------- ServiceImport

const TO_IMPORT: &str =
    "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 80}]";

#[test]
fn service_import_merges_the_exported_slices_of_every_cluster() {
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_IMPORT),
        &import("lb", "store", ""),
        &exported("lb", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
        &exported("lb", "store", "west", "[{addresses: [\"10.2.0.1\"]}]"),
    ]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(
        served(&res, "lb/edge/tcp"),
        ["10.1.0.1:8080", "10.2.0.1:8080"]
    );
    assert_eq!(
        listener(&res, "lb/edge/tcp").groups()[0].service,
        "lb/store"
    );
}

#[test]
fn service_import_ignores_slices_of_a_service_with_its_name() {
    let service_slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: local, namespace: lb, labels: {kubernetes.io/service-name: store}}\n\
        addressType: IPv4\nendpoints: [{addresses: [\"10.9.0.1\"]}]\nports: [{name: tcp, port: 8080}]\n";
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_IMPORT),
        &import("lb", "store", ""),
        service_slice,
        &exported("lb", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn service_import_port_is_matched_by_protocol_and_slice_port_by_name() {
    let udp = route(
        "UDPRoute",
        "u",
        "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 53}]",
    );
    let res = compile(&[
        CLASS,
        EDGE,
        &udp,
        &import("lb", "store", ""),
        &exported("lb", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
    ]);
    assert_eq!(served(&res, "lb/edge/udp"), ["10.1.0.1:5353"]);
}

#[test]
fn service_import_uses_terminating_endpoints_only_when_none_is_ready() {
    let draining = "[{addresses: [\"10.1.0.1\"], conditions: {ready: false, serving: true, terminating: true}}, \
                    {addresses: [\"10.1.0.2\"], conditions: {ready: false}}]";
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_IMPORT),
        &import("lb", "store", ""),
        &exported("lb", "store", "east", draining),
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_IMPORT),
        &import("lb", "store", ""),
        &exported("lb", "store", "east", draining),
        &exported("lb", "store", "west", "[{addresses: [\"10.2.0.1\"]}]"),
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.2.0.1:8080"]);
}

#[test]
fn missing_service_import_is_backend_not_found_and_refuses_its_share() {
    let res = compile(&[CLASS, EDGE, &tcp_route(TO_IMPORT)]);
    only_reason(&res, "TCPRoute lb/r", Reason::BackendNotFound);
    assert!(res.diagnostics[0]
        .message
        .contains("ServiceImport lb/store not found"));
    let tcp = listener(&res, "lb/edge/tcp");
    assert!(tcp.backends().is_empty());
    assert!(tcp
        .slots()
        .iter()
        .all(|s| s == crate::snapshot::Slot::Unavailable));
}

#[test]
fn service_import_without_the_port_is_backend_not_found() {
    let r =
        tcp_route("[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 81}]");
    let res = compile(&[CLASS, EDGE, &r, &import("lb", "store", "")]);
    only_reason(&res, "TCPRoute lb/r", Reason::BackendNotFound);
    assert!(res.diagnostics[0].message.contains("has no TCP port 81"));
}

#[test]
fn backend_ref_without_port_takes_the_only_port_of_the_route_protocol() {
    let r = tcp_route("[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store}]");
    let res = compile(&[
        CLASS,
        EDGE,
        &r,
        &import("lb", "store", ""),
        &exported("lb", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn cross_namespace_service_import_needs_a_grant_to_service_imports() {
    let r = tcp_route(
        "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, namespace: shop, port: 80}]",
    );
    let world = [
        import("shop", "store", ""),
        exported("shop", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
    ];
    let res = compile(&[CLASS, EDGE, &r, &world[0], &world[1]]);
    only_reason(&res, "TCPRoute lb/r", Reason::RefNotPermitted);

    // A grant to Services does not cover ServiceImports of the same name.
    let to_services = grant("shop", "{group: \"\", kind: Service, name: store}");
    let res = compile(&[CLASS, EDGE, &r, &world[0], &world[1], &to_services]);
    only_reason(&res, "TCPRoute lb/r", Reason::RefNotPermitted);

    let to_imports = grant(
        "shop",
        "{group: multicluster.x-k8s.io, kind: ServiceImport}",
    );
    let res = compile(&[CLASS, EDGE, &r, &world[0], &world[1], &to_imports]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn service_import_client_ip_affinity_applies_when_it_is_the_only_backend() {
    let sticky =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n";
    let world = [
        import("lb", "store", sticky),
        exported("lb", "store", "east", "[{addresses: [\"10.1.0.1\"]}]"),
    ];
    let res = compile(&[CLASS, EDGE, &tcp_route(TO_IMPORT), &world[0], &world[1]]);
    let affinity = listener(&res, "lb/edge/tcp").affinity();
    assert_eq!(affinity.map(|a| a.timeout_secs), Some(60));

    // Next to another backendRef, the flat table cannot keep it.
    let two = tcp_route(
        "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 80}, \
          {group: multicluster.x-k8s.io, kind: ServiceImport, name: other, port: 80}]",
    );
    let other = import("lb", "other", "");
    let res = compile(&[CLASS, EDGE, &two, &world[0], &world[1], &other]);
    assert_eq!(listener(&res, "lb/edge/tcp").affinity(), None);
    only_reason(&res, "ServiceImport lb/store", Reason::AffinityNotApplied);
}

// ----------------------------------------------------------- EndpointSelector

const TO_SELECTOR: &str = "[{group: switchyard.io, kind: EndpointSelector, name: web, port: 80}]";

#[test]
fn endpoint_selector_serves_the_ready_matching_pods_of_its_namespace() {
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &selector(
            "lb",
            "web",
            "{matchLabels: {app: web}, matchExpressions: [{key: track, operator: NotIn, values: [canary]}]}",
            "",
        ),
        &pod("lb", "a", "{app: web}", &["10.1.0.1"], "ready"),
        &pod("lb", "b", "{app: web, track: stable}", &["10.1.0.2"], "ready"),
        &pod("lb", "canary", "{app: web, track: canary}", &["10.1.0.3"], "ready"),
        &pod("lb", "db", "{app: db}", &["10.1.0.4"], "ready"),
        &pod("lb", "slow", "{app: web}", &["10.1.0.5"], "unready"),
        &pod("other", "far", "{app: web}", &["10.1.0.6"], "ready"),
        &pod("lb", "done", "{app: web}", &["10.1.0.7"], "finished"),
    ]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(
        served(&res, "lb/edge/tcp"),
        ["10.1.0.1:8080", "10.1.0.2:8080"]
    );
}

#[test]
fn endpoint_selector_uses_terminating_pods_only_when_none_is_ready() {
    let web = selector("lb", "web", "{matchLabels: {app: web}}", "");
    let leaving = pod("lb", "old", "{app: web}", &["10.1.0.1"], "terminating");
    let gone = pod(
        "lb",
        "older",
        "{app: web}",
        &["10.1.0.2"],
        "unready-terminating",
    );
    let res = compile(&[CLASS, EDGE, &tcp_route(TO_SELECTOR), &web, &leaving, &gone]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
    let fresh = pod("lb", "new", "{app: web}", &["10.1.0.3"], "ready");
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &web,
        &leaving,
        &gone,
        &fresh,
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.3:8080"]);
}

#[test]
fn endpoint_selector_publish_not_ready_addresses_serves_every_running_pod() {
    let web = selector(
        "lb",
        "web",
        "{matchLabels: {app: web}}",
        "  publishNotReadyAddresses: true\n",
    );
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &web,
        &pod("lb", "a", "{app: web}", &["10.1.0.1"], "ready"),
        &pod("lb", "b", "{app: web}", &["10.1.0.2"], "unready"),
        &pod(
            "lb",
            "c",
            "{app: web}",
            &["10.1.0.3"],
            "unready-terminating",
        ),
        &pod("lb", "d", "{app: web}", &["10.1.0.4"], "finished"),
    ]);
    assert_eq!(
        served(&res, "lb/edge/tcp"),
        ["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]
    );
}

#[test]
fn endpoint_selector_named_target_port_is_each_pods_container_port() {
    let web = "apiVersion: switchyard.io/v1alpha1\nkind: EndpointSelector\n\
        metadata: {name: web, namespace: lb}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
        ports: [{port: 80, targetPort: web}]\n";
    let portless =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bare, namespace: lb, labels: {app: web}}\n\
        status: {podIP: 10.1.0.9, conditions: [{type: Ready, status: \"True\"}]}\n";
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        web,
        &pod("lb", "a", "{app: web}", &["10.1.0.1"], "ready"),
        portless,
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:9090"]);
}

#[test]
fn endpoint_selector_port_is_matched_on_spec_ports_port() {
    let r = route(
        "UDPRoute",
        "u",
        "[{group: switchyard.io, kind: EndpointSelector, name: web, port: 53}]",
    );
    let web = selector("lb", "web", "{matchLabels: {app: web}}", "");
    let a = pod("lb", "a", "{app: web}", &["10.1.0.1"], "ready");
    let res = compile(&[CLASS, EDGE, &r, &web, &a]);
    assert_eq!(served(&res, "lb/edge/udp"), ["10.1.0.1:5353"]);

    let wrong =
        tcp_route("[{group: switchyard.io, kind: EndpointSelector, name: web, port: 8080}]");
    let res = compile(&[CLASS, EDGE, &wrong, &web, &a]);
    only_reason(&res, "TCPRoute lb/r", Reason::BackendNotFound);
    assert!(res.diagnostics[0]
        .message
        .contains("EndpointSelector lb/web has no TCP port 8080"));
}

#[test]
fn missing_endpoint_selector_is_backend_not_found() {
    let res = compile(&[CLASS, EDGE, &tcp_route(TO_SELECTOR)]);
    only_reason(&res, "TCPRoute lb/r", Reason::BackendNotFound);
    assert!(res.diagnostics[0]
        .message
        .contains("EndpointSelector lb/web not found"));
}

#[test]
fn cross_namespace_endpoint_selector_needs_a_grant_and_selects_pods_of_its_own_namespace() {
    let r = tcp_route(
        "[{group: switchyard.io, kind: EndpointSelector, name: web, namespace: apps, port: 80}]",
    );
    let web = selector("apps", "web", "{matchLabels: {app: web}}", "");
    let there = pod("apps", "a", "{app: web}", &["10.1.0.1"], "ready");
    let here = pod("lb", "b", "{app: web}", &["10.1.0.2"], "ready");
    let res = compile(&[CLASS, EDGE, &r, &web, &there, &here]);
    only_reason(&res, "TCPRoute lb/r", Reason::RefNotPermitted);
    let g = grant(
        "apps",
        "{group: switchyard.io, kind: EndpointSelector, name: web}",
    );
    let res = compile(&[CLASS, EDGE, &r, &web, &there, &here, &g]);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

// ------------------------------------------------ route-level Service settings

fn dual_stack_world() -> Vec<String> {
    vec![
        selector("lb", "web", "{matchLabels: {app: web}}", ""),
        pod("lb", "a", "{app: web}", &["10.1.0.1", "fd00::1"], "ready"),
        pod("lb", "b", "{app: web}", &["fd00::2"], "ready"),
    ]
}

fn with_policy(settings: &str) -> Resolution {
    let world = dual_stack_world();
    let p = policy("p", "2024-01-01T00:00:00Z", "TCPRoute", "r", settings);
    compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &world[0],
        &world[1],
        &world[2],
        &p,
    ])
}

/// The endpoints the route lb/r keeps for an IPv4 and for an IPv6
/// address, with the TrafficPolicies among `docs` applied. A snapshot only
/// has IPv4 listeners while IPv6 is not forwarded, so the IPv6 side is read
/// from backend resolution itself.
fn kept_per_family(docs: &[&str]) -> (Vec<String>, Vec<String>) {
    let resources = load_str("test.yaml", &docs.join("---\n")).unwrap();
    let index = Index::new(&resources);
    let mut diagnostics = Vec::new();
    let settings = policy::endpoint_settings(&index, &mut diagnostics);
    let r = index
        .routes
        .iter()
        .position(|route| route.metadata.name == "r")
        .expect("route lb/r");
    let groups = backends::groups(
        &index,
        index.routes[r],
        settings.get(&RouteId(r)).copied().unwrap_or_default(),
        &mut BTreeSet::new(),
        &mut diagnostics,
    );
    let endpoints = |groups: &[crate::snapshot::BackendGroup]| -> Vec<String> {
        groups
            .iter()
            .flat_map(|g| &g.endpoints)
            .map(ToString::to_string)
            .collect()
    };
    (endpoints(&groups.ipv4), endpoints(&groups.ipv6))
}

fn kept_with_policy(settings: &str) -> (Vec<String>, Vec<String>) {
    let world = dual_stack_world();
    let p = policy("p", "2024-01-01T00:00:00Z", "TCPRoute", "r", settings);
    kept_per_family(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &world[0],
        &world[1],
        &world[2],
        &p,
    ])
}

#[test]
fn without_family_settings_each_address_gets_the_endpoints_of_its_family() {
    let world = dual_stack_world();
    let docs = [
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &world[0],
        &world[1],
        &world[2],
    ];
    assert_eq!(
        kept_per_family(&docs),
        (
            vec!["10.1.0.1:8080".to_owned()],
            vec!["[fd00::1]:8080".to_owned(), "[fd00::2]:8080".to_owned()]
        )
    );
    // EDGE's one address is IPv4.
    assert_eq!(served(&compile(&docs), "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn single_stack_keeps_the_endpoints_of_its_family() {
    let res = with_policy("  ipFamilies: [IPv6]\n");
    assert_eq!(
        reasons(&res),
        [("TCPRoute lb/r".to_owned(), Reason::NoEndpointsOfFamily)],
        "the IPv4 VIP has none of the IPv6 endpoints the route keeps"
    );
    assert!(served(&res, "lb/edge/tcp").is_empty());
    assert_eq!(
        kept_with_policy("  ipFamilies: [IPv6]\n"),
        (
            vec![],
            vec!["[fd00::1]:8080".to_owned(), "[fd00::2]:8080".to_owned()]
        )
    );
    assert_eq!(
        kept_with_policy("  ipFamilyPolicy: SingleStack\n"),
        (vec!["10.1.0.1:8080".to_owned()], vec![])
    );
    let res = with_policy("  ipFamilyPolicy: SingleStack\n");
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn dual_stack_policies_keep_both_families() {
    for policy in ["PreferDualStack", "RequireDualStack"] {
        let settings = format!("  ipFamilyPolicy: {policy}\n  ipFamilies: [IPv6, IPv4]\n");
        let res = with_policy(&settings);
        assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
        assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"], "{policy}");
        let (ipv4, ipv6) = kept_with_policy(&settings);
        assert_eq!((ipv4.len(), ipv6.len()), (1, 2), "{policy}");
    }
}

#[test]
fn route_publish_not_ready_addresses_overrides_the_backends_own_either_way() {
    let unready = pod("lb", "c", "{app: web}", &["10.1.0.3"], "unready");
    let ready = pod("lb", "a", "{app: web}", &["10.1.0.1"], "ready");
    let on = policy(
        "p",
        "2024-01-01T00:00:00Z",
        "TCPRoute",
        "r",
        "  publishNotReadyAddresses: true\n",
    );
    let plain = selector("lb", "web", "{matchLabels: {app: web}}", "");
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &plain,
        &ready,
        &unready,
        &on,
    ]);
    assert_eq!(
        served(&res, "lb/edge/tcp"),
        ["10.1.0.1:8080", "10.1.0.3:8080"]
    );
    let off = on.replace("true", "false");
    let publishing = selector(
        "lb",
        "web",
        "{matchLabels: {app: web}}",
        "  publishNotReadyAddresses: true\n",
    );
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &publishing,
        &ready,
        &unready,
        &off,
    ]);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn external_traffic_policy_local_holds_as_switchyard_forwards() {
    let res = with_policy("  externalTrafficPolicy: Local\n");
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
    let (ipv4, ipv6) = kept_with_policy("  externalTrafficPolicy: Local\n");
    assert_eq!((ipv4.len(), ipv6.len()), (1, 2), "nothing filtered");
}

#[test]
fn internal_traffic_policy_local_is_unsupported_value_and_cluster_is_used() {
    let res = with_policy("  internalTrafficPolicy: Local\n");
    only_reason(&res, "TrafficPolicy lb/p", Reason::UnsupportedValue);
    let d = &res.diagnostics[0];
    assert_eq!(d.condition, ConditionType::Accepted);
    assert_eq!(d.parent.as_deref(), Some("lb/r"));
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
    let (ipv4, ipv6) = kept_with_policy("  internalTrafficPolicy: Local\n");
    assert_eq!((ipv4.len(), ipv6.len()), (1, 2), "nothing filtered");
    let res = with_policy("  internalTrafficPolicy: Cluster\n");
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
}

#[test]
fn route_settings_of_two_policies_oldest_wins_and_the_other_is_conflicted() {
    let world = dual_stack_world();
    let old = policy(
        "old",
        "2024-01-01T00:00:00Z",
        "TCPRoute",
        "r",
        "  ipFamilies: [IPv4]\n",
    );
    let new = policy(
        "new",
        "2025-01-01T00:00:00Z",
        "TCPRoute",
        "r",
        "  ipFamilies: [IPv6]\n  publishNotReadyAddresses: true\n",
    );
    let res = compile(&[
        CLASS,
        EDGE,
        &tcp_route(TO_SELECTOR),
        &world[0],
        &world[1],
        &world[2],
        &new,
        &old,
    ]);
    only_reason(&res, "TrafficPolicy lb/new", Reason::Conflicted);
    assert!(res.diagnostics[0].message.contains("spec.ipFamilies"));
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
}

#[test]
fn route_settings_on_a_service_or_gateway_are_invalid_and_a_missing_route_not_found() {
    let on_service = "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
        metadata: {name: p, namespace: lb}\nspec:\n  \
        targetRefs: [{group: \"\", kind: Service, name: web}, {group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\n  \
        publishNotReadyAddresses: true\n";
    let res = compile(&[CLASS, EDGE, on_service]);
    assert_eq!(
        reasons(&res),
        [
            ("TrafficPolicy lb/p".to_owned(), Reason::Invalid),
            ("TrafficPolicy lb/p".to_owned(), Reason::Invalid)
        ],
        "{:#?}",
        res.diagnostics
    );
    let missing = policy(
        "p",
        "2024-01-01T00:00:00Z",
        "UDPRoute",
        "nope",
        "  ipFamilies: [IPv4]\n",
    );
    let res = compile(&[CLASS, EDGE, &missing]);
    only_reason(&res, "TrafficPolicy lb/p", Reason::TargetNotFound);
}

#[test]
fn service_external_ips_are_unsupported_value_and_the_service_still_serves() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: lb}\nspec:\n  \
        ports: [{name: tcp, port: 80, targetPort: 8080}]\n  externalIPs: [203.0.113.7]\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: lb, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nendpoints: [{addresses: [\"10.1.0.1\"]}]\nports: [{name: tcp, port: 8080}]\n";
    let r = tcp_route("[{name: web, port: 80}]");
    let res = compile(&[CLASS, EDGE, &r, svc, slice]);
    only_reason(&res, "Service lb/web", Reason::UnsupportedValue);
    assert!(res.diagnostics[0].message.contains("203.0.113.7"));
    assert_eq!(served(&res, "lb/edge/tcp"), ["10.1.0.1:8080"]);
    assert!(res
        .snapshot
        .listeners()
        .iter()
        .all(|l| l.address().to_string() == "10.0.0.1"));
}

// ------------------------------------------------------------------- example

#[test]
fn backend_kinds_example_serves_pods_and_the_imported_service() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backend-kinds.yaml");
    let res = super::tests::checked(crate::compile_file(path, 1).unwrap());
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    let web = listener(&res, "demo/kinds/web");
    assert_eq!(web.address().to_string(), "198.18.100.20");
    assert_eq!(
        served(&res, "demo/kinds/web"),
        ["198.18.2.31:8080", "198.18.2.32:8080"]
    );
    // The Pod being deleted beside ready ones keeps its connections.
    assert_eq!(draining(&res, "demo/kinds/web"), ["198.18.2.34:8080"]);
    assert_eq!(web.affinity(), None);
    let store = listener(&res, "demo/kinds/store");
    assert_eq!(
        served(&res, "demo/kinds/store"),
        ["198.18.2.41:8443", "198.18.2.51:8443"]
    );
    assert_eq!(store.affinity().map(|a| a.timeout_secs), Some(600));
    assert_eq!(store.groups()[0].service, "store/store");
    assert_eq!(
        served(&res, "demo/kinds/store-dns"),
        ["198.18.2.41:5353", "198.18.2.51:5353"]
    );
}
