//! Our engine on a workload file, the same file that the Go harness over Karpenter's scheduler
//! reads (`tests/controlplane/karpenter-bench/`), and the independent checker for either
//! engine's result. `controller/benches/compare.sh` drives both and prints the table.
//! `repeat` solves one workload N times in one process, for profiling.
//!
//! ```sh
//! cargo bench -p karpenter --no-default-features --bench workload -- dump DIR
//! cargo bench -p karpenter --no-default-features --bench workload -- run FILE [--out RESULT]
//! cargo bench -p karpenter --no-default-features --bench workload -- check FILE RESULT
//! cargo bench -p karpenter --no-default-features --bench workload -- repeat FILE N
//! ```
//!
//! `dump` writes the workloads: Karpenter's five pod classes at 1,000 to 20,000 pods and its
//! preferences workload (over the 400 `fake-it-i` types), the getting-started guide's inflate
//! at 10 and 1,000 replicas, and a mixed set, both on the built-in us-east-1 catalog (spot
//! priced at an assumed 60 % discount off on-demand, so that both engines can rank spot).
//! `run` times only the solve and prints one JSON line (the full result with the nodes goes to
//! `--out`); `check` runs the checker on a result of either engine and exits 1 on a violation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use karpenter::api::Requirement;
use karpenter::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};
use karpenter::scheduling::{Scheduler, SchedulerInput, SchedulerOptions};
use serde_json::json;

mod common;
use common::workload::{
    check, from_decision, proc_status_mb, HeapFigures, NodePool, RunResult, Workload,
};
use common::{diverse, instance_types, preference_pods, to_pod, SplitMix};

/// The system allocator, counting live heap bytes and their high-water mark, so that `run` can
/// say how much of its memory the input, the engine's state and the Decision take.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static HIGH: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    HIGH.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn req(key: &str, values: &[&str]) -> Requirement {
    Requirement {
        key: key.into(),
        operator: "In".into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn pool(requirements: Vec<Requirement>) -> NodePool {
    NodePool {
        name: "default".into(),
        requirements,
        labels: BTreeMap::new(),
    }
}

/// The guide's Provisioner: m5.large or m5.2xlarge in us-east-1a/b, either arch, spot or
/// on-demand.
fn guide_pool() -> NodePool {
    pool(vec![
        req(
            "node.kubernetes.io/instance-type",
            &["m5.large", "m5.2xlarge"],
        ),
        req("topology.kubernetes.io/zone", &["us-east-1a", "us-east-1b"]),
        req("kubernetes.io/arch", &["arm64", "amd64"]),
        req("karpenter.sh/capacity-type", &["spot", "on-demand"]),
    ])
}

fn inflate(replicas: usize) -> Vec<Pod> {
    (0..replicas)
        .map(|i| {
            to_pod(json!({
                "metadata": {"name": format!("inflate-{i}"), "namespace": "default",
                             "labels": {"app": "inflate"}},
                "spec": {"containers": [{"name": "inflate",
                    "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.2",
                    "resources": {"requests": {"cpu": "1"}}}]}
            }))
        })
        .collect()
}

/// A mixed set of 2,000 pods in seven deployments: zone-spread web and api tiers with varied
/// requests, arm64 batch jobs, memory-heavy pods on the r category, GPU pods, a singleton tier
/// with hostname anti-affinity, and small sidecar-like pods.
fn mixed() -> Vec<Pod> {
    let mut rng = SplitMix(2026);
    let mut pods = Vec::new();
    let mut add = |app: &str,
                   count: usize,
                   cpus: &[&str],
                   mems: &[&str],
                   extra: &dyn Fn(&mut serde_json::Value)| {
        for i in 0..count {
            let mut p = json!({
                "metadata": {"name": format!("{app}-{i}"), "namespace": "default",
                             "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {
                    "cpu": rng.pick(cpus), "memory": rng.pick(mems)}}}]}
            });
            extra(&mut p);
            pods.push(to_pod(p));
        }
    };
    let spread = |app: &'static str| {
        move |p: &mut serde_json::Value| {
            p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}}}]);
        }
    };
    add(
        "web",
        600,
        &["250m", "500m", "1"],
        &["512Mi", "1Gi", "2Gi"],
        &spread("web"),
    );
    add(
        "api",
        400,
        &["1", "1500m", "2"],
        &["2Gi", "3Gi", "4Gi"],
        &spread("api"),
    );
    add(
        "batch",
        500,
        &["2", "4"],
        &["4Gi", "8Gi"],
        &|p: &mut serde_json::Value| {
            p["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"});
        },
    );
    add(
        "cache",
        200,
        &["1"],
        &["12Gi", "16Gi"],
        &|p: &mut serde_json::Value| {
            p["spec"]["nodeSelector"] = json!({"karpenter.k8s.aws/instance-category": "r"});
        },
    );
    add(
        "gpu",
        50,
        &["4"],
        &["16Gi"],
        &|p: &mut serde_json::Value| {
            let r = &mut p["spec"]["containers"][0]["resources"];
            r["requests"]["nvidia.com/gpu"] = json!("1");
            r["limits"] = json!({"nvidia.com/gpu": "1"});
        },
    );
    add(
        "kafka",
        50,
        &["2"],
        &["8Gi"],
        &|p: &mut serde_json::Value| {
            p["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app": "kafka"}}}]}});
        },
    );
    add("small", 200, &["100m"], &["128Mi"], &|_| {});
    pods
}

fn workloads() -> Result<Vec<Workload>, String> {
    let fake = instance_types();
    let real = builtin_us_east_1(&AwsCatalogOptions {
        assume_spot_discount: Some(0.6),
    })
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for size in [1000, 5000, 10000, 20000] {
        out.push(Workload::new(
            &format!("classes-{size}"),
            &fake,
            pool(vec![]),
            diverse(size, 1),
        ));
    }
    out.push(Workload::new(
        "preferences-4000",
        &fake,
        pool(vec![]),
        preference_pods(4000),
    ));
    out.push(Workload::new(
        "inflate-10",
        &real,
        guide_pool(),
        inflate(10),
    ));
    out.push(Workload::new(
        "inflate-1000",
        &real,
        guide_pool(),
        inflate(1000),
    ));
    out.push(Workload::new(
        "mixed-2000",
        &real,
        pool(vec![
            req("kubernetes.io/os", &["linux"]),
            req("karpenter.sh/capacity-type", &["spot", "on-demand"]),
        ]),
        mixed(),
    ));
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

fn dump(dir: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    for w in workloads()? {
        let path = Path::new(dir).join(format!("{}.json", w.name));
        let text = serde_json::to_string(&w).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn run(path: &str, out: Option<&str>) -> Result<(), String> {
    let w: Workload = read_json(path)?;
    let types = w.engine_types()?;
    let input = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let scheduler = Scheduler::new(SchedulerInput {
        provisioners: vec![w.provisioner()],
        instance_types: types,
        options: SchedulerOptions::default(),
        ..Default::default()
    });
    let prepare = start.elapsed().as_secs_f64();
    let prepared = LIVE.load(Ordering::Relaxed);
    let rss_before = proc_status_mb("VmRSS:");
    let peak_before = HIGH.swap(prepared, Ordering::Relaxed);
    let start = Instant::now();
    let d = scheduler.solve(&w.pods).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let solve_peak = HIGH.load(Ordering::Relaxed);
    let after = LIVE.load(Ordering::Relaxed);
    let mut r = from_decision(&w, &d, secs);
    r.rss_before_solve_mb = rss_before;
    r.peak_rss_mb = proc_status_mb("VmHWM:");
    r.prepare_seconds = Some(prepare);
    r.heap = Some(HeapFigures {
        input_mb: mb(input),
        prepared_mb: mb(prepared.saturating_sub(input)),
        solve_peak_mb: mb(solve_peak.saturating_sub(prepared)),
        decision_mb: mb(after.saturating_sub(prepared)),
        peak_mb: mb(peak_before.max(solve_peak)),
    });
    if let Some(out) = out {
        let text = serde_json::to_string(&r).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))?;
    }
    r.nodes = None;
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

/// Solves a workload `n` times in one process (one `Scheduler::new`) and prints the median
/// and fastest solve, for profiling; the comparison uses `run`, one solve per process.
fn repeat(path: &str, n: &str) -> Result<(), String> {
    let n: usize = n.parse().map_err(|_| format!("{n}: not a count"))?;
    let w: Workload = read_json(path)?;
    let scheduler = Scheduler::new(SchedulerInput {
        provisioners: vec![w.provisioner()],
        instance_types: w.engine_types()?,
        options: SchedulerOptions::default(),
        ..Default::default()
    });
    let mut secs = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let start = Instant::now();
        let d = scheduler.solve(&w.pods).map_err(|e| e.to_string())?;
        secs.push(start.elapsed().as_secs_f64());
        drop(d);
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "{}: {} solves, median {:.1} us, fastest {:.1} us",
        w.name,
        secs.len(),
        secs[secs.len() / 2] * 1e6,
        secs[0] * 1e6
    );
    Ok(())
}

fn check_file(path: &str, result: &str) -> Result<bool, String> {
    let w: Workload = read_json(path)?;
    let r: RunResult = read_json(result)?;
    let broken = check(&w, &r);
    if broken.is_empty() {
        println!(
            "ok: {} on {}: {} pods, {} nodes, {} unschedulable",
            r.engine,
            w.name,
            w.pods.len(),
            r.node_count,
            r.unschedulable.len()
        );
        return Ok(true);
    }
    eprintln!("{} on {}: {} violation(s):", r.engine, w.name, broken.len());
    for b in broken.iter().take(20) {
        eprintln!("  {b}");
    }
    Ok(false)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = match a.as_slice() {
        ["dump", dir] => dump(dir).map(|_| true),
        ["run", file] => run(file, None).map(|_| true),
        ["run", file, "--out", out] => run(file, Some(out)).map(|_| true),
        ["check", file, result] => check_file(file, result),
        ["repeat", file, n] => repeat(file, n).map(|_| true),
        _ => Err(
            "usage: workload dump DIR | run FILE [--out RESULT] | check FILE RESULT | repeat FILE N"
                .into(),
        ),
    };
    match res {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}
