#![forbid(unsafe_code)]
//! The guide's walkthrough with the real `karpenter-controller` on the real control plane:
//! kube-scheduler marks `inflate`'s pods Unschedulable, the controller launches instances (the
//! in-memory `sim` cloud here; the nodes it creates are run by kwok), creates their Nodes and
//! binds the pods; once the deployment is deleted the emptiness TTL removes every node through
//! the termination finalizer. The steps are in `karpenter_e2e::walkthrough` (also run under the
//! Helm chart's RBAC by `helm_install`).

use karpenter_e2e::controlplane::{ControlPlane, Options};

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
    let report = karpenter_e2e::walkthrough::run(&cp, "karpenter-controller")
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    eprintln!(
        "kubectl scale --replicas 10 to 10 pods Running on {} node(s): {:.1} s; delete to no node: {:.1} s",
        report.nodes,
        report.scale_up.as_secs_f64(),
        report.scale_down.as_secs_f64()
    );
}
