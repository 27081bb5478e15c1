//! Status rules, each on the smallest YAML that shows it.

use crate::load::load_str;
use crate::resolve::{resolve, Resolution};
use crate::status::{Condition, ConditionStatus, ResourceStatus, RouteParentStatus, Status};

const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.io/gateway-controller}
";

fn gateway(name: &str, address: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  gatewayClassName: sy\n  addresses: [{address}]\n  listeners: {listeners}\n"
    )
}

const TCP_80: &str = "[{name: tcp, port: 80, protocol: TCP}]";

fn route(name: &str, parents: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: lb}}\n\
         spec:\n  parentRefs: {parents}\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

fn compile(docs: &[&str]) -> Resolution {
    let text = docs.join("---\n");
    crate::resolve::tests::checked(resolve(
        &load_str("test.yaml", &text).unwrap_or_else(|e| panic!("{e}")),
        1,
    ))
}

fn find<'a>(res: &'a Resolution, kind: &str, name: &str) -> &'a ResourceStatus {
    res.statuses
        .iter()
        .find(|s| s.kind == kind && s.metadata.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}: {:#?}", res.statuses))
}

fn parents<'a>(res: &'a Resolution, route: &str) -> &'a [RouteParentStatus] {
    match &find(res, "TCPRoute", route).status {
        Status::Route(s) => &s.parents,
        other => panic!("{other:?}"),
    }
}

#[track_caller]
fn assert_condition(conditions: &[Condition], condition_type: &str, status: bool, reason: &str) {
    let c = crate::status::condition(conditions, condition_type)
        .unwrap_or_else(|| panic!("no {condition_type} in {conditions:#?}"));
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::from_bool(status), reason),
        "{c:#?}"
    );
}

/// A file cannot hold two TCP listeners on one port (the CRD refuses it at
/// load, and two Gateways never share an address), but resolution is also
/// fed by programs: it must still refuse to pick a side.
#[test]
fn listeners_on_the_same_address_port_and_protocol_are_conflicted_and_not_programmed() {
    let text = [CLASS, &gateway("a", "{value: 10.0.0.1}", TCP_80)].join("---\n");
    let mut resources = load_str("test.yaml", &text).unwrap();
    let mut twin = resources.gateways[0].spec.listeners[0].clone();
    twin.name = "twin".into();
    resources.gateways[0].spec.listeners.push(twin);
    let res = crate::resolve::tests::checked(resolve(&resources, 1));
    assert!(
        res.snapshot.listeners().is_empty(),
        "neither side carries traffic"
    );
    let Status::Gateway(status) = &find(&res, "Gateway", "a").status else {
        unreachable!()
    };
    for listener in &status.listeners {
        let conditions = &listener.conditions;
        assert_condition(conditions, "Conflicted", true, "ProtocolConflict");
        assert_condition(conditions, "Programmed", false, "Invalid");
        assert_condition(conditions, "Accepted", true, "Accepted");
    }
    assert_condition(&status.conditions, "Accepted", true, "ListenersNotValid");
}

#[test]
fn a_second_gateway_on_a_taken_address_is_not_programmed() {
    let res = compile(&[
        CLASS,
        &gateway("a", "{value: 10.0.0.1}", TCP_80),
        &gateway(
            "b",
            "{value: 10.0.0.1}",
            "[{name: udp, port: 53, protocol: UDP}]",
        ),
    ]);
    let Status::Gateway(older) = &find(&res, "Gateway", "a").status else {
        unreachable!()
    };
    assert_condition(&older.conditions, "Programmed", true, "Programmed");
    let Status::Gateway(newer) = &find(&res, "Gateway", "b").status else {
        unreachable!()
    };
    assert_condition(&newer.conditions, "Programmed", false, "AddressNotUsable");
    assert!(newer.addresses.is_empty(), "{:?}", newer.addresses);
}

#[test]
fn a_backend_problem_is_in_every_parents_resolved_refs() {
    let res = compile(&[
        CLASS,
        &gateway("a", "{value: 10.0.0.1}", TCP_80),
        &gateway("b", "{value: 10.0.0.2}", TCP_80),
        &route("r", "[{name: a}, {name: b}]", "missing"),
    ]);
    let parents = parents(&res, "r");
    assert_eq!(parents.len(), 2);
    for parent in parents {
        assert_condition(&parent.conditions, "Accepted", true, "Accepted");
        assert_condition(&parent.conditions, "ResolvedRefs", false, "BackendNotFound");
        assert_eq!(parent.controller_name, "switchyard.io/gateway-controller");
    }
    // The diagnostics still say it once, for the route.
    assert_eq!(
        res.diagnostics
            .iter()
            .filter(|d| d.name == "r" && d.parent.is_none())
            .count(),
        1
    );
}

#[test]
fn each_parent_ref_gets_its_own_outcome() {
    let res = compile(&[
        CLASS,
        &gateway("a", "{value: 10.0.0.1}", TCP_80),
        &route(
            "r",
            "[{name: a, port: 80}, {name: a, port: 81}, {name: nowhere}]",
            "missing",
        ),
    ]);
    let parents = parents(&res, "r");
    let outcomes: Vec<(Option<u16>, &str, &str)> = parents
        .iter()
        .map(|p| {
            let accepted = crate::status::condition(&p.conditions, "Accepted").unwrap();
            (
                p.parent_ref.port,
                p.parent_ref.name.as_str(),
                accepted.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(80), "a", "Accepted"),
            (Some(81), "a", "NoMatchingParent"),
            (None, "nowhere", "NoMatchingParent"),
        ]
    );
}

#[test]
fn a_route_whose_only_parent_does_not_exist_says_nothing_about_its_backends() {
    let res = compile(&[CLASS, &route("r", "[{name: nowhere}]", "missing")]);
    let parent = &parents(&res, "r")[0];
    assert_condition(&parent.conditions, "Accepted", false, "NoMatchingParent");
    assert!(crate::status::condition(&parent.conditions, "ResolvedRefs").is_none());
}

#[test]
fn routes_of_other_controllers_gateways_get_no_status() {
    let other = CLASS
        .replace("name: sy", "name: other")
        .replace("switchyard.io", "example.net");
    let theirs = gateway("a", "{value: 10.0.0.1}", TCP_80).replace("sy\n", "other\n");
    let res = compile(&[&other, &theirs, &route("r", "[{name: a}]", "missing")]);
    assert!(res.statuses.is_empty(), "{:#?}", res.statuses);
}

#[test]
fn observed_generation_is_the_objects_generation_or_1() {
    let generation_7 = gateway("a", "{value: 10.0.0.1}", TCP_80)
        .replace("namespace: lb}", "namespace: lb, generation: 7}");
    let res = compile(&[CLASS, &generation_7, &route("r", "[{name: a}]", "missing")]);
    let gateway = find(&res, "Gateway", "a");
    assert!(gateway
        .status
        .conditions()
        .iter()
        .all(|c| c.observed_generation == 7));
    let Status::Gateway(status) = &gateway.status else {
        unreachable!()
    };
    assert!(status.listeners[0]
        .conditions
        .iter()
        .all(|c| c.observed_generation == 7));
    assert!(parents(&res, "r")[0]
        .conditions
        .iter()
        .all(|c| c.observed_generation == 1));
}

#[test]
fn an_unsupported_address_type_is_not_accepted_nor_programmed() {
    let res = compile(&[
        CLASS,
        &gateway("a", "{type: Hostname, value: lb.example}", TCP_80),
    ]);
    let conditions = find(&res, "Gateway", "a").status.conditions();
    assert_condition(conditions, "Accepted", false, "UnsupportedAddress");
    assert_condition(conditions, "Programmed", false, "Invalid");
}

#[test]
fn a_gateway_without_address_is_accepted_but_not_programmed() {
    let text = gateway("a", "", TCP_80);
    let res = compile(&[CLASS, &text]);
    let Status::Gateway(status) = &find(&res, "Gateway", "a").status else {
        unreachable!()
    };
    assert!(status.addresses.is_empty());
    assert_condition(&status.conditions, "Accepted", true, "Accepted");
    assert_condition(
        &status.conditions,
        "Programmed",
        false,
        "AddressNotAssigned",
    );
    assert_condition(
        &status.listeners[0].conditions,
        "Programmed",
        false,
        "Pending",
    );
}

#[test]
fn a_gateway_with_infrastructure_parameters_is_not_accepted_nor_served() {
    let with_parameters = gateway("a", "{value: 10.0.0.1}", TCP_80).replace(
        "  listeners:",
        "  infrastructure:\n    parametersRef: {group: example.net, kind: Tuning, name: t}\n  listeners:",
    );
    let res = compile(&[CLASS, &with_parameters, &route("r", "[{name: a}]", "web")]);
    assert!(res.snapshot.listeners().is_empty(), "not served");
    assert!(res.snapshot.dns().is_empty(), "not named");
    let Status::Gateway(status) = &find(&res, "Gateway", "a").status else {
        unreachable!()
    };
    assert_condition(&status.conditions, "Accepted", false, "InvalidParameters");
    assert_condition(&status.conditions, "Programmed", false, "Invalid");
    assert!(status.addresses.is_empty(), "{:?}", status.addresses);
    assert_condition(
        &status.listeners[0].conditions,
        "Programmed",
        false,
        "Invalid",
    );
    // Labels and annotations alone ask for nothing Switchyard must read.
    let labels_only = gateway("a", "{value: 10.0.0.1}", TCP_80).replace(
        "  listeners:",
        "  infrastructure:\n    labels: {team: edge}\n  listeners:",
    );
    let res = compile(&[CLASS, &labels_only]);
    assert_eq!(res.snapshot.listeners().len(), 1);
    assert_condition(
        find(&res, "Gateway", "a").status.conditions(),
        "Accepted",
        true,
        "Accepted",
    );
}

#[test]
fn a_gateway_class_with_unknown_parameters_is_not_accepted() {
    let class = CLASS.replace(
        "controllerName: switchyard.io/gateway-controller}",
        "controllerName: switchyard.io/gateway-controller, \
         parametersRef: {group: example.net, kind: Nothing, name: x}}",
    );
    let res = compile(&[&class]);
    let status = find(&res, "GatewayClass", "sy");
    assert_condition(
        status.status.conditions(),
        "Accepted",
        false,
        "InvalidParameters",
    );
}

#[test]
fn a_policy_has_one_ancestor_per_target_with_its_own_conditions() {
    let policy = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: p, namespace: lb}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: a}
  - {group: gateway.networking.k8s.io, kind: Gateway, name: gone}
  maglev: {tableSize: 4093}
";
    let res = compile(&[CLASS, &gateway("a", "{value: 10.0.0.1}", TCP_80), policy]);
    let Status::Policy(status) = &find(&res, "TrafficPolicy", "p").status else {
        unreachable!()
    };
    let outcome: Vec<(&str, &str)> = status
        .ancestors
        .iter()
        .map(|a| {
            let accepted = crate::status::condition(&a.conditions, "Accepted").unwrap();
            (a.ancestor_ref.name.as_str(), accepted.reason.as_str())
        })
        .collect();
    assert_eq!(outcome, [("a", "Accepted"), ("gone", "TargetNotFound")]);
}

#[test]
fn status_serializes_with_the_apis_field_names_and_no_transition_time() {
    let res = compile(&[
        CLASS,
        &gateway("a", "{value: 10.0.0.1}", TCP_80),
        &route("r", "[{name: a, sectionName: tcp}]", "missing"),
    ]);
    let json = serde_json::to_string(&res.statuses).unwrap();
    for field in [
        "\"apiVersion\"",
        "\"supportedKinds\"",
        "\"attachedRoutes\":1",
        "\"observedGeneration\":1",
        "\"parentRef\"",
        "\"sectionName\":\"tcp\"",
        "\"controllerName\"",
        "\"status\":\"True\"",
        "\"type\":\"IPAddress\"",
    ] {
        assert!(json.contains(field), "{field} in {json}");
    }
    assert!(!json.contains("lastTransitionTime"));
    assert!(!json.contains("null"), "{json}");
}

#[test]
fn a_target_no_setting_applies_to_is_invalid_on_its_own_ancestor_only() {
    let policy = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: p, namespace: lb}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: a}
  - {group: '', kind: ConfigMap, name: settings}
  maglev: {tableSize: 4093}
";
    let res = compile(&[CLASS, &gateway("a", "{value: 10.0.0.1}", TCP_80), policy]);
    let Status::Policy(status) = &find(&res, "TrafficPolicy", "p").status else {
        unreachable!()
    };
    let outcome: Vec<(&str, &str)> = status
        .ancestors
        .iter()
        .map(|a| {
            let accepted = crate::status::condition(&a.conditions, "Accepted").unwrap();
            (a.ancestor_ref.name.as_str(), accepted.reason.as_str())
        })
        .collect();
    assert_eq!(outcome, [("a", "Accepted"), ("settings", "Invalid")]);
}
