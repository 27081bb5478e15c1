//! The text the sidecar sends for a cluster's objects resolves exactly as
//! the config file those objects came from: the same statuses and the same
//! diagnostics, whatever bookkeeping the API server added to each object
//! and whatever order it listed them in.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_kube::kinds::{self, WATCHED};
use switchyard_kube::store::{Change, ClusterStore};

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("example documents are valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `object` as an API server would return it: with a uid, a
/// resourceVersion, managedFields, a last-applied annotation and, for kinds
/// Switchyard writes status on, an old status of some other writer.
fn as_served(mut object: Value, index: usize) -> Value {
    let metadata = object["metadata"]
        .as_object_mut()
        .expect("objects have metadata");
    metadata.insert(
        "uid".into(),
        json!(format!("00000000-0000-0000-0000-{index:012}")),
    );
    metadata.insert("resourceVersion".into(), json!((1000 + index).to_string()));
    metadata.insert(
        "managedFields".into(),
        json!([{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]),
    );
    metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("annotations are a map")
        .insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            json!("{\"apiVersion\":\"v1\"}"),
        );
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if kinds::by_name(&kind).is_some_and(|k| k.status_written) && object.get("status").is_none() {
        object["status"] = json!({"conditions": [{"type": "Accepted", "status": "Unknown", "reason": "Pending",
                                   "message": "Waiting for controller",
                                   "lastTransitionTime": "1970-01-01T00:00:00Z"}]});
    }
    object
}

/// The text the sidecar would send after listing `objects`, listed in
/// reverse order to show that order does not matter.
fn sent_for(objects: &[Value]) -> String {
    let mut store = ClusterStore::default();
    for kind in WATCHED {
        store.apply(kind.kind, Change::Init);
        for (i, object) in objects.iter().enumerate().rev() {
            if object["kind"] == kind.kind {
                if let Some(api_version) = object["apiVersion"].as_str() {
                    store.served(kind.kind, api_version);
                }
                store.apply(kind.kind, Change::InitApply(as_served(object.clone(), i)));
            }
        }
        store.apply(kind.kind, Change::InitDone);
    }
    store.contents().expect("every kind listed")
}

fn assert_resolves_alike(name: &str, text: &str) {
    let objects: Vec<Value> = documents(text)
        .into_iter()
        .filter(|o| o["kind"].as_str().and_then(kinds::by_name).is_some())
        .collect();
    assert!(!objects.is_empty(), "{name}: no watched kinds");
    let original = switchyard_config::load_str(name, text).unwrap_or_else(|e| panic!("{e}"));
    let sent = sent_for(&objects);
    let loaded = switchyard_config::load_str(&format!("cluster {name}"), &sent)
        .unwrap_or_else(|e| panic!("{name}: the sent text does not load: {e}\n{sent}"));
    let a = switchyard_config::resolve(&original, 1);
    let b = switchyard_config::resolve(&loaded, 1);
    assert_eq!(a.statuses, b.statuses, "{name}: statuses differ");
    assert_eq!(
        a.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>(),
        b.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>(),
        "{name}: diagnostics differ"
    );
    assert_eq!(
        a.snapshot.listeners(),
        b.snapshot.listeners(),
        "{name}: resolved listeners differ"
    );
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn the_demo_example_resolves_alike_from_the_cluster() {
    assert_resolves_alike("demo.yaml", &example("demo.yaml"));
}

#[test]
fn the_backend_kinds_example_resolves_alike_from_the_cluster() {
    assert_resolves_alike("backend-kinds.yaml", &example("backend-kinds.yaml"));
}

#[test]
fn the_address_pool_example_resolves_alike_from_the_cluster() {
    assert_resolves_alike("address-pool.yaml", &example("address-pool.yaml"));
}

#[test]
fn the_traffic_policy_example_resolves_alike_from_the_cluster() {
    assert_resolves_alike("traffic-policy.yaml", &example("traffic-policy.yaml"));
}

#[test]
fn the_same_objects_listed_again_send_the_same_text() {
    let objects = documents(&example("demo.yaml"));
    assert_eq!(sent_for(&objects), sent_for(&objects));
}
