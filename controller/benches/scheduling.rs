//! Scheduling benchmark over Karpenter's benchmark inputs: 400 `fake-it-i` instance types
//! (cpu i+1, memory 2(i+1)Gi, pods 10(i+1), spot in zones 1-2, on-demand in 1-3, price
//! 0.1*cpu + 0.1*GiB, overhead 100m/10Mi), one provisioner, no existing nodes, pods drawn with
//! a fixed seed in five equal classes (generic, zone spread, hostname spread, zone self-affinity,
//! hostname self anti-affinity), plus a 4000-pod preferences workload.
//!
//! Run: `cargo bench -p karpenter --bench scheduling` (single-threaded; prints a table).

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use karpenter::scheduling::{Decision, InstanceType, Scheduler, SchedulerInput, SchedulerOptions};

mod common;
use common::{diverse, instance_types, make_class, preference_pods, provisioner, SplitMix};

fn input(types: &[InstanceType]) -> SchedulerInput {
    SchedulerInput {
        provisioners: vec![provisioner()],
        instance_types: types.to_vec(),
        options: SchedulerOptions::default(),
        ..Default::default()
    }
}

fn run(types: &[InstanceType], pods: &[Pod]) -> (Decision, f64) {
    let scheduler = Scheduler::new(input(types));
    let start = Instant::now();
    let d = scheduler.solve(pods);
    let secs = start.elapsed().as_secs_f64();
    match d {
        Ok(d) => (d, secs),
        Err(e) => {
            eprintln!("scheduling failed: {e}");
            std::process::exit(1)
        }
    }
}

/// Cheapest fractional cover of the pods' total cpu and memory by a single instance type.
fn lower_bound(types: &[InstanceType], pods: &[Pod]) -> f64 {
    let (mut cpu, mut mem) = (0i64, 0i64);
    for p in pods {
        if let Ok(r) = karpenter::scheduling::resources::pod_requests(p) {
            cpu += r.get("cpu").copied().unwrap_or(0);
            mem += r.get("memory").copied().unwrap_or(0);
        }
    }
    types
        .iter()
        .filter_map(|t| {
            let price = t
                .offerings
                .iter()
                .filter_map(|o| o.price)
                .reduce(f64::min)?;
            let c = *t.capacity.get("cpu")? as f64;
            let m = *t.capacity.get("memory")? as f64;
            Some(price * (cpu as f64 / c).max(mem as f64 / m))
        })
        .fold(f64::MAX, f64::min)
}

/// Independent check of a Decision against the constraints that must hold in the final state:
/// every node's pods fit its instance type; a hostname self anti-affinity pod (class 4) shares
/// its node with no other pod of its label (its own term, and the inverse rule for the others);
/// zone-constrained pods (classes 1 and 3) sit on nodes pinned to one zone. Spread skew and
/// affinity are placement-time rules (later pods without constraints may join a domain), so
/// they are covered by the unit cases rather than checked on the final state here.
fn violations(types: &[InstanceType], pods: &[Pod], d: &Decision) -> Vec<String> {
    use std::collections::HashMap;
    let by_name: HashMap<String, &Pod> = pods
        .iter()
        .map(|p| {
            (
                format!("default/{}", p.metadata.name.as_deref().unwrap_or("")),
                p,
            )
        })
        .collect();
    let allocatable: HashMap<&str, BTreeMap<String, i64>> = types
        .iter()
        .map(|t| (t.name.as_str(), t.allocatable(None)))
        .collect();
    let mut out = Vec::new();
    let mut scheduled = 0;
    for (i, n) in d.nodes.iter().enumerate() {
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        let mut labels: BTreeMap<String, usize> = BTreeMap::new();
        let mut anti: Vec<String> = Vec::new();
        for name in &n.pods {
            let Some(pod) = by_name.get(name) else {
                out.push(format!("node {i}: unknown pod {name}"));
                continue;
            };
            scheduled += 1;
            // Requests include one `pods` slot per pod.
            match karpenter::scheduling::resources::pod_requests(pod) {
                Ok(r) => {
                    for (k, v) in r {
                        *used.entry(k).or_default() += v;
                    }
                }
                Err(e) => out.push(format!("{name}: {e}")),
            }
            let class: usize = name
                .split('-')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let label = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("my-label"))
                .cloned()
                .unwrap_or_default();
            *labels.entry(label.clone()).or_default() += 1;
            if class == 4 {
                anti.push(label);
            } else if (class == 1 || class == 3) && n.zones.len() != 1 {
                out.push(format!(
                    "node {i}: zone-constrained pod {name} on a node not pinned to one zone"
                ));
            }
        }
        for label in anti {
            if labels.get(&label).copied().unwrap_or(0) > 1 {
                out.push(format!(
                    "node {i}: anti-affinity pod with label {label} shares the node with another"
                ));
            }
        }
        match allocatable.get(n.instance_type.as_str()) {
            None => out.push(format!(
                "node {i}: unknown instance type {}",
                n.instance_type
            )),
            Some(a) => {
                for (k, v) in &used {
                    if *v > a.get(k).copied().unwrap_or(0) {
                        out.push(format!(
                            "node {i} ({}): {k} {v} exceeds allocatable",
                            n.instance_type
                        ));
                    }
                }
            }
        }
    }
    if scheduled + d.unschedulable.len() != pods.len() {
        out.push(format!(
            "{} pods in, {scheduled} placed and {} unschedulable",
            pods.len(),
            d.unschedulable.len()
        ));
    }
    out
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let types = instance_types();
    let sizes: Vec<usize> = match std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        Some(s) => s.split(',').filter_map(|x| x.parse().ok()).collect(),
        None => vec![1, 50, 100, 500, 1000, 2000, 5000, 10000, 20000],
    };
    println!(
        "{:>8} {:>10} {:>8} {:>12} {:>12} | {:>10} {:>12} {:>8}",
        "PODS", "PODS/S", "NODES", "PRICE/H", "UNSCHED", "GENERIC", "GEN-PRICE", "RATIO"
    );
    for &size in &sizes {
        let (d, secs) = {
            let pods = diverse(size, 1);
            run(&types, &pods)
        };
        let generic: Vec<Pod> = {
            let mut rng = SplitMix(7);
            make_class(&mut rng, 0, size, "g")
        };
        let broken = violations(&types, &diverse(size, 1), &d);
        if !broken.is_empty() {
            eprintln!("{size} pods: {} constraint violation(s):", broken.len());
            for b in broken.iter().take(20) {
                eprintln!("  {b}");
            }
            std::process::exit(1);
        }
        let (g, _) = run(&types, &generic);
        let lb = lower_bound(&types, &generic);
        println!(
            "{:>8} {:>10.0} {:>8} {:>12.2} {:>12} | {:>10} {:>12.2} {:>8.3}",
            size,
            size as f64 / secs,
            d.nodes.len(),
            d.total_price_per_hour,
            d.unschedulable.len(),
            generic.len(),
            g.total_price_per_hour,
            g.total_price_per_hour / lb
        );
    }
    let pods = preference_pods(4000);
    let (d, secs) = run(&types, &pods);
    println!(
        "preferences: {} pods, {:.0} pods/s, {} nodes, {:.2} $/h, {} unschedulable, {} relaxed",
        pods.len(),
        pods.len() as f64 / secs,
        d.nodes.len(),
        d.total_price_per_hour,
        d.unschedulable.len(),
        d.relaxed.len()
    );
    println!("every Decision above was checked independently: resources, anti-affinity, zone pinning, no pod lost");
    if let Some(mb) = peak_rss_mb() {
        println!("peak RSS: {mb:.0} MB");
    }
}
