//! What to write to an object's status subresource, from the status the
//! daemon computed and the status the object has now.
//!
//! The daemon's conditions carry `observedGeneration` but no time (its
//! resolution has no clock). Here `lastTransitionTime` is stamped now for a
//! condition whose `status` changed (or that is new) and kept from the live
//! object otherwise, as the API conventions define it. Nothing is written
//! when the live status already says what would be written, times aside:
//! a status rewritten on every update would wake every watcher of the
//! object for nothing. Route `parents` and policy `ancestors` are shared
//! with other controllers: only entries with Switchyard's controllerName
//! are replaced, the others are written back as they were. This module
//! does no I/O.

use serde_json::{Map, Value};

/// `controllerName` of Switchyard's GatewayClasses: route parent and
/// policy ancestor entries carrying it are Switchyard's to write.
pub const CONTROLLER_NAME: &str = "switchyard.io/gateway-controller";

/// The `status` fields to merge-patch onto the object, or `None` when the
/// live status already carries them. `desired` is the daemon's `status`
/// stanza for the object; `live` the object's current `status` (`Null`
/// when it has none); `now` an RFC 3339 time.
pub fn plan(desired: &Value, live: &Value, now: &str) -> Option<Map<String, Value>> {
    let desired = desired.as_object()?;
    let mut patch = Map::new();
    for (field, value) in desired {
        let live_field = live.get(field).unwrap_or(&Value::Null);
        let merged = match field.as_str() {
            "conditions" => merge_conditions(value, live_field, now),
            "listeners" => merge_keyed(value, live_field, now, |l| l.get("name").cloned()),
            "parents" => merge_shared(value, live_field, now, "parentRef"),
            "ancestors" => merge_shared(value, live_field, now, "ancestorRef"),
            _ => value.clone(),
        };
        patch.insert(field.clone(), merged);
    }
    let unchanged = patch
        .iter()
        .all(|(field, value)| same_ignoring_times(value, live.get(field).unwrap_or(&Value::Null)));
    (!unchanged).then_some(patch)
}

/// For a route or policy the daemon no longer reports (no Switchyard
/// Gateway is its parent any more): its `field` (`parents` or `ancestors`)
/// without Switchyard's entries, or `None` when it has none.
pub fn plan_release(live: &Value, field: &str) -> Option<Map<String, Value>> {
    let entries = live.get(field)?.as_array()?;
    if !entries.iter().any(is_ours) {
        return None;
    }
    let others: Vec<Value> = entries.iter().filter(|e| !is_ours(e)).cloned().collect();
    Some(Map::from_iter([(field.to_owned(), Value::Array(others))]))
}

fn is_ours(entry: &Value) -> bool {
    entry.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
}

/// Conditions as the daemon computed them, each with the live condition's
/// `lastTransitionTime` when its status is the same, else `now`.
fn merge_conditions(desired: &Value, live: &Value, now: &str) -> Value {
    let Some(desired) = desired.as_array() else {
        return desired.clone();
    };
    let live = live.as_array().map(Vec::as_slice).unwrap_or_default();
    let merged = desired
        .iter()
        .map(|condition| {
            let mut condition = condition.clone();
            let previous = live
                .iter()
                .find(|l| l.get("type").is_some() && l.get("type") == condition.get("type"));
            let time = match previous {
                Some(p) if p.get("status") == condition.get("status") => p
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or_else(|| Value::from(now)),
                _ => Value::from(now),
            };
            if let Some(map) = condition.as_object_mut() {
                map.insert("lastTransitionTime".into(), time);
            }
            condition
        })
        .collect();
    Value::Array(merged)
}

/// Entries of a list keyed by `key` (a listener's name), each one's
/// conditions merged with the live entry of the same key.
fn merge_keyed(
    desired: &Value,
    live: &Value,
    now: &str,
    key: impl Fn(&Value) -> Option<Value>,
) -> Value {
    let Some(desired) = desired.as_array() else {
        return desired.clone();
    };
    let live = live.as_array().map(Vec::as_slice).unwrap_or_default();
    let merged = desired
        .iter()
        .map(|entry| {
            let previous = key(entry).and_then(|k| live.iter().find(|l| key(l) == Some(k.clone())));
            with_merged_conditions(entry, previous, now)
        })
        .collect();
    Value::Array(merged)
}

/// A list shared with other controllers: their entries as they are, then
/// Switchyard's as the daemon computed them (matched to live ones by
/// `reference` for their conditions' times).
fn merge_shared(desired: &Value, live: &Value, now: &str, reference: &str) -> Value {
    let live = live.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut merged: Vec<Value> = live.iter().filter(|e| !is_ours(e)).cloned().collect();
    let desired = desired.as_array().map(Vec::as_slice).unwrap_or_default();
    for entry in desired {
        let previous = live
            .iter()
            .filter(|l| is_ours(l))
            .find(|l| l.get(reference).is_some() && l.get(reference) == entry.get(reference));
        merged.push(with_merged_conditions(entry, previous, now));
    }
    Value::Array(merged)
}

fn with_merged_conditions(entry: &Value, previous: Option<&Value>, now: &str) -> Value {
    let mut entry = entry.clone();
    if let Some(conditions) = entry.get("conditions") {
        let live = previous
            .and_then(|p| p.get("conditions"))
            .unwrap_or(&Value::Null);
        let merged = merge_conditions(conditions, live, now);
        if let Some(map) = entry.as_object_mut() {
            map.insert("conditions".into(), merged);
        }
    }
    entry
}

/// Equal once every `lastTransitionTime` is taken out.
pub fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    without_times(a) == without_times(b)
}

fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Now as a Kubernetes `Time`: RFC 3339, whole seconds, UTC.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EARLIER: &str = "2026-12-01T10:00:00Z";
    const NOW: &str = "2026-12-06T20:00:00Z";

    fn accepted(status: &str, generation: i64) -> Value {
        json!({"type": "Accepted", "status": status, "reason": if status == "True" {"Accepted"} else {"Invalid"},
               "message": "", "observedGeneration": generation})
    }

    fn stamped(mut condition: Value, time: &str) -> Value {
        condition["lastTransitionTime"] = json!(time);
        condition
    }

    #[test]
    fn a_first_status_is_stamped_now() {
        let desired = json!({"conditions": [accepted("True", 1)]});
        let patch = plan(&desired, &Value::Null, NOW).unwrap();
        assert_eq!(
            patch["conditions"],
            json!([stamped(accepted("True", 1), NOW)])
        );
    }

    #[test]
    fn nothing_is_written_when_the_live_status_says_the_same() {
        let desired = json!({"conditions": [accepted("True", 1)]});
        let live = json!({"conditions": [stamped(accepted("True", 1), EARLIER)]});
        assert_eq!(plan(&desired, &live, NOW), None);
    }

    #[test]
    fn a_new_generation_keeps_the_time_when_the_status_stays() {
        let desired = json!({"conditions": [accepted("True", 2)]});
        let live = json!({"conditions": [stamped(accepted("True", 1), EARLIER)]});
        let patch = plan(&desired, &live, NOW).unwrap();
        assert_eq!(
            patch["conditions"],
            json!([stamped(accepted("True", 2), EARLIER)])
        );
    }

    #[test]
    fn a_status_that_flips_is_stamped_now() {
        let desired = json!({"conditions": [accepted("False", 2)]});
        let live = json!({"conditions": [stamped(accepted("True", 1), EARLIER)]});
        let patch = plan(&desired, &live, NOW).unwrap();
        assert_eq!(
            patch["conditions"],
            json!([stamped(accepted("False", 2), NOW)])
        );
    }

    #[test]
    fn gateway_listeners_keep_their_times_by_name() {
        let listener = |name: &str, status: &str| {
            json!({"name": name, "attachedRoutes": 1,
                   "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}],
                   "conditions": [accepted(status, 1)]})
        };
        let desired = json!({
            "addresses": [{"type": "IPAddress", "value": "192.0.2.10"}],
            "conditions": [accepted("True", 1)],
            "listeners": [listener("a", "True"), listener("b", "False")]
        });
        let mut live_a = listener("a", "True");
        live_a["conditions"][0]["lastTransitionTime"] = json!(EARLIER);
        let mut live_b = listener("b", "True");
        live_b["conditions"][0]["lastTransitionTime"] = json!(EARLIER);
        let live = json!({
            "addresses": [{"type": "IPAddress", "value": "192.0.2.10"}],
            "conditions": [stamped(accepted("True", 1), EARLIER)],
            "listeners": [live_b, live_a]
        });
        let patch = plan(&desired, &live, NOW).unwrap();
        assert_eq!(
            patch["listeners"][0]["conditions"][0]["lastTransitionTime"],
            EARLIER
        );
        assert_eq!(
            patch["listeners"][1]["conditions"][0]["lastTransitionTime"],
            NOW
        );
        assert_eq!(patch["conditions"][0]["lastTransitionTime"], EARLIER);
        assert_eq!(patch["addresses"], desired["addresses"]);
    }

    fn parent(controller: &str, gateway: &str, status: &str) -> Value {
        json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                             "namespace": "demo", "name": gateway},
               "controllerName": controller, "conditions": [accepted(status, 1)]})
    }

    #[test]
    fn route_parents_of_other_controllers_are_kept() {
        let other = parent("example.com/other", "theirs", "True");
        let desired = json!({"parents": [parent(CONTROLLER_NAME, "lb", "True")]});
        let live = json!({"parents": [other.clone()]});
        let patch = plan(&desired, &live, NOW).unwrap();
        assert_eq!(patch["parents"].as_array().unwrap().len(), 2);
        assert_eq!(patch["parents"][0], other);
        assert_eq!(patch["parents"][1]["parentRef"]["name"], "lb");
        assert_eq!(
            patch["parents"][1]["conditions"][0]["lastTransitionTime"],
            NOW
        );

        // Written: the same again writes nothing.
        let live = json!({"parents": patch["parents"].clone()});
        assert_eq!(plan(&desired, &live, "2027-01-01T00:00:00Z"), None);
    }

    #[test]
    fn a_route_switchyard_no_longer_serves_loses_only_switchyards_entries() {
        let other = parent("example.com/other", "theirs", "True");
        let live = json!({"parents": [other.clone(), parent(CONTROLLER_NAME, "lb", "True")]});
        let patch = plan_release(&live, "parents").unwrap();
        assert_eq!(patch["parents"], json!([other]));
        let released = json!({"parents": [other]});
        assert_eq!(plan_release(&released, "parents"), None);
        assert_eq!(plan_release(&Value::Null, "parents"), None);
    }

    #[test]
    fn policy_ancestors_merge_like_route_parents() {
        let ancestor = |status: &str| {
            json!({"ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "namespace": "demo", "name": "lb"},
                   "controllerName": CONTROLLER_NAME, "conditions": [accepted(status, 3)]})
        };
        let mut live_entry = ancestor("True");
        live_entry["conditions"][0]["lastTransitionTime"] = json!(EARLIER);
        let live = json!({"ancestors": [live_entry]});
        assert_eq!(
            plan(&json!({"ancestors": [ancestor("True")]}), &live, NOW),
            None
        );
        let patch = plan(&json!({"ancestors": [ancestor("False")]}), &live, NOW).unwrap();
        assert_eq!(
            patch["ancestors"][0]["conditions"][0]["lastTransitionTime"],
            NOW
        );
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
        assert_eq!(now.len(), "2026-12-06T20:00:00Z".len(), "{now}");
    }
}
