//! Gateway API resources in, a validated `Snapshot` out. Pure: no sockets,
//! no threads, no clocks.
mod backend_kinds;
pub mod dns;
pub mod load;
pub mod maglev;
pub mod resolve;
pub mod resources;
mod schema;
pub mod snapshot;
pub mod status;

pub use load::{load_file, load_str, LoadError};
pub use resolve::{resolve, Diagnostic, Resolution};
pub use resources::Resources;

/// Loads a file and resolves it: what a static deployment runs.
pub fn compile_file(
    path: impl AsRef<std::path::Path>,
    generation: u64,
) -> Result<Resolution, LoadError> {
    let resources = load_file(path)?;
    Ok(resolve(&resources, generation))
}
