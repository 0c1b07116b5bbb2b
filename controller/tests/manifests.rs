#![forbid(unsafe_code)]
//! Checks the committed manifests against the Rust types.
//!
//! - `manifests/crds/*.yaml` must be exactly what `crdgen` renders (run through the real binary).
//! - The CRDs must parse as `apiextensions.k8s.io/v1` objects with the expected names, scope,
//!   versions and schema bounds.
//! - Every document in `manifests/examples/*.yaml` must parse; Provisioners and AWSNodeTemplates
//!   must decode, default and validate without errors and satisfy the CRD's OpenAPI schema;
//!   Deployments must parse as `apps/v1` Deployments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use karpenter::api::{
    decode_node_template, decode_provisioner, default_provisioner, validate_node_template,
    validate_provisioner,
};
use serde::Deserialize;
use serde_json::{json, Value};

const REGENERATE: &str = "cargo run -p karpenter --bin crdgen -- --out-dir manifests/crds";
const PROVISIONER_CRD: &str = "karpenter.sh_provisioners.yaml";
const NODE_TEMPLATE_CRD: &str = "karpenter.k8s.aws_awsnodetemplates.yaml";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn crdgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run crdgen: {e}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

/// Every non-empty YAML document in `text`, as JSON.
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

/// `(file name, documents)` for every `manifests/examples/*.yaml`, sorted by name.
fn examples() -> Vec<(String, Vec<Value>)> {
    let dir = manifests().join("examples");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let docs = documents(&read(&p), &name);
            assert!(!docs.is_empty(), "{name} has no documents");
            (name, docs)
        })
        .collect()
}

/// Every example document of `kind`, with a label naming where it came from.
fn examples_of_kind(kind: &str) -> Vec<(String, Value)> {
    examples()
        .into_iter()
        .flat_map(|(file, docs)| {
            docs.into_iter()
                .enumerate()
                .map(move |(i, d)| (format!("{file}#{}", i + 1), d))
        })
        .filter(|(_, d)| d["kind"] == kind)
        .collect()
}

fn committed_crd(file: &str) -> CustomResourceDefinition {
    let path = manifests().join("crds").join(file);
    let docs = documents(&read(&path), file);
    assert_eq!(docs.len(), 1, "{file} should hold exactly one CRD");
    serde_json::from_value(docs[0].clone())
        .unwrap_or_else(|e| panic!("{file} is not a CustomResourceDefinition: {e}"))
}

/// The openAPIV3Schema of the CRD's only version, as JSON.
fn crd_schema(crd: &CustomResourceDefinition) -> Value {
    let schema: Option<&JSONSchemaProps> = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    let schema = schema.unwrap_or_else(|| panic!("{} has no openAPIV3Schema", crd.spec.names.kind));
    serde_json::to_value(schema).unwrap_or_else(|e| panic!("schema does not serialize: {e}"))
}

/// The schema errors of `object` against `schema`, one line each.
fn schema_errors(schema: &Value, object: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .unwrap_or_else(|e| panic!("the CRD schema is not a valid JSON schema: {e}"));
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Sets the field at `pointer`, adding it to its (existing) parent object when missing.
fn set(object: &mut Value, pointer: &str, value: Value) {
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let parent = object
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is not an object in the example"));
    parent.insert(field.to_string(), value);
}

// === CRDs ===

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = manifests().join("crds");
    let out = crdgen(&["--check", &dir.to_string_lossy()]);
    assert!(
        out.status.success(),
        "manifests/crds is out of date with controller/src/api (crdgen exited with {}):\n{}\n\
         regenerate with: {REGENERATE}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn crdgen_check_names_the_stale_file() {
    let dir = std::env::temp_dir().join(format!("karpenter-crdgen-{}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();
    let written = crdgen(&["--out-dir", &dir_arg]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    assert!(crdgen(&["--check", &dir_arg]).status.success());

    let stale = dir.join(NODE_TEMPLATE_CRD);
    let text = read(&stale);
    std::fs::write(&stale, text.replace("minimum: 1.0", "minimum: 0.0"))
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", stale.display()));
    let out = crdgen(&["--check", &dir_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(NODE_TEMPLATE_CRD), "{stderr}");
    assert!(!stderr.contains(PROVISIONER_CRD), "{stderr}");
    assert!(stderr.contains(REGENERATE), "{stderr}");
}

#[test]
fn crdgen_prints_both_crds_to_stdout() {
    let out = crdgen(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<Value> = documents(&stdout, "crdgen stdout")
        .into_iter()
        .map(|d| d["spec"]["names"]["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("Provisioner"), json!("AWSNodeTemplate")]);
    let on_disk = read(&manifests().join("crds").join(PROVISIONER_CRD));
    assert!(
        stdout.starts_with(&on_disk),
        "stdout should start with {PROVISIONER_CRD}"
    );

    let bad = crdgen(&["--bogus"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

#[test]
fn provisioner_crd_has_the_expected_shape() {
    let crd = committed_crd(PROVISIONER_CRD);
    let text = read(&manifests().join("crds").join(PROVISIONER_CRD));
    assert!(
        text.starts_with("# Generated by crdgen"),
        "missing header comment"
    );
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("provisioners.karpenter.sh")
    );
    assert_eq!(crd.spec.group, "karpenter.sh");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.plural, "provisioners");
    assert_eq!(crd.spec.names.kind, "Provisioner");
    let categories = crd.spec.names.categories.clone().unwrap_or_default();
    assert!(
        categories.iter().any(|c| c == "karpenter"),
        "{categories:?}"
    );
    assert_eq!(crd.spec.versions.len(), 1);
    let v = &crd.spec.versions[0];
    assert_eq!(
        (v.name.as_str(), v.served, v.storage),
        ("v1alpha5", true, true)
    );

    let schema = crd_schema(&crd);
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["weight"]["minimum"], json!(1.0));
    assert_eq!(spec["weight"]["maximum"], json!(100.0));
    assert_eq!(spec["ttlSecondsAfterEmpty"]["minimum"], json!(0.0));
    assert_eq!(spec["ttlSecondsUntilExpired"]["minimum"], json!(0.0));
    let requirement = &spec["requirements"]["items"];
    assert_eq!(
        requirement["properties"]["operator"]["enum"],
        json!(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"])
    );
    assert_eq!(requirement["required"], json!(["key", "operator"]));
    for taints in ["taints", "startupTaints"] {
        let taint = &spec[taints]["items"];
        assert_eq!(taint["required"], json!(["effect", "key"]), "{taints}");
        assert_eq!(
            taint["properties"]["effect"]["enum"],
            json!(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            "{taints}"
        );
    }
    assert_eq!(spec["providerRef"]["required"], json!(["name"]));
    let quantity = &spec["limits"]["properties"]["resources"]["additionalProperties"];
    assert_eq!(quantity["x-kubernetes-int-or-string"], json!(true));
    assert!(
        quantity.get("type").is_none(),
        "int-or-string must not set a type: {quantity}"
    );
    let kubelet = &spec["kubeletConfiguration"]["properties"];
    let percents: Vec<&Value> = kubelet
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.ends_with("ThresholdPercent"))
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(percents.len(), 2, "image GC thresholds: {kubelet}");
    for p in percents {
        assert_eq!((&p["minimum"], &p["maximum"]), (&json!(0.0), &json!(100.0)));
    }
}

#[test]
fn node_template_crd_has_the_expected_shape() {
    let crd = committed_crd(NODE_TEMPLATE_CRD);
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("awsnodetemplates.karpenter.k8s.aws")
    );
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.plural, "awsnodetemplates");
    assert_eq!(crd.spec.names.kind, "AWSNodeTemplate");
    let v = &crd.spec.versions[0];
    assert_eq!(
        (v.name.as_str(), v.served, v.storage),
        ("v1alpha1", true, true)
    );
    let schema = crd_schema(&crd);
    let hop = &schema["properties"]["spec"]["properties"]["metadataOptions"]["properties"]
        ["httpPutResponseHopLimit"];
    assert_eq!(
        (&hop["minimum"], &hop["maximum"]),
        (&json!(1.0), &json!(64.0))
    );
}

// === Examples ===

#[test]
fn every_example_document_is_a_known_kind() {
    for (file, docs) in examples() {
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{file}#{}", i + 1);
            match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("karpenter.sh/v1alpha5"), Some("Provisioner"))
                | (Some("karpenter.k8s.aws/v1alpha1"), Some("AWSNodeTemplate"))
                | (Some("apps/v1"), Some("Deployment")) => {}
                other => panic!("{at}: unexpected apiVersion/kind {other:?}"),
            }
        }
    }
}

#[test]
fn example_provisioners_decode_default_and_validate() {
    let provisioners = examples_of_kind("Provisioner");
    assert!(provisioners.len() >= 5, "found {}", provisioners.len());
    let mut failures = Vec::new();
    for (at, doc) in provisioners {
        let mut p = match decode_provisioner(&doc) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{at}: does not decode: {e}"));
                continue;
            }
        };
        let report = validate_provisioner(&p);
        failures.extend(report.errors.iter().map(|e| format!("{at}: {e}")));
        default_provisioner(&mut p.spec);
        let report = validate_provisioner(&p);
        failures.extend(
            report
                .errors
                .iter()
                .map(|e| format!("{at} (after defaulting): {e}")),
        );
        for w in &report.warnings {
            eprintln!("{at}: warning: {w}");
        }
    }
    assert!(
        failures.is_empty(),
        "example Provisioners have errors:\n{}",
        failures.join("\n")
    );
}

#[test]
fn example_node_templates_decode_and_validate() {
    let templates = examples_of_kind("AWSNodeTemplate");
    assert!(!templates.is_empty());
    let mut failures = Vec::new();
    for (at, doc) in templates {
        match decode_node_template(&doc) {
            Ok(t) => {
                let report = validate_node_template(&t);
                failures.extend(report.errors.iter().map(|e| format!("{at}: {e}")));
            }
            Err(e) => failures.push(format!("{at}: does not decode: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "example AWSNodeTemplates have errors:\n{}",
        failures.join("\n")
    );
}

#[test]
fn example_provider_refs_name_an_example_node_template() {
    let templates: Vec<String> = examples_of_kind("AWSNodeTemplate")
        .into_iter()
        .filter_map(|(_, d)| d["metadata"]["name"].as_str().map(String::from))
        .collect();
    for (at, doc) in examples_of_kind("Provisioner") {
        if let Some(name) = doc["spec"]["providerRef"]["name"].as_str() {
            assert!(
                templates.iter().any(|t| t == name),
                "{at}: no example AWSNodeTemplate {name:?}"
            );
        }
    }
}

#[test]
fn example_deployments_parse() {
    let deployments = examples_of_kind("Deployment");
    assert!(deployments.len() >= 2, "found {}", deployments.len());
    for (at, doc) in deployments {
        let d: Deployment = serde_json::from_value(doc)
            .unwrap_or_else(|e| panic!("{at}: not an apps/v1 Deployment: {e}"));
        let spec = d.spec.unwrap_or_else(|| panic!("{at}: no spec"));
        let pod = spec
            .template
            .spec
            .unwrap_or_else(|| panic!("{at}: no pod spec"));
        assert!(!pod.containers.is_empty(), "{at}: no containers");
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (k, v) in spec.selector.match_labels.unwrap_or_default() {
            assert_eq!(
                labels.get(&k),
                Some(&v),
                "{at}: selector {k}={v} does not match the pods"
            );
        }
    }
}

#[test]
fn guide_examples_say_what_the_guide_says() {
    let (_, p) = examples_of_kind("Provisioner")
        .into_iter()
        .find(|(at, _)| at.starts_with("provisioner.yaml"))
        .unwrap_or_else(|| panic!("provisioner.yaml has no Provisioner"));
    let p = decode_provisioner(&p).unwrap_or_else(|e| panic!("provisioner.yaml: {e}"));
    assert_eq!(p.metadata.name.as_deref(), Some("default"));
    assert_eq!(p.spec.ttl_seconds_after_empty, Some(30));
    let instance_profile = p
        .spec
        .provider
        .as_ref()
        .and_then(|a| a.instance_profile.as_deref());
    assert_eq!(
        instance_profile,
        Some("KarpenterNodeInstanceProfile-eks-karpenter-demo")
    );
    let reqs: Vec<(&str, &str, Vec<&str>)> = p
        .spec
        .requirements
        .iter()
        .map(|r| {
            (
                r.key.as_str(),
                r.operator.as_str(),
                r.values.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        reqs,
        [
            (
                "node.kubernetes.io/instance-type",
                "In",
                vec!["m5.large", "m5.2xlarge"]
            ),
            (
                "topology.kubernetes.io/zone",
                "In",
                vec!["us-east-1a", "us-east-1b"]
            ),
            ("kubernetes.io/arch", "In", vec!["arm64", "amd64"]),
            (
                "karpenter.sh/capacity-type",
                "In",
                vec!["spot", "on-demand"]
            ),
        ]
    );

    let (_, inflate) = examples_of_kind("Deployment")
        .into_iter()
        .find(|(at, _)| at.starts_with("inflate.yaml"))
        .unwrap_or_else(|| panic!("inflate.yaml has no Deployment"));
    let d: Deployment =
        serde_json::from_value(inflate).unwrap_or_else(|e| panic!("inflate.yaml: {e}"));
    assert_eq!(d.metadata.name.as_deref(), Some("inflate"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
    let spec = d.spec.unwrap_or_default();
    assert_eq!(spec.replicas, Some(0));
    let pod = spec.template.spec.unwrap_or_default();
    assert_eq!(pod.termination_grace_period_seconds, Some(0));
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("public.ecr.aws/eks-distro/kubernetes/pause:3.2")
    );
    let cpu = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"));
    assert_eq!(cpu.map(|q| q.0.as_str()), Some("1"));
}

#[test]
fn examples_satisfy_the_crd_schemas() {
    let mut failures = Vec::new();
    for (kind, file) in [
        ("Provisioner", PROVISIONER_CRD),
        ("AWSNodeTemplate", NODE_TEMPLATE_CRD),
    ] {
        let schema = crd_schema(&committed_crd(file));
        for (at, doc) in examples_of_kind(kind) {
            failures.extend(
                schema_errors(&schema, &doc)
                    .into_iter()
                    .map(|e| format!("{at}: {e}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "examples fail the CRD schema:\n{}",
        failures.join("\n")
    );
}

#[test]
fn crd_schema_rejects_what_the_api_server_would() {
    let schema = crd_schema(&committed_crd(PROVISIONER_CRD));
    let (_, base) = examples_of_kind("Provisioner")
        .into_iter()
        .find(|(at, _)| at.starts_with("provisioner-node-template.yaml"))
        .unwrap_or_else(|| panic!("provisioner-node-template.yaml has no Provisioner"));
    assert!(schema_errors(&schema, &base).is_empty());

    let cases = [
        ("/spec/weight", json!(0)),
        ("/spec/weight", json!(101)),
        ("/spec/ttlSecondsAfterEmpty", json!(-1)),
        ("/spec/requirements/0/operator", json!("in")),
        ("/spec/limits/resources/cpu", json!("1000 cores")),
    ];
    for (pointer, value) in cases {
        let mut p = base.clone();
        set(&mut p, pointer, value.clone());
        let errors = schema_errors(&schema, &p);
        assert!(
            !errors.is_empty(),
            "{pointer}: {value} should fail the CRD schema"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(pointer)),
            "{pointer}: {errors:?}"
        );
    }

    let mut missing_key = base.clone();
    if let Some(req) = missing_key
        .pointer_mut("/spec/requirements/0")
        .and_then(Value::as_object_mut)
    {
        req.remove("key");
    }
    assert!(
        !schema_errors(&schema, &missing_key).is_empty(),
        "a requirement without key"
    );

    let mut quantity_as_string = base;
    if let Some(cpu) = quantity_as_string.pointer_mut("/spec/limits/resources/cpu") {
        *cpu = json!("1500m");
    }
    assert!(
        schema_errors(&schema, &quantity_as_string).is_empty(),
        "\"1500m\" is a quantity"
    );
}
