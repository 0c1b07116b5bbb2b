#![forbid(unsafe_code)]
//! The Cluster Autoscaler guard on the real control plane, both ways, and what the shipped
//! `failurePolicy`s do when the webhook is down. One test, in order, on a control plane of its
//! own: a running Cluster Autoscaler in kube-system would refuse every other test's Provisioners.

use std::time::Duration;

use karpenter_e2e::controlplane::{ControlPlane, Options, KWOK_NODE_LABEL};
use serde_json::json;

const PROVISIONER: &str = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: guarded
spec:
  requirements:
    - key: karpenter.sh/capacity-type
      operator: In
      values: [spot, on-demand]
  providerRef:
    name: default
";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cluster_autoscaler(replicas: u32) -> String {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cluster-autoscaler", "namespace": "kube-system",
                     "labels": {"app": "cluster-autoscaler"}},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "cluster-autoscaler"}},
            "template": {"metadata": {"labels": {"app": "cluster-autoscaler"}},
                "spec": {"tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "cluster-autoscaler",
                        "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.30.0"}]}}}})
    .to_string()
}

#[test]
fn provisioners_and_a_cluster_autoscaler_never_run_together() {
    let cp = ControlPlane::start(Options::default().controller_manager().scheduler().kwok())
        .expect("control plane");
    let hook = cp
        .start_webhook("karpenter-webhook", &["--cluster-autoscaler-guard=deny"])
        .expect("webhook");
    cp.register_webhooks(&hook).expect("webhooks registered");
    // A node for the autoscaler's pod, run by kwok.
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "kwok-system", "labels": {KWOK_NODE_LABEL.0: KWOK_NODE_LABEL.1}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
    assert!(cp
        .apply(&node.to_string())
        .expect("kubectl")
        .status
        .success());

    // 1. A Cluster Autoscaler runs (kube-controller-manager makes its pod, kwok runs it).
    let out = cp.apply(&cluster_autoscaler(1)).expect("kubectl");
    assert!(
        out.status.success(),
        "no Provisioner yet, so it may start: {}",
        stderr(&out)
    );
    cp.eventually(
        "the autoscaler to be available",
        Duration::from_secs(90),
        || {
            let v = cp
                .get_json(&["-n", "kube-system", "deployment", "cluster-autoscaler"])
                .ok()?;
            (v.pointer("/status/availableReplicas") == Some(&json!(1))).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));

    // 2. A Provisioner is refused, and kubectl shows the evidence and the way out.
    let refused = cp.eventually(
        "the guard to see the autoscaler",
        Duration::from_secs(30),
        || {
            let out = cp.apply(PROVISIONER).ok()?;
            (!out.status.success()).then(|| stderr(&out))
        },
    );
    let err = refused
        .unwrap_or_else(|e| panic!("{e}: Provisioner admitted while a Cluster Autoscaler runs"));
    assert!(err.contains("denied the request"), "{err}");
    assert!(
        err.contains("kube-system/cluster-autoscaler"),
        "names the Deployment: {err}"
    );
    assert!(
        err.contains("kubectl -n kube-system scale deployment/cluster-autoscaler --replicas=0"),
        "{err}"
    );

    // 3. Scaled to zero: admitted.
    cp.kubectl_ok(&[
        "-n",
        "kube-system",
        "scale",
        "deployment/cluster-autoscaler",
        "--replicas=0",
    ])
    .expect("scale to zero is always allowed");
    let admitted = cp.eventually(
        "the Provisioner to be admitted",
        Duration::from_secs(60),
        || cp.apply(PROVISIONER).ok().filter(|o| o.status.success()),
    );
    assert!(admitted.is_ok(), "{admitted:?}");

    // 4. While a Provisioner exists, scaling the autoscaler up or creating another is refused.
    let out = cp
        .kubectl(&[
            "-n",
            "kube-system",
            "scale",
            "deployment/cluster-autoscaler",
            "--replicas=1",
        ])
        .expect("kubectl");
    assert!(!out.status.success(), "scale-up must be refused");
    assert!(
        stderr(&out).contains("guarded"),
        "names the Provisioner: {}",
        stderr(&out)
    );
    let other =
        cluster_autoscaler(1).replace("\"namespace\":\"kube-system\"", "\"namespace\":\"default\"");
    let out = cp.apply(&other).expect("kubectl");
    assert!(!out.status.success(), "a second autoscaler must be refused");

    // 5. The webhook goes down. Provisioners fail closed (failurePolicy: Fail): nothing
    //    unvalidated is stored. The autoscaler guard fails open (Ignore): an outage of ours never
    //    blocks Deployments.
    cp.stop_component(&hook.name);
    let second = PROVISIONER.replace("name: guarded", "name: while-down");
    let out = cp.apply(&second).expect("kubectl");
    assert!(
        !out.status.success(),
        "no Provisioner is stored unvalidated"
    );
    let err = stderr(&out);
    assert!(err.contains("failed calling webhook"), "{err}");
    let out = cp.apply(&other).expect("kubectl");
    assert!(
        out.status.success(),
        "the guard fails open: {}",
        stderr(&out)
    );
}
