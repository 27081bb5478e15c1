//! `switchyard check` as an operator runs it: the binary, a file, an exit
//! status and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(config: &Path, output: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(config)
        .args(["-o", output])
        .output()
        .expect("switchyard runs")
}

/// A file of the test's own under the target directory, so that tests
/// running in parallel never share one.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BROKEN: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: lb
spec:
  gatewayClassName: switchyard
  listeners:
  - name: tcp
    port: 70000
    protocol: TCP
";

#[test]
fn a_broken_file_exits_non_zero_with_file_line_what_and_why() {
    let path = file("broken.yaml", BROKEN);
    let out = check(&path, "json");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "{}:10: Gateway \"lb/edge\": spec.listeners[0].port: invalid value 70000, \
             expected 1..=65535\n",
            path.display()
        )
    );
}

#[test]
fn a_missing_file_names_it_and_says_the_os_error_once() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_cli/no-such-file.yaml");
    let out = check(&path, "table");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}: cannot read: ", path.display())),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_file_that_loads_exits_zero_with_the_report_on_stdout() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/demo.yaml");
    let out = check(&path, "json");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["resources"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
}

/// The EndpointSlice a cluster adds to demo/echo once the Service is
/// dual-stack: the same ports, IPv6 addresses.
const ECHO_IPV6_SLICE: &str = "\
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-ipv6
  namespace: demo
  labels:
    kubernetes.io/service-name: echo
addressType: IPv6
endpoints:
- addresses: [\"2001:db8:2::21\"]
  conditions:
    ready: true
ports:
- name: tcp
  protocol: TCP
  port: 8080
- name: udp
  protocol: UDP
  port: 5353
";

#[test]
fn a_dual_stack_service_gives_the_ipv4_listeners_only_its_ipv4_endpoints() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/demo.yaml");
    let text = std::fs::read_to_string(demo).unwrap();
    let path = file("dual-stack-demo.yaml", &format!("{text}{ECHO_IPV6_SLICE}"));
    let out = check(&path, "table");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let listeners = stdout
        .split("\nlisteners:\n")
        .nth(1)
        .and_then(|rest| rest.split("\ndns:\n").next())
        .unwrap_or_else(|| panic!("no listeners section:\n{stdout}"));
    assert_eq!(
        listeners,
        "demo/edge/tcp-echo TCP 198.18.100.10:80 (route demo/echo-tcp) mode nat\n\
         \x20   -> 198.18.2.21:8080  weight 0.500  demo/echo\n\
         \x20   -> 198.18.2.22:8080  weight 0.500  demo/echo\n\
         demo/edge/udp-echo UDP 198.18.100.10:53 (route demo/echo-udp) mode nat\n\
         \x20   -> 198.18.2.21:5353  weight 0.500  demo/echo\n\
         \x20   -> 198.18.2.22:5353  weight 0.500  demo/echo\n",
        "{stdout}"
    );
    // Nothing to report: every dual-stack Service has both slices.
    assert!(
        stdout.contains("Gateway demo/edge [198.18.100.10]  Accepted=True  Programmed=True\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("Degraded"), "{stdout}");
    assert!(
        stdout.ends_with("\ndns:\nedge.demo.gw.cluster.local A 198.18.100.10\n"),
        "{stdout}"
    );
}

/// A mode that leaves the client's packet as it is cannot translate the
/// demo's ports (80 -> 8080): the file is refused at the route that asks
/// for it.
#[test]
fn dsr_with_port_translation_is_refused_at_the_route_line() {
    let demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/demo.yaml"),
    )
    .unwrap();
    let text = demo
        + "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
           metadata: {name: dsr, namespace: demo}\nspec:\n  targetRefs: \
           [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\n  \
           forwarding: {mode: dsr}\n";
    let route_line = text
        .lines()
        .position(|l| l == "kind: TCPRoute")
        .expect("the demo has a TCPRoute");
    let path = file("dsr.yaml", &text);
    let out = check(&path, "table");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "{}:{route_line}: TCPRoute \"demo/echo-tcp\": PortTranslationNotSupported: backend \
             198.18.2.21:8080 of demo/echo listens on port 8080",
            path.display()
        )),
        "{stderr}"
    );
}
