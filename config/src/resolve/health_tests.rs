//! Which TrafficPolicy's healthCheck each backendRef of each listener
//! carries, on the demo config: the Service beats the route, which beats
//! the listener, which beats the Gateway; the oldest wins among equals.

use super::*;
use crate::load::load_str;
use crate::snapshot::{Probe, WhenAllUnhealthy};

const DEMO: &str = include_str!("../../examples/demo.yaml");

const SERVICE: &str = "{group: \"\", kind: Service, name: echo}";
const ROUTE: &str = "{group: gateway.networking.k8s.io, kind: TCPRoute, name: echo-tcp}";
const LISTENER: &str =
    "{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: tcp-echo}";
const GATEWAY: &str = "{group: gateway.networking.k8s.io, kind: Gateway, name: edge}";

/// A health TrafficPolicy `demo/name` created at `created` on `target`.
fn policy(name: &str, created: &str, target: &str) -> String {
    format!(
        "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: demo, creationTimestamp: \"{created}\"}}\n\
         spec:\n  targetRefs: [{target}]\n  healthCheck:\n    active: {{type: TCP}}\n"
    )
}

fn resolve_text(text: &str) -> Resolution {
    let resources = load_str("health.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let res = resolve(&resources, 1);
    assert!(res.repeated_condition_types().is_empty());
    res
}

/// The policy whose check each backendRef of `listener` carries.
fn checked_by(res: &Resolution, listener: &str) -> Vec<Option<String>> {
    let listener = res
        .snapshot
        .listeners()
        .iter()
        .find(|l| l.name().listener == listener)
        .unwrap_or_else(|| panic!("no listener {listener}: {:?}", res.diagnostics));
    listener
        .groups()
        .iter()
        .map(|g| g.health_check.as_ref().map(|c| c.policy.clone()))
        .collect()
}

fn conflicted(res: &Resolution) -> Vec<&str> {
    res.diagnostics
        .iter()
        .filter(|d| d.reason == Reason::Conflicted)
        .map(|d| d.name.as_str())
        .collect()
}

#[test]
fn without_a_health_check_no_backend_ref_carries_one() {
    let res = resolve_text(DEMO);
    for listener in ["tcp-echo", "udp-echo"] {
        assert_eq!(checked_by(&res, listener), vec![None]);
    }
}

/// Policies as (name, created, target).
type Policies<'a> = &'a [(&'a str, &'a str, &'a str)];

#[test]
fn the_target_closest_to_the_endpoints_wins_then_the_oldest() {
    const OLD: &str = "2026-01-01T00:00:00Z";
    const NEW: &str = "2026-06-01T00:00:00Z";
    // (policies, winner on tcp-echo, conflicted)
    let cases: &[(Policies, &str, &[&str])] = &[
        (&[("gw", OLD, GATEWAY)], "demo/gw", &[]),
        (
            &[("gw", OLD, GATEWAY), ("ls", NEW, LISTENER)],
            "demo/ls",
            &[],
        ),
        (&[("ls", OLD, LISTENER), ("rt", NEW, ROUTE)], "demo/rt", &[]),
        (
            &[("rt", OLD, ROUTE), ("svc", NEW, SERVICE)],
            "demo/svc",
            &[],
        ),
        (
            &[
                ("svc", NEW, SERVICE),
                ("rt", OLD, ROUTE),
                ("ls", OLD, LISTENER),
                ("gw", OLD, GATEWAY),
            ],
            "demo/svc",
            &[],
        ),
        (
            &[("b", NEW, GATEWAY), ("a", OLD, GATEWAY)],
            "demo/a",
            &["b"],
        ),
        (
            &[("b", OLD, LISTENER), ("a", NEW, LISTENER)],
            "demo/b",
            &["a"],
        ),
        (&[("b", OLD, ROUTE), ("a", OLD, ROUTE)], "demo/a", &["b"]),
        (
            &[("a", NEW, SERVICE), ("b", OLD, SERVICE)],
            "demo/b",
            &["a"],
        ),
        // Overridden by a closer target is no conflict: `a` loses to `c`
        // unreported, while `b` still loses to `a` on the Gateway.
        (
            &[
                ("a", OLD, GATEWAY),
                ("b", NEW, GATEWAY),
                ("c", NEW, SERVICE),
            ],
            "demo/c",
            &["b"],
        ),
    ];
    for (policies, winner, losers) in cases {
        let mut text = DEMO.to_owned();
        for (name, created, target) in *policies {
            text += &policy(name, created, target);
        }
        let res = resolve_text(&text);
        assert_eq!(
            checked_by(&res, "tcp-echo"),
            vec![Some((*winner).to_owned())],
            "{policies:?}"
        );
        assert_eq!(
            conflicted(&res),
            *losers,
            "{policies:?}: {:#?}",
            res.diagnostics
        );
        // Each loser names the oldest policy on its own target.
        for d in res
            .diagnostics
            .iter()
            .filter(|d| d.reason == Reason::Conflicted)
        {
            let target = policies.iter().find(|p| p.0 == d.name).unwrap().2;
            let beaten_by = policies
                .iter()
                .filter(|p| p.2 == target)
                .min_by_key(|p| (p.1, p.0))
                .unwrap()
                .0;
            assert!(
                d.message
                    .contains(&format!("set by TrafficPolicy demo/{beaten_by}")),
                "{d:?}"
            );
        }
    }
}

#[test]
fn a_service_check_applies_on_every_route_using_it_and_a_route_check_on_its_own() {
    let res = resolve_text(
        &(DEMO.to_owned()
            + &policy("rt", "2026-01-01T00:00:00Z", ROUTE)
            + &policy("ls", "2026-01-01T00:00:00Z", LISTENER)),
    );
    assert_eq!(checked_by(&res, "tcp-echo"), vec![Some("demo/rt".into())]);
    assert_eq!(checked_by(&res, "udp-echo"), vec![None]);
    let res = resolve_text(&(DEMO.to_owned() + &policy("svc", "2026-01-01T00:00:00Z", SERVICE)));
    assert_eq!(checked_by(&res, "tcp-echo"), vec![Some("demo/svc".into())]);
    assert_eq!(checked_by(&res, "udp-echo"), vec![Some("demo/svc".into())]);
}

#[test]
fn the_check_carries_the_policys_settings_and_changes_nothing_else() {
    let text = DEMO.to_owned()
        + "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
           metadata: {name: web-health, namespace: demo}\n\
           spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: UDPRoute, name: echo-udp}]\n\
           \x20 healthCheck:\n    whenAllUnhealthy: Refuse\n    active:\n      type: HTTP\n\
           \x20     interval: 1s\n      timeout: 500ms\n      port: 8081\n\
           \x20     http: {path: /healthz}\n";
    let with = resolve_text(&text);
    let without = resolve_text(DEMO);
    let listener = |res: &Resolution| {
        res.snapshot
            .listeners()
            .iter()
            .find(|l| l.name().listener == "udp-echo")
            .cloned()
            .unwrap()
    };
    let (checked, plain) = (listener(&with), listener(&without));
    let check = checked.groups()[0].health_check.clone().expect("checked");
    // An HTTP probe guarding a UDP route is accepted as it is.
    assert!(matches!(check.probe, Probe::Http { ref path, .. } if path == "/healthz"));
    assert_eq!(check.port, Some(8081));
    assert_eq!(check.when_all_unhealthy, WhenAllUnhealthy::Refuse);
    assert_eq!(check.interval, std::time::Duration::from_secs(1));
    assert_eq!(checked.backends(), plain.backends());
    assert!(checked.slots() == plain.slots());
    assert!(with.diagnostics.is_empty(), "{:#?}", with.diagnostics);
}

#[test]
fn a_health_check_alone_is_accepted_on_each_of_the_four_target_kinds() {
    let mut text = DEMO.to_owned();
    for (name, target) in [
        ("svc", SERVICE),
        ("rt", ROUTE),
        ("ls", LISTENER),
        ("gw", GATEWAY),
    ] {
        text += &policy(name, "2026-01-01T00:00:00Z", target);
    }
    let res = resolve_text(&text);
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    for name in ["svc", "rt", "ls", "gw"] {
        let status = res
            .statuses
            .iter()
            .find(|s| s.kind == "TrafficPolicy" && s.metadata.name == name)
            .expect("a status");
        let json = serde_json::to_string(status).unwrap();
        assert!(json.contains("\"reason\":\"Accepted\""), "{json}");
        assert!(!json.contains("\"status\":\"False\""), "{json}");
    }
}

#[test]
fn missing_targets_and_other_kinds_are_reported() {
    let mut text = DEMO.to_owned();
    for (name, target) in [
        ("svc", "{group: \"\", kind: Service, name: nope}"),
        (
            "rt",
            "{group: gateway.networking.k8s.io, kind: UDPRoute, name: nope}",
        ),
        (
            "ls",
            "{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: nope}",
        ),
        (
            "gw",
            "{group: gateway.networking.k8s.io, kind: Gateway, name: nope}",
        ),
        (
            "imp",
            "{group: multicluster.x-k8s.io, kind: ServiceImport, name: echo}",
        ),
    ] {
        text += &policy(name, "2026-01-01T00:00:00Z", target);
    }
    let res = resolve_text(&text);
    let reason = |name: &str| -> Vec<Reason> {
        res.diagnostics
            .iter()
            .filter(|d| d.name == name)
            .map(|d| d.reason)
            .collect()
    };
    for name in ["svc", "rt", "ls", "gw"] {
        assert_eq!(
            reason(name),
            vec![Reason::TargetNotFound],
            "{name}: {:#?}",
            res.diagnostics
        );
    }
    assert_eq!(reason("imp"), vec![Reason::Invalid]);
    assert_eq!(checked_by(&res, "tcp-echo"), vec![None]);
}

#[test]
fn the_example_resolves_as_its_comments_say() {
    let res = resolve_text(include_str!("../../examples/health-check.yaml"));
    assert!(res.diagnostics.is_empty(), "{:#?}", res.diagnostics);
    assert_eq!(
        checked_by(&res, "tcp-echo"),
        vec![Some("demo/echo-http".into())]
    );
    assert_eq!(
        checked_by(&res, "udp-echo"),
        vec![Some("demo/echo-udp".into())]
    );
}

#[test]
fn a_service_target_does_not_match_an_endpoint_selector_of_its_name() {
    let text = include_str!("../../examples/backend-kinds.yaml").to_owned()
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n\
           spec:\n  ports: [{name: http, port: 80, protocol: TCP}]\n"
        + &policy(
            "svc",
            "2026-06-01T00:00:00Z",
            "{group: \"\", kind: Service, name: web}",
        )
        + &policy(
            "ls",
            "2026-01-01T00:00:00Z",
            "{group: gateway.networking.k8s.io, kind: Gateway, name: kinds, sectionName: web}",
        );
    let res = resolve_text(&text);
    // The route's only backendRef is EndpointSelector demo/web.
    assert_eq!(checked_by(&res, "web"), vec![Some("demo/ls".into())]);
}
