//! Config input as `switchyard check` reads it: a YAML text loaded with the
//! CRD schema's checks, then resolved into a snapshot and statuses. A text
//! is data: it loads or is refused with a message naming where, and what
//! loads resolves (resolution never fails), to the same result every time,
//! with no condition type repeated in a status.

use switchyard_config::{load_str, resolve_with, Options, Resolution};

/// The file name loading errors are reported against.
const FILE: &str = "fuzz.yaml";

/// Input: the text of a config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let resources = match load_str(FILE, text) {
        Ok(resources) => resources,
        Err(err) => {
            assert_eq!(err.file(), FILE);
            let message = err.to_string();
            assert!(!message.is_empty());
            if let Some(line) = err.line() {
                // YAML breaks lines at CR, LF and CRLF (YAML 1.2 §5.4).
                let lines = text
                    .replace("\r\n", "\n")
                    .replace('\r', "\n")
                    .lines()
                    .count();
                assert!(
                    line >= 1 && line <= lines.max(1) + 1,
                    "line {line} of a {lines}-line text: {message}"
                );
            }
            return;
        }
    };
    let options = Options::default();
    let resolution = resolve_with(&resources, 1, &options);
    let repeated = resolution.repeated_condition_types();
    assert!(repeated.is_empty(), "{repeated:?}");
    report(&resolution);
    let again = resolve_with(&resources, 1, &options);
    assert_eq!(
        again.statuses, resolution.statuses,
        "resolution is not a function of its input"
    );
    assert_eq!(again.diagnostics, resolution.diagnostics);
}

/// What `check` prints: statuses, listeners with their backends, DNS.
fn report(resolution: &Resolution) {
    serde_json::to_string(&resolution.statuses).expect("statuses serialize");
    serde_json::to_string(resolution.snapshot.dns()).expect("DNS records serialize");
    for listener in resolution.snapshot.listeners().iter() {
        let _ = listener.name().to_string();
        for backend in listener.backends() {
            assert!(
                (backend.group as usize) < listener.groups().len(),
                "backend {} of {} names no group",
                backend.endpoint,
                listener.name()
            );
            assert!(backend.effective_weight.is_finite());
        }
    }
    for diagnostic in &resolution.diagnostics {
        let _ = diagnostic.to_string();
    }
}
