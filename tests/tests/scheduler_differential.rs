#![forbid(unsafe_code)]
//! The packing engine against the real kube-scheduler (v1.36), differentially.
//!
//! For each seeded random scenario (two Provisioners, one tainted and in partly other zones;
//! existing nodes with pods; groups of pods with requests, zone node selectors, tolerations,
//! zone and hostname spread under random `nodeAffinityPolicy`/`nodeTaintsPolicy`/`minDomains`,
//! hostname and zone anti-affinity), the engine runs in-process; then on the real control plane
//! (kwok as the kubelets) the existing nodes and the nodes the Decision launches are created as
//! the controller would create them (`node_for_instance`: the instance type's labels, capacity
//! and allocatable, one concrete zone, the Provisioner's taints), the pods are created group by
//! group (largest first, as the engine packs), and kube-scheduler does the rest:
//!
//! 1. every pod the engine placed is scheduled by kube-scheduler (on some node);
//! 2. then one more node per (Provisioner, zone) with the largest allowed type is added, and no
//!    pod the engine left pending may be scheduled on any node.
//!
//! The fixed seeds are regression cases (seed 0 is the reported case: spread pods that cannot
//! use the tainted Provisioner's zones); the large seeds draw the same kind of scenario with
//! every group [`LARGE`] times larger (a few hundred pods, up to a hundred or more nodes); one
//! more seed changes every run, drawn both small and [`CHANGING_LARGE`] times larger, and is
//! printed, so a failure can be replayed with `KARPENTER_DIFF_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter::api::{decode_provisioner, default_provisioner, Provisioner};
use karpenter::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};
use karpenter::cloud::provider::{Instance, InstanceState};
use karpenter::lifecycle::provisioning::node_for_instance;
use karpenter::scheduling::{
    Decision, ExistingNode, InstanceType, Scheduler, SchedulerInput, SchedulerOptions,
};
use karpenter_e2e::controlplane::{ControlPlane, Options};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};

const TYPES: [&str; 5] = ["c5.large", "m5.large", "m5.xlarge", "r5.large", "c5.xlarge"];
const FIXED_SEEDS: [u64; 4] = [0, 7, 42, 1234];
/// Seeds drawn at scale: every group's size is multiplied by [`LARGE`], a few hundred pods per
/// scenario.
const LARGE_SEEDS: [u64; 3] = [5, 2026, 987_654];
/// The group-size multiplier of a large scenario.
const LARGE: u64 = 30;
/// The multiplier of the changing seed's large draw: smaller, so a seed that draws many nodes
/// (one drew 288 at 30x, 440 s on two cores) keeps CI's time bounded.
const CHANGING_LARGE: u64 = 10;

/// A kube-scheduler profile that runs every filter but scores only by node affinity, so a
/// pod's preference for the node the engine chose decides among the nodes that pass. Every
/// feasible node is scored: by default kube-scheduler stops looking after a share of a large
/// cluster's nodes (about half of 300), and the preferred node may not be among them.
const PLAN_CHECK: &str = "- schedulerName: plan-check
  percentageOfNodesToScore: 100
  plugins:
    score:
      disabled:
      - name: \"*\"
      enabled:
      - name: NodeAffinity
        weight: 1
";

/// The pods of a group in the order they are created: round robin over the zones of the nodes
/// the engine chose (the zone with fewer pods of the group so far first), then the pods the
/// engine left pending; each placed pod prefers its node under the `plan-check` profile.
fn plan_order(group: &[Pod], planned: &BTreeMap<String, (String, String)>) -> Vec<Value> {
    let mut by_zone: BTreeMap<&str, std::collections::VecDeque<&Pod>> = BTreeMap::new();
    let mut pending = Vec::new();
    for p in group {
        match planned.get(p.metadata.name.as_deref().unwrap_or_default()) {
            Some((_, zone)) => by_zone.entry(zone.as_str()).or_default().push_back(p),
            None => pending.push(p),
        }
    }
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order = Vec::new();
    loop {
        let next = by_zone
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .min_by_key(|(z, q)| {
                (
                    placed.get(*z).copied().unwrap_or(0),
                    std::cmp::Reverse(q.len()),
                )
            })
            .map(|(z, _)| *z);
        let Some(zone) = next else { break };
        if let Some(p) = by_zone.get_mut(zone).and_then(|q| q.pop_front()) {
            *placed.entry(zone).or_default() += 1;
            order.push(p);
        }
    }
    order.extend(pending);
    order
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).expect("pod");
            v["spec"]["schedulerName"] = json!("plan-check");
            if let Some((node, _)) = planned.get(p.metadata.name.as_deref().unwrap_or_default()) {
                v["spec"]["affinity"]["nodeAffinity"] = json!({
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                        "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname",
                            "operator": "In", "values": [node]}]}}]});
            }
            v
        })
        .collect()
}

/// xorshift64*: small, deterministic, ours.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

struct Scenario {
    /// The seed, with `x<scale>` for a scaled one: names its namespace, nodes and label.
    tag: String,
    ns: String,
    provisioners: Vec<Provisioner>,
    existing: Vec<ExistingNode>,
    /// Pod groups, largest request first (the order they are created in).
    groups: Vec<Vec<Pod>>,
    /// A DaemonSet on the scenario's nodes (some tolerate the team taint), created before the
    /// groups so that its pods hold their share of every node first.
    daemonset: Option<DaemonSet>,
}

fn provisioner(name: &str, zones: &[&str], taint: bool, tag: &str) -> Provisioner {
    let mut doc = json!({
        "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
        "metadata": {"name": name},
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": TYPES},
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            ],
            "labels": {"type": "kwok", "e2e-scenario": tag},
            "providerRef": {"name": "default"},
        }
    });
    if taint {
        doc["spec"]["taints"] = json!([{"key": "team", "value": "ml", "effect": "NoSchedule"}]);
        doc["spec"]["weight"] = json!(10);
    }
    let mut p = decode_provisioner(&doc).expect("provisioner decodes");
    default_provisioner(&mut p.spec);
    p
}

fn pod_json(ns: &str, name: &str, app: &str, cpu_milli: u64, tag: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {
            "nodeSelector": {"e2e-scenario": tag},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "pause",
                "resources": {"requests": {"cpu": format!("{cpu_milli}m"), "memory": "256Mi"}}}]
        }
    })
}

/// The scenario of a seed; `scale` multiplies every group's size (the draws are the same).
fn scenario(seed: u64, scale: u64, catalog: &[InstanceType]) -> Scenario {
    let mut rng = Rng::new(seed);
    // Draws added later come from a second generator, so the first one's scenarios (and the
    // regression seeds above) stay what they were.
    let mut more = Rng::new(seed ^ 0x5EED_DA55);
    let tag = if scale == 1 {
        seed.to_string()
    } else {
        format!("{seed}x{scale}")
    };
    let ns = format!("diff-{tag}");
    let general_zones: Vec<&str> = if seed == 0 {
        vec!["us-east-1a", "us-east-1c"]
    } else {
        let mut z = vec!["us-east-1a"];
        for c in ["us-east-1b", "us-east-1c"] {
            if rng.chance(60) {
                z.push(c);
            }
        }
        z
    };
    let team_zones: Vec<&str> = if seed == 0 {
        vec!["us-east-1b", "us-east-1d"]
    } else {
        vec![*rng.pick(&["us-east-1b", "us-east-1d"]), "us-east-1d"]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let provisioners = vec![
        provisioner("general", &general_zones, false, &tag),
        provisioner("team", &team_zones, true, &tag),
    ];
    // Existing nodes of the general provisioner, each with a pod or two of group g0.
    let mut existing = Vec::new();
    let n_existing = if seed == 0 { 1 } else { rng.below(3) };
    for i in 0..n_existing {
        let want = *rng.pick(&["m5.large", "m5.xlarge"]);
        let t = catalog
            .iter()
            .find(|t| t.name == want)
            .expect("type in catalog");
        let zone = *rng.pick(&general_zones);
        let node = make_node(&format!("s{tag}-e{i}"), &provisioners[0], t, zone);
        let pods = (0..=rng.below(2))
            .map(|j| {
                let mut p = pod_json(&ns, &format!("e{i}-{j}"), "g0", 250, &tag);
                p["spec"]["nodeName"] = json!(node.metadata.name.clone());
                std::sync::Arc::new(serde_json::from_value(p).expect("pod"))
            })
            .collect();
        existing.push(ExistingNode { node, pods });
    }
    let mut groups = Vec::new();
    let n_groups = if seed == 0 { 1 } else { 2 + rng.below(2) };
    for g in 0..n_groups {
        let app = format!("g{g}");
        let cpu = if seed == 0 {
            500
        } else {
            *rng.pick(&[200, 400, 700, 1200])
        };
        let count = scale * if seed == 0 { 4 } else { 3 + rng.below(6) };
        let mut spec_extra = json!({});
        let tolerate = seed != 0 && rng.chance(30);
        if tolerate {
            spec_extra["tolerations"] = json!([{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]);
        }
        if seed != 0 && rng.chance(25) {
            let z = *rng.pick(&["us-east-1a", "us-east-1b", "us-east-1c"]);
            spec_extra["zone"] = json!(z);
        }
        // Every pod has a tier shared across groups; a spread over the tier counts the pods of
        // other groups too, whose node selectors and tolerations differ: kube-scheduler counts
        // them only on nodes that pass this group's nodeAffinityPolicy and nodeTaintsPolicy.
        let tier = if seed == 0 {
            "t0"
        } else {
            *more.pick(&["t0", "t1"])
        };
        let spread_selector = if seed != 0 && more.chance(35) {
            json!({"tier": tier})
        } else {
            json!({"app": app})
        };
        let mut spreads = Vec::new();
        if seed == 0 || rng.chance(60) {
            let mut s = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": spread_selector}});
            if seed != 0 {
                if rng.chance(30) {
                    s["nodeAffinityPolicy"] = json!("Ignore");
                }
                if rng.chance(30) {
                    s["nodeTaintsPolicy"] = json!("Honor");
                }
                if rng.chance(20) {
                    s["minDomains"] = json!(2 + rng.below(2));
                }
            }
            spreads.push(s);
        }
        if seed != 0 && rng.chance(30) {
            spreads.push(json!({"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}));
        }
        let anti = if seed != 0 && rng.chance(25) {
            Some(*rng.pick(&["kubernetes.io/hostname", "topology.kubernetes.io/zone"]))
        } else {
            None
        };
        let by_namespace_label = anti.is_some() && more.chance(50);
        let mut pods = Vec::new();
        for i in 0..count {
            let mut p = pod_json(&ns, &format!("{app}-{i}"), &app, cpu, &tag);
            if let Some(t) = spec_extra.get("tolerations") {
                p["spec"]["tolerations"] = t.clone();
            }
            if let Some(z) = spec_extra.get("zone") {
                p["spec"]["nodeSelector"]["topology.kubernetes.io/zone"] = z.clone();
            }
            if !spreads.is_empty() {
                p["spec"]["topologySpreadConstraints"] = json!(spreads);
            }
            p["metadata"]["labels"]["tier"] = json!(tier);
            if let Some(key) = anti {
                let mut term = json!({"topologyKey": key,
                    "labelSelector": {"matchLabels": {"app": app}}});
                if by_namespace_label {
                    // The same namespace, named through its kubernetes.io/metadata.name label.
                    term["namespaceSelector"] =
                        json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
                }
                p["spec"]["affinity"] = json!({"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [term]}});
            }
            pods.push(serde_json::from_value(p).expect("pod"));
        }
        groups.push((cpu, pods));
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.0));
    let daemonset = (seed != 0 && more.chance(70)).then(|| {
        let mut spec = json!({
            "nodeSelector": {"e2e-scenario": &tag},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "pause", "resources": {"requests": {
                "cpu": format!("{}m", *more.pick(&[100, 300])), "memory": "128Mi"}}}]
        });
        if more.chance(50) {
            spec["tolerations"] = json!([{"key": "team", "operator": "Exists"}]);
        }
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}}
        }))
        .expect("daemonset")
    });
    // The DaemonSet's pods on the existing nodes are bound there, as the controller's index
    // would see them.
    if let Some(ds) = &daemonset {
        for (i, e) in existing.iter_mut().enumerate() {
            if lands(ds, &e.node) {
                let mut p = serde_json::to_value(ds_pod(ds, &e.node)).expect("pod");
                p["metadata"]["name"] = json!(format!("agent-e{i}"));
                e.pods
                    .push(std::sync::Arc::new(serde_json::from_value(p).expect("pod")));
            }
        }
    }
    Scenario {
        tag,
        ns,
        provisioners,
        existing,
        groups: groups.into_iter().map(|(_, p)| p).collect(),
        daemonset,
    }
}

/// Whether the DaemonSet's pod lands on a node: its taints tolerated (only the team taint is
/// used here).
fn lands(ds: &DaemonSet, node: &Node) -> bool {
    let tolerates_team = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some("team")));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "team"));
    tolerates_team || !tainted
}

/// The DaemonSet's pod as bound to a node, owned by the DaemonSet.
fn ds_pod(ds: &DaemonSet, node: &Node) -> Pod {
    let t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    spec.node_name = node.metadata.name.clone();
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            namespace: ds.metadata.namespace.clone(),
            labels: t.metadata.and_then(|m| m.labels),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "DaemonSet".into(),
                    name: ds.metadata.name.clone().unwrap_or_default(),
                    uid: "ds".into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A Node as the controller creates it for an instance of `t` in `zone`.
fn make_node(name: &str, p: &Provisioner, t: &InstanceType, zone: &str) -> Node {
    let instance = Instance {
        id: format!("i-{name}"),
        instance_type: t.name.clone(),
        zone: zone.to_string(),
        capacity_type: "on-demand".into(),
        state: InstanceState::Running,
        private_dns_name: name.to_string(),
        image_id: String::new(),
        tags: BTreeMap::new(),
    };
    let mut node = node_for_instance(&instance, p, Some(t), String::new());
    node.metadata.finalizers = None;
    if let Some(l) = node.metadata.labels.as_mut() {
        l.insert("karpenter.sh/initialized".into(), "true".into());
    }
    node
}

fn solve(s: &Scenario, catalog: &[InstanceType]) -> Decision {
    let pods: Vec<Pod> = s.groups.iter().flatten().cloned().collect();
    let input = SchedulerInput {
        provisioners: s.provisioners.clone(),
        instance_types: catalog.to_vec(),
        existing_nodes: s.existing.clone(),
        daemonsets: s.daemonset.iter().cloned().collect(),
        options: SchedulerOptions::default(),
        ..Default::default()
    };
    Scheduler::new(input).solve(&pods).expect("engine runs")
}

fn apply(cp: &ControlPlane, objects: &[Value]) {
    let text: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
    // The ServiceAccount admission plugin reads a cache that may lag the namespace's creation.
    let mut last = String::new();
    let done = cp.eventually("the objects created", Duration::from_secs(30), || {
        let out = cp.apply(&text).ok()?;
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then_some(())
    });
    assert!(done.is_ok(), "{last}");
}

/// Creates nodes, a few at a time, and writes each one's capacity and allocatable into its
/// status.
fn create_nodes(cp: &ControlPlane, nodes: &[Node]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        let api: Api<Node> = Api::all(Client::try_from(config).expect("client"));
        let results: Vec<Result<(), String>> = futures::stream::iter(nodes.iter().cloned())
            .map(|mut node| {
                let api = api.clone();
                async move {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let status = node.status.take().unwrap_or_default();
                    api.create(&PostParams::default(), &node)
                        .await
                        .map_err(|e| format!("create node {name}: {e}"))?;
                    let patch = json!({"status": {"capacity": status.capacity,
                        "allocatable": status.allocatable}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| format!("status of node {name}: {e}"))?;
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    });
    // The node lifecycle controller taints a node not-ready until kwok reports it Ready; a pod
    // that meets the taint is marked Unschedulable, which would read as kube-scheduler's answer.
    let names: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    // A few hundred kwok nodes take a while on two busy cores: the wait grows with the count,
    // polls once a second (each poll lists every node) and reports how far it got.
    let timeout = Duration::from_secs(60) + Duration::from_millis(400) * names.len() as u32;
    let deadline = std::time::Instant::now() + timeout;
    let mut ready = 0;
    loop {
        if let Ok(v) = cp.get_json(&["nodes"]) {
            ready = v["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|n| {
                            n["metadata"]["name"]
                                .as_str()
                                .is_some_and(|x| names.contains(x))
                        })
                        .filter(|n| node_usable(n))
                        .count()
                })
                .unwrap_or(0);
        }
        if ready == names.len() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {timeout:?}, {ready} of {} new node(s) are Ready and free of node.kubernetes.io taints",
            names.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// How long kube-scheduler may take to answer `pods` pods: a minute, and more for large scenarios.
fn settle_timeout(pods: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(100) * pods as u32
}

/// Ready, and no longer tainted by the node lifecycle controller.
fn node_usable(n: &Value) -> bool {
    let is_ready = n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let lifecycle_taint = n["spec"]["taints"].as_array().is_some_and(|t| {
        t.iter().any(|t| {
            t["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("node.kubernetes.io/"))
        })
    });
    is_ready && !lifecycle_taint
}

/// Pods of the namespace: name to node (`None` when unbound), once kube-scheduler has
/// answered every pod (bound, or marked Unschedulable).
fn settled(cp: &ControlPlane, ns: &str, expect: usize) -> Option<BTreeMap<String, Option<String>>> {
    let v = cp.get_json(&["pods", "-n", ns]).ok()?;
    let items = v["items"].as_array()?;
    if items.len() < expect {
        return None;
    }
    let mut out = BTreeMap::new();
    for p in items {
        let name = p["metadata"]["name"].as_str()?.to_string();
        let node = p["spec"]["nodeName"].as_str().map(str::to_string);
        let unschedulable = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "Unschedulable"));
        if node.is_none() && !unschedulable {
            return None;
        }
        out.insert(name, node);
    }
    Some(out)
}

/// The zones a Provisioner's requirements allow.
fn provisioner_zones(p: &Provisioner) -> Vec<String> {
    p.spec
        .requirements
        .iter()
        .filter(|r| r.key == "topology.kubernetes.io/zone")
        .flat_map(|r| r.values.clone())
        .collect()
}

/// A scenario, the engine's plan and kube-scheduler's binding, for a failure's report.
fn describe(s: &Scenario, d: &Decision, bound: &BTreeMap<String, Option<String>>) -> String {
    let mut out = format!("scenario {}:\n", s.tag);
    for p in &s.provisioners {
        let zones = provisioner_zones(p);
        out += &format!(
            "  provisioner {} zones {zones:?} taints {}\n",
            p.metadata.name.as_deref().unwrap_or_default(),
            p.spec.taints.len()
        );
    }
    for e in &s.existing {
        let labels = e.node.metadata.labels.clone().unwrap_or_default();
        out += &format!(
            "  existing {} zone {} pods {}\n",
            e.node.metadata.name.as_deref().unwrap_or_default(),
            labels
                .get("topology.kubernetes.io/zone")
                .map_or("", String::as_str),
            e.pods.len()
        );
    }
    for g in &s.groups {
        if let Some(p) = g.first() {
            let spec = serde_json::to_value(p.spec.clone()).unwrap_or_default();
            out += &format!(
                "  group of {} labels {} nodeSelector {} tolerations {} spread {} affinity {}\n",
                g.len(),
                json!(p.metadata.labels),
                spec["nodeSelector"],
                spec["tolerations"],
                spec["topologySpreadConstraints"],
                spec["affinity"]
            );
        }
    }
    for n in &d.nodes {
        out += &format!(
            "  engine: {} {} {:?} pods {}\n",
            n.provisioner,
            n.instance_type,
            n.zones,
            n.pods.len()
        );
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in bound.values().flatten() {
        *per_node.entry(node).or_default() += 1;
    }
    out += &format!("  kube-scheduler bound per node: {per_node:?}\n");
    out
}

struct Outcome {
    pods: usize,
    disagreements: Vec<String>,
}

fn run_scenario(cp: &ControlPlane, s: &Scenario, catalog: &[InstanceType]) -> Outcome {
    let d = solve(s, catalog);
    let placed: BTreeSet<String> = d
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter())
        .chain(d.existing_nodes.iter().flat_map(|n| n.pods.iter()))
        .filter_map(|k| k.split_once('/').map(|(_, n)| n.to_string()))
        .collect();
    let pending: BTreeMap<String, String> = d
        .unschedulable
        .iter()
        .filter_map(|u| {
            let (_, n) = u.pod.split_once('/')?;
            Some((n.to_string(), format!("{:?}", u.reasons)))
        })
        .collect();
    eprintln!(
        "scenario {}: {} pod(s) to place, {} existing node(s); the engine launches {} node(s), \
         places {}, leaves {} pending",
        s.tag,
        s.groups.iter().map(Vec::len).sum::<usize>(),
        s.existing.len(),
        d.nodes.len(),
        placed.len(),
        pending.len()
    );
    cp.kubectl_ok(&["create", "namespace", &s.ns])
        .expect("namespace");
    // Existing nodes and their pods, then the nodes the Decision launches.
    create_nodes(
        cp,
        &s.existing
            .iter()
            .map(|e| e.node.clone())
            .collect::<Vec<_>>(),
    );
    for e in &s.existing {
        // The DaemonSet's pods come from the real DaemonSet controller below.
        let pods: Vec<Value> = e
            .pods
            .iter()
            .filter(|p| p.metadata.owner_references.is_none())
            .map(|p| serde_json::to_value(&**p).expect("pod"))
            .collect();
        apply(cp, &pods);
    }
    let by_name = |n: &str| catalog.iter().find(|t| t.name == n);
    let launched: Vec<Node> = d
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = s
                .provisioners
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(n.provisioner.as_str()))
                .expect("provisioner of a new node");
            let t = by_name(&n.instance_type).expect("type in catalog");
            let zone = n.zones.first().cloned().unwrap_or_default();
            make_node(&format!("s{}-n{i}", s.tag), p, t, &zone)
        })
        .collect();
    create_nodes(cp, &launched);
    let mut created = s
        .existing
        .iter()
        .flat_map(|e| &e.pods)
        .filter(|p| p.metadata.owner_references.is_none())
        .count();
    if let Some(ds) = &s.daemonset {
        // kube-controller-manager's DaemonSet controller creates one pod per node it lands on,
        // and kube-scheduler binds them before any group is created.
        let nodes = cp
            .get_json(&["nodes", "-l", &format!("e2e-scenario={}", s.tag)])
            .expect("nodes");
        let nodes: Vec<Node> = serde_json::from_value(nodes["items"].clone()).expect("nodes");
        created += nodes.iter().filter(|n| lands(ds, n)).count();
        apply(cp, &[serde_json::to_value(ds).expect("daemonset")]);
        cp.eventually(
            "the DaemonSet's pods are bound",
            settle_timeout(created),
            || settled(cp, &s.ns, created),
        )
        .unwrap_or_else(|e| panic!("scenario {}: {e}", s.tag));
    }
    // Where the engine put each pod: (node, zone).
    let zone_of = |n: &Node| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("topology.kubernetes.io/zone").cloned())
            .unwrap_or_default()
    };
    let mut planned: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (n, node) in d.nodes.iter().zip(&launched) {
        for p in &n.pods {
            if let Some((_, name)) = p.split_once('/') {
                let node_name = node.metadata.name.clone().unwrap_or_default();
                planned.insert(name.to_string(), (node_name, zone_of(node)));
            }
        }
    }
    for e in &d.existing_nodes {
        let zone = s
            .existing
            .iter()
            .find(|x| x.node.metadata.name.as_deref() == Some(e.node.as_str()))
            .map(|x| zone_of(&x.node))
            .unwrap_or_default();
        for p in &e.pods {
            if let Some((_, name)) = p.split_once('/') {
                planned.insert(name.to_string(), (e.node.clone(), zone.clone()));
            }
        }
    }
    for g in &s.groups {
        let pods = plan_order(g, &planned);
        apply(cp, &pods);
        created += g.len();
        cp.eventually(
            "kube-scheduler answers every pod",
            settle_timeout(created),
            || settled(cp, &s.ns, created),
        )
        .unwrap_or_else(|e| panic!("scenario {}: {e}", s.tag));
    }
    let first = settled(cp, &s.ns, created).unwrap_or_default();
    let same = planned
        .iter()
        .filter(|(p, (node, _))| first.get(*p).is_some_and(|b| b.as_deref() == Some(node)))
        .count();
    eprintln!(
        "scenario {}: kube-scheduler bound {same} of the {} placed pod(s) where the engine put them",
        s.tag,
        planned.len()
    );
    let mut disagreements = Vec::new();
    for p in &placed {
        if first.get(p).is_some_and(Option::is_none) {
            disagreements.push(format!(
                "scenario {}: the engine placed {p}; kube-scheduler left it pending",
                s.tag
            ));
        }
    }
    // One more node per (provisioner, zone), largest allowed type: still no room for the pods
    // the engine called impossible.
    if !pending.is_empty() {
        let largest = by_name("m5.xlarge").expect("m5.xlarge");
        let mut i = 0;
        let mut extra = Vec::new();
        for p in &s.provisioners {
            for z in provisioner_zones(p) {
                let node = make_node(&format!("s{}-x{i}", s.tag), p, largest, &z);
                if s.daemonset.as_ref().is_some_and(|ds| lands(ds, &node)) {
                    created += 1;
                }
                extra.push(node);
                i += 1;
            }
        }
        create_nodes(cp, &extra);
        // kube-scheduler retries unschedulable pods on node events within its backoff (10 s);
        // the DaemonSet adds a pod to each new node it lands on.
        std::thread::sleep(Duration::from_secs(12));
        let after = cp
            .eventually(
                "kube-scheduler answers every pod",
                settle_timeout(created),
                || settled(cp, &s.ns, created),
            )
            .unwrap_or_else(|e| panic!("scenario {}: {e}", s.tag));
        for (p, why) in &pending {
            if let Some(Some(node)) = after.get(p) {
                disagreements.push(format!(
                    "scenario {}: the engine left {p} pending ({why}); kube-scheduler bound it to {node}",
                    s.tag
                ));
            }
        }
    }
    if !disagreements.is_empty() {
        eprintln!("{}", describe(s, &d, &first));
    }
    // Clean up: the next scenario must not see these nodes as topology domains.
    let _ = cp.kubectl(&["delete", "namespace", &s.ns, "--wait=false"]);
    let _ = cp.kubectl(&[
        "delete",
        "nodes",
        "-l",
        &format!("e2e-scenario={}", s.tag),
        "--wait=true",
    ]);
    Outcome {
        pods: created,
        disagreements,
    }
}

#[test]
fn the_engine_agrees_with_kube_scheduler_on_seeded_scenarios() {
    karpenter_e2e::install_crypto();
    let catalog = builtin_us_east_1(&AwsCatalogOptions::default()).expect("catalog");
    // The controller-manager creates each namespace's default ServiceAccount, which admission
    // wants before it accepts a pod.
    let cp = ControlPlane::start(
        Options::default()
            .controller_manager()
            .scheduler_profiles(PLAN_CHECK)
            .kwok(),
    )
    .expect("control plane");
    let changing = std::env::var("KARPENTER_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    eprintln!("changing seed this run: {changing} (replay with KARPENTER_DIFF_SEED={changing})");
    let mut pods = 0;
    let mut disagreements = Vec::new();
    let runs = FIXED_SEEDS
        .iter()
        .map(|&seed| (seed, 1))
        .chain(LARGE_SEEDS.iter().map(|&seed| (seed, LARGE)))
        .chain([(changing, 1), (changing, CHANGING_LARGE)]);
    let mut scenarios = 0;
    for (seed, scale) in runs {
        scenarios += 1;
        let s = scenario(seed, scale, &catalog);
        let o = run_scenario(&cp, &s, &catalog);
        pods += o.pods;
        disagreements.extend(o.disagreements);
    }
    let rate = 100.0 * (pods - disagreements.len()) as f64 / pods.max(1) as f64;
    eprintln!(
        "engine vs kube-scheduler: {pods} pods over {} scenarios, agreement {rate:.1} %",
        scenarios
    );
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn seed_zero_is_the_reported_case_and_the_engine_places_every_pod() {
    // Spread pods that cannot use the tainted provisioner (zones b and d) must land in a and c.
    let catalog = builtin_us_east_1(&AwsCatalogOptions::default()).expect("catalog");
    let s = scenario(0, 1, &catalog);
    let d = solve(&s, &catalog);
    assert!(d.unschedulable.is_empty(), "{:?}", d.unschedulable);
    let zones: BTreeSet<&str> = d
        .nodes
        .iter()
        .flat_map(|n| n.zones.iter().map(String::as_str))
        .collect();
    assert!(
        zones
            .iter()
            .all(|z| *z == "us-east-1a" || *z == "us-east-1c"),
        "{zones:?}"
    );
}
