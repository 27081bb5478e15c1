//! The guest image: a kernel and an initramfs built from the Debian
//! packages pinned in `vm-tests/vm/packages.lock` and the project's release
//! binaries, cached under `target/vm/`.

pub mod cpio;
pub mod lockfile;
pub mod modules;

use std::path::PathBuf;

use anyhow::Result;

/// What goes into a guest besides the locked packages.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Host executables, installed as `/usr/bin/<file name>` without debug
    /// info, with the shared libraries they load at their host paths.
    pub executables: Vec<PathBuf>,
    /// Kernel modules loaded at boot, by name (`virtio_net`); their
    /// dependencies are added and loaded first.
    pub modules: Vec<String>,
}

/// A built guest.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel (`vmlinuz`) for `qemu -kernel`.
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio) for `qemu -initrd`.
    pub initrd: PathBuf,
    /// `uname -r` inside the guest.
    pub kernel_release: String,
    /// Hex sha256 over every input; the image's folder is named after it.
    pub key: String,
}

impl ImageSpec {
    /// An LB guest: `switchyard` and `yardctl` from the release build, and
    /// the virtio-net driver.
    pub fn lb_guest() -> Result<ImageSpec> {
        Ok(ImageSpec {
            executables: vec![crate::process::switchyard_bin()?, crate::process::yardctl_bin()?],
            modules: vec!["virtio_pci".into(), "virtio_net".into()],
        })
    }
}

/// Builds (or finds in the cache) the image for `spec`.
pub fn build(spec: &ImageSpec) -> Result<Image> {
    let _ = spec;
    anyhow::bail!("guest images are not built yet")
}
