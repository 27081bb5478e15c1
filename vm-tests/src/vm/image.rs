//! The guest image: a kernel and an initramfs built from the Debian
//! packages pinned in `vm-tests/vm/packages.lock` and the project's release
//! binaries, cached under `target/vm/`. It owns the cache's layout and the
//! image key; it never boots anything (that is [`super::qemu`]) and never
//! installs packages on the host: `.deb`s are only downloaded and unpacked.
//!
//! An image is a pure function of its inputs: the same lockfile, `/init`,
//! module list, executables and libraries give byte-identical files, and
//! the sha256 over those inputs names the image's folder, so a cached image
//! is reused without fetching or unpacking anything.

pub mod cpio;
pub mod debs;
pub mod host;
pub mod lockfile;
pub mod modules;
pub mod relock;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use cpio::{Archive, DATA, EXECUTABLE};
use debs::{hex, sha256_file, unique_suffix, Apt};
use host::LibEntry;
use lockfile::Locked;
use modules::ModuleTree;

/// Changes whenever the builder would lay out the same inputs differently,
/// so that older cached images are not taken for new ones.
const FORMAT: &str = "switchyard guest image, newc initramfs, v1";
/// Images kept in `target/vm/images/`: the lb and bench guests and one
/// being replaced.
const KEEP_IMAGES: usize = 3;
/// A `.part-` folder this old is left over from a build that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
/// Where the host keeps nftables' CLI, for the bench guest's baseline.
const HOST_NFT: &str = "/usr/sbin/nft";
/// Directories the guest's `/init` and its programs expect to exist.
const GUEST_DIRS: [&str; 8] = ["proc", "sys", "dev", "tmp", "run", "etc", "usr/bin", "root"];
/// The guest path of the load-order list the init script reads.
const MODULE_LIST: &str = "etc/yard/modules";

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
            executables: vec![
                crate::process::switchyard_bin()?,
                crate::process::yardctl_bin()?,
            ],
            modules: vec!["virtio_pci".into(), "virtio_net".into()],
        })
    }

    /// The benchmark's guest: an LB guest plus the traffic tools, and what
    /// the nftables DNAT baseline needs (`perf/src/netbench.rs`,
    /// `nftables_rules`: a nat chain, `dnat`, `numgen`, verdict maps).
    pub fn bench_guest() -> Result<ImageSpec> {
        let mut spec = ImageSpec::lb_guest()?
            .with_executable(crate::process::release_bin("yard-hairpin")?)
            .with_executable(crate::process::release_bin("yard-pktgen")?)
            .with_executable(crate::process::release_bin("yard-xdp-limit")?);
        if Path::new(HOST_NFT).is_file() {
            spec = spec.with_executable(HOST_NFT);
        }
        for module in [
            "nf_tables",
            "nft_chain_nat",
            "nft_nat",
            "nft_numgen",
            "nf_conntrack",
            "nf_nat",
        ] {
            spec = spec.with_module(module);
        }
        Ok(spec)
    }

    /// The spec with one more executable.
    pub fn with_executable(mut self, path: impl Into<PathBuf>) -> ImageSpec {
        self.executables.push(path.into());
        self
    }

    /// The spec with one more kernel module.
    pub fn with_module(mut self, name: impl Into<String>) -> ImageSpec {
        self.modules.push(name.into());
        self
    }
}

/// Where the builder reads its inputs and keeps its cache.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `vm-tests/vm/packages.lock`.
    pub lockfile: PathBuf,
    /// `vm-tests/vm/init`.
    pub init: PathBuf,
    /// `target/vm/`: `debs/`, `pkgs/`, `bin/` and `images/` below it.
    pub cache: PathBuf,
}

impl Paths {
    /// The workspace's lockfile, init script and `target/vm/`.
    pub fn workspace() -> Paths {
        let root = crate::process::workspace_root();
        Paths {
            lockfile: root.join("vm-tests/vm/packages.lock"),
            init: root.join("vm-tests/vm/init"),
            cache: root.join("target/vm"),
        }
    }

    /// Downloaded, verified `.deb`s.
    pub fn debs(&self) -> PathBuf {
        self.cache.join("debs")
    }

    /// Unpacked packages, `<name>_<version>/`.
    pub fn pkgs(&self) -> PathBuf {
        self.cache.join("pkgs")
    }

    /// Executables stripped of debug info.
    pub fn bin(&self) -> PathBuf {
        self.cache.join("bin")
    }

    /// Built images, `<key>/`.
    pub fn images(&self) -> PathBuf {
        self.cache.join("images")
    }
}

/// Builds (or finds in the cache) the image for `spec`.
pub fn build(spec: &ImageSpec) -> Result<Image> {
    build_in(spec, &Paths::workspace())
}

/// [`build`] with explicit inputs and cache.
pub fn build_in(spec: &ImageSpec, paths: &Paths) -> Result<Image> {
    let inputs = Inputs::gather(spec, paths)?;
    let images = paths.images();
    let dir = images.join(&inputs.key);
    if let Some(image) = cached(&dir, &inputs.key)? {
        // The newest images survive pruning: a reused one counts as new.
        let _ = std::fs::File::open(&dir).and_then(|d| d.set_modified(SystemTime::now()));
        return Ok(image);
    }
    eprintln!(
        "building guest image {} ({} executables, {} modules wanted; none cached in {} for these inputs)",
        inputs.key,
        inputs.executables.len(),
        spec.modules.len(),
        images.display()
    );
    let image = assemble(&inputs, paths, &dir)?;
    if let Err(e) = prune(&images, &inputs.key) {
        eprintln!(
            "warning: pruning old guest images in {}: {e:#}",
            images.display()
        );
    }
    Ok(image)
}

/// The key [`build_in`] would give `spec`'s image, without building it.
pub fn key_in(spec: &ImageSpec, paths: &Paths) -> Result<String> {
    Ok(Inputs::gather(spec, paths)?.key)
}

/// Everything an image is made of that can be known without the packages;
/// enough to compute the key.
#[derive(Debug)]
struct Inputs {
    lockfile: Vec<u8>,
    locked: Vec<Locked>,
    init: Vec<u8>,
    modules: Vec<String>,
    /// By guest file name.
    executables: BTreeMap<String, PathBuf>,
    libraries: BTreeSet<LibEntry>,
    key: String,
}

impl Inputs {
    fn gather(spec: &ImageSpec, paths: &Paths) -> Result<Inputs> {
        let (lockfile, locked) = lockfile::read(&paths.lockfile)?;
        let init = std::fs::read(&paths.init)
            .with_context(|| format!("reading the guest's init script {}", paths.init.display()))?;
        let mut executables = BTreeMap::new();
        let mut libraries = BTreeSet::new();
        for exe in &spec.executables {
            if !exe.is_file() {
                bail!("the guest's executable {} is not a file", exe.display());
            }
            let name = exe
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no usable file name", exe.display()))?;
            if let Some(other) = executables.insert(name.to_owned(), exe.clone()) {
                bail!(
                    "{} and {} would both be /usr/bin/{name} in the guest",
                    other.display(),
                    exe.display()
                );
            }
            libraries.extend(host::libraries(exe)?);
        }
        let mut inputs = Inputs {
            lockfile,
            locked,
            init,
            modules: spec.modules.clone(),
            executables,
            libraries,
            key: String::new(),
        };
        inputs.key = inputs.compute_key()?;
        Ok(inputs)
    }

    /// Each field is tagged and length-prefixed, so no two different
    /// input sets hash the same bytes.
    fn compute_key(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            hasher.update(tag.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field("format", FORMAT.as_bytes());
        field("lockfile", &self.lockfile);
        field("init", &self.init);
        for module in &self.modules {
            field("module", module.as_bytes());
        }
        for (name, path) in &self.executables {
            field("executable", name.as_bytes());
            field("sha256", sha256_file(path)?.as_bytes());
        }
        for lib in &self.libraries {
            match lib {
                LibEntry::File(path) => {
                    field("library", path.as_os_str().as_encoded_bytes());
                    field("sha256", sha256_file(path)?.as_bytes());
                }
                LibEntry::Symlink { path, target } => {
                    field("link", path.as_os_str().as_encoded_bytes());
                    field("target", target.as_os_str().as_encoded_bytes());
                }
            }
        }
        Ok(hex(&hasher.finalize()))
    }
}

/// The image in `dir`, if a build finished there. Builds appear by rename,
/// so a folder under its final name is complete.
fn cached(dir: &Path, key: &str) -> Result<Option<Image>> {
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
        kernel_release: String::new(),
        key: key.to_owned(),
    };
    if !(image.kernel.is_file() && image.initrd.is_file()) {
        return Ok(None);
    }
    let release_path = dir.join("release");
    let Ok(release) = std::fs::read_to_string(&release_path) else {
        return Ok(None);
    };
    let kernel_release = release.trim().to_owned();
    if kernel_release.is_empty() {
        bail!("{} is empty", release_path.display());
    }
    Ok(Some(Image {
        kernel_release,
        ..image
    }))
}

/// The locked packages, fetched and unpacked, with the roles the image
/// needs from them.
struct Packages {
    kernel: PathBuf,
    release: String,
    modules_dir: PathBuf,
    busybox: PathBuf,
}

fn packages(locked: &[Locked], paths: &Paths) -> Result<Packages> {
    let mut apt = Apt::new();
    let mut roots = Vec::new();
    for pkg in locked {
        let deb = apt
            .fetch(pkg, &paths.debs())
            .with_context(|| format!("fetching {pkg}"))?;
        let root =
            debs::unpack(pkg, &deb, &paths.pkgs()).with_context(|| format!("unpacking {pkg}"))?;
        roots.push((pkg, root));
    }
    let kernels: Vec<_> = roots
        .iter()
        .filter(|(pkg, _)| pkg.name.starts_with("linux-image-"))
        .collect();
    let [(kernel_pkg, kernel_root)] = kernels[..] else {
        bail!(
            "the lockfile must lock exactly one linux-image-* package, it locks {}",
            kernels.len()
        );
    };
    let boot = kernel_root.join("boot");
    let mut vmlinuz = Vec::new();
    for entry in std::fs::read_dir(&boot).with_context(|| format!("listing {}", boot.display()))? {
        let name = entry
            .with_context(|| format!("listing {}", boot.display()))?
            .file_name();
        if let Some(release) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            vmlinuz.push(release.to_owned());
        }
    }
    let [release] = &vmlinuz[..] else {
        bail!(
            "{kernel_pkg} has {} boot/vmlinuz-* files, expected one",
            vmlinuz.len()
        );
    };
    let modules_dir = kernel_root.join("lib/modules").join(release);
    if !modules_dir.is_dir() {
        bail!("{kernel_pkg} has no lib/modules/{release}/");
    }
    let busybox = roots
        .iter()
        .map(|(_, root)| root.join("bin/busybox"))
        .find(|path| path.is_file())
        .context("no locked package has bin/busybox: lock busybox-static")?;
    Ok(Packages {
        kernel: boot.join(format!("vmlinuz-{release}")),
        release: release.clone(),
        modules_dir,
        busybox,
    })
}

/// Builds the image into a temporary folder next to `dir` and renames it
/// into place.
fn assemble(inputs: &Inputs, paths: &Paths, dir: &Path) -> Result<Image> {
    let pkgs = packages(&inputs.locked, paths)?;
    let tree = ModuleTree::open(&pkgs.modules_dir)?;
    let order = tree.load_order(&inputs.modules)?;

    let images = paths.images();
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let part = images.join(format!(".part-{}", unique_suffix()));
    std::fs::create_dir(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut stripped = Vec::new();
    let written = write_image(inputs, paths, &pkgs, &tree, &order, &part, &mut stripped);
    let moved = written.and_then(|()| match std::fs::rename(&part, dir) {
        Ok(()) => Ok(()),
        // Another process finished the same image first; it is identical.
        Err(_) if dir.join("release").is_file() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("moving the image to {}", dir.display())),
    });
    let bin = paths.bin();
    for (name, temp) in stripped {
        // Kept for a look at what the guest runs; the image has its copy.
        if moved.is_ok() {
            let _ = std::fs::rename(&temp, bin.join(name));
        }
        let _ = std::fs::remove_file(&temp);
    }
    if part.exists() {
        let _ = std::fs::remove_dir_all(&part);
    }
    moved?;
    cached(dir, &inputs.key)?
        .with_context(|| format!("the image in {} is incomplete", dir.display()))
}

fn write_image(
    inputs: &Inputs,
    paths: &Paths,
    pkgs: &Packages,
    tree: &ModuleTree,
    order: &[String],
    part: &Path,
    stripped: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let mut archive = Archive::new();
    for dir in GUEST_DIRS {
        archive.dir(dir)?;
    }
    archive.bytes("init", EXECUTABLE, inputs.init.clone())?;
    archive.file("bin/busybox", EXECUTABLE, pkgs.busybox.clone())?;

    let guest_modules = format!("lib/modules/{}", pkgs.release);
    let mut list = String::new();
    for module in order {
        let ko = tree
            .file(module)
            .with_context(|| format!("kernel module {module} vanished"))?;
        let file_name = ko
            .file_name()
            .and_then(|n| n.to_str())
            .context("module file name")?;
        let guest = format!("{guest_modules}/{file_name}");
        archive.file(&guest, DATA, ko.to_path_buf())?;
        list.push_str(&format!("/{guest}\n"));
    }
    archive.bytes(MODULE_LIST, DATA, list.into_bytes())?;

    let bin = paths.bin();
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for (name, exe) in &inputs.executables {
        let temp = bin.join(format!(".part-{}-{name}", unique_suffix()));
        stripped.push((name.clone(), temp.clone()));
        host::strip_debug(exe, &temp)?;
        archive.file(&format!("usr/bin/{name}"), EXECUTABLE, temp)?;
    }
    for lib in &inputs.libraries {
        match lib {
            LibEntry::File(path) => archive.file(&guest_path(path)?, EXECUTABLE, path.clone())?,
            LibEntry::Symlink { path, target } => {
                let target = target.to_str().with_context(|| {
                    format!("the link {} has a non-UTF-8 target", path.display())
                })?;
                archive.symlink(&guest_path(path)?, target)?;
            }
        }
    }

    let initrd = part.join("initrd.cpio");
    let file =
        std::fs::File::create(&initrd).with_context(|| format!("creating {}", initrd.display()))?;
    let mut out = BufWriter::new(file);
    archive
        .write_to(&mut out)
        .with_context(|| format!("writing {}", initrd.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", initrd.display()))?;

    let kernel = part.join("vmlinuz");
    std::fs::copy(&pkgs.kernel, &kernel)
        .with_context(|| format!("copying {} to {}", pkgs.kernel.display(), kernel.display()))?;
    let release = part.join("release");
    std::fs::write(&release, format!("{}\n", pkgs.release))
        .with_context(|| format!("writing {}", release.display()))
}

fn guest_path(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not a UTF-8 path", path.display()))
}

/// Keeps the [`KEEP_IMAGES`] newest images (always `keep`) and removes
/// build folders abandoned by a process that died.
fn prune(images: &Path, keep: &str) -> Result<()> {
    let now = SystemTime::now();
    let mut built = Vec::new();
    for entry in
        std::fs::read_dir(images).with_context(|| format!("listing {}", images.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let modified = entry.metadata()?.modified()?;
        if name.starts_with(".part-") {
            if now
                .duration_since(modified)
                .is_ok_and(|age| age > ABANDONED_AFTER)
            {
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if name != keep && entry.file_type()?.is_dir() {
            built.push((modified, entry.path()));
        }
    }
    built.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in built.into_iter().skip(KEEP_IMAGES - 1) {
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
