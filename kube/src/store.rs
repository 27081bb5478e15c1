//! The sidecar's picture of the cluster: per watched kind, the last
//! complete set of objects, and whether the whole picture may be handed to
//! the daemon.
//!
//! A watcher (re)starts with `Init`, delivers the listed objects one by one
//! (`InitApply`) and ends its list with `InitDone`. Until then the kind
//! keeps its previous complete set, as client-go's informer store keeps
//! serving until the reflector's `Replace`: a relist cut short by an
//! outage or a 410 must never look like objects were deleted. The picture
//! is ready once every kind has completed a list (or is not served).
//! This module does no I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::contents;
use crate::kinds::{WatchedKind, WATCHED};

/// `namespace/name` (namespace empty for cluster-scoped kinds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of(object: &Value) -> Option<ObjectKey> {
        let metadata = object.get("metadata")?;
        Some(ObjectKey {
            namespace: metadata
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            name: metadata.get("name").and_then(Value::as_str)?.to_owned(),
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a watch said, with the object as the API server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Init,
    InitApply(Value),
    InitDone,
    Apply(Value),
    Delete(Value),
}

/// One object as held: what the daemon gets, and (for kinds whose status
/// Switchyard writes) the live status and resourceVersion it is compared
/// with.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub stripped: Value,
    pub live: Option<Live>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub api_version: String,
    pub resource_version: String,
    /// `Value::Null` when the object has no status yet.
    pub status: Value,
}

#[derive(Debug, Default)]
struct KindState {
    /// Set once the kind's first list completed (or it is not served).
    complete: Option<BTreeMap<ObjectKey, Held>>,
    /// A list under way since the last `Init`.
    relist: Option<BTreeMap<ObjectKey, Held>>,
    /// The version the server serves this kind under, once discovered.
    api_version: Option<String>,
}

/// What applying a change did to the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effect {
    /// What the daemon gets changed.
    pub contents: bool,
    /// A live status Switchyard may have to (re)write changed.
    pub status: bool,
}

impl std::ops::BitOrAssign for Effect {
    fn bitor_assign(&mut self, other: Effect) {
        self.contents |= other.contents;
        self.status |= other.status;
    }
}

#[derive(Debug)]
pub struct ClusterStore {
    kinds: BTreeMap<&'static str, (&'static WatchedKind, KindState)>,
}

impl Default for ClusterStore {
    fn default() -> Self {
        Self::new(WATCHED)
    }
}

impl ClusterStore {
    pub fn new(kinds: &'static [WatchedKind]) -> Self {
        ClusterStore {
            kinds: kinds
                .iter()
                .map(|k| (k.kind, (k, KindState::default())))
                .collect(),
        }
    }

    /// `kind` is served under `api_version`: its objects carry that.
    pub fn served(&mut self, kind: &str, api_version: &str) {
        if let Some((_, state)) = self.kinds.get_mut(kind) {
            state.api_version = Some(api_version.to_owned());
        }
    }

    /// The API server does not serve `kind`: it has no objects, which is a
    /// complete answer. A later list, should it become served, replaces it.
    pub fn not_served(&mut self, kind: &str) -> Effect {
        let Some((_, state)) = self.kinds.get_mut(kind) else {
            return Effect::default();
        };
        if state.complete.is_some() {
            return Effect::default();
        }
        state.complete = Some(BTreeMap::new());
        Effect {
            contents: true,
            status: false,
        }
    }

    pub fn apply(&mut self, kind: &str, change: Change) -> Effect {
        let Some((watched, state)) = self.kinds.get_mut(kind) else {
            return Effect::default();
        };
        let watched: &WatchedKind = watched;
        let api_version = state
            .api_version
            .clone()
            .unwrap_or_else(|| watched.api_version(watched.versions[0]));
        match change {
            Change::Init => {
                state.relist = Some(BTreeMap::new());
                Effect::default()
            }
            Change::InitApply(object) => {
                if let Some((key, held)) = hold(watched, &api_version, &object) {
                    state
                        .relist
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, held);
                }
                Effect::default()
            }
            Change::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                let effect = match &state.complete {
                    None => Effect {
                        contents: true,
                        status: listed.values().any(|h| h.live.is_some()),
                    },
                    Some(previous) => Effect {
                        contents: !same_stripped(previous, &listed),
                        status: !same_live(previous, &listed),
                    },
                };
                state.complete = Some(listed);
                effect
            }
            Change::Apply(object) => {
                let Some((key, held)) = hold(watched, &api_version, &object) else {
                    return Effect::default();
                };
                let objects = state.complete.get_or_insert_with(BTreeMap::new);
                let effect = match objects.get(&key) {
                    Some(old) => Effect {
                        contents: old.stripped != held.stripped,
                        status: old.live != held.live,
                    },
                    None => Effect {
                        contents: true,
                        status: held.live.is_some(),
                    },
                };
                objects.insert(key, held);
                effect
            }
            Change::Delete(object) => {
                let Some(key) = ObjectKey::of(&object) else {
                    return Effect::default();
                };
                match state.complete.as_mut().and_then(|o| o.remove(&key)) {
                    Some(old) => Effect {
                        contents: true,
                        status: old.live.is_some(),
                    },
                    None => Effect::default(),
                }
            }
        }
    }

    /// Every kind has completed a list (or is not served).
    pub fn is_ready(&self) -> bool {
        self.kinds.values().all(|(_, s)| s.complete.is_some())
    }

    /// Kinds whose first list has not completed yet.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        self.kinds
            .values()
            .filter(|(_, s)| s.complete.is_none())
            .map(|(k, _)| k.kind)
            .collect()
    }

    /// The text the daemon gets: every complete set, kinds in `WATCHED`
    /// order, objects by namespace and name. `None` until ready.
    pub fn contents(&self) -> Option<String> {
        if !self.is_ready() {
            return None;
        }
        let mut ordered: Vec<(&WatchedKind, &KindState)> =
            self.kinds.values().map(|(k, s)| (*k, s)).collect();
        ordered.sort_by_key(|(k, _)| WATCHED.iter().position(|w| w.kind == k.kind));
        let objects = ordered
            .into_iter()
            .flat_map(|(_, s)| s.complete.iter().flat_map(|o| o.values()))
            .map(|held| &held.stripped);
        Some(contents::render(objects))
    }

    /// The object of `kind` called `key`, as last seen complete.
    pub fn get(&self, kind: &str, key: &ObjectKey) -> Option<&Held> {
        self.kinds.get(kind)?.1.complete.as_ref()?.get(key)
    }

    /// Every object of `kind`, as last seen complete.
    pub fn objects(&self, kind: &str) -> impl Iterator<Item = (&ObjectKey, &Held)> {
        self.kinds
            .get(kind)
            .and_then(|(_, s)| s.complete.as_ref())
            .into_iter()
            .flatten()
    }
}

fn hold(kind: &WatchedKind, api_version: &str, object: &Value) -> Option<(ObjectKey, Held)> {
    let key = ObjectKey::of(object)?;
    let live = kind.status_written.then(|| Live {
        api_version: api_version.to_owned(),
        resource_version: object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        status: object.get("status").cloned().unwrap_or(Value::Null),
    });
    let stripped = contents::strip(kind, api_version, object);
    Some((key, Held { stripped, live }))
}

fn same_stripped(a: &BTreeMap<ObjectKey, Held>, b: &BTreeMap<ObjectKey, Held>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, ha), (kb, hb))| ka == kb && ha.stripped == hb.stripped)
}

fn same_live(a: &BTreeMap<ObjectKey, Held>, b: &BTreeMap<ObjectKey, Held>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, ha), (kb, hb))| ka == kb && ha.live == hb.live)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::by_name;

    const TWO: &[WatchedKind] = &[
        WatchedKind {
            group: "",
            kind: "Service",
            versions: &["v1"],
            namespaced: true,
            status_written: false,
        },
        WatchedKind {
            group: "gateway.networking.k8s.io",
            kind: "Gateway",
            versions: &["v1"],
            namespaced: true,
            status_written: true,
        },
    ];

    fn service(name: &str, port: u16) -> Value {
        json!({"metadata": {"name": name, "namespace": "demo", "resourceVersion": "1"},
               "spec": {"ports": [{"port": port}]}})
    }

    fn listed(store: &mut ClusterStore, kind: &str, objects: &[Value]) -> Effect {
        let mut effect = store.apply(kind, Change::Init);
        for o in objects {
            effect |= store.apply(kind, Change::InitApply(o.clone()));
        }
        effect |= store.apply(kind, Change::InitDone);
        effect
    }

    #[test]
    fn nothing_is_ready_until_every_kind_has_listed() {
        let mut store = ClusterStore::new(TWO);
        assert!(!store.is_ready());
        assert_eq!(store.contents(), None);
        listed(&mut store, "Service", &[service("web", 80)]);
        assert!(!store.is_ready());
        assert_eq!(store.waiting_for(), ["Gateway"]);
        store.apply("Gateway", Change::Init);
        store.apply("Gateway", Change::InitApply(service("lb", 1)));
        assert!(!store.is_ready(), "a list under way is not complete");
        store.apply("Gateway", Change::InitDone);
        assert!(store.is_ready());
        let text = store.contents().unwrap();
        assert!(text.contains("\"name\":\"web\"") && text.contains("\"name\":\"lb\""));
    }

    #[test]
    fn a_kind_the_server_does_not_serve_counts_as_empty_and_complete() {
        let mut store = ClusterStore::new(TWO);
        listed(&mut store, "Service", &[service("web", 80)]);
        assert!(store.not_served("Gateway").contents);
        assert!(store.is_ready());
        assert!(!store.contents().unwrap().contains("Gateway"));
    }

    #[test]
    fn a_relist_cut_short_keeps_the_previous_complete_set() {
        let mut store = ClusterStore::new(TWO);
        listed(&mut store, "Gateway", &[]);
        listed(
            &mut store,
            "Service",
            &[service("web", 80), service("db", 5432)],
        );
        let before = store.contents().unwrap();

        // A 410 or an outage restarts the watch; the new list delivers one
        // object, then the connection breaks and the watch starts again.
        assert_eq!(store.apply("Service", Change::Init), Effect::default());
        store.apply("Service", Change::InitApply(service("web", 80)));
        assert_eq!(store.contents().unwrap(), before, "partial list not used");
        store.apply("Service", Change::Init);
        assert_eq!(store.contents().unwrap(), before);

        // The relist that completes replaces the set whole: db is gone.
        store.apply("Service", Change::InitApply(service("web", 80)));
        let effect = store.apply("Service", Change::InitDone);
        assert!(effect.contents);
        let after = store.contents().unwrap();
        assert!(!after.contains("\"db\""), "{after}");
    }

    #[test]
    fn a_relist_with_the_same_objects_changes_nothing() {
        let mut store = ClusterStore::new(TWO);
        listed(&mut store, "Gateway", &[]);
        listed(&mut store, "Service", &[service("web", 80)]);
        let mut again = service("web", 80);
        again["metadata"]["resourceVersion"] = json!("77");
        assert_eq!(listed(&mut store, "Service", &[again]), Effect::default());
    }

    #[test]
    fn changes_after_the_list_apply_one_by_one() {
        let mut store = ClusterStore::new(TWO);
        listed(&mut store, "Gateway", &[]);
        listed(&mut store, "Service", &[service("web", 80)]);
        assert!(
            store
                .apply("Service", Change::Apply(service("web", 81)))
                .contents
        );
        assert!(
            !store
                .apply("Service", Change::Apply(service("web", 81)))
                .contents
        );
        assert!(
            store
                .apply("Service", Change::Delete(service("web", 81)))
                .contents
        );
        assert!(
            !store
                .apply("Service", Change::Delete(service("web", 81)))
                .contents
        );
        assert_eq!(store.contents().unwrap(), "");
    }

    #[test]
    fn a_status_change_is_a_status_effect_not_a_contents_one() {
        let mut store = ClusterStore::new(TWO);
        listed(&mut store, "Service", &[]);
        let gateway = json!({"metadata": {"name": "lb", "namespace": "demo", "resourceVersion": "5"},
                             "spec": {"gatewayClassName": "switchyard"}});
        listed(&mut store, "Gateway", std::slice::from_ref(&gateway));
        let mut written = gateway.clone();
        written["metadata"]["resourceVersion"] = json!("6");
        written["status"] = json!({"conditions": [{"type": "Programmed", "status": "True"}]});
        let effect = store.apply("Gateway", Change::Apply(written));
        assert_eq!(
            effect,
            Effect {
                contents: false,
                status: true
            }
        );
        let key = ObjectKey {
            namespace: "demo".into(),
            name: "lb".into(),
        };
        let live = store.get("Gateway", &key).unwrap().live.as_ref().unwrap();
        assert_eq!(live.resource_version, "6");
        assert_eq!(live.status["conditions"][0]["type"], "Programmed");
    }

    #[test]
    fn objects_carry_the_version_the_server_serves() {
        let mut store = ClusterStore::default();
        store.served("TCPRoute", "gateway.networking.k8s.io/v1alpha2");
        for kind in crate::kinds::WATCHED {
            if kind.kind == "TCPRoute" {
                let route = json!({"metadata": {"name": "r", "namespace": "demo"}, "spec": {}});
                listed(&mut store, kind.kind, &[route]);
            } else {
                listed(&mut store, kind.kind, &[]);
            }
        }
        assert!(by_name("TCPRoute").is_some());
        let text = store.contents().unwrap();
        assert!(
            text.contains("\"apiVersion\":\"gateway.networking.k8s.io/v1alpha2\""),
            "{text}"
        );
    }
}
