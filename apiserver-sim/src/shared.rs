//! The state every request handler shares: the store behind its lock,
//! the condition watches wait on, the catalog, the request log and the
//! open connections; and the writes tests and manifests make directly.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::http::{Connections, Request};
use crate::kinds::{Catalog, Kind};
use crate::manifest;
use crate::store::{ObjectKey, Part, Store};

/// One write request as received, for tests that check what a client
/// wrote and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// What a load of manifests did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Objects created or replaced.
    pub applied: usize,
    /// Documents of kinds the server does not serve, as `kind apiVersion
    /// namespace/name`.
    pub skipped: Vec<String>,
}

pub(crate) struct StoreState {
    pub store: Store,
    /// Bumped when the server stops: watches of an older epoch end at once.
    pub epoch: u64,
}

pub(crate) struct Shared {
    pub catalog: Catalog,
    pub state: Mutex<StoreState>,
    pub changed: Condvar,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub connections: Arc<Connections>,
    pub bookmark_interval: Duration,
    pub state_file: Option<PathBuf>,
    pub server_url: Mutex<String>,
    /// How long every API answer waits first: a slow server.
    pub delay: Mutex<Duration>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a write against the store; on success, persists the store and
    /// wakes the watches.
    pub fn write<T>(
        &self,
        write: impl FnOnce(&mut Store) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut state = self.lock();
        let before = state.store.revision();
        let result = write(&mut state.store)?;
        if state.store.revision() != before {
            if let Some(path) = &self.state_file {
                if let Err(error) = persist(path, &state.store) {
                    eprintln!(
                        "yard-apiserver: writing the state to {}: {error}",
                        path.display()
                    );
                }
            }
            self.changed.notify_all();
        }
        Ok(result)
    }

    /// Creates or replaces `object` whole (status included), whatever its
    /// resourceVersion: how tests and manifests set the scene.
    pub fn upsert(&self, mut object: Value) -> Result<Value, ApiError> {
        let field = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (api_version, kind_name) = (field("/apiVersion"), field("/kind"));
        let (kind, version) = self
            .catalog
            .by_type(&api_version, &kind_name)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{kind_name} {api_version} is not served"))
            })?;
        let key = object_key(
            kind,
            &field("/metadata/namespace"),
            &field("/metadata/name"),
        )?;
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        let stored = self.write(|store| match store.get(&key) {
            Some(_) => store.replace(kind, &key, object, Part::Whole),
            None => store.create(kind, key.clone(), object, Part::Whole),
        })?;
        Ok(kind.typed(version, stored))
    }

    pub fn delete(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (kind, version) = self
            .catalog
            .by_type(api_version, kind_name)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{kind_name} {api_version} is not served"))
            })?;
        let key = object_key(kind, namespace, name)?;
        let deleted = self.write(|store| store.delete(kind, &key, None))?;
        Ok(kind.typed(version, deleted))
    }

    pub fn get(
        &self,
        api_version: &str,
        kind_name: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let (kind, version) = self.catalog.by_type(api_version, kind_name)?;
        let key = object_key(kind, namespace, name).ok()?;
        let object = self.lock().store.get(&key).cloned()?;
        Some(kind.typed(version, object))
    }

    pub fn load(&self, text: &str) -> Result<LoadReport, crate::SimError> {
        let manifest = manifest::read(text, &self.catalog)?;
        let mut report = LoadReport {
            applied: 0,
            skipped: manifest.skipped,
        };
        for object in manifest.served {
            self.upsert(object)?;
            report.applied += 1;
        }
        Ok(report)
    }

    pub fn compact(&self) -> u64 {
        let mut state = self.lock();
        state.store.compact();
        self.changed.notify_all();
        state.store.revision()
    }

    pub fn record(&self, request: &Request, status: u16) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RecordedRequest {
                method: request.method.clone(),
                path: request.target.clone(),
                content_type: request.header("content-type").map(str::to_owned),
                body: String::from_utf8_lossy(&request.body).into_owned(),
                status,
            });
    }
}

pub(crate) fn object_key(kind: &Kind, namespace: &str, name: &str) -> Result<ObjectKey, ApiError> {
    if name.is_empty() {
        return Err(ApiError::BadRequest("an object needs a name".to_owned()));
    }
    let namespace = match (kind.namespaced, namespace) {
        (true, "") => "default",
        (true, ns) => ns,
        (false, _) => "",
    };
    Ok(ObjectKey {
        resource: kind.resource(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

fn persist(path: &std::path::Path, store: &Store) -> io::Result<()> {
    let text = serde_json::to_vec(&store.persisted()).map_err(io::Error::other)?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

pub(crate) fn read_persisted(
    path: &std::path::Path,
) -> Result<Option<crate::store::Persisted>, crate::SimError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| crate::SimError::State(path.to_owned(), e.to_string())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(crate::SimError::State(path.to_owned(), error.to_string())),
    }
}
