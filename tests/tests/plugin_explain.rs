#![forbid(unsafe_code)]
//! `kubectl karpenter explain`, `nodes` and live `simulate` as users run them: the real kubectl
//! finds the plugin on `PATH` and the plugin reads the real control plane, where the real
//! `karpenter-controller` (sim cloud, kwok nodes) launched nodes and wrote its Decision
//! summaries. kubectl's plugin completion goes through `kubectl_complete-karpenter`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use karpenter_e2e::controlplane::{component, ControlPlane, Options};
use karpenter_e2e::{binary, repo_root};
use serde_json::Value;

const PROVISIONERS: &str = r#"apiVersion: karpenter.sh/v1alpha5
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
  labels:
    type: kwok
  provider:
    instanceProfile: KarpenterNodeInstanceProfile-e2e
  ttlSecondsAfterEmpty: 600
---
apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: team
spec:
  weight: 50
  taints:
    - key: team
      value: ml
      effect: NoSchedule
  labels:
    type: kwok
  provider:
    instanceProfile: KarpenterNodeInstanceProfile-e2e
"#;

const TOO_BIG: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: too-big
  namespace: default
spec:
  containers:
    - name: c
      image: public.ecr.aws/eks-distro/kubernetes/pause:3.2
      resources:
        requests:
          cpu: "500"
"#;

/// A PATH directory holding the plugin and its completion script, as krew lays them out.
fn plugin_path(dir: &Path) -> String {
    let bin = binary("kubectl-karpenter").expect("plugin built");
    let shim = repo_root().join("plugin/kubectl_complete-karpenter");
    std::fs::create_dir_all(dir).expect("plugin dir");
    for (from, name) in [
        (bin, "kubectl-karpenter"),
        (shim, "kubectl_complete-karpenter"),
    ] {
        let to = dir.join(name);
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to).expect("copy into the plugin dir");
    }
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn kubectl(cp: &ControlPlane, path: &str, args: &[&str]) -> Output {
    Command::new(component("kubectl").expect("kubectl built"))
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn explain_nodes_and_simulate_read_the_live_cluster_through_kubectl() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::start(Options::default().controller_manager().scheduler().kwok())
        .expect("control plane");
    cp.kubectl_ok(&["create", "namespace", "karpenter"])
        .expect("namespace");
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    cp.start_component(
        "karpenter-controller",
        &binary("karpenter-controller").expect("controller built"),
        &[
            "--cluster-name=e2e",
            "--cloud-provider=sim",
            &format!("--kubeconfig={kubeconfig}"),
            "--metrics-listen=127.0.0.1:0",
            "--batch-idle-duration=1s",
        ],
    )
    .expect("controller starts");
    let out = cp.apply(PROVISIONERS).expect("kubectl");
    assert!(out.status.success(), "{}", text(&out));
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
    // The default ServiceAccount (which admission wants for a bare Pod) comes with the
    // controller-manager a moment after start-up.
    cp.eventually("the too-big pod created", Duration::from_secs(60), || {
        cp.apply(TOO_BIG)
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let pods: Vec<Value> = cp
        .eventually("3 inflate pods bound", Duration::from_secs(120), || {
            let pods = cp.get_json(&["pods", "-l", "app=inflate"]).ok()?;
            let items = pods["items"].as_array()?.clone();
            (items.len() == 3 && items.iter().all(|p| p["spec"]["nodeName"].is_string()))
                .then_some(items)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    let pod = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let node = pods[0]["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // kube-scheduler marks the big pod Unschedulable; the controller gives up on it.
    cp.eventually(
        "too-big marked Unschedulable",
        Duration::from_secs(60),
        || {
            let p = cp.get_json(&["pod", "too-big"]).ok()?;
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["reason"] == "Unschedulable")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let dir: PathBuf = cp.dir.join("plugins");
    let path = plugin_path(&dir);

    // A bound pod: the node, the provisioner, the decision the controller wrote.
    let out = kubectl(&cp, &path, &["karpenter", "explain", &format!("pod/{pod}")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "bound to node {node}, launched by provisioner default"
        )),
        "{t}"
    );
    assert!(t.contains("EC2 launched m5."), "{t}");

    // The pending pod: per provisioner in weight order, with both sides' values.
    let out = kubectl(
        &cp,
        &path,
        &["karpenter", "explain", "pod/too-big", "-n", "default"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("pending; it fits no existing node and no new node"),
        "{t}"
    );
    assert!(
        t.contains("team (weight 50): no: provisioner team has taint team=ml:NoSchedule"),
        "{t}"
    );
    assert!(
        t.contains("pod requests 500 cpu; the largest instance type allowed by provisioner default (m5.2xlarge)"),
        "{t}"
    );

    // The node: why it exists, and its lifecycle.
    let out = kubectl(
        &cp,
        &path,
        &["karpenter", "explain", &format!("node/{node}")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("launched by provisioner default"), "{t}");
    assert!(t.contains("options sent to EC2, cheapest first"), "{t}");
    assert!(t.contains("not empty: "), "{t}");

    // The provisioner: the nodes it owns.
    let out = kubectl(
        &cp,
        &path,
        &["karpenter", "explain", "provisioner/default", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let owned = v["nodes"].as_array().map(Vec::len).unwrap_or_default();
    assert!(owned >= 1, "{v}");
    assert!(v["nodes"]
        .as_array()
        .is_some_and(|n| n.iter().any(|x| x == node.as_str())));

    // nodes: every node of the cluster, ours with our provisioner.
    let out = kubectl(&cp, &path, &["karpenter", "nodes", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let listed = v["items"].as_array().cloned().unwrap_or_default();
    let ours = listed
        .iter()
        .filter(|i| i["provisioner"] == "default")
        .count();
    assert_eq!(ours, owned, "{v}");
    assert!(
        v["summary"]["pricePerHour"]
            .as_f64()
            .is_some_and(|p| p > 0.0),
        "{v}"
    );
    let out = kubectl(&cp, &path, &["karpenter", "nodes"]);
    let t = text(&out);
    assert!(t.contains("PROVISIONER") && t.contains("USD/month"), "{t}");

    // Live simulate: the cluster's pending pod is there, and still fits nowhere.
    let out = kubectl(&cp, &path, &["karpenter", "simulate", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        v["unschedulable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|p| p["pod"] == "default/too-big")),
        "{v}"
    );

    // Missing objects exit 1; a bad context is one line and exit 2.
    let out = kubectl(&cp, &path, &["karpenter", "explain", "pod/nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("pods \"nosuch\" not found in namespace \"default\""));
    let out = kubectl(&cp, &path, &["karpenter", "nodes", "--context", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out)
    );
    // An API server that is not there: one line naming it.
    let dead = cp.dir.join("dead.kubeconfig");
    let cfg = std::fs::read_to_string(&cp.kubeconfig).unwrap_or_default();
    let server = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .to_string();
    std::fs::write(&dead, cfg.replace(&server, "https://127.0.0.1:1")).expect("write kubeconfig");
    let out = kubectl(
        &cp,
        &path,
        &[
            "karpenter",
            "nodes",
            "--kubeconfig",
            &dead.to_string_lossy(),
            "--request-timeout",
            "5s",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot read the cluster at https://127.0.0.1:1/"),
        "{err}"
    );

    // kubectl's plugin completion: names come from the live cluster.
    let out = kubectl(
        &cp,
        &path,
        &["__complete", "karpenter", "explain", "pod/infl"],
    );
    let t = text(&out);
    assert!(t.contains(&format!("pod/{pod}")), "{t}");
    let out = kubectl(&cp, &path, &["__complete", "karpenter", "no"]);
    assert!(text(&out).contains("nodes"), "{}", text(&out));
}
