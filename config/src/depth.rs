//! A linear scan of YAML text that bounds its nesting before a parser sees
//! it. The YAML parser Switchyard uses spends time quadratic in the depth
//! of flow collections (each `[` or `{` keeps a pending key that every
//! later token revisits), so a 500 KB file of nested `{a: ` took over a
//! minute to refuse. This module only measures depth: it follows quotes,
//! comments, block scalars and flow brackets well enough to count what a
//! parser would nest, erring towards counting more, and never judges
//! whether the text is valid YAML.

/// Deepest nesting a file may have. Kubernetes objects stay far below:
/// the Gateway API examples stay within 25 levels by this count, and the
/// Gateway API CRDs load.
pub const MAX_DEPTH: usize = 100;

/// The first 1-based line at which the text nests deeper than `limit`
/// levels, counting each indented block and each open `[` or `{`.
pub fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let mut scan = Scan::default();
    for (index, line) in text.split('\n').enumerate() {
        if scan.line(line.strip_suffix('\r').unwrap_or(line), limit) {
            return Some(index + 1);
        }
    }
    None
}

#[derive(Default)]
struct Scan {
    /// Columns of the open block collections, innermost last.
    blocks: Vec<usize>,
    /// Open `[` and `{`.
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`): lines indented deeper than this
    /// column, and blank lines, are its text.
    block_scalar: Option<usize>,
    /// The previous line ended inside a plain scalar whose line started
    /// at this column: deeper lines continue it.
    plain: Option<usize>,
    /// In flow context a node may start on the next line.
    flow_node_start: bool,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether position `i` ends a token: end of line or a blank.
fn ends(line: &[u8], i: usize) -> bool {
    line.get(i).is_none_or(|&b| is_blank(b))
}

impl Scan {
    fn depth(&self) -> usize {
        self.blocks.len() + self.flow
    }

    /// Opens a block collection at `column` unless one is open there.
    fn push_block(&mut self, column: usize) {
        while self.blocks.last().is_some_and(|&c| c > column) {
            self.blocks.pop();
        }
        if self.blocks.last() != Some(&column) {
            self.blocks.push(column);
        }
    }

    /// Scans one line; true if it nests deeper than `limit`.
    fn line(&mut self, text: &str, limit: usize) -> bool {
        let line = text.as_bytes();
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let content = line.get(indent..).unwrap_or_default();
        let blank = content.iter().all(|&b| is_blank(b));

        if let Some(column) = self.block_scalar {
            if blank || indent > column {
                return false;
            }
            self.block_scalar = None;
        }
        if self.quote.is_none()
            && self.flow == 0
            && (content.starts_with(b"---") || content.starts_with(b"..."))
            && indent == 0
            && ends(line, 3)
        {
            // A document boundary closes whatever the last one left open.
            *self = Self::default();
            return self.tokens(line, 3, true, limit);
        }
        if self.quote.is_none() && self.flow == 0 && indent == 0 && content.first() == Some(&b'%') {
            return false;
        }
        if self.quote.is_some() {
            return self.tokens(line, 0, false, limit);
        }
        if blank || content.first() == Some(&b'#') {
            return false;
        }
        if self.flow > 0 {
            let start = self.flow_node_start;
            return self.tokens(line, indent, start, limit);
        }
        if let Some(column) = self.plain.take() {
            if indent > column {
                // A plain scalar's next line is more of its text, not a
                // node: its leading quote opens nothing.
                return self.tokens(line, indent, false, limit);
            }
        }
        self.push_block(indent);
        if self.depth() > limit {
            return true;
        }
        self.tokens(line, indent, true, limit)
    }

    /// Scans `line` from `i`; `node_start` when a node may begin there.
    fn tokens(&mut self, line: &[u8], mut i: usize, mut node_start: bool, limit: usize) -> bool {
        let line_indent = line.iter().take_while(|&&b| b == b' ').count();
        let mut in_plain = false;
        while i < line.len() {
            if let Some(q) = self.quote {
                match line[i] {
                    b'\\' if q == b'"' => i += 2,
                    b'\'' if q == b'\'' && line.get(i + 1) == Some(&b'\'') => i += 2,
                    b if b == q => {
                        self.quote = None;
                        i += 1;
                    }
                    _ => i += 1,
                }
                continue;
            }
            let b = line[i];
            if is_blank(b) {
                i += 1;
                if line.get(i) == Some(&b'#') {
                    break;
                }
                continue;
            }
            if b == b'#' && i == 0 {
                break;
            }
            let flow = self.flow > 0;
            match b {
                b'[' | b'{' if node_start || flow => {
                    self.flow += 1;
                    if self.depth() > limit {
                        return true;
                    }
                    node_start = true;
                    in_plain = false;
                    i += 1;
                }
                b']' | b'}' if flow => {
                    self.flow -= 1;
                    node_start = false;
                    in_plain = false;
                    i += 1;
                }
                b',' if flow => {
                    node_start = true;
                    in_plain = false;
                    i += 1;
                }
                b'"' | b'\'' if node_start => {
                    self.quote = Some(b);
                    node_start = false;
                    i += 1;
                }
                b'-' | b'?' if node_start && !flow && ends(line, i + 1) => {
                    // A block sequence entry or explicit key: what follows
                    // on this line is nested one level deeper.
                    i += 1;
                    while line.get(i).is_some_and(|&c| is_blank(c)) {
                        i += 1;
                    }
                    if i < line.len() && line[i] != b'#' {
                        self.push_block(i);
                        if self.depth() > limit {
                            return true;
                        }
                    }
                }
                b':' if ends(line, i + 1)
                    || (flow
                        && matches!(line.get(i + 1), Some(b',' | b'[' | b']' | b'{' | b'}'))) =>
                {
                    node_start = true;
                    in_plain = false;
                    i += 1;
                }
                b'|' | b'>' if node_start && !flow => {
                    self.block_scalar = Some(line_indent);
                    return false;
                }
                b'&' | b'!' if node_start => {
                    // Anchors and tags precede the node they name.
                    while i < line.len() && !is_blank(line[i]) {
                        i += 1;
                    }
                }
                _ => {
                    node_start = false;
                    in_plain = true;
                    i += 1;
                }
            }
        }
        if self.flow > 0 {
            self.flow_node_start = node_start;
        } else if in_plain && self.quote.is_none() {
            self.plain = Some(line_indent);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(text: &str) -> usize {
        (1..=200)
            .find(|&limit| too_deep(text, limit).is_none())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn block_indentation_and_flow_brackets_count_alike() {
        assert_eq!(depth_of("a: 1\n"), 1);
        assert_eq!(depth_of("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth_of("a: {b: [1, {c: 2}]}\n"), 4);
        // A sequence item counts as a level even when it is a scalar.
        assert_eq!(depth_of("- - - x\n"), 4);
        assert_eq!(depth_of("a:\n- b: 1\n  c: 2\n"), 2);
    }

    #[test]
    fn siblings_and_closed_brackets_do_not_add_up() {
        let text = "a: [1]\nb: [2]\nc:\n  d: {e: 1}\n  f: {g: 2}\nh: 3\n";
        assert_eq!(depth_of(text), 3);
    }

    #[test]
    fn brackets_in_quotes_comments_block_scalars_and_plain_text_do_not_count() {
        let text = "\
a: \"[[[[{{{{\" # [[[[
b: '{{{{''[[['
c: |
  [[[[[[
      {{{{{{
d: x[[[[y
e: \"multi [[[[
  line [[[\"
";
        assert_eq!(depth_of(text), 1);
    }

    #[test]
    fn a_document_boundary_resets_the_count() {
        let one = "a:\n  b:\n    c: 1\n";
        assert_eq!(depth_of(&format!("{one}---\n{one}")), 3);
    }

    #[test]
    fn the_line_reported_is_where_the_limit_is_crossed() {
        let text = "a: 1\nb:\n  c:\n    d: [[[[1]]]]\n";
        assert_eq!(too_deep(text, 3), Some(4));
        let deep = "{a: ".repeat(200);
        assert_eq!(too_deep(&format!("x: 1\n{deep}\n"), MAX_DEPTH), Some(2));
    }

    #[test]
    fn flow_collections_spanning_lines_keep_their_depth() {
        let text = "a: [\n  [\n    [1,\n     2]\n  ]\n]\nb: 1\n";
        assert_eq!(depth_of(text), 4);
    }

    /// Every YAML file under `dir`, recursively.
    fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }

    #[test]
    fn upstream_examples_and_the_examples_are_well_within_the_limit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        yaml_files(&root.join("tests/conformance/upstream"), &mut files);
        yaml_files(&root.join("examples"), &mut files);
        assert!(files.len() > 20, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let depth = depth_of(&text);
            assert!(
                (2..=MAX_DEPTH / 4).contains(&depth),
                "{}: {depth}",
                path.display()
            );
        }
    }
}
