#![forbid(unsafe_code)]
//! Decision tests: captured AdmissionReview fixtures (`tests/data/*.json`) sent through the
//! axum router in-process, with the Cluster Autoscaler cache given as fixture snapshots.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use karpenter_webhook::admin::{self, AdminState, Readiness};
use karpenter_webhook::decision::{Admission, StaticView};
use karpenter_webhook::guard::{ClusterSnapshot, GuardMode, SnapshotFile};
use karpenter_webhook::metrics::Metrics;
use karpenter_webhook::server::{router, AppState, Clock, Limits};
use karpenter_webhook::{DEFAULT_PATH, VALIDATE_DEPLOYMENTS_PATH, VALIDATE_PATH};
use serde_json::Value;
use tower::ServiceExt;

const NOW: &str = "2024-05-01T12:00:00Z";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn snapshot(name: Option<&str>) -> ClusterSnapshot {
    match name {
        None => ClusterSnapshot::default(),
        Some(n) => serde_json::from_value::<SnapshotFile>(fixture(n))
            .unwrap_or_else(|e| panic!("{n}: {e}"))
            .into(),
    }
}

fn app_with(mode: GuardMode, cluster: Option<&str>, metrics: Arc<Metrics>) -> Router {
    let admission = Admission::new(mode, Duration::from_secs(300)).expect("schemas compile");
    router(AppState {
        admission: Arc::new(admission),
        view: Arc::new(StaticView(snapshot(cluster))),
        metrics,
        clock: Clock::Fixed(NOW.parse().expect("timestamp")),
        limits: Limits::default(),
    })
}

fn app(mode: GuardMode, cluster: Option<&str>) -> Router {
    app_with(mode, cluster, Arc::new(Metrics::default()))
}

async fn send(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Posts a fixture and returns the AdmissionReview's `response`, checking the envelope.
async fn review(app: &Router, path: &str, review: &Value) -> Value {
    let (status, body) = send(app, path, review.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "uid echoed");
    response
}

fn patch_of(response: &Value) -> Option<Value> {
    let b64 = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    Some(serde_json::from_slice(&bytes).expect("patch JSON"))
}

/// Applies the `add` operations of an RFC 6902 patch (all the defaulting webhook emits).
fn apply_adds(object: &mut Value, patch: &Value) {
    for op in patch.as_array().expect("patch is a list") {
        assert_eq!(op["op"], "add", "defaulting only adds: {op}");
        let path = op["path"].as_str().expect("path");
        let (parent, last) = path.rsplit_once('/').expect("pointer");
        let target = object.pointer_mut(parent).expect("parent exists");
        match (target, last) {
            (Value::Array(items), "-") => items.push(op["value"].clone()),
            (Value::Object(map), key) => {
                map.insert(key.to_string(), op["value"].clone());
            }
            (t, _) => panic!("cannot add {path} to {t}"),
        }
    }
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

// === defaulting ===

#[tokio::test]
async fn defaulting_adds_only_what_is_missing_and_is_idempotent() {
    let app = app(GuardMode::Off, None);
    let mut r = fixture("provisioner-create-needs-defaults.json");
    let response = review(&app, DEFAULT_PATH, &r).await;
    assert_eq!(response["allowed"], true);
    let patch = patch_of(&response).expect("a patch");
    let values: Vec<(String, String)> = patch
        .as_array()
        .expect("list")
        .iter()
        .map(|op| {
            assert_eq!(op["path"], "/spec/requirements/-");
            (
                op["value"]["key"].as_str().unwrap_or("").to_string(),
                op["value"]["values"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            ("karpenter.sh/capacity-type".into(), "on-demand".into()),
            ("kubernetes.io/arch".into(), "amd64".into()),
            ("kubernetes.io/os".into(), "linux".into()),
            ("karpenter.k8s.aws/instance-category".into(), "c".into()),
            ("karpenter.k8s.aws/instance-generation".into(), "2".into()),
        ]
    );
    // The zone requirement the user wrote is untouched; a second pass changes nothing.
    apply_adds(&mut r["request"]["object"], &patch);
    assert_eq!(
        r["request"]["object"]["spec"]["requirements"][0]["key"],
        "topology.kubernetes.io/zone"
    );
    let again = review(&app, DEFAULT_PATH, &r).await;
    assert_eq!(again["allowed"], true);
    assert!(patch_of(&again).is_none(), "second pass patched: {again}");
    // And the defaulted object validates.
    let validated = review(&app, VALIDATE_PATH, &r).await;
    assert_eq!(validated["allowed"], true, "{validated}");
}

#[tokio::test]
async fn defaulting_adds_a_spec_when_there_is_none() {
    let app = app(GuardMode::Off, None);
    let mut r = fixture("provisioner-create-no-spec.json");
    let response = review(&app, DEFAULT_PATH, &r).await;
    let patch = patch_of(&response).expect("a patch");
    assert_eq!(patch.as_array().map(Vec::len), Some(1));
    assert_eq!(patch[0]["path"], "/spec");
    apply_adds(&mut r["request"]["object"], &patch);
    assert_eq!(
        r["request"]["object"]["spec"]["requirements"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    assert!(patch_of(&review(&app, DEFAULT_PATH, &r).await).is_none());
}

#[tokio::test]
async fn complete_provisioners_are_not_patched() {
    let app = app(GuardMode::Off, None);
    let response = review(
        &app,
        DEFAULT_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn undecodable_provisioners_are_left_to_validation() {
    let app = app(GuardMode::Off, None);
    let r = fixture("provisioner-create-schema-invalid.json");
    let response = review(&app, DEFAULT_PATH, &r).await;
    assert_eq!(response["allowed"], true);
}

// === validation ===

#[tokio::test]
async fn valid_objects_are_allowed() {
    let app = app(GuardMode::Off, None);
    for name in [
        "provisioner-create-valid.json",
        "provisioner-update-valid.json",
        "awsnodetemplate-create-valid.json",
    ] {
        let response = review(&app, VALIDATE_PATH, &fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(response.get("warnings").is_none(), "{name}: {response}");
    }
}

/// Every object in `tests/data/exported` (Karpenter v0.27–v0.31 exports, `List` items expanded).
fn exported_objects() -> Vec<(String, Value)> {
    let dir = format!("{}/../tests/data/exported", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path:?} document {}: {e}", i + 1));
            let at = format!("{}#{}", path.display(), i + 1);
            match doc["kind"].as_str() {
                Some("List") => out.extend(
                    doc["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(j, item)| (format!("{at}/items[{j}]"), item.clone())),
                ),
                _ if doc.is_null() => {}
                _ => out.push((at, doc)),
            }
        }
    }
    out
}

/// An AdmissionReview for `object` as the apiserver sends it on `kubectl apply`.
fn review_of(object: &Value, operation: &str) -> Value {
    let mut r = fixture("awsnodetemplate-create-valid.json");
    let (group, version) = object["apiVersion"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = format!("{}s", kind.to_ascii_lowercase());
    let gvk = serde_json::json!({"group": group, "version": version, "kind": kind});
    let gvr = serde_json::json!({"group": group, "version": version, "resource": resource});
    let request = &mut r["request"];
    request["kind"] = gvk.clone();
    request["requestKind"] = gvk;
    request["resource"] = gvr.clone();
    request["requestResource"] = gvr;
    request["name"] = object["metadata"]["name"].clone();
    request["operation"] = Value::from(operation);
    request["object"] = object.clone();
    if operation == "UPDATE" {
        request["oldObject"] = object.clone();
        request["options"]["kind"] = Value::from("UpdateOptions");
    }
    r
}

#[tokio::test]
async fn objects_exported_from_upstream_clusters_are_admitted() {
    let app = app(GuardMode::Off, None);
    let objects = exported_objects();
    let kinds: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|(_, o)| o["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["AWSNodeTemplate", "Provisioner"].into());
    assert!(objects.len() >= 8, "{}", objects.len());
    for (at, object) in &objects {
        for operation in ["CREATE", "UPDATE"] {
            let mut r = review_of(object, operation);
            if object["kind"] == "Provisioner" {
                // The mutating webhook is registered for Provisioners only.
                let defaulted = review(&app, DEFAULT_PATH, &r).await;
                assert_eq!(defaulted["allowed"], true, "{at} {operation}: {defaulted}");
                if let Some(patch) = patch_of(&defaulted) {
                    apply_adds(&mut r["request"]["object"], &patch);
                }
            }
            let response = review(&app, VALIDATE_PATH, &r).await;
            assert_eq!(
                response["allowed"],
                true,
                "{at} {operation}: {}",
                message(&response)
            );
            // The only acceptable warning is the upstream deprecation of inline providers.
            let warnings: Vec<&str> = response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let inline = object["spec"].get("provider").is_some();
            assert!(
                warnings.iter().all(|w| inline
                    && w.contains("spec.provider: inline provider settings are deprecated")),
                "{at} {operation}: {warnings:?}"
            );
        }
    }
}

#[tokio::test]
async fn schema_errors_are_all_listed_with_paths_and_fixes() {
    let app = app(GuardMode::Off, None);
    let r = fixture("provisioner-create-schema-invalid.json");
    let response = review(&app, VALIDATE_PATH, &r).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["reason"], "Invalid");
    let msg = message(&response);
    eprintln!("{msg}");
    assert!(
        msg.starts_with("Provisioner \"broken\" is invalid ("),
        "{msg}"
    );
    for field in [
        "spec.requirements[0].operator: \"Inn\"",
        "spec.weight: \"500\"",
        "spec.ttlSecondsAfterEmpty",
        "spec.taints[0].effect: \"NoSchedul\"",
    ] {
        assert!(msg.contains(field), "missing {field} in:\n{msg}");
    }
    assert!(msg.contains("(fix: use one of: In, NotIn, Exists, DoesNotExist, Gt, Lt)"));
    // One line per error, each with a fix.
    let lines: Vec<_> = msg.lines().skip(1).collect();
    assert!(lines.len() >= 4, "{msg}");
    assert!(lines.iter().all(|l| l.starts_with("- ")), "{msg}");
}

#[tokio::test]
async fn semantic_errors_are_all_listed() {
    let app = app(GuardMode::Off, None);
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("provisioner-create-semantic-invalid.json"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let msg = message(&response);
    eprintln!("{msg}");
    assert!(msg.contains("found both"), "{msg}");
    assert!(msg.contains("spec.requirements[0]"), "{msg}");
    assert!(msg.contains("kubernetes.io/hostname"), "{msg}");
    assert!(msg.matches("(fix: ").count() >= 3, "{msg}");
}

#[tokio::test]
async fn soft_problems_become_warnings() {
    let app = app(GuardMode::Off, None);
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("provisioner-create-on-demand-few-types.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("2 instance type(s)")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn invalid_node_templates_are_denied() {
    let app = app(GuardMode::Off, None);
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("awsnodetemplate-create-invalid.json"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    let msg = message(&response);
    assert!(
        msg.starts_with("AWSNodeTemplate \"custom\" is invalid"),
        "{msg}"
    );
    assert!(msg.contains("spec.userData"), "{msg}");
    assert!(msg.contains("spec.amiSelector"), "{msg}");
}

// === Cluster Autoscaler guard: Provisioners ===

#[tokio::test]
async fn provisioners_are_denied_while_a_cluster_autoscaler_runs() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-running.json"));
    for name in [
        "provisioner-create-valid.json",
        "provisioner-update-valid.json",
    ] {
        let response = review(&app, VALIDATE_PATH, &fixture(name)).await;
        assert_eq!(response["allowed"], false, "{name}");
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
        let msg = message(&response);
        eprintln!("{msg}");
        assert!(
            msg.contains("Deployment kube-system/cluster-autoscaler (name cluster-autoscaler)"),
            "{msg}"
        );
        assert!(
            msg.contains("ConfigMap kube-system/cluster-autoscaler-status was updated 4s ago"),
            "{msg}"
        );
        assert!(
            msg.contains("Lease kube-system/cluster-autoscaler was renewed 2s ago"),
            "{msg}"
        );
        assert!(
            msg.contains("kubectl -n kube-system scale deployment/cluster-autoscaler --replicas=0"),
            "{msg}"
        );
        assert!(msg.contains("karpenter.sh/allow-with-cluster-autoscaler: \"true\""));
    }
}

#[tokio::test]
async fn metadata_only_updates_pass_the_guard() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-running.json"));
    let mut r = fixture("provisioner-update-valid.json");
    r["request"]["object"]["spec"] = r["request"]["oldObject"]["spec"].clone();
    r["request"]["object"]["metadata"]["finalizers"] =
        serde_json::json!(["karpenter.sh/termination"]);
    let response = review(&app, VALIDATE_PATH, &r).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn stopped_or_stale_cluster_autoscalers_do_not_count() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-stopped.json"));
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
    let app = app_with(GuardMode::Deny, None, Arc::new(Metrics::default()));
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn the_escape_annotation_and_warn_mode_admit_with_a_warning() {
    let app_deny = app(GuardMode::Deny, Some("cluster-autoscaler-running.json"));
    let response = review(
        &app_deny,
        VALIDATE_PATH,
        &fixture("provisioner-create-allow-with-ca.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    let w = response["warnings"][0].as_str().unwrap_or("");
    assert!(w.contains("allowed by the karpenter.sh/allow-with-cluster-autoscaler annotation"));
    assert!(w.contains("kubectl -n kube-system scale deployment/cluster-autoscaler --replicas=0"));

    let app_warn = app(GuardMode::Warn, Some("cluster-autoscaler-running.json"));
    let response = review(
        &app_warn,
        VALIDATE_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    assert!(response["warnings"][0]
        .as_str()
        .unwrap_or("")
        .contains("--cluster-autoscaler-guard=warn"));

    let app_off = app(GuardMode::Off, Some("cluster-autoscaler-running.json"));
    let response = review(
        &app_off,
        VALIDATE_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none());
}

// === Cluster Autoscaler guard: Deployments ===

#[tokio::test]
async fn cluster_autoscaler_deployments_are_denied_while_provisioners_exist() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-stopped.json"));
    for name in [
        "deployment-create-cluster-autoscaler.json",
        "deployment-scale-up-cluster-autoscaler.json",
    ] {
        let response = review(&app, VALIDATE_DEPLOYMENTS_PATH, &fixture(name)).await;
        assert_eq!(response["allowed"], false, "{name}: {response}");
        assert_eq!(response["status"]["code"], 403);
        let msg = message(&response);
        assert!(msg.contains("(0 -> 1 replicas)"), "{msg}");
        assert!(msg.contains("Provisioners exist (default, gpu)"), "{msg}");
    }
}

#[tokio::test]
async fn scaling_a_cluster_autoscaler_to_zero_is_always_allowed() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-stopped.json"));
    let response = review(
        &app,
        VALIDATE_DEPLOYMENTS_PATH,
        &fixture("deployment-update-scale-to-zero.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn cluster_autoscaler_deployments_are_fine_without_provisioners() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-running.json"));
    let response = review(
        &app,
        VALIDATE_DEPLOYMENTS_PATH,
        &fixture("deployment-create-cluster-autoscaler.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
}

// === bad input ===

#[tokio::test]
async fn wrong_kinds_get_an_unsupported_resource_answer() {
    let app = app(GuardMode::Deny, None);
    let pod = fixture("pod-create.json");
    for path in [DEFAULT_PATH, VALIDATE_PATH, VALIDATE_DEPLOYMENTS_PATH] {
        let response = review(&app, path, &pod).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 400);
        assert!(
            message(&response).starts_with("unsupported resource v1/Pod"),
            "{response}"
        );
    }
    // A Provisioner sent to the Deployment webhook, and a Deployment to the Provisioner one.
    let response = review(
        &app,
        VALIDATE_DEPLOYMENTS_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    assert!(message(&response).starts_with("unsupported resource karpenter.sh/v1alpha5"));
    let response = review(
        &app,
        VALIDATE_PATH,
        &fixture("deployment-create-cluster-autoscaler.json"),
    )
    .await;
    assert!(message(&response).starts_with("unsupported resource apps/v1 Deployment"));
}

#[tokio::test]
async fn a_review_without_request_is_invalid() {
    let app = app(GuardMode::Off, None);
    let (status, body) = send(
        &app,
        VALIDATE_PATH,
        fixture("review-without-request.json").to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 400);
    assert_eq!(
        body["response"]["status"]["message"],
        "invalid AdmissionReview: the AdmissionReview has no request"
    );
}

#[tokio::test]
async fn malformed_truncated_and_oversized_bodies_get_4xx_with_a_message() {
    let app = app(GuardMode::Off, None);
    let (status, body) = send(&app, VALIDATE_PATH, "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["kind"], "Status");
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("request body is not a JSON AdmissionReview"));

    let full = fixture("provisioner-create-valid.json").to_string();
    let (status, body) = send(&app, VALIDATE_PATH, full[..full.len() / 2].to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap_or("").contains("truncated"),
        "{body}"
    );

    let (status, body) = send(&app, VALIDATE_PATH, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let huge = format!(
        "{{\"apiVersion\":\"admission.k8s.io/v1\",\"pad\":\"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let (status, body) = send(&app, VALIDATE_PATH, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body["message"],
        "request body is larger than the limit of 3145728 bytes"
    );

    let (status, body) = send(&app, "/mutate", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.as_str().unwrap_or("").contains("/validate"));

    let get = Request::get(VALIDATE_PATH)
        .body(Body::empty())
        .expect("req");
    let resp = app.clone().oneshot(get).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn json_that_is_not_a_review_is_invalid_not_a_crash() {
    let app = app(GuardMode::Deny, Some("cluster-autoscaler-running.json"));
    for body in [
        "null",
        "[]",
        "42",
        "\"x\"",
        "{}",
        r#"{"request": {"uid": 1}}"#,
    ] {
        let (status, v) = send(&app, VALIDATE_PATH, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(v["response"]["allowed"], false, "{body}");
        assert_eq!(v["response"]["status"]["code"], 400, "{body}");
    }
}

// === admin ===

#[tokio::test]
async fn readiness_and_metrics() {
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let admin = admin::router(AdminState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
    });
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            let resp = admin
                .oneshot(Request::get(path).body(Body::empty()).expect("req"))
                .await
                .expect("infallible");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    assert_eq!(get(admin::HEALTHZ_PATH).await.0, StatusCode::OK);
    let (status, text) = get(admin::READYZ_PATH).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text,
        "not ready: serving certificate not loaded, cluster caches not synced\n"
    );
    readiness.set_certs_loaded();
    readiness.set_caches_synced();
    assert_eq!(get(admin::READYZ_PATH).await.0, StatusCode::OK);

    let app = app_with(
        GuardMode::Deny,
        Some("cluster-autoscaler-running.json"),
        metrics,
    );
    review(
        &app,
        VALIDATE_PATH,
        &fixture("provisioner-create-valid.json"),
    )
    .await;
    review(
        &app,
        DEFAULT_PATH,
        &fixture("provisioner-create-needs-defaults.json"),
    )
    .await;
    send(&app, VALIDATE_PATH, "{").await;
    let (_, text) = get(admin::METRICS_PATH).await;
    for line in [
        "karpenter_webhook_requests_total{path=\"/validate\",outcome=\"denied\"} 1",
        "karpenter_webhook_requests_total{path=\"/validate\",outcome=\"error\"} 1",
        "karpenter_webhook_requests_total{path=\"/default\",outcome=\"patched\"} 1",
        "karpenter_webhook_denials_total{rule=\"cluster-autoscaler\"} 1",
        "karpenter_webhook_request_duration_seconds_count{path=\"/validate\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let _ = Timestamp::UNIX_EPOCH;
}

/// The committed fuzz corpus (`tests/corpus/*.json`): awkward inputs that once needed care
/// (wrong types, null objects, huge numbers, control characters, deep nesting). Each must get
/// an answer for every endpoint and guard mode, keep the request's uid when it has one, and
/// never allow an object that does not decode.
#[test]
fn corpus_inputs_get_clear_answers() {
    let dir = format!("{}/tests/corpus", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus is missing: {dir}");
    let now: Timestamp = NOW.parse().expect("timestamp");
    let view = StaticView(snapshot(Some("cluster-autoscaler-running.json")));
    for mode in [GuardMode::Off, GuardMode::Warn, GuardMode::Deny] {
        let admission = Admission::new(mode, Duration::from_secs(300)).expect("schemas compile");
        for path in &files {
            let text = std::fs::read_to_string(path).expect("read corpus file");
            let review: Value = serde_json::from_str(&text).expect("corpus file is JSON");
            let uid = review.pointer("/request/uid").and_then(Value::as_str);
            for ep in [
                karpenter_webhook::decision::Endpoint::Default,
                karpenter_webhook::decision::Endpoint::Validate,
                karpenter_webhook::decision::Endpoint::ValidateDeployments,
            ] {
                let d = admission.decide(ep, &review, &view, now);
                if let Some(uid) = uid {
                    assert_eq!(d.response.uid, uid, "{path:?} {ep:?}");
                }
                assert_eq!(
                    d.response.allowed,
                    d.response.status.is_none(),
                    "{path:?} {ep:?}: a denial carries a status, an admission none"
                );
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let is_provisioner =
                    review.pointer("/request/kind/kind") == Some(&"Provisioner".into());
                if ep == karpenter_webhook::decision::Endpoint::Validate && is_provisioner {
                    assert!(
                        !d.response.allowed,
                        "{name}: an undecodable Provisioner was allowed"
                    );
                }
            }
        }
    }
}
