//! CRD rules a static file must still obey, since it skips the API server:
//! each broken rule is a load error naming the file, the line and why.
//! (Defaults, list bounds, weights, one rule per v1 route and unique
//! listener names are covered next to the loader.)

use switchyard_config::load_str;

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: lb
spec:
  gatewayClassName: switchyard
  listeners:
  - name: tcp
    port: 80
    protocol: TCP
";

fn err(text: &str) -> String {
    match load_str("t.yaml", text) {
        Ok(_) => panic!("loaded without error:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn listener_names_are_section_names() {
    for bad in ["Tcp", "tcp_1", "-tcp", "tcp.", "a..b"] {
        let text = GATEWAY.replace("name: tcp", &format!("name: \"{bad}\""));
        let e = err(&text);
        assert!(
            e.starts_with("t.yaml:9: Gateway \"lb/edge\": spec.listeners[0].name: invalid value"),
            "{e}"
        );
        assert!(e.contains("a section name is lower-case"), "{e}");
    }
    for good in ["tcp", "tcp-1", "a.b", "0"] {
        let text = GATEWAY.replace("name: tcp", &format!("name: \"{good}\""));
        assert!(load_str("t.yaml", &text).is_ok(), "{good}");
    }
}

#[test]
fn tls_on_a_tcp_or_udp_listener_is_rejected() {
    for protocol in ["TCP", "UDP"] {
        let text = GATEWAY.replace("protocol: TCP", &format!("protocol: {protocol}"))
            + "    tls:\n      mode: Terminate\n      certificateRefs: [{name: cert}]\n";
        assert_eq!(
            err(&text),
            format!(
                "t.yaml:9: Gateway \"lb/edge\": spec.listeners[0]: tls: must not be specified \
                 for protocol {protocol}"
            )
        );
    }
    // TLS listeners may carry it (and are then not served: UnsupportedProtocol).
    let text =
        GATEWAY.replace("protocol: TCP", "protocol: TLS") + "    tls:\n      mode: Passthrough\n";
    assert!(load_str("t.yaml", &text).is_ok());
}

#[test]
fn hostname_addresses_must_be_dns_names() {
    let text = GATEWAY.replace(
        "  listeners:",
        "  addresses:\n  - type: Hostname\n    value: \"Not A Host\"\n  listeners:",
    );
    assert_eq!(
        err(&text),
        format!(
            "t.yaml:{}: Gateway \"lb/edge\": spec.addresses[0]: value: invalid value \
             \"Not A Host\", expected a lower-case DNS name",
            line_of(&text, "type: Hostname")
        )
    );
    let wildcard = text.replace("Not A Host", "*.lb.example.net");
    assert!(load_str("t.yaml", &wildcard).is_ok());
}

#[test]
fn parent_ref_section_names_are_section_names() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: r, namespace: lb}
spec:
  parentRefs:
  - name: edge
    sectionName: Bad_Name
  rules:
  - backendRefs:
    - {name: web, port: 80}
";
    let e = err(text);
    assert!(
        e.starts_with("t.yaml:7: TCPRoute \"lb/r\": spec.parentRefs[0].sectionName: invalid value"),
        "{e}"
    );
}

#[test]
fn controller_names_are_domain_prefixed_paths() {
    let class = |name: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: c}}\n\
             spec:\n  controllerName: \"{name}\"\n"
        )
    };
    for bad in [
        "gateway-controller",
        "/path",
        "Example.net/x",
        "example.net/",
    ] {
        let e = err(&class(bad));
        assert!(
            e.starts_with("t.yaml:5: GatewayClass \"c\": spec.controllerName: invalid value"),
            "{bad}: {e}"
        );
    }
    assert!(load_str("t.yaml", &class("switchyard.io/gateway-controller")).is_ok());
}

#[test]
fn gateway_class_parameters_ref_needs_kind_and_name() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: c}
spec:
  controllerName: switchyard.io/gateway-controller
  parametersRef: {group: switchyard.io, kind: \"\", name: pool}
";
    let e = err(text);
    assert!(e.contains("spec.parametersRef"), "{e}");
    assert!(e.contains("must not be empty"), "{e}");
}

/// `GATEWAY` with its listener replaced by `listeners` (YAML lines, each
/// indented by two spaces).
fn with_listeners(listeners: &str) -> String {
    GATEWAY.split("  - name: tcp").next().unwrap().to_owned() + listeners
}

#[test]
fn https_listener_tls_mode_must_be_terminate() {
    let https = with_listeners(
        "  - name: https\n    port: 443\n    protocol: HTTPS\n    tls:\n      mode: Passthrough\n",
    );
    assert_eq!(
        err(&https),
        "t.yaml:9: Gateway \"lb/edge\": spec.listeners[0]: tls.mode: must be Terminate for \
         protocol HTTPS"
    );
    let terminate = https.replace(
        "mode: Passthrough\n",
        "mode: Terminate\n      certificateRefs: [{name: cert}]\n",
    );
    assert!(load_str("t.yaml", &terminate).is_ok());
    // The CRD asks for nothing more of an HTTPS listener: without tls it
    // loads (and, like every HTTPS listener, is not accepted).
    let bare = with_listeners("  - name: https\n    port: 443\n    protocol: HTTPS\n");
    assert!(load_str("t.yaml", &bare).is_ok());
}

#[test]
fn tls_listener_needs_tls_settings() {
    let bare = with_listeners("  - name: tls\n    port: 443\n    protocol: TLS\n");
    assert_eq!(
        err(&bare),
        "t.yaml:9: Gateway \"lb/edge\": spec.listeners[0]: tls.mode: must be set for protocol TLS"
    );
    let passthrough = bare.clone() + "    tls:\n      mode: Passthrough\n";
    assert!(load_str("t.yaml", &passthrough).is_ok());
}

#[test]
fn terminate_mode_needs_certificate_refs_or_options() {
    // mode defaults to Terminate, so an empty tls is Terminate without a
    // certificate.
    for tls in ["    tls: {}\n", "    tls:\n      mode: Terminate\n"] {
        let text = with_listeners("  - name: tls\n    port: 443\n    protocol: TLS\n") + tls;
        let e = err(&text);
        assert!(
            e.starts_with("t.yaml:") && e.contains("Gateway \"lb/edge\": spec.listeners[0].tls: "),
            "{e}"
        );
        assert!(
            e.ends_with("certificateRefs or options must be specified when mode is Terminate"),
            "{e}"
        );
    }
    let options = with_listeners("  - name: tls\n    port: 443\n    protocol: TLS\n")
        + "    tls:\n      options: {example.com/x: y}\n";
    assert!(load_str("t.yaml", &options).is_ok());
}

#[test]
fn tls_mode_is_terminate_or_passthrough() {
    let text = with_listeners("  - name: tls\n    port: 443\n    protocol: TLS\n")
        + "    tls:\n      mode: Reencrypt\n";
    let e = err(&text);
    assert!(
        e.starts_with(&format!("t.yaml:{}: ", line_of(&text, "mode: Reencrypt"))),
        "{e}"
    );
    assert!(e.contains("unknown variant `Reencrypt`"), "{e}");
}

#[test]
fn listener_hostnames_are_dns_names_of_at_least_one_character() {
    let http = |hostname: &str| {
        with_listeners(&format!(
            "  - name: http\n    port: 80\n    protocol: HTTP\n    hostname: {hostname}\n"
        ))
    };
    for bad in ["\"\"", "Example.com", "a..b", "\"*\""] {
        let text = http(bad);
        let e = err(&text);
        assert!(
            e.starts_with(&format!(
                "t.yaml:{}: Gateway \"lb/edge\": spec.listeners[0].hostname: ",
                line_of(&text, "hostname:")
            )),
            "{bad}: {e}"
        );
    }
    for good in ["example.com", "\"*.example.com\"", "a-1.b"] {
        assert!(load_str("t.yaml", &http(good)).is_ok(), "{good}");
    }
}

#[test]
fn hostname_on_a_tcp_or_udp_listener_is_rejected() {
    for protocol in ["TCP", "UDP"] {
        let text = GATEWAY.replace("protocol: TCP", &format!("protocol: {protocol}"))
            + "    hostname: example.com\n";
        assert_eq!(
            err(&text),
            format!(
                "t.yaml:9: Gateway \"lb/edge\": spec.listeners[0]: hostname: must not be \
                 specified for protocol {protocol}"
            )
        );
    }
}

/// The CRD's rule: `self.all(l1, self.exists_one(l2, l1.port == l2.port
/// && l1.protocol == l2.protocol && (has(l1.hostname) && has(l2.hostname)
/// ? l1.hostname == l2.hostname : !has(l1.hostname) && !has(l2.hostname))))`.
#[test]
fn listeners_must_differ_in_port_protocol_or_hostname_as_the_crd_compares_them() {
    let two = |a: &str, b: &str| {
        with_listeners(&format!(
            "  - name: a\n    port: 80\n    protocol: HTTP\n{a}  - name: b\n    port: 80\n    \
             protocol: HTTP\n{b}"
        ))
    };
    let host = |h: &str| format!("    hostname: {h}\n");
    // Both without a hostname, or with the same one: the same listener.
    for (a, b) in [
        (String::new(), String::new()),
        (host("a.example"), host("a.example")),
    ] {
        let text = two(&a, &b);
        assert_eq!(
            err(&text),
            format!(
                "t.yaml:{}: Gateway \"lb/edge\": spec.listeners[1]: port 80 with protocol HTTP and \
                 the same hostname is already used by listener \"a\"; the combination of port, \
                 protocol and hostname must be unique for each listener",
                line_of(&text, "- name: b")
            )
        );
    }
    // Different hostnames, or one with and one without: distinct.
    for (a, b) in [
        (host("a.example"), host("b.example")),
        (String::new(), host("b.example")),
        (host("a.example"), String::new()),
    ] {
        assert!(load_str("t.yaml", &two(&a, &b)).is_ok(), "{a}{b}");
    }
}

/// Two TCP (or two UDP) listeners of one Gateway cannot share a port in a
/// file, as in a cluster: listeners differ only by port, protocol and
/// hostname, and the CRD forbids a hostname on TCP and UDP listeners (an
/// empty one is below the hostname's `minLength: 1`). `ProtocolConflict`
/// is for listeners the CRD cannot compare (see README).
#[test]
fn two_tcp_listeners_on_one_port_never_load() {
    let second = |extra: &str| {
        GATEWAY.to_owned() + "  - name: tcp-2\n    port: 80\n    protocol: TCP\n" + extra
    };
    assert!(
        err(&second("")).contains("the combination of port, protocol and hostname must be unique")
    );
    assert!(err(&second("    hostname: b.example\n"))
        .ends_with("hostname: must not be specified for protocol TCP"));
    assert!(err(&second("    hostname: \"\"\n"))
        .contains("spec.listeners[1].hostname: must not be empty"));
    // TCP and UDP may share a port.
    let udp = GATEWAY.to_owned() + "  - name: udp\n    port: 80\n    protocol: UDP\n";
    assert!(load_str("t.yaml", &udp).is_ok());
}

#[test]
fn allowed_routes_from_is_all_same_or_selector() {
    let text = GATEWAY.to_owned() + "    allowedRoutes:\n      namespaces:\n        from: None\n";
    let e = err(&text);
    assert!(
        e.starts_with(&format!("t.yaml:{}: ", line_of(&text, "from: None"))),
        "{e}"
    );
    assert!(
        e.contains("unknown variant `None`, expected one of `All`, `Same`, `Selector`"),
        "{e}"
    );
}

#[test]
fn infrastructure_parameters_ref_needs_group_kind_and_name() {
    let text =
        GATEWAY.to_owned() + "  infrastructure:\n    parametersRef: {kind: Config, name: c}\n";
    let e = err(&text);
    assert!(
        e.contains("spec.infrastructure.parametersRef: missing field `group`"),
        "{e}"
    );
    let ok = text.replace("{kind: Config", "{group: example.net, kind: Config");
    assert!(load_str("t.yaml", &ok).is_ok());
}

#[test]
fn infrastructure_labels_are_at_most_8_and_annotations_16() {
    let entries = |n: usize| -> String {
        (0..n)
            .map(|i| format!("k{i}: v"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let with = |field: &str, n: usize| {
        GATEWAY.to_owned() + &format!("  infrastructure:\n    {field}: {{{}}}\n", entries(n))
    };
    assert!(load_str("t.yaml", &with("labels", 8)).is_ok());
    assert!(err(&with("labels", 9)).contains("spec.infrastructure.labels: more than 8 entries"));
    assert!(load_str("t.yaml", &with("annotations", 16)).is_ok());
    assert!(err(&with("annotations", 17)).contains("more than 16 entries"));
}

#[test]
fn a_route_rule_needs_at_least_one_backend_ref() {
    // minItems: 1 on rules[].backendRefs in both the v1 and v1alpha2 CRDs.
    for version in ["v1", "v1alpha2"] {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/{version}\nkind: TCPRoute\n\
             metadata: {{name: r, namespace: lb}}\nspec:\n  parentRefs: [{{name: edge}}]\n  \
             rules:\n  - backendRefs: []\n"
        );
        assert_eq!(
            err(&text),
            "t.yaml:7: TCPRoute \"lb/r\": spec.rules[0].backendRefs: 0 items, at least 1 required"
        );
    }
}

#[test]
fn a_policy_target_section_name_is_a_section_name() {
    // GEP-713's LocalPolicyTargetReferenceWithSectionName: sectionName is
    // a SectionName, as a listener's name is.
    let policy = |section: &str| {
        format!(
            "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
             metadata: {{name: t, namespace: lb}}\nspec:\n  targetRefs:\n  \
             - {{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: {section}}}\n"
        )
    };
    assert!(load_str("t.yaml", &policy("tcp-1")).is_ok());
    for bad in ["\"Tcp\"", "\"tcp_1\"", "\"\""] {
        let e = err(&policy(bad));
        assert!(
            e.starts_with("t.yaml:6: TrafficPolicy \"lb/t\": spec.targetRefs[0].sectionName:"),
            "{e}"
        );
    }
}
