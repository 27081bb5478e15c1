//! What `cargo metadata` says about the workspace: its crates, their
//! targets, and (when asked for) the resolved dependency graph.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Metadata {
    pub workspace_root: PathBuf,
    /// Workspace members, in `cargo metadata`'s order.
    pub members: Vec<Package>,
    /// Package id to name, for every package cargo listed.
    pub names: BTreeMap<String, String>,
    /// Package id to its resolved dependencies; empty without the resolve.
    pub deps: BTreeMap<String, Vec<Dependency>>,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub manifest_dir: PathBuf,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kinds: Vec<String>,
    pub src_path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Dependency {
    pub id: String,
    pub kinds: Vec<DepKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepKind {
    Normal,
    Dev,
    Build,
}

impl DepKind {
    pub fn label(self) -> &'static str {
        match self {
            DepKind::Normal => "normal",
            DepKind::Dev => "dev",
            DepKind::Build => "build",
        }
    }
}

impl Target {
    pub fn is(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

impl Metadata {
    /// Runs `cargo metadata` on the workspace at `root`; `with_resolve`
    /// asks for the dependency graph too, which needs every dependency's
    /// manifest.
    pub fn load(root: &Path, with_resolve: bool) -> Result<Self> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .arg("metadata")
            .args(["--format-version", "1"])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"));
        if !with_resolve {
            command.arg("--no-deps");
        }
        let output = command
            .output()
            .context("running cargo metadata (is cargo on PATH?)")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let json: Value =
            serde_json::from_slice(&output.stdout).context("parsing cargo metadata's output")?;
        Self::from_json(&json)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let workspace_root = PathBuf::from(str_field(json, "workspace_root")?);
        let member_ids: Vec<&str> = array_field(json, "workspace_members")?
            .iter()
            .map(|id| id.as_str().context("a workspace member id is not a string"))
            .collect::<Result<_>>()?;

        let mut names = BTreeMap::new();
        let mut packages = BTreeMap::new();
        for package in array_field(json, "packages")? {
            let package = parse_package(package)?;
            names.insert(package.id.clone(), package.name.clone());
            packages.insert(package.id.clone(), package);
        }
        let members = member_ids
            .iter()
            .map(|id| {
                packages
                    .get(*id)
                    .cloned()
                    .with_context(|| format!("workspace member {id} is not among the packages"))
            })
            .collect::<Result<_>>()?;

        let mut deps = BTreeMap::new();
        if let Some(resolve) = json.get("resolve").filter(|r| !r.is_null()) {
            for node in array_field(resolve, "nodes")? {
                let id = str_field(node, "id")?.to_string();
                let node_deps = array_field(node, "deps")?
                    .iter()
                    .map(parse_dependency)
                    .collect::<Result<_>>()
                    .with_context(|| format!("dependencies of {id}"))?;
                deps.insert(id, node_deps);
            }
        }

        Ok(Metadata {
            workspace_root,
            members,
            names,
            deps,
        })
    }

    pub fn member(&self, name: &str) -> Option<&Package> {
        self.members.iter().find(|p| p.name == name)
    }

    pub fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    /// The dependencies of `id` of any of `kinds`.
    pub fn deps_of<'a>(
        &'a self,
        id: &str,
        kinds: &'a [DepKind],
    ) -> impl Iterator<Item = &'a Dependency> + 'a {
        self.deps
            .get(id)
            .into_iter()
            .flatten()
            .filter(move |d| d.kinds.iter().any(|k| kinds.contains(k)))
    }
}

fn parse_package(json: &Value) -> Result<Package> {
    let name = str_field(json, "name")?.to_string();
    let manifest = PathBuf::from(str_field(json, "manifest_path")?);
    let targets = array_field(json, "targets")?
        .iter()
        .map(|t| {
            Ok(Target {
                name: str_field(t, "name")?.to_string(),
                kinds: array_field(t, "kind")?
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                src_path: PathBuf::from(str_field(t, "src_path")?),
            })
        })
        .collect::<Result<_>>()
        .with_context(|| format!("targets of {name}"))?;
    Ok(Package {
        id: str_field(json, "id")?.to_string(),
        manifest_dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
        name,
        targets,
    })
}

fn parse_dependency(json: &Value) -> Result<Dependency> {
    let kinds = array_field(json, "dep_kinds")?
        .iter()
        .map(|k| match k.get("kind").and_then(Value::as_str) {
            None => Ok(DepKind::Normal),
            Some("dev") => Ok(DepKind::Dev),
            Some("build") => Ok(DepKind::Build),
            Some(other) => bail!("unknown dependency kind {other:?}"),
        })
        .collect::<Result<_>>()?;
    Ok(Dependency {
        id: str_field(json, "pkg")?.to_string(),
        kinds,
    })
}

fn str_field<'a>(json: &'a Value, key: &str) -> Result<&'a str> {
    json.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("cargo metadata: no string field {key:?}"))
}

fn array_field<'a>(json: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    json.get(key)
        .and_then(Value::as_array)
        .with_context(|| format!("cargo metadata: no array field {key:?}"))
}
