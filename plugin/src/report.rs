//! What `validate` found, and how it is printed: kubectl-like text lines (coloured on a
//! terminal) or one JSON document.

use std::io::{self, Write};

use karpenter::api::{Defaulted, FieldError};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::SyntaxError;

/// The result of checking one Karpenter object (or one document that could not be read).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    /// The file's display name.
    pub file: String,
    /// 1-based document index in the file.
    pub document: usize,
    /// 1-based item index, for items of a `List`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The kind the object was checked as (`Provisioner`, `AWSNodeTemplate`), when known.
    pub kind: Option<String>,
    /// `metadata.name`, when known.
    pub name: Option<String>,
    /// Whether there are no errors (warnings allowed).
    pub valid: bool,
    /// Problems that would make the API server or webhook reject the object.
    pub errors: Vec<FieldError>,
    /// Problems worth knowing about that do not block the object.
    pub warnings: Vec<FieldError>,
    /// What defaulting added (Provisioners that could be decoded).
    pub defaulted: Vec<Defaulted>,
    /// The object after defaulting; `null` when it could not be decoded.
    pub object: Option<Value>,
    /// The syntax error that stopped the parser, for documents that could not be parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax_error: Option<SyntaxError>,
}

/// A document that is not a Karpenter object, so was not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// The file's display name.
    pub file: String,
    /// 1-based document index in the file.
    pub document: usize,
    /// 1-based item index, for items of a `List`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The document's `apiVersion`.
    pub api_version: Option<String>,
    /// The document's `kind`.
    pub kind: Option<String>,
    /// The document's `metadata.name`.
    pub name: Option<String>,
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// It was checked (or could not be parsed).
    Object(Box<ObjectResult>),
    /// It is not ours.
    Skipped(Skipped),
}

/// Every finding of one `validate` run, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationReport {
    /// The findings, in the order of the files and documents.
    pub findings: Vec<Finding>,
}

/// The JSON shape: `{"objects": [...], "skipped": [...], "valid": bool}`.
#[derive(Serialize)]
struct JsonReport<'a> {
    objects: Vec<&'a ObjectResult>,
    skipped: Vec<&'a Skipped>,
    valid: bool,
}

/// How text is decorated: ANSI colours on a terminal, plain otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit ANSI colour codes.
    pub color: bool,
}

// === impl ObjectResult ===

impl ObjectResult {
    /// `file (document N)` or `file (document N, item M)`.
    pub fn location(&self) -> String {
        location(&self.file, self.document, self.item)
    }
}

// === impl ValidationReport ===

impl ValidationReport {
    /// The checked objects (including documents that could not be parsed).
    pub fn objects(&self) -> impl Iterator<Item = &ObjectResult> {
        self.findings.iter().filter_map(|f| match f {
            Finding::Object(o) => Some(o.as_ref()),
            Finding::Skipped(_) => None,
        })
    }

    /// The documents that were not checked.
    pub fn skipped(&self) -> impl Iterator<Item = &Skipped> {
        self.findings.iter().filter_map(|f| match f {
            Finding::Skipped(s) => Some(s),
            Finding::Object(_) => None,
        })
    }

    /// Whether every checked object is valid.
    pub fn is_valid(&self) -> bool {
        self.objects().all(|o| o.valid)
    }

    /// The report as the JSON value `-o json` prints.
    pub fn to_json(&self) -> Result<Value> {
        serde_json::to_value(self.json_report()).map_err(Error::Json)
    }

    /// Writes the report as one pretty-printed JSON document (fields in declaration order).
    pub fn write_json(&self, w: &mut dyn Write) -> Result<()> {
        serde_json::to_writer_pretty(&mut *w, &self.json_report()).map_err(Error::Json)?;
        writeln!(w).map_err(Error::Write)
    }

    fn json_report(&self) -> JsonReport<'_> {
        JsonReport {
            objects: self.objects().collect(),
            skipped: self.skipped().collect(),
            valid: self.is_valid(),
        }
    }

    /// Writes one block per document and a summary line.
    pub fn write_text(&self, w: &mut dyn Write, style: Style) -> Result<()> {
        self.write_text_inner(w, style).map_err(Error::Write)
    }

    fn write_text_inner(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        for finding in &self.findings {
            match finding {
                Finding::Object(o) => write_object(w, o, style)?,
                Finding::Skipped(s) => writeln!(
                    w,
                    "{} {} {} (not a Karpenter object)",
                    location(&s.file, s.document, s.item),
                    style.dim("skipped:"),
                    [&s.api_version, &s.kind, &s.name]
                        .iter()
                        .filter_map(|p| p.as_deref())
                        .collect::<Vec<_>>()
                        .join(" "),
                )?,
            }
        }
        writeln!(w, "{}", self.summary())
    }

    /// `2 objects checked: 1 valid, 1 invalid, 1 skipped`.
    pub fn summary(&self) -> String {
        let (valid, invalid) =
            self.objects().fold(
                (0, 0),
                |(v, i), o| if o.valid { (v + 1, i) } else { (v, i + 1) },
            );
        let checked = valid + invalid;
        format!(
            "{checked} object{} checked: {valid} valid, {invalid} invalid, {} skipped",
            if checked == 1 { "" } else { "s" },
            self.skipped().count()
        )
    }
}

fn write_object(w: &mut dyn Write, o: &ObjectResult, style: Style) -> io::Result<()> {
    if let Some(e) = &o.syntax_error {
        let at = match (e.line, e.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}:", o.file),
            (Some(l), None) => format!("{}:{l}:", o.file),
            _ => format!("{}:", o.location()),
        };
        let label = format!("{} syntax error:", e.language);
        writeln!(w, "{at} {} {}", style.red(&label), e.message)?;
        if let Some(hint) = &e.hint {
            writeln!(w, "  {} {hint}", style.cyan("hint:"))?;
        }
        return Ok(());
    }
    let what = match (&o.kind, &o.name) {
        (Some(k), Some(n)) => format!(" {k} {n}"),
        (Some(k), None) => format!(" {k} (unnamed)"),
        _ => String::new(),
    };
    let verdict = if o.valid {
        style.green("valid")
    } else {
        style.red("invalid")
    };
    writeln!(w, "{}{what}: {verdict}", o.location())?;
    for e in &o.errors {
        writeln!(w, "  {} {}", style.red("error:"), field_error(e))?;
    }
    for e in &o.warnings {
        writeln!(w, "  {} {}", style.yellow("warning:"), field_error(e))?;
    }
    for d in &o.defaulted {
        writeln!(w, "  {} {}", style.cyan("defaulted:"), d.reason)?;
    }
    Ok(())
}

/// `field: "value": message (fix: ...)`, like [`FieldError`]'s `Display` but without a value
/// that only repeats the field's name (`spec.valuse: "valuse": is not a known field`).
pub fn field_error(e: &FieldError) -> String {
    let mut s = e.field.clone();
    let repeats_field = |v: &str| e.field == v || e.field.ends_with(&format!(".{v}"));
    if let Some(v) = e.value.as_deref().filter(|v| !repeats_field(v)) {
        s.push_str(&format!(": {v:?}"));
    }
    s.push_str(": ");
    s.push_str(&e.message);
    if let Some(fix) = &e.fix {
        s.push_str(&format!(" (fix: {fix})"));
    }
    s
}

fn location(file: &str, document: usize, item: Option<usize>) -> String {
    match item {
        Some(i) => format!("{file} (document {document}, item {i})"),
        None => format!("{file} (document {document})"),
    }
}

// === impl Style ===

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn red(self, s: &str) -> String {
        self.paint("31", s)
    }

    fn green(self, s: &str) -> String {
        self.paint("32", s)
    }

    fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }

    fn cyan(self, s: &str) -> String {
        self.paint("36", s)
    }

    fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(valid: bool) -> ObjectResult {
        ObjectResult {
            file: "p.yaml".into(),
            document: 1,
            item: None,
            kind: Some("Provisioner".into()),
            name: Some("default".into()),
            valid,
            errors: if valid {
                vec![]
            } else {
                vec![FieldError::new("name", "is not a top-level field")
                    .value("name")
                    .fix("indent it")]
            },
            warnings: vec![],
            defaulted: vec![],
            object: None,
            syntax_error: None,
        }
    }

    fn skipped() -> Skipped {
        Skipped {
            file: "m.yaml".into(),
            document: 3,
            item: None,
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("inflate".into()),
        }
    }

    #[test]
    fn json_shape() {
        let report = ValidationReport {
            findings: vec![
                Finding::Object(Box::new(object(true))),
                Finding::Skipped(skipped()),
                Finding::Object(Box::new(object(false))),
            ],
        };
        let json = report.to_json().unwrap_or_default();
        assert_eq!(json["valid"], false);
        assert_eq!(json["objects"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            json["objects"][0],
            json!({"file": "p.yaml", "document": 1, "kind": "Provisioner", "name": "default",
                   "valid": true, "errors": [], "warnings": [], "defaulted": [], "object": null})
        );
        assert_eq!(
            json["objects"][1]["errors"][0],
            json!({"field": "name", "value": "name", "message": "is not a top-level field", "fix": "indent it"})
        );
        assert_eq!(
            json["skipped"],
            json!([{"file": "m.yaml", "document": 3, "apiVersion": "apps/v1",
                    "kind": "Deployment", "name": "inflate"}])
        );
    }

    #[test]
    fn text_keeps_input_order_and_counts() {
        let report = ValidationReport {
            findings: vec![
                Finding::Object(Box::new(object(false))),
                Finding::Skipped(skipped()),
                Finding::Object(Box::new(object(true))),
            ],
        };
        let mut out = Vec::new();
        assert!(report.write_text(&mut out, Style::default()).is_ok());
        assert_eq!(
            String::from_utf8_lossy(&out),
            "p.yaml (document 1) Provisioner default: invalid\n\
             \x20 error: name: is not a top-level field (fix: indent it)\n\
             m.yaml (document 3) skipped: apps/v1 Deployment inflate (not a Karpenter object)\n\
             p.yaml (document 1) Provisioner default: valid\n\
             2 objects checked: 1 valid, 1 invalid, 1 skipped\n"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let report = ValidationReport {
            findings: vec![Finding::Object(Box::new(object(true)))],
        };
        let mut out = Vec::new();
        assert!(report.write_text(&mut out, Style { color: true }).is_ok());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\x1b[32mvalid\x1b[0m"), "{text}");
        assert!(text.ends_with("1 object checked: 1 valid, 0 invalid, 0 skipped\n"));
    }

    #[test]
    fn syntax_errors_print_file_line_column_and_hint() {
        let mut o = object(false);
        o.kind = None;
        o.name = None;
        o.syntax_error = Some(SyntaxError {
            language: "YAML",
            line: Some(16),
            column: Some(4),
            message: "did not find expected key".into(),
            hint: Some("align it".into()),
        });
        let mut out = Vec::new();
        assert!(write_object(&mut out, &o, Style::default()).is_ok());
        assert_eq!(
            String::from_utf8_lossy(&out),
            "p.yaml:16:4: YAML syntax error: did not find expected key\n  hint: align it\n"
        );
    }
}
