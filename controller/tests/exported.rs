#![forbid(unsafe_code)]
//! Objects exported from Karpenter v0.27–v0.31 clusters (`tests/data/exported/*.yaml`, with
//! server-set metadata and status) against our types and our committed CRDs:
//!
//! - every field survives decoding into our types and serializing back;
//! - the apiserver would keep every field: each field path is declared in the CRD schema (or lies
//!   under `x-kubernetes-preserve-unknown-fields`), as structural pruning and strict field
//!   validation require, and the metadata is all `ObjectMeta`;
//! - each object satisfies the CRD's OpenAPI schema and our validation;
//! - the fixtures exercise every field our CRDs declare (so a new field gets a fixture);
//! - the printer columns point at declared fields, with upstream v0.31's TEMPLATE and WEIGHT.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use karpenter::api::{
    decode_node_template, decode_provisioner, validate_node_template, validate_provisioner,
};
use serde::Deserialize;
use serde_json::{Map, Value};

const PROVISIONER_CRD: &str = "karpenter.sh_provisioners.yaml";
const NODE_TEMPLATE_CRD: &str = "karpenter.k8s.aws_awsnodetemplates.yaml";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

fn documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: document {} is not valid YAML: {e}", i + 1))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Every exported object, `List` items expanded, labelled `file#document[/item]`.
fn exported() -> Vec<(String, Value)> {
    let dir = workspace().join("tests/data/exported");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "fixtures missing in {}", dir.display());
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, doc) in documents(&read(&path), &name).into_iter().enumerate() {
            let at = format!("{name}#{}", i + 1);
            if doc["kind"] == "List" {
                let items = doc["items"].as_array().cloned().unwrap_or_default();
                assert!(!items.is_empty(), "{at}: empty List");
                for (j, item) in items.into_iter().enumerate() {
                    out.push((format!("{at}/items[{j}]"), item));
                }
            } else {
                out.push((at, doc));
            }
        }
    }
    out
}

fn of_kind(kind: &str) -> Vec<(String, Value)> {
    let all = exported();
    let found: Vec<_> = all.into_iter().filter(|(_, d)| d["kind"] == kind).collect();
    assert!(found.len() >= 2, "fewer than two exported {kind}s");
    found
}

/// The openAPIV3Schema of a committed CRD.
fn crd_schema(file: &str) -> Value {
    let path = workspace().join("manifests/crds").join(file);
    let docs = documents(&read(&path), file);
    docs[0]
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_else(|| panic!("{file} has no openAPIV3Schema"))
}

fn crd_version(file: &str) -> Value {
    let path = workspace().join("manifests/crds").join(file);
    documents(&read(&path), file)[0]
        .pointer("/spec/versions/0")
        .cloned()
        .unwrap_or_else(|| panic!("{file} has no version"))
}

fn schema_file(kind: &str) -> &'static str {
    match kind {
        "Provisioner" => PROVISIONER_CRD,
        "AWSNodeTemplate" => NODE_TEMPLATE_CRD,
        other => panic!("unexpected kind {other}"),
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
}

fn int_or_string(schema: &Value) -> bool {
    schema["x-kubernetes-int-or-string"] == Value::Bool(true)
}

/// The schema of `key` inside an object schema: a declared property, or the value schema of a map.
fn child<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema["properties"]
        .get(key)
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

/// Field paths of `value` the apiserver would prune with `schema` (structural pruning: a field
/// is kept when declared in `properties`, covered by `additionalProperties`, or under
/// `x-kubernetes-preserve-unknown-fields`).
fn pruned(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let at = format!("{path}.{key}");
                match child(schema, key) {
                    Some(s) => pruned(s, v, &at, out),
                    None if preserves_unknown(schema) => {}
                    None => out.push(at),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pruned(&schema["items"], v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Pruning of a whole object: apiVersion and kind are always kept, metadata is `ObjectMeta`.
fn pruned_object(schema: &Value, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(map) = object.as_object() else {
        return vec!["(root) is not an object".into()];
    };
    for (key, v) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let meta: ObjectMeta = match serde_json::from_value(v.clone()) {
                    Ok(m) => m,
                    Err(e) => {
                        out.push(format!("metadata is not ObjectMeta: {e}"));
                        continue;
                    }
                };
                let back = serde_json::to_value(&meta).unwrap_or(Value::Null);
                let mut lost = Vec::new();
                diff(&Value::Null, v, &back, "metadata", &mut lost);
                out.extend(lost);
            }
            _ => match child(schema, key) {
                Some(s) => pruned(s, v, key, &mut out),
                None => out.push(key.clone()),
            },
        }
    }
    out
}

/// Differences between `before` and `after`, by field path; numbers and strings compare by text
/// where the schema says int-or-string (a quantity written as `1000` reads back as `"1000"`).
fn diff(schema: &Value, before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, va) in a {
                let at = format!("{path}.{key}");
                match b.get(key) {
                    Some(vb) => diff(child(schema, key).unwrap_or(&Value::Null), va, vb, &at, out),
                    None => out.push(format!("{at}: lost ({va})")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{key}: added ({})", b[key]));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&schema["items"], va, vb, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(n), Value::String(s)) if int_or_string(schema) && n.to_string() == *s => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

fn round_trip(kind: &str, object: &Value) -> Result<Value, String> {
    let typed = match kind {
        "Provisioner" => decode_provisioner(object).map(serde_json::to_value),
        "AWSNodeTemplate" => decode_node_template(object).map(serde_json::to_value),
        other => return Err(format!("unexpected kind {other}")),
    };
    typed
        .map_err(|e| format!("does not decode: {e}"))?
        .map_err(|e| format!("does not serialize: {e}"))
}

#[test]
fn every_exported_field_survives_decode_and_serialize() {
    let mut failures = Vec::new();
    for (at, object) in exported() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let schema = crd_schema(schema_file(&kind));
        match round_trip(&kind, &object) {
            Ok(back) => {
                let mut changes = Vec::new();
                diff(&schema, &object, &back, "", &mut changes);
                failures.extend(changes.into_iter().map(|c| format!("{at}: {c}")));
            }
            Err(e) => failures.push(format!("{at}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "exported objects change through our types:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_crds_keep_every_exported_field() {
    let mut failures = Vec::new();
    for (at, object) in exported() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let schema = crd_schema(schema_file(&kind));
        failures.extend(
            pruned_object(&schema, &object)
                .into_iter()
                .map(|p| format!("{at}: {p} would be pruned (strict apply: unknown field)")),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pruning_check_finds_unknown_fields() {
    let schema = crd_schema(NODE_TEMPLATE_CRD);
    let (_, mut object) = of_kind("AWSNodeTemplate")
        .into_iter()
        .find(|(_, o)| o["status"]["amis"].is_array())
        .unwrap_or_else(|| panic!("no exported AWSNodeTemplate has status.amis"));
    assert!(pruned_object(&schema, &object).is_empty());
    object["spec"]["blockDeviceMappings"][0]["ebs"]["sizeGB"] = Value::from(20);
    object["status"]["amis"][0]["imageLocation"] = Value::from("amazon/x");
    object["metadata"]["selfLinkk"] = Value::from("/x");
    object["extra"] = Value::from(1);
    let found = pruned_object(&schema, &object);
    let expect = [
        "spec.blockDeviceMappings[0].ebs.sizeGB",
        "status.amis[0].imageLocation",
        "metadata.selfLinkk",
        "extra",
    ];
    for e in expect {
        assert!(found.iter().any(|f| f.starts_with(e)), "{e} in {found:?}");
    }
}

#[test]
fn exported_objects_satisfy_the_crd_schemas_and_our_validation() {
    let mut failures = Vec::new();
    for (at, object) in exported() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let schema = crd_schema(schema_file(&kind));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&schema)
            .unwrap_or_else(|e| panic!("the {kind} CRD schema does not compile: {e}"));
        failures.extend(
            validator
                .iter_errors(&object)
                .map(|e| format!("{at}: schema: {}: {e}", e.instance_path())),
        );
        let report = match kind.as_str() {
            "Provisioner" => decode_provisioner(&object).map(|p| validate_provisioner(&p)),
            _ => decode_node_template(&object).map(|t| validate_node_template(&t)),
        };
        match report {
            Ok(r) => failures.extend(r.errors.iter().map(|e| format!("{at}: {e}"))),
            Err(e) => failures.push(format!("{at}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every field path a schema declares (`spec.kubeletConfiguration.maxPods`, `status.amis[]`).
fn declared(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            out.insert(at.clone());
            declared(s, &at, out);
        }
    }
    if schema.get("items").is_some() {
        declared(&schema["items"], &format!("{path}[]"), out);
    }
}

/// Every field path an object uses, in the same notation (map keys under a declared map are not
/// field paths and stop the walk).
fn used(schema: &Value, value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if schema["properties"].is_object() => {
            for (k, v) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(at.clone());
                used(&schema["properties"][k], v, &at, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                used(&schema["items"], v, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_fixtures_exercise_every_declared_field() {
    // `apiVersion`/`kind` inside an AWSNodeTemplate spec are upstream schema oddities nobody writes.
    let never_exported: BTreeSet<&str> = ["spec.apiVersion", "spec.kind"].into();
    for kind in ["Provisioner", "AWSNodeTemplate"] {
        let schema = crd_schema(schema_file(kind));
        let mut want = BTreeSet::new();
        declared(&schema, "", &mut want);
        let mut have = BTreeSet::new();
        for (_, object) in of_kind(kind) {
            used(&schema, &object, "", &mut have);
        }
        let missing: Vec<&String> = want
            .iter()
            .filter(|p| !have.contains(*p))
            .filter(|p| !(kind == "AWSNodeTemplate" && never_exported.contains(p.as_str())))
            .collect();
        assert!(
            missing.is_empty(),
            "no exported {kind} fixture uses {missing:?}; add them to tests/data/exported"
        );
    }
}

/// Whether a printer column's JSON path names a declared field.
fn column_declared(schema: &Value, json_path: &str) -> bool {
    if json_path == ".metadata.creationTimestamp" {
        return true;
    }
    let mut s = schema;
    for seg in json_path.trim_start_matches('.').split('.') {
        let (name, indexed) = match seg.split_once('[') {
            Some((n, _)) => (n, true),
            None => (seg, false),
        };
        match child(s, name) {
            Some(next) => s = next,
            None => return false,
        }
        if indexed {
            s = &s["items"];
        }
    }
    true
}

fn columns(file: &str) -> Vec<Map<String, Value>> {
    crd_version(file)["additionalPrinterColumns"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_object().cloned()).collect())
        .unwrap_or_default()
}

#[test]
fn printer_columns_show_what_upstream_shows_and_name_declared_fields() {
    let provisioner = columns(PROVISIONER_CRD);
    let find = |name: &str| {
        provisioner
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} column: {provisioner:?}"))
    };
    let template = find("Template");
    assert_eq!(template["jsonPath"], ".spec.providerRef.name");
    assert!(
        template.get("priority").is_none_or(|p| p == 0),
        "TEMPLATE is shown by default"
    );
    let weight = find("Weight");
    assert_eq!(weight["jsonPath"], ".spec.weight");
    assert_eq!(weight["priority"], 1, "WEIGHT only under -o wide");
    let first = provisioner[0]["name"].clone();
    assert_eq!(
        first, "Template",
        "TEMPLATE is the first column, as upstream"
    );

    let templates = columns(NODE_TEMPLATE_CRD);
    assert!(templates.len() >= 3, "{templates:?}");
    for (file, cols) in [
        (PROVISIONER_CRD, &provisioner),
        (NODE_TEMPLATE_CRD, &templates),
    ] {
        let schema = crd_schema(file);
        for c in cols.iter() {
            let path = c["jsonPath"].as_str().unwrap_or_default();
            assert!(
                column_declared(&schema, path),
                "{file}: column {c:?} names no field"
            );
        }
    }
}

#[test]
fn the_round_trip_check_reports_lost_added_and_changed_fields() {
    let schema = crd_schema(PROVISIONER_CRD);
    let before = serde_json::json!({
        "spec": {"limits": {"resources": {"cpu": 1000}}, "weight": 10, "labels": {"a": "b"}},
        "status": {"resources": {"cpu": "4"}}
    });
    let same = serde_json::json!({
        "spec": {"limits": {"resources": {"cpu": "1000"}}, "weight": 10, "labels": {"a": "b"}},
        "status": {"resources": {"cpu": "4"}}
    });
    let mut out = Vec::new();
    diff(&schema, &before, &same, "", &mut out);
    assert!(
        out.is_empty(),
        "a quantity read back as a string is the same: {out:?}"
    );
    let changed = serde_json::json!({
        "spec": {"limits": {"resources": {"cpu": "1k"}}, "weight": "10", "taints": []},
        "status": {"resources": {"cpu": "4"}}
    });
    diff(&schema, &before, &changed, "", &mut out);
    assert_eq!(
        out,
        [
            ".spec.labels: lost ({\"a\":\"b\"})",
            ".spec.limits.resources.cpu: 1000 became \"1k\"",
            ".spec.weight: 10 became \"10\"",
            ".spec.taints: added ([])",
        ]
    );
}
