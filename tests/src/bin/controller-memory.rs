#![forbid(unsafe_code)]
//! `controller-memory`: the resident memory of the real `karpenter-controller` with 10,000 pods
//! and 1,000 nodes in its caches, on the real control plane (a benchmark figure, not a test).
//!
//! ```sh
//! cargo build --release -p karpenter --bin karpenter-controller
//! cargo run -p karpenter-e2e --bin controller-memory -- --controller target/release/karpenter-controller
//! ```
//!
//! Creates the nodes (not run by any kubelet, so nothing changes them afterwards) and the pods
//! bound to them with `kubectl create`, starts the controller (`--cloud-provider=sim`), waits
//! for `/readyz` (every cache listed) and prints its `VmRSS` and `VmHWM` over the next seconds,
//! then once more after 100 of the pods are deleted and created again (watch events).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use karpenter_e2e::controlplane::{free_port, ControlPlane, Options};
use serde_json::{json, Value};

const NODES: usize = 1_000;
const PODS_PER_NODE: usize = 10;
const CHUNK: usize = 250;

fn node(i: usize) -> Value {
    let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
    let name = format!("ip-10-1-{}-{}.ec2.internal", i / 250, i % 250);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "m5.4xlarge",
            "topology.kubernetes.io/zone": zone,
            "topology.kubernetes.io/region": "us-east-1",
            "eks.amazonaws.com/nodegroup": "general",
        }},
        "spec": {"providerID": format!("aws:///{zone}/i-{i:017x}")},
        "status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "234", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "15890m", "memory": "62Gi", "pods": "234", "ephemeral-storage": "95Gi"},
        },
    })
}

fn pod(ns: &str, node: usize, j: usize) -> Value {
    let app = format!("app-{}", (node * PODS_PER_NODE + j) % 97);
    let nodename = format!("ip-10-1-{}-{}.ec2.internal", node / 250, node % 250);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{app}-{node:04}-{j}"),
            "namespace": ns,
            "labels": {"app": app, "pod-template-hash": "6b88c9fb68", "tier": "backend"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        },
        "spec": {
            "nodeName": nodename,
            "containers": [{
                "name": "app",
                "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.2",
                "ports": [{"containerPort": 8080, "name": "http"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "us-east-1"}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
            }],
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": app}},
            }],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "backend", "effect": "NoSchedule"}],
        },
    })
}

/// Creates `objects` with `kubectl create`, `CHUNK` per call, two calls at a time.
fn create(cp: &ControlPlane, objects: Vec<Value>) -> Result<(), String> {
    let chunks: Vec<String> = objects
        .chunks(CHUNK)
        .map(|c| json!({"apiVersion": "v1", "kind": "List", "items": c}).to_string())
        .collect();
    for pair in chunks.chunks(2) {
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = pair
                .iter()
                .map(|text| {
                    s.spawn(move || {
                        let out = cp
                            .kubectl_as(
                                &cp.kubeconfig,
                                &["create", "-f", "-", "-o", "name"],
                                Some(text),
                            )
                            .map_err(|e| e.to_string())?;
                        if out.status.success() {
                            Ok(())
                        } else {
                            Err(String::from_utf8_lossy(&out.stderr).into_owned())
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("kubectl thread panicked".into()))
                })
                .collect()
        });
        for r in results {
            r?;
        }
    }
    Ok(())
}

/// `VmRSS` and `VmHWM` of a process, in MB.
fn memory(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn run(controller: PathBuf) -> Result<(), String> {
    let cp = ControlPlane::start(Options::default()).map_err(|e| e.to_string())?;
    let ns = cp.namespace("memory").map_err(|e| e.to_string())?;
    cp.kubectl_ok(&["create", "namespace", "karpenter"])
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    create(&cp, (0..NODES).map(node).collect())?;
    let pods: Vec<Value> = (0..NODES)
        .flat_map(|n| (0..PODS_PER_NODE).map(move |j| (n, j)))
        .map(|(n, j)| pod(&ns.name, n, j))
        .collect();
    create(&cp, pods)?;
    eprintln!(
        "created {NODES} nodes and {} pods in {:.0} s",
        NODES * PODS_PER_NODE,
        started.elapsed().as_secs_f64()
    );
    let port = free_port().map_err(|e| e.to_string())?;
    let kubeconfig = cp.kubeconfig.to_string_lossy().to_string();
    cp.start_component(
        "karpenter-controller",
        &controller,
        &[
            "--cluster-name=memory",
            "--cloud-provider=sim",
            &format!("--kubeconfig={kubeconfig}"),
            &format!("--metrics-listen=127.0.0.1:{port}"),
            "--log-level=warn",
        ],
    )
    .map_err(|e| e.to_string())?;
    // The supervisor writes the pid once it has started the process.
    let mut pid = None;
    for _ in 0..50 {
        pid = cp.component_pid("karpenter-controller");
        if pid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = pid.ok_or_else(|| format!("the controller did not start:\n{}", cp.logs(40)))?;
    let t = Instant::now();
    while !ready(port) {
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!("not ready after 120 s:\n{}", cp.logs(40)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let synced = t.elapsed();
    for s in [0u64, 5, 10] {
        std::thread::sleep(Duration::from_secs(if s == 0 { 0 } else { 5 }));
        let (rss, hwm) = memory(pid).ok_or("no /proc status for the controller")?;
        println!(
            "caches synced in {:.1} s; +{s:>2} s: VmRSS {rss:.0} MB, VmHWM {hwm:.0} MB",
            synced.as_secs_f64()
        );
    }
    // Watch events: 100 pods replaced.
    let names: Vec<String> = (0..100)
        .filter_map(|n| {
            pod(&ns.name, n, 0)["metadata"]["name"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    // No kubelet runs these pods, so a graceful delete would wait for one forever.
    let mut args = vec![
        "-n",
        ns.name.as_str(),
        "delete",
        "pod",
        "--grace-period=0",
        "--force",
    ];
    args.extend(names.iter().map(String::as_str));
    cp.kubectl_ok(&args).map_err(|e| e.to_string())?;
    create(&cp, (0..100).map(|n| pod(&ns.name, n, 0)).collect())?;
    std::thread::sleep(Duration::from_secs(5));
    let (rss, hwm) = memory(pid).ok_or("no /proc status for the controller")?;
    println!("after 100 pods replaced: VmRSS {rss:.0} MB, VmHWM {hwm:.0} MB");
    Ok(())
}

fn main() -> ExitCode {
    karpenter_e2e::install_crypto();
    let mut args = std::env::args().skip(1);
    let mut controller = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--controller" => controller = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: controller-memory [--controller PATH]\n\nThe resident memory of karpenter-controller with 10,000 pods and 1,000 nodes in its caches.");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    // By default, the controller built beside this binary.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("karpenter-controller")))
        .filter(|p| p.is_file());
    let controller = match controller.or(beside).ok_or_else(|| {
        "no karpenter-controller beside this binary; pass --controller PATH".to_string()
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(controller) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
