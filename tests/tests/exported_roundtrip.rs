#![forbid(unsafe_code)]
//! Objects exported from Karpenter v0.27–v0.31 clusters (`tests/data/exported/`) apply to our
//! CRDs on the real kube-apiserver with strict field validation, through our webhooks, and read
//! back without losing a field: spec, status (restored through the status subresource, as a
//! migration would), labels and annotations.

use karpenter_e2e::controlplane::{ControlPlane, Options};
use karpenter_e2e::repo_root;
use serde_json::Value;

fn exported_objects() -> Vec<(String, Value)> {
    let dir = repo_root().join("tests/data/exported");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            let items = match v.get("items").and_then(Value::as_array) {
                Some(items) if v["kind"] == "List" => items.clone(),
                _ if v.is_null() => vec![],
                _ => vec![v],
            };
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.extend(items.into_iter().map(|i| (name.clone(), i)));
        }
    }
    out
}

fn resource(obj: &Value) -> String {
    let kind = match obj["kind"].as_str() {
        Some("Provisioner") => "provisioners.karpenter.sh",
        Some("AWSNodeTemplate") => "awsnodetemplates.karpenter.k8s.aws",
        other => panic!("unexpected kind {other:?}"),
    };
    format!(
        "{kind}/{}",
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// `v` without `key`; a missing map counts as an empty one.
fn without(v: &Value, key: &str) -> Value {
    let mut v = if v.is_null() {
        serde_json::json!({})
    } else {
        v.clone()
    };
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
    v
}

#[test]
fn exported_objects_apply_strictly_and_round_trip() {
    let cp = ControlPlane::shared(Options::default());
    let hook = cp
        .start_webhook("karpenter-webhook", &["--cluster-autoscaler-guard=deny"])
        .expect("webhook");
    cp.register_webhooks(&hook).expect("webhooks");
    let objects = exported_objects();
    assert!(objects.len() >= 6, "fixtures: {}", objects.len());
    for (file, obj) in &objects {
        let what = format!("{file}: {}", resource(obj));
        let text = serde_json::to_string(obj).expect("json");
        let out = cp
            .kubectl_as(
                &cp.kubeconfig,
                &["apply", "--validate=strict", "-f", "-"],
                Some(&text),
            )
            .expect("kubectl");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if obj.get("status").is_some_and(|s| !s.is_null()) {
            // Status is its own subresource: a migration restores it the same way.
            let mut status_only = obj.clone();
            if let Some(meta) = status_only["metadata"].as_object_mut() {
                meta.remove("managedFields");
                meta.remove("resourceVersion");
            }
            let text = serde_json::to_string(&status_only).expect("json");
            let out = cp
                .kubectl_as(
                    &cp.kubeconfig,
                    &[
                        "apply",
                        "--server-side",
                        "--subresource=status",
                        "--force-conflicts",
                        "--field-manager=migration",
                        "-f",
                        "-",
                    ],
                    Some(&text),
                )
                .expect("kubectl");
            assert!(
                out.status.success(),
                "{what} status: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let back = cp.get_json(&[&resource(obj)]).expect("read back");
        assert_eq!(back["spec"], obj["spec"], "{what}: spec changed");
        if obj.get("status").is_some_and(|s| !s.is_null()) {
            assert_eq!(back["status"], obj["status"], "{what}: status changed");
        }
        assert_eq!(
            back["metadata"]["labels"], obj["metadata"]["labels"],
            "{what}: labels changed"
        );
        let annotations = "kubectl.kubernetes.io/last-applied-configuration";
        assert_eq!(
            without(&back["metadata"]["annotations"], annotations),
            without(&obj["metadata"]["annotations"], annotations),
            "{what}: annotations changed"
        );
    }
    // `kubectl get` shows upstream's columns.
    let table = cp.kubectl_ok(&["get", "provisioners"]).expect("get");
    assert!(
        table.lines().next().is_some_and(|h| h.contains("TEMPLATE")),
        "{table}"
    );
    let wide = cp
        .kubectl_ok(&["get", "provisioners", "-o", "wide"])
        .expect("get");
    assert!(
        wide.lines().next().is_some_and(|h| h.contains("WEIGHT")),
        "{wide}"
    );
}
