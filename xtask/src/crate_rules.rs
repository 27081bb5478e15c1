//! Which workspace crates may depend on which, checked against the resolved
//! dependency graph.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::graph;
use crate::metadata::{DepKind, Metadata};

#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// The crate's normal dependencies, direct or not, include no other
    /// workspace crate.
    NoWorkspaceDeps(&'static str),
    /// None of these crates is in the crate's normal dependency closure.
    ClosureExcludes(&'static str, &'static [&'static str]),
    /// No workspace crate has this one as a normal dependency.
    NoDependents(&'static str),
    /// Workspace crates form no cycle, dev- and build-dependencies counted.
    AcyclicWorkspace,
}

/// The workspace's crate rules. A rule whose crate is not (yet) in the
/// workspace is skipped with a note, so the table can describe the layout
/// the workspace is moving to.
pub const RULES: &[Rule] = &[
    Rule::NoWorkspaceDeps("switchyard-wire"),
    Rule::NoWorkspaceDeps("switchyard-proto"),
    // Constants the sidecar reads; the manifests' tests alone use config.
    Rule::NoWorkspaceDeps("switchyard-deploy"),
    Rule::ClosureExcludes(
        "switchyard-daemon",
        &[
            "yardctl",
            "ratatui",
            "crossterm",
            "comfy-table",
            // The appliance builds and runs without the kube sidecar.
            "switchyard-kube",
            "kube",
            "k8s-openapi",
        ],
    ),
    Rule::ClosureExcludes(
        "switchyard-dataplane",
        &["switchyard-daemon", "yardctl", "switchyard-proto"],
    ),
    Rule::NoDependents("yardctl"),
    Rule::NoDependents("switchyard-kube"),
    // The sidecar hands objects to the daemon, which resolves them: one
    // resolution path, so the sidecar never links the resolver.
    Rule::ClosureExcludes(
        "switchyard-kube",
        &[
            "switchyard-config",
            "switchyard-daemon",
            "switchyard-dataplane",
        ],
    ),
    // A test fixture: other crates may use it in their tests only.
    Rule::NoDependents("switchyard-apiserver-sim"),
    Rule::AcyclicWorkspace,
];

#[derive(Debug, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

/// Checks `rules` against `meta`, which must carry the resolve graph.
pub fn check(meta: &Metadata, rules: &[Rule]) -> Outcome {
    let mut outcome = Outcome::default();
    for rule in rules {
        let subject = match rule {
            Rule::NoWorkspaceDeps(name)
            | Rule::ClosureExcludes(name, _)
            | Rule::NoDependents(name) => Some(*name),
            Rule::AcyclicWorkspace => None,
        };
        let subject = match subject.map(|name| (name, meta.member(name))) {
            Some((name, None)) => {
                outcome.notes.push(format!(
                    "skipped crate rule ({}): no crate {name} in the workspace",
                    describe(rule)
                ));
                continue;
            }
            Some((_, Some(package))) => Some(package),
            None => None,
        };

        match (rule, subject) {
            (Rule::NoWorkspaceDeps(name), Some(package)) => {
                let paths = normal_closure(meta, &package.id);
                for member in &meta.members {
                    if member.id != package.id {
                        if let Some(chain) = chain_to(meta, &paths, &member.id) {
                            outcome.violations.push(format!(
                                "{name} must depend on no workspace crate, but: {chain}"
                            ));
                        }
                    }
                }
            }
            (Rule::ClosureExcludes(name, forbidden), Some(package)) => {
                let paths = normal_closure(meta, &package.id);
                let mut reached: Vec<(&str, &String)> = paths
                    .keys()
                    .map(|id| (meta.name_of(id), id))
                    .filter(|(dep_name, _)| forbidden.contains(dep_name))
                    .collect();
                reached.sort();
                for (dep_name, id) in reached {
                    let chain = chain_to(meta, &paths, id).unwrap_or_default();
                    outcome.violations.push(format!(
                        "{name} must not depend on {dep_name}, even indirectly, but: {chain}"
                    ));
                }
            }
            (Rule::NoDependents(name), Some(package)) => {
                for member in &meta.members {
                    let depends = meta
                        .deps_of(&member.id, &[DepKind::Normal])
                        .any(|d| d.id == package.id);
                    if depends {
                        outcome.violations.push(format!(
                            "no workspace crate may depend on {name}, but {} does",
                            member.name
                        ));
                    }
                }
            }
            (Rule::AcyclicWorkspace, _) => outcome.violations.extend(workspace_cycles(meta)),
            (_, None) => unreachable!("every rule but AcyclicWorkspace names its crate"),
        }
    }
    outcome
}

fn describe(rule: &Rule) -> String {
    match rule {
        Rule::NoWorkspaceDeps(name) => format!("{name} depends on no workspace crate"),
        Rule::ClosureExcludes(name, forbidden) => {
            format!("{name} never depends on {}", forbidden.join(", "))
        }
        Rule::NoDependents(name) => format!("no workspace crate depends on {name}"),
        Rule::AcyclicWorkspace => "workspace crates form no cycle".to_string(),
    }
}

/// Every package reachable from `start` over normal dependencies, each with
/// the package it was first reached from (breadth first, so chains are
/// shortest).
fn normal_closure(meta: &Metadata, start: &str) -> BTreeMap<String, Option<String>> {
    let mut reached = BTreeMap::from([(start.to_string(), None)]);
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(id) = queue.pop_front() {
        for dep in meta.deps_of(&id, &[DepKind::Normal]) {
            if !reached.contains_key(&dep.id) {
                reached.insert(dep.id.clone(), Some(id.clone()));
                queue.push_back(dep.id.clone());
            }
        }
    }
    reached
}

/// `a -> b -> c` from the closure's start to `target`, if it was reached.
fn chain_to(
    meta: &Metadata,
    paths: &BTreeMap<String, Option<String>>,
    target: &str,
) -> Option<String> {
    let mut chain = vec![meta.name_of(target)];
    let mut at = paths.get(target)?;
    while let Some(previous) = at {
        chain.push(meta.name_of(previous));
        at = paths.get(previous.as_str())?;
    }
    chain.reverse();
    Some(chain.join(" -> "))
}

fn workspace_cycles(meta: &Metadata) -> Vec<String> {
    let all = [DepKind::Normal, DepKind::Dev, DepKind::Build];
    let members: BTreeSet<&str> = meta.members.iter().map(|m| m.id.as_str()).collect();
    let mut kinds: BTreeMap<(String, String), BTreeSet<DepKind>> = BTreeMap::new();
    for member in &meta.members {
        for dep in meta.deps_of(&member.id, &all) {
            if members.contains(dep.id.as_str()) {
                kinds
                    .entry((member.name.clone(), meta.name_of(&dep.id).to_string()))
                    .or_default()
                    .extend(dep.kinds.iter().copied());
            }
        }
    }
    let edges: BTreeSet<(String, String)> = kinds.keys().cloned().collect();
    graph::cycles(&edges)
        .into_iter()
        .map(|cycle| {
            let hops: Vec<String> = cycle
                .walk
                .windows(2)
                .map(|pair| {
                    let kinds = &kinds[&(pair[0].clone(), pair[1].clone())];
                    let kinds: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
                    format!("{} -> {} ({})", pair[0], pair[1], kinds.join(", "))
                })
                .collect();
            format!(
                "workspace crates depend on each other in a cycle: {}; {}",
                cycle.walk.join(" -> "),
                hops.join("; ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::metadata::{Dependency, Package};

    /// A workspace of `members` plus other packages, with edges given as
    /// (from, to, kind) by name.
    fn workspace(members: &[&str], others: &[&str], edges: &[(&str, &str, DepKind)]) -> Metadata {
        let id = |name: &str| format!("id:{name}");
        let mut deps: BTreeMap<String, Vec<Dependency>> = BTreeMap::new();
        for (from, to, kind) in edges {
            deps.entry(id(from)).or_default().push(Dependency {
                id: id(to),
                kinds: vec![*kind],
            });
        }
        Metadata {
            workspace_root: PathBuf::from("/ws"),
            members: members
                .iter()
                .map(|name| Package {
                    id: id(name),
                    name: name.to_string(),
                    manifest_dir: PathBuf::from("/ws").join(name),
                    targets: Vec::new(),
                })
                .collect(),
            names: members
                .iter()
                .chain(others)
                .map(|name| (id(name), name.to_string()))
                .collect(),
            deps,
        }
    }

    #[test]
    fn rules_for_absent_crates_are_skipped_with_a_note() {
        let meta = workspace(&["switchyard-config"], &[], &[]);
        let outcome = check(&meta, RULES);
        assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
        // One note per rule about a crate other than the one present.
        let about_absent = RULES
            .iter()
            .filter(|rule| !matches!(rule, Rule::AcyclicWorkspace))
            .count();
        assert_eq!(outcome.notes.len(), about_absent, "{:?}", outcome.notes);
        assert!(outcome.notes[0].contains("switchyard-wire"));
    }

    #[test]
    fn a_forbidden_crate_is_reported_with_the_chain_that_brings_it_in() {
        let meta = workspace(
            &["switchyard-daemon", "yardctl"],
            &["ratatui", "helper"],
            &[
                ("switchyard-daemon", "helper", DepKind::Normal),
                ("helper", "ratatui", DepKind::Normal),
                ("switchyard-daemon", "yardctl", DepKind::Dev),
            ],
        );
        let outcome = check(
            &meta,
            &[Rule::ClosureExcludes(
                "switchyard-daemon",
                &["yardctl", "ratatui"],
            )],
        );
        assert_eq!(
            outcome.violations,
            vec![
                "switchyard-daemon must not depend on ratatui, even indirectly, but: \
                 switchyard-daemon -> helper -> ratatui"
            ]
        );
    }

    #[test]
    fn no_workspace_deps_follows_the_closure() {
        let meta = workspace(
            &["switchyard-wire", "switchyard-config"],
            &["bridge"],
            &[
                ("switchyard-wire", "bridge", DepKind::Normal),
                ("bridge", "switchyard-config", DepKind::Normal),
            ],
        );
        let outcome = check(&meta, &[Rule::NoWorkspaceDeps("switchyard-wire")]);
        assert_eq!(
            outcome.violations,
            vec![
                "switchyard-wire must depend on no workspace crate, but: \
                 switchyard-wire -> bridge -> switchyard-config"
            ]
        );
    }

    #[test]
    fn dependents_count_only_normal_dependencies() {
        let meta = workspace(
            &["yardctl", "a", "b"],
            &[],
            &[
                ("a", "yardctl", DepKind::Normal),
                ("b", "yardctl", DepKind::Dev),
            ],
        );
        let outcome = check(&meta, &[Rule::NoDependents("yardctl")]);
        assert_eq!(
            outcome.violations,
            vec!["no workspace crate may depend on yardctl, but a does"]
        );
    }

    #[test]
    fn a_dev_dependency_cycle_is_reported() {
        let meta = workspace(
            &["a", "b"],
            &[],
            &[("a", "b", DepKind::Normal), ("b", "a", DepKind::Dev)],
        );
        let outcome = check(&meta, &[Rule::AcyclicWorkspace]);
        assert_eq!(
            outcome.violations,
            vec![
                "workspace crates depend on each other in a cycle: a -> b -> a; \
                 a -> b (normal); b -> a (dev)"
            ]
        );
    }
}
