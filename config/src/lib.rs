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
mod excerpt;
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
    Ok(resolve_with(&resources, generation, options))
}
