//! Reading manifests the way `kubectl apply -f` does: files, directories (`-R` to recurse) and
//! standard input (`-f -`), split into documents (`---`) and `List` items.
//!
//! [`load`] does the I/O; [`documents`] is pure and turns one [`Manifest`] into
//! [`Document`]s, each either a parsed value or the syntax error that stopped the parser.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::indentation;

/// The display name of standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Extensions read from directories, as kubectl does.
pub const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// kubectl's file flags: `-f/--filename` and `-R/--recursive`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct FilenameArgs {
    /// Files or directories to read (.yaml, .yml, .json); repeat the flag or separate with
    /// commas; `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required = true,
        value_delimiter = ','
    )]
    pub filenames: Vec<PathBuf>,

    /// Read the directories given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// The syntax a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, possibly several `---`-separated documents (JSON is read as YAML too).
    Yaml,
    /// JSON, possibly several concatenated values.
    Json,
}

/// One file's (or standard input's) text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// How to name the file in messages: the path as given, or [`STDIN_NAME`].
    pub name: String,
    /// The text.
    pub text: String,
    /// How to parse it.
    pub format: Format,
}

/// One document of a manifest (or one item of a `List` document).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file's display name.
    pub file: String,
    /// 1-based position of the document in the file, counting empty documents.
    pub index: usize,
    /// 1-based position in the `items` of a `List` document.
    pub item: Option<usize>,
    /// The parsed document, or why it could not be parsed.
    pub content: Content,
}

/// What a document holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A parsed (non-empty) document.
    Value(Value),
    /// The parser stopped here; the rest of the file is not read.
    SyntaxError(SyntaxError),
}

/// A YAML or JSON syntax error, with where it is and a hint when the cause is recognisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyntaxError {
    /// `YAML` or `JSON`.
    #[serde(skip)]
    pub language: &'static str,
    /// 1-based line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The parser's message, without the position.
    pub message: String,
    /// What probably went wrong, e.g. a misaligned line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

// === impl Manifest ===

impl Manifest {
    /// A manifest from text, its format chosen from the name's extension, or for standard input
    /// from the first character (`{` or `[` means JSON).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let name = name.into();
        let mut text: String = text.into();
        if text.starts_with('\u{feff}') {
            text.remove(0);
        }
        let format = match extension(Path::new(&name)) {
            Some(ext) if ext == "json" => Format::Json,
            _ if name == STDIN_NAME && text.trim_start().starts_with(['{', '[']) => Format::Json,
            _ => Format::Yaml,
        };
        Manifest { name, text, format }
    }
}

/// Reads every `-f` argument, in order. Fails before reading anything further when a path is
/// missing or unreadable, naming it.
pub fn load(args: &FilenameArgs, stdin: &mut dyn Read) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let mut stdin_used = false;
    for path in &args.filenames {
        if path.as_os_str() == "-" {
            if stdin_used {
                return Err(Error::StdinTwice);
            }
            stdin_used = true;
            let mut text = String::new();
            stdin.read_to_string(&mut text).map_err(Error::ReadStdin)?;
            out.push(Manifest::new(STDIN_NAME, text));
            continue;
        }
        let meta = fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound(path.clone()),
            _ => Error::Read {
                path: path.clone(),
                source,
            },
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            list_dir(path, args.recursive, &mut files)?;
            if files.is_empty() {
                return Err(Error::EmptyDirectory {
                    path: path.clone(),
                    recursive: args.recursive,
                });
            }
            for file in files {
                out.push(read_file(&file)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    Ok(Manifest::new(path.display().to_string(), text))
}

/// Manifest files in `dir`, sorted by path; sub-directories only when `recursive` (symbolic
/// links to directories are not followed, so a link cycle cannot loop).
fn list_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let read_dir_error = |source| Error::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let file_type = entry.file_type().map_err(read_dir_error)?;
        entries.push((entry.path(), file_type));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file_type) in entries {
        if file_type.is_dir() {
            if recursive {
                list_dir(&path, recursive, out)?;
            }
        } else if extension(&path).is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
            && fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            out.push(path);
        }
    }
    Ok(())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Splits a manifest into its non-empty documents, expanding `List` documents into their
/// items. A syntax error ends the list: nothing after it can be trusted.
pub fn documents(manifest: &Manifest) -> Vec<Document> {
    let mut out = Vec::new();
    let mut push = |index: usize, value: Value| {
        for (item, value) in expand_list(value) {
            out.push(Document {
                file: manifest.name.clone(),
                index,
                item,
                content: Content::Value(value),
            });
        }
    };
    let error = match manifest.format {
        Format::Yaml => split_yaml(&manifest.text, &mut push),
        Format::Json => split_json(&manifest.text, &mut push),
    };
    if let Some((index, error)) = error {
        out.push(Document {
            file: manifest.name.clone(),
            index,
            item: None,
            content: Content::SyntaxError(error),
        });
    }
    out
}

/// Feeds each non-empty document to `push`; returns the syntax error that stopped parsing, with
/// the index of the document it is in.
fn split_yaml(text: &str, push: &mut dyn FnMut(usize, Value)) -> Option<(usize, SyntaxError)> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        // Through serde_yaml's own Value, which rejects duplicate keys (serde_json's map would
        // silently keep the last one).
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(yaml) => match serde_json::to_value(&yaml) {
                Ok(value) => push(i + 1, value),
                Err(e) => {
                    let error = SyntaxError {
                        language: "YAML",
                        line: None,
                        column: None,
                        message: format!("the document cannot be read as JSON: {e}"),
                        hint: Some("use strings as mapping keys".into()),
                    };
                    return Some((i + 1, error));
                }
            },
            // serde_yaml keeps returning the same error; stop at the first.
            Err(e) => return Some((i + 1, yaml_error(text, &e))),
        }
    }
    None
}

fn split_json(text: &str, push: &mut dyn FnMut(usize, Value)) -> Option<(usize, SyntaxError)> {
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        match value {
            Ok(Value::Null) => {}
            Ok(value) => push(i + 1, value),
            Err(e) => {
                let (line, column) = (e.line(), e.column());
                let message = strip_position(&e.to_string(), line, column);
                let error = SyntaxError {
                    language: "JSON",
                    line: Some(line).filter(|l| *l > 0),
                    column: Some(column).filter(|_| line > 0),
                    message,
                    hint: None,
                };
                return Some((i + 1, error));
            }
        }
    }
    None
}

fn yaml_error(text: &str, e: &serde_yaml::Error) -> SyntaxError {
    let location = e.location();
    let (line, column) = location
        .as_ref()
        .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
    let message = match (line, column) {
        (Some(l), Some(c)) => strip_position(&e.to_string(), l, c),
        _ => e.to_string(),
    };
    let hint = match (line, column, duplicate_key(&message)) {
        (Some(l), Some(c), Some(key)) => indentation::duplicate_key_hint(text, l, c, key),
        (Some(l), _, None) => indentation::hint(text, l),
        _ => None,
    };
    SyntaxError {
        language: "YAML",
        line,
        column,
        message,
        hint,
    }
}

/// The key of serde_yaml's `duplicate entry with key "spec"`.
fn duplicate_key(message: &str) -> Option<&str> {
    let rest = message.split_once("duplicate entry with key \"")?.1;
    rest.rsplit_once('"').map(|(key, _)| key)
}

/// Removes the parser's own " at line L column C" (we print `file:L:C:` instead).
fn strip_position(message: &str, line: usize, column: usize) -> String {
    message.replacen(&format!(" at line {line} column {column}"), "", 1)
}

/// `kind: List` (or `FooList`) documents become their items; anything else stays whole.
fn expand_list(value: Value) -> Vec<(Option<usize>, Value)> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        return vec![(None, value)];
    }
    match value {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Some(i + 1), v))
                .collect(),
            _ => Vec::new(),
        },
        other => vec![(None, other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(docs: &[Document]) -> Vec<(usize, Option<usize>, Value)> {
        docs.iter()
            .filter_map(|d| match &d.content {
                Content::Value(v) => Some((d.index, d.item, v.clone())),
                Content::SyntaxError(_) => None,
            })
            .collect()
    }

    fn syntax_error(docs: &[Document]) -> Option<(usize, SyntaxError)> {
        docs.iter().find_map(|d| match &d.content {
            Content::SyntaxError(e) => Some((d.index, e.clone())),
            Content::Value(_) => None,
        })
    }

    #[test]
    fn empty_documents_are_skipped_but_counted() {
        let m = Manifest::new(
            "a.yaml",
            "---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n",
        );
        assert_eq!(
            values(&documents(&m)),
            [(1, None, json!({"a": 1})), (4, None, json!({"b": 2}))]
        );
        assert!(documents(&Manifest::new("e.yaml", "")).is_empty());
    }

    #[test]
    fn a_syntax_error_stops_the_file_and_keeps_what_came_before() {
        let m = Manifest::new("a.yaml", "a: 1\n---\nb: [\n---\nc: 3\n");
        let docs = documents(&m);
        assert_eq!(values(&docs), [(1, None, json!({"a": 1}))]);
        let (index, e) = syntax_error(&docs).unwrap_or_else(|| unreachable!("{docs:?}"));
        assert_eq!(index, 2);
        assert_eq!(e.line, Some(4));
        assert!(!e.message.contains("at line 4"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_carry_the_indentation_hint() {
        let m = Manifest::new(
            "a.yaml",
            "spec:\n  requirements:\n    - key: a\n   operator: In\n",
        );
        let (_, e) = syntax_error(&documents(&m)).unwrap_or_else(|| unreachable!());
        assert_eq!((e.line, e.column), (Some(4), Some(4)));
        assert_eq!(
            e.message,
            "did not find expected key, while parsing a block mapping at line 2 column 3"
        );
        assert!(e
            .hint
            .unwrap_or_default()
            .contains("align \"operator:\" with \"key:\""));
    }

    #[test]
    fn duplicate_keys_are_errors_with_the_lines_named() {
        let m = Manifest::new("a.yaml", "spec:\n  a: 1\n  b: 2\n  a: 3\n");
        let (_, e) = syntax_error(&documents(&m)).unwrap_or_else(|| unreachable!());
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert_eq!(e.message, "spec: duplicate entry with key \"a\"");
        assert_eq!(
            e.hint.as_deref(),
            Some("\"a:\" appears on lines 2 and 4 of the same mapping; keep one")
        );
    }

    #[test]
    fn non_string_keys_are_reported() {
        let m = Manifest::new("a.yaml", "? [a]\n: x\n");
        let (_, e) = syntax_error(&documents(&m)).unwrap_or_else(|| unreachable!());
        assert!(e.message.contains("cannot be read as JSON"), "{e:?}");
    }

    #[test]
    fn lists_are_expanded_into_items() {
        let m = Manifest::new(
            "l.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- kind: A\n- kind: B\n",
        );
        assert_eq!(
            values(&documents(&m)),
            [
                (1, Some(1), json!({"kind": "A"})),
                (1, Some(2), json!({"kind": "B"}))
            ]
        );
    }

    #[test]
    fn json_files_and_json_on_stdin() {
        let m = Manifest::new("a.json", "{\n\t\"a\": 1\n}\n{\"b\": 2}");
        assert_eq!(m.format, Format::Json);
        assert_eq!(
            values(&documents(&m)),
            [(1, None, json!({"a": 1})), (2, None, json!({"b": 2}))]
        );
        assert_eq!(
            Manifest::new(STDIN_NAME, " {\"a\": 1}").format,
            Format::Json
        );
        assert_eq!(Manifest::new(STDIN_NAME, "a: 1").format, Format::Yaml);
        let (_, e) = syntax_error(&documents(&Manifest::new("b.JSON", "{\"a\": }")))
            .unwrap_or_else(|| unreachable!());
        assert_eq!((e.line, e.column), (Some(1), Some(7)));
        assert_eq!(e.message, "expected value");
    }

    #[test]
    fn byte_order_marks_are_dropped() {
        let m = Manifest::new("a.json", "\u{feff}{\"a\": 1}");
        assert_eq!(values(&documents(&m)), [(1, None, json!({"a": 1}))]);
    }
}
