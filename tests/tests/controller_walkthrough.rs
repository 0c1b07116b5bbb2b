#![forbid(unsafe_code)]
//! The guide's walkthrough with the real `karpenter-controller` on the real control plane:
//! kube-scheduler marks `inflate`'s pods Unschedulable, the controller launches instances (the
//! in-memory `sim` cloud here; the nodes it creates are run by kwok), creates their Nodes and
//! binds the pods; once the deployment is deleted the emptiness TTL removes every node through
//! the termination finalizer.

use std::time::Duration;

use karpenter_e2e::controlplane::{ControlPlane, Options};
use serde_json::Value;

const PROVISIONER: &str = r#"apiVersion: karpenter.sh/v1alpha5
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

fn karpenter_nodes(cp: &ControlPlane) -> Vec<Value> {
    cp.get_json(&["nodes", "-l", "karpenter.sh/provisioner-name=default"])
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn inflate_scales_up_and_the_empty_nodes_go_after_the_ttl() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::start(Options::default().controller_manager().scheduler().kwok())
        .expect("control plane");
    cp.kubectl_ok(&["create", "namespace", "karpenter"])
        .expect("namespace");
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    cp.start_component(
        "karpenter-controller",
        &karpenter_e2e::binary("karpenter-controller").expect("controller built"),
        &[
            "--cluster-name=e2e",
            "--cloud-provider=sim",
            &format!("--kubeconfig={kubeconfig}"),
            "--metrics-listen=127.0.0.1:0",
            "--batch-idle-duration=1s",
            "--log-level=info",
        ],
    )
    .expect("controller starts");
    let out = cp.apply(PROVISIONER).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The guide's commands, as they work with kubectl v1.36.
    cp.kubectl_ok(&[
        "create",
        "deployment",
        "inflate",
        "--image=public.ecr.aws/eks-distro/kubernetes/pause:3.2",
        "--replicas=0",
    ])
    .expect("create deployment");
    cp.kubectl_ok(&[
        "set",
        "resources",
        "deployment",
        "inflate",
        "--requests=cpu=1",
    ])
    .expect("set resources");
    let started = std::time::Instant::now();
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "10"])
        .expect("scale");

    let running = cp.eventually(
        "10 inflate pods Running on our nodes",
        Duration::from_secs(120),
        || {
            let pods = cp.get_json(&["pods", "-l", "app=inflate"]).ok()?;
            let items = pods["items"].as_array()?.clone();
            let ours: Vec<String> = karpenter_nodes(&cp)
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
    );
    let elapsed = running.unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    eprintln!(
        "kubectl scale --replicas 10 to 10 pods Running: {:.1} s",
        elapsed.as_secs_f64()
    );

    let nodes = karpenter_nodes(&cp);
    assert!(!nodes.is_empty());
    for n in &nodes {
        let labels = &n["metadata"]["labels"];
        assert!(
            labels["node.kubernetes.io/instance-type"]
                .as_str()
                .is_some_and(|t| t.starts_with("m5.")),
            "{n}"
        );
        assert!(
            n["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "karpenter.sh/termination")),
            "{n}"
        );
        assert!(
            n["spec"]["providerID"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{n}"
        );
    }
    let log = std::fs::read_to_string(cp.dir.join("karpenter-controller.log")).unwrap_or_default();
    assert!(log.contains("Waiting to batch additional pods"), "{log}");

    // Delete the deployment: the empty nodes are annotated, then removed after the TTL.
    cp.kubectl_ok(&["delete", "deployment", "inflate"])
        .expect("delete");
    let gone = cp.eventually(
        "every Karpenter node removed",
        Duration::from_secs(120),
        || karpenter_nodes(&cp).is_empty().then_some(()),
    );
    assert!(gone.is_ok(), "{gone:?}\n{}", cp.logs(80));
    let log = std::fs::read_to_string(cp.dir.join("karpenter-controller.log")).unwrap_or_default();
    assert!(log.to_lowercase().contains("cordon"), "{log}");
}
