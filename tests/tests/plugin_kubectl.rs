#![forbid(unsafe_code)]
//! The plugin as users run it: the real kubectl (built at the pinned release) finds
//! `kubectl-karpenter` on `PATH`, with this control plane's kubeconfig in `KUBECONFIG`.

use std::process::{Command, Output, Stdio};

use karpenter_e2e::controlplane::{component, ControlPlane, Options};
use karpenter_e2e::{binary, repo_root};

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    let plugin_dir = binary("kubectl-karpenter")
        .expect("plugin built")
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(component("kubectl").expect("kubectl built"))
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs")
}

#[test]
fn kubectl_finds_the_plugin_and_runs_it_against_the_cluster_kubeconfig() {
    let cp = ControlPlane::shared(Options::default());
    let list = kubectl(cp, &["plugin", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("kubectl-karpenter"),
        "{listed}\n{}",
        String::from_utf8_lossy(&list.stderr)
    );

    let guide = repo_root().join("plugin/tests/data/guide-corrected.yaml");
    let out = kubectl(
        cp,
        &["karpenter", "validate", "-f", &guide.to_string_lossy()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = repo_root().join("plugin/tests/data/guide-indent-fixed.yaml");
    let out = kubectl(
        cp,
        &["karpenter", "validate", "-f", &broken.to_string_lossy()],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("leading space"), "{text}");

    let out = kubectl(cp, &["karpenter", "simulate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("PROVISIONER") && table.contains("total:"),
        "{table}"
    );

    // The cluster that kubeconfig points at is the one kubectl itself talks to.
    let nodes = kubectl(cp, &["get", "--raw=/version"]);
    assert!(String::from_utf8_lossy(&nodes.stdout).contains("v1.36.3"));
}
