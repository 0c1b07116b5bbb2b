//! Hints for YAML indentation mistakes, from the source text and the line a syntax error names.
//!
//! YAML parsers say *where* they gave up ("did not find expected key at line 16 column 4"),
//! not *why*. The usual why is a line indented differently from the mapping it belongs to,
//! or a tab. [`hint`] looks at the line and the lines above it and says which key to align
//! with. Pure: no I/O, so every case is a unit test.

/// A hint for the YAML syntax error reported at `line` (1-based) of `source`, when the line is
/// indented with a tab or does not line up with any mapping or list it could belong to.
///
/// Returns `None` when the indentation looks plausible (the error has another cause) or the
/// line does not exist.
pub fn hint(source: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let text = lines.get(line.checked_sub(1)?)?;
    if indented_with_tab(text) {
        return Some(tab_hint(line));
    }
    let current = Significant::parse(line, text)?;
    let previous = previous_lines(&lines, line);
    let parent = previous.first()?;
    if indented_with_tab(lines.get(parent.number - 1).copied().unwrap_or("")) {
        return Some(tab_hint(parent.number));
    }
    if parent.opens_block
        && (current.indent > parent.key_col
            || (current.is_item && current.indent >= parent.key_col))
    {
        return None;
    }
    let anchors = anchors(&previous);
    let usable = |a: &&Anchor| current.is_item || !a.is_item;
    if anchors
        .iter()
        .filter(usable)
        .any(|a| a.col == current.indent)
    {
        return None;
    }
    let target = anchors
        .iter()
        .filter(usable)
        .filter(|a| a.col > current.indent)
        .min_by_key(|a| a.col)
        .or_else(|| anchors.iter().filter(usable).max_by_key(|a| a.col))?;
    Some(misaligned_hint(&current, target))
}

/// A hint for serde_yaml's "duplicate entry with key" error, which points at the start of the
/// mapping (`line`, `column`, 1-based) rather than at the duplicate: names the lines the key
/// appears on.
pub fn duplicate_key_hint(source: &str, line: usize, column: usize, key: &str) -> Option<String> {
    let col = column.checked_sub(1)?;
    let mut found = Vec::new();
    for (i, text) in source.lines().enumerate().skip(line.checked_sub(1)?) {
        if i + 1 > line && (text.starts_with("---") || text.starts_with("...")) {
            break;
        }
        let Some(s) = Significant::parse(i + 1, text) else {
            continue;
        };
        if i + 1 > line && s.indent < col {
            break;
        }
        if s.key_col == col && s.key == Some(key) {
            found.push((i + 1).to_string());
        }
    }
    if found.len() < 2 {
        return None;
    }
    let last = found.pop()?;
    Some(format!(
        "\"{key}:\" appears on lines {} and {last} of the same mapping; keep one",
        found.join(", ")
    ))
}

fn tab_hint(line: usize) -> String {
    format!(
        "line {line} is indented with a tab; YAML does not allow tabs for indentation, use spaces"
    )
}

fn misaligned_hint(current: &Significant<'_>, target: &Anchor<'_>) -> String {
    let spaces = match current.indent {
        1 => "1 space".to_string(),
        n => format!("{n} spaces"),
    };
    let (what, at) = match target.key {
        Some(key) if !target.is_item => ("mapping", format!("the \"{key}:\"")),
        _ => ("list", "the \"-\"".to_string()),
    };
    let align = match (current.key, target.key) {
        (Some(mine), Some(theirs)) if !target.is_item => {
            format!("align \"{mine}:\" with \"{theirs}:\"")
        }
        _ => format!("align line {} with {at}", current.number),
    };
    format!(
        "line {} is indented by {spaces} but the {what} it belongs to starts at column {} ({at} on line {}); {align}",
        current.number,
        target.col + 1,
        target.line,
    )
}

fn indented_with_tab(text: &str) -> bool {
    text.chars()
        .take_while(|c| c.is_whitespace())
        .any(|c| c == '\t')
}

/// The significant lines before line `before` (1-based, exclusive), nearest first, stopping at
/// a document marker.
fn previous_lines<'a>(lines: &[&'a str], before: usize) -> Vec<Significant<'a>> {
    let mut out = Vec::new();
    for number in (1..before.min(lines.len() + 1)).rev() {
        let text = lines[number - 1];
        if text.starts_with("---") || text.starts_with("...") {
            break;
        }
        if let Some(s) = Significant::parse(number, text) {
            out.push(s);
        }
    }
    out
}

/// Columns a line following `previous[0]` may start at: the keys and list items of the
/// nearest line and of every line enclosing it.
fn anchors<'a>(previous: &[Significant<'a>]) -> Vec<Anchor<'a>> {
    let mut out = Vec::new();
    let mut bound = usize::MAX;
    for line in previous {
        if line.indent >= bound {
            continue;
        }
        if let Some(key) = line.key {
            out.push(Anchor {
                col: line.key_col,
                line: line.number,
                key: Some(key),
                is_item: false,
            });
        }
        if line.is_item {
            out.push(Anchor {
                col: line.indent,
                line: line.number,
                key: None,
                is_item: true,
            });
        }
        bound = line.indent;
        if bound == 0 {
            break;
        }
    }
    out
}

/// A column a line may align with.
struct Anchor<'a> {
    /// 0-based column.
    col: usize,
    /// 1-based line it comes from.
    line: usize,
    /// The key at that column, for mapping anchors.
    key: Option<&'a str>,
    /// Whether this is the `-` of a list item rather than a mapping key.
    is_item: bool,
}

/// A non-blank, non-comment line, taken apart.
struct Significant<'a> {
    /// 1-based line number.
    number: usize,
    /// Leading spaces: the column (0-based) of the first character.
    indent: usize,
    /// 0-based column of the mapping key, after any `- ` list markers.
    key_col: usize,
    /// The mapping key on this line, if it has one.
    key: Option<&'a str>,
    /// Whether the line starts a list item (`- ...`).
    is_item: bool,
    /// Whether the line's value continues on the following lines (`key:`, `key: |`, `-`).
    opens_block: bool,
}

impl<'a> Significant<'a> {
    fn parse(number: usize, text: &'a str) -> Option<Self> {
        let content = text.trim_start();
        if content.is_empty() || content.starts_with('#') {
            return None;
        }
        let indent = text.len() - content.len();
        let mut key_col = indent;
        let mut rest = content;
        let mut is_item = false;
        while rest == "-" || rest.starts_with("- ") {
            is_item = true;
            let after = rest[1..].trim_start();
            key_col += rest.len() - after.len();
            rest = after;
        }
        let (key, value) = match split_key(rest) {
            Some((k, v)) => (Some(k), v),
            None => (None, rest),
        };
        let value = strip_comment(value).trim();
        let opens_block = rest.is_empty()
            || (key.is_some()
                && (value.is_empty() || value.starts_with('|') || value.starts_with('>')));
        Some(Significant {
            number,
            indent,
            key_col,
            key,
            is_item,
            opens_block,
        })
    }
}

/// `key: value` -> (`key`, `value`); quoted keys keep their quotes off.
fn split_key(rest: &str) -> Option<(&str, &str)> {
    for quote in ['"', '\''] {
        if let Some(inner) = rest.strip_prefix(quote) {
            let end = inner.find(quote)?;
            let after = inner[end + 1..].trim_start();
            let value = after.strip_prefix(':')?;
            return (value.is_empty() || value.starts_with(' ')).then_some((&inner[..end], value));
        }
    }
    if rest.starts_with(['[', '{', '#']) {
        return None;
    }
    let mut search = 0;
    while let Some(pos) = rest[search..].find(':') {
        let at = search + pos;
        let after = &rest[at + 1..];
        if after.is_empty() || after.starts_with([' ', '\t']) {
            return Some((rest[..at].trim_end(), after));
        }
        search = at + 1;
    }
    None
}

/// Drops a trailing ` # comment` (outside quotes; good enough for a hint).
fn strip_comment(value: &str) -> &str {
    if value.trim_start().starts_with('#') {
        return "";
    }
    match value.find(" #") {
        Some(i) if !value[..i].contains(['"', '\'']) => &value[..i],
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requirements block of the getting-started guide, with `operator:` at 3 spaces.
    const GUIDE: &str = "\
apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
name: default
spec:
#Requirements that constrain the parameters of provisioned nodes.
  requirements:
    - key: \"topology.kubernetes.io/zone\" #If not included, all zones are considered
      operator: In
      values: [\"us-east-1a\", \"us-east-1b\"]
    - key: \"kubernetes.io/arch\" #If not included, all architectures are considered
   operator: In
      values: [\"arm64\", \"amd64\"]
";

    #[test]
    fn under_indented_sibling_of_a_list_item_key() {
        assert_eq!(
            hint(GUIDE, 12).as_deref(),
            Some(
                "line 12 is indented by 3 spaces but the mapping it belongs to starts at column 7 \
                 (the \"key:\" on line 11); align \"operator:\" with \"key:\""
            )
        );
    }

    #[test]
    fn over_indented_line_after_a_scalar() {
        let src = "metadata:\n  name: x\n    labels: {}\n";
        assert_eq!(
            hint(src, 3).as_deref(),
            Some(
                "line 3 is indented by 4 spaces but the mapping it belongs to starts at column 3 \
                 (the \"name:\" on line 2); align \"labels:\" with \"name:\""
            )
        );
    }

    #[test]
    fn one_space_is_singular() {
        let src = "spec:\n  a: 1\n b: 2\n";
        let h = hint(src, 3).unwrap_or_default();
        assert!(h.starts_with("line 3 is indented by 1 space but"), "{h}");
        assert!(h.ends_with("align \"b:\" with \"a:\""), "{h}");
    }

    #[test]
    fn tabs_are_named() {
        let src = "spec:\n\tweight: 1\n";
        assert_eq!(
            hint(src, 2).as_deref(),
            Some("line 2 is indented with a tab; YAML does not allow tabs for indentation, use spaces")
        );
        // The parser may stop on the line after the tab.
        let src = "spec:\n\tweight: 1\n  x: 2\n";
        assert!(hint(src, 3)
            .unwrap_or_default()
            .contains("line 2 is indented with a tab"));
    }

    #[test]
    fn plausible_indentation_gets_no_hint() {
        // Aligned with the sibling key.
        assert_eq!(hint("a:\n  b: 1\n  c: [\n", 3), None);
        // Child of a block opener.
        assert_eq!(hint("a:\n  b:\n    c: {\n", 3), None);
        // Back to an enclosing level.
        assert_eq!(hint("a:\n  b:\n    c: 1\nd: ]\n", 4), None);
        // A list item under its key, at the same column.
        assert_eq!(hint("a:\n- b\n- c: ]\n", 3), None);
        // Blank, comment, out-of-range and first lines.
        assert_eq!(hint("a: 1\n\n", 2), None);
        assert_eq!(hint("a: 1\n# x\n", 2), None);
        assert_eq!(hint("a: 1\n", 9), None);
        assert_eq!(hint("a: 1\n", 0), None);
        assert_eq!(hint("  a: 1\n", 1), None);
    }

    #[test]
    fn misaligned_list_item_points_at_the_list() {
        let src = "a:\n  - x\n - y\n";
        assert_eq!(
            hint(src, 3).as_deref(),
            Some(
                "line 3 is indented by 1 space but the list it belongs to starts at column 3 \
                 (the \"-\" on line 2); align line 3 with the \"-\""
            )
        );
    }

    #[test]
    fn duplicate_keys_are_found_within_their_mapping() {
        let src = "spec:\n  requirements:\n    - key: a\n      operator: In\n      key: b\n    - key: c\nkey: d\n";
        assert_eq!(
            duplicate_key_hint(src, 3, 7, "key").as_deref(),
            Some("\"key:\" appears on lines 3 and 5 of the same mapping; keep one")
        );
        let src = "a: 1\nb:\n  a: 2\na: 3\n---\na: 4\n";
        assert_eq!(
            duplicate_key_hint(src, 1, 1, "a").as_deref(),
            Some("\"a:\" appears on lines 1 and 4 of the same mapping; keep one")
        );
        assert_eq!(duplicate_key_hint("{a: 1, a: 2}\n", 1, 1, "a"), None);
    }

    #[test]
    fn document_markers_end_the_search() {
        assert_eq!(hint("a:\n  b: 1\n---\n c: 1\n", 4), None);
    }

    #[test]
    fn keys_are_found_in_the_usual_shapes() {
        let s =
            Significant::parse(1, "    - - key: \"v\" # c").map(|s| (s.key, s.key_col, s.is_item));
        assert!(matches!(s, Some((Some("key"), 8, true))));
        let s = Significant::parse(1, "  \" odd\": 1").map(|s| s.key);
        assert!(matches!(s, Some(Some(" odd"))));
        let s = Significant::parse(1, "  url: http://x").map(|s| (s.key, s.opens_block));
        assert!(matches!(s, Some((Some("url"), false))));
        let s = Significant::parse(1, "  script: |").map(|s| s.opens_block);
        assert_eq!(s, Some(true));
        let s = Significant::parse(1, "  - plain").map(|s| (s.key, s.opens_block));
        assert!(matches!(s, Some((None, false))));
    }
}
