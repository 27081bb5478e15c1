//! The objects, the one resourceVersion counter, and a bounded history of
//! changes: what etcd and the watch cache are behind a real API server.
//! Every write goes through here, so generation, uid, optimistic
//! concurrency and the change history follow one set of rules.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::kinds::Kind;

/// Where an object lives: its resource (`plural.group`), namespace (empty
/// for cluster-scoped kinds) and name. Ordered as etcd orders its keys, so
/// lists and continue tokens walk namespaces then names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as the history keeps it for watches and consistent lists.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub key: ObjectKey,
    pub change: ChangeType,
    /// The object after the write; for a deletion its last state, with the
    /// deletion's resourceVersion as a real server reports it.
    pub object: Value,
    /// The object before the write, to rebuild older states.
    pub previous: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object: spec and metadata; status is kept when the kind has a
    /// status subresource.
    Main,
    /// The `status` subresource: status only.
    Status,
    /// Everything as given, status included: what the tests' own writes and
    /// loaded manifests need (a Pod's addresses are in its status).
    Whole,
}

/// The part of the store that survives a restart of the server process
/// (the `--state` file): objects and counters, not the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub revision: u64,
    pub next_uid: u64,
    pub objects: Vec<(ObjectKey, Value)>,
}

#[derive(Debug)]
pub struct Store {
    revision: u64,
    next_uid: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// Changes at or below this revision are gone from `history`.
    compacted: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            revision: 1,
            next_uid: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1,
        }
    }

    pub fn from_persisted(persisted: Persisted, history_limit: usize) -> Self {
        let mut store = Store::new(history_limit);
        store.revision = persisted.revision.max(1);
        store.next_uid = persisted.next_uid.max(1);
        store.compacted = store.revision;
        store.objects = persisted.objects.into_iter().collect();
        store
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            revision: self.revision,
            next_uid: self.next_uid,
            objects: self
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The oldest revision a watch may start from or a list be served at.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Drops the whole history: every watch or continue token from before
    /// now is answered with 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.revision;
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The objects of one resource (in one namespace, if given) as they are
    /// now, or as they were at `revision` when it is still in the history.
    pub fn objects_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Option<u64>,
    ) -> Result<BTreeMap<ObjectKey, Value>, ApiError> {
        let in_scope = |key: &ObjectKey| {
            key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns)
        };
        let mut objects: BTreeMap<ObjectKey, Value> = self
            .objects
            .iter()
            .filter(|(key, _)| in_scope(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let Some(revision) = revision else {
            return Ok(objects);
        };
        if revision < self.compacted {
            return Err(ApiError::Expired(format!(
                "too old resource version: {revision} ({})",
                self.compacted
            )));
        }
        for change in self
            .history
            .iter()
            .rev()
            .take_while(|c| c.revision > revision)
        {
            if !in_scope(&change.key) {
                continue;
            }
            match &change.previous {
                Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(objects)
    }

    /// Changes after `revision`, oldest first; `Expired` when some of them
    /// were compacted away.
    pub fn changes_after(&self, revision: u64) -> Result<impl Iterator<Item = &Change>, ApiError> {
        if revision < self.compacted {
            return Err(ApiError::too_old_resource_version(
                revision,
                self.compacted + 1,
            ));
        }
        let skip = self.history.partition_point(|c| c.revision <= revision);
        Ok(self.history.iter().skip(skip))
    }

    /// Creates `object` at `key`, assigning what the server owns.
    pub fn create(
        &mut self,
        kind: &Kind,
        key: ObjectKey,
        mut object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        if self.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists {
                resource: kind.resource(),
                name: key.name,
            });
        }
        if part != Part::Whole && kind.status_subresource {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        strip_type(&mut object);
        let revision = self.revision + 1;
        let uid = self.next_uid;
        let metadata = metadata_mut(&mut object, kind, &key)?;
        metadata.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{uid:012x}")),
        );
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        metadata.insert("generation".into(), json!(1));
        metadata.insert("resourceVersion".into(), json!(revision.to_string()));
        metadata.remove("deletionTimestamp");
        metadata.remove("managedFields");
        self.next_uid += 1;
        self.commit(key, ChangeType::Added, object.clone(), None);
        Ok(object)
    }

    /// Replaces the object at `key` with `object` (its `part` only). A
    /// non-empty `metadata.resourceVersion` in `object` must be the stored
    /// one. A write that changes nothing is not a write: no new revision,
    /// no watch event, as etcd's guaranteed update skips identical bytes.
    pub fn replace(
        &mut self,
        kind: &Kind,
        key: &ObjectKey,
        mut object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let current = self.objects.get(key).ok_or_else(|| ApiError::NotFound {
            resource: kind.resource(),
            name: key.name.clone(),
        })?;
        let precondition = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty());
        let stored = resource_version(current);
        if precondition.is_some_and(|rv| rv != stored) {
            return Err(ApiError::Conflict {
                resource: kind.resource(),
                name: key.name.clone(),
            });
        }
        let mut next = match part {
            Part::Status => {
                let mut next = current.clone();
                set_field(&mut next, "status", object.get("status").cloned());
                next
            }
            Part::Main if kind.status_subresource => {
                set_field(&mut object, "status", current.get("status").cloned());
                object
            }
            Part::Main | Part::Whole => object,
        };
        strip_type(&mut next);
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let spec_changed = without_meta_and_status(current) != without_meta_and_status(&next);
        let metadata = metadata_mut(&mut next, kind, key)?;
        for owned in ["uid", "creationTimestamp"] {
            match current.pointer(&format!("/metadata/{owned}")) {
                Some(value) => metadata.insert(owned.into(), value.clone()),
                None => metadata.remove(owned),
            };
        }
        metadata.remove("managedFields");
        let generation = if spec_changed && part != Part::Status {
            generation + 1
        } else {
            generation
        };
        metadata.insert("generation".into(), json!(generation));
        metadata.insert("resourceVersion".into(), json!(stored));
        if &next == current {
            return Ok(next);
        }
        let revision = self.revision + 1;
        if let Some(metadata) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        let previous = current.clone();
        self.commit(
            key.clone(),
            ChangeType::Modified,
            next.clone(),
            Some(previous),
        );
        Ok(next)
    }

    /// Deletes the object at `key`; `precondition` is a resourceVersion it
    /// must still have.
    pub fn delete(
        &mut self,
        kind: &Kind,
        key: &ObjectKey,
        precondition: Option<&str>,
    ) -> Result<Value, ApiError> {
        let current = self.objects.get(key).ok_or_else(|| ApiError::NotFound {
            resource: kind.resource(),
            name: key.name.clone(),
        })?;
        if precondition.is_some_and(|rv| rv != resource_version(current)) {
            return Err(ApiError::Conflict {
                resource: kind.resource(),
                name: key.name.clone(),
            });
        }
        let previous = current.clone();
        let mut last = current.clone();
        let revision = self.revision + 1;
        if let Some(metadata) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        self.commit(
            key.clone(),
            ChangeType::Deleted,
            last.clone(),
            Some(previous),
        );
        Ok(last)
    }

    fn commit(
        &mut self,
        key: ObjectKey,
        change: ChangeType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.revision += 1;
        match change {
            ChangeType::Deleted => self.objects.remove(&key),
            ChangeType::Added | ChangeType::Modified => {
                self.objects.insert(key.clone(), object.clone())
            }
        };
        self.history.push_back(Change {
            revision: self.revision,
            key,
            change,
            object,
            previous,
        });
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.revision;
            }
        }
    }
}

pub fn resource_version(object: &Value) -> &str {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Objects are stored without `apiVersion` and `kind`: every served
/// version reads the same storage, and answers name the version asked for.
fn strip_type(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
}

fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(field.into(), value),
            None => map.remove(field),
        };
    }
}

/// What `metadata.generation` counts changes of: everything but metadata
/// and status.
fn without_meta_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    rest
}

/// The object's metadata with name and namespace made to match `key`
/// (which the URL gave); a body that names another is refused.
fn metadata_mut<'a>(
    object: &'a mut Value,
    kind: &Kind,
    key: &ObjectKey,
) -> Result<&'a mut Map<String, Value>, ApiError> {
    let invalid = |message: String| ApiError::Invalid {
        resource: kind.resource(),
        name: key.name.clone(),
        message,
    };
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the object is not a JSON object".to_owned()))?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata: must be an object".to_owned()))?;
    match metadata.get("name").and_then(Value::as_str) {
        Some(name) if name != key.name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )))
        }
        _ => {}
    }
    metadata.insert("name".into(), json!(key.name));
    if kind.namespaced {
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != key.namespace => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .to_owned(),
                ))
            }
            _ => {}
        }
        metadata.insert("namespace".into(), json!(key.namespace));
    } else {
        metadata.remove("namespace");
    }
    Ok(metadata)
}

/// Now as RFC 3339 in UTC with seconds, as metav1.Time serializes.
pub fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(seconds)
}

fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let of_day = unix_seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_587_445), "2026-12-06T20:04:05Z");
    }
}
