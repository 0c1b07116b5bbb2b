//! The OpenAPI v3 schemas of our CRDs, generated in-process from the Rust types (the same ones
//! `crdgen` writes to `manifests/crds/`), rewritten into plain JSON Schema and compiled once at
//! start-up.
//!
//! Kubernetes' dialect differs from JSON Schema in a few keywords: `nullable: true` becomes
//! `type: [T, "null"]`, `x-kubernetes-int-or-string` becomes `anyOf: [integer, string]`, and the
//! other `x-kubernetes-*` extensions are dropped. Formats are not checked (Kubernetes' `int32`,
//! `byte`, ... are not JSON Schema formats); the semantic rules check what matters.

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use karpenter::api::{AWSNodeTemplate, FieldError, Provisioner};
use kube::CustomResourceExt;
use serde_json::{Map, Value};

/// A CRD schema could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The CRD has no `spec.versions[0].schema.openAPIV3Schema`.
    #[error("the {0} CRD has no openAPIV3Schema")]
    Missing(&'static str),
    /// The schema does not compile.
    #[error("failed to compile the {kind} CRD schema: {message}")]
    Compile {
        /// Which CRD.
        kind: &'static str,
        /// What the compiler said.
        message: String,
    },
}

/// The compiled schemas of the CRDs the webhook validates.
pub struct CrdSchemas {
    provisioner: Validator,
    node_template: Validator,
}

// === impl CrdSchemas ===

impl CrdSchemas {
    /// Generates and compiles the Provisioner and AWSNodeTemplate schemas.
    pub fn new() -> Result<Self, SchemaError> {
        Ok(CrdSchemas {
            provisioner: compile("Provisioner", &crd_schema::<Provisioner>("Provisioner")?)?,
            node_template: compile(
                "AWSNodeTemplate",
                &crd_schema::<AWSNodeTemplate>("AWSNodeTemplate")?,
            )?,
        })
    }

    /// Schema violations of a Provisioner, as field errors.
    pub fn check_provisioner(&self, object: &Value) -> Vec<FieldError> {
        check(&self.provisioner, object)
    }

    /// Schema violations of an AWSNodeTemplate, as field errors.
    pub fn check_node_template(&self, object: &Value) -> Vec<FieldError> {
        check(&self.node_template, object)
    }
}

impl std::fmt::Debug for CrdSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchemas").finish_non_exhaustive()
    }
}

/// The `openAPIV3Schema` of a CRD type, rewritten into JSON Schema.
pub fn crd_schema<K: CustomResourceExt>(kind: &'static str) -> Result<Value, SchemaError> {
    let crd = serde_json::to_value(K::crd()).map_err(|_| SchemaError::Missing(kind))?;
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .ok_or(SchemaError::Missing(kind))?;
    Ok(to_json_schema(schema))
}

/// Rewrites Kubernetes' OpenAPI v3 schema dialect into JSON Schema.
pub fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                if k.starts_with("x-kubernetes-") || k == "nullable" {
                    continue;
                }
                let v = match k.as_str() {
                    // Maps of names to schemas: rewrite each schema, keep the names.
                    "properties" | "definitions" | "$defs" | "patternProperties" => match v {
                        Value::Object(props) => Value::Object(
                            props
                                .iter()
                                .map(|(name, s)| (name.clone(), to_json_schema(s)))
                                .collect(),
                        ),
                        other => other.clone(),
                    },
                    "enum" | "required" | "default" | "example" | "const" => v.clone(),
                    _ => to_json_schema(v),
                };
                out.insert(k.clone(), v);
            }
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                out.remove("type");
                out.insert(
                    "anyOf".into(),
                    serde_json::json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(Value::Array(any)) = out.get_mut("anyOf") {
                            any.push(serde_json::json!({"type": "null"}));
                        }
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn compile(kind: &'static str, schema: &Value) -> Result<Validator, SchemaError> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| SchemaError::Compile {
            kind,
            message: e.to_string(),
        })
}

fn check(validator: &Validator, object: &Value) -> Vec<FieldError> {
    validator
        .iter_errors(object)
        .map(|e| {
            let field = field_path(e.instance_path().as_str());
            let fix = match e.kind() {
                ValidationErrorKind::Enum { options } => Some(format!(
                    "use one of: {}",
                    options
                        .as_array()
                        .map(|o| o
                            .iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                )),
                ValidationErrorKind::Required { property } => Some(format!(
                    "add {}:",
                    property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_string)
                )),
                ValidationErrorKind::Type { .. } => {
                    Some("check the value's type (quote strings, unquote numbers)".to_string())
                }
                _ => None,
            };
            let message = match e.kind() {
                ValidationErrorKind::Enum { .. } => "is not an allowed value".to_string(),
                ValidationErrorKind::Required { property } => format!(
                    "is missing required field {}",
                    property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_string)
                ),
                _ => e.to_string(),
            };
            let value = match &**e.instance() {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            let err = FieldError::new(field, message).maybe_fix(fix);
            match value {
                Some(v) => err.value(v),
                None => err,
            }
        })
        .collect()
}

/// A JSON pointer (`/spec/requirements/0/key`) as a field path (`spec.requirements[0].key`).
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else if seg.contains(['.', '/']) || seg.is_empty() {
            out.push_str(&format!("[{seg:?}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "(root)".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> CrdSchemas {
        match CrdSchemas::new() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_path(""), "(root)");
        assert_eq!(
            field_path("/spec/requirements/0/operator"),
            "spec.requirements[0].operator"
        );
        assert_eq!(
            field_path("/spec/labels/karpenter.sh~1team"),
            "spec.labels[\"karpenter.sh/team\"]"
        );
    }

    #[test]
    fn kubernetes_keywords_are_rewritten() {
        let s = to_json_schema(&json!({
            "type": "object",
            "properties": {
                "q": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "n": {"type": "string", "nullable": true},
                "nullable": {"type": "boolean"}
            },
            "x-kubernetes-preserve-unknown-fields": true
        }));
        assert_eq!(s["properties"]["n"]["type"], json!(["string", "null"]));
        assert!(s["properties"]["q"]
            .get("x-kubernetes-int-or-string")
            .is_none());
        assert_eq!(s["properties"]["nullable"]["type"], "boolean");
        assert!(s.get("x-kubernetes-preserve-unknown-fields").is_none());
    }

    #[test]
    fn provisioner_schema_catches_enum_and_type_errors() {
        let s = schemas();
        let ok = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
                     "limits": {"resources": {"cpu": 1000, "memory": "1000Gi"}},
                     "providerRef": {"name": "default"}}
        });
        assert_eq!(s.check_provisioner(&ok), vec![]);
        let bad = json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"requirements": [{"key": "k", "operator": "Inn"}], "weight": "high"}
        });
        let errs = s.check_provisioner(&bad);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"spec.requirements[0].operator"),
            "{errs:?}"
        );
        assert!(fields.contains(&"spec.weight"), "{errs:?}");
        let op = errs
            .iter()
            .find(|e| e.field == "spec.requirements[0].operator");
        assert!(op
            .and_then(|e| e.fix.as_deref())
            .is_some_and(|f| f.contains("NotIn")));
    }

    #[test]
    fn node_template_schema_compiles_and_checks() {
        let s = schemas();
        let bad = json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "x"}, "spec": {"amiFamily": "Windows"}
        });
        assert_eq!(s.check_node_template(&bad).len(), 1);
    }
}
