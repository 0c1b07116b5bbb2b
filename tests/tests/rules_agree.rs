#![forbid(unsafe_code)]
//! The webhook and the kubectl plugin share one set of Provisioner rules. This runs both real
//! binaries on the same manifests (the examples, the guide's fixtures and a set of broken
//! Provisioners) and checks that they agree: same verdict, the plugin's error fields all named
//! in the webhook's denial, and the webhook's defaulting patch producing exactly the
//! requirements the plugin shows after defaulting.

use std::collections::BTreeSet;

use base64::Engine as _;
use karpenter_e2e::{
    apply_patch, install_crypto, plugin, provisioner_review, repo_root, TestPki, Webhook,
};
use serde_json::Value;

fn manifests() -> Vec<std::path::PathBuf> {
    let root = repo_root();
    let mut files: Vec<_> = std::fs::read_dir(root.join("manifests/examples"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    files.sort();
    for extra in [
        "tests/data/provisioners.yaml",
        "plugin/tests/data/guide-indent-fixed.yaml",
        "plugin/tests/data/guide-corrected.yaml",
        "tests/data/exported/v0.27-objects.yaml",
    ] {
        files.push(root.join(extra));
    }
    files
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    karpenter_e2e::yaml_documents(path).unwrap_or_else(|e| panic!("{e}"))
}

fn webhook_fields(message: &str) -> BTreeSet<String> {
    message
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(": ").next())
        .map(str::to_string)
        .collect()
}

#[test]
fn plugin_and_webhook_agree_on_every_provisioner() {
    install_crypto();
    let pki = TestPki::new().expect("test PKI");
    let webhook = Webhook::start(&pki).expect("webhook starts");
    let mut checked = 0;
    let (mut valid_seen, mut invalid_seen) = (0, 0);
    for file in manifests() {
        let file_str = file.to_string_lossy().to_string();
        let out = plugin(&["validate", "-o", "json", "-f", &file_str]).expect("plugin runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{file_str}: plugin JSON: {e}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let objects = report["objects"].as_array().cloned().unwrap_or_default();
        let provisioners: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Provisioner")
            .collect();
        let docs: Vec<Value> = documents(&file)
            .into_iter()
            .filter(|d| d["kind"] == "Provisioner")
            .collect();
        assert_eq!(
            provisioners.len(),
            docs.len(),
            "{file_str}: one plugin result per Provisioner"
        );
        for (i, (doc, ours)) in docs.iter().zip(&provisioners).enumerate() {
            let what = format!("{file_str} provisioner #{i} ({})", doc["metadata"]["name"]);
            // Mutating first, as the API server does, then validating the patched object.
            let (status, answer) = webhook
                .post("/default", &provisioner_review("d", doc))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(status, 200, "{what}: {answer}");
            let mut patched = doc.clone();
            if let Some(p) = answer["response"]["patch"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .unwrap_or_else(|e| panic!("{what}: patch is not base64: {e}"));
                let patch: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
                apply_patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            let (status, answer) = webhook
                .post("/validate", &provisioner_review("v", &patched))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(status, 200, "{what}: {answer}");
            let allowed = answer["response"]["allowed"].as_bool().unwrap_or(false);
            let plugin_valid = ours["valid"].as_bool().unwrap_or(false);
            let message = answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or("");
            assert_eq!(
                plugin_valid, allowed,
                "{what}: plugin says valid={plugin_valid}, webhook says allowed={allowed}\nplugin: {ours}\nwebhook: {message}"
            );
            if plugin_valid {
                valid_seen += 1;
                assert_eq!(
                    ours["object"]["spec"]["requirements"], patched["spec"]["requirements"],
                    "{what}: the webhook's patch and the plugin's defaulting differ"
                );
            } else {
                invalid_seen += 1;
                let theirs = webhook_fields(message);
                for e in ours["errors"].as_array().into_iter().flatten() {
                    let field = e["field"].as_str().unwrap_or("");
                    assert!(
                        theirs.contains(field),
                        "{what}: the plugin reports {field} but the webhook's denial does not:\n{message}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} Provisioners were compared");
    assert!(
        valid_seen >= 4 && invalid_seen >= 4,
        "valid {valid_seen}, invalid {invalid_seen}"
    );
}

#[test]
fn the_guides_leading_space_is_refused_by_the_webhook_with_the_fix() {
    install_crypto();
    let pki = TestPki::new().expect("test PKI");
    let webhook = Webhook::start(&pki).expect("webhook starts");
    let docs = documents(&repo_root().join("plugin/tests/data/guide-indent-fixed.yaml"));
    let (status, answer) = webhook
        .post("/validate", &provisioner_review("g", &docs[0]))
        .expect("validate");
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["uid"], "g");
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("spec.requirements[3].key"), "{message}");
    assert!(
        message.contains("remove it: \"karpenter.sh/capacity-type\""),
        "{message}"
    );
    assert!(message.contains("belongs under metadata"), "{message}");
}

/// A regression: the webhook once dropped every connection whose handling logged a line after
/// its standard error had been closed (the log writer's failure report panicked).
#[test]
fn the_webhook_keeps_answering_when_its_log_pipe_closes() {
    install_crypto();
    let pki = TestPki::new().expect("test PKI");
    let webhook = Webhook::start_with(&pki, false).expect("webhook starts");
    let docs = documents(&repo_root().join("tests/data/provisioners.yaml"));
    for (i, doc) in docs.iter().enumerate() {
        // Denials are logged; every one of them must still be answered.
        let (status, answer) = webhook
            .post("/validate", &provisioner_review(&format!("u{i}"), doc))
            .unwrap_or_else(|e| panic!("document {i}: {e}"));
        assert_eq!(status, 200);
        assert_eq!(answer["response"]["uid"], format!("u{i}"));
    }
}
