//! Lists as the API serves them: consistent pages joined by continue
//! tokens, at the current revision or an older one still in the history,
//! filtered by label and field selectors.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::Request;
use crate::kinds::Kind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::token::{self, Continue};

/// A list request's parameters.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_from: Option<Continue>,
    pub resource_version: Option<u64>,
    pub exact: bool,
}

impl ListRequest {
    pub fn parse(request: &Request) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(request.param("fieldSelector").unwrap_or(""))?;
        let limit =
            match request.param("limit") {
                None | Some("") | Some("0") => None,
                Some(limit) => Some(limit.parse::<usize>().map_err(|_| {
                    ApiError::BadRequest(format!("limit: invalid value {limit:?}"))
                })?),
            };
        let resource_version = parse_resource_version(request.param("resourceVersion"))?;
        let exact = match request.param("resourceVersionMatch") {
            None | Some("") | Some("NotOlderThan") => false,
            Some("Exact") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}"
                )))
            }
        };
        let continue_from = match request.param("continue").filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => {
                if resource_version.is_some_and(|rv| rv != 0) {
                    return Err(ApiError::BadRequest(
                        "specifying resource version is not allowed when using continue".to_owned(),
                    ));
                }
                Some(token::decode(token)?)
            }
        };
        Ok(ListRequest {
            labels,
            fields,
            limit,
            continue_from,
            resource_version,
            exact,
        })
    }
}

/// `resourceVersion` as a number; unset and empty are `None`.
pub fn parse_resource_version(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "resourceVersion: Invalid value: {text:?}: must be a number"
            ))
        }),
    }
}

pub(crate) fn list(
    store: &Store,
    kind: &Kind,
    version: &str,
    namespace: Option<&str>,
    request: &ListRequest,
) -> Result<Value, ApiError> {
    let current = store.revision();
    // resourceVersion=0 is served from the cache without paging, as the
    // watch cache of a real server does; an exact or continued list is
    // served at its revision from the history.
    let (at, limit) = match (&request.continue_from, request.resource_version) {
        (Some(token), _) => {
            if token.rv < store.compacted() {
                return Err(ApiError::continue_expired());
            }
            (Some(token.rv), request.limit)
        }
        (None, Some(0)) => (None, None),
        (None, Some(rv)) if request.exact => (Some(rv), request.limit),
        (None, Some(rv)) if rv > current => {
            return Err(ApiError::TooLargeResourceVersion {
                requested: rv,
                current,
            })
        }
        (None, _) => (None, request.limit),
    };
    if at.is_some_and(|rv| rv > current) {
        return Err(ApiError::TooLargeResourceVersion {
            requested: at.unwrap_or(current),
            current,
        });
    }
    let served_at = at.unwrap_or(current);
    let objects = store.objects_at(&kind.resource(), namespace, at)?;

    let start = request.continue_from.as_ref().map(|c| c.start.clone());
    let mut matching = objects
        .into_iter()
        .filter(|(key, _)| {
            start
                .as_ref()
                .is_none_or(|start| key_text(&key.namespace, &key.name) > *start)
        })
        .filter(|(_, object)| request.labels.matches(object) && request.fields.matches(object))
        .map(|(key, object)| (key_text(&key.namespace, &key.name), object));
    let limit = limit.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last = None;
    for (key, object) in matching.by_ref().take(limit) {
        items.push(kind.typed(version, object));
        last = Some(key);
    }
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": served_at.to_string()});
    if remaining > 0 {
        let token = Continue {
            v: "meta.k8s.io/v1".to_owned(),
            rv: served_at,
            start: last.unwrap_or_default(),
        };
        metadata["continue"] = json!(token::encode(&token));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(version),
        "metadata": metadata,
        "items": items,
    }))
}

/// Keys compare as etcd's do: namespace, then name.
fn key_text(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
