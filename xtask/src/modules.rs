//! A crate's module tree as rustc would load it, with what each module
//! declares (child modules, items, imports) and every path it writes.
//!
//! Items under `#[cfg(test)]` are left out entirely: test code does not
//! shape the architecture.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Expr, ExprLit, Item, Lit, Meta, Token, UseTree};

/// Index of a module in [`ModuleTree::modules`]; the crate root is 0.
pub type ModId = usize;

pub const ROOT: ModId = 0;

#[derive(Debug)]
pub struct ModuleTree {
    pub modules: Vec<Module>,
    /// Modules that were skipped, and why.
    pub notes: Vec<String>,
}

#[derive(Debug)]
pub struct Module {
    /// Names from the crate root down; empty for the root.
    pub path: Vec<String>,
    pub parent: Option<ModId>,
    /// The file the module's items are in (its parent's for an inline module).
    pub file: PathBuf,
    pub children: BTreeMap<String, ModId>,
    /// Names of items the module defines itself.
    pub items: BTreeSet<String>,
    /// Names bound by `use`, including those in function bodies: they all
    /// resolve the same way, from this module.
    pub imports: Vec<Import>,
    /// Paths of `use ...::*`.
    pub globs: Vec<Vec<String>>,
    /// Every path written in the module that may refer into the crate.
    pub refs: Vec<Reference>,
}

#[derive(Debug, Clone)]
pub struct Import {
    pub name: String,
    pub path: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Reference {
    /// As written, `crate`, `self` and `super` included.
    pub path: Vec<String>,
    pub line: usize,
}

impl Module {
    pub fn name(&self) -> String {
        if self.path.is_empty() {
            "crate".to_string()
        } else {
            self.path.join("::")
        }
    }
}

/// Where `mod foo;` looks for its file, following the reference's rules for
/// mod-rs and non-mod-rs files.
struct Dirs {
    /// The directory of the file being read: the base of `#[path]` outside
    /// inline modules.
    file_dir: PathBuf,
    /// Where child module files live.
    child_dir: PathBuf,
    inline: bool,
}

impl ModuleTree {
    /// Loads the module tree that starts at a crate root (`lib.rs`,
    /// `main.rs`, ...).
    pub fn load(root_file: &Path) -> Result<Self> {
        let dir = root_file
            .parent()
            .with_context(|| format!("{} has no parent directory", root_file.display()))?
            .to_path_buf();
        let mut tree = ModuleTree {
            modules: Vec::new(),
            notes: Vec::new(),
        };
        tree.load_file(Vec::new(), None, root_file, dir)?;
        Ok(tree)
    }

    fn push(&mut self, path: Vec<String>, parent: Option<ModId>, file: PathBuf) -> ModId {
        let id = self.modules.len();
        if let (Some(parent), Some(name)) = (parent, path.last()) {
            self.modules[parent].children.insert(name.clone(), id);
        }
        self.modules.push(Module {
            path,
            parent,
            file,
            children: BTreeMap::new(),
            items: BTreeSet::new(),
            imports: Vec::new(),
            globs: Vec::new(),
            refs: Vec::new(),
        });
        id
    }

    fn load_file(
        &mut self,
        path: Vec<String>,
        parent: Option<ModId>,
        file: &Path,
        child_dir: PathBuf,
    ) -> Result<ModId> {
        let source =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast =
            syn::parse_file(&source).with_context(|| format!("parsing {}", file.display()))?;
        let file_dir = file
            .parent()
            .with_context(|| format!("{} has no parent directory", file.display()))?
            .to_path_buf();
        let id = self.push(path, parent, file.to_path_buf());
        let dirs = Dirs {
            file_dir,
            child_dir,
            inline: false,
        };
        self.load_items(id, &ast.items, &dirs)?;
        Ok(id)
    }

    fn load_items(&mut self, id: ModId, items: &[Item], dirs: &Dirs) -> Result<()> {
        let mut collector = Collector::default();
        for item in items {
            match item {
                Item::Mod(module) => {
                    if !is_test_only(&module.attrs) {
                        self.load_mod(id, module, dirs)?;
                    }
                }
                _ => {
                    if let Some(name) = item_name(item) {
                        if !is_test_only(item_attrs(item)) {
                            self.modules[id].items.insert(name);
                        }
                    }
                    collector.visit_item(item);
                }
            }
        }
        let module = &mut self.modules[id];
        module.imports.extend(collector.imports);
        module.globs.extend(collector.globs);
        module.refs.extend(collector.refs);
        Ok(())
    }

    fn load_mod(&mut self, parent: ModId, module: &syn::ItemMod, dirs: &Dirs) -> Result<()> {
        let name = module.ident.unraw().to_string();
        let path_attr = path_attribute(&module.attrs);
        let mut path = self.modules[parent].path.clone();
        path.push(name.clone());

        if let Some((_, items)) = &module.content {
            let file = self.modules[parent].file.clone();
            let id = self.push(path, Some(parent), file);
            let inner = Dirs {
                file_dir: dirs.file_dir.clone(),
                child_dir: dirs.child_dir.join(path_attr.as_deref().unwrap_or(&name)),
                inline: true,
            };
            return self.load_items(id, items, &inner);
        }

        let file = match &path_attr {
            Some(relative) if dirs.inline => dirs.child_dir.join(relative),
            Some(relative) => dirs.file_dir.join(relative),
            None => {
                let flat = dirs.child_dir.join(format!("{name}.rs"));
                if flat.is_file() {
                    flat
                } else {
                    dirs.child_dir.join(&name).join("mod.rs")
                }
            }
        };
        if !file.is_file() {
            let declared_in = self.modules[parent].file.display().to_string();
            // A module behind a `cfg` rustc does not build may have no file.
            if module.attrs.iter().any(|a| a.path().is_ident("cfg")) {
                self.notes.push(format!(
                    "skipped `mod {name}` in {declared_in}: {} does not exist (cfg'd out)",
                    file.display()
                ));
                return Ok(());
            }
            bail!(
                "`mod {name}` in {declared_in}: {} does not exist",
                file.display()
            );
        }
        // A file loaded through `#[path]` counts as a mod-rs file: its own
        // children live beside it.
        let is_mod_rs = path_attr.is_some() || file.file_name().is_some_and(|f| f == "mod.rs");
        let child_dir = if is_mod_rs {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            dirs.child_dir.join(&name)
        };
        self.load_file(path, Some(parent), &file, child_dir)?;
        Ok(())
    }
}

/// Whether a `#[cfg(...)]` among `attrs` can only hold under `cfg(test)`:
/// `test` itself or an `all(...)` that requires it.
pub fn is_test_only(attrs: &[Attribute]) -> bool {
    fn requires_test(meta: &Meta) -> bool {
        match meta {
            Meta::Path(path) => path.is_ident("test"),
            Meta::List(list) if list.path.is_ident("all") => list
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|predicates| predicates.iter().any(requires_test)),
            _ => false,
        }
    }
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<Meta>()
                .is_ok_and(|predicate| requires_test(&predicate))
    })
}

fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The name an item binds in its module, for items other than modules and
/// imports.
fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::ExternCrate(i) => i.rename.as_ref().map_or(&i.ident, |(_, rename)| rename),
        Item::Fn(i) => &i.sig.ident,
        Item::Macro(i) => i.ident.as_ref()?,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.unraw().to_string())
}

fn line_of(ident: &proc_macro2::Ident) -> usize {
    ident.span().start().line
}

/// Collects the imports and paths of one module's items, except nested
/// modules (the tree loader gives those their own module).
#[derive(Default)]
struct Collector {
    imports: Vec<Import>,
    globs: Vec<Vec<String>>,
    refs: Vec<Reference>,
}

impl Collector {
    fn use_tree(&mut self, tree: &UseTree, prefix: &mut Vec<String>) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.unraw().to_string());
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(n) => {
                let name = n.ident.unraw().to_string();
                let path = extend(prefix, &name);
                let bound = path.last().cloned().unwrap_or(name);
                self.bind(bound, path, line_of(&n.ident));
            }
            UseTree::Rename(r) => {
                let path = extend(prefix, &r.ident.unraw().to_string());
                let rename = r.rename.unraw().to_string();
                if rename == "_" {
                    self.refs.push(Reference {
                        path,
                        line: line_of(&r.ident),
                    });
                } else {
                    self.bind(rename, path, line_of(&r.ident));
                }
            }
            UseTree::Glob(g) => {
                let line = g.star_token.span.start().line;
                self.globs.push(prefix.clone());
                self.refs.push(Reference {
                    path: prefix.clone(),
                    line,
                });
            }
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(tree, prefix);
                }
            }
        }
    }

    fn bind(&mut self, name: String, path: Vec<String>, line: usize) {
        self.refs.push(Reference {
            path: path.clone(),
            line,
        });
        self.imports.push(Import { name, path });
    }

    fn path_ref(&mut self, segments: Vec<String>, line: usize) {
        // A single segment is a local name or one a `use` already brought
        // in (and recorded): only longer paths add anything.
        if segments.len() >= 2 {
            self.refs.push(Reference {
                path: segments,
                line,
            });
        }
    }

    /// Macro input is opaque to syn, so paths in it are picked out of the
    /// tokens: runs of `ident :: ident ...`. A run after `::` is an extern
    /// path; one after `$` is a macro metavariable, unless it is `$crate`.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            let TokenTree::Ident(first) = &tokens[i] else {
                if let TokenTree::Group(group) = &tokens[i] {
                    self.scan_tokens(group.stream());
                }
                i += 1;
                continue;
            };
            let absolute = i >= 2 && is_path_sep(&tokens[i - 2], &tokens[i - 1]);
            let after_dollar = i >= 1 && is_punct(&tokens[i - 1], '$');
            let mut segments = vec![first.unraw().to_string()];
            let mut next = i + 1;
            while next + 2 < tokens.len() {
                let (TokenTree::Punct(_), TokenTree::Punct(_), TokenTree::Ident(ident)) =
                    (&tokens[next], &tokens[next + 1], &tokens[next + 2])
                else {
                    break;
                };
                if !is_path_sep(&tokens[next], &tokens[next + 1]) {
                    break;
                }
                segments.push(ident.unraw().to_string());
                next += 3;
            }
            if !absolute && (!after_dollar || segments[0] == "crate") {
                self.path_ref(segments, line_of(first));
            }
            i = next;
        }
    }
}

fn extend(prefix: &[String], name: &str) -> Vec<String> {
    // `use a::b::{self}` binds `b` to `a::b`.
    let mut path = prefix.to_vec();
    if name != "self" || path.is_empty() {
        path.push(name.to_string());
    }
    path
}

fn is_punct(token: &TokenTree, ch: char) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == ch)
}

fn is_path_sep(first: &TokenTree, second: &TokenTree) -> bool {
    matches!(first, TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(second, ':')
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test_only(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    // A module inside a function body is not part of the tree; such modules
    // are rare enough to leave out.
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[Attribute] = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast syn::TraitItem) {
        let attrs: &[Attribute] = match item {
            syn::TraitItem::Const(i) => &i.attrs,
            syn::TraitItem::Fn(i) => &i.attrs,
            syn::TraitItem::Type(i) => &i.attrs,
            syn::TraitItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_field(&mut self, field: &'ast syn::Field) {
        if !is_test_only(&field.attrs) {
            visit::visit_field(self, field);
        }
    }

    fn visit_variant(&mut self, variant: &'ast syn::Variant) {
        if !is_test_only(&variant.attrs) {
            visit::visit_variant(self, variant);
        }
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if !is_test_only(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if !is_test_only(&local.attrs) {
            visit::visit_local(self, local);
        }
    }

    // Attribute arguments (derives, serde's string paths, docs) are not
    // paths the compiler resolves in this module.
    fn visit_attribute(&mut self, _: &'ast Attribute) {}

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if item.leading_colon.is_none() {
            self.use_tree(&item.tree, &mut Vec::new());
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first() {
                let segments = path
                    .segments
                    .iter()
                    .map(|s| s.ident.unraw().to_string())
                    .collect();
                self.path_ref(segments, line_of(&first.ident));
            }
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.scan_tokens(mac.tokens.clone());
    }
}
