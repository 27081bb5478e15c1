//! Gateway API resources in, a validated `Snapshot` out: the resource
//! types, YAML loading with the CRD schema's checks, resolution as the
//! Gateway API spec describes it, status conditions, Maglev tables, and the
//! `Snapshot` whose types enforce its invariants. It must never do I/O
//! beyond reading the config file (no sockets, no threads, no clocks), and
//! nothing in it runs on the packet path: workers only read the snapshots
//! it builds.
mod backend_kinds;
mod depth;
pub mod dns;
pub mod duration;
mod excerpt;
pub mod health_spec;
pub mod load;
pub mod maglev;
mod meta;
pub mod pools;
mod read;
pub mod resolve;
pub mod resources;
mod schema;
mod service;
pub mod snapshot;
pub mod status;
pub mod traffic_spec;

pub use depth::MAX_DEPTH;
pub use load::{load_file, load_str, LoadError};
pub use read::{read_file, ReadError, MAX_FILE_BYTES};
pub use resolve::{plan_with, resolve, resolve_with, Diagnostic, Options, Planned, Resolution};
pub use resources::Resources;

/// Loads a file and resolves it: what a static deployment runs.
pub fn compile_file(
    path: impl AsRef<std::path::Path>,
    generation: u64,
) -> Result<Resolution, LoadError> {
    compile_file_with(path, generation, &Options::default())
}

/// `compile_file` with resolution options (the cluster domain).
pub fn compile_file_with(
    path: impl AsRef<std::path::Path>,
    generation: u64,
    options: &Options,
) -> Result<Resolution, LoadError> {
    let resources = load_file(path)?;
    let resolution = resolve_with(&resources, generation, options);
    refuse(&resources, &resolution)?;
    Ok(resolution)
}

/// The problems a file must not be loaded with, though resolution serves
/// around them: a listener asking its forwarding mode for what the mode
/// cannot do (translate ports in `dsr`, `ipip` or `gue`). Resolution alone
/// leaves that listener unserved, as a cluster's status would; a file is
/// refused at the object to blame, `FILE:LINE`, and a running config is
/// kept.
pub fn refuse(resources: &Resources, resolution: &Resolution) -> Result<(), LoadError> {
    let Some(diagnostic) = resolution
        .diagnostics
        .iter()
        .find(|d| d.reason == resolve::Reason::PortTranslationNotSupported)
    else {
        return Ok(());
    };
    let origin = resources.origin(&diagnostic.kind, &diagnostic.namespace, &diagnostic.name);
    Err(LoadError::Invalid {
        file: origin.map_or_else(|| "(config)".to_owned(), |o| o.file.clone()),
        line: origin.map_or(1, |o| o.line),
        object: Box::new(load::ObjectRef {
            kind: diagnostic.kind.clone(),
            namespace: (!diagnostic.namespace.is_empty()).then(|| diagnostic.namespace.clone()),
            name: Some(diagnostic.name.clone()),
        }),
        message: format!("{}: {}", diagnostic.reason, diagnostic.message),
    })
}
