//! Where the steering program's link and maps are pinned in bpffs, so that
//! it keeps forwarding cached flows while no daemon runs and a new daemon
//! (the same version or a newer one) takes it over instead of starting
//! from nothing.
//!
//! One directory per node instance (the daemon adds its network namespace
//! to the path, since bpffs is global to the host):
//!
//! ```text
//! <dir>/links/<ifname>                 the bpf_link of each interface
//! <dir>/maps-<layout>-<capacity>/<map> every map of the program
//! ```
//!
//! `<layout>` is a hash of the C headers that define the maps and their
//! structs (build.rs), `<capacity>` the flow caches' size: a build whose
//! maps differ in any way finds no directory of its own, creates fresh
//! maps and never reads the old ones. Links do not depend on the layout:
//! a newer program replaces the old one on the same link atomically
//! (`bpf_link_update`), whatever its maps. This module names paths and
//! removes pins; it never loads or attaches anything (`Steering` does).

use std::{
    ffi::CString,
    fs, io,
    os::{fd::AsFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

/// The hash of the map definitions this build was compiled with.
pub const MAP_LAYOUT: &str = env!("SWITCHYARD_MAP_LAYOUT");

/// `BPF_FS_MAGIC` of include/uapi/linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where a node instance's pins live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pin of the link that runs the program on `ifname`.
    pub fn link(&self, ifname: &str) -> PathBuf {
        self.root.join("links").join(ifname)
    }

    /// The directory of this build's maps with flow caches of `capacity`.
    pub fn maps(&self, capacity: u32) -> PathBuf {
        self.root.join(maps_dir_name(capacity))
    }

    /// The interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        match fs::read_dir(self.root.join("links")) {
            Ok(entries) => {
                for entry in entries {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        names.sort();
        Ok(names)
    }

    /// Map directories other than `keep` (those of other layouts or
    /// capacities), to remove once nothing runs on them.
    pub fn other_maps(&self, keep: &Path) -> io::Result<Vec<PathBuf>> {
        let mut other = Vec::new();
        match fs::read_dir(&self.root) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    let is_maps = path
                        .file_name()
                        .is_some_and(|name| name.as_bytes().starts_with(b"maps-"));
                    if is_maps && path != keep {
                        other.push(path);
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(other)
    }

    /// The config generation the running program's maps of `capacity`
    /// last published, if they exist: a daemon taking them over numbers
    /// its own past it, so no cache entry of the previous daemon carries
    /// an epoch the new one publishes.
    pub fn published_generation(&self, capacity: u32) -> Option<u64> {
        let map = aya::maps::MapData::from_pin(self.maps(capacity).join("fast_state")).ok()?;
        let mut value = [0u8; 8];
        let key = crate::consts::FAST_STATE_GENERATION.to_ne_bytes();
        let found = crate::bpf_sys::lookup(map.fd().as_fd(), &key, &mut value).ok()?;
        found.then_some(u64::from_ne_bytes(value))
    }

    /// Removes every pin and directory under the root, and the root.
    /// A link whose pin goes and whose fd no process holds leaves its
    /// interface; maps go with the last program or fd that uses them.
    pub fn remove_all(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// `maps-<layout>-<capacity>`.
pub fn maps_dir_name(capacity: u32) -> String {
    format!("maps-{MAP_LAYOUT}-{capacity}")
}

/// Makes sure `dir` can hold pins: its nearest existing ancestor must be on
/// a bpffs. Under /sys/fs/bpf, the conventional mount point, a missing
/// bpffs is mounted there first (as Cilium's agent does); anywhere else it
/// is an error naming the path. Creates `dir` and its parents.
pub fn prepare(dir: &Path) -> io::Result<()> {
    let conventional = Path::new("/sys/fs/bpf");
    if dir.starts_with(conventional) && !is_bpffs(conventional)? {
        mount_bpffs(conventional)?;
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !is_bpffs(existing)? {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is not on a bpffs (mount one: mount -t bpf bpf DIR)",
                existing.display()
            ),
        ));
    }
    fs::create_dir_all(dir)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = c_path(path)?;
    // SAFETY: statfs is plain old data, fully written by a successful call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stat` is
    // a valid, writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    fs::create_dir_all(at)?;
    let target = c_path(at)?;
    let kind = c"bpf";
    let options = c"mode=0700";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let done = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if done != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("mounting bpffs at {}: {err}", at.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_another_capacity_or_layout_live_apart() {
        let pins = PinDir::new("/sys/fs/bpf/switchyard/netns-1");
        assert_ne!(pins.maps(1024), pins.maps(2048));
        assert!(pins.maps(1024).ends_with(format!("maps-{MAP_LAYOUT}-1024")));
        assert_eq!(
            pins.link("eth0"),
            Path::new("/sys/fs/bpf/switchyard/netns-1/links/eth0")
        );
    }

    #[test]
    fn the_layout_hash_is_sixteen_hex_digits() {
        assert_eq!(MAP_LAYOUT.len(), 16);
        assert!(MAP_LAYOUT.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
