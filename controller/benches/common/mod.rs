//! Shared by the benchmarks: the generator of Karpenter's scheduling-benchmark inputs (400
//! `fake-it-i` instance types, five pod classes, preference pods), the workload file that our
//! bench and the Go harness over Karpenter's scheduler both read, and the independent checker of
//! a placement against a workload.
#![allow(dead_code)]

pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use karpenter::api::{Provisioner, ProvisionerSpec};
use karpenter::scheduling::{InstanceType, Offering, Overhead};
use serde_json::{json, Value};

pub const GI: i64 = 1024 * 1024 * 1024 * 1000;
pub const MI: i64 = 1024 * 1024 * 1000;

/// splitmix64: a tiny deterministic PRNG.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

pub fn instance_types() -> Vec<InstanceType> {
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

pub fn provisioner() -> Provisioner {
    Provisioner::new("default", ProvisionerSpec::default())
}

pub const CPUS: &[&str] = &["100m", "250m", "500m", "1000m", "1500m"];
pub const MEMS: &[&str] = &["100Mi", "256Mi", "512Mi", "1024Mi", "2048Mi", "4096Mi"];
pub const LABELS: &[&str] = &["a", "b", "c", "d", "e", "f", "g"];
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const HOST: &str = "kubernetes.io/hostname";

pub fn base_pod(rng: &mut SplitMix, name: String) -> (Value, String) {
    let label = rng.pick(LABELS).to_string();
    let pod = json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"my-label": label}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {
            "cpu": rng.pick(CPUS), "memory": rng.pick(MEMS)}}}]}
    });
    (pod, label)
}

pub fn term(key: &str, label: &str) -> Value {
    json!({"topologyKey": key, "labelSelector": {"matchLabels": {"my-label": label}}})
}

pub fn to_pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap_or_default()
}

/// `count` pods of one class (0 generic, 1 zone spread, 2 hostname spread, 3 zone
/// self-affinity, 4 hostname self anti-affinity).
pub fn make_class(rng: &mut SplitMix, class: usize, count: usize, prefix: &str) -> Vec<Pod> {
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

pub fn diverse(size: usize, seed: u64) -> Vec<Pod> {
    let mut rng = SplitMix(seed);
    let per = size / 5;
    let mut pods = Vec::with_capacity(size);
    for class in 0..5 {
        let n = if class == 0 { size - 4 * per } else { per };
        pods.extend(make_class(&mut rng, class, n, "p"));
    }
    pods
}

pub fn preference_pods(count: usize) -> Vec<Pod> {
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
