//! The API's URL space: discovery, collections, objects, `status`
//! subresources, and the `/_sim` controls, answered from the shared state.

use std::io;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{Handler, Request, Responder};
use crate::kinds::Kind;
use crate::list::{self, ListRequest};
use crate::patch::PatchType;
use crate::shared::{object_key, Shared};
use crate::store::{ObjectKey, Part};
use crate::watch;

/// Where a URL points.
enum Target<'a> {
    Document(Value),
    Collection {
        kind: &'a Kind,
        version: String,
        namespace: Option<String>,
    },
    Object {
        kind: &'a Kind,
        version: String,
        key: ObjectKey,
        status: bool,
    },
}

impl Shared {
    fn target(&self, request: &Request) -> Result<Target<'_>, ApiError> {
        // Aggregated discovery is asked for by media type, on the same paths.
        let aggregated = request
            .header("accept")
            .is_some_and(|accept| accept.contains("as=APIGroupDiscoveryList"));
        match request.path.trim_end_matches('/') {
            "/api" if aggregated => return Ok(Target::Document(self.catalog.aggregated(true))),
            "/apis" if aggregated => return Ok(Target::Document(self.catalog.aggregated(false))),
            _ => {}
        }
        let path = request.path.as_str();
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api"] => {
                return Ok(Target::Document(
                    self.catalog.core_versions(&self.server_address()),
                ))
            }
            ["apis"] => return Ok(Target::Document(self.catalog.group_list())),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group] => {
                return self
                    .catalog
                    .group(group)
                    .map(Target::Document)
                    .ok_or(ApiError::UnknownPath)
            }
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::UnknownPath),
        };
        if rest.is_empty() {
            return self
                .catalog
                .resource_list(group, version)
                .map(Target::Document)
                .ok_or(ApiError::UnknownPath);
        }
        // `namespaces/x/status` is the core Namespace's own subresource;
        // any other third segment names a resource inside namespace x.
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if !(group.is_empty() && *plural == "status" && tail.is_empty()) =>
            {
                (Some(*ns), {
                    let mut rest = vec![*plural];
                    rest.extend_from_slice(tail);
                    rest
                })
            }
            other => (None, other.to_vec()),
        };
        let plural = rest.first().copied().unwrap_or("");
        let kind = self
            .catalog
            .by_resource(group, version, plural)
            .ok_or(ApiError::UnknownPath)?;
        if namespace.is_some() && !kind.namespaced {
            return Err(ApiError::UnknownPath);
        }
        let version = version.to_owned();
        match rest.as_slice() {
            [_] => Ok(Target::Collection {
                kind,
                version,
                namespace: namespace.map(str::to_owned),
            }),
            [_, name] | [_, name, "status"] => {
                let status = rest.len() == 3;
                if status && !kind.status_subresource {
                    return Err(ApiError::UnknownPath);
                }
                if kind.namespaced && namespace.is_none() {
                    return Err(ApiError::UnknownPath);
                }
                Ok(Target::Object {
                    kind,
                    version,
                    key: object_key(kind, namespace.unwrap_or(""), name)?,
                    status,
                })
            }
            _ => Err(ApiError::UnknownPath),
        }
    }

    fn server_address(&self) -> String {
        let url = self
            .server_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        url.trim_start_matches("http://").to_owned()
    }

    fn api(
        &self,
        request: &Request,
        responder: &mut Responder,
    ) -> io::Result<Result<(u16, Value), ApiError>> {
        let target = match self.target(request) {
            Ok(target) => target,
            Err(error) => return Ok(Err(error)),
        };
        let method = request.method.as_str();
        Ok(match (method, target) {
            ("GET", Target::Document(document)) => Ok((200, document)),
            (
                "GET",
                Target::Collection {
                    kind,
                    version,
                    namespace,
                },
            ) if request.flag("watch") => {
                watch::serve(
                    self,
                    kind,
                    &version,
                    namespace.as_deref(),
                    request,
                    responder,
                )?;
                return Ok(Ok((0, Value::Null)));
            }
            (
                "GET",
                Target::Collection {
                    kind,
                    version,
                    namespace,
                },
            ) => ListRequest::parse(request)
                .and_then(|parsed| {
                    list::list(
                        &self.lock().store,
                        kind,
                        &version,
                        namespace.as_deref(),
                        &parsed,
                    )
                })
                .map(|list| (200, list)),
            (
                "POST",
                Target::Collection {
                    kind,
                    version,
                    namespace,
                },
            ) => self.create(kind, &version, namespace, request),
            (
                "GET",
                Target::Object {
                    kind, version, key, ..
                },
            ) => {
                let object = self.lock().store.get(&key).cloned();
                object
                    .map(|object| (200, kind.typed(&version, object)))
                    .ok_or_else(|| not_found(kind, &key))
            }
            (
                "PUT",
                Target::Object {
                    kind,
                    version,
                    key,
                    status,
                },
            ) => {
                let part = if status { Part::Status } else { Part::Main };
                parse_object(&request.body)
                    .and_then(|object| self.write(|store| store.replace(kind, &key, object, part)))
                    .map(|object| (200, kind.typed(&version, object)))
            }
            (
                "PATCH",
                Target::Object {
                    kind,
                    version,
                    key,
                    status,
                },
            ) => self.patch(kind, &version, &key, status, request),
            (
                "DELETE",
                Target::Object {
                    kind,
                    version,
                    key,
                    status: false,
                },
            ) => {
                let precondition = serde_json::from_slice::<Value>(&request.body)
                    .ok()
                    .and_then(|options| {
                        options
                            .pointer("/preconditions/resourceVersion")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                self.write(|store| store.delete(kind, &key, precondition.as_deref()))
                    .map(|object| (200, kind.typed(&version, object)))
            }
            _ => Err(ApiError::MethodNotAllowed),
        })
    }

    fn create(
        &self,
        kind: &Kind,
        version: &str,
        namespace: Option<String>,
        request: &Request,
    ) -> Result<(u16, Value), ApiError> {
        if kind.namespaced && namespace.is_none() {
            return Err(ApiError::MethodNotAllowed);
        }
        let mut object = parse_object(&request.body)?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = if name.is_empty() {
            let prefix = object
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::Invalid {
                    resource: kind.resource(),
                    name: String::new(),
                    message: "metadata.name: Required value: name or generateName is required"
                        .to_owned(),
                })?;
            let suffix = self.lock().store.revision();
            format!("{prefix}{suffix:05x}")
        } else {
            name
        };
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("name".into(), json!(name));
        }
        let key = object_key(kind, namespace.as_deref().unwrap_or(""), &name)?;
        self.write(|store| store.create(kind, key, object, Part::Main))
            .map(|object| (201, kind.typed(version, object)))
    }

    fn patch(
        &self,
        kind: &Kind,
        version: &str,
        key: &ObjectKey,
        status: bool,
        request: &Request,
    ) -> Result<(u16, Value), ApiError> {
        let patch_type =
            PatchType::from_content_type(request.header("content-type").unwrap_or(""))?;
        let patch = patch_type.parse_body(&request.body)?;
        let part = if status { Part::Status } else { Part::Main };
        self.write(|store| {
            let Some(current) = store.get(key).cloned() else {
                // Server-side apply creates what does not exist yet.
                if patch_type == PatchType::Apply && !status {
                    let mut created = serde_json::Value::Object(Default::default());
                    crate::patch::merge_patch(&mut created, &patch);
                    return store
                        .create(kind, key.clone(), created, part)
                        .map(|o| (201, o));
                }
                return Err(not_found(kind, key));
            };
            let patched = patch_type.apply(&current, &patch)?;
            store.replace(kind, key, patched, part).map(|o| (200, o))
        })
        .map(|(code, object)| (code, kind.typed(version, object)))
    }

    fn delayed_api(
        &self,
        request: &Request,
        responder: &mut Responder,
    ) -> io::Result<Result<(u16, Value), ApiError>> {
        let delay = *self.delay.lock().unwrap_or_else(|p| p.into_inner());
        std::thread::sleep(delay);
        self.api(request, responder)
    }

    fn simulator(&self, request: &Request) -> Result<(u16, Value), ApiError> {
        match (request.method.as_str(), request.path.trim_end_matches('/')) {
            ("POST", "/_sim/compact") => Ok((200, json!({"compactedAt": self.compact()}))),
            ("GET", "/_sim/requests") => {
                let requests = self
                    .requests
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Ok((200, serde_json::to_value(requests).unwrap_or_default()))
            }
            ("DELETE", "/_sim/requests") => {
                self.requests
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                Ok((200, json!({})))
            }
            ("POST", "/_sim/objects") => {
                let text = String::from_utf8_lossy(&request.body);
                match self.load(&text) {
                    Ok(report) => Ok((200, serde_json::to_value(report).unwrap_or_default())),
                    Err(crate::SimError::Api(error)) => Err(error),
                    Err(other) => Err(ApiError::BadRequest(other.to_string())),
                }
            }
            ("POST", "/_sim/disconnect") => {
                self.connections.disconnect_all(Some(request.connection));
                Ok((200, json!({})))
            }
            ("POST", "/_sim/delay") => {
                let milliseconds = request
                    .param("ms")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .ok_or_else(|| ApiError::BadRequest("POST /_sim/delay?ms=N".to_owned()))?;
                *self.delay.lock().unwrap_or_else(|p| p.into_inner()) =
                    Duration::from_millis(milliseconds);
                Ok((200, json!({"delayMs": milliseconds})))
            }
            ("GET", "/_sim/state") => {
                let state = self.lock();
                Ok((
                    200,
                    json!({
                        "revision": state.store.revision(),
                        "compactedAt": state.store.compacted(),
                    }),
                ))
            }
            _ => Err(ApiError::UnknownPath),
        }
    }
}

impl Handler for Shared {
    fn handle(&self, request: &Request, responder: &mut Responder) -> io::Result<()> {
        let answer = match request.path.as_str() {
            "/version" => Ok((
                200,
                json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0+yard-apiserver",
                    "platform": "linux/amd64",
                }),
            )),
            "/healthz" | "/readyz" | "/livez" => return responder.send(200, "text/plain", b"ok"),
            path if path.starts_with("/_sim/") => self.simulator(request),
            _ => match self.delayed_api(request, responder)? {
                Ok((0, _)) => return Ok(()),
                other => other,
            },
        };
        let (code, body) = match answer {
            Ok(answer) => answer,
            Err(error) => (error.code(), error.status()),
        };
        let is_write = matches!(request.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        if is_write && !request.path.starts_with("/_sim/") {
            self.record(request, code);
        }
        responder.send_json(code, &body)
    }
}

fn not_found(kind: &Kind, key: &ObjectKey) -> ApiError {
    ApiError::NotFound {
        resource: kind.resource(),
        name: key.name.clone(),
    }
}

/// A request body: JSON, or YAML as kubectl may send it.
fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let object: Value = serde_json::from_slice(body).or_else(|json_error| {
        std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_norway::from_str(text).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("the body is not a JSON object: {json_error}"))
            })
    })?;
    if object.is_object() {
        Ok(object)
    } else {
        Err(ApiError::BadRequest(
            "the body is not a JSON object".to_owned(),
        ))
    }
}
