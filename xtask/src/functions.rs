//! Function lengths, for `cargo xtask longest CRATE`: the hot path should
//! read one screen per stage, and this says which functions are longest.
//! Counted in source lines from `fn` to the closing brace, test code left
//! out as the architecture checks leave it out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use syn::spanned::Spanned;
use syn::visit::Visit;

use crate::modules::{is_test_only, ModuleTree};

/// One function and its length.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Function {
    pub lines: usize,
    pub file: PathBuf,
    pub line: usize,
    pub name: String,
}

/// Every non-test function of the crate whose root is `root_file`, longest
/// first.
pub fn longest(root_file: &Path) -> Result<Vec<Function>> {
    let tree = ModuleTree::load(root_file)?;
    let files: BTreeSet<&Path> = tree.modules.iter().map(|m| m.file.as_path()).collect();
    let mut found = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let syntax =
            syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut visitor = Lengths {
            file,
            found: &mut found,
        };
        visitor.visit_file(&syntax);
    }
    found.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.cmp(b)));
    Ok(found)
}

struct Lengths<'a> {
    file: &'a Path,
    found: &'a mut Vec<Function>,
}

impl Lengths<'_> {
    /// From the signature to the closing brace: doc comments and
    /// attributes do not make a function long.
    fn record(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let name = &sig.ident;
        let start = sig.span().start().line;
        let end = block.brace_token.span.close().end().line;
        self.found.push(Function {
            lines: end.saturating_sub(start) + 1,
            file: self.file.to_owned(),
            line: start,
            name: name.to_string(),
        });
    }
}

impl<'ast> Visit<'ast> for Lengths<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Inline modules are walked here; file modules are files of their own.
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            self.record(&item.sig, &item.block);
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test_only(&item.attrs) {
            self.record(&item.sig, &item.block);
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            if !is_test_only(&item.attrs) {
                self.record(&item.sig, block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_functions_are_left_out_and_lengths_count_every_line() {
        let dir = std::env::temp_dir().join(format!("xtask-functions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("lib.rs");
        std::fs::write(
            &lib,
            "fn short() {}\n\n/// Documented at length,\n/// which does not count.\nfn long() {\n    let a = 1;\n    let _ = a;\n}\n\n\
             #[cfg(test)]\nmod tests {\n    fn longest_of_all() {\n\n\n\n\n\n    }\n}\n",
        )
        .unwrap();
        let found = longest(&lib).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<(&str, usize)> = found.iter().map(|f| (f.name.as_str(), f.lines)).collect();
        assert_eq!(names, [("long", 4), ("short", 1)]);
    }
}
