//! `yard-vm lock`: pins what the registry offers now. Debian replaces a
//! kernel ABI package's version in place (security fixes) and, less often,
//! retires an ABI for a new one; this is how the lockfile follows. It only
//! queries apt's lists and rewrites the lockfile, never the cache.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::debs::{unique_suffix, Apt};
use super::lockfile::{self, Locked};

/// Rewrites the lockfile at `path` with the registry's candidate version
/// and sha256 of each package it names, keeping its comment header.
/// `kernel_package` replaces the file's `linux-image-*` package. Returns
/// one line per change.
pub fn relock(path: &Path, kernel_package: Option<&str>) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let old = old_entries(&text);
    let mut names: Vec<String> = old.iter().map(|(name, _, _)| name.clone()).collect();
    let mut changes = Vec::new();
    if let Some(kernel) = kernel_package {
        // The metapackages (`linux-image-cloud-amd64`) only depend on an
        // ABI package and hold no kernel themselves.
        let abi = kernel
            .strip_prefix("linux-image-")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if !lockfile::is_package_name(kernel) || !abi {
            bail!("{kernel:?} is not a kernel ABI package (linux-image-<version>-<flavour>)");
        }
        match names.iter_mut().find(|n| n.starts_with("linux-image-")) {
            Some(current) if current == kernel => {}
            Some(current) => {
                changes.push(format!("{current}: replaced by {kernel}"));
                *current = kernel.to_owned();
            }
            None => names.insert(0, kernel.to_owned()),
        }
    }
    if names.is_empty() {
        bail!("{} names no package to lock", path.display());
    }

    let mut apt = Apt::new();
    let mut locked = Vec::new();
    for name in names {
        let version = apt.candidate(&name)?;
        let sha256 = apt.registry_sha256(&name, &version)?;
        match old.iter().find(|(n, _, _)| *n == name) {
            None => changes.push(format!("{name}: added at {version}")),
            Some((_, old_version, _)) if *old_version != version => {
                changes.push(format!("{name}: {old_version} -> {version}"));
            }
            Some((_, _, old_sha)) if *old_sha != sha256 => {
                changes.push(format!("{name} {version}: sha256 {old_sha} -> {sha256}"));
            }
            Some(_) => {}
        }
        locked.push(Locked {
            name,
            version,
            sha256,
        });
    }

    let new_text = lockfile::render(&lockfile::header(&text), &locked);
    // What `build` will read must parse; a registry answer that does not is
    // caught here rather than at the next test run.
    lockfile::parse(&new_text, path).context("the rewritten lockfile does not parse")?;
    if new_text != text {
        let temp = path.with_extension(format!("lock.{}", unique_suffix()));
        std::fs::write(&temp, &new_text).with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(changes)
}

/// `(name, version, sha256)` of each entry line, with empty strings for
/// missing fields: an old file may hold placeholders.
fn old_entries(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?.to_owned();
            let version = fields.next().unwrap_or_default().to_owned();
            let sha256 = fields.next().unwrap_or_default().to_owned();
            Some((name, version, sha256))
        })
        .collect()
}
