//! `vm-tests/vm/packages.lock`: the Debian packages of the guest, pinned by
//! name, version and the sha256 of the `.deb`. Parsing turns the file into
//! [`Locked`] entries that can only hold well-formed values; nothing after
//! this module looks at the text again.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    /// Lowercase hex, 64 digits.
    pub sha256: String,
}

impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// Reads and parses a lockfile.
pub fn read(path: &Path) -> Result<(Vec<u8>, Vec<Locked>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let locked = parse(text, path)?;
    Ok((bytes, locked))
}

/// Parses lockfile text; `origin` names the file in errors (`file:line: why`).
pub fn parse(text: &str, origin: &Path) -> Result<Vec<Locked>> {
    let mut locked = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", origin.display(), index + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, version, sha256] = fields[..] else {
            bail!(
                "{}: expected `name version sha256`, found {} field(s)",
                at(),
                fields.len()
            );
        };
        if !is_package_name(name) {
            bail!("{}: {name:?} is not a Debian package name", at());
        }
        if !is_version(version) {
            bail!(
                "{}: {version:?} is not a Debian version (package {name})",
                at()
            );
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{}: the sha256 of {name} must be 64 hex digits, found {sha256:?}",
                at()
            );
        }
        if !seen.insert(name.to_owned()) {
            bail!("{}: {name} is locked twice", at());
        }
        locked.push(Locked {
            name: name.to_owned(),
            version: version.to_owned(),
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    if locked.is_empty() {
        bail!("{}: locks no package", origin.display());
    }
    Ok(locked)
}

/// Debian policy 5.6.1: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit.
pub fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Debian policy 5.6.12, loosely: `[epoch:]upstream[-revision]` from the
/// characters it allows, starting with a digit once the epoch is removed.
pub fn is_version(version: &str) -> bool {
    let upstream = match version.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            rest
        }
        None => version,
    };
    upstream.starts_with(|c: char| c.is_ascii_digit())
        && upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.~:".contains(&b))
}

/// The leading comment block of a lockfile, kept when `yard-vm lock`
/// rewrites the entries below it.
pub fn header(text: &str) -> String {
    let mut header = String::new();
    for line in text.lines() {
        if !(line.trim().is_empty() || line.trim_start().starts_with('#')) {
            break;
        }
        header.push_str(line);
        header.push('\n');
    }
    header
}

/// The text of a lockfile with `header` and `locked`.
pub fn render(header: &str, locked: &[Locked]) -> String {
    let mut text = header.to_owned();
    for entry in locked {
        text.push_str(&format!(
            "{} {} {}\n",
            entry.name, entry.version, entry.sha256
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744";

    fn parse_str(text: &str) -> Result<Vec<Locked>> {
        parse(text, Path::new("packages.lock"))
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = format!("# header\n\nbusybox-static 1:1.35.0-4+deb12u1+b1 {SHA}\n");
        let locked = parse_str(&text).unwrap();
        assert_eq!(locked.len(), 1);
        assert_eq!(locked[0].version, "1:1.35.0-4+deb12u1+b1");
    }

    #[test]
    fn a_malformed_line_names_file_and_line() {
        for (line, why) in [
            ("busybox-static 1.0".to_owned(), "found 2 field"),
            ("busybox-static 1.0 abc".to_owned(), "64 hex digits"),
            (format!("Busybox 1.0 {SHA}"), "package name"),
            (format!("busybox-static x:1 {SHA}"), "Debian version"),
        ] {
            let err = parse_str(&format!("# h\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("packages.lock:2: "), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_package_locked_twice_is_an_error() {
        let text = format!("a1 1 {SHA}\na1 2 {SHA}\n");
        assert!(parse_str(&text)
            .unwrap_err()
            .to_string()
            .contains(":2: a1 is locked twice"));
    }

    #[test]
    fn render_keeps_the_header_and_parses_back() {
        let text = format!("# one\n# two\nbusybox-static 1:1.35 {SHA}\n");
        let locked = parse_str(&text).unwrap();
        assert_eq!(render(&header(&text), &locked), text);
    }
}
