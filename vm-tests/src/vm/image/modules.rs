//! Kernel modules for the guest: which `.ko` files to put in the initramfs
//! and in which order to load them. A Debian kernel package ships no
//! `modules.dep` (depmod makes it at install time), so the dependencies are
//! read from each module's own `.modinfo` section, where modpost recorded
//! them. It never loads or runs anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection};

/// `-` and `_` are the same in a module name (kernel/params.c, `dash2underscore`).
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of one unpacked kernel tree, by canonical name.
#[derive(Debug)]
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Indexes `<modules_dir>/kernel/**.ko` and reads `modules.builtin`.
    pub fn open(modules_dir: &Path) -> Result<ModuleTree> {
        let mut files = BTreeMap::new();
        let mut pending = vec![modules_dir.join("kernel")];
        while let Some(dir) = pending.pop() {
            let listing =
                std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in listing {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .with_context(|| format!("{}", path.display()))?;
                if kind.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "ko") {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        files.insert(canonical(stem), path.clone());
                    }
                }
            }
        }
        let builtin_path = modules_dir.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_path)
            .with_context(|| format!("reading {}", builtin_path.display()))?
            .lines()
            .filter_map(|line| Path::new(line.trim()).file_stem()?.to_str().map(canonical))
            .collect();
        Ok(ModuleTree { files, builtin })
    }

    /// The `.ko` file of a module, if the tree has one.
    pub fn file(&self, name: &str) -> Option<&Path> {
        self.files.get(&canonical(name)).map(PathBuf::as_path)
    }

    /// Whether the module is compiled into the kernel image.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// `wanted` and everything they need, dependencies first, without the
    /// built-in ones.
    pub fn load_order(&self, wanted: &[String]) -> Result<Vec<String>> {
        load_order(wanted, |name| {
            if self.is_builtin(name) {
                return Ok(Some(Vec::new()));
            }
            let Some(path) = self.file(name) else {
                return Ok(None);
            };
            depends(path).map(Some)
        })
        .map(|order| order.into_iter().filter(|m| !self.is_builtin(m)).collect())
    }
}

/// The `depends=` entry of a module file's `.modinfo`.
pub fn depends(ko: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    depends_in(&bytes).with_context(|| format!("reading the dependencies of {}", ko.display()))
}

/// The `depends=` entry of a module's `.modinfo`: NUL-separated
/// `key=value` strings (include/linux/moduleparam.h, `__MODULE_INFO`).
pub fn depends_in(ko: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(ko).context("not an ELF object")?;
    let section = file
        .section_by_name(".modinfo")
        .context("no .modinfo section")?;
    let data = section.data().context("reading .modinfo")?;
    let mut deps = Vec::new();
    for entry in data.split(|b| *b == 0) {
        if let Some(list) = entry.strip_prefix(b"depends=") {
            let list = std::str::from_utf8(list).context("depends= is not UTF-8")?;
            deps.extend(list.split(',').filter(|d| !d.is_empty()).map(canonical));
        }
    }
    Ok(deps)
}

/// Orders `wanted` and their dependencies so that each module comes after
/// all it depends on. `deps_of(name)` gives a module's direct dependencies,
/// or `None` if there is no such module. Missing modules and cycles are
/// errors naming who needed what.
pub fn load_order(
    wanted: &[String],
    mut deps_of: impl FnMut(&str) -> Result<Option<Vec<String>>>,
) -> Result<Vec<String>> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        let name = canonical(name);
        if done.contains(&name) {
            continue;
        }
        // Depth-first, iterative: a frame is a module and its dependencies
        // still to visit. The stack is the chain that led here, which is
        // also what a cycle error shows.
        let Some(deps) = deps_of(&name)? else {
            bail!("kernel module {name} is not in the kernel package (wanted by the image spec)");
        };
        let mut stack: Vec<(String, std::vec::IntoIter<String>)> = vec![(name, deps.into_iter())];
        while let Some((current, pending)) = stack.last_mut() {
            let Some(dep) = pending.next() else {
                let current = current.clone();
                stack.pop();
                done.insert(current.clone());
                order.push(current);
                continue;
            };
            if done.contains(&dep) {
                continue;
            }
            let needed_by = current.clone();
            if let Some(start) = stack.iter().position(|(m, _)| *m == dep) {
                let mut cycle: Vec<&str> = stack[start..].iter().map(|(m, _)| m.as_str()).collect();
                cycle.push(&dep);
                bail!(
                    "kernel modules depend on each other in a cycle: {}",
                    cycle.join(" -> ")
                );
            }
            let Some(deps) = deps_of(&dep)? else {
                bail!("kernel module {dep}, needed by {needed_by}, is not in the kernel package");
            };
            stack.push((dep, deps.into_iter()));
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> impl FnMut(&str) -> Result<Option<Vec<String>>> {
        let map: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect();
        move |name| Ok(map.get(name).cloned())
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_come_before_the_modules_that_need_them() {
        let order = load_order(
            &names(&["virtio_net", "virtio_pci"]),
            graph(&[
                ("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
                ("net_failover", &["failover"]),
                ("failover", &[]),
                ("virtio", &[]),
                ("virtio_ring", &[]),
                (
                    "virtio_pci",
                    &["virtio_ring", "virtio_pci_modern_dev", "virtio"],
                ),
                ("virtio_pci_modern_dev", &[]),
            ]),
        )
        .unwrap();
        assert_eq!(
            order,
            names(&[
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_pci_modern_dev",
                "virtio_pci",
            ])
        );
    }

    #[test]
    fn a_shared_dependency_is_listed_once() {
        let order = load_order(
            &names(&["a", "b", "a"]),
            graph(&[("a", &["c"]), ("b", &["c"]), ("c", &[])]),
        )
        .unwrap();
        assert_eq!(order, names(&["c", "a", "b"]));
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        let order = load_order(&names(&["kvm-intel"]), graph(&[("kvm_intel", &[])])).unwrap();
        assert_eq!(order, names(&["kvm_intel"]));
    }

    #[test]
    fn a_missing_dependency_names_it_and_who_needed_it() {
        let err = load_order(&names(&["a"]), graph(&[("a", &["b"]), ("b", &["gone"])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gone") && err.contains("needed by b"), "{err}");
    }

    #[test]
    fn a_missing_wanted_module_is_an_error() {
        let err = load_order(&names(&["nope"]), graph(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn a_cycle_is_an_error_showing_the_cycle() {
        let err = load_order(
            &names(&["a"]),
            graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }
}
