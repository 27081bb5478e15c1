//! Resolves the paths a module writes to the modules they reach, lifts each
//! reference to an edge between sibling modules, and finds the cycles among
//! siblings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::graph::{self, Cycle};
use crate::modules::{ModId, ModuleTree, ROOT};

/// What a path names, as far as module structure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Module(ModId),
    /// Something other than a module (a type, a function, a variant, or a
    /// name the tree cannot see, such as a macro-made item) inside a module.
    Item(ModId),
}

impl Target {
    /// The deepest module the path names.
    pub fn module(self) -> ModId {
        match self {
            Target::Module(id) | Target::Item(id) => id,
        }
    }
}

pub struct Resolver<'t> {
    tree: &'t ModuleTree,
}

impl<'t> Resolver<'t> {
    pub fn new(tree: &'t ModuleTree) -> Self {
        Resolver { tree }
    }

    /// Resolves a path as written in module `from`, following imports and
    /// re-exports. `None` for a path that leaves the crate (std, an extern
    /// crate, a generic parameter).
    pub fn resolve(&self, from: ModId, path: &[String]) -> Option<Target> {
        self.resolve_in(from, path, &mut Vec::new())
    }

    /// `in_progress` holds the (module, name) lookups under way, so that
    /// imports that go round in circles (a child's `use super::*` against
    /// its parent's `pub use child::*`) end instead of recursing forever.
    fn resolve_in(
        &self,
        from: ModId,
        path: &[String],
        in_progress: &mut Vec<(ModId, String)>,
    ) -> Option<Target> {
        let (first, rest) = path.split_first()?;
        match first.as_str() {
            "crate" => self.walk(ROOT, rest, in_progress),
            "self" | "super" => self.walk(from, path, in_progress),
            // Edition 2018 paths: a bare first segment is a name in this
            // module's scope, or else something outside the crate.
            _ => match self.lookup(from, first, in_progress)? {
                Target::Module(module) => self.walk(module, rest, in_progress),
                item @ Target::Item(_) => Some(item),
            },
        }
    }

    fn walk(
        &self,
        mut current: ModId,
        segments: &[String],
        in_progress: &mut Vec<(ModId, String)>,
    ) -> Option<Target> {
        for segment in segments {
            match segment.as_str() {
                "self" => {}
                "super" => current = self.tree.modules[current].parent?,
                name => match self.lookup(current, name, in_progress) {
                    Some(Target::Module(module)) => current = module,
                    Some(item @ Target::Item(_)) => return Some(item),
                    None => return Some(Target::Item(current)),
                },
            }
        }
        Some(Target::Module(current))
    }

    /// A name as seen inside `module`: a child module, an import, an item
    /// of its own, or a name a glob import brings in.
    fn lookup(
        &self,
        module: ModId,
        name: &str,
        in_progress: &mut Vec<(ModId, String)>,
    ) -> Option<Target> {
        let m = &self.tree.modules[module];
        if let Some(&child) = m.children.get(name) {
            return Some(Target::Module(child));
        }
        let key = (module, name.to_string());
        if in_progress.contains(&key) {
            return None;
        }
        in_progress.push(key);
        let found = self.lookup_bindings(module, name, in_progress);
        in_progress.pop();
        found
    }

    fn lookup_bindings(
        &self,
        module: ModId,
        name: &str,
        in_progress: &mut Vec<(ModId, String)>,
    ) -> Option<Target> {
        let m = &self.tree.modules[module];
        for import in m.imports.iter().filter(|i| i.name == name) {
            if let Some(target) = self.resolve_in(module, &import.path, in_progress) {
                return Some(target);
            }
        }
        if m.items.contains(name) {
            return Some(Target::Item(module));
        }
        for glob in &m.globs {
            if let Some(Target::Module(source)) = self.resolve_in(module, glob, in_progress) {
                if let Some(target) = self.lookup(source, name, in_progress) {
                    return Some(target);
                }
            }
        }
        None
    }
}

/// Where a reference is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub file: PathBuf,
    pub line: usize,
}

/// An edge between two sibling modules: every reference from inside `from`
/// to inside `to`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Sorted, so the first is a stable example.
    pub sites: Vec<Site>,
}

/// References between sibling modules, by (from, to).
type SitesBySiblings = BTreeMap<(String, String), Vec<Site>>;

/// One crate target's module graph, lifted to siblings.
pub struct CrateModules {
    /// How reports name the target, e.g. `switchyard-config`.
    pub label: String,
    /// Per parent module (its path from the root), the edges among its
    /// children.
    pub levels: BTreeMap<Vec<String>, Vec<Edge>>,
    pub notes: Vec<String>,
    /// Files are shown relative to this directory.
    display_root: PathBuf,
}

/// A cycle among the children of one module.
#[derive(Debug, Clone)]
pub struct ModuleCycle {
    pub label: String,
    /// The parent module's path; empty for the crate root.
    pub level: Vec<String>,
    pub cycle: Cycle<String>,
    /// Every edge between members of the cycle.
    pub edges: Vec<Edge>,
    display_root: PathBuf,
}

impl CrateModules {
    /// Loads the module tree at `root_file` and lifts every reference to a
    /// sibling edge.
    pub fn analyse(root_file: &Path, label: &str, display_root: &Path) -> Result<Self> {
        let tree = ModuleTree::load(root_file)?;
        let resolver = Resolver::new(&tree);
        let mut levels: BTreeMap<Vec<String>, SitesBySiblings> = BTreeMap::new();

        for (id, module) in tree.modules.iter().enumerate() {
            for reference in &module.refs {
                let Some(target) = resolver.resolve(id, &reference.path) else {
                    continue;
                };
                let from = &module.path;
                let to = &tree.modules[target.module()].path;
                let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
                // One module inside the other: a child using its parent, or
                // a parent its own child, is how a module tree works.
                if common == from.len() || common == to.len() {
                    continue;
                }
                levels
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry((from[common].clone(), to[common].clone()))
                    .or_default()
                    .push(Site {
                        file: module.file.clone(),
                        line: reference.line,
                    });
            }
        }

        let levels = levels
            .into_iter()
            .map(|(level, edges)| {
                let edges = edges
                    .into_iter()
                    .map(|((from, to), mut sites)| {
                        sites.sort();
                        Edge { from, to, sites }
                    })
                    .collect();
                (level, edges)
            })
            .collect();
        Ok(CrateModules {
            label: label.to_string(),
            levels,
            notes: tree.notes,
            display_root: display_root.to_path_buf(),
        })
    }

    /// Every cycle among siblings, level by level.
    pub fn cycles(&self) -> Vec<ModuleCycle> {
        let mut found = Vec::new();
        for (level, edges) in &self.levels {
            let pairs: BTreeSet<(String, String)> = edges
                .iter()
                .map(|e| (e.from.clone(), e.to.clone()))
                .collect();
            for cycle in graph::cycles(&pairs) {
                let inside = |name: &String| cycle.members.contains(name);
                let edges = edges
                    .iter()
                    .filter(|e| inside(&e.from) && inside(&e.to))
                    .cloned()
                    .collect();
                found.push(ModuleCycle {
                    label: self.label.clone(),
                    level: level.clone(),
                    cycle,
                    edges,
                    display_root: self.display_root.clone(),
                });
            }
        }
        found
    }

    /// The sibling edges per level, for a human reading the structure.
    pub fn render_graph(&self) -> String {
        // Which cycle each module is in, per level: an edge is part of a
        // cycle only when both ends are in the same one.
        let mut cycle_of: BTreeMap<(Vec<String>, String), usize> = BTreeMap::new();
        for (index, cycle) in self.cycles().into_iter().enumerate() {
            for member in cycle.cycle.members {
                cycle_of.insert((cycle.level.clone(), member), index);
            }
        }
        let mut out = format!("{}\n", self.label);
        if self.levels.is_empty() {
            out.push_str("  (no edges between sibling modules)\n");
        }
        for (level, edges) in &self.levels {
            let name = if level.is_empty() {
                "crate".to_string()
            } else {
                level.join("::")
            };
            out.push_str(&format!("  {name}\n"));
            for edge in edges {
                let from = cycle_of.get(&(level.clone(), edge.from.clone()));
                let cyclic =
                    from.is_some() && from == cycle_of.get(&(level.clone(), edge.to.clone()));
                out.push_str(&format!(
                    "    {} -> {}  ({}, e.g. {}){}\n",
                    edge.from,
                    edge.to,
                    plural(edge.sites.len(), "reference"),
                    show_site(&self.display_root, &edge.sites[0]),
                    if cyclic { "  [cycle]" } else { "" },
                ));
            }
        }
        out
    }
}

impl fmt::Display for ModuleCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut scope = self.label.clone();
        for segment in &self.level {
            scope.push_str("::");
            scope.push_str(segment);
        }
        writeln!(f, "{scope}: {}", self.cycle.walk.join(" -> "))?;
        for edge in &self.edges {
            writeln!(
                f,
                "    {} -> {}: {} ({})",
                edge.from,
                edge.to,
                show_site(&self.display_root, &edge.sites[0]),
                plural(edge.sites.len(), "reference"),
            )?;
        }
        Ok(())
    }
}

fn show_site(root: &Path, site: &Site) -> String {
    let file = site.file.strip_prefix(root).unwrap_or(&site.file);
    format!("{}:{}", file.display(), site.line)
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A crate written to a fresh temporary directory, removed on drop.
    struct TempCrate {
        dir: PathBuf,
    }

    impl TempCrate {
        fn new(files: &[(&str, &str)]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xtask-arch-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            for (path, source) in files {
                let file = dir.join(path);
                fs::create_dir_all(file.parent().unwrap()).unwrap();
                fs::write(file, source).unwrap();
            }
            TempCrate { dir }
        }

        fn analyse(&self) -> CrateModules {
            CrateModules::analyse(&self.dir.join("src/lib.rs"), "demo", &self.dir).unwrap()
        }

        fn tree(&self) -> ModuleTree {
            ModuleTree::load(&self.dir.join("src/lib.rs")).unwrap()
        }
    }

    impl Drop for TempCrate {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn walks(modules: &CrateModules) -> Vec<String> {
        modules
            .cycles()
            .iter()
            .map(|c| {
                let mut scope = c.level.join("::");
                if !scope.is_empty() {
                    scope.push_str(": ");
                }
                format!("{scope}{}", c.cycle.walk.join(" -> "))
            })
            .collect()
    }

    fn edges(modules: &CrateModules, level: &[&str]) -> Vec<(String, String)> {
        let level: Vec<String> = level.iter().map(|s| s.to_string()).collect();
        modules
            .levels
            .get(&level)
            .map(|edges| {
                edges
                    .iter()
                    .map(|e| (e.from.clone(), e.to.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn module_id(tree: &ModuleTree, path: &str) -> ModId {
        tree.modules
            .iter()
            .position(|m| m.name() == path)
            .unwrap_or_else(|| panic!("no module {path}"))
    }

    fn segments(path: &str) -> Vec<String> {
        path.split("::").map(str::to_string).collect()
    }

    #[test]
    fn a_two_module_cycle_is_reported() {
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", "use crate::b::B;\npub struct A(B);\n"),
            (
                "src/b.rs",
                "pub struct B;\npub fn make() -> Option<super::a::A> { None }\n",
            ),
        ]);
        let modules = krate.analyse();
        assert_eq!(walks(&modules), vec!["a -> b -> a"]);

        let cycle = &modules.cycles()[0];
        let rendered = cycle.to_string();
        assert!(rendered.starts_with("demo: a -> b -> a\n"), "{rendered}");
        assert!(
            rendered.contains("a -> b: src/a.rs:1 (1 reference)"),
            "{rendered}"
        );
        assert!(rendered.contains("b -> a: src/b.rs:2"), "{rendered}");
    }

    #[test]
    fn a_child_using_its_parent_through_super_is_no_edge() {
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod p;\nmod q;\n"),
            (
                "src/p/mod.rs",
                "mod c;\npub struct X;\npub fn f() -> c::Y { c::Y }\n",
            ),
            (
                "src/p/c.rs",
                "use super::X;\npub struct Y;\npub fn g() -> crate::p::X { X }\n",
            ),
            ("src/q.rs", "pub fn h() -> crate::p::X { crate::p::X }\n"),
        ]);
        let modules = krate.analyse();
        assert!(walks(&modules).is_empty());
        assert!(edges(&modules, &["p"]).is_empty());
        assert_eq!(
            edges(&modules, &[]),
            vec![("q".to_string(), "p".to_string())]
        );
    }

    #[test]
    fn a_re_export_through_a_parent_module_is_followed() {
        let krate = TempCrate::new(&[
            (
                "src/lib.rs",
                "mod packet;\nmod flow;\npub use packet::FlowKey;\n",
            ),
            ("src/packet/mod.rs", "mod parse;\npub use parse::FlowKey;\n"),
            (
                "src/packet/parse.rs",
                "pub struct FlowKey;\npub fn parse() -> crate::flow::Flow { todo!() }\n",
            ),
            ("src/flow.rs", "pub struct Flow(crate::FlowKey);\n"),
        ]);
        let tree = krate.tree();
        let resolver = Resolver::new(&tree);
        let flow = module_id(&tree, "flow");
        let parse = module_id(&tree, "packet::parse");
        assert_eq!(
            resolver.resolve(flow, &segments("crate::FlowKey")),
            Some(Target::Item(parse))
        );
        assert_eq!(
            resolver.resolve(flow, &segments("crate::packet::FlowKey")),
            Some(Target::Item(parse))
        );

        // Through the root's re-export, flow reaches packet, which reaches
        // flow: a cycle, though flow never names packet.
        let modules = krate.analyse();
        assert_eq!(walks(&modules), vec!["flow -> packet -> flow"]);
    }

    #[test]
    fn cfg_test_modules_and_items_are_ignored() {
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "src/b.rs",
                "pub struct B;\n\
                 #[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n\
                 #[cfg(test)]\nmod more_tests;\n\
                 #[cfg(all(test, unix))]\nfn helper() -> crate::a::A { crate::a::A }\n\
                 impl B {\n    #[cfg(test)]\n    fn fixture() -> crate::a::A { crate::a::A }\n}\n",
            ),
        ]);
        let modules = krate.analyse();
        assert!(walks(&modules).is_empty());
        assert_eq!(
            edges(&modules, &[]),
            vec![("a".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn an_inline_path_counts() {
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", "pub fn f() -> crate::b::B { crate::b::B }\n"),
            (
                "src/b.rs",
                "pub struct B;\nfn g() {\n    let _ = crate::a::f();\n}\n",
            ),
        ]);
        let modules = krate.analyse();
        assert_eq!(walks(&modules), vec!["a -> b -> a"]);
        let cycle = modules.cycles()[0].to_string();
        assert!(cycle.contains("b -> a: src/b.rs:3"), "{cycle}");
    }

    #[test]
    fn paths_in_macros_globs_and_inline_modules_count() {
        let krate = TempCrate::new(&[
            (
                "src/lib.rs",
                "mod a;\nmod b;\nmod c;\n\
                 mod outer {\n    pub mod x { pub fn f() { super::y::g() } }\n    \
                 pub mod y { pub fn g() {} pub fn h() { super::x::f() } }\n}\n",
            ),
            (
                "src/a.rs",
                "pub fn f() {\n    println!(\"{}\", crate::b::name());\n}\n",
            ),
            (
                "src/b.rs",
                "use crate::c::*;\npub fn name() -> &'static str { C }\n",
            ),
            (
                "src/c.rs",
                "pub const C: &str = \"c\";\npub fn g() { super::a::f() }\n",
            ),
        ]);
        let modules = krate.analyse();
        assert_eq!(
            walks(&modules),
            vec!["a -> b -> c -> a", "outer: x -> y -> x"]
        );
    }

    #[test]
    fn a_sibling_brought_in_by_mod_is_relative() {
        // `x::Y` in p resolves through p's child x, which re-exports q's Y.
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod p;\nmod q;\n"),
            ("src/p.rs", "mod x;\npub fn f() -> x::Y { x::Y }\n"),
            ("src/p/x.rs", "pub use crate::q::Y;\n"),
            ("src/q.rs", "pub struct Y;\npub fn g() { p::f(); }\n"),
        ]);
        let modules = krate.analyse();
        // q's `p::f()` has no `p` in scope (it would need `super::p`), so
        // it is not an edge; p's use of q through x is.
        assert_eq!(
            edges(&modules, &[]),
            vec![("p".to_string(), "q".to_string())]
        );
    }

    #[test]
    fn imported_modules_are_followed_as_path_prefixes() {
        // b names a only as `h::A`, through an alias of hub, which
        // re-exports a's A.
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod a;\nmod b;\nmod hub;\n"),
            ("src/hub.rs", "pub use crate::a::A;\n"),
            ("src/a.rs", "pub struct A;\n"),
            (
                "src/b.rs",
                "use crate::hub as h;\npub fn k() -> h::A {\n    h::A\n}\n",
            ),
        ]);
        let modules = krate.analyse();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            edges(&modules, &[]),
            pairs(&[("b", "a"), ("b", "hub"), ("hub", "a")])
        );
    }

    #[test]
    fn path_attributes_and_mod_rs_layouts_are_honoured() {
        let krate = TempCrate::new(&[
            (
                "src/lib.rs",
                "#[path = \"elsewhere/alpha.rs\"]\nmod a;\nmod b;\n",
            ),
            ("src/elsewhere/alpha.rs", "pub mod inner;\n"),
            ("src/elsewhere/inner.rs", "pub fn f() { crate::b::g() }\n"),
            (
                "src/b/mod.rs",
                "pub fn g() {}\npub fn h() { crate::a::inner::f() }\n",
            ),
        ]);
        let modules = krate.analyse();
        assert_eq!(walks(&modules), vec!["a -> b -> a"]);
    }

    #[test]
    fn a_missing_module_file_is_an_error() {
        let krate = TempCrate::new(&[("src/lib.rs", "mod gone;\n")]);
        let error = ModuleTree::load(&krate.dir.join("src/lib.rs")).unwrap_err();
        assert!(format!("{error:#}").contains("gone"), "{error:#}");
    }

    #[test]
    fn glob_cycles_between_parent_and_child_terminate() {
        let krate = TempCrate::new(&[
            ("src/lib.rs", "mod a;\npub use a::*;\nmod b;\n"),
            (
                "src/a.rs",
                "use super::*;\npub fn f() -> Missing { todo!() }\n",
            ),
            ("src/b.rs", "pub fn g() { crate::Missing::new(); }\n"),
        ]);
        let modules = krate.analyse();
        assert!(walks(&modules).is_empty());
    }
}
