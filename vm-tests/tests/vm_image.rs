//! The guest image builder against the real registry and the real release
//! binaries. The first test to run downloads the locked packages (~27 MB)
//! into `target/vm/debs/`; the others seed their private caches from there.
//!
//! Needs root (apt-get) and `cargo build --release`.

use std::path::Path;

use anyhow::{Context, Result};
use switchyard_vm_tests::vm::image::{self, build_in, cpio, key_in, modules, ImageSpec, Paths};
use switchyard_vm_tests::TempDir;

/// A private cache (and a place for lockfile and init variants) whose
/// `debs/` starts as a copy of the shared one, which is filled first.
fn fresh_paths(role: &str) -> Result<(TempDir, Paths)> {
    let shared = Paths::workspace();
    image::build(&ImageSpec::lb_guest()?)?;
    let dir = TempDir::new(role)?;
    let paths = Paths {
        cache: dir.path().join("vm"),
        ..shared.clone()
    };
    std::fs::create_dir_all(paths.debs())?;
    for entry in std::fs::read_dir(shared.debs())? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".deb") {
            std::fs::copy(entry.path(), paths.debs().join(&name))
                .with_context(|| format!("copying {:?}", entry.path()))?;
        }
    }
    Ok((dir, paths))
}

fn read_initrd(path: &Path) -> Result<Vec<cpio::ReadEntry>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    cpio::read(&bytes)
}

fn entry<'a>(entries: &'a [cpio::ReadEntry], path: &str) -> &'a cpio::ReadEntry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("the initrd has no /{path}"))
}

/// The shared lockfile with `edit` applied to its text, in `dir`.
fn edited_lockfile(
    dir: &TempDir,
    edit: impl FnOnce(String) -> String,
) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(Paths::workspace().lockfile)?;
    dir.write("packages.lock", &edit(text))
}

#[test]
fn lb_guest_initrd_holds_init_busybox_switchyard_and_virtio_net_after_its_dependencies(
) -> Result<()> {
    let built = image::build(&ImageSpec::lb_guest()?)?;
    let entries = read_initrd(&built.initrd)?;

    let init = entry(&entries, "init");
    assert!(init.is_file() && init.perm() == 0o755);
    assert_eq!(init.data, std::fs::read(Paths::workspace().init)?);
    assert!(entry(&entries, "bin/busybox").is_file());
    let switchyard = entry(&entries, "usr/bin/switchyard");
    assert!(switchyard.is_file() && switchyard.perm() == 0o755);
    let unstripped = std::fs::metadata(switchyard_vm_tests::process::switchyard_bin()?)?.len();
    assert!(
        (switchyard.data.len() as u64) < unstripped / 2,
        "switchyard still has its debug info"
    );
    assert!(entry(&entries, "usr/bin/yardctl").is_file());
    // The loader the binaries name, whether a link or the file itself.
    entry(&entries, "lib64/ld-linux-x86-64.so.2");
    for dir in ["proc", "sys", "dev", "tmp", "run", "etc", "usr/bin", "root"] {
        assert!(entry(&entries, dir).is_dir(), "/{dir}");
    }

    let list = String::from_utf8(entry(&entries, "etc/yard/modules").data.clone())?;
    let order: Vec<&str> = list.lines().collect();
    let names: Vec<String> = order
        .iter()
        .map(|p| {
            modules::canonical(
                Path::new(p)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(""),
            )
        })
        .collect();
    for wanted in [
        "virtio_net",
        "net_failover",
        "failover",
        "virtio_pci",
        "virtio_pci_modern_dev",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} is not in {order:?}"
        );
    }
    for (i, guest_path) in order.iter().enumerate() {
        let prefix = format!("/lib/modules/{}/", built.kernel_release);
        assert!(guest_path.starts_with(&prefix), "{guest_path}");
        let ko = entry(&entries, guest_path.trim_start_matches('/'));
        for dep in modules::depends_in(&ko.data)? {
            let at = names.iter().position(|n| *n == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{} needs {dep} loaded before it: {order:?}",
                names[i]
            );
        }
    }
    Ok(())
}

#[test]
fn the_same_inputs_build_byte_identical_images_under_the_same_key() -> Result<()> {
    let spec = ImageSpec::lb_guest()?;
    let (_one, first) = fresh_paths("image-a")?;
    let (_two, second) = fresh_paths("image-b")?;
    let a = build_in(&spec, &first)?;
    let b = build_in(&spec, &second)?;
    assert_eq!(a.key, b.key);
    assert_eq!(a.kernel_release, b.kernel_release);
    assert!(
        std::fs::read(&a.initrd)? == std::fs::read(&b.initrd)?,
        "the initrds differ"
    );
    assert!(
        std::fs::read(&a.kernel)? == std::fs::read(&b.kernel)?,
        "the kernels differ"
    );
    // Found again, not rebuilt.
    assert_eq!(build_in(&spec, &first)?.key, a.key);
    Ok(())
}

#[test]
fn another_init_script_changes_the_key() -> Result<()> {
    let spec = ImageSpec::lb_guest()?;
    let dir = TempDir::new("image-init")?;
    let shared = Paths::workspace();
    let mut init = std::fs::read_to_string(&shared.init)?;
    init.push_str("# one more line\n");
    let changed = Paths {
        init: dir.write("init", &init)?,
        ..shared.clone()
    };
    assert_ne!(key_in(&spec, &shared)?, key_in(&spec, &changed)?);
    Ok(())
}

#[test]
fn a_package_the_registry_does_not_have_fails_naming_it() -> Result<()> {
    let (dir, mut paths) = fresh_paths("image-missing")?;
    paths.lockfile = edited_lockfile(&dir, |text| {
        text + &format!("yard-no-such-package 1.0-1 {}\n", "0".repeat(64))
    })?;
    let err = build_in(&ImageSpec::lb_guest()?, &paths).unwrap_err();
    let shown = format!("{err:#}");
    assert!(shown.contains("yard-no-such-package"), "{shown}");
    assert!(shown.contains("yard-vm lock"), "{shown}");
    Ok(())
}

#[test]
fn a_wrong_busybox_sha256_is_a_broken_download_that_leaves_no_file() -> Result<()> {
    let (dir, mut paths) = fresh_paths("image-broken")?;
    paths.lockfile = edited_lockfile(&dir, |text| {
        text.lines()
            .map(|line| match line.strip_prefix("busybox-static ") {
                Some(rest) => {
                    let (version, _) = rest.split_once(' ').unwrap_or((rest, ""));
                    format!("busybox-static {version} {}\n", "ab".repeat(32))
                }
                None => format!("{line}\n"),
            })
            .collect()
    })?;
    let err = build_in(&ImageSpec::lb_guest()?, &paths).unwrap_err();
    let shown = format!("{err:#}");
    assert!(shown.contains("busybox-static"), "{shown}");
    assert!(shown.contains("broken download"), "{shown}");
    assert!(shown.contains(&"ab".repeat(32)), "{shown}");
    let left: Vec<String> = std::fs::read_dir(paths.debs())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(
        left.iter()
            .all(|name| !name.contains("busybox") && !name.starts_with(".part")),
        "left behind: {left:?}"
    );
    Ok(())
}

#[test]
fn a_malformed_lockfile_line_names_file_and_line() -> Result<()> {
    let dir = TempDir::new("image-malformed")?;
    let lockfile = edited_lockfile(&dir, |text| text + "busybox-static 1.0\n")?;
    let lines = std::fs::read_to_string(&lockfile)?.lines().count();
    let paths = Paths {
        lockfile: lockfile.clone(),
        ..Paths::workspace()
    };
    let err = build_in(&ImageSpec::lb_guest()?, &paths).unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains(&format!("{}:{lines}:", lockfile.display())),
        "{shown}"
    );
    Ok(())
}
