//! How messages quote what a file holds. A value in a message is the
//! file's, not Switchyard's: it may be megabytes long or carry terminal
//! escape sequences, and messages go to terminals and logs. Every value is
//! cut to `EXCERPT_CHARS` characters with its total length, and control
//! and bidirectional-formatting characters are escaped (`\u{1b}`). This
//! module also words the parser's messages for a config's author: serde
//! names the Rust type it expected (`expected struct RouteSpecDoc`), which
//! means nothing to someone writing YAML. It never decides whether input
//! is valid.

use std::fmt::{self, Write as _};

/// Characters of a value a message shows.
pub const EXCERPT_CHARS: usize = 64;

/// A value in double quotes, escaped and cut: `"abc…" (5000 characters)`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        let total = self.0.chars().count();
        for c in self.0.chars().take(EXCERPT_CHARS) {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c => escape_char(f, c)?,
            }
        }
        if total > EXCERPT_CHARS {
            write!(f, "…\" ({total} characters)")
        } else {
            f.write_char('"')
        }
    }
}

/// A name inside a message's own quotes (`Gateway "ns/name"`): escaped
/// and cut like `Quoted`, without quotes of its own.
pub struct Bare<'a>(pub &'a str);

impl fmt::Display for Bare<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.chars().count();
        for c in self.0.chars().take(EXCERPT_CHARS) {
            escape_char(f, c)?;
        }
        if total > EXCERPT_CHARS {
            write!(f, "… ({total} characters)")?;
        }
        Ok(())
    }
}

/// Control characters and the bidirectional controls that can make text
/// read differently from what it is (CVE-2021-42574).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A space that separates words; control characters are escaped instead.
fn is_space(c: char) -> bool {
    c.is_whitespace() && !needs_escape(c)
}

fn escape_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    if needs_escape(c) {
        write!(f, "\\u{{{:x}}}", u32::from(c))
    } else {
        f.write_char(c)
    }
}

/// Writes `text` with every control and bidirectional-control character
/// escaped: for messages built from names and values the API server does
/// not restrict (a backendRef's name), which must not reach a terminal or
/// a log as they are.
pub fn write_escaped(f: &mut impl fmt::Write, text: &str) -> fmt::Result {
    text.chars().try_for_each(|c| escape_char(f, c))
}

/// A parser message made fit to show: each quoted (`"…"`, `` `…` ``)
/// segment and each other word longer than `EXCERPT_CHARS` is cut, every
/// control character is escaped, and serde's Rust type names become the
/// YAML shape they stand for.
pub fn tidy(message: &str) -> String {
    let worded = user_words(message);
    let mut out = String::with_capacity(worded.len().min(1024));
    let chars: Vec<char> = worded.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            // The segment runs to the matching quote; a backslash escapes
            // the next character inside double quotes (Rust's `{:?}`).
            let mut units: Vec<String> = Vec::new();
            let mut j = i + 1;
            let mut closed = false;
            while j < chars.len() {
                let d = chars[j];
                if d == c {
                    closed = true;
                    break;
                }
                if c == '"' && d == '\\' && j + 1 < chars.len() {
                    let mut unit = String::from('\\');
                    unit.push(chars[j + 1]);
                    j += 2;
                    if unit == "\\u" && chars.get(j) == Some(&'{') {
                        while j < chars.len() {
                            unit.push(chars[j]);
                            j += 1;
                            if unit.ends_with('}') {
                                break;
                            }
                        }
                    }
                    units.push(unit);
                    continue;
                }
                let mut unit = String::new();
                let _ = escape_char(&mut unit, d);
                units.push(unit);
                j += 1;
            }
            out.push(c);
            for unit in units.iter().take(EXCERPT_CHARS) {
                out.push_str(unit);
            }
            if units.len() > EXCERPT_CHARS {
                out.push('…');
            }
            if closed {
                out.push(c);
            }
            if units.len() > EXCERPT_CHARS {
                let _ = write!(out, " ({} characters)", units.len());
            }
            i = j + 1;
            continue;
        }
        if is_space(c) {
            out.push(c);
            i += 1;
            continue;
        }
        // A word: up to the next space or quote.
        let start = i;
        while chars
            .get(i)
            .is_some_and(|&d| !is_space(d) && d != '"' && d != '`')
        {
            i += 1;
        }
        let word = &chars[start..i];
        for &d in word.iter().take(EXCERPT_CHARS) {
            let _ = escape_char(&mut out, d);
        }
        if word.len() > EXCERPT_CHARS {
            let _ = write!(out, "… ({} characters)", word.len());
        }
    }
    out
}

/// serde's derive says what it expected by the Rust type's name
/// (`expected struct EndpointConditions`, `expected enum TlsMode`); a
/// config's author thinks in YAML shapes.
fn user_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected ") {
        let (before, after) = rest.split_at(at + "expected ".len());
        out.push_str(before);
        let replaced = [
            ("struct ", "a mapping"),
            ("tuple struct ", "a list"),
            ("newtype struct ", "a value"),
            ("unit struct ", "nothing"),
            ("enum ", "one of the allowed values"),
        ]
        .iter()
        .find_map(|(prefix, words)| {
            let name = after.strip_prefix(prefix)?;
            let len = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            (len > 0 && name.starts_with(|c: char| c.is_ascii_uppercase()))
                .then(|| (prefix.len() + len, *words))
        });
        match replaced {
            Some((len, words)) => {
                out.push_str(words);
                rest = &after[len..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "x".repeat(5_000_000);
        let shown = Quoted(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}…\" (5000000 characters)", "x".repeat(64))
        );
        assert_eq!(Quoted("short").to_string(), "\"short\"");
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            Quoted("a\u{1b}]0;x\u{7}\"\n\u{202e}").to_string(),
            "\"a\\u{1b}]0;x\\u{7}\\\"\\u{a}\\u{202e}\""
        );
        assert_eq!(Bare("lb\u{1b}[2J").to_string(), "lb\\u{1b}[2J");
    }

    #[test]
    fn tidy_cuts_quoted_segments_words_and_escapes() {
        let long = "y".repeat(1000);
        let message = format!(
            "spec.{long}: unknown variant `{long}`, expected one of `All`; invalid type: string \"{long}\\\"\", tab\u{1b}"
        );
        let tidy = tidy(&message);
        let cut = "y".repeat(64);
        let word = "y".repeat(59);
        assert_eq!(
            tidy,
            format!(
                "spec.{word}… (1006 characters) unknown variant `{cut}…` (1000 characters), expected one of `All`; invalid type: string \"{cut}…\" (1001 characters), tab\\u{{1b}}"
            )
        );
    }

    #[test]
    fn rust_type_names_become_yaml_shapes() {
        assert_eq!(
            tidy("invalid type: integer `5`, expected struct RouteSpecDoc"),
            "invalid type: integer `5`, expected a mapping"
        );
        assert_eq!(
            tidy("invalid type: sequence, expected enum FromNamespaces"),
            "invalid type: sequence, expected one of the allowed values"
        );
        assert_eq!(tidy("expected a mapping"), "expected a mapping");
    }
}
