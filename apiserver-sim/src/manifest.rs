//! Multi-document YAML (JSON documents included) as objects to store:
//! what the test fixtures, the vendored conformance manifests and the
//! `yard-apiserver` command line hand the server.

use serde_json::Value;

use crate::kinds::Catalog;

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {document}: {message}")]
    Yaml { document: usize, message: String },
}

/// The documents of a manifest, split by whether the server serves them.
#[derive(Debug, Default)]
pub struct Manifest {
    pub served: Vec<Value>,
    /// `kind apiVersion namespace/name` of each document left out, and why.
    pub skipped: Vec<String>,
}

/// Reads every document of `text`; empty documents are ignored.
pub fn read(text: &str, catalog: &Catalog) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    for (at, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document_number = at + 1;
        let yaml_error = |message: String| ManifestError::Yaml {
            document: document_number,
            message,
        };
        let mut value: serde_norway::Value =
            serde::Deserialize::deserialize(document).map_err(|e| yaml_error(e.to_string()))?;
        value.apply_merge().map_err(|e| yaml_error(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let object: Value = serde_json::to_value(&value).map_err(|e| yaml_error(e.to_string()))?;
        if object
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
        {
            for item in object
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                classify(item.clone(), catalog, &mut manifest);
            }
            continue;
        }
        classify(object, catalog, &mut manifest);
    }
    Ok(manifest)
}

fn classify(object: Value, catalog: &Catalog, manifest: &mut Manifest) {
    let field = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (api_version, kind) = (field("/apiVersion"), field("/kind"));
    if catalog.by_type(api_version, kind).is_some() && !field("/metadata/name").is_empty() {
        manifest.served.push(object);
    } else {
        let namespace = match field("/metadata/namespace") {
            "" => String::new(),
            ns => format!("{ns}/"),
        };
        manifest.skipped.push(format!(
            "{kind} {api_version} {namespace}{}",
            field("/metadata/name")
        ));
    }
}
