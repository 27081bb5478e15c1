//! Forwarding modes, source ranges and limits per listener: from the
//! GatewayClass's parameters, TrafficPolicies and Services, on the demo
//! config.

use super::*;
use crate::load::load_str;
use crate::snapshot::{Forwarding, FullNat, Gue, ProxyProtocol};

const DEMO: &str = include_str!("../../examples/demo.yaml");

/// The demo with its class pointing at a GatewayClassConfig `sy` whose
/// spec.forwarding is `forwarding` (a flow mapping).
fn demo_with_class_mode(forwarding: &str) -> String {
    let demo = DEMO.replacen(
        "  controllerName: switchyard.io/gateway-controller\n",
        "  controllerName: switchyard.io/gateway-controller\n  parametersRef:\n    \
         group: switchyard.io\n    kind: GatewayClassConfig\n    name: sy\n",
        1,
    );
    format!(
        "{demo}---\napiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\n\
         metadata: {{name: sy}}\nspec:\n  forwarding: {forwarding}\n"
    )
}

/// A TrafficPolicy `demo/name` created at `created`, targeting Gateway
/// `demo/edge` (or its listener `section`), with `spec` lines appended.
fn policy(name: &str, created: &str, section: Option<&str>, spec: &str) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: demo, creationTimestamp: \"{created}\"}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge\
         {section}}}]\n{spec}"
    )
}

fn resolve_text(text: &str) -> Resolution {
    let resources = load_str("traffic.yaml", text).expect("loads");
    resolve(&resources, 1)
}

fn listener<'r>(res: &'r Resolution, name: &str) -> &'r Listener {
    res.snapshot
        .listeners()
        .iter()
        .find(|l| l.name().listener == name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", res.diagnostics))
}

fn has(res: &Resolution, kind: &str, name: &str, reason: Reason) -> bool {
    res.diagnostics
        .iter()
        .any(|d| d.kind == kind && d.name == name && d.reason == reason)
}

#[test]
fn without_parameters_every_listener_is_nat_and_open() {
    let res = resolve_text(DEMO);
    for l in res.snapshot.listeners() {
        assert_eq!(l.forwarding(), &Forwarding::Nat, "{}", l.name());
        assert!(l.policy().is_open(), "{}", l.name());
    }
}

#[test]
fn the_class_config_sets_the_mode_of_its_gateways() {
    let res = resolve_text(&demo_with_class_mode(
        "{mode: fullnat, snatAddresses: [198.18.2.1, '2001:db8::1'], proxyProtocol: V2}",
    ));
    assert!(res.diagnostics.is_empty(), "{:?}", res.diagnostics);
    // Each listener keeps the SNAT addresses of its VIP's family.
    assert_eq!(
        listener(&res, "tcp-echo").forwarding(),
        &Forwarding::FullNat(FullNat {
            addresses: vec!["198.18.2.1".parse().unwrap()],
            proxy_protocol: Some(ProxyProtocol::V2),
        })
    );
}

#[test]
fn a_policy_on_the_listener_beats_one_on_the_gateway_which_beats_the_class() {
    let text = demo_with_class_mode("{mode: fullnat}")
        + &policy(
            "gateway-wide",
            "2026-01-01T00:00:00Z",
            None,
            "  forwarding: {mode: ipip}\n",
        )
        + &policy(
            "udp-only",
            "2026-06-01T00:00:00Z",
            Some("udp-echo"),
            "  forwarding: {mode: gue, guePort: 7777}\n",
        );
    let text = same_ports(&text);
    let res = resolve_text(&text);
    assert_eq!(listener(&res, "tcp-echo").forwarding(), &Forwarding::Ipip);
    assert_eq!(
        listener(&res, "udp-echo").forwarding(),
        &Forwarding::Gue(Gue { port: 7777 })
    );
}

/// `text` with the demo's endpoint ports made the listeners' ports.
fn same_ports(text: &str) -> String {
    text.replace("targetPort: 8080", "targetPort: 80")
        .replace("targetPort: 5353", "targetPort: 53")
        .replace("  port: 8080", "  port: 80")
        .replace("  port: 5353", "  port: 53")
}

#[test]
fn equally_specific_policies_setting_the_mode_conflict_and_the_oldest_wins() {
    let text = same_ports(DEMO)
        + &policy(
            "old",
            "2026-01-01T00:00:00Z",
            None,
            "  forwarding: {mode: dsr}\n",
        )
        + &policy(
            "new",
            "2026-02-01T00:00:00Z",
            None,
            "  forwarding: {mode: ipip}\n",
        );
    let res = resolve_text(&text);
    assert_eq!(listener(&res, "tcp-echo").forwarding(), &Forwarding::Dsr);
    assert!(has(&res, "TrafficPolicy", "new", Reason::Conflicted));
    assert!(!has(&res, "TrafficPolicy", "old", Reason::Conflicted));
    // Settings are won each on its own: the newer policy's limits apply.
    let text = same_ports(DEMO)
        + &policy(
            "old",
            "2026-01-01T00:00:00Z",
            None,
            "  forwarding: {mode: dsr}\n",
        )
        + &policy(
            "new",
            "2026-02-01T00:00:00Z",
            None,
            "  limits: {maxFlows: 100}\n",
        );
    let res = resolve_text(&text);
    assert_eq!(listener(&res, "tcp-echo").forwarding(), &Forwarding::Dsr);
    assert_eq!(
        listener(&res, "tcp-echo")
            .policy()
            .max_flows
            .map(|n| n.get()),
        Some(100)
    );
    assert!(!has(&res, "TrafficPolicy", "new", Reason::Conflicted));
}

#[test]
fn a_mode_that_keeps_the_packet_refuses_port_translation_with_file_and_line() {
    for mode in ["dsr", "ipip", "gue"] {
        let text = DEMO.to_owned()
            + &policy(
                "keep",
                "2026-01-01T00:00:00Z",
                Some("tcp-echo"),
                &format!("  forwarding: {{mode: {mode}}}\n"),
            );
        let res = resolve_text(&text);
        // The listener is not served; the other one is, in nat.
        assert!(res
            .snapshot
            .listeners()
            .iter()
            .all(|l| l.name().listener != "tcp-echo"));
        assert_eq!(listener(&res, "udp-echo").forwarding(), &Forwarding::Nat);
        let d = res
            .diagnostics
            .iter()
            .find(|d| d.reason == Reason::PortTranslationNotSupported)
            .expect("reported");
        assert_eq!(d.resource(), "TCPRoute demo/echo-tcp");
        assert!(d.message.contains("listens on port 8080"), "{}", d.message);
        assert!(d.message.contains(&format!("mode {mode}")), "{}", d.message);

        let resources = load_str("traffic.yaml", &text).unwrap();
        let error = crate::refuse(&resources, &res).unwrap_err().to_string();
        let route_line = text
            .lines()
            .position(|l| l == "kind: TCPRoute")
            // 0-based, so the 1-based line before it: apiVersion, where
            // the document starts.
            .expect("a TCPRoute");
        assert!(
            error.starts_with(&format!(
                "traffic.yaml:{route_line}: TCPRoute \"demo/echo-tcp\""
            )),
            "{error}"
        );
        assert!(error.contains("PortTranslationNotSupported"), "{error}");
    }
    // Same ports: served.
    let text = same_ports(DEMO)
        + &policy(
            "keep",
            "2026-01-01T00:00:00Z",
            None,
            "  forwarding: {mode: dsr}\n",
        );
    let res = resolve_text(&text);
    assert_eq!(listener(&res, "tcp-echo").forwarding(), &Forwarding::Dsr);
    let resources = load_str("traffic.yaml", &text).unwrap();
    assert!(crate::refuse(&resources, &res).is_ok());
}

#[test]
fn source_ranges_come_from_the_policy_and_every_service_behind_the_listener() {
    let text = DEMO.replacen(
        "spec:\n  ports:\n  - name: tcp\n",
        "spec:\n  loadBalancerSourceRanges: [198.18.0.0/16, 10.0.0.0/8]\n  ports:\n  - name: tcp\n",
        1,
    ) + &policy(
        "ranges",
        "2026-01-01T00:00:00Z",
        Some("tcp-echo"),
        "  sourceRanges: {allow: [198.18.1.0/24, 192.0.2.0/24], deny: [198.18.1.66/32]}\n",
    );
    let res = resolve_text(&text);
    let tcp = listener(&res, "tcp-echo").policy();
    // The policy's list narrowed to the Service's: 192.0.2.0/24 is not in it.
    assert_eq!(
        tcp.source_ranges.allow,
        Some(vec!["198.18.1.0/24".parse().unwrap()])
    );
    assert!(tcp.source_ranges.admits("198.18.1.10".parse().unwrap()));
    assert!(!tcp.source_ranges.admits("198.18.1.66".parse().unwrap()));
    assert!(!tcp.source_ranges.admits("192.0.2.1".parse().unwrap()));
    // The UDP listener has no policy: the Service's ranges alone.
    let udp = listener(&res, "udp-echo").policy();
    assert!(udp.source_ranges.admits("10.1.2.3".parse().unwrap()));
    assert!(!udp.source_ranges.admits("192.0.2.1".parse().unwrap()));
}

#[test]
fn limits_apply_to_the_targeted_listeners() {
    let text = DEMO.to_owned()
        + &policy(
            "limits",
            "2026-01-01T00:00:00Z",
            None,
            "  limits: {newFlowsPerSecond: 1000, maxFlows: 50000}\n",
        );
    let res = resolve_text(&text);
    for name in ["tcp-echo", "udp-echo"] {
        let p = listener(&res, name).policy();
        assert_eq!(p.new_flows_per_second.map(|n| n.get()), Some(1000));
        assert_eq!(p.max_flows.map(|n| n.get()), Some(50000));
    }
}

#[test]
fn a_listener_setting_on_a_route_is_reported_and_not_applied() {
    let text = DEMO.to_owned()
        + "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
           metadata: {name: on-route, namespace: demo}\nspec:\n  targetRefs: \
           [{group: gateway.networking.k8s.io, kind: TCPRoute, name: echo-tcp}]\n  \
           sessionAffinity: {type: ClientIP}\n  forwarding: {mode: fullnat}\n";
    let res = resolve_text(&text);
    assert!(has(&res, "TrafficPolicy", "on-route", Reason::Invalid));
    assert_eq!(listener(&res, "tcp-echo").forwarding(), &Forwarding::Nat);
}

#[test]
fn a_field_of_another_mode_is_refused_at_load_with_its_line() {
    let text = DEMO.to_owned()
        + &policy(
            "bad",
            "2026-01-01T00:00:00Z",
            None,
            "  forwarding: {mode: dsr, guePort: 6080}\n",
        );
    let error = load_str("traffic.yaml", &text).unwrap_err().to_string();
    assert!(error.starts_with("traffic.yaml:"), "{error}");
    assert!(error.contains("guePort"), "{error}");
}
