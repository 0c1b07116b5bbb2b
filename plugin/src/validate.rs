//! `kubectl karpenter validate`: decode, default and validate Provisioners and AWSNodeTemplates
//! from manifests, the way the webhook would, before they reach a cluster.
//!
//! Each document is dispatched on `apiVersion`/`kind` ([`check`]); objects that fail to decode
//! are still validated as far as possible ("salvaged"), so one run shows every problem rather
//! than only the first.

use std::io::{Read, Write};

use karpenter::api::{
    self, decode_node_template_all, decode_provisioner_all, default_provisioner, labels,
    validate_node_template, validate_provisioner, FieldError, Report,
};
use serde_json::Value;

use crate::cli::OutputFormat;
use crate::error::Result;
use crate::manifest::{self, Content, Document, FilenameArgs, Manifest, SyntaxError};
use crate::report::{Finding, ObjectResult, Skipped, Style, ValidationReport};
use crate::Status;

/// Examples shown at the end of `validate --help`.
pub const EXAMPLES: &str = "\
Examples:
  # Validate a Provisioner before applying it
  kubectl karpenter validate -f provisioner.yaml

  # Validate every manifest in a directory and its sub-directories
  kubectl karpenter validate -R -f ./karpenter/

  # Validate what is in the cluster now
  kubectl get provisioners -o yaml | kubectl karpenter validate -f -

  # Machine-readable results, including the objects after defaulting
  kubectl karpenter validate -f provisioner.yaml -o json

Exit status: 0 when every object is valid (warnings allowed), 1 when any object is invalid or
a file has a syntax error, 2 when a file cannot be read or the command line is wrong.";

/// Arguments of `validate`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidateArgs {
    /// Which manifests to read.
    #[command(flatten)]
    pub files: FilenameArgs,

    /// Output format.
    #[arg(
        short = 'o',
        long,
        value_name = "FORMAT",
        value_enum,
        default_value_t = OutputFormat::Text
    )]
    pub output: OutputFormat,
}

/// The `apiVersion` group Provisioners belong to.
const PROVISIONER_GROUP: &str = api::GROUP;
/// The `apiVersion` group AWSNodeTemplates belong to.
const NODE_TEMPLATE_GROUP: &str = "karpenter.k8s.aws";
/// Kinds of later Karpenter APIs, which this version does not validate.
const LATER_KINDS: &[(&str, &str)] = &[
    ("NodePool", "karpenter.sh/v1beta1 and later"),
    ("NodeClaim", "karpenter.sh/v1beta1 and later"),
    ("Machine", "karpenter.sh/v1alpha5, internal"),
    ("EC2NodeClass", "karpenter.k8s.aws/v1beta1 and later"),
];

/// Runs `validate`: reads the manifests, checks every document and prints the report.
pub fn run(
    args: &ValidateArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    style: Style,
) -> Result<Status> {
    let manifests = manifest::load(&args.files, stdin)?;
    let report = validate_manifests(&manifests);
    match args.output {
        OutputFormat::Text => report.write_text(stdout, style)?,
        OutputFormat::Json => report.write_json(stdout)?,
    }
    Ok(if report.is_valid() {
        Status::Success
    } else {
        Status::Invalid
    })
}

/// Checks every document of every manifest, in order.
pub fn validate_manifests(manifests: &[Manifest]) -> ValidationReport {
    ValidationReport {
        findings: manifests
            .iter()
            .flat_map(manifest::documents)
            .map(|d| check(&d))
            .collect(),
    }
}

/// What a document is, as far as this plugin is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Provisioner (perhaps with a wrong `apiVersion` or a mis-cased `kind`).
    Provisioner,
    /// An AWSNodeTemplate (perhaps with a wrong `apiVersion` or a mis-cased `kind`).
    NodeTemplate,
    /// A Karpenter kind this version does not validate; the text says which API it is from.
    Unsupported(&'static str),
    /// Not a Kubernetes object at all (no `apiVersion` or `kind`, or not a mapping).
    NotAnObject,
    /// Somebody else's object (Deployment, Pod, ...).
    Foreign,
}

/// Decides what a document is: anything in the `karpenter.sh` or `karpenter.k8s.aws` groups, or
/// whose kind is (nearly, or case-insensitively) `Provisioner` or `AWSNodeTemplate`, is ours, so
/// a wrong `apiVersion` or a typo in `kind` is reported rather than skipped.
pub fn classify(value: &Value) -> Target {
    let Some(obj) = value.as_object() else {
        return Target::NotAnObject;
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    let kind = obj.get("kind").and_then(Value::as_str);
    if api_version.is_none() && kind.is_none() {
        return Target::NotAnObject;
    }
    let kind = kind.unwrap_or("");
    let group = api_version
        .map(|a| {
            a.rsplit_once('/')
                .map_or(a, |(g, _)| g)
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if let Some((_, api)) = LATER_KINDS.iter().find(|(k, _)| *k == kind) {
        if group == PROVISIONER_GROUP || group == NODE_TEMPLATE_GROUP {
            return Target::Unsupported(api);
        }
    }
    let ours = |k: &str| {
        kind.eq_ignore_ascii_case(k)
            || labels::closest(
                &kind.to_ascii_lowercase(),
                [k.to_ascii_lowercase().as_str()],
            )
            .is_some()
    };
    if ours("Provisioner") {
        Target::Provisioner
    } else if ours("AWSNodeTemplate") {
        Target::NodeTemplate
    } else if group == PROVISIONER_GROUP {
        Target::Provisioner
    } else if group == NODE_TEMPLATE_GROUP {
        Target::NodeTemplate
    } else {
        Target::Foreign
    }
}

/// Checks one document.
pub fn check(doc: &Document) -> Finding {
    let value = match &doc.content {
        Content::Value(v) => v,
        Content::SyntaxError(e) => return Finding::Object(Box::new(syntax_result(doc, e))),
    };
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let name = value
        .pointer("/metadata/name")
        .or_else(|| value.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut result = ObjectResult {
        file: doc.file.clone(),
        document: doc.index,
        item: doc.item,
        kind: text("kind"),
        name,
        valid: false,
        errors: Vec::new(),
        warnings: Vec::new(),
        defaulted: Vec::new(),
        object: None,
        syntax_error: None,
    };
    match classify(value) {
        Target::Foreign => {
            return Finding::Skipped(Skipped {
                file: result.file,
                document: result.document,
                item: result.item,
                api_version: text("apiVersion"),
                kind: result.kind,
                name: result.name,
            })
        }
        Target::Provisioner => check_provisioner(value, &mut result),
        Target::NodeTemplate => check_node_template(value, &mut result),
        Target::Unsupported(api) => {
            let kind = result.kind.clone().unwrap_or_default();
            result.errors.push(
                FieldError::new(
                    "kind",
                    format!("{kind} ({api}) is not supported by this version of the plugin"),
                )
                .value(kind)
                .fix(format!(
                    "this plugin validates {} Provisioner and {} AWSNodeTemplate objects",
                    api::PROVISIONER_API_VERSION,
                    api::NODE_TEMPLATE_API_VERSION
                )),
            );
        }
        Target::NotAnObject => {
            let message = match value {
                Value::Object(_) => {
                    "is not a Kubernetes object: it has neither apiVersion nor kind".to_string()
                }
                other => format!(
                    "is not a Kubernetes object: found {}",
                    karpenter::api::decode::json_type_name(other)
                ),
            };
            result
                .errors
                .push(FieldError::new("(document)", message).fix(format!(
                    "start the document with `apiVersion: {}` and `kind: Provisioner`",
                    api::PROVISIONER_API_VERSION
                )));
        }
    }
    result.valid = result.errors.is_empty();
    Finding::Object(Box::new(result))
}

fn check_provisioner(value: &Value, result: &mut ObjectResult) {
    result.kind = Some("Provisioner".into());
    let decoded = decode_provisioner_all(value);
    let decode_errors = decoded.errors.len();
    result.errors = decoded.errors;
    let Some(mut provisioner) = decoded.object else {
        return;
    };
    // The webhook defaults first, then validates the defaulted object.
    let defaulted = default_provisioner(&mut provisioner.spec);
    add_report(result, validate_provisioner(&provisioner));
    if decode_errors == 0 {
        result.defaulted = defaulted;
        result.object = serde_json::to_value(&provisioner).ok();
    }
}

fn check_node_template(value: &Value, result: &mut ObjectResult) {
    result.kind = Some("AWSNodeTemplate".into());
    let decoded = decode_node_template_all(value);
    let decode_errors = decoded.errors.len();
    result.errors = decoded.errors;
    let Some(template) = decoded.object else {
        return;
    };
    add_report(result, validate_node_template(&template));
    if decode_errors == 0 {
        result.object = serde_json::to_value(&template).ok();
    }
}

/// Adds validation findings after the decode errors, leaving out what the decoder already said
/// (a missing `metadata` makes `metadata.name` missing too).
fn add_report(result: &mut ObjectResult, report: Report) {
    let metadata_reported = result.errors.iter().any(|e| e.field == "metadata");
    for e in report.errors {
        let repeated =
            result.errors.contains(&e) || (metadata_reported && e.field.starts_with("metadata."));
        if !repeated {
            result.errors.push(e);
        }
    }
    result.warnings = report.warnings;
}

fn syntax_result(doc: &Document, e: &SyntaxError) -> ObjectResult {
    let at = match (e.line, e.column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    };
    let error = FieldError::new(
        "(document)",
        format!("{} syntax error{at}: {}", e.language, e.message),
    )
    .maybe_fix(e.hint.clone());
    ObjectResult {
        file: doc.file.clone(),
        document: doc.index,
        item: doc.item,
        kind: None,
        name: None,
        valid: false,
        errors: vec![error],
        warnings: Vec::new(),
        defaulted: Vec::new(),
        object: None,
        syntax_error: Some(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: Value) -> Document {
        Document {
            file: "t.yaml".into(),
            index: 1,
            item: None,
            content: Content::Value(value),
        }
    }

    fn object(finding: Finding) -> ObjectResult {
        match finding {
            Finding::Object(o) => *o,
            Finding::Skipped(s) => unreachable!("skipped: {s:?}"),
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn provisioner() -> Value {
        json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"providerRef": {"name": "default"}}
        })
    }

    #[test]
    fn classifies_by_group_and_kind() {
        let t = |api: &str, kind: &str| classify(&json!({"apiVersion": api, "kind": kind}));
        assert_eq!(
            t("karpenter.sh/v1alpha5", "Provisioner"),
            Target::Provisioner
        );
        assert_eq!(
            t("karpenter.sh/v1beta1", "Provisioner"),
            Target::Provisioner
        );
        assert_eq!(
            t("karpenter.sh/v1alpha5", "provisioner"),
            Target::Provisioner
        );
        assert_eq!(
            t("karpenter.sh/v1alpha5", "Provisoner"),
            Target::Provisioner
        );
        assert_eq!(t("v1", "Provisioner"), Target::Provisioner);
        assert_eq!(
            t("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate"),
            Target::NodeTemplate
        );
        assert_eq!(
            t("karpenter.k8s.aws/v1alpha1", "AwsNodeTemplate"),
            Target::NodeTemplate
        );
        assert_eq!(
            t("karpenter.k8s.aws/v1alpha1", "Other"),
            Target::NodeTemplate
        );
        assert!(matches!(
            t("karpenter.sh/v1beta1", "NodePool"),
            Target::Unsupported(_)
        ));
        assert_eq!(t("apps/v1", "Deployment"), Target::Foreign);
        assert_eq!(t("example.com/v1", "NodePool"), Target::Foreign);
        assert_eq!(t("v1", "Pod"), Target::Foreign);
        assert_eq!(classify(&json!({"spec": {}})), Target::NotAnObject);
        assert_eq!(classify(&json!("text")), Target::NotAnObject);
    }

    #[test]
    fn foreign_objects_are_skipped_with_their_identity() {
        let f = check(&doc(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                   "metadata": {"name": "inflate"}})));
        assert_eq!(
            f,
            Finding::Skipped(Skipped {
                file: "t.yaml".into(),
                document: 1,
                item: None,
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some("inflate".into()),
            })
        );
    }

    #[test]
    fn valid_provisioner_is_defaulted_then_validated() {
        let o = object(check(&doc(provisioner())));
        assert!(o.valid, "{:?}", o.errors);
        assert_eq!(o.defaulted.len(), 5);
        let reqs = o
            .object
            .as_ref()
            .and_then(|v| v.pointer("/spec/requirements"));
        assert_eq!(reqs.and_then(Value::as_array).map(Vec::len), Some(5));
    }

    #[test]
    fn wrong_api_version_is_an_error_with_a_fix() {
        let mut v = provisioner();
        v["apiVersion"] = json!("karpenter.sh/v1beta1");
        let o = object(check(&doc(v)));
        assert!(!o.valid);
        assert_eq!(fields(&o.errors), ["apiVersion"]);
        assert_eq!(
            o.errors[0].fix.as_deref(),
            Some("set apiVersion: karpenter.sh/v1alpha5")
        );
        assert_eq!(o.object, None);
        assert!(o.defaulted.is_empty());
    }

    #[test]
    fn lower_case_kind_is_an_error_with_a_fix() {
        let mut v = provisioner();
        v["kind"] = json!("provisioner");
        let o = object(check(&doc(v)));
        assert_eq!(fields(&o.errors), ["kind"]);
        assert_eq!(o.kind.as_deref(), Some("Provisioner"));
    }

    #[test]
    fn misplaced_name_and_bad_requirement_are_both_reported() {
        let v = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": null, "name": "default",
            "spec": {"providerRef": {"name": "default"},
                     "requirements": [{"key": " karpenter.sh/capacity-type", "operator": "In",
                                       "values": ["spot"]}]}
        });
        let o = object(check(&doc(v)));
        assert_eq!(o.name.as_deref(), Some("default"));
        assert_eq!(
            fields(&o.errors),
            ["name", "metadata", "spec.requirements[0].key"]
        );
        assert_eq!(o.object, None);
    }

    #[test]
    fn every_unknown_field_is_found_and_the_rest_validated() {
        let v = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"providerRef": {"name": "default"}, "ttlSecondAfterEmpty": 30,
                     "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "valuse": ["amd64"]},
                                      {"key": "kubernetes.io/os", "operator": "Inn", "values": ["linux"]}]}
        });
        let o = object(check(&doc(v)));
        assert_eq!(
            fields(&o.errors),
            [
                "spec.requirements[0].valuse",
                "spec.ttlSecondAfterEmpty",
                "spec.requirements[1].operator"
            ]
        );
    }

    #[test]
    fn removing_a_required_field_does_not_add_an_error() {
        let v = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"providerRef": {"name": "default"},
                     "requirements": [{"key": "kubernetes.io/arch", "operator": 5}]}
        });
        let o = object(check(&doc(v)));
        assert_eq!(fields(&o.errors), ["spec.requirements[0].operator"]);
    }

    #[test]
    fn node_templates_are_validated() {
        let o = object(check(&doc(json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "default"},
            "spec": {"subnetSelector": {"karpenter.sh/discovery": "demo"},
                     "securityGroupSelector": {"karpenter.sh/discovery": "demo"}}
        }))));
        assert!(o.valid, "{:?}", o.errors);
        assert!(o.object.is_some());
    }

    #[test]
    fn unsupported_and_non_objects_are_invalid() {
        let o = object(check(&doc(
            json!({"apiVersion": "karpenter.sh/v1beta1", "kind": "NodePool",
                                           "metadata": {"name": "default"}}),
        )));
        assert!(!o.valid);
        assert_eq!(o.kind.as_deref(), Some("NodePool"));
        let o = object(check(&doc(json!(["a"]))));
        assert_eq!(
            o.errors[0].message,
            "is not a Kubernetes object: found a list"
        );
    }

    #[test]
    fn misspelt_fields_are_validated_under_their_intended_name() {
        let v = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spce": {"providerRef": {"name": "default"}, "weight": 500,
                     "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "valuse": ["amd64"]}]}
        });
        let o = object(check(&doc(v)));
        assert_eq!(
            fields(&o.errors),
            ["spce", "spec.requirements[0].valuse", "spec.weight"]
        );
    }
}
