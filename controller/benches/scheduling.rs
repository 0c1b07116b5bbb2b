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
use karpenter::api::{Provisioner, ProvisionerSpec};
use karpenter::scheduling::{
    Decision, InstanceType, Offering, Overhead, Scheduler, SchedulerInput, SchedulerOptions,
};
use serde_json::{json, Value};

const GI: i64 = 1024 * 1024 * 1024 * 1000;
const MI: i64 = 1024 * 1024 * 1000;

/// splitmix64: a tiny deterministic PRNG.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn instance_types() -> Vec<InstanceType> {
    (0..400)
        .map(|i| {
            let cpu = i64::from(i) + 1;
            let mem_gi = 2 * cpu;
            let price = 0.1 * cpu as f64 + 0.1 * mem_gi as f64;
            let mut cap = BTreeMap::new();
            cap.insert("cpu".to_string(), cpu * 1000);
            cap.insert("memory".to_string(), mem_gi * GI);
            cap.insert("pods".to_string(), 10 * cpu * 1000);
            let mut overhead = BTreeMap::new();
            overhead.insert("cpu".to_string(), 100);
            overhead.insert("memory".to_string(), 10 * MI);
            let mut offerings = Vec::new();
            for (zone, cts) in [
                ("test-zone-1", &["spot", "on-demand"][..]),
                ("test-zone-2", &["spot", "on-demand"][..]),
                ("test-zone-3", &["on-demand"][..]),
            ] {
                for ct in cts {
                    offerings.push(Offering {
                        zone: zone.to_string(),
                        capacity_type: ct.to_string(),
                        price: Some(price),
                        available: true,
                    });
                }
            }
            InstanceType::new(
                &format!("fake-it-{i}"),
                "amd64",
                &["linux".to_string()],
                cap,
                Overhead::Fixed(overhead),
                BTreeMap::new(),
                offerings,
            )
        })
        .collect()
}

fn provisioner() -> Provisioner {
    Provisioner::new("default", ProvisionerSpec::default())
}

const CPUS: &[&str] = &["100m", "250m", "500m", "1000m", "1500m"];
const MEMS: &[&str] = &["100Mi", "256Mi", "512Mi", "1024Mi", "2048Mi", "4096Mi"];
const LABELS: &[&str] = &["a", "b", "c", "d", "e", "f", "g"];
const ZONE: &str = "topology.kubernetes.io/zone";
const HOST: &str = "kubernetes.io/hostname";

fn base_pod(rng: &mut SplitMix, name: String) -> (Value, String) {
    let label = rng.pick(LABELS).to_string();
    let pod = json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"my-label": label}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {
            "cpu": rng.pick(CPUS), "memory": rng.pick(MEMS)}}}]}
    });
    (pod, label)
}

fn term(key: &str, label: &str) -> Value {
    json!({"topologyKey": key, "labelSelector": {"matchLabels": {"my-label": label}}})
}

fn to_pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap_or_default()
}

/// `count` pods of one class (0 generic, 1 zone spread, 2 hostname spread, 3 zone
/// self-affinity, 4 hostname self anti-affinity).
fn make_class(rng: &mut SplitMix, class: usize, count: usize, prefix: &str) -> Vec<Pod> {
    (0..count)
        .map(|i| {
            let (mut p, label) = base_pod(rng, format!("{prefix}-{class}-{i}"));
            let spread = |key: &str| {
                json!([{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"my-label": label}}}])
            };
            match class {
                1 => p["spec"]["topologySpreadConstraints"] = spread(ZONE),
                2 => p["spec"]["topologySpreadConstraints"] = spread(HOST),
                3 => {
                    p["spec"]["affinity"] = json!({"podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, &label)]}})
                }
                4 => {
                    p["spec"]["affinity"] = json!({"podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [term(HOST, &label)]}})
                }
                _ => {}
            }
            to_pod(p)
        })
        .collect()
}

fn diverse(size: usize, seed: u64) -> Vec<Pod> {
    let mut rng = SplitMix(seed);
    let per = size / 5;
    let mut pods = Vec::with_capacity(size);
    for class in 0..5 {
        let n = if class == 0 { size - 4 * per } else { per };
        pods.extend(make_class(&mut rng, class, n, "p"));
    }
    pods
}

fn preference_pods(count: usize) -> Vec<Pod> {
    let mut rng = SplitMix(42);
    (0..count)
        .map(|i| {
            let (mut p, label) = base_pod(&mut rng, format!("pref-{i}"));
            p["spec"]["affinity"] = json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "podAffinityTerm": term(ZONE, &label)}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term(ZONE, &label)},
                    {"weight": 10, "podAffinityTerm": term(HOST, &label)}]}
            });
            to_pod(p)
        })
        .collect()
}

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
