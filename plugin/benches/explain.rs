//! Figures for `explain`, `nodes` and `simulate` on large inputs, run as a user runs them (the
//! built binary on a JSON support bundle):
//!
//! - `explain pod/...` (a pending pod) and `nodes` on 10,000 pods and 1,000 nodes: target under
//!   300 ms each;
//! - `simulate --offline` of 5,000 pending pods: target under 1 s.
//!
//! `cargo bench -p kubectl-karpenter --bench explain` prints the median of five runs of each.
//! Figures, not assertions: timing goals never fail a test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-karpenter");
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn provisioner() -> Value {
    json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
        "metadata": {"name": "default"},
        "spec": {"ttlSecondsAfterEmpty": 30, "limits": {"resources": {"cpu": "100000"}}}})
}

fn node(i: usize) -> Value {
    let name = format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250);
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": "2026-12-01T00:00:00Z", "labels": {
            "karpenter.sh/provisioner-name": "default", "karpenter.sh/initialized": "true",
            "karpenter.sh/capacity-type": "on-demand",
            "node.kubernetes.io/instance-type": "m5.4xlarge",
            "topology.kubernetes.io/zone": ZONES[i % 3], "kubernetes.io/hostname": name,
            "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"}},
        "spec": {"providerID": format!("aws:///{}/i-{i:017x}", ZONES[i % 3])},
        "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "234"},
            "allocatable": {"cpu": "15890m", "memory": "62Gi", "pods": "234"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(i: usize, node: Option<String>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("app-{i}"), "namespace": "default",
            "labels": {"app": format!("app-{}", i % 50)}},
        "spec": {"containers": [{"name": "c", "image": "pause",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = Value::from(n);
        p["status"] = json!({"phase": "Running"});
    }
    p
}

fn write(path: &Path, items: Vec<Value>) {
    let doc = json!({"apiVersion": "v1", "kind": "List", "items": items});
    if let Err(e) = std::fs::write(path, doc.to_string()) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn median(args: &[&str]) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let out = Command::new(BIN).args(args).output();
        let elapsed = start.elapsed();
        match out {
            Ok(o) if o.status.code().is_some_and(|c| c <= 1) => times.push(elapsed),
            Ok(o) => panic!("{args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("cannot run {BIN}: {e}"),
        }
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explain-bench");
    let _ = std::fs::create_dir_all(&dir);
    // 1,000 nodes of 16 vCPU holding 9,990 bound pods (10 each, 990 nodes), 10 pending.
    let mut items = vec![provisioner()];
    let nodes: Vec<Value> = (0..1000).map(node).collect();
    let names: Vec<String> = nodes
        .iter()
        .map(|n| {
            n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    items.extend(nodes);
    for i in 0..10_000 {
        let bound = (i < 9_990).then(|| names[i / 10].clone());
        items.push(pod(i, bound));
    }
    let big = dir.join("10k-pods-1k-nodes.json");
    write(&big, items);
    let big = big.display().to_string();
    let mut pending = vec![provisioner()];
    pending.extend((0..5_000).map(|i| pod(i, None)));
    let sim = dir.join("5k-pending.json");
    write(&sim, pending);
    let sim = sim.display().to_string();

    let rows = [
        (
            "explain pod (10,000 pods, 1,000 nodes)",
            median(&["explain", "pod/app-9999", "-f", &big]),
            300,
        ),
        (
            "explain node (10,000 pods, 1,000 nodes)",
            median(&["explain", "node/ip-10-0-0-0.ec2.internal", "-f", &big]),
            300,
        ),
        (
            "nodes (10,000 pods, 1,000 nodes)",
            median(&["nodes", "-f", &big]),
            300,
        ),
        (
            "simulate --offline (5,000 pending pods)",
            median(&["simulate", "--offline", "-f", &sim, "-o", "json"]),
            1000,
        ),
    ];
    println!(
        "{:<44} {:>10} {:>10}",
        "command (median of 5 runs)", "ms", "target"
    );
    for (what, t, target) in rows {
        let ms = t.as_secs_f64() * 1e3;
        let mark = if ms <= target as f64 { "ok" } else { "OVER" };
        println!("{what:<44} {ms:>10.1} {:>7} ms {mark}", target);
    }
}
