//! Which status writes the daemon's latest answer calls for, given the
//! objects as the watches last saw them. Only kinds whose status
//! Switchyard owns a part of are written (GatewayClass, Gateway, TCPRoute,
//! UDPRoute, TrafficPolicy, EndpointSelector); the daemon reports only the
//! objects of Switchyard's GatewayClasses. This module does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::kinds::{self, WatchedKind};
use crate::status;
use crate::store::{ClusterStore, ObjectKey};

/// One merge patch of one object's status subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    pub kind: &'static WatchedKind,
    pub key: ObjectKey,
    /// The object's resourceVersion the patch was planned against: the
    /// API server refuses it (409) if the object changed since.
    pub resource_version: String,
    /// The `status` fields to merge.
    pub status: Map<String, Value>,
}

impl StatusWrite {
    /// The merge-patch body.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": self.status,
        })
    }
}

/// Kinds whose status is a list shared with other controllers, and the
/// name of that list.
const SHARED_LISTS: &[(&str, &str)] = &[
    ("TCPRoute", "parents"),
    ("UDPRoute", "parents"),
    ("TrafficPolicy", "ancestors"),
];

/// Writes planned and not yet seen come back through the watch, so that a
/// second planning round before then does not write the same again. A
/// write that failed is planned again once `IN_FLIGHT_FOR` has passed.
#[derive(Debug, Default)]
pub struct InFlight {
    planned: BTreeMap<(&'static str, ObjectKey), (StatusWrite, Instant)>,
}

pub const IN_FLIGHT_FOR: Duration = Duration::from_secs(10);

impl InFlight {
    pub fn clear(&mut self) {
        self.planned.clear();
    }
}

/// The status writes `statuses` (the daemon's latest answer) call for.
pub fn plan(
    store: &ClusterStore,
    statuses: &[Value],
    now: &str,
    in_flight: &mut InFlight,
    at: Instant,
) -> Vec<StatusWrite> {
    let mut writes = Vec::new();
    let mut reported: BTreeSet<(&str, ObjectKey)> = BTreeSet::new();
    for reported_status in statuses {
        let Some(kind) = reported_status
            .get("kind")
            .and_then(Value::as_str)
            .and_then(kinds::by_name)
        else {
            continue;
        };
        let key = ObjectKey {
            namespace: str_at(reported_status, "/metadata/namespace"),
            name: str_at(reported_status, "/metadata/name"),
        };
        reported.insert((kind.kind, key.clone()));
        if !kind.status_written {
            continue;
        }
        let Some(live) = store.get(kind.kind, &key).and_then(|h| h.live.as_ref()) else {
            continue;
        };
        let desired = reported_status.get("status").unwrap_or(&Value::Null);
        if let Some(patch) = status::plan(desired, &live.status, now) {
            writes.push(StatusWrite {
                kind,
                key,
                resource_version: live.resource_version.clone(),
                status: patch,
            });
        }
    }
    for (kind_name, field) in SHARED_LISTS {
        let Some(kind) = kinds::by_name(kind_name) else {
            continue;
        };
        for (key, held) in store.objects(kind_name) {
            if reported.contains(&(*kind_name, key.clone())) {
                continue;
            }
            let Some(live) = &held.live else { continue };
            if let Some(patch) = status::plan_release(&live.status, field) {
                writes.push(StatusWrite {
                    kind,
                    key: key.clone(),
                    resource_version: live.resource_version.clone(),
                    status: patch,
                });
            }
        }
    }
    writes.retain(|write| {
        let id = (write.kind.kind, write.key.clone());
        let repeat = in_flight.planned.get(&id).is_some_and(|(earlier, when)| {
            at.saturating_duration_since(*when) < IN_FLIGHT_FOR
                && earlier.resource_version == write.resource_version
                && status::same_ignoring_times(
                    &Value::Object(earlier.status.clone()),
                    &Value::Object(write.status.clone()),
                )
        });
        if !repeat {
            in_flight.planned.insert(id, (write.clone(), at));
        }
        !repeat
    });
    writes
}

fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::CONTROLLER_NAME;
    use crate::store::Change;

    const NOW: &str = "2026-12-06T20:00:00Z";

    fn store_with(objects: &[(&str, Value)]) -> ClusterStore {
        let mut store = ClusterStore::default();
        for kind in kinds::WATCHED {
            store.apply(kind.kind, Change::Init);
            for (k, o) in objects {
                if *k == kind.kind {
                    store.apply(kind.kind, Change::InitApply(o.clone()));
                }
            }
            store.apply(kind.kind, Change::InitDone);
        }
        store
    }

    fn gateway(rv: &str, status: Value) -> Value {
        json!({"metadata": {"name": "lb", "namespace": "demo", "resourceVersion": rv, "generation": 1},
               "spec": {"gatewayClassName": "switchyard"}, "status": status})
    }

    fn programmed(status: &str) -> Value {
        json!({"type": "Programmed", "status": status, "reason": "Programmed", "message": "",
               "observedGeneration": 1})
    }

    fn reported_gateway() -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"namespace": "demo", "name": "lb"},
               "status": {"addresses": [], "conditions": [programmed("True")], "listeners": []}})
    }

    #[test]
    fn a_status_is_planned_once_until_the_watch_shows_it() {
        let store = store_with(&[("Gateway", gateway("5", Value::Null))]);
        let mut in_flight = InFlight::default();
        let writes = plan(
            &store,
            &[reported_gateway()],
            NOW,
            &mut in_flight,
            Instant::now(),
        );
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].resource_version, "5");
        assert_eq!(writes[0].body()["metadata"]["resourceVersion"], "5");
        assert_eq!(writes[0].status["conditions"][0]["lastTransitionTime"], NOW);
        assert!(plan(
            &store,
            &[reported_gateway()],
            NOW,
            &mut in_flight,
            Instant::now()
        )
        .is_empty());

        // The write came back through the watch: nothing more to write.
        let mut written = writes[0].status.clone();
        written.insert("conditions".into(), json!([programmed("True")]));
        let store = store_with(&[("Gateway", gateway("6", Value::Object(written)))]);
        assert!(plan(
            &store,
            &[reported_gateway()],
            NOW,
            &mut in_flight,
            Instant::now()
        )
        .is_empty());
    }

    #[test]
    fn a_status_overwritten_by_someone_else_is_written_again() {
        let mut in_flight = InFlight::default();
        let store = store_with(&[("Gateway", gateway("5", Value::Null))]);
        assert_eq!(
            plan(
                &store,
                &[reported_gateway()],
                NOW,
                &mut in_flight,
                Instant::now()
            )
            .len(),
            1
        );
        let store = store_with(&[(
            "Gateway",
            gateway("7", json!({"conditions": [programmed("False")]})),
        )]);
        assert_eq!(
            plan(
                &store,
                &[reported_gateway()],
                NOW,
                &mut in_flight,
                Instant::now()
            )
            .len(),
            1
        );
    }

    #[test]
    fn objects_the_watches_have_not_seen_and_kinds_not_owned_are_skipped() {
        let store = store_with(&[]);
        let service = json!({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"namespace": "demo", "name": "web"},
                             "status": {"conditions": [programmed("False")]}});
        assert!(plan(
            &store,
            &[reported_gateway(), service],
            NOW,
            &mut InFlight::default(),
            Instant::now()
        )
        .is_empty());
    }

    #[test]
    fn a_route_no_longer_reported_loses_switchyards_parent_entry() {
        let route = json!({"metadata": {"name": "r", "namespace": "demo", "resourceVersion": "3"},
                           "spec": {},
                           "status": {"parents": [{"parentRef": {"name": "lb"},
                                                   "controllerName": CONTROLLER_NAME,
                                                   "conditions": []}]}});
        let store = store_with(&[("TCPRoute", route)]);
        let writes = plan(&store, &[], NOW, &mut InFlight::default(), Instant::now());
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].kind.kind, "TCPRoute");
        assert_eq!(writes[0].status["parents"], json!([]));
    }
}
