//! `yard-fuzz-seed TARGET DIR [CONFIG_DIR...]`: writes the seed corpus of
//! TARGET into DIR (created if missing; files already there stay), reading
//! config seeds also from each CONFIG_DIR. `make fuzz` runs it before each
//! target.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, dir, extra @ ..] = args.as_slice() else {
        bail!("usage: yard-fuzz-seed TARGET DIR [CONFIG_DIR...]");
    };
    if !switchyard_fuzz::TARGETS
        .iter()
        .any(|(name, _)| name == target)
    {
        let names: Vec<&str> = switchyard_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        bail!(
            "no fuzz target {target:?}; the targets are {}",
            names.join(", ")
        );
    }
    let extra: Vec<PathBuf> = extra.iter().map(PathBuf::from).collect();
    fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let seeds = switchyard_fuzz::seeds::seeds(target, &extra);
    for (name, bytes) in &seeds {
        let path = PathBuf::from(dir).join(format!("seed-{name}"));
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{target}: {} seeds in {dir}", seeds.len());
    Ok(())
}
