#![forbid(unsafe_code)]
//! The real `karpenter-controller` with its AWS provider against moto (EC2, IAM and SSM on
//! 127.0.0.1) and the real control plane, kwok running the kubelets: the guide's walkthrough
//! launches tagged instances, binds every pod, survives `kill -9` in the middle of a round
//! without leaking or duplicating an instance, and terminates the instances once the nodes are
//! empty past the TTL.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use karpenter_e2e::controlplane::{ControlPlane, Options};
use karpenter_e2e::{binary, repo_root};
use serde_json::Value;

const CLUSTER: &str = "e2e-moto";
const PROFILE: &str = "KarpenterNodeInstanceProfile-e2e-moto";
const SSM_PREFIX: &str = "/e2e";
const K8S_VERSION: &str = "1.29";

fn provisioner() -> String {
    format!(
        r#"apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  requirements:
    - key: node.kubernetes.io/instance-type
      operator: In
      values: ["m5.large", "m5.xlarge"]
    - key: karpenter.sh/capacity-type
      operator: In
      values: ["on-demand"]
  labels:
    type: kwok
  provider:
    instanceProfile: {PROFILE}
    subnetSelector:
      karpenter.sh/discovery: {CLUSTER}
    securityGroupSelector:
      karpenter.sh/discovery: {CLUSTER}
  ttlSecondsAfterEmpty: 5
"#
    )
}

fn python() -> PathBuf {
    std::env::var_os("KARPENTER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

fn moto(endpoint: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/controlplane/moto.py"))
        .arg(endpoint)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "moto.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("moto.py prints JSON")
}

/// Instances in moto that are not terminated, by ID.
fn live_instances(endpoint: &str) -> Vec<Value> {
    moto(endpoint, &["instances"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["state"] != "terminated" && i["state"] != "shutting-down")
        .collect()
}

fn karpenter_nodes(cp: &ControlPlane) -> Vec<Value> {
    cp.get_json(&["nodes", "-l", "karpenter.sh/provisioner-name=default"])
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The instance IDs the Nodes point at.
fn node_instances(cp: &ControlPlane) -> BTreeSet<String> {
    karpenter_nodes(cp)
        .iter()
        .filter_map(|n| n["spec"]["providerID"].as_str())
        .filter_map(|p| p.rsplit('/').next().map(str::to_string))
        .collect()
}

fn start_controller(cp: &ControlPlane, name: &str, endpoint: &str) {
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    cp.start_component_with_env(
        name,
        &binary("karpenter-controller").expect("controller built"),
        &[
            &format!("--cluster-name={CLUSTER}"),
            "--cluster-endpoint=https://127.0.0.1:6443",
            "--cluster-ca-bundle=Q0EK",
            "--cloud-provider=aws",
            &format!("--aws-endpoint={endpoint}"),
            "--region=us-east-1",
            &format!("--kubernetes-version={K8S_VERSION}"),
            &format!("--ssm-parameter-prefix={SSM_PREFIX}"),
            &format!("--kubeconfig={kubeconfig}"),
            "--metrics-listen=127.0.0.1:0",
            "--batch-idle-duration=1s",
            // A restarted replica must not wait out the old holder's lease in this test.
            "--no-leader-election",
        ],
        // Static fake credentials: the SDK never looks further (no instance metadata call).
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )
    .expect("controller starts");
}

#[test]
fn the_walkthrough_on_moto_survives_kill_9_and_leaks_no_instance() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::start(Options::default().controller_manager().scheduler().kwok())
        .expect("control plane");
    let endpoint = cp.start_moto().expect("moto");
    let seeded = moto(
        &endpoint,
        &["seed", CLUSTER, SSM_PREFIX, K8S_VERSION, PROFILE],
    );
    assert_eq!(
        seeded["subnets"].as_array().map(Vec::len),
        Some(2),
        "{seeded}"
    );
    cp.kubectl_ok(&["create", "namespace", "karpenter"])
        .expect("namespace");
    start_controller(&cp, "karpenter-controller", &endpoint);
    let out = cp.apply(&provisioner()).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "3"])
        .expect("scale");

    let all_running = |n: usize| {
        let pods = cp.get_json(&["pods", "-l", "app=inflate"]).ok()?;
        let items = pods["items"].as_array()?.clone();
        (items.len() == n
            && items
                .iter()
                .all(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"].is_string()))
        .then_some(())
    };
    cp.eventually("3 inflate pods Running", Duration::from_secs(120), || {
        all_running(3)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));

    // Instances in moto carry our tags, and each Node points at one of them.
    let instances = live_instances(&endpoint);
    assert!(!instances.is_empty());
    for i in &instances {
        let tags = &i["tags"];
        assert_eq!(
            tags[format!("kubernetes.io/cluster/{CLUSTER}")],
            "owned",
            "{i}"
        );
        assert_eq!(tags["karpenter.sh/provisioner-name"], "default", "{i}");
        assert!(
            i["type"].as_str().is_some_and(|t| t.starts_with("m5.")),
            "{i}"
        );
    }
    let ids: BTreeSet<String> = instances
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, node_instances(&cp), "one Node per instance");

    // kill -9 while the next round is batching and launching, then start again.
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "8"])
        .expect("scale");
    std::thread::sleep(Duration::from_millis(1500));
    cp.kill9_component("karpenter-controller");
    start_controller(&cp, "karpenter-controller-restarted", &endpoint);
    cp.eventually(
        "8 inflate pods Running after the restart",
        Duration::from_secs(120),
        || all_running(8),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    // No leak and no duplicate: every live instance has a Node, every Node an instance.
    let settled = cp.eventually("instances and nodes agree", Duration::from_secs(60), || {
        let ids: BTreeSet<String> = live_instances(&endpoint)
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        (ids == node_instances(&cp)).then_some(ids)
    });
    let ids = settled.unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    // 8 pods of 1 CPU on m5.large (2 vCPU, < 2 allocatable) or m5.xlarge: never more nodes
    // than pods.
    assert!(!ids.is_empty() && ids.len() <= 8, "{ids:?}");

    // Delete the deployment: empty nodes go after the TTL, and their instances with them.
    cp.kubectl_ok(&["delete", "deployment", "inflate"])
        .expect("delete");
    cp.eventually(
        "every Karpenter node removed",
        Duration::from_secs(120),
        || karpenter_nodes(&cp).is_empty().then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let left = live_instances(&endpoint);
    assert!(left.is_empty(), "instances left running: {left:?}");
}
