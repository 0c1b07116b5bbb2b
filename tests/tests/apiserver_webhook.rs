#![forbid(unsafe_code)]
//! `kubectl apply` through our admission webhook on the real kube-apiserver: the webhook
//! configurations we ship (rewritten from `service:` to `url:` and nothing else) make the
//! apiserver call the real `karpenter-webhook` binary over TLS, and the real `kubectl` shows
//! what a user would see.

use karpenter_e2e::controlplane::{ControlPlane, Options, WebhookProcess};
use karpenter_e2e::repo_root;
use serde_json::Value;

struct Env {
    cp: &'static ControlPlane,
}

fn env() -> Env {
    static HOOK: std::sync::OnceLock<Result<WebhookProcess, String>> = std::sync::OnceLock::new();
    let cp = ControlPlane::shared(Options::default());
    let hook = HOOK.get_or_init(|| {
        let hook = cp
            .start_webhook("karpenter-webhook", &["--cluster-autoscaler-guard=deny"])
            .map_err(|e| e.to_string())?;
        cp.register_webhooks(&hook).map_err(|e| e.to_string())?;
        Ok(hook)
    });
    if let Err(e) = hook {
        panic!("webhook did not start: {e}\n{}", cp.logs(40));
    }
    Env { cp }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apply(cp: &ControlPlane, yaml: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    cp.kubectl_as(&cp.kubeconfig, &args, Some(yaml))
        .expect("kubectl runs")
}

fn requirements(cp: &ControlPlane, name: &str) -> Vec<(String, String, Vec<String>)> {
    let obj = cp
        .get_json(&["provisioner", name])
        .expect("provisioner readable");
    obj.pointer("/spec/requirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_string(),
                r["operator"].as_str().unwrap_or_default().to_string(),
                r["values"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn defaulting_webhook_stores_the_defaults() {
    let Env { cp } = env();
    let yaml = "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata:\n  name: needs-defaults\n\
                spec:\n  requirements:\n    - key: node.kubernetes.io/instance-type\n      operator: In\n      \
                values: [m5.large, m5.xlarge, c5.large, c5.xlarge, r5.large]\n  providerRef:\n    name: default\n";
    let out = apply(cp, yaml, &[]);
    assert!(out.status.success(), "apply failed: {}", stderr(&out));
    let reqs = requirements(cp, "needs-defaults");
    let find = |k: &str| reqs.iter().find(|r| r.0 == k).cloned();
    assert_eq!(
        find("karpenter.sh/capacity-type"),
        Some((
            "karpenter.sh/capacity-type".into(),
            "In".into(),
            vec!["on-demand".into()]
        )),
        "{reqs:?}"
    );
    assert_eq!(
        find("kubernetes.io/arch").map(|r| r.2),
        Some(vec!["amd64".to_string()])
    );
    assert_eq!(
        find("kubernetes.io/os").map(|r| r.2),
        Some(vec!["linux".to_string()])
    );
    // An instance-type requirement exists, so no category/generation default is added.
    assert!(
        find("karpenter.k8s.aws/instance-category").is_none(),
        "{reqs:?}"
    );
    // `kubectl get -o yaml` shows the same stored object.
    let yaml = cp
        .kubectl_ok(&["get", "provisioner", "needs-defaults", "-o", "yaml"])
        .expect("get -o yaml");
    assert!(yaml.contains("- on-demand"), "{yaml}");
    cp.kubectl_ok(&["delete", "provisioner", "needs-defaults"])
        .expect("delete");
}

fn guide_yaml() -> String {
    let fixture = repo_root().join("plugin/tests/data/guide.yaml");
    let text = std::fs::read_to_string(&fixture).expect("guide fixture");
    // The fixture is the guide's Provisioner exactly as the guide prints it.
    let guide = repo_root().join("../shared/GUIDE.md");
    if let Ok(md) = std::fs::read_to_string(&guide) {
        let block = md
            .split_once("cat <<EOF | kubectl apply -f -\n")
            .and_then(|(_, rest)| rest.split_once("\nEOF"))
            .map(|(b, _)| format!("{b}\n"));
        assert_eq!(
            block.as_deref(),
            Some(text.as_str()),
            "guide.yaml drifted from GUIDE.md"
        );
    }
    text
}

#[test]
fn the_guides_provisioner_is_refused_until_fixed() {
    let Env { cp } = env();
    let as_printed = guide_yaml();
    let out = apply(cp, &as_printed, &[]);
    assert!(
        !out.status.success(),
        "the guide's YAML as printed must not apply"
    );
    let err = stderr(&out);
    assert!(
        err.contains("did not find expected key") && err.contains("line 15"),
        "kubectl names the misindented line: {err}"
    );

    // Indentation fixed (`name:` under metadata, `operator:` under its `- key:`): the
    // leading-space key is what remains, and our validating webhook names it.
    let indented = as_printed
        .replace("\nname: default\n", "\n  name: default\n")
        .replace("\n   operator: In\n", "\n      operator: In\n");
    let out = apply(cp, &indented, &[]);
    assert!(
        !out.status.success(),
        "a key with a leading space must be refused"
    );
    let err = stderr(&out);
    assert!(
        err.contains("validation.webhook.karpenter.sh") && err.contains("denied the request"),
        "{err}"
    );
    assert!(err.contains("spec.requirements[3].key"), "{err}");
    assert!(err.contains("leading space"), "{err}");
    assert!(err.contains("\"karpenter.sh/capacity-type\""), "{err}");

    let fixed = indented.replace(
        "\" karpenter.sh/capacity-type\"",
        "\"karpenter.sh/capacity-type\"",
    );
    let out = apply(cp, &fixed, &[]);
    assert!(
        out.status.success(),
        "the fixed Provisioner applies: {}",
        stderr(&out)
    );
    let reqs = requirements(cp, "default");
    assert!(
        reqs.iter().any(|r| r.0 == "karpenter.sh/capacity-type"
            && r.2 == vec!["spot".to_string(), "on-demand".to_string()]),
        "{reqs:?}"
    );
    cp.kubectl_ok(&["delete", "provisioner", "default"])
        .expect("delete");
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    karpenter_e2e::yaml_documents(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The plugin's verdict on every document of `file`: the error field paths, empty when valid.
fn plugin_errors(file: &std::path::Path) -> Vec<Vec<String>> {
    let out = karpenter_e2e::plugin(&["validate", "-f", &file.to_string_lossy(), "-o", "json"])
        .expect("plugin runs");
    let report: Value = serde_json::from_slice(&out.stdout).expect("plugin JSON report");
    report["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            o["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .collect()
}

#[test]
fn every_fixture_gets_the_plugins_verdict_from_the_apiserver() {
    let Env { cp } = env();
    let (mut admitted, mut refused) = (0, 0);
    let file = repo_root().join("tests/data/provisioners.yaml");
    let verdicts = plugin_errors(&file);
    let docs = documents(&file);
    assert_eq!(
        verdicts.len(),
        docs.len(),
        "one plugin verdict per document"
    );
    for (doc, errors) in docs.iter().zip(verdicts) {
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let yaml = serde_yaml::to_string(&doc).expect("yaml");
        for dry_run in [true, false] {
            let extra: &[&str] = if dry_run { &["--dry-run=server"] } else { &[] };
            let out = apply(cp, &yaml, extra);
            if errors.is_empty() {
                assert!(
                    out.status.success(),
                    "{name} (dry run {dry_run}) must be admitted: {}",
                    stderr(&out)
                );
            } else {
                assert!(
                    !out.status.success(),
                    "{name} (dry run {dry_run}) must be refused"
                );
                let err = stderr(&out);
                if err.contains("denied the request") {
                    // Our webhook answered: every field the plugin reports is named.
                    for field in &errors {
                        assert!(
                            err.contains(field.as_str()),
                            "{name}: kubectl's error must name {field}: {err}"
                        );
                    }
                } else {
                    // The CRD's schema (or strict decoding of unknown fields) refused it before
                    // any webhook ran: it names at least one of the same fields.
                    assert!(
                        err.contains("is invalid") || err.contains("strict decoding error"),
                        "{name}: {err}"
                    );
                    assert!(
                        errors.iter().any(|f| err.contains(f.as_str())),
                        "{name}: {err} vs {errors:?}"
                    );
                }
            }
        }
        if errors.is_empty() {
            admitted += 1;
            cp.kubectl_ok(&["delete", "provisioner", &name])
                .expect("delete");
        } else {
            refused += 1;
        }
    }
    assert!(
        admitted >= 1 && refused >= 3,
        "admitted {admitted}, refused {refused}"
    );
}

#[test]
fn crds_are_structural_and_every_example_passes_schema_and_webhooks() {
    let Env { cp } = env();
    // The apiserver accepted our CRDs (installing them in `ControlPlane::start` would fail on a
    // non-structural schema) and reports them NonStructuralSchema-free.
    for crd in [
        "provisioners.karpenter.sh",
        "awsnodetemplates.karpenter.k8s.aws",
    ] {
        let obj = cp.get_json(&["crd", crd]).expect("crd");
        let conditions = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True"),
            "{crd}: {conditions:?}"
        );
        assert!(
            !conditions
                .iter()
                .any(|c| c["type"] == "NonStructuralSchema" && c["status"] == "True"),
            "{crd}: {conditions:?}"
        );
    }
    let examples = repo_root().join("manifests/examples");
    let out = cp
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &examples.to_string_lossy(),
        ])
        .expect("kubectl");
    assert!(out.status.success(), "examples: {}", stderr(&out));
    let applied = String::from_utf8_lossy(&out.stdout);
    assert!(applied.contains("provisioner.karpenter.sh/"), "{applied}");
    assert!(
        applied.contains("awsnodetemplate.karpenter.k8s.aws/"),
        "{applied}"
    );
    // Strict field validation would have failed on any unknown field; an unknown one is refused.
    let bad = "apiVersion: karpenter.k8s.aws/v1alpha1\nkind: AWSNodeTemplate\nmetadata:\n  name: typo\n\
               spec:\n  subnetSelector:\n    karpenter.sh/discovery: demo\n  securityGroupSelector:\n    \
               karpenter.sh/discovery: demo\n  amiFamly: AL2\n";
    let out = apply(cp, bad, &["--dry-run=server"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("amiFamly"), "{}", stderr(&out));
}
