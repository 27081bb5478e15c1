//! Locked `.deb`s from the registry, verified and unpacked, through apt's
//! own clients (`apt-get download`, `apt-cache`, `dpkg-deb`). Everything it
//! keeps is checked against the lockfile's sha256 before use, and written
//! under a temporary name first, so neither a broken download nor a
//! half-unpacked tree is ever taken from the cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::lockfile::Locked;
use crate::process::{run_with_timeout, Output};

/// The kernel package is ~27 MB; a slow mirror still finishes well inside.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
const UNPACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The file the unpacked tree records its `.deb`'s sha256 in.
const UNPACKED_STAMP: &str = ".yard-deb-sha256";

/// apt's clients, refreshing the package lists at most once: a fresh
/// machine may have none, but a real miss should not cost an update per
/// package.
#[derive(Debug, Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn new() -> Apt {
        Apt::default()
    }

    /// Runs `apt-get update -qq` unless this `Apt` already did; says
    /// whether it ran.
    fn update_once(&mut self, why: &str) -> Result<bool> {
        if self.updated {
            return Ok(false);
        }
        self.updated = true;
        let mut cmd = Command::new("apt-get");
        cmd.args(["update", "-qq"]);
        let out = run_with_timeout(&mut cmd, UPDATE_TIMEOUT)
            .with_context(|| format!("refreshing apt's package lists ({why})"))?;
        if !out.status.success() {
            bail!(
                "`apt-get update` failed ({}) while looking for {why}: {}",
                out.status,
                out.stderr.trim()
            );
        }
        Ok(true)
    }

    /// The `.deb` of `pkg` in `debs_dir`, verified: the cached one if its
    /// sha256 matches, else a fresh download.
    pub fn fetch(&mut self, pkg: &Locked, debs_dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(debs_dir)
            .with_context(|| format!("creating {}", debs_dir.display()))?;
        let cached = debs_dir.join(deb_file_name(pkg));
        if cached.is_file() {
            if sha256_file(&cached)? == pkg.sha256 {
                return Ok(cached);
            }
            // Another lock of the same version, or a damaged file: either
            // way it is not what this lock pins.
            std::fs::remove_file(&cached)
                .with_context(|| format!("removing stale {}", cached.display()))?;
        }
        let part = debs_dir.join(format!(".part-{}", unique_suffix()));
        std::fs::create_dir(&part).with_context(|| format!("creating {}", part.display()))?;
        let fetched = self.download_into(pkg, &part).and_then(|deb| {
            let actual = sha256_file(&deb)?;
            if actual != pkg.sha256 {
                bail!(
                    "broken download of {pkg}: the lockfile pins sha256 {}, the registry served {actual}",
                    pkg.sha256
                );
            }
            std::fs::rename(&deb, &cached)
                .with_context(|| format!("moving the .deb of {pkg} to {}", cached.display()))
        });
        let cleaned = std::fs::remove_dir_all(&part);
        fetched?;
        cleaned.with_context(|| format!("removing {}", part.display()))?;
        Ok(cached)
    }

    fn download_into(&mut self, pkg: &Locked, dir: &Path) -> Result<PathBuf> {
        let mut out = download(pkg, dir)?;
        if !out.status.success() && self.update_once(&format!("{pkg}"))? {
            out = download(pkg, dir)?;
        }
        if !out.status.success() {
            let stderr = out.stderr.trim();
            if is_not_found(stderr) {
                bail!(
                    "the registry has no {} version {}: run `yard-vm lock` to pin what it \
                     offers now (apt-get said: {stderr})",
                    pkg.name,
                    pkg.version
                );
            }
            bail!(
                "`apt-get download {}={}` failed ({}): {stderr}",
                pkg.name,
                pkg.version,
                out.status
            );
        }
        let mut debs = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "deb") {
                debs.push(path);
            }
        }
        match <[PathBuf; 1]>::try_from(debs) {
            Ok([deb]) => Ok(deb),
            Err(debs) => bail!(
                "`apt-get download` of {pkg} left {} .deb files instead of one",
                debs.len()
            ),
        }
    }

    /// The registry's candidate version of `name` (`apt-cache policy`).
    pub fn candidate(&mut self, name: &str) -> Result<String> {
        let mut found = policy_candidate(name)?;
        if found.is_none() && self.update_once(name)? {
            found = policy_candidate(name)?;
        }
        found.with_context(|| format!("the registry offers no version of {name}"))
    }

    /// The sha256 the registry publishes for `name` at `version`
    /// (`apt-cache show`).
    pub fn registry_sha256(&mut self, name: &str, version: &str) -> Result<String> {
        let out = query(&["show", &format!("{name}={version}")])?;
        let sha = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("SHA256:"))
            .map(|s| s.trim().to_ascii_lowercase());
        match sha {
            Some(sha) if out.status.success() => Ok(sha),
            _ => bail!(
                "`apt-cache show {name}={version}` gives no SHA256: {}",
                out.stderr.trim()
            ),
        }
    }
}

fn download(pkg: &Locked, dir: &Path) -> Result<Output> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir).arg("download").arg("-q");
    if nix::unistd::geteuid().is_root() {
        // As root apt drops to _apt, which cannot write into a directory
        // root made, and warns.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{}={}", pkg.name, pkg.version));
    run_with_timeout(&mut cmd, DOWNLOAD_TIMEOUT)
        .with_context(|| format!("downloading {pkg} with apt-get"))
}

/// apt-get's ways of saying the lists have no such package or version.
fn is_not_found(stderr: &str) -> bool {
    [
        "Unable to locate package",
        "was not found",
        "Can't find a source to download",
        "Couldn't find any package",
        "No packages found",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

fn query(args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(args);
    run_with_timeout(&mut cmd, QUERY_TIMEOUT).with_context(|| format!("running apt-cache {args:?}"))
}

fn policy_candidate(name: &str) -> Result<Option<String>> {
    let out = query(&["policy", name])?;
    if !out.status.success() {
        bail!(
            "`apt-cache policy {name}` failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
        .map(str::to_owned))
}

/// `<name>_<version>.deb`, the epoch's `:` spelled `%3a` as apt does.
fn deb_file_name(pkg: &Locked) -> String {
    format!("{}_{}.deb", pkg.name, pkg.version.replace(':', "%3a"))
}

/// The `.deb` unpacked into `<pkgs_dir>/<name>_<version>/`, reused when
/// its stamp names the same sha256.
pub fn unpack(pkg: &Locked, deb: &Path, pkgs_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(pkgs_dir)
        .with_context(|| format!("creating {}", pkgs_dir.display()))?;
    let dest = pkgs_dir.join(format!("{}_{}", pkg.name, pkg.version));
    if has_stamp(&dest, &pkg.sha256) {
        return Ok(dest);
    }
    let part = pkgs_dir.join(format!(".part-{}", unique_suffix()));
    let unpacked = unpack_into(pkg, deb, &part).and_then(|()| {
        // Another process unpacked the same .deb meanwhile and may be
        // reading it: keep its tree, drop this one.
        if has_stamp(&dest, &pkg.sha256) {
            return Ok(());
        }
        if dest.exists() {
            // The tree of another .deb of this version: the lock's hash
            // changed since it was unpacked.
            let stale = pkgs_dir.join(format!(".stale-{}", unique_suffix()));
            if std::fs::rename(&dest, &stale).is_ok() {
                std::fs::remove_dir_all(&stale)
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
        }
        match std::fs::rename(&part, &dest) {
            Ok(()) => Ok(()),
            // Another process unpacked the same .deb first; its tree is as
            // good as this one.
            Err(_) if has_stamp(&dest, &pkg.sha256) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("moving the unpacked {pkg} to {}", dest.display()))
            }
        }
    });
    if part.exists() {
        std::fs::remove_dir_all(&part).with_context(|| format!("removing {}", part.display()))?;
    }
    unpacked?;
    Ok(dest)
}

fn has_stamp(dir: &Path, sha256: &str) -> bool {
    std::fs::read_to_string(dir.join(UNPACKED_STAMP)).is_ok_and(|s| s.trim() == sha256)
}

fn unpack_into(pkg: &Locked, deb: &Path, part: &Path) -> Result<()> {
    std::fs::create_dir(part).with_context(|| format!("creating {}", part.display()))?;
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(deb).arg(part);
    let out =
        run_with_timeout(&mut cmd, UNPACK_TIMEOUT).with_context(|| format!("unpacking {pkg}"))?;
    if !out.status.success() {
        bail!(
            "`dpkg-deb -x` of {pkg} failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    let stamp = part.join(UNPACKED_STAMP);
    std::fs::write(&stamp, format!("{}\n", pkg.sha256))
        .with_context(|| format!("writing {}", stamp.display()))
}

/// Hex sha256 of a file's bytes, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unique among the processes and threads on this machine, for temporary
/// names next to the final ones.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness matters, not order with other memory.
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
