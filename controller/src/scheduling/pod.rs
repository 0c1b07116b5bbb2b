//! The scheduling form of a pod: requests, node requirements, tolerations, host ports and
//! topology terms, converted once from the Kubernetes object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::labels;
use crate::api::provisioner::Taint;

use super::requirements::{RequirementError, Requirements, ValueSet};
use super::resources::{pod_requests, ResourceError, ResourceList};

/// Why a pod could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// A resource quantity is invalid.
    #[error("pod {pod}: {source}")]
    Resource {
        /// `namespace/name`.
        pod: String,
        /// The cause.
        #[source]
        source: ResourceError,
    },
    /// A node selector requirement or label selector is invalid.
    #[error("pod {pod}: {source}")]
    Requirement {
        /// `namespace/name`.
        pod: String,
        /// The cause.
        #[source]
        source: RequirementError,
    },
}

/// What a topology term does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TermKind {
    /// A topology spread constraint with its max skew.
    Spread {
        /// maxSkew.
        max_skew: u32,
    },
    /// Pod affinity: land where matching pods are.
    Affinity,
    /// Pod anti-affinity: land where no matching pod is.
    AntiAffinity,
}

/// A topology term: spread, affinity or anti-affinity over a topology key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopologyTerm {
    /// What the term does.
    pub kind: TermKind,
    /// The topology key (normalised).
    pub key: String,
    /// The label selector, as requirements over pod labels.
    pub selector: Requirements,
    /// Namespaces whose pods count; `None` for all namespaces.
    pub namespaces: Option<BTreeSet<String>>,
    /// Spread only: `minDomains` (below it, the global minimum is taken as 0).
    pub min_domains: Option<u32>,
    /// Spread only: `nodeAffinityPolicy: Ignore` (default `Honor`: existing nodes the pod's
    /// node selector and required affinity exclude are not domains).
    pub ignore_node_affinity: bool,
    /// Spread only: `nodeTaintsPolicy: Honor` (default `Ignore`: a tainted node's domain counts).
    pub honor_node_taints: bool,
    /// A non-empty `namespaceSelector` over namespace labels; the engine resolves it into
    /// `namespaces` each round ([`TopologyTerm::resolve_namespaces`]).
    pub namespace_selector: Option<Requirements>,
    /// Spread only, over keys other than the hostname: the nodes whose pods count, when the
    /// policies narrow them (kube-scheduler counts matching pods only on nodes that pass the
    /// pod's node affinity under `Honor`, and its tolerations under `nodeTaintsPolicy: Honor`).
    pub counted_nodes: Option<NodeInclusion>,
}

/// The nodes a spread term counts matching pods on, from the pod's own spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodeInclusion {
    /// The pod's node selector and required node-affinity terms (ORed), when honoured.
    pub affinity: Option<(Requirements, Vec<Requirements>)>,
    /// The pod's tolerations as (key, operator, value, effect), when taints are honoured.
    pub tolerations: Option<Vec<[String; 4]>>,
}

// === impl NodeInclusion ===

impl NodeInclusion {
    /// Whether a node with these labels and taints is counted.
    pub fn includes(&self, node_labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
        if let Some((selector, terms)) = &self.affinity {
            if !selector.matches_labels(node_labels)
                || (!terms.is_empty() && !terms.iter().any(|t| t.matches_labels(node_labels)))
            {
                return false;
            }
        }
        if let Some(tols) = &self.tolerations {
            // kube-scheduler honours the taints that keep pods off: NoSchedule and NoExecute.
            let kept_off = |t: &Taint| {
                t.effect != "PreferNoSchedule"
                    && !tols
                        .iter()
                        .any(|[k, op, v, eff]| toleration_matches(k, op, v, eff, t))
            };
            if taints.iter().any(kept_off) {
                return false;
            }
        }
        true
    }
}

/// A pod converted for scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Effective requests (milli-units), including one `pods`.
    pub requests: ResourceList,
    /// `spec.nodeSelector` as requirements.
    pub node_selector: Requirements,
    /// Required node affinity terms (ORed).
    pub required_terms: Vec<Requirements>,
    /// Preferred node affinity terms, heaviest first.
    pub preferred_terms: Vec<(i32, Requirements)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Host ports as (protocol, hostIP, port).
    pub host_ports: Vec<(String, String, i32)>,
    /// Required topology terms: DoNotSchedule spreads, required (anti-)affinity.
    pub required_topology: Vec<TopologyTerm>,
    /// ScheduleAnyway spreads (relaxable).
    pub soft_spreads: Vec<TopologyTerm>,
    /// Preferred pod affinity terms, heaviest first.
    pub preferred_affinity: Vec<(i32, TopologyTerm)>,
    /// Preferred pod anti-affinity terms, heaviest first.
    pub preferred_anti_affinity: Vec<(i32, TopologyTerm)>,
}

/// Label selector as requirements over pod labels.
pub fn selector_requirements(sel: &LabelSelector) -> Result<Requirements, RequirementError> {
    let mut r = Requirements::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        r.add(k, ValueSet::is_in([v.clone()]));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        r.add(
            &e.key,
            ValueSet::from_operator(&e.key, &e.operator, &values)?,
        );
    }
    Ok(r)
}

fn pod_term(
    kind: TermKind,
    t: &PodAffinityTerm,
    namespace: &str,
) -> Result<TopologyTerm, RequirementError> {
    let selector = match &t.label_selector {
        Some(s) => selector_requirements(s)?,
        // A nil selector matches no pods; model it with an impossible requirement.
        None => {
            let mut r = Requirements::new();
            r.add("karpenter.rs/no-match", ValueSet::does_not_exist());
            r.add("karpenter.rs/no-match", ValueSet::exists());
            r
        }
    };
    // kube-scheduler: the union of `namespaces` and the namespaces `namespaceSelector` selects;
    // an empty selector (`{}`) selects every namespace; neither means the pod's own.
    let list: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
    let (namespaces, namespace_selector) = match &t.namespace_selector {
        Some(ns)
            if ns.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && ns.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
        {
            (None, None)
        }
        Some(ns) => (Some(list), Some(selector_requirements(ns)?)),
        None if list.is_empty() => (Some(BTreeSet::from([namespace.to_string()])), None),
        None => (Some(list), None),
    };
    Ok(TopologyTerm {
        kind,
        key: labels::normalize(&t.topology_key).to_string(),
        selector,
        namespaces,
        min_domains: None,
        ignore_node_affinity: false,
        honor_node_taints: false,
        namespace_selector,
        counted_nodes: None,
    })
}

// === impl TopologyTerm ===

impl TopologyTerm {
    /// Turns a `namespaceSelector` into the namespaces it selects, given every namespace's
    /// labels. A namespace missing from `namespace_labels` is taken to carry only
    /// `kubernetes.io/metadata.name`, which the API server sets on every namespace.
    pub fn resolve_namespaces<'a>(
        &mut self,
        namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
        known: impl IntoIterator<Item = &'a str>,
    ) {
        let Some(sel) = self.namespace_selector.take() else {
            return;
        };
        let set = self.namespaces.get_or_insert_with(BTreeSet::new);
        for (ns, l) in namespace_labels {
            if sel.matches_labels(l) {
                set.insert(ns.clone());
            }
        }
        for ns in known {
            if !namespace_labels.contains_key(ns)
                && sel.matches_labels(&BTreeMap::from([(
                    labels::NAMESPACE_NAME.to_string(),
                    ns.to_string(),
                )]))
            {
                set.insert(ns.to_string());
            }
        }
    }

    /// Whether a pod with these labels in this namespace is selected.
    pub fn selects(&self, namespace: &str, pod_labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.contains(namespace))
            && self.selector.matches_labels(pod_labels)
    }

    /// `zone spread`, `hostname anti-affinity`, ...
    pub fn describe(&self) -> String {
        let key = friendly_key(&self.key);
        match self.kind {
            TermKind::Spread { max_skew } => format!("{key} spread maxSkew {max_skew}"),
            TermKind::Affinity => format!("{key} pod affinity"),
            TermKind::AntiAffinity => format!("{key} pod anti-affinity"),
        }
    }
}

/// A short user-facing name for a label key: `zone`, `hostname`, `capacity type`, ...
pub fn friendly_key(key: &str) -> &str {
    match key {
        labels::ZONE => "zone",
        labels::HOSTNAME => "hostname",
        labels::CAPACITY_TYPE => "capacity type",
        labels::ARCH => "architecture",
        labels::OS => "operating system",
        labels::INSTANCE_TYPE => "instance type",
        k => k,
    }
}

// === impl PodInfo ===

impl PodInfo {
    /// Converts a Kubernetes pod.
    pub fn from_pod(pod: &Pod) -> Result<Self, PodError> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let req_err = |source| PodError::Requirement {
            pod: key.clone(),
            source,
        };
        let requests = pod_requests(pod).map_err(|source| PodError::Resource {
            pod: key.clone(),
            source,
        })?;
        let mut info = PodInfo {
            key: key.clone(),
            namespace: namespace.clone(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            requests,
            node_selector: Requirements::new(),
            required_terms: Vec::new(),
            preferred_terms: Vec::new(),
            tolerations: Vec::new(),
            host_ports: Vec::new(),
            required_topology: Vec::new(),
            soft_spreads: Vec::new(),
            preferred_affinity: Vec::new(),
            preferred_anti_affinity: Vec::new(),
        };
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(info);
        };
        for (k, v) in spec.node_selector.iter().flatten() {
            info.node_selector
                .add(labels::normalize(k), ValueSet::is_in([v.clone()]));
        }
        info.tolerations = spec.tolerations.clone().unwrap_or_default();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    info.host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    ));
                }
            }
        }
        if let Some(aff) = spec.affinity.as_ref() {
            if let Some(na) = aff.node_affinity.as_ref() {
                if let Some(req) = na
                    .required_during_scheduling_ignored_during_execution
                    .as_ref()
                {
                    for t in &req.node_selector_terms {
                        info.required_terms.push(
                            Requirements::from_node_selector(
                                t.match_expressions.as_deref().unwrap_or_default(),
                            )
                            .map_err(req_err)?,
                        );
                    }
                }
                for p in na
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    let r = Requirements::from_node_selector(
                        p.preference
                            .match_expressions
                            .as_deref()
                            .unwrap_or_default(),
                    )
                    .map_err(req_err)?;
                    info.preferred_terms.push((p.weight, r));
                }
                info.preferred_terms.sort_by_key(|(w, _)| -w);
            }
            if let Some(pa) = aff.pod_affinity.as_ref() {
                for t in pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.required_topology
                        .push(pod_term(TermKind::Affinity, t, &namespace).map_err(req_err)?);
                }
                for t in pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    let term = pod_term(TermKind::Affinity, &t.pod_affinity_term, &namespace)
                        .map_err(req_err)?;
                    info.preferred_affinity.push((t.weight, term));
                }
                info.preferred_affinity.sort_by_key(|(w, _)| -w);
            }
            if let Some(pa) = aff.pod_anti_affinity.as_ref() {
                for t in pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.required_topology
                        .push(pod_term(TermKind::AntiAffinity, t, &namespace).map_err(req_err)?);
                }
                for t in pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    let term = pod_term(TermKind::AntiAffinity, &t.pod_affinity_term, &namespace)
                        .map_err(req_err)?;
                    info.preferred_anti_affinity.push((t.weight, term));
                }
                info.preferred_anti_affinity.sort_by_key(|(w, _)| -w);
            }
        }
        for tsc in spec.topology_spread_constraints.iter().flatten() {
            let mut selector = match &tsc.label_selector {
                Some(s) => selector_requirements(s).map_err(req_err)?,
                None => Requirements::new(),
            };
            // matchLabelKeys: the pod's own values for those keys join the selector.
            for k in tsc.match_label_keys.iter().flatten() {
                if let Some(v) = info.labels.get(k) {
                    selector.add(k, ValueSet::is_in([v.clone()]));
                }
            }
            let term = TopologyTerm {
                kind: TermKind::Spread {
                    max_skew: tsc.max_skew.max(1) as u32,
                },
                key: labels::normalize(&tsc.topology_key).to_string(),
                selector,
                namespaces: Some(BTreeSet::from([namespace.clone()])),
                min_domains: tsc
                    .min_domains
                    .filter(|_| tsc.when_unsatisfiable != "ScheduleAnyway")
                    .map(|m| m.max(1) as u32),
                ignore_node_affinity: tsc.node_affinity_policy.as_deref() == Some("Ignore"),
                honor_node_taints: tsc.node_taints_policy.as_deref() == Some("Honor"),
                namespace_selector: None,
                counted_nodes: None,
            };
            let term = TopologyTerm {
                counted_nodes: info.counted_nodes(&term),
                ..term
            };
            if tsc.when_unsatisfiable == "ScheduleAnyway" {
                info.soft_spreads.push(term);
            } else {
                info.required_topology.push(term);
            }
        }
        Ok(info)
    }

    /// Whether any of the pod's terms has a `namespaceSelector` left to resolve.
    pub fn has_namespace_selector(&self) -> bool {
        self.required_topology
            .iter()
            .chain(self.preferred_affinity.iter().map(|(_, t)| t))
            .chain(self.preferred_anti_affinity.iter().map(|(_, t)| t))
            .any(|t| t.namespace_selector.is_some())
    }

    /// Resolves every `namespaceSelector` of the pod's terms ([`TopologyTerm::resolve_namespaces`]).
    pub fn resolve_namespaces(
        &mut self,
        namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
        known: &BTreeSet<String>,
    ) {
        let terms = self
            .required_topology
            .iter_mut()
            .chain(self.soft_spreads.iter_mut())
            .chain(self.preferred_affinity.iter_mut().map(|(_, t)| t))
            .chain(self.preferred_anti_affinity.iter_mut().map(|(_, t)| t));
        for t in terms {
            t.resolve_namespaces(namespace_labels, known.iter().map(String::as_str));
        }
    }

    /// The nodes a spread term of this pod counts pods on, when its policies narrow them.
    fn counted_nodes(&self, term: &TopologyTerm) -> Option<NodeInclusion> {
        if term.key == labels::HOSTNAME {
            // Every fresh node is a hostname domain with count 0: the filter changes nothing.
            return None;
        }
        let affinity = (!term.ignore_node_affinity
            && (!self.node_selector.is_empty() || !self.required_terms.is_empty()))
        .then(|| (self.node_selector.clone(), self.required_terms.clone()));
        let tolerations = term.honor_node_taints.then(|| {
            self.tolerations
                .iter()
                .map(|t| {
                    [
                        t.key.clone().unwrap_or_default(),
                        t.operator.clone().unwrap_or_else(|| "Equal".into()),
                        t.value.clone().unwrap_or_default(),
                        t.effect.clone().unwrap_or_default(),
                    ]
                })
                .collect()
        });
        (affinity.is_some() || tolerations.is_some()).then_some(NodeInclusion {
            affinity,
            tolerations,
        })
    }

    /// Whether the pod tolerates a taint.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        tolerates(&self.tolerations, taint)
    }

    /// Whether the pod's host ports conflict with ports already used.
    pub fn host_ports_conflict(&self, used: &[(String, String, i32)]) -> bool {
        self.host_ports.iter().any(|(proto, ip, port)| {
            used.iter().any(|(p2, ip2, port2)| {
                port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
            })
        })
    }
}

/// Kubernetes toleration matching.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        toleration_matches(
            t.key.as_deref().unwrap_or(""),
            t.operator.as_deref().unwrap_or("Equal"),
            t.value.as_deref().unwrap_or(""),
            t.effect.as_deref().unwrap_or(""),
            taint,
        )
    })
}

/// One toleration (key, operator, value, effect; empty for unset) against a taint.
fn toleration_matches(key: &str, op: &str, value: &str, effect: &str, taint: &Taint) -> bool {
    if !(effect.is_empty() || effect == taint.effect) {
        return false;
    }
    if key.is_empty() {
        return op == "Exists";
    }
    key == taint.key && (op == "Exists" || value == taint.value.as_deref().unwrap_or(""))
}
