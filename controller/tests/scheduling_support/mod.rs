//! Shared helpers for the scheduling tests: the fake catalog, pod and provisioner builders.
#![allow(dead_code)]

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter::api::Provisioner;
use karpenter::cloud::instance_types::parse_instance_types;
use karpenter::scheduling::{
    Decision, ExistingNode, InstanceType, Scheduler, SchedulerInput, SchedulerOptions,
};
use serde_json::{json, Value};

/// Karpenter's fake catalog from `tests/data/fake-instance-types.yaml`.
pub fn fake_types() -> Vec<InstanceType> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fake-instance-types.yaml"
    ))
    .unwrap();
    parse_instance_types(&text).unwrap()
}

/// A provisioner from a spec (no defaulting, as in Karpenter's tests).
pub fn prov(name: &str, spec: Value) -> Provisioner {
    serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Provisioner",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The default test provisioner: no requirements.
pub fn default_prov() -> Provisioner {
    prov("default", json!({}))
}

/// A pod builder over JSON.
#[derive(Clone)]
pub struct PodB(pub Value);

/// A pod named `name` in namespace `default` with one container and no requests.
pub fn pod(name: &str) -> PodB {
    PodB(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "pause"}]},
    }))
}

impl PodB {
    pub fn req(mut self, cpu: &str, mem: &str) -> Self {
        let mut r = serde_json::Map::new();
        if !cpu.is_empty() {
            r.insert("cpu".into(), json!(cpu));
        }
        if !mem.is_empty() {
            r.insert("memory".into(), json!(mem));
        }
        self.0["spec"]["containers"][0]["resources"]["requests"] = Value::Object(r);
        self
    }
    pub fn res(mut self, name: &str, q: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"]["requests"][name] = json!(q);
        self
    }
    pub fn limit(mut self, name: &str, q: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"]["limits"][name] = json!(q);
        self
    }
    pub fn labels(mut self, l: Value) -> Self {
        self.0["metadata"]["labels"] = l;
        self
    }
    pub fn ns(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }
    pub fn selector(mut self, s: Value) -> Self {
        self.0["spec"]["nodeSelector"] = s;
        self
    }
    pub fn spec(mut self, key: &str, v: Value) -> Self {
        self.0["spec"][key] = v;
        self
    }
    /// Required node affinity with the given terms (each a list of expressions).
    pub fn required(self, terms: Value) -> Self {
        let terms: Vec<Value> = terms
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!({"matchExpressions": t}))
            .collect();
        self.affinity(
            "nodeAffinity",
            json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}),
        )
    }
    /// Preferred node affinity terms: (weight, expressions).
    pub fn preferred(self, terms: &[(i32, Value)]) -> Self {
        let terms: Vec<Value> = terms
            .iter()
            .map(|(w, e)| json!({"weight": w, "preference": {"matchExpressions": e}}))
            .collect();
        self.affinity(
            "nodeAffinity",
            json!({"preferredDuringSchedulingIgnoredDuringExecution": terms}),
        )
    }
    pub fn affinity(mut self, kind: &str, v: Value) -> Self {
        let cur = &mut self.0["spec"]["affinity"][kind];
        if cur.is_null() {
            *cur = v;
        } else if let (Some(c), Some(n)) = (cur.as_object_mut(), v.as_object()) {
            for (k, v) in n {
                c.insert(k.clone(), v.clone());
            }
        }
        self
    }
    pub fn tolerate(mut self, t: Value) -> Self {
        let list = &mut self.0["spec"]["tolerations"];
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(t);
        self
    }
    pub fn spread(mut self, key: &str, skew: i32, when: &str, match_labels: Value) -> Self {
        let list = &mut self.0["spec"]["topologySpreadConstraints"];
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(json!({
            "maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": match_labels}
        }));
        self
    }
    /// Required pod (anti-)affinity term: kind is podAffinity or podAntiAffinity.
    pub fn pod_term(self, kind: &str, key: &str, match_labels: Value) -> Self {
        let mut this = self;
        let term = json!({"topologyKey": key, "labelSelector": {"matchLabels": match_labels}});
        let list =
            &mut this.0["spec"]["affinity"][kind]["requiredDuringSchedulingIgnoredDuringExecution"];
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(term);
        this
    }
    /// Preferred pod (anti-)affinity term.
    pub fn pref_pod_term(self, kind: &str, weight: i32, key: &str, match_labels: Value) -> Self {
        let mut this = self;
        let term = json!({"weight": weight, "podAffinityTerm": {"topologyKey": key, "labelSelector": {"matchLabels": match_labels}}});
        let list = &mut this.0["spec"]["affinity"][kind]
            ["preferredDuringSchedulingIgnoredDuringExecution"];
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(term);
        this
    }
    pub fn host_port(mut self, port: i32) -> Self {
        self.0["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": port, "hostPort": port}]);
        self
    }
    pub fn build(&self) -> Pod {
        serde_json::from_value(self.0.clone()).unwrap()
    }
    /// `n` copies named `<name>-<i>`.
    pub fn times(&self, n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                let mut v = self.0.clone();
                let name = v["metadata"]["name"].as_str().unwrap().to_string();
                v["metadata"]["name"] = json!(format!("{name}-{i}"));
                serde_json::from_value(v).unwrap()
            })
            .collect()
    }
}

/// A node with labels, allocatable and taints.
pub fn node(name: &str, labels: Value, allocatable: Value, taints: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }))
    .unwrap()
}

/// An initialized node that provisioner `default` launched (the only kind the packer fills).
pub fn owned_node(name: &str, labels: Value, allocatable: Value, taints: Value) -> Node {
    let mut labels = labels;
    labels["karpenter.sh/provisioner-name"] = json!("default");
    labels["karpenter.sh/initialized"] = json!("true");
    node(name, labels, allocatable, taints)
}

/// A daemonset with the given pod spec.
pub fn daemonset(name: &str, spec: Value) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"selector": {}, "template": {"spec": spec}},
    }))
    .unwrap()
}

/// A round's input over the fake catalog.
pub struct Env {
    pub input: SchedulerInput,
}

pub fn env(provs: Vec<Provisioner>) -> Env {
    Env {
        input: SchedulerInput {
            provisioners: provs,
            instance_types: fake_types(),
            options: SchedulerOptions::default(),
            ..Default::default()
        },
    }
}

impl Env {
    pub fn existing(mut self, n: Node, pods: Vec<Pod>) -> Self {
        self.input.existing_nodes.push(ExistingNode {
            node: n,
            pods: pods.into_iter().map(std::sync::Arc::new).collect(),
        });
        self
    }
    pub fn ds(mut self, d: DaemonSet) -> Self {
        self.input.daemonsets.push(d);
        self
    }
    pub fn types(mut self, t: Vec<InstanceType>) -> Self {
        self.input.instance_types = t;
        self
    }
    pub fn solve(&self, pods: &[Pod]) -> Decision {
        Scheduler::new(self.input.clone()).solve(pods).unwrap()
    }
}

/// Solve with the default provisioner over the fake catalog.
pub fn solve(pods: &[Pod]) -> Decision {
    env(vec![default_prov()]).solve(pods)
}

/// The only new node holding a pod, panicking with the decision when there is none.
pub fn node_of<'a>(d: &'a Decision, pod: &str) -> &'a karpenter::scheduling::NewNode {
    let key = format!("default/{pod}");
    d.node_of(&key).unwrap_or_else(|| {
        panic!(
            "{key} not on a new node: {}",
            serde_json::to_string_pretty(d).unwrap()
        )
    })
}

/// The reason given for a pod and provisioner.
pub fn reason(d: &Decision, pod: &str, prov: &str) -> String {
    let key = format!("default/{pod}");
    d.unschedulable
        .iter()
        .find(|u| u.pod == key)
        .and_then(|u| u.reasons.get(prov).cloned())
        .unwrap_or_else(|| {
            panic!(
                "{key} not unschedulable: {}",
                serde_json::to_string_pretty(d).unwrap()
            )
        })
}

/// Whether the pod was scheduled anywhere.
pub fn scheduled(d: &Decision, pod: &str) -> bool {
    d.is_scheduled(&format!("default/{pod}"))
}
