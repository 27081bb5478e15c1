//! The header rule: a library's `lib.rs` opens with a `//!` paragraph that
//! says what the crate must never do.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use syn::{Expr, ExprLit, Lit, Meta};

/// What is wrong with the header of the `lib.rs` at `path`, if anything.
pub fn header_problem(path: &Path) -> Result<Option<&'static str>> {
    let source = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    header_problem_in(&source).with_context(|| format!("parsing {}", path.display()))
}

pub fn header_problem_in(source: &str) -> Result<Option<&'static str>> {
    let file = syn::parse_file(source)?;
    // Inner doc attributes are the `//!` lines (and `/*! */` blocks, which
    // may hold several lines each); syn keeps them ahead of every item.
    let lines: Vec<String> = file
        .attrs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|doc| {
            // `split`, not `lines`: an empty `//!` is an empty string, and
            // it is what ends the first paragraph.
            doc.split('\n').map(str::to_string).collect::<Vec<_>>()
        })
        .collect();

    let paragraph: Vec<&str> = lines
        .iter()
        .map(|line| line.trim())
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty())
        .collect();
    if paragraph.is_empty() {
        return Ok(Some("does not open with a `//!` paragraph"));
    }
    let text = paragraph.join(" ").to_lowercase();
    if text.contains("never") || text.contains("must not") {
        Ok(None)
    } else {
        Ok(Some(
            "its first `//!` paragraph does not say what the crate must never do \
             (no \"never\" or \"must not\")",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_says_never_passes() {
        let source = "//! Parses frames.\n//! It never allocates.\n\npub fn f() {}\n";
        assert_eq!(header_problem_in(source).unwrap(), None);
    }

    #[test]
    fn must_not_counts_too() {
        let source = "//! Parses frames; it Must Not block.\nmod a {}\n";
        assert_eq!(header_problem_in(source).unwrap(), None);
    }

    #[test]
    fn never_in_a_later_paragraph_is_not_enough() {
        let source = "//! Parses frames.\n//!\n//! It never allocates.\npub fn f() {}\n";
        assert!(header_problem_in(source).unwrap().is_some());
    }

    #[test]
    fn no_header_fails() {
        let source = "// A plain comment.\npub fn f() {}\n";
        assert_eq!(
            header_problem_in(source).unwrap(),
            Some("does not open with a `//!` paragraph")
        );
    }

    #[test]
    fn an_outer_doc_comment_is_not_a_header() {
        let source = "/// Never mind.\npub fn f() {}\n";
        assert!(header_problem_in(source).unwrap().is_some());
    }
}
