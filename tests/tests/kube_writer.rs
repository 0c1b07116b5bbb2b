#![forbid(unsafe_code)]
//! The controller's Kubernetes writer on the real apiserver: what the stored objects hold after
//! each write, where the in-memory writer of the unit tests cannot say (patch semantics,
//! server-side apply ownership, optimistic concurrency).

use std::collections::BTreeMap;

use karpenter::api::provisioner::Condition;
use karpenter::api::Quantity;
use karpenter::lifecycle::KubeWriter;
use karpenter::runtime::writer::KubeApiWriter;
use karpenter_e2e::controlplane::{ControlPlane, Options};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

async fn client(cp: &ControlPlane) -> Client {
    let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn provisioner_yaml(name: &str) -> String {
    format!(
        "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: {name}
spec:
  providerRef:
    name: default
  limits:
    resources:
      cpu: \"100\"
"
    )
}

fn status(cp: &ControlPlane, name: &str) -> Value {
    cp.get_json(&["provisioners.karpenter.sh", name])
        .expect("provisioner")["status"]
        .clone()
}

/// A merge patch of a Provisioner's status with kubectl, as another client would write it.
fn merge_status(cp: &ControlPlane, name: &str, patch: &str) {
    cp.kubectl_ok(&[
        "patch",
        "provisioners.karpenter.sh",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ])
    .expect("patch the status");
}

fn resources(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(v.to_string())))
        .collect()
}

fn ready(status: &str, reason: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(format!("reason {reason}")),
        last_transition_time: Some("2026-12-02T00:00:00Z".into()),
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn provisioner_usage_is_replaced_whole_so_a_resource_no_node_holds_is_dropped() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::shared(Options::default());
    let name = "writer-usage";
    cp.apply(&provisioner_yaml(name)).expect("apply");
    // What an earlier release (a merge patch) or another client left: usage with a GPU.
    merge_status(
        cp,
        name,
        r#"{"status":{"resources":{"cpu":"8","memory":"32Gi","nvidia.com/gpu":"1"}}}"#,
    );
    runtime().block_on(async {
        let writer = KubeApiWriter::new(client(cp).await, "test");
        // The GPU node went; the CPU nodes shrank.
        writer
            .set_provisioner_resources(name, &resources(&[("cpu", "4"), ("memory", "16Gi")]))
            .await
            .expect("write usage");
        let s = status(cp, name);
        assert_eq!(
            s["resources"],
            serde_json::json!({"cpu": "4", "memory": "16Gi"}),
            "{s}"
        );
        // A condition written meanwhile is not the usage's to remove.
        writer
            .set_provisioner_condition(name, &ready("True", "Valid"))
            .await
            .expect("write condition");
        // Every node gone: no usage left at all, so the limits are free again.
        writer
            .set_provisioner_resources(name, &BTreeMap::new())
            .await
            .expect("write empty usage");
        let s = status(cp, name);
        assert!(
            s["resources"]
                .as_object()
                .is_none_or(serde_json::Map::is_empty),
            "usage left after every node went: {s}"
        );
        assert_eq!(s["conditions"][0]["type"], "Ready", "{s}");
        assert_eq!(s["conditions"][0]["status"], "True", "{s}");
    });
    let _ = cp.kubectl(&["delete", "provisioners.karpenter.sh", name]);
}

#[test]
fn a_provisioner_condition_replaces_ours_and_keeps_the_conditions_of_others() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::shared(Options::default());
    let name = "writer-conditions";
    cp.apply(&provisioner_yaml(name)).expect("apply");
    runtime().block_on(async {
        let writer = KubeApiWriter::new(client(cp).await, "test");
        writer
            .set_provisioner_condition(name, &ready("False", "Invalid"))
            .await
            .expect("write condition");
        // Another controller adds its own condition beside ours.
        let s = status(cp, name);
        let mut conditions = s["conditions"].as_array().cloned().unwrap_or_default();
        conditions.push(serde_json::json!({"type": "Audited", "status": "True"}));
        let patch = serde_json::json!({"status": {"conditions": conditions}}).to_string();
        merge_status(cp, name, &patch);
        writer
            .set_provisioner_condition(name, &ready("True", "Valid"))
            .await
            .expect("write condition");
        let s = status(cp, name);
        let by_type: BTreeMap<String, String> = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            by_type,
            [
                ("Audited".to_string(), "True".to_string()),
                ("Ready".to_string(), "True".to_string())
            ]
            .into(),
            "{s}"
        );
        // Writing the same condition again changes nothing (no new resourceVersion).
        let before = cp
            .get_json(&["provisioners.karpenter.sh", name])
            .expect("get")["metadata"]["resourceVersion"]
            .clone();
        writer
            .set_provisioner_condition(name, &ready("True", "Valid"))
            .await
            .expect("write condition");
        let after = cp
            .get_json(&["provisioners.karpenter.sh", name])
            .expect("get")["metadata"]["resourceVersion"]
            .clone();
        assert_eq!(before, after, "an unchanged condition was written again");
    });
    let _ = cp.kubectl(&["delete", "provisioners.karpenter.sh", name]);
}
