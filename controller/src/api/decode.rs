//! Turning untyped objects (parsed from YAML or JSON) into typed API objects, with errors that
//! name the field path and say how to fix it, including fields indented at the wrong level.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::aws::AWSNodeTemplate;
use super::labels;
use super::provisioner::Provisioner;
use super::validation::FieldError;
use super::{NODE_TEMPLATE_API_VERSION, PROVISIONER_API_VERSION};

/// The object could not be decoded; every error names a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct DecodeError(pub Vec<FieldError>);

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "uid",
    "resourceVersion",
    "finalizers",
    "ownerReferences",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];
const PROVISIONER_SPEC_FIELDS: &[&str] = &[
    "annotations",
    "labels",
    "taints",
    "startupTaints",
    "requirements",
    "kubeletConfiguration",
    "provider",
    "providerRef",
    "ttlSecondsAfterEmpty",
    "ttlSecondsUntilExpired",
    "limits",
    "weight",
    "consolidation",
];

const NODE_TEMPLATE_SPEC_FIELDS: &[&str] = &[
    "amiFamily",
    "amiSelector",
    "blockDeviceMappings",
    "context",
    "detailedMonitoring",
    "instanceProfile",
    "launchTemplate",
    "metadataOptions",
    "securityGroupSelector",
    "subnetSelector",
    "tags",
    "userData",
];

/// The outcome of decoding with every error collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// The object to validate: as written when `errors` is empty, otherwise decoded from a
    /// repaired copy (misplaced metadata moved, misspelt fields renamed, bad fields dropped) so
    /// validation can still report the rest; `None` when nothing could be salvaged.
    pub object: Option<T>,
    /// Every decode error found.
    pub errors: Vec<FieldError>,
}

// === impl Decoded ===

impl<T> Decoded<T> {
    /// Whether the object decoded as written.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.object.is_some()
    }
}

/// Decodes a Provisioner, collecting every decode error instead of stopping at the first.
pub fn decode_provisioner_all(v: &Value) -> Decoded<Provisioner> {
    salvage(
        v,
        decode_provisioner,
        PROVISIONER_API_VERSION,
        "Provisioner",
    )
}

/// Decodes an AWSNodeTemplate, collecting every decode error instead of stopping at the first.
pub fn decode_node_template_all(v: &Value) -> Decoded<AWSNodeTemplate> {
    salvage(
        v,
        decode_node_template,
        NODE_TEMPLATE_API_VERSION,
        "AWSNodeTemplate",
    )
}

/// Decodes a `karpenter.sh/v1alpha5` Provisioner.
pub fn decode_provisioner(v: &Value) -> Result<Provisioner, DecodeError> {
    decode(
        v,
        PROVISIONER_API_VERSION,
        "Provisioner",
        PROVISIONER_SPEC_FIELDS,
    )
}

/// Decodes a `karpenter.k8s.aws/v1alpha1` AWSNodeTemplate.
pub fn decode_node_template(v: &Value) -> Result<AWSNodeTemplate, DecodeError> {
    decode(
        v,
        NODE_TEMPLATE_API_VERSION,
        "AWSNodeTemplate",
        NODE_TEMPLATE_SPEC_FIELDS,
    )
}

fn decode<T: DeserializeOwned>(
    v: &Value,
    api_version: &str,
    kind: &str,
    spec_fields: &[&str],
) -> Result<T, DecodeError> {
    let Some(obj) = v.as_object() else {
        return Err(DecodeError(vec![FieldError::new(
            "(root)",
            format!("expected a {kind} object, found {}", json_type_name(v)),
        )]));
    };
    let mut errors = Vec::new();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(a) if a == api_version => {}
        other => errors.push(
            FieldError::new("apiVersion", format!("must be {api_version}"))
                .value(other.unwrap_or(""))
                .fix(format!("set apiVersion: {api_version}")),
        ),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        other => errors.push(
            FieldError::new("kind", format!("must be {kind}"))
                .value(other.unwrap_or(""))
                .fix(format!("set kind: {kind}")),
        ),
    }
    let mut clean = Map::new();
    for (key, value) in obj {
        if TOP_LEVEL.contains(&key.as_str()) {
            clean.insert(key.clone(), value.clone());
            continue;
        }
        errors.push(misplaced_top_level(key, obj, spec_fields));
    }
    if matches!(clean.get("metadata"), None | Some(Value::Null)) {
        let hint = if obj.keys().any(|k| METADATA_FIELDS.contains(&k.as_str())) {
            "indent name: (and the other metadata fields) by two spaces under metadata:"
        } else {
            "add metadata: with a name, e.g. `metadata: {name: default}`"
        };
        errors.push(FieldError::new("metadata", "is empty or missing").fix(hint));
        clean.insert("metadata".into(), Value::Object(Map::new()));
    }
    if matches!(clean.get("spec"), None | Some(Value::Null)) {
        clean.insert("spec".into(), Value::Object(Map::new()));
    }
    let clean = Value::Object(clean);
    match serde_path_to_error::deserialize::<_, T>(&clean) {
        Ok(t) if errors.is_empty() => Ok(t),
        Ok(_) => Err(DecodeError(errors)),
        Err(e) => {
            errors.push(shape_error(&e.path().to_string(), e.inner().to_string()));
            Err(DecodeError(errors))
        }
    }
}

fn misplaced_top_level(key: &str, obj: &Map<String, Value>, spec_fields: &[&str]) -> FieldError {
    let err = FieldError::new(key, "is not a top-level field");
    if METADATA_FIELDS.contains(&key) {
        return err.fix(format!(
            "{key}: belongs under metadata:; indent it by two spaces below `metadata:`"
        ));
    }
    if spec_fields.contains(&key) {
        return err.fix(format!(
            "{key}: belongs under spec:; indent it below `spec:`"
        ));
    }
    let candidates = TOP_LEVEL.iter().copied().chain(obj.keys().map(|_| ""));
    match labels::closest(key.trim(), candidates.filter(|c| !c.is_empty())) {
        Some(c) => err.fix(format!("did you mean {c:?}?")).suggest(c),
        None if key.trim() != key => err.fix(format!("remove the whitespace in {key:?}")),
        None => err.fix(format!("remove it; allowed: {}", TOP_LEVEL.join(", "))),
    }
}

fn shape_error(path: &str, inner: String) -> FieldError {
    let path = if path.is_empty() || path == "." {
        "(root)".to_string()
    } else {
        path.to_string()
    };
    // serde: "unknown field `ttlSecondAfterEmpty`, expected one of `a`, `b`"
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let allowed: Vec<&str> = expected
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect();
            let field_path = if path.ends_with(field) {
                path.clone()
            } else {
                format!("{path}.{field}")
            };
            let suggestion = if field.trim() != field && allowed.contains(&field.trim()) {
                Some(field.trim())
            } else {
                labels::closest(field, allowed.iter().copied())
            };
            let fix = if field.trim() != field && suggestion == Some(field.trim()) {
                format!("remove the whitespace: {:?}", field.trim())
            } else if let Some(c) = suggestion {
                format!("did you mean {c:?}?")
            } else if allowed.is_empty() {
                "remove it".to_string()
            } else {
                format!(
                    "remove it, or check its indentation; fields here: {}",
                    allowed.join(", ")
                )
            };
            let err = FieldError::new(field_path, "is not a known field").fix(fix);
            return match suggestion {
                Some(c) => err.suggest(c),
                None => err,
            };
        }
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        let field_path = if path == "(root)" {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return FieldError::new(field_path, "is required").fix(format!("add {field}:"));
    }
    FieldError::new(path, inner).fix("check the field's type against the Provisioner reference")
}

const MAX_SALVAGE_ROUNDS: usize = 64;

fn salvage<T: DeserializeOwned>(
    value: &Value,
    decode: fn(&Value) -> Result<T, DecodeError>,
    api_version: &str,
    kind: &str,
) -> Decoded<T> {
    let mut errors = match decode(value) {
        Ok(object) => {
            return Decoded {
                object: Some(object),
                errors: Vec::new(),
            }
        }
        Err(e) => e.0,
    };
    let Some(mut work) = repaired(value, api_version, kind) else {
        return Decoded {
            object: None,
            errors,
        };
    };
    let mut edited: Vec<String> = Vec::new();
    for _ in 0..MAX_SALVAGE_ROUNDS {
        let found = match decode(&work) {
            Ok(object) => {
                return Decoded {
                    object: Some(object),
                    errors,
                }
            }
            Err(e) => e.0,
        };
        let mut progressed = false;
        for e in found {
            // "is required" after we removed the field is our doing, not the user's.
            if edited.contains(&e.field) {
                continue;
            }
            if edit_path(&mut work, &e.field, e.suggestion.as_deref()) {
                edited.push(e.field.clone());
                progressed = true;
            }
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
        if !progressed {
            break;
        }
    }
    Decoded {
        object: None,
        errors,
    }
}

/// A copy with the right `apiVersion` and `kind`, top-level metadata fields moved under
/// `metadata`, a misspelt `spec` renamed, and other unknown top-level fields dropped.
fn repaired(value: &Value, api_version: &str, kind: &str) -> Option<Value> {
    let obj = value.as_object()?;
    let mut metadata = obj
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Map::new();
    for (key, v) in obj {
        match key.as_str() {
            "spec" | "status" => {
                out.insert(key.clone(), v.clone());
            }
            k if METADATA_FIELDS.contains(&k) => {
                metadata.entry(key.clone()).or_insert_with(|| v.clone());
            }
            k => {
                let near = labels::closest(k.trim(), ["spec"])
                    .or_else(|| (k.trim() == "spec").then_some("spec"));
                if let Some(name) = near.filter(|n| !obj.contains_key(*n)) {
                    out.entry(name).or_insert_with(|| v.clone());
                }
            }
        }
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String(kind.into()));
    out.insert("metadata".into(), Value::Object(metadata));
    Some(Value::Object(out))
}

/// Removes the field at a decoder path such as `spec.requirements[0].valuse` (keys may contain
/// dots; the longest matching key wins), re-inserting its value under `rename_to` when given
/// and free. Returns whether something changed.
fn edit_path(value: &mut Value, path: &str, rename_to: Option<&str>) -> bool {
    let mut current = value;
    let mut rest = path;
    loop {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((index, after)) = after.split_once(']') else {
                return false;
            };
            let Ok(index) = index.parse::<usize>() else {
                return false;
            };
            rest = after.strip_prefix('.').unwrap_or(after);
            let Some(next) = current.get_mut(index) else {
                return false;
            };
            if rest.is_empty() {
                return false; // removing list elements would shift the indices in messages
            }
            current = next;
            continue;
        }
        let Some(obj) = current.as_object_mut() else {
            return false;
        };
        let key = obj
            .keys()
            .filter(|k| {
                rest == k.as_str()
                    || (rest.starts_with(k.as_str())
                        && matches!(rest.as_bytes().get(k.len()), Some(b'.' | b'[')))
            })
            .max_by_key(|k| k.len())
            .cloned();
        let Some(key) = key else {
            return false;
        };
        if rest == key {
            let Some(removed) = obj.remove(&key) else {
                return false;
            };
            if let Some(new) = rename_to.filter(|n| !obj.contains_key(*n)) {
                obj.insert(new.to_string(), removed);
            }
            return true;
        }
        let after = &rest[key.len()..];
        rest = after.strip_prefix('.').unwrap_or(after);
        let Some(next) = obj.get_mut(&key) else {
            return false;
        };
        current = next;
    }
}

/// How a JSON value reads in a message: `a list`, `a string`, `an empty document`, ...
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_valid_provisioner() {
        let p = decode_provisioner(&json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
                     "limits": {"resources": {"cpu": 1000}}, "ttlSecondsAfterEmpty": 30,
                     "provider": {"instanceProfile": "x"}}
        }));
        let p = p.map_err(|e| e.to_string());
        assert!(p.is_ok(), "{p:?}");
        let p = p.unwrap_or_else(|_| unreachable!());
        assert_eq!(p.metadata.name.as_deref(), Some("default"));
        assert_eq!(
            p.spec.limits.map(|l| l.resources["cpu"].milli()),
            Some(Ok(1_000_000))
        );
    }

    #[test]
    fn name_outside_metadata_is_explained() {
        let e = decode_provisioner(&json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": null, "name": "default", "spec": {}
        }))
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "name");
        assert!(e[0].fix.as_deref().unwrap_or("").contains("under metadata"));
        assert_eq!(e[1].field, "metadata");
    }

    #[test]
    fn unknown_nested_field_gets_a_suggestion() {
        let e = decode_provisioner(&json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "a"},
            "spec": {"requirements": [{"key": "k", "operator": "In", "valuse": ["x"]}]}
        }))
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "spec.requirements[0].valuse");
        assert_eq!(e[0].fix.as_deref(), Some("did you mean \"values\"?"));
    }

    #[test]
    fn wrong_kind_and_type_errors() {
        let e = decode_provisioner(&json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"ttlSecondsAfterEmpty": "thirty"}
        }))
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["apiVersion", "kind", "spec.ttlSecondsAfterEmpty"]);
        assert!(decode_provisioner(&json!([1])).is_err());
    }

    #[test]
    fn lenient_decoding_finds_every_error_and_salvages_the_object() {
        let d = decode_provisioner_all(&json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": null, "name": "default",
            "spec": {"requirements": [{"key": "k", "operator": "In", "valuse": ["x"]}],
                     "ttlSecondAfterEmpty": 30, "weight": "heavy"}
        }));
        let fields: Vec<_> = d.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "metadata",
                "spec.requirements[0].valuse",
                "spec.ttlSecondAfterEmpty",
                "spec.weight"
            ],
            "{:?}",
            d.errors
        );
        let p = d
            .object
            .unwrap_or_else(|| Provisioner::new("x", Default::default()));
        assert_eq!(p.metadata.name.as_deref(), Some("default"));
        assert_eq!(p.spec.requirements[0].values, ["x"]);
        assert_eq!(p.spec.ttl_seconds_after_empty, Some(30));
        assert_eq!(p.spec.weight, None);
        let clean = decode_provisioner_all(&json!({
            "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
            "metadata": {"name": "a"}, "spec": {}
        }));
        assert!(clean.is_clean());
        assert!(decode_node_template_all(&json!("text")).object.is_none());
    }

    #[test]
    fn edit_path_handles_lists_dotted_keys_and_renames() {
        let mut v = json!({"spec": {"a.b/c": {"x": 1}, "l": [{"y": 1, "z": 2}]}});
        assert!(edit_path(&mut v, "spec.l[0].y", None));
        assert!(edit_path(&mut v, "spec.a.b/c.x", Some("w")));
        assert!(edit_path(&mut v, "spec.l[0].z", Some("z2")));
        assert!(!edit_path(&mut v, "spec.l[0]", None));
        assert!(!edit_path(&mut v, "spec.missing", None));
        assert!(!edit_path(&mut v, "spec.l[9].z", None));
        assert_eq!(v, json!({"spec": {"a.b/c": {"w": 1}, "l": [{"z2": 2}]}}));
    }

    #[test]
    fn decodes_node_templates() {
        let t = decode_node_template(&json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "default"},
            "spec": {"subnetSelector": {"karpenter.sh/discovery": "demo"}, "userData": "echo hi"}
        }));
        assert!(t.is_ok(), "{t:?}");
        let e = decode_node_template(&json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "default"}, "spec": {"subnetSelectr": {}}
        }));
        let e = e.err().map(|e| e.0).unwrap_or_default();
        assert_eq!(
            e[0].fix.as_deref(),
            Some("did you mean \"subnetSelector\"?")
        );
    }

    #[test]
    fn exported_fields_at_the_wrong_level_say_where_they_belong() {
        let e = decode_node_template(&json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "default"}, "spec": {},
            "context": "c-1", "managedFields": [], "uid": "x"
        }))
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        let fixes: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.field.as_str(), e.fix.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(fixes.len(), 3, "{e:?}");
        assert!(fixes[0].0 == "context" && fixes[0].1.contains("under spec"));
        assert!(fixes[1].0 == "managedFields" && fixes[1].1.contains("under metadata"));
        assert!(fixes[2].0 == "uid" && fixes[2].1.contains("under metadata"));
        let exported = decode_node_template(&json!({
            "apiVersion": "karpenter.k8s.aws/v1alpha1", "kind": "AWSNodeTemplate",
            "metadata": {"name": "default", "uid": "x", "generation": 2,
                         "managedFields": [{"manager": "karpenter", "operation": "Update",
                                            "subresource": "status"}]},
            "spec": {"context": "c-1"},
            "status": {"amis": [{"id": "ami-1", "requirements": []}],
                       "securityGroups": [{"id": "sg-1", "name": "nodes"}]}
        }));
        let t = exported.map_err(|e| e.to_string());
        assert!(t.is_ok(), "{t:?}");
        let t = t.unwrap_or_else(|_| unreachable!());
        assert_eq!(t.spec.context.as_deref(), Some("c-1"));
        let status = t.status.unwrap_or_default();
        assert_eq!(status.amis[0].id, "ami-1");
        assert_eq!(status.security_groups[0].name.as_deref(), Some("nodes"));
    }
}
