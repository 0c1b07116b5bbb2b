//! The getting-started guide's walkthrough on a real control plane, against a running
//! `karpenter-controller` (`--cloud-provider=sim`, nodes run by kwok): its Provisioner,
//! `inflate` scaled to 10, every pod Running on the nodes the controller created, the
//! deployment deleted, and every node gone after `ttlSecondsAfterEmpty`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::controlplane::ControlPlane;
use crate::E2eError;

/// The guide's Provisioner, fixed, with kwok's label on its nodes and a 5 s emptiness TTL.
pub const PROVISIONER: &str = r#"apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  requirements:
    - key: node.kubernetes.io/instance-type
      operator: In
      values: ["m5.large", "m5.2xlarge"]
    - key: topology.kubernetes.io/zone
      operator: In
      values: ["us-east-1a", "us-east-1b"]
    - key: kubernetes.io/arch
      operator: In
      values: ["arm64", "amd64"]
    - key: karpenter.sh/capacity-type
      operator: In
      values: ["spot", "on-demand"]
  labels:
    type: kwok
  provider:
    instanceProfile: KarpenterNodeInstanceProfile-eks-karpenter-demo
  ttlSecondsAfterEmpty: 5
"#;

/// What the walkthrough measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// From `kubectl scale --replicas 10` to 10 pods Running on our nodes.
    pub scale_up: Duration,
    /// Nodes the controller had created for them.
    pub nodes: usize,
    /// From `kubectl delete deployment inflate` to no Karpenter node left.
    pub scale_down: Duration,
}

/// Nodes created by the `default` Provisioner.
pub fn karpenter_nodes(cp: &ControlPlane) -> Vec<Value> {
    cp.get_json(&["nodes", "-l", "karpenter.sh/provisioner-name=default"])
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), E2eError> {
    if ok {
        Ok(())
    } else {
        Err(E2eError::Command(what()))
    }
}

/// Runs the walkthrough in the `default` namespace with the admin's kubectl, against the
/// controller running as component `controller` of `cp` (its log is checked for the guide's
/// lines).
pub fn run(cp: &ControlPlane, controller: &str) -> Result<Report, E2eError> {
    let out = cp.apply(PROVISIONER)?;
    check(out.status.success(), || {
        format!(
            "apply the Provisioner: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    // The guide's commands, as they work with kubectl v1.36.
    cp.kubectl_ok(&[
        "create",
        "deployment",
        "inflate",
        "--image=public.ecr.aws/eks-distro/kubernetes/pause:3.2",
        "--replicas=0",
    ])?;
    cp.kubectl_ok(&[
        "set",
        "resources",
        "deployment",
        "inflate",
        "--requests=cpu=1",
    ])?;
    let started = Instant::now();
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "10"])?;
    let scale_up = cp.eventually(
        "10 inflate pods Running on our nodes",
        Duration::from_secs(120),
        || {
            let pods = cp.get_json(&["pods", "-l", "app=inflate"]).ok()?;
            let items = pods["items"].as_array()?.clone();
            let ours: Vec<String> = karpenter_nodes(cp)
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let ok = items.len() == 10
                && items.iter().all(|p| {
                    p["status"]["phase"] == "Running"
                        && p["spec"]["nodeName"]
                            .as_str()
                            .is_some_and(|n| ours.iter().any(|o| o == n))
                });
            ok.then(|| started.elapsed())
        },
    )?;
    let nodes = karpenter_nodes(cp);
    check(!nodes.is_empty(), || "no Karpenter node".into())?;
    for n in &nodes {
        let labels = &n["metadata"]["labels"];
        check(
            labels["node.kubernetes.io/instance-type"]
                .as_str()
                .is_some_and(|t| t.starts_with("m5.")),
            || format!("instance type not from the Provisioner: {n}"),
        )?;
        check(
            n["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "karpenter.sh/termination")),
            || format!("no termination finalizer: {n}"),
        )?;
        check(
            n["spec"]["providerID"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            || format!("no providerID: {n}"),
        )?;
    }
    let log_file = cp.dir.join(format!("{controller}.log"));
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    check(log.contains("Waiting to batch additional pods"), || {
        format!("{}: no batching line:\n{log}", log_file.display())
    })?;

    // Delete the deployment: the empty nodes are annotated, then removed after the TTL.
    cp.kubectl_ok(&["delete", "deployment", "inflate"])?;
    let deleted = Instant::now();
    cp.eventually(
        "every Karpenter node removed",
        Duration::from_secs(120),
        || karpenter_nodes(cp).is_empty().then_some(()),
    )?;
    let scale_down = deleted.elapsed();
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    check(log.to_lowercase().contains("cordon"), || {
        format!("{}: no cordon line:\n{log}", log_file.display())
    })?;
    Ok(Report {
        scale_up,
        nodes: nodes.len(),
        scale_down,
    })
}
