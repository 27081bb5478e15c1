//! Watch streams: one JSON event per line over a chunked response, from a
//! resourceVersion onwards, out of the bounded history. A start older than
//! the history is answered, as the watch cache answers it, with an ERROR
//! event carrying a 410 Expired Status; so is a watch that falls behind.

use std::io;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{Request, Responder};
use crate::kinds::Kind;
use crate::list::parse_resource_version;
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::Shared;
use crate::store::{Change, ChangeType};

/// A real server closes watches after 30 to 60 minutes when the client
/// sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Longer timeouts are cut to this, so that no deadline overflows.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// The annotation on the bookmark that ends a watch's initial events
/// (KEP-3157, `sendInitialEvents=true`).
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

struct Filter<'a> {
    resource: String,
    namespace: Option<&'a str>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter<'_> {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event a change is to this watch: a modification that moves an
    /// object into or out of the selection is an ADDED or a DELETED.
    fn event(&self, change: &Change) -> Option<&'static str> {
        if change.key.resource != self.resource
            || self.namespace.is_some_and(|ns| ns != change.key.namespace)
        {
            return None;
        }
        let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
        let after = change.change != ChangeType::Deleted && self.matches(&change.object);
        match (before, after) {
            (false, true) => Some("ADDED"),
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        }
    }
}

pub(crate) fn serve(
    shared: &Shared,
    kind: &Kind,
    version: &str,
    namespace: Option<&str>,
    request: &Request,
    responder: &mut Responder,
) -> io::Result<()> {
    let parsed = (|| {
        let labels = LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(request.param("fieldSelector").unwrap_or(""))?;
        let start = parse_resource_version(request.param("resourceVersion"))?;
        let timeout = match request.param("timeoutSeconds") {
            None | Some("") => DEFAULT_TIMEOUT,
            Some(seconds) => Duration::from_secs(seconds.parse().map_err(|_| {
                ApiError::BadRequest(format!("timeoutSeconds: invalid value {seconds:?}"))
            })?),
        };
        Ok::<_, ApiError>((labels, fields, start, timeout))
    })();
    let (labels, fields, start, timeout) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return responder.send_json(error.code(), &error.status()),
    };
    let filter = Filter {
        resource: kind.resource(),
        namespace,
        labels,
        fields,
    };
    let bookmarks = request.flag("allowWatchBookmarks");
    let initial_events = request.flag("sendInitialEvents");
    let deadline = Instant::now() + timeout.min(MAX_TIMEOUT);
    let event = |kind_of: &str, object: Value| json!({"type": kind_of, "object": kind.typed(version, object)});
    let bookmark = |revision: u64, initial_end: bool| {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version(version), "metadata": metadata}})
    };

    // Unset or 0 (and any start with sendInitialEvents) begins with the
    // current objects as ADDED events; a given resourceVersion begins
    // after it.
    let (epoch, mut cursor, initial, expired) = {
        let state = shared.lock();
        let store = &state.store;
        match start {
            Some(rv) if rv != 0 && !initial_events => {
                let expired = store.changes_after(rv).err();
                (state.epoch, rv, Vec::new(), expired)
            }
            _ => {
                let objects = store
                    .objects_at(&filter.resource, namespace, None)
                    .unwrap_or_default();
                let initial: Vec<Value> = objects
                    .into_values()
                    .filter(|o| filter.matches(o))
                    .map(|o| event("ADDED", o))
                    .collect();
                (state.epoch, store.revision(), initial, None)
            }
        }
    };
    responder.start_stream("application/json")?;
    if let Some(error) = expired {
        send(
            responder,
            &json!({"type": "ERROR", "object": error.status()}),
        )?;
        return responder.end_stream();
    }
    for added in &initial {
        send(responder, added)?;
    }
    if initial_events && bookmarks {
        send(responder, &bookmark(cursor, true))?;
    }

    let mut next_bookmark = Instant::now() + shared.bookmark_interval;
    loop {
        let mut batch = Vec::new();
        let mut expired = None;
        let mut timed_out = false;
        {
            let mut state = shared.lock();
            loop {
                if state.epoch != epoch {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server stopped",
                    ));
                }
                match state.store.changes_after(cursor) {
                    Err(error) => {
                        expired = Some(error);
                        break;
                    }
                    Ok(changes) => {
                        for change in changes {
                            if let Some(kind_of) = filter.event(change) {
                                batch.push(event(kind_of, change.object.clone()));
                            }
                        }
                    }
                }
                // A start newer than the store waits for it to catch up.
                cursor = cursor.max(state.store.revision());
                let now = Instant::now();
                if !batch.is_empty() {
                    break;
                }
                if now >= deadline {
                    timed_out = true;
                    break;
                }
                if bookmarks && now >= next_bookmark {
                    batch.push(bookmark(cursor, false));
                    next_bookmark = now + shared.bookmark_interval;
                    break;
                }
                let mut wake = deadline;
                if bookmarks {
                    wake = wake.min(next_bookmark);
                }
                let wait = wake
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                state = shared
                    .changed
                    .wait_timeout(state, wait)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        for event in &batch {
            send(responder, event)?;
        }
        if let Some(error) = expired {
            send(
                responder,
                &json!({"type": "ERROR", "object": error.status()}),
            )?;
            return responder.end_stream();
        }
        if timed_out {
            return responder.end_stream();
        }
    }
}

fn send(responder: &mut Responder, event: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    responder.chunk(&line)
}
