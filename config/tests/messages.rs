//! Messages speak the config author's language: whatever value of the
//! wrong shape sits in whichever field of a real file, the refusal names
//! the field and the YAML shape it wanted, never a Rust type of
//! Switchyard's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "rs") {
            out.push(path);
        }
    }
}

/// The names of the structs and enums the config crate declares, minus
/// the Kubernetes kinds a message rightly names.
fn rust_type_names() -> BTreeSet<String> {
    let mut sources = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut sources,
    );
    let mut names = BTreeSet::new();
    for path in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        for word in ["struct ", "enum "] {
            for (at, _) in text.match_indices(word) {
                let name: String = text[at + word.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    names.insert(name);
                }
            }
        }
    }
    for kind in [
        "GatewayClass",
        "Gateway",
        "ReferenceGrant",
        "Service",
        "EndpointSlice",
        "Namespace",
        "TrafficPolicy",
        "ServiceImport",
        "EndpointSelector",
        "Pod",
        "AddressPool",
        "GatewayClassConfig",
        "Kind",
    ] {
        names.remove(kind);
    }
    assert!(names.contains("RouteSpecDoc") && names.contains("EndpointConditions"));
    names
}

/// Each `key: value` line of `text` with its value replaced by `shape`.
fn mutations<'a>(text: &'a str, shape: &'a str) -> impl Iterator<Item = String> + 'a {
    let lines: Vec<&str> = text.lines().collect();
    (0..lines.len()).filter_map(move |i| {
        let (key, _) = lines[i].split_once(':')?;
        if key.trim_start().starts_with('#') || key.trim().is_empty() {
            return None;
        }
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        out[i] = format!("{key}: {shape}");
        Some(out.join("\n") + "\n")
    })
}

#[test]
fn no_message_names_a_rust_type_whatever_shape_a_field_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    files(&root.join("examples"), &mut inputs);
    files(
        &root.join("tests/conformance/upstream/examples"),
        &mut inputs,
    );
    inputs.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    assert!(inputs.len() > 10, "{inputs:?}");
    let types = rust_type_names();
    let mut refused = 0;
    for path in &inputs {
        let text = std::fs::read_to_string(path).unwrap();
        for shape in ["5", "[x]", "{a: 1}", "\"text\"", "~"] {
            for mutated in mutations(&text, shape) {
                let Err(e) = switchyard_config::load_str("input.yaml", &mutated) else {
                    continue;
                };
                refused += 1;
                let message = e.to_string();
                let leaked: Vec<&String> = types
                    .iter()
                    .filter(|t| {
                        message
                            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                            .any(|w| w == t.as_str())
                    })
                    .collect();
                assert!(
                    leaked.is_empty(),
                    "{}: {message} names {leaked:?}",
                    path.display()
                );
                assert!(message.starts_with("input.yaml:"), "{message}");
            }
        }
    }
    assert!(refused > 100, "only {refused} mutations were refused");
}
