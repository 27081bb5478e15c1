//! The PATCH bodies clients send: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902), and server-side apply and strategic merge approximated as
//! merge patches (field managers and patch strategies are not modelled).

use serde_json::Value;

use crate::error::ApiError;

/// A PATCH's `Content-Type`, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply, applied as a merge
    /// patch that creates a missing object.
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }

    /// The patch document; apply patches may be YAML.
    pub fn parse_body(self, body: &[u8]) -> Result<Value, ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the patch is not UTF-8".to_owned()))?;
        let parsed = match self {
            PatchType::Apply => serde_norway::from_str::<Value>(text).map_err(|e| e.to_string()),
            _ => serde_json::from_str::<Value>(text).map_err(|e| e.to_string()),
        };
        parsed.map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))
    }

    pub fn apply(self, target: &Value, patch: &Value) -> Result<Value, ApiError> {
        match self {
            PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
                let mut patched = target.clone();
                merge_patch(&mut patched, patch);
                Ok(patched)
            }
            PatchType::Json => json_patch(target, patch),
        }
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// RFC 6902 over a copy of `target`: all operations or none.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let operations = patch
        .as_array()
        .ok_or_else(|| bad("a JSON patch is an array of operations"))?;
    let mut document = target.clone();
    for operation in operations {
        let op = operation
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("an operation has no op"))?;
        let path = operation
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("an operation has no path"))?;
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| bad(&format!("{op} {path} has no value")))
        };
        let from = || {
            operation
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{op} {path} has no from")))
        };
        match op {
            "add" => add(&mut document, path, value()?)?,
            "remove" => {
                remove(&mut document, path)?;
            }
            "replace" => {
                remove(&mut document, path)?;
                add(&mut document, path, value()?)?;
            }
            "move" => {
                let moved = remove(&mut document, from()?)?;
                add(&mut document, path, moved)?;
            }
            "copy" => {
                let copied = document
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| missing(path))?;
                add(&mut document, path, copied)?;
            }
            "test" => {
                if document.pointer(path) != Some(&value()?) {
                    return Err(ApiError::Invalid {
                        resource: String::new(),
                        name: String::new(),
                        message: format!("the test of {path} failed"),
                    });
                }
            }
            other => return Err(bad(&format!("unknown JSON patch operation {other:?}"))),
        }
    }
    Ok(document)
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

fn missing(path: &str) -> ApiError {
    ApiError::BadRequest(format!("the JSON patch path {path:?} does not exist"))
}

/// The parent of `path` and its last reference token, unescaped.
fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| missing(path))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(document: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *document = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(path)?;
    match document.pointer_mut(parent).ok_or_else(|| missing(path))? {
        Value::Object(map) => {
            map.insert(token, value);
        }
        Value::Array(items) => {
            let at = if token == "-" {
                items.len()
            } else {
                token
                    .parse::<usize>()
                    .ok()
                    .filter(|at| *at <= items.len())
                    .ok_or_else(|| missing(path))?
            };
            items.insert(at, value);
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn remove(document: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, token) = split_pointer(path)?;
    match document.pointer_mut(parent).ok_or_else(|| missing(path))? {
        Value::Object(map) => map.remove(&token).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let at = token
                .parse::<usize>()
                .ok()
                .filter(|at| *at < items.len())
                .ok_or_else(|| missing(path))?;
            Ok(items.remove(at))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_replaces_lists() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut target, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(target, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_applies_in_order_and_fails_whole() {
        let target = json!({"spec": {"holderIdentity": "a", "list": [1]}});
        let patched = json_patch(
            &target,
            &json!([
                {"op": "test", "path": "/spec/holderIdentity", "value": "a"},
                {"op": "replace", "path": "/spec/holderIdentity", "value": "b"},
                {"op": "add", "path": "/spec/list/-", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(
            patched,
            json!({"spec": {"holderIdentity": "b", "list": [1, 2]}})
        );
        let failed = json_patch(
            &target,
            &json!([{"op": "test", "path": "/spec/holderIdentity", "value": "z"}]),
        );
        assert!(failed.is_err());
    }

    #[test]
    fn unknown_patch_media_type_is_refused() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert!(PatchType::from_content_type("text/plain").is_err());
    }
}
