//! The workload file both engines read, the result both print, and the independent checker.
//!
//! A workload (JSON) is the instance types with their offerings and prices and an explicit
//! overhead (so that both engines see the same allocatable), one node pool (name, requirements,
//! labels) and the pods as ordinary Kubernetes objects. Quantities are Kubernetes quantity
//! strings. The Go harness in `tests/controlplane/karpenter-bench/harness` reads the same file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use karpenter::api::provisioner::Requirement;
use karpenter::api::quantity::Quantity;
use karpenter::api::{Provisioner, ProvisionerSpec};
use karpenter::cloud::instance_types::{InstanceTypeEntry, OfferingEntry};
use karpenter::scheduling::instance_type::mark_absent_labels;
use karpenter::scheduling::resources::pod_requests;
use karpenter::scheduling::{Decision, InstanceType};
use serde::{Deserialize, Serialize};

/// The node pool (one Provisioner on our side, one NodePool on Karpenter's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    pub name: String,
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One workload file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub instance_types: Vec<InstanceTypeEntry>,
    pub node_pool: NodePool,
    pub pods: Vec<Pod>,
}

/// One node of a result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultNode {
    pub instance_type: String,
    #[serde(default)]
    pub capacity_type: String,
    #[serde(default)]
    pub zones: Vec<String>,
    pub price_per_hour: f64,
    #[serde(default)]
    pub instance_type_options: usize,
    #[serde(default)]
    pub pods: Vec<String>,
}

/// What one engine's run on one workload printed (the Go harness prints the same shape).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    pub engine: String,
    pub version: String,
    pub workload: String,
    pub threads: usize,
    pub pods: usize,
    pub seconds: f64,
    pub pods_per_second: f64,
    pub node_count: usize,
    pub price_per_hour: f64,
    #[serde(default)]
    pub unschedulable: Vec<String>,
    #[serde(default)]
    pub nodes: Option<Vec<ResultNode>>,
    /// Resident memory (MB) once the input is parsed, before the solve (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_before_solve_mb: Option<f64>,
    /// Peak resident memory (MB) of the process after the solve (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    /// Seconds spent in `Scheduler::new` (the pod-independent preparation, like Karpenter's
    /// `NewScheduler`), not counted in `seconds` (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_seconds: Option<f64>,
    /// Live heap at each stage (ours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapFigures>,
}

/// Live heap bytes (MB) at the stages of a run, from a counting allocator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeapFigures {
    /// The parsed workload: pods and engine instance types (the file text dropped).
    pub input_mb: f64,
    /// Added by `Scheduler::new` (its copy of the input and the preparation).
    pub prepared_mb: f64,
    /// The highest the solve raised the heap above where it started: the engine's state.
    pub solve_peak_mb: f64,
    /// Left after the solve: the Decision.
    pub decision_mb: f64,
    /// Highest live heap of the whole run, parsing included.
    pub peak_mb: f64,
}

/// A `/proc/self/status` field in MB (`VmRSS`, `VmHWM`).
pub fn proc_status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn milli_quantity(v: i64) -> Quantity {
    Quantity::new(format!("{v}m"))
}

/// The file entry of an engine instance type, with its capacity and overhead spelled out.
pub fn entry(t: &InstanceType) -> InstanceTypeEntry {
    let capacity = t.capacity_for(None);
    let overhead = t.overhead_for(None);
    let mut labels = t.labels.clone();
    labels.remove(karpenter::api::labels::INSTANCE_TYPE);
    let architecture = labels
        .remove(karpenter::api::labels::ARCH)
        .unwrap_or_else(|| "amd64".into());
    let operating_systems = t
        .requirements
        .get(karpenter::api::labels::OS)
        .filter(|s| !s.complement)
        .map(|s| s.values.iter().cloned().collect())
        .unwrap_or_else(|| vec!["linux".to_string()]);
    InstanceTypeEntry {
        name: t.name.clone(),
        architecture,
        operating_systems,
        capacity: capacity
            .iter()
            .map(|(k, v)| (k.clone(), milli_quantity(*v)))
            .collect(),
        overhead: Some(
            overhead
                .iter()
                .filter(|(k, _)| capacity.contains_key(*k))
                .map(|(k, v)| (k.clone(), milli_quantity(*v)))
                .collect(),
        ),
        labels,
        offerings: t
            .offerings
            .iter()
            .map(|o| OfferingEntry {
                zone: o.zone.clone(),
                capacity_type: o.capacity_type.clone(),
                price: o.price,
                available: o.available,
            })
            .collect(),
    }
}

impl Workload {
    /// A workload over engine instance types (offerings with no price are left out: Karpenter
    /// cannot rank them).
    pub fn new(name: &str, types: &[InstanceType], node_pool: NodePool, pods: Vec<Pod>) -> Self {
        let instance_types = types
            .iter()
            .map(entry)
            .map(|mut e| {
                e.offerings.retain(|o| o.price.is_some());
                e
            })
            .filter(|e| !e.offerings.is_empty())
            .collect();
        Workload {
            name: name.to_string(),
            instance_types,
            node_pool,
            pods,
        }
    }

    /// The engine instance types, with the absent-label requirements a cloud provider's
    /// catalog states (as Karpenter's providers build them before a solve).
    pub fn engine_types(&self) -> Result<Vec<InstanceType>, String> {
        let mut types = self
            .instance_types
            .iter()
            .map(|e| e.to_instance_type().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        mark_absent_labels(&mut types);
        Ok(types)
    }

    /// The Provisioner of the node pool.
    pub fn provisioner(&self) -> Provisioner {
        let spec = ProvisionerSpec {
            requirements: self.node_pool.requirements.clone(),
            labels: self.node_pool.labels.clone(),
            ..Default::default()
        };
        Provisioner::new(&self.node_pool.name, spec)
    }
}

/// A pod's `namespace/name`.
pub fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Our Decision in the common result shape.
pub fn from_decision(w: &Workload, d: &Decision, seconds: f64) -> RunResult {
    RunResult {
        engine: "karpenter-rs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        workload: w.name.clone(),
        threads: 1,
        pods: w.pods.len(),
        seconds,
        pods_per_second: w.pods.len() as f64 / seconds,
        node_count: d.nodes.len(),
        price_per_hour: d.total_price_per_hour,
        unschedulable: d.unschedulable.iter().map(|u| u.pod.clone()).collect(),
        nodes: Some(
            d.nodes
                .iter()
                .map(|n| ResultNode {
                    instance_type: n.instance_type.clone(),
                    capacity_type: n.capacity_type.clone(),
                    zones: n.zones.clone(),
                    price_per_hour: n.price_per_hour,
                    instance_type_options: n.instance_type_options.len(),
                    pods: n.pods.clone(),
                })
                .collect(),
        ),
        rss_before_solve_mb: None,
        peak_rss_mb: None,
        prepare_seconds: None,
        heap: None,
    }
}

fn selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let ml = sel.match_labels.as_ref();
    let ok_labels = ml.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ok_exprs = sel.match_expressions.as_ref().is_none_or(|es| {
        es.iter().all(|e| {
            let vals = e.values.clone().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| vals.contains(v)),
                "NotIn" => have.is_none_or(|v| !vals.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
    });
    ok_labels && ok_exprs
}

/// Whether a node-selector operator holds for the node's values of a key (`None`: the node
/// does not have the label). A key with several values (a node allowed in several zones) must
/// satisfy the rule for every value.
fn node_rule_holds(op: &str, values: &[String], have: Option<&BTreeSet<String>>) -> bool {
    match op {
        "In" => have.is_some_and(|h| !h.is_empty() && h.iter().all(|v| values.contains(v))),
        "NotIn" => have.is_none_or(|h| h.iter().all(|v| !values.contains(v))),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let bound: Option<i64> = values.first().and_then(|v| v.parse().ok());
            match (bound, have) {
                (Some(b), Some(h)) => h.iter().all(|v| {
                    v.parse::<i64>()
                        .is_ok_and(|x| if op == "Gt" { x > b } else { x < b })
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Independent check of one engine's placement against the workload, on the final state:
/// every pod placed once or reported unschedulable and no unknown pod; every node's pods fit the
/// allocatable (capacity less overhead) of its instance type; node selectors and required node
/// affinity hold on the node's labels (the instance type's, its zones and capacity type, the
/// node pool's); a pod with required hostname anti-affinity shares its node with no pod its
/// selector matches; pods with a zone spread (DoNotSchedule) or required zone affinity sit on
/// nodes pinned to one zone; and a zone spread whose selector only matches pods that all carry
/// it has a final skew within its maxSkew over the zones in use.
pub fn check(w: &Workload, r: &RunResult) -> Vec<String> {
    let mut out = Vec::new();
    let pods: HashMap<String, &Pod> = w.pods.iter().map(|p| (pod_key(p), p)).collect();
    let mut types = HashMap::new();
    for e in &w.instance_types {
        match e.to_instance_type() {
            Ok(t) => {
                types.insert(e.name.clone(), t);
            }
            Err(err) => out.push(format!("instance type {}: {err}", e.name)),
        }
    }
    let Some(nodes) = r.nodes.as_ref() else {
        out.push(format!("{}: the result has no nodes listed", r.engine));
        return out;
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut zone_of: HashMap<&str, &str> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(t) = types.get(&n.instance_type) else {
            out.push(format!(
                "node {i}: unknown instance type {:?}",
                n.instance_type
            ));
            continue;
        };
        // The zones the node can launch in: those it allows where its type has an available
        // offering of its capacity type.
        let zones: Vec<String> = n
            .zones
            .iter()
            .filter(|z| {
                t.offerings
                    .iter()
                    .any(|o| &o.zone == *z && o.capacity_type == n.capacity_type && o.available)
            })
            .cloned()
            .collect();
        if zones.is_empty() {
            out.push(format!(
                "node {i} ({}): no available {} offering in {:?}",
                n.instance_type, n.capacity_type, n.zones
            ));
        }
        let mut node_labels: BTreeMap<String, BTreeSet<String>> = t
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), BTreeSet::from([v.clone()])))
            .collect();
        for (k, v) in &w.node_pool.labels {
            node_labels.insert(k.clone(), BTreeSet::from([v.clone()]));
        }
        if let Some(os) = t.requirements.get(karpenter::api::labels::OS) {
            let v: BTreeSet<String> = os.values.iter().cloned().collect();
            if v.len() == 1 && !os.complement {
                node_labels.insert(karpenter::api::labels::OS.into(), v);
            }
        }
        node_labels.insert(
            karpenter::api::labels::ZONE.into(),
            zones.iter().cloned().collect(),
        );
        if !n.capacity_type.is_empty() {
            node_labels.insert(
                karpenter::api::labels::CAPACITY_TYPE.into(),
                BTreeSet::from([n.capacity_type.clone()]),
            );
        }
        for rq in &w.node_pool.requirements {
            if !node_rule_holds(&rq.operator, &rq.values, node_labels.get(&rq.key)) {
                out.push(format!(
                    "node {i} ({}): node pool requirement {} {} {:?} does not hold",
                    n.instance_type, rq.key, rq.operator, rq.values
                ));
            }
        }
        let allocatable = t.allocatable(None);
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        let mut members: Vec<&Pod> = Vec::new();
        for name in &n.pods {
            *seen.entry(name.as_str()).or_default() += 1;
            let Some(pod) = pods.get(name) else {
                out.push(format!("node {i}: unknown pod {name}"));
                continue;
            };
            members.push(pod);
            if zones.len() == 1 {
                zone_of.insert(
                    name.as_str(),
                    n.zones
                        .iter()
                        .find(|z| **z == zones[0])
                        .map_or("", String::as_str),
                );
            }
            match pod_requests(pod) {
                Ok(req) => {
                    for (k, v) in req {
                        *used.entry(k).or_default() += v;
                    }
                }
                Err(e) => out.push(format!("{name}: {e}")),
            }
            let spec = pod.spec.as_ref();
            for (k, v) in spec
                .and_then(|s| s.node_selector.as_ref())
                .into_iter()
                .flatten()
            {
                if !node_rule_holds("In", std::slice::from_ref(v), node_labels.get(k)) {
                    out.push(format!(
                        "node {i} ({}): {name} selects {k}={v}",
                        n.instance_type
                    ));
                }
            }
            let required = spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                });
            if let Some(req) = required {
                let any = req.node_selector_terms.iter().any(|term| {
                    term.match_expressions.iter().flatten().all(|e| {
                        node_rule_holds(
                            &e.operator,
                            e.values.as_deref().unwrap_or(&[]),
                            node_labels.get(&e.key),
                        )
                    })
                });
                if !any {
                    out.push(format!(
                        "node {i} ({}): {name}'s required node affinity does not hold",
                        n.instance_type
                    ));
                }
            }
            let zone_constrained = spec.is_some_and(|s| {
                s.topology_spread_constraints.iter().flatten().any(|c| {
                    c.topology_key == karpenter::api::labels::ZONE
                        && c.when_unsatisfiable == "DoNotSchedule"
                }) || s
                    .affinity
                    .as_ref()
                    .and_then(|a| a.pod_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    })
                    .is_some_and(|ts| {
                        ts.iter()
                            .any(|t| t.topology_key == karpenter::api::labels::ZONE)
                    })
            });
            if zone_constrained && zones.len() != 1 {
                out.push(format!(
                    "node {i}: zone-constrained pod {name} on a node not pinned to one zone ({:?})",
                    n.zones
                ));
            }
        }
        for (k, v) in &used {
            if *v > allocatable.get(k).copied().unwrap_or(0) {
                out.push(format!(
                    "node {i} ({}): {k} {v} exceeds allocatable {}",
                    n.instance_type,
                    allocatable.get(k).copied().unwrap_or(0)
                ));
            }
        }
        for p in &members {
            let terms = p
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                });
            for t in terms.into_iter().flatten() {
                if t.topology_key != karpenter::api::labels::HOSTNAME {
                    continue;
                }
                let Some(sel) = t.label_selector.as_ref() else {
                    continue;
                };
                for q in &members {
                    if std::ptr::eq(*p, *q) {
                        continue;
                    }
                    let ql = q.metadata.labels.clone().unwrap_or_default();
                    if selector_matches(sel, &ql) {
                        out.push(format!(
                            "node {i}: {} has hostname anti-affinity to {} on the same node",
                            pod_key(p),
                            pod_key(q)
                        ));
                    }
                }
            }
        }
    }
    // Zone spread skew on the final state, where it is well defined.
    let mut groups: BTreeMap<String, (i32, Vec<String>)> = BTreeMap::new();
    for p in &w.pods {
        for c in p
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .into_iter()
            .flatten()
        {
            if c.topology_key != karpenter::api::labels::ZONE
                || c.when_unsatisfiable != "DoNotSchedule"
            {
                continue;
            }
            let Some(sel) = c.label_selector.as_ref() else {
                continue;
            };
            let key = serde_json::to_string(sel).unwrap_or_default();
            let g = groups.entry(key).or_insert((c.max_skew, Vec::new()));
            g.1.push(pod_key(p));
        }
    }
    for (sel_json, (max_skew, carriers)) in &groups {
        let Ok(sel) = serde_json::from_str(sel_json) else {
            continue;
        };
        let carriers_set: BTreeSet<&String> = carriers.iter().collect();
        let matched: Vec<String> = w
            .pods
            .iter()
            .filter(|p| selector_matches(&sel, &p.metadata.labels.clone().unwrap_or_default()))
            .map(pod_key)
            .collect();
        if matched.is_empty() || !matched.iter().all(|m| carriers_set.contains(m)) {
            continue;
        }
        let mut per_zone: BTreeMap<&str, i32> = BTreeMap::new();
        for m in &matched {
            if let Some(z) = zone_of.get(m.as_str()) {
                *per_zone.entry(z).or_default() += 1;
            }
        }
        if let (Some(max), Some(min)) = (per_zone.values().max(), per_zone.values().min()) {
            if max - min > *max_skew {
                out.push(format!(
                    "zone spread {sel_json}: skew {} over {per_zone:?} exceeds {max_skew}",
                    max - min
                ));
            }
        }
    }
    for u in &r.unschedulable {
        *seen.entry(u.as_str()).or_default() += 1;
        if !pods.contains_key(u) {
            out.push(format!("unknown unschedulable pod {u}"));
        }
    }
    for k in pods.keys() {
        match seen.get(k.as_str()).copied().unwrap_or(0) {
            1 => {}
            0 => out.push(format!("pod {k} neither placed nor reported unschedulable")),
            n => out.push(format!("pod {k} appears {n} times")),
        }
    }
    let total: f64 = nodes.iter().map(|n| n.price_per_hour).sum();
    if (total - r.price_per_hour).abs() > 1e-6 * total.max(1.0) {
        out.push(format!(
            "total price {} is not the sum of the nodes' prices {total}",
            r.price_per_hour
        ));
    }
    for (i, n) in nodes.iter().enumerate() {
        if let Some(t) = types.get(&n.instance_type) {
            let cheapest = t
                .offerings
                .iter()
                .filter(|o| {
                    o.available && o.capacity_type == n.capacity_type && n.zones.contains(&o.zone)
                })
                .filter_map(|o| o.price)
                .fold(f64::MAX, f64::min);
            if n.price_per_hour + 1e-9 < cheapest {
                out.push(format!(
                    "node {i} ({}): price {} below any of its offerings ({cheapest})",
                    n.instance_type, n.price_per_hour
                ));
            }
        }
    }
    out
}
