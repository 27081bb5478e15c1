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
            + "    tls:\n      mode: Terminate\n";
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
