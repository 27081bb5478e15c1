//! The workspace's architecture checks behind `cargo xtask arch`: no import
//! cycles between the modules of a crate, the dependency rules between
//! crates, and the `//!` header every library opens with. It only reads
//! sources and `cargo metadata`; it never modifies, formats or generates a
//! file.

pub mod crate_rules;
pub mod docs;
pub mod functions;
pub mod graph;
pub mod metadata;
pub mod modules;
pub mod resolve;

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use metadata::{Metadata, Package, Target};
use resolve::{CrateModules, ModuleCycle};

/// Everything `cargo xtask arch` found.
#[derive(Debug, Default)]
pub struct Report {
    pub module_cycles: Vec<ModuleCycle>,
    pub crate_rules: Vec<String>,
    pub crate_headers: Vec<String>,
    /// Rules skipped and modules not read, and why: not violations.
    pub notes: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.module_cycles.len() + self.crate_rules.len() + self.crate_headers.len()
    }

    pub fn is_clean(&self) -> bool {
        self.violations() == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.module_cycles.is_empty() {
            writeln!(f, "module cycles ({}):", self.module_cycles.len())?;
            for cycle in &self.module_cycles {
                write!(f, "  {cycle}")?;
            }
        }
        for (title, lines) in [
            ("crate rules", &self.crate_rules),
            ("crate headers", &self.crate_headers),
        ] {
            if !lines.is_empty() {
                writeln!(f, "{title} ({}):", lines.len())?;
                for line in lines {
                    writeln!(f, "  {line}")?;
                }
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        match self.violations() {
            0 => writeln!(f, "no architecture violations"),
            1 => writeln!(f, "1 architecture violation"),
            n => writeln!(f, "{n} architecture violations"),
        }
    }
}

/// Runs every check on the workspace whose root manifest is in `root`.
pub fn check_workspace(root: &Path) -> Result<Report> {
    let layout = Metadata::load(root, false).context("reading the workspace's crates")?;
    let mut report = Report::default();

    for package in &layout.members {
        for target in module_targets(package) {
            let modules = CrateModules::analyse(
                &target.src_path,
                &target_label(package, target),
                &layout.workspace_root,
            )
            .with_context(|| format!("reading the modules of {}", target_label(package, target)))?;
            report.module_cycles.extend(modules.cycles());
            report.notes.extend(modules.notes);

            if target.is("lib") {
                if let Some(problem) = docs::header_problem(&target.src_path)? {
                    let file = target
                        .src_path
                        .strip_prefix(&layout.workspace_root)
                        .unwrap_or(&target.src_path);
                    report.crate_headers.push(format!(
                        "{} ({}): {problem}",
                        package.name,
                        file.display()
                    ));
                }
            }
        }
    }

    let resolved = Metadata::load(root, true).context("resolving the dependency graph")?;
    let outcome = crate_rules::check(&resolved, crate_rules::RULES);
    report.crate_rules = outcome.violations;
    report.notes.extend(outcome.notes);
    Ok(report)
}

/// The workspace crate named `name`: by package name, by package name
/// without `switchyard-`, or by its directory.
fn find_package<'a>(layout: &'a Metadata, name: &str) -> Result<&'a Package> {
    let Some(package) = layout.members.iter().find(|p| {
        p.name == name
            || p.name.strip_prefix("switchyard-") == Some(name)
            || p.manifest_dir.file_name().is_some_and(|dir| dir == name)
    }) else {
        let known: Vec<&str> = layout.members.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no workspace crate {name:?}; the crates are {}",
            known.join(", ")
        );
    };
    Ok(package)
}

/// The lifted sibling edges of every lib and bin target of one crate.
pub fn render_graph(root: &Path, name: &str) -> Result<String> {
    let layout = Metadata::load(root, false).context("reading the workspace's crates")?;
    let package = find_package(&layout, name)?;
    let mut out = String::new();
    for target in module_targets(package) {
        let modules = CrateModules::analyse(
            &target.src_path,
            &target_label(package, target),
            &layout.workspace_root,
        )?;
        out.push_str(&modules.render_graph());
    }
    Ok(out)
}

/// The `count` longest non-test functions of one crate's lib and bin
/// targets, one per line: lines, `file:line`, name.
pub fn render_longest(root: &Path, name: &str, count: usize) -> Result<String> {
    let layout = Metadata::load(root, false).context("reading the workspace's crates")?;
    let package = find_package(&layout, name)?;
    let mut found = Vec::new();
    for target in module_targets(package) {
        found.extend(functions::longest(&target.src_path)?);
    }
    found.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.cmp(b)));
    let mut out = String::new();
    for function in found.iter().take(count) {
        let file = function
            .file
            .strip_prefix(&layout.workspace_root)
            .unwrap_or(&function.file);
        out.push_str(&format!(
            "{:>5}  {}:{}  {}\n",
            function.lines,
            file.display(),
            function.line,
            function.name
        ));
    }
    Ok(out)
}

fn module_targets(package: &Package) -> impl Iterator<Item = &Target> {
    package
        .targets
        .iter()
        .filter(|t| t.is("lib") || t.is("bin"))
}

fn target_label(package: &Package, target: &Target) -> String {
    if target.is("lib") {
        package.name.clone()
    } else {
        format!("{}[bin {}]", package.name, target.name)
    }
}
