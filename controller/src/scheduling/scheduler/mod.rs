//! The packer: first-fit-decreasing over existing nodes, this round's new nodes and a new node
//! per provisioner (by weight), with topology, relaxation of preferences, provisioner limits,
//! and a price-improvement pass.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::api::labels;
use crate::api::provisioner::Taint;
use crate::api::Provisioner;

use super::decision::{Decision, ExistingNodePlacement, NewNode, Relaxation, Unschedulable};
use super::instance_type::{optional_label_keys, union_sorted, InstanceType};
use super::pod::{friendly_key, PodError, PodInfo, TermKind, TopologyTerm};
use super::requirements::{RequirementError, Requirements, ValueSet};
use super::resources::{self, ResourceError, ResourceList};

mod context;
mod explain;
mod improve;
mod packing;

/// Errors that stop a scheduling round before packing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulingError {
    /// A pod could not be converted.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// A provisioner's requirements are invalid.
    #[error("provisioner {provisioner}: {source}")]
    Provisioner {
        /// Provisioner name.
        provisioner: String,
        /// The cause.
        #[source]
        source: RequirementError,
    },
    /// A node's resources are invalid.
    #[error("node {node}: {source}")]
    Node {
        /// Node name.
        node: String,
        /// The cause.
        #[source]
        source: ResourceError,
    },
}

/// Tuning knobs of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerOptions {
    /// Most instance-type options passed on per new node.
    pub max_instance_type_options: usize,
    /// Run the price-improvement pass after first-fit-decreasing.
    pub improve: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_instance_type_options: 60,
            improve: true,
        }
    }
}

/// A node that already exists (or is in flight) with the pods bound to it.
#[derive(Debug, Clone, Default)]
pub struct ExistingNode {
    /// The Node object (name, labels, taints, allocatable).
    pub node: Node,
    /// Pods already bound to it (shared with the cluster index).
    pub pods: Vec<Arc<Pod>>,
}

/// Everything a round needs besides the pending pods.
#[derive(Debug, Clone, Default)]
pub struct SchedulerInput {
    /// Provisioners, already defaulted.
    pub provisioners: Vec<Provisioner>,
    /// Instance types available to every provisioner.
    pub instance_types: Vec<InstanceType>,
    /// Per-provisioner instance types replacing the shared list for that provisioner.
    pub instance_types_by_provisioner: BTreeMap<String, Arc<[InstanceType]>>,
    /// Existing nodes with their pods.
    pub existing_nodes: Vec<ExistingNode>,
    /// DaemonSets whose pods land on new nodes.
    pub daemonsets: Vec<DaemonSet>,
    /// Namespace labels by namespace name, for pod (anti-)affinity `namespaceSelector`s. A
    /// namespace left out is taken to carry only `kubernetes.io/metadata.name`.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Tuning.
    pub options: SchedulerOptions,
}

/// The packing engine for one round.
///
/// [`Scheduler::new`] does the work that depends only on the provisioners and the instance
/// types (each provisioner's requirements and the types compatible with them, the label keys
/// some types lack, the resource names the types define), as Karpenter's `NewScheduler` does;
/// [`Scheduler::solve`] does the rest, for the pods it is given.
#[derive(Debug, Clone)]
pub struct Scheduler {
    input: SchedulerInput,
    prepared: Arc<Prepared>,
}

/// What [`Scheduler::new`] computes from the provisioners and instance types alone. A later
/// round hands it to [`Scheduler::with_prepared`], which reuses it while those inputs are the
/// same: the provisioners' requirements, labels and kubelet settings equal, and each
/// per-provisioner type list the very same shared list.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What it was computed from.
    key: PreparedKey,
    /// Label keys that some of the instance types define, except architecture and type name:
    /// a type lacking one has `DoesNotExist` for it.
    absent_keys: Vec<String>,
    /// The capacity resource names of every instance type.
    type_resources: BTreeSet<String>,
    /// Per provisioner (input order): its requirements and the positions, in its instance
    /// type list, of the types compatible with them; or why its requirements are invalid.
    provs: Vec<Result<PreparedProv, SchedulingError>>,
}

/// The inputs [`Prepared`] depends on. The type lists are compared by identity: a cloud
/// provider that keeps its catalog hands out the same list while it does not change, and the
/// key holds a reference, so an equal address is the same list.
#[derive(Debug, Clone)]
struct PreparedKey {
    /// Per provisioner (input order): name, requirements, labels, kubelet settings.
    provisioners: Vec<ProvisionerKey>,
    /// The per-provisioner lists.
    types: BTreeMap<String, Arc<[InstanceType]>>,
    /// Whether the shared list was empty: a shared list is not compared, so a `Prepared`
    /// made with one is never reused.
    no_shared_types: bool,
}

/// The parts of a provisioner [`Prepared`] reads.
#[derive(Debug, Clone)]
struct ProvisionerKey {
    name: Option<String>,
    requirements: Vec<crate::api::provisioner::Requirement>,
    labels: BTreeMap<String, String>,
    kubelet: Option<crate::api::provisioner::KubeletConfiguration>,
}

#[derive(Debug, Clone)]
struct PreparedProv {
    reqs: Requirements,
    /// Positions in the provisioner's list (its own, or the shared one).
    compatible: Vec<usize>,
    /// Label keys the compatible types define.
    type_label_keys: BTreeSet<String>,
    /// Per compatible type (as `compatible`): its allocatable and capacity under the
    /// provisioner's kubelet settings.
    sizes: Vec<(ResourceList, ResourceList)>,
}

// === impl Scheduler ===

impl Scheduler {
    /// A scheduler over the given inputs; prepares what does not depend on the pods.
    pub fn new(input: SchedulerInput) -> Self {
        let prepared = Arc::new(Prepared::new(&input));
        Scheduler { input, prepared }
    }

    /// [`Scheduler::new`], reusing an earlier round's [`Prepared`] when it was made from the
    /// same provisioners and type lists (see [`Prepared`]); otherwise prepares afresh.
    pub fn with_prepared(input: SchedulerInput, prepared: Option<Arc<Prepared>>) -> Self {
        match prepared {
            Some(prepared) if prepared.fits(&input) => Scheduler { input, prepared },
            _ => Self::new(input),
        }
    }

    /// What this scheduler prepared (or reused), for the next round.
    pub fn prepared(&self) -> Arc<Prepared> {
        self.prepared.clone()
    }

    /// Packs the pending pods and returns the decision.
    pub fn solve<P: std::borrow::Borrow<Pod>>(
        &self,
        pods: &[P],
    ) -> Result<Decision, SchedulingError> {
        let mut infos = Vec::with_capacity(pods.len());
        for p in pods {
            infos.push(PodInfo::from_pod(p.borrow())?);
        }
        // The namespaces any pod is in: a namespaceSelector can only select pods among them.
        let known: BTreeSet<String> = infos
            .iter()
            .map(|i| i.namespace.clone())
            .chain(
                self.input
                    .existing_nodes
                    .iter()
                    .flat_map(|e| &e.pods)
                    .map(|p| {
                        p.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into())
                    }),
            )
            .collect();
        for info in infos.iter_mut().filter(|i| i.has_namespace_selector()) {
            info.resolve_namespaces(&self.input.namespaces, &known);
        }
        let ctx = Ctx::build(&self.input, &self.prepared, &infos, &known)?;
        let mut state = State::new(&ctx)?;
        state.run(&ctx, &infos);
        // A node planned late (for other pods) can become a spread domain that pods placed
        // earlier did not see; kube-scheduler sees every node at once. Pack once more with
        // the first pass's nodes known as domains from the start.
        if let Some(future) = state.future_domains(&ctx) {
            state = State::new(&ctx)?;
            state.future = future;
            state.run(&ctx, &infos);
        }
        if ctx.options.improve {
            state.improve(&ctx, &infos);
        }
        Ok(state.decision(&ctx, &infos))
    }
}

/// A sorted list of topology domains, shared.
type Domains = Rc<Vec<String>>;

/// Provisioner indices, shared.
type Provs = Rc<Vec<usize>>;

/// Which of a provisioner's instance types (by position) a pod class is compatible with.
type Compat = Rc<Vec<bool>>;

/// Dense resource vector (milli-units), indexed by [`Ctx::res_index`].
type Res = Vec<i64>;

struct Prov {
    name: String,
    reqs: Requirements,
    taints: Vec<Taint>,
    /// Global instance-type indices.
    types: Vec<usize>,
    alloc: Vec<Res>,
    /// Allocatable before daemonset overhead, for messages.
    alloc_raw: Vec<Res>,
    cap: Vec<Res>,
    /// Price order key per type (cheapest allowed offering), f64::MAX when none.
    limits: Option<Res>,
    existing_used: Res,
    /// Why the provisioner launches nothing this round, if it does not.
    blocked: Option<Blocked>,
    has_prefer_no_schedule: bool,
    /// Label keys defined by the provisioner's instance types.
    type_label_keys: BTreeSet<String>,
}

/// Why a provisioner launches no new node this round.
#[derive(Debug, Clone, PartialEq)]
enum Blocked {
    /// `metadata.deletionTimestamp` is set.
    Deleting,
    /// `status.resources` already exceeds `spec.limits` (Karpenter's rule: launch nothing).
    OverLimit {
        resource: String,
        used: i64,
        limit: i64,
    },
}

struct Group {
    term: TopologyTerm,
    /// Counts inverse owners instead of selected pods.
    inverse: bool,
    counts: HashMap<String, u32>,
    total: u32,
}

struct Class {
    requests: Res,
    /// The resources (indices) the class requests a non-zero amount of.
    requested: Vec<usize>,
    /// Groups (non-inverse) that select pods of this class.
    selected_by: Vec<usize>,
    /// Inverse groups whose selector selects pods of this class.
    inverse_selected_by: Vec<usize>,
    /// Inverse groups this class owns (its required anti-affinity terms).
    owns_inverse: Vec<usize>,
    /// Group of each topology term of the pod, keyed by term.
    term_groups: HashMap<TopologyTerm, usize>,
    /// Whether moving the pod could change topology counts.
    touches_topology: bool,
    /// Equivalence id: classes with the same id behave the same on every node.
    cache: usize,
}

struct Ctx<'a> {
    options: &'a SchedulerOptions,
    res_names: Vec<String>,
    res_index: HashMap<String, usize>,
    /// Resources other than cpu, memory, pods and ephemeral storage that some pod requests
    /// (GPUs and other accelerators).
    extended: Vec<usize>,
    /// Instance types; in a provisioner's list, a type lacking a label other types define has
    /// `DoesNotExist` for it (the others are as given).
    types: Vec<Cow<'a, InstanceType>>,
    provs: Vec<Prov>,
    /// Provisioner indices by weight desc, then name.
    order: Vec<usize>,
    classes: Vec<Class>,
    pod_class: Vec<usize>,
    universe: HashMap<String, BTreeSet<String>>,
    groups_init: Vec<Group>,
    /// Existing nodes that may receive pods (owned, not being deleted, with known capacity).
    existing_states: Vec<NodeState>,
    /// Labels (with hostname) and taints of every existing node, for topology domains.
    node_domains: Vec<(BTreeMap<String, String>, Vec<Taint>)>,
    /// What the round assumed or left out, in words (copied into the Decision's notes).
    notes: Vec<String>,
}

#[derive(Clone)]
struct NodeState {
    /// Existing node index, or None for a new node.
    existing: Option<usize>,
    prov: usize,
    name: String,
    reqs: Requirements,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    /// Positions into the provisioner's type list (new nodes).
    options: Vec<usize>,
    used: Res,
    /// Allocatable of existing nodes.
    avail: Res,
    pods: Vec<usize>,
    ports: Vec<(String, String, i32)>,
    /// Max capacity over options, counted against limits.
    limit_max: Res,
    /// A lower bound of the options' allocatable, per resource. Empty until a pod is added;
    /// then every option was checked to hold `used` in every resource, so a later pod needs
    /// checking only in the resources it requests, and a pod within the floor fits every
    /// option without a scan.
    floor: Res,
}

/// Why a pod did not fit a new node of a provisioner.
#[derive(Debug, Clone, PartialEq)]
enum Fail {
    Taint(Taint),
    Requirement(String),
    NoInstanceType,
    Resources,
    Limits,
    HostPorts,
    Topology(usize),
    /// No option is offered in the topology domain the node was pinned to.
    Pinned,
    /// The provisioner launches nothing this round.
    Blocked,
}

/// How a node changes when a pod is added.
struct Update {
    reqs: Option<Requirements>,
    options: Vec<usize>,
    limit_max: Res,
    /// See [`NodeState::floor`].
    floor: Res,
}

/// Applies an update for a pod (without recording the pod itself).
fn apply(node: &mut NodeState, u: Update, req: &[i64], info: &PodInfo) {
    if let Some(r) = u.reqs {
        node.reqs = r;
    }
    node.options = u.options;
    node.floor = u.floor;
    node.limit_max = u.limit_max;
    for (x, r) in node.used.iter_mut().zip(req) {
        *x += r;
    }
    node.ports.extend(info.host_ports.iter().cloned());
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Relax {
    req_term: usize,
    pref_aff: usize,
    pref_anti: usize,
    pref_node: usize,
    soft_spread: usize,
    prefer_no_schedule: bool,
}

struct Effective {
    reqs: Requirements,
    terms: Vec<usize>,
    tolerate_prefer: bool,
}

struct State {
    nodes: Vec<NodeState>,
    groups: Vec<Group>,
    /// In-flight usage counted against limits, per provisioner.
    limit_used: Vec<Res>,
    /// Nodes known to reject a (class, relaxation level) for good, as bitsets.
    dead: HashMap<(usize, usize), Vec<u64>>,
    /// Per (class shape, relaxation level): which of each provisioner's types are compatible.
    compat: HashMap<(usize, usize), Vec<Option<Compat>>>,
    /// Per (provisioner, class shape): compatible types at no relaxation, for the improvement
    /// pass where the placement pass made no entry.
    improve_compat: RefCell<HashMap<(usize, usize), Compat>>,
    /// Per provisioner: its option prices, once priced (see [`State::price_table`]).
    price_tables: RefCell<Vec<Option<Rc<improve::PriceTable>>>>,
    unschedulable: Vec<(usize, Vec<(usize, Fail)>)>,
    relaxed: Vec<(usize, Vec<String>)>,
    new_count: usize,
    /// Spread domains per (pod shape, term, relaxation) hash.
    domain_cache: RefCell<HashMap<u64, Rc<Vec<String>>>>,
    /// The domains each provisioner's nodes could land in, per (provisioner, key).
    prov_domain_cache: RefCell<HashMap<(usize, String), Domains>>,
    /// Per group: the possible domains of each new node an earlier pass planned (see
    /// [`State::future_domains`]), counted as domains from the start of this pass.
    future: Vec<Vec<Vec<String>>>,
    /// Per group: every domain a pod with the term saw as a domain this pass.
    seen: RefCell<HashMap<usize, BTreeSet<String>>>,
    /// Per (cached domain list, group): the provisioners whose nodes may land outside it.
    foreign_cache: RefCell<HashMap<(usize, usize), Provs>>,
}

fn dense(list: &ResourceList, index: &HashMap<String, usize>, n: usize) -> Res {
    let mut v = vec![0; n];
    for (k, q) in list {
        if let Some(i) = index.get(k) {
            v[*i] = *q;
        }
    }
    v
}

/// kube-scheduler's fit on an existing node: only resources the pod requests are checked.
fn fits(used: &[i64], req: &[i64], alloc: &[i64]) -> bool {
    used.iter()
        .zip(req)
        .zip(alloc)
        .all(|((u, r), a)| *r == 0 || u + r <= *a)
}

/// [`fits_all`] for a node whose `used` already fits `alloc` in every resource: only the
/// resources the pod requests (`requested`) can change the answer.
fn fits_requested(used: &[i64], req: &[i64], alloc: &[i64], requested: &[usize]) -> bool {
    requested.iter().all(|&r| used[r] + req[r] <= alloc[r])
}

/// Fit on a new node whose allocatable is already net of its DaemonSets: every resource is
/// checked, so a type on which the DaemonSets alone do not fit (negative allocatable) takes
/// no pod, whatever the pod requests.
fn fits_all(used: &[i64], req: &[i64], alloc: &[i64]) -> bool {
    used.iter()
        .zip(req)
        .zip(alloc)
        .all(|((u, r), a)| u + r <= *a)
}

fn daemonset_pod(ds: &DaemonSet) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    }
}

fn existing_name(e: &ExistingNode, i: usize) -> String {
    e.node
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{i}"))
}

/// Hash of a pod's class: equal classes (see [`same_class`]) hash equal.
fn class_hash(info: &PodInfo) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    info.namespace.hash(&mut h);
    info.labels.hash(&mut h);
    shape_hash(info, &mut h);
    h.finish()
}

/// Feeds what [`same_shape`] compares into a hasher (tolerations by their strings).
fn shape_hash(info: &PodInfo, h: &mut impl Hasher) {
    info.requests.hash(h);
    info.node_selector.hash(h);
    info.required_terms.hash(h);
    info.preferred_terms.hash(h);
    for t in &info.tolerations {
        (
            &t.key,
            &t.operator,
            &t.value,
            &t.effect,
            t.toleration_seconds,
        )
            .hash(h);
    }
    info.host_ports.hash(h);
    info.required_topology.hash(h);
    info.soft_spreads.hash(h);
    info.preferred_affinity.hash(h);
    info.preferred_anti_affinity.hash(h);
}

/// Pods of one class have equal scheduling-relevant content: namespace, labels and shape.
fn same_class(a: &PodInfo, b: &PodInfo) -> bool {
    a.namespace == b.namespace && a.labels == b.labels && same_shape(a, b)
}

/// Everything but namespace and labels: pods with equal shapes and equal topology selection
/// behave the same on every node.
fn same_shape(a: &PodInfo, b: &PodInfo) -> bool {
    a.requests == b.requests
        && a.node_selector == b.node_selector
        && a.required_terms == b.required_terms
        && a.preferred_terms == b.preferred_terms
        && a.tolerations == b.tolerations
        && a.host_ports == b.host_ports
        && a.required_topology == b.required_topology
        && a.soft_spreads == b.soft_spreads
        && a.preferred_affinity == b.preferred_affinity
        && a.preferred_anti_affinity == b.preferred_anti_affinity
}

impl Group {
    fn count(&self, d: &str) -> u32 {
        self.counts.get(d).copied().unwrap_or(0)
    }
}

fn check_taints(taints: &[Taint], info: &PodInfo, tolerate_prefer: bool) -> Result<(), Fail> {
    for t in taints {
        if t.effect == "PreferNoSchedule" && tolerate_prefer {
            continue;
        }
        if !info.tolerates(t) {
            return Err(Fail::Taint(t.clone()));
        }
    }
    Ok(())
}

/// Which of a provisioner's types are compatible with the pod's requirements.
fn class_compat(ctx: &Ctx<'_>, pi: usize, reqs: &Requirements) -> Vec<bool> {
    let prov = &ctx.provs[pi];
    if reqs.is_empty() {
        // Every type kept for the provisioner is compatible with its own requirements.
        return vec![true; prov.types.len()];
    }
    let combined = prov.reqs.intersection(reqs);
    prov.types
        .iter()
        .map(|&t| ctx.types[t].compatible(&combined))
        .collect()
}

/// A node's labels with legacy keys normalised to their current names.
pub(super) fn normalized_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (labels::normalize(k).to_string(), v.clone()))
        .collect()
}
