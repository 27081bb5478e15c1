//! Gateway API resources in, a validated `Snapshot` out. Pure: no sockets,
//! no threads, no clocks.
mod backend_kinds;
pub mod dns;
pub mod load;
pub mod maglev;
pub mod pools;
pub mod resolve;
pub mod resources;
mod schema;
pub mod snapshot;
pub mod status;

pub use load::{load_file, load_str, LoadError};
pub use resolve::{resolve, resolve_with, Diagnostic, Options, Resolution};
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
