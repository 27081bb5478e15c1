//! What of a cluster object the daemon gets: the fields its loader reads,
//! nothing the API server adds for its own bookkeeping. Stripping keeps
//! the text small (a large cluster's Pods carry kilobytes of managedFields
//! each) and stable: resourceVersion, managedFields and most of status
//! change without anything Switchyard reads changing, and the same set of
//! objects must give the same text, so that the daemon answers Unchanged.

use serde_json::{Map, Value};

use crate::kinds::WatchedKind;

/// Metadata fields the loader reads: identity, labels (Namespace and Pod
/// selectors), generation (observedGeneration), creationTimestamp (the
/// older of two conflicting objects wins) and deletionTimestamp (a Pod
/// that is terminating).
const KEPT_METADATA: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
];

/// `object` as the daemon should see it, with `apiVersion` and `kind` set
/// (items of a list may come without them).
pub fn strip(kind: &WatchedKind, api_version: &str, object: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from(kind.kind));
    let Some(fields) = object.as_object() else {
        return Value::Object(out);
    };
    if let Some(Value::Object(metadata)) = fields.get("metadata") {
        let kept: Map<String, Value> = metadata
            .iter()
            .filter(|(k, v)| KEPT_METADATA.contains(&k.as_str()) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("metadata".into(), Value::Object(kept));
    }
    for (key, value) in fields {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" | "status" => {}
            "spec" if kind.kind == "Pod" => {
                out.insert(key.clone(), pod_spec(value));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if kind.kind == "Pod" {
        if let Some(status) = fields.get("status") {
            out.insert("status".into(), pod_status(status));
        }
    }
    Value::Object(out)
}

/// A Pod's containers' ports: what an EndpointSelector's named target
/// port resolves against.
fn pod_spec(spec: &Value) -> Value {
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|containers| {
            containers
                .iter()
                .map(|c| pick(c, &["name", "ports"]))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({ "containers": containers })
}

/// A Pod's addresses, phase and readiness: whether and where it is an
/// endpoint.
fn pod_status(status: &Value) -> Value {
    let mut out = pick(status, &["phase", "podIP", "podIPs"]);
    if let (Some(map), Some(Value::Array(conditions))) =
        (out.as_object_mut(), status.get("conditions"))
    {
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|c| pick(c, &["type", "status"]))
            .collect();
        map.insert("conditions".into(), Value::Array(conditions));
    }
    out
}

fn pick(value: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for key in keys {
        if let Some(v) = value.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// The multi-document text of `objects`, in the order given. Map keys are
/// sorted (serde_json's map is ordered by key), so equal sets of objects
/// given in the same order render to equal text.
pub fn render<'a>(objects: impl IntoIterator<Item = &'a Value>) -> String {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&canonical_json(object));
        text.push('\n');
    }
    text
}

/// `value` as JSON with every map's keys sorted, whatever order the API
/// server sent them in.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // Serializing a Value cannot fail: its keys are strings.
    serde_json::to_string(&sorted(value)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::by_name;

    fn pod() -> Value {
        json!({
            "metadata": {
                "name": "web-1", "namespace": "demo", "labels": {"app": "web"},
                "uid": "b7d1", "resourceVersion": "41", "generation": 1,
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "managedFields": [{"manager": "kubelet", "fieldsV1": {}}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}]
            },
            "spec": {
                "nodeName": "n1",
                "volumes": [{"name": "token"}],
                "containers": [{"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]
            },
            "status": {
                "phase": "Running", "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
                "hostIP": "192.0.2.1", "startTime": "2026-12-01T10:00:01Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T10:00:02Z"}],
                "containerStatuses": [{"name": "web", "restartCount": 0}]
            }
        })
    }

    #[test]
    fn a_pod_keeps_what_makes_it_an_endpoint_and_nothing_else() {
        let stripped = strip(by_name("Pod").unwrap(), "v1", &pod());
        assert_eq!(
            stripped,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"},
                             "generation": 1, "creationTimestamp": "2026-12-01T10:00:00Z"},
                "spec": {"containers": [{"name": "web",
                         "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
                "status": {"phase": "Running", "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            })
        );
    }

    #[test]
    fn a_gateway_loses_its_status_and_bookkeeping_but_keeps_its_spec() {
        let gateway = json!({
            "metadata": {"name": "lb", "namespace": "demo", "generation": 3, "resourceVersion": "9",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"gatewayClassName": "switchyard", "listeners": [{"name": "tcp", "port": 80, "protocol": "TCP"}]},
            "status": {"conditions": [{"type": "Programmed", "status": "True"}]}
        });
        let stripped = strip(
            by_name("Gateway").unwrap(),
            "gateway.networking.k8s.io/v1",
            &gateway,
        );
        assert_eq!(
            stripped,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "lb", "namespace": "demo", "generation": 3},
                "spec": {"gatewayClassName": "switchyard",
                         "listeners": [{"name": "tcp", "port": 80, "protocol": "TCP"}]}
            })
        );
    }

    #[test]
    fn an_endpoint_slice_keeps_its_top_level_fields() {
        let slice = json!({
            "metadata": {"name": "web-abc", "namespace": "demo",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        });
        let stripped = strip(
            by_name("EndpointSlice").unwrap(),
            "discovery.k8s.io/v1",
            &slice,
        );
        assert_eq!(stripped["endpoints"], slice["endpoints"]);
        assert_eq!(stripped["ports"], slice["ports"]);
        assert_eq!(stripped["addressType"], "IPv4");
    }

    #[test]
    fn resource_versions_do_not_change_the_text() {
        let kind = by_name("Pod").unwrap();
        let mut later = pod();
        later["metadata"]["resourceVersion"] = json!("97");
        later["metadata"]["managedFields"] = json!([]);
        later["status"]["containerStatuses"] = json!([{"name": "web", "restartCount": 1}]);
        assert_eq!(
            render([&strip(kind, "v1", &pod())]),
            render([&strip(kind, "v1", &later)])
        );
    }

    #[test]
    fn rendering_sorts_keys_whatever_order_they_came_in() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
        assert_eq!(render([&a]), render([&b]));
        assert_eq!(render([&a]), "---\n{\"a\":{\"c\":3,\"d\":2},\"b\":1}\n");
    }
}
