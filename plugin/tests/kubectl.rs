#![forbid(unsafe_code)]
//! The plugin as users run it: `kubectl karpenter ...`, found by kubectl on `PATH`.
//!
//! These tests need the real `kubectl` (set `KUBECTL` to its path, or put it on `PATH`); they
//! fail when it is missing rather than pass without checking anything. kubectl dispatches to
//! plugins without contacting a cluster, so no kubeconfig is given.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{fixture, run, Run, BIN};

fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KUBECTL={} is not a file: these tests need the real kubectl",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file());
    match on_path {
        Some(path) => path,
        None => panic!(
            "kubectl was not found on PATH (or set KUBECTL=/path/to/kubectl): these tests check \
             that `kubectl karpenter` dispatches to the plugin and need the real kubectl"
        ),
    }
}

/// `kubectl karpenter <args>` with the plugin's directory first on `PATH`.
fn kubectl_karpenter(args: &[&str], stdin: Option<&str>) -> Run {
    let plugin_dir = Path::new(BIN)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(plugin_dir).chain(std::env::split_paths(&path)))
            .unwrap_or_else(|e| panic!("cannot build PATH: {e}"));
    let mut command = Command::new(kubectl_path());
    command.arg("karpenter").args(args).env("PATH", path);
    run(command, stdin)
}

#[test]
fn kubectl_dispatches_to_the_plugin_without_a_cluster() {
    let through_kubectl = kubectl_karpenter(&["validate", "-f", "guide.yaml"], None);
    let direct = support::plugin(&["validate", "-f", "guide.yaml"]);
    assert_eq!(through_kubectl.code, Some(1), "{through_kubectl:?}");
    assert_eq!(through_kubectl.stdout, direct.stdout);
    assert!(through_kubectl
        .stdout
        .starts_with("guide.yaml:16:4: YAML syntax error: did not find expected key"));
    assert!(through_kubectl
        .stdout
        .contains("align \"operator:\" with \"key:\""));
}

#[test]
fn kubectl_passes_the_exit_code_of_a_valid_run() {
    let run = kubectl_karpenter(&["validate", "-f", "multi.yaml", "-o", "json"], None);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["valid"], true);
}

#[test]
fn kubectl_passes_stdin_through() {
    let run = kubectl_karpenter(
        &["validate", "-f", "-"],
        Some(&fixture("guide-indent-fixed.yaml")),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run
        .stdout
        .starts_with("<stdin> (document 1) Provisioner default: invalid\n"));
    assert!(run
        .stdout
        .contains("remove it: \"karpenter.sh/capacity-type\""));
}

#[test]
fn kubectl_passes_usage_errors_through() {
    let run = kubectl_karpenter(&["validate", "-f", "no-such-file.yaml"], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no-such-file.yaml"), "{}", run.stderr);

    let help = kubectl_karpenter(&["validate", "--help"], None);
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("Usage: kubectl karpenter validate"));
}

#[test]
fn kubectl_karpenter_simulate_runs_the_embedded_demo() {
    let r = kubectl_karpenter(&["simulate", "--offline", "-o", "json"], None);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let d = r.json();
    assert_eq!(d["nodes"].as_array().map(Vec::len), Some(4), "{}", r.stdout);
    assert!((d["totalPricePerHour"].as_f64().unwrap_or(0.0) - 0.672).abs() < 1e-9);
}

#[test]
fn kubectl_karpenter_walkthrough_plays_the_guide_to_no_node_and_no_instance() {
    let r = kubectl_karpenter(&["walkthrough"], None);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for needle in [
        "Found 10 provisionable pod(s)",
        "Launched instance: i-",
        "Triggering termination after 30s for empty node",
        "Deleted node",
        "final: 0 node(s), 0 instance(s)",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} missing in\n{}",
            r.stdout
        );
    }
    let j = kubectl_karpenter(&["walkthrough", "-o", "json"], None);
    assert_eq!(j.code, Some(0), "{}", j.stderr);
    let d = j.json();
    assert_eq!(d["final"]["instances"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        d["decisions"][0]["decision"]["nodes"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}
