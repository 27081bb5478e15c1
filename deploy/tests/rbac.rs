//! deploy/rbac.yaml against `switchyard_deploy::WATCHED`: the sidecar may
//! read exactly the kinds it watches, write exactly the status of the
//! kinds the daemon reports status on, and hold its Lease; nothing else.

mod common;

use std::collections::BTreeSet;

use common::{deploy_dir, documents, read};
use serde_json::Value;
use switchyard_config::{load_str, resolve};
use switchyard_deploy::{watched, LEASE_NAME, LEASE_NAMESPACE, WATCHED};

const SERVICE_ACCOUNT: &str = "switchyard";

fn rbac() -> Vec<Value> {
    let path = deploy_dir().join("rbac.yaml");
    documents(&read(&path), "deploy/rbac.yaml")
}

fn object<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/rbac.yaml");
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// (group, resource, verb, resourceNames) for every grant of a rule list.
fn grants(rules: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules") {
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "no non-resource URLs: {rule}"
        );
        let names: Vec<String> = strings(&rule["resourceNames"])
            .into_iter()
            .map(str::to_owned)
            .collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for part in [group, resource, verb] {
                        assert!(!part.contains('*'), "no wildcards: {rule}");
                    }
                    out.insert((group.into(), resource.into(), verb.into(), names.clone()));
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str) -> (String, String, String, Vec<String>) {
    (group.into(), resource.into(), verb.into(), Vec::new())
}

#[test]
fn the_cluster_role_reads_what_is_watched_and_writes_only_status() {
    let docs = rbac();
    let role = object(&docs, "ClusterRole");
    let mut expected = BTreeSet::new();
    for r in WATCHED {
        for verb in ["get", "list", "watch"] {
            expected.insert(grant(r.group, r.plural, verb));
        }
        if r.writes_status {
            for verb in ["patch", "update"] {
                expected.insert(grant(r.group, &format!("{}/status", r.plural), verb));
            }
        }
    }
    let granted = grants(&role["rules"]);
    let extra: Vec<_> = granted.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "ClusterRole grants beyond WATCHED: {extra:#?}\nmissing: {missing:#?}"
    );
}

#[test]
fn the_lease_role_is_the_only_write_beyond_status_and_names_the_lease() {
    let docs = rbac();
    let role = object(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], LEASE_NAMESPACE);
    let granted = grants(&role["rules"]);
    let lease = |verb: &str, names: &[&str]| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
    };
    let expected: BTreeSet<_> = [
        // An object that does not exist yet has no name to limit to.
        lease("create", &[]),
        lease("get", &[LEASE_NAME]),
        lease("update", &[LEASE_NAME]),
        lease("patch", &[LEASE_NAME]),
    ]
    .into_iter()
    .collect();
    assert_eq!(granted, expected);
}

#[test]
fn the_bindings_give_the_roles_to_the_service_account_of_the_daemon_set() {
    let docs = rbac();
    let namespace = object(&docs, "Namespace");
    assert_eq!(namespace["metadata"]["name"], LEASE_NAMESPACE);
    let account = object(&docs, "ServiceAccount");
    assert_eq!(account["metadata"]["name"], SERVICE_ACCOUNT);
    assert_eq!(account["metadata"]["namespace"], LEASE_NAMESPACE);
    for (binding, role) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let binding = object(&docs, binding);
        let role = object(&docs, role);
        assert_eq!(binding["roleRef"]["kind"], role["kind"]);
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        let subjects = binding["subjects"].as_array().expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], SERVICE_ACCOUNT);
        assert_eq!(subjects[0]["namespace"], LEASE_NAMESPACE);
        if binding["kind"] == "RoleBinding" {
            assert_eq!(binding["metadata"]["namespace"], LEASE_NAMESPACE);
        }
    }
    let daemon_set = documents(
        &read(&deploy_dir().join("daemonset.yaml")),
        "deploy/daemonset.yaml",
    );
    let pod = &daemon_set[0]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(daemon_set[0]["metadata"]["namespace"], LEASE_NAMESPACE);
}

/// Objects whose resolution reports status on every kind it can: Switchyard's
/// class, a Gateway, both route kinds, a policy, and backends it has
/// something to say about (a Service with externalIPs, a ServiceImport
/// whose ClientIP affinity cannot apply).
const STATUS_OF_EVERY_KIND: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: switchyard}
spec: {controllerName: switchyard.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: demo}
spec:
  gatewayClassName: switchyard
  addresses: [{type: IPAddress, value: 198.18.100.10}]
  listeners:
  - {name: tcp, protocol: TCP, port: 80}
  - {name: udp, protocol: UDP, port: 53}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: demo}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules:
  - backendRefs:
    - {name: echo, port: 80}
    - {group: multicluster.x-k8s.io, kind: ServiceImport, name: store, port: 80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: demo}
spec:
  parentRefs: [{name: edge, sectionName: udp}]
  rules:
  - backendRefs: [{name: echo, port: 53}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  externalIPs: [198.18.200.1]
  ports: [{name: tcp, port: 80}, {name: udp, port: 53, protocol: UDP}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: store, namespace: demo}
spec:
  type: ClusterSetIP
  ports: [{port: 80}]
  sessionAffinity: ClientIP
---
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: table, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  maglev: {tableSize: 4093}
";

#[test]
fn status_is_writable_on_every_kind_the_daemon_reports_it_on() {
    let resources = load_str("status.yaml", STATUS_OF_EVERY_KIND).unwrap_or_else(|e| panic!("{e}"));
    let resolution = resolve(&resources, 1);
    let reported: BTreeSet<&str> = resolution
        .statuses
        .iter()
        .map(|s| s.kind.as_str())
        .collect();
    // Backends of other owners: the daemon's conditions on them stay in
    // its diagnostics (`yardctl config status`).
    let owned_by_others: BTreeSet<&str> = ["Service", "ServiceImport"].into();
    for kind in &reported {
        let resource = watched(kind).unwrap_or_else(|| panic!("status on {kind}, not watched"));
        assert!(
            resource.writes_status || owned_by_others.contains(kind),
            "the daemon reports status on {kind}; RBAC must let the sidecar write it"
        );
    }
    // EndpointSelectors get conditions the way Services do
    // (switchyard_config::status::Status::Object); no object here has a
    // problem with one.
    let writable: BTreeSet<&str> = WATCHED
        .iter()
        .filter(|r| r.writes_status && r.kind != "EndpointSelector")
        .map(|r| r.kind)
        .collect();
    let written: BTreeSet<&str> = reported.difference(&owned_by_others).copied().collect();
    assert_eq!(
        writable, written,
        "status is writable on kinds the daemon never reports on"
    );
}
