//! What the manifest tests share: reading the manifests as JSON values,
//! and a validator for the part of OpenAPI v3 that structural CRD schemas
//! use, so a document can be judged against a CRD as an API server would
//! judge it before its CEL rules.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    deploy_dir()
        .parent()
        .expect("deploy/ sits in the workspace")
        .to_owned()
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every non-empty document of a multi-document YAML text.
pub fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The files of `dir` ending in `.yaml`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The manifests operators apply: `deploy/*.yaml` and `deploy/crds/*.yaml`.
pub fn manifests() -> Vec<(PathBuf, Vec<Value>)> {
    let dir = deploy_dir();
    yaml_files(&dir)
        .into_iter()
        .chain(yaml_files(&dir.join("crds")))
        .map(|path| {
            let docs = documents(&read(&path), &path.display().to_string());
            (path, docs)
        })
        .collect()
}

/// The CustomResourceDefinitions in `deploy/crds/`.
pub fn crds() -> Vec<Value> {
    yaml_files(&deploy_dir().join("crds"))
        .iter()
        .flat_map(|path| documents(&read(path), &path.display().to_string()))
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect()
}

pub fn crd_of<'a>(crds: &'a [Value], kind: &str) -> &'a Value {
    crds.iter()
        .find(|c| c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// The `openAPIV3Schema` of a CRD's one version.
pub fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// A step of a path into a document: a field, or any item of a list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Field(String),
    Item,
}

pub type SchemaPath = Vec<Step>;

/// `spec.cidrs[]`, as errors name paths.
pub fn show(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(f);
            }
            Step::Item => out.push_str("[]"),
        }
    }
    out
}

/// Every node of `schema`, with its path, parents before children.
pub fn schema_nodes(schema: &Value) -> Vec<(SchemaPath, &Value)> {
    fn walk<'a>(schema: &'a Value, path: SchemaPath, out: &mut Vec<(SchemaPath, &'a Value)>) {
        out.push((path.clone(), schema));
        if let Some(properties) = schema["properties"].as_object() {
            for (name, child) in properties {
                let mut p = path.clone();
                p.push(Step::Field(name.clone()));
                walk(child, p, out);
            }
        }
        if schema["items"].is_object() {
            let mut p = path.clone();
            p.push(Step::Item);
            walk(&schema["items"], p, out);
        }
    }
    let mut out = Vec::new();
    walk(schema, Vec::new(), &mut out);
    out
}

/// The first value at `path` in `doc` (the first item of each list).
pub fn get<'a>(doc: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut at = doc;
    for step in path {
        at = match step {
            Step::Field(f) => at.as_object()?.get(f)?,
            Step::Item => at.as_array()?.first()?,
        };
    }
    Some(at)
}

pub fn get_mut<'a>(doc: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut at = doc;
    for step in path {
        at = match step {
            Step::Field(f) => at.as_object_mut()?.get_mut(f)?,
            Step::Item => at.as_array_mut()?.first_mut()?,
        };
    }
    Some(at)
}

/// What an API server's schema validation (before CEL rules) says of
/// `value`: one line per violation, `path: why`. Unknown fields are
/// violations, as `kubectl apply --validate=strict` reports them.
pub fn validate(value: &Value, schema: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(value, schema, "", &mut errors);
    errors
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let mut fail = |why: String| errors.push(format!("{}: {why}", path_or_root(path)));
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    if int_or_string {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            fail(format!("{value} is neither an integer nor a string"));
        }
    } else if let Some(expected) = schema["type"].as_str() {
        let fits = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("{path}: schema type {other} is not one this validator knows"),
        };
        if !fits {
            fail(format!("{value} is not of type {expected}"));
            return;
        }
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.contains(value) {
            fail(format!("{value} is not one of {choices:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            fail(format!("{n} is below the minimum {}", schema["minimum"]));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            fail(format!("{n} is above the maximum {}", schema["maximum"]));
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| chars < min) {
            fail(format!("{s:?} is shorter than {}", schema["minLength"]));
        }
        if schema["maxLength"].as_u64().is_some_and(|max| chars > max) {
            fail(format!("{s:?} is longer than {}", schema["maxLength"]));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            let re = regex::Regex::new(pattern)
                .unwrap_or_else(|e| panic!("{path}: pattern {pattern:?}: {e}"));
            if !re.is_match(s) {
                fail(format!("{s:?} does not match {pattern}"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|min| n < min) {
            fail(format!("{n} items, fewer than {}", schema["minItems"]));
        }
        if schema["maxItems"].as_u64().is_some_and(|max| n > max) {
            fail(format!("{n} items, more than {}", schema["maxItems"]));
        }
        match schema["x-kubernetes-list-type"].as_str() {
            Some("set") => {
                let mut seen = BTreeSet::new();
                for item in items {
                    if !seen.insert(item.to_string()) {
                        fail(format!("duplicate value {item}"));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = BTreeSet::new();
                for item in items {
                    let key: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            let v = item
                                .get(*k)
                                .or_else(|| schema["items"]["properties"][*k].get("default"));
                            v.map(Value::to_string).unwrap_or_default()
                        })
                        .collect();
                    if !seen.insert(key.clone()) {
                        fail(format!("duplicate entry with keys {keys:?} = {key:?}"));
                    }
                }
            }
            _ => {}
        }
        for (i, item) in items.iter().enumerate() {
            check(item, &schema["items"], &format!("{path}[{i}]"), errors);
        }
        return;
    }
    if let Some(fields) = value.as_object() {
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    errors.push(format!("{}: {name}: Required value", path_or_root(path)));
                }
            }
        }
        let properties = schema["properties"].as_object();
        let additional = &schema["additionalProperties"];
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (name, field) in fields {
            let child = format!("{}{name}", if path.is_empty() { "" } else { "." });
            let child = format!("{path}{child}");
            if let Some(sub) = properties.and_then(|p| p.get(name)) {
                check(field, sub, &child, errors);
            } else if additional.is_object() {
                check(field, additional, &child, errors);
            } else if !preserve && (properties.is_some() || schema["type"] == "object") {
                // `metadata: {type: object}` is the API server's to judge.
                if !is_metadata(path) {
                    errors.push(format!("{child}: unknown field"));
                }
            }
        }
    }
}

fn is_metadata(path: &str) -> bool {
    path == "metadata" || path.starts_with("metadata.")
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}
