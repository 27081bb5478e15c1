//! What the guest takes from the host: the spec's executables, stripped of
//! debug info, and the shared libraries they load, found with `ldd` and
//! placed at the paths the dynamic loader will look for them. It reads the
//! host's files and never changes them.

use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::run_with_timeout;

const LDD_TIMEOUT: Duration = Duration::from_secs(60);
/// objcopy of a ~90 MB binary takes a few seconds; leave room for a loaded
/// machine.
const STRIP_TIMEOUT: Duration = Duration::from_secs(300);
/// Linux's own bound on a chain of symlinks (include/linux/namei.h, MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// One piece of a library's path as the guest must see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LibEntry {
    /// A real file, copied from the same host path.
    File(PathBuf),
    /// A symlink at `path` whose text is `target`, as on the host.
    Symlink { path: PathBuf, target: PathBuf },
}

/// The libraries `exe` loads (its whole `ldd` closure), each with the
/// symlinks that lead to it. Sorted and without duplicates.
pub fn libraries(exe: &Path) -> Result<Vec<LibEntry>> {
    let mut cmd = Command::new("ldd");
    cmd.arg(exe);
    let out = run_with_timeout(&mut cmd, LDD_TIMEOUT)
        .with_context(|| format!("listing the libraries of {}", exe.display()))?;
    if !out.status.success() {
        // ldd fails on a static executable, which needs no libraries.
        if out.stdout.contains("not a dynamic executable")
            || out.stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "`ldd {}` failed ({}): {}",
            exe.display(),
            out.status,
            out.stderr.trim()
        );
    }
    let mut entries = Vec::new();
    for path in ldd_paths(&out.stdout).with_context(|| format!("`ldd {}`", exe.display()))? {
        entries.extend(resolve(&path)?);
    }
    entries.sort();
    entries.dedup();
    Ok(entries)
}

/// The absolute paths in `ldd` output. Lines are `name => /path (0x..)`,
/// `/path (0x..)` (the loader) or `name (0x..)` (the vDSO, no file).
fn ldd_paths(stdout: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("the library {} is not found", name.trim());
                }
                target
            }
            None => line,
        };
        let path = target.split(" (0x").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// `path` followed through its symlinks: each link as it is, then the real
/// file. Only the last component is followed, so a file found under the
/// host's `/lib` keeps that path even where `/lib` is itself a link to
/// `usr/lib`: the guest has real directories.
fn resolve(path: &Path) -> Result<Vec<LibEntry>> {
    let mut entries = Vec::new();
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        let meta = std::fs::symlink_metadata(&current)
            .with_context(|| format!("looking at the library {}", current.display()))?;
        if !meta.file_type().is_symlink() {
            if !meta.is_file() {
                bail!("the library {} is not a regular file", current.display());
            }
            entries.push(LibEntry::File(current));
            return Ok(entries);
        }
        let target = std::fs::read_link(&current)
            .with_context(|| format!("reading the link {}", current.display()))?;
        let next = normalize(&current.parent().unwrap_or(Path::new("/")).join(&target));
        entries.push(LibEntry::Symlink {
            path: current,
            target,
        });
        current = next;
    }
    bail!(
        "the library {} is behind more than {MAX_SYMLINKS} symlinks",
        path.display()
    )
}

/// `a/b/../c` as `a/c`, without asking the file system (whose answer for
/// `..` would depend on the host's own links).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `objcopy --strip-debug` of `exe` into `dest`: the release binaries
/// carry ~90 MB of DWARF the guest never reads.
pub fn strip_debug(exe: &Path, dest: &Path) -> Result<()> {
    let mut cmd = Command::new("objcopy");
    cmd.arg("--strip-debug").arg(exe).arg(dest);
    let out = run_with_timeout(&mut cmd, STRIP_TIMEOUT)
        .with_context(|| format!("stripping {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "`objcopy --strip-debug {}` failed ({}): {}",
            exe.display(),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_library_and_loader_paths_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f15)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f15)\n";
        assert_eq!(
            ldd_paths(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn a_library_not_found_is_an_error_naming_it() {
        let err = ldd_paths("\tlibgone.so.1 => not found\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("libgone.so.1"), "{err}");
    }

    #[test]
    fn normalize_folds_dot_dot_lexically() {
        assert_eq!(
            normalize(Path::new("/lib64/../lib/./x.so")),
            PathBuf::from("/lib/x.so")
        );
    }
}
