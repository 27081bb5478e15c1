//! A bpffs of a test's own, for daemons that pin their XDP program
//! (`--pin-dir`): bpffs is global to the host, so a test never pins in the
//! host's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// A bpffs mounted on a fresh directory in the test's own mount
/// namespace (the daemons see it through `ip netns exec`, which copies the
/// mount table), unmounted on drop: that drops whatever is still pinned,
/// so the program leaves the interfaces even when the test fails.
pub struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    pub fn mount() -> Result<Bpffs> {
        let dir = std::env::temp_dir().join(format!(
            "swy-bpffs-{}-{}",
            std::process::id(),
            crate::netns::next_id()
        ));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mount -t bpf bpf {}: {status}",
            dir.display()
        );
        Ok(Bpffs { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
