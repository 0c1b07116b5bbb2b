#![forbid(unsafe_code)]
//! `kubectl-karpenter simulate` as a user runs it: the embedded demo, manifests with the
//! built-in AWS catalog, a user catalog, reasons for pods that fit nowhere, and bad input.

mod support;

use support::plugin;

const FAKE_CATALOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/tests/data/fake-instance-types.yaml"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");

#[test]
fn the_embedded_demo_runs_without_any_input() {
    let r = plugin(&["simulate", "--offline"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("embedded demo:"), "{}", r.stdout);
    assert!(
        r.stdout.contains("total: 4 new node(s), 0.6720 USD/hour"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("spot prices are unknown offline"),
        "{}",
        r.stdout
    );
}

#[test]
fn examples_scaled_like_kubectl_scale_match_the_demo() {
    let provisioner = format!("{EXAMPLES}/provisioner.yaml");
    let inflate = format!("{EXAMPLES}/inflate.yaml");
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        &provisioner,
        "-f",
        &inflate,
        "--scale",
        "deployment/inflate=10",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let d = r.json();
    let nodes = d["nodes"].as_array().cloned().unwrap_or_default();
    let pods: Vec<String> = nodes
        .iter()
        .flat_map(|n| n["pods"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    assert_eq!(pods.len(), 10);
    assert!(
        pods.iter().all(|p| p.starts_with("default/inflate-")),
        "{pods:?}"
    );
    assert!((d["totalPricePerHour"].as_f64().unwrap_or(0.0) - 0.672).abs() < 1e-9);
    for n in &nodes {
        assert_eq!(n["provisioner"], "default");
        let zones = n["zones"].as_array().cloned().unwrap_or_default();
        assert!(
            zones.iter().all(|z| z == "us-east-1a" || z == "us-east-1b"),
            "{zones:?}"
        );
        let options = n["instanceTypeOptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            options.iter().all(|o| o == "m5.large" || o == "m5.2xlarge"),
            "{options:?}"
        );
    }
    // Scaled to zero, nothing launches.
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        &provisioner,
        "-f",
        &inflate,
        "--scale",
        "inflate=0",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(r.stdout.contains("total: 0 new node(s)"), "{}", r.stdout);
}

#[test]
fn a_pod_that_fits_nowhere_gets_a_reason_and_exit_1() {
    let provisioner = format!("{EXAMPLES}/provisioner.yaml");
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        &provisioner,
        "-f",
        "simulate/big-pod.yaml",
    ]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("unschedulable default/huge:"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("2Ti memory"), "{}", r.stdout);
    assert!(r.stdout.contains("m5.2xlarge"), "{}", r.stdout);
}

#[test]
fn a_user_catalog_replaces_the_aws_one() {
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        "simulate/small-pods.yaml",
        "--instance-types",
        FAKE_CATALOG,
        "-o",
        "yaml",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("totalPricePerHour:"), "{}", r.stdout);
    assert!(!r.stdout.contains("m5."), "{}", r.stdout);
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        "simulate/small-pods.yaml",
        "--instance-types",
        "simulate/bad-catalog.yaml",
    ]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("gpuCount"), "{}", r.stderr);
}

#[test]
fn invalid_provisioners_stop_the_simulation_with_the_validate_report() {
    let inflate = format!("{EXAMPLES}/inflate.yaml");
    let r = plugin(&[
        "simulate",
        "--offline",
        "-f",
        "guide-indent-fixed.yaml",
        "-f",
        &inflate,
    ]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("spec.requirements[3].key"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("nothing was simulated"), "{}", r.stdout);
    let r = plugin(&["simulate", "--offline", "-f", "guide.yaml"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("guide.yaml:16:4"), "{}", r.stdout);
}

#[test]
fn bad_flags_are_usage_errors() {
    let r = plugin(&["simulate", "--offline", "--scale", "nosuch=3"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("no Deployment of that name"),
        "{}",
        r.stderr
    );
    let r = plugin(&["simulate", "--offline", "--scale", "inflate"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("deployment/NAME=N"), "{}", r.stderr);
    let r = plugin(&["simulate", "--offline", "--assume-spot-discount", "1.5"]);
    assert_eq!(r.code, Some(2));
    let r = plugin(&[
        "simulate",
        "--offline",
        "--assume-spot-discount",
        "0.5",
        "--instance-types",
        FAKE_CATALOG,
    ]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("built-in catalog only"), "{}", r.stderr);
    let r = plugin(&["simulate", "--offline", "-f", "no-such-file.yaml"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no-such-file.yaml"), "{}", r.stderr);
}

#[test]
fn an_assumed_spot_discount_is_applied_and_said() {
    let r = plugin(&[
        "simulate",
        "--offline",
        "--assume-spot-discount",
        "0.5",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let total = r.json()["totalPricePerHour"].as_f64().unwrap_or(0.0);
    assert!((total - 0.336).abs() < 1e-9, "total {total}: {}", r.stdout);
}
