#![forbid(unsafe_code)]
//! The real `karpenter-controller` with its AWS provider against moto (EC2, IAM and SSM on
//! 127.0.0.1) and the real control plane, kwok running the kubelets: the guide's walkthrough
//! launches tagged instances, binds every pod, survives `kill -9` in the middle of a round
//! without leaking or duplicating an instance, and terminates the instances once the nodes are
//! empty past the TTL. Of two replicas under leader election only the Lease holder launches,
//! and after the holder is killed with `kill -9` the other takes over once the Lease expires.
//! A drain held by a PodDisruptionBudget survives `kill -9`: the node and its instance stay
//! until the PDB is relaxed, then the instance is terminated and the Node removed.

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
    start_replica(cp, name, endpoint, None);
}

/// A controller process; with `identity`, one of several replicas under leader election.
fn start_replica(cp: &ControlPlane, name: &str, endpoint: &str, identity: Option<&str>) {
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    let election = match identity {
        Some(id) => format!("--identity={id}"),
        // A restarted process must not wait out the old one's Lease in the kill -9 test.
        None => "--no-leader-election".to_string(),
    };
    cp.start_component_with_env(
        name,
        &binary("karpenter-controller").expect("controller built"),
        &[
            &election,
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

/// A control plane with moto seeded, the Provisioner applied and `inflate` at 0 replicas of
/// 1 CPU.
fn setup() -> (ControlPlane, String) {
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
    (cp, endpoint)
}

fn all_running(cp: &ControlPlane, n: usize) -> Option<()> {
    let pods = cp.get_json(&["pods", "-l", "app=inflate"]).ok()?;
    let items = pods["items"].as_array()?.clone();
    (items.len() == n
        && items
            .iter()
            .all(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"].is_string()))
    .then_some(())
}

/// Live instance IDs in moto, once they equal the instances the Nodes point at (no leak, no
/// duplicate).
fn instances_match_nodes(cp: &ControlPlane, endpoint: &str) -> BTreeSet<String> {
    cp.eventually("instances and nodes agree", Duration::from_secs(60), || {
        let ids: BTreeSet<String> = live_instances(endpoint)
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        (ids == node_instances(cp)).then_some(ids)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)))
}

/// Scales `inflate` and waits until that many pods run.
fn scale_until_running(cp: &ControlPlane, n: usize) {
    cp.kubectl_ok(&[
        "scale",
        "deployment",
        "inflate",
        "--replicas",
        &n.to_string(),
    ])
    .expect("scale");
    cp.eventually(
        &format!("{n} inflate pods Running"),
        Duration::from_secs(120),
        || all_running(cp, n),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
}

fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let lease = cp
        .get_json(&["lease", "karpenter-leader-election", "-n", "karpenter"])
        .ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[test]
fn the_walkthrough_on_moto_survives_kill_9_and_leaks_no_instance() {
    let (cp, endpoint) = setup();
    start_controller(&cp, "karpenter-controller", &endpoint);
    scale_until_running(&cp, 3);

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
    instances_match_nodes(&cp, &endpoint);

    // kill -9 while the next round is batching and launching, then start again.
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "8"])
        .expect("scale");
    std::thread::sleep(Duration::from_millis(1500));
    cp.kill9_component("karpenter-controller");
    start_controller(&cp, "karpenter-controller-restarted", &endpoint);
    cp.eventually(
        "8 inflate pods Running after the restart",
        Duration::from_secs(120),
        || all_running(&cp, 8),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let ids = instances_match_nodes(&cp, &endpoint);
    // 8 pods of 1 CPU: never more nodes than pods.
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

#[test]
fn of_two_replicas_only_the_leader_launches_and_the_other_takes_over_after_kill_9() {
    let (cp, endpoint) = setup();
    start_replica(&cp, "replica-a", &endpoint, Some("replica-a"));
    cp.eventually("replica-a leads", Duration::from_secs(30), || {
        (lease_holder(&cp)? == "replica-a").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));
    start_replica(&cp, "replica-b", &endpoint, Some("replica-b"));
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "2"])
        .expect("scale");
    cp.eventually("2 inflate pods Running", Duration::from_secs(120), || {
        all_running(&cp, 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let first = instances_match_nodes(&cp, &endpoint);
    let log = |name: &str| {
        std::fs::read_to_string(cp.dir.join(format!("{name}.log"))).unwrap_or_default()
    };
    assert!(
        log("replica-a").contains("Launched instance"),
        "{}",
        log("replica-a")
    );
    assert!(
        !log("replica-b").contains("Launched instance"),
        "the follower launched:\n{}",
        log("replica-b")
    );

    // The leader dies without releasing the Lease: replica-b takes over once it expires.
    cp.kill9_component("replica-a");
    cp.kubectl_ok(&["scale", "deployment", "inflate", "--replicas", "5"])
        .expect("scale");
    cp.eventually("replica-b leads", Duration::from_secs(60), || {
        (lease_holder(&cp)? == "replica-b").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));
    cp.eventually("5 inflate pods Running", Duration::from_secs(120), || {
        all_running(&cp, 5)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let after = instances_match_nodes(&cp, &endpoint);
    // The first instances are kept (their Nodes still hold pods); the new ones came from b.
    assert!(first.is_subset(&after), "{first:?} {after:?}");
    assert!(
        log("replica-b").contains("Launched instance"),
        "{}",
        log("replica-b")
    );
}

#[test]
fn a_drain_held_by_a_pdb_survives_kill_9_and_terminates_the_instance_once_relaxed() {
    let (cp, endpoint) = setup();
    start_controller(&cp, "karpenter-controller", &endpoint);
    scale_until_running(&cp, 3);
    instances_match_nodes(&cp, &endpoint);
    // A PDB that allows no disruption, once kube-controller-manager has computed it.
    cp.kubectl_ok(&[
        "create",
        "poddisruptionbudget",
        "inflate",
        "--selector=app=inflate",
        "--max-unavailable=0",
    ])
    .expect("pdb");
    cp.eventually("the PDB is computed", Duration::from_secs(60), || {
        let pdb = cp.get_json(&["pdb", "inflate"]).ok()?;
        (pdb["status"]["expectedPods"] == 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    // Delete a node that holds a pod: the finalizer cordons it and the PDB holds the drain.
    let pods = cp.get_json(&["pods", "-l", "app=inflate"]).expect("pods");
    let node = pods["items"][0]["spec"]["nodeName"]
        .as_str()
        .expect("a bound pod")
        .to_string();
    let node_json = cp.get_json(&["node", &node]).expect("node");
    let instance = node_json["spec"]["providerID"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .expect("providerID")
        .to_string();
    cp.kubectl_ok(&["delete", "node", &node, "--wait=false"])
        .expect("delete node");
    cp.eventually(
        "the node cordoned and its drain reported blocked",
        Duration::from_secs(60),
        || {
            let n = cp.get_json(&["node", &node]).ok()?;
            let blocked = n["metadata"]["annotations"]["karpenter.sh/drain-blocked"].as_str()?;
            (n["spec"]["unschedulable"] == true && blocked.contains("inflate")).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));

    // kill -9 in the middle of the drain; a new process picks the finalizer up.
    cp.kill9_component("karpenter-controller");
    start_controller(&cp, "karpenter-controller-restarted", &endpoint);
    std::thread::sleep(Duration::from_secs(5));
    let n = cp
        .get_json(&["node", &node])
        .expect("the node is still held");
    assert!(n["metadata"]["deletionTimestamp"].is_string(), "{n}");
    let live: BTreeSet<String> = live_instances(&endpoint)
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        live.contains(&instance),
        "the instance went before its pods: {live:?}"
    );

    // Relax the PDB: the pods are evicted, the instance terminated, the Node gone, and the
    // evicted pods run again on other nodes.
    cp.kubectl_ok(&[
        "patch",
        "pdb",
        "inflate",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":1}}"#,
    ])
    .expect("relax pdb");
    cp.eventually(
        "the node drained and gone",
        Duration::from_secs(120),
        || {
            let out = cp.kubectl(&["get", "node", &node]).ok()?;
            (!out.status.success()).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    cp.eventually(
        "3 inflate pods Running on the other nodes",
        Duration::from_secs(120),
        || all_running(&cp, 3),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let ids = instances_match_nodes(&cp, &endpoint);
    assert!(
        !ids.contains(&instance),
        "{instance} still running: {ids:?}"
    );
}
