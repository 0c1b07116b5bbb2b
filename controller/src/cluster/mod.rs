#![deny(missing_docs)]
//! The cluster as the controller sees it: an in-memory index of Nodes, Pods, Provisioners,
//! AWSNodeTemplates, DaemonSets, PodDisruptionBudgets and Namespaces.
//!
//! ```text
//!  kube-rs reflectors ─┐                          ┌─> Snapshot (provisioning round)
//!  simulator steps ────┼─> Cluster::apply/delete ─┤
//!  InMemoryWriter ─────┘   (pods by node,         └─> nodes, pods_on, pdbs (lifecycle loops)
//!                           nominations)
//! ```
//!
//! Pure and synchronous: whatever feeds it (a watcher's `Apply`/`Delete`/relist, or the
//! simulator) calls [`Cluster::apply`], [`Cluster::delete`] and [`Cluster::replace`]. The
//! provisioning loop reads a [`Snapshot`]; the other loops read the index directly. Callers
//! share it as a [`SharedCluster`].

#[cfg(test)]
pub(crate) mod fixtures;
pub mod nodes;
pub mod pdb;
pub mod pods;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeStatus, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::jiff::Timestamp;

use crate::api::quantity::format_milli;
use crate::api::{AWSNodeTemplate, Provisioner};
use crate::scheduling::resources::{self, ResourceList};
use crate::scheduling::{ExistingNode, InstanceType};

/// One object of a kind the index holds.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A Node.
    Node(Box<Node>),
    /// A Pod (shared: the index hands it to snapshots without copying).
    Pod(Arc<Pod>),
    /// A Provisioner.
    Provisioner(Box<Provisioner>),
    /// An AWSNodeTemplate.
    NodeTemplate(Box<AWSNodeTemplate>),
    /// A DaemonSet.
    DaemonSet(Box<DaemonSet>),
    /// A PodDisruptionBudget.
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// A Namespace (its labels serve pod affinity `namespaceSelector`s).
    Namespace(Box<Namespace>),
}

/// The kinds the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Nodes (keyed by name).
    Node,
    /// Pods (keyed by `namespace/name`).
    Pod,
    /// Provisioners (keyed by name).
    Provisioner,
    /// AWSNodeTemplates (keyed by name).
    NodeTemplate,
    /// DaemonSets (keyed by `namespace/name`).
    DaemonSet,
    /// PodDisruptionBudgets (keyed by `namespace/name`).
    PodDisruptionBudget,
    /// Namespaces (keyed by name).
    Namespace,
}

// === impl Resource ===

impl Resource {
    /// The kind of the object.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Node(_) => Kind::Node,
            Self::Pod(_) => Kind::Pod,
            Self::Provisioner(_) => Kind::Provisioner,
            Self::NodeTemplate(_) => Kind::NodeTemplate,
            Self::DaemonSet(_) => Kind::DaemonSet,
            Self::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
            Self::Namespace(_) => Kind::Namespace,
        }
    }

    /// The index key: the name for cluster-scoped kinds, `namespace/name` otherwise.
    pub fn key(&self) -> String {
        let namespaced = |ns: &Option<String>, name: &Option<String>| {
            format!(
                "{}/{}",
                ns.as_deref().unwrap_or("default"),
                name.as_deref().unwrap_or("")
            )
        };
        match self {
            Self::Node(n) => n.metadata.name.clone().unwrap_or_default(),
            Self::Pod(p) => pods::key(p),
            Self::Provisioner(p) => p.metadata.name.clone().unwrap_or_default(),
            Self::NodeTemplate(t) => t.metadata.name.clone().unwrap_or_default(),
            Self::DaemonSet(d) => namespaced(&d.metadata.namespace, &d.metadata.name),
            Self::PodDisruptionBudget(b) => pdb::key(b),
            Self::Namespace(n) => n.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A pod the provisioning loop placed on a node that was not Ready yet, or that kube-scheduler
/// is expected to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nomination {
    /// The node.
    pub node: String,
    /// When the placement was made.
    pub at: Timestamp,
}

/// The index. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    nodes: BTreeMap<String, Node>,
    /// Behind an `Arc`: a Pod is over 2 KB inline (a map node holds eleven values), and the
    /// snapshots hand pods to the engine without copying them.
    pods: BTreeMap<String, Arc<Pod>>,
    pods_by_node: HashMap<String, BTreeSet<String>>,
    pod_revisions: HashMap<String, u64>,
    provisioners: BTreeMap<String, Provisioner>,
    node_templates: BTreeMap<String, AWSNodeTemplate>,
    daemonsets: BTreeMap<String, DaemonSet>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
    namespaces: BTreeMap<String, Namespace>,
    nominations: HashMap<String, Nomination>,
    last_placement: HashMap<String, Timestamp>,
    revision: u64,
}

/// The index shared between the feeders and the loops.
#[derive(Debug, Clone, Default)]
pub struct SharedCluster(Arc<RwLock<Cluster>>);

// === impl SharedCluster ===

impl SharedCluster {
    /// Wraps an index.
    pub fn new(cluster: Cluster) -> Self {
        Self(Arc::new(RwLock::new(cluster)))
    }

    /// Reads the index (a poisoned lock is recovered: the index has no invariant a panic breaks
    /// half-way that a later apply does not repair).
    pub fn read(&self) -> RwLockReadGuard<'_, Cluster> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the index.
    pub fn write(&self) -> RwLockWriteGuard<'_, Cluster> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// === impl Cluster ===

impl Cluster {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object (a watcher's `Apply`).
    pub fn apply(&mut self, resource: Resource) {
        let key = resource.key();
        match resource {
            Resource::Node(n) => {
                self.nodes.insert(key, *n);
            }
            Resource::Pod(p) => {
                self.unlink_pod(&key);
                if let Some(node) = pods::node_name(&p) {
                    self.pods_by_node
                        .entry(node.to_string())
                        .or_default()
                        .insert(key.clone());
                    self.nominations.remove(&key);
                }
                self.revision += 1;
                self.pod_revisions.insert(key.clone(), self.revision);
                self.pods.insert(key, p);
            }
            Resource::Provisioner(p) => {
                self.provisioners.insert(key, *p);
            }
            Resource::NodeTemplate(t) => {
                self.node_templates.insert(key, *t);
            }
            Resource::DaemonSet(d) => {
                self.daemonsets.insert(key, *d);
            }
            Resource::PodDisruptionBudget(b) => {
                self.pdbs.insert(key, *b);
            }
            Resource::Namespace(n) => {
                self.namespaces.insert(key, *n);
            }
        }
    }

    /// Removes an object (a watcher's `Delete`); unknown keys are ignored.
    pub fn delete(&mut self, kind: Kind, key: &str) {
        match kind {
            Kind::Node => {
                self.nodes.remove(key);
                self.nominations.retain(|_, n| n.node != key);
                self.last_placement.remove(key);
            }
            Kind::Pod => {
                self.unlink_pod(key);
                self.pods.remove(key);
                self.pod_revisions.remove(key);
                self.nominations.remove(key);
            }
            Kind::Provisioner => {
                self.provisioners.remove(key);
            }
            Kind::NodeTemplate => {
                self.node_templates.remove(key);
            }
            Kind::DaemonSet => {
                self.daemonsets.remove(key);
            }
            Kind::PodDisruptionBudget => {
                self.pdbs.remove(key);
            }
            Kind::Namespace => {
                self.namespaces.remove(key);
            }
        }
    }

    /// Replaces every object of a kind (a watcher's relist: `Init` .. `InitDone`).
    pub fn replace(&mut self, kind: Kind, items: Vec<Resource>) {
        let keep: BTreeSet<String> = items
            .iter()
            .filter(|r| r.kind() == kind)
            .map(Resource::key)
            .collect();
        let stale: Vec<String> = match kind {
            Kind::Node => self.nodes.keys().cloned().collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::Provisioner => self.provisioners.keys().cloned().collect(),
            Kind::NodeTemplate => self.node_templates.keys().cloned().collect(),
            Kind::DaemonSet => self.daemonsets.keys().cloned().collect(),
            Kind::PodDisruptionBudget => self.pdbs.keys().cloned().collect(),
            Kind::Namespace => self.namespaces.keys().cloned().collect(),
        };
        for k in stale.iter().filter(|k| !keep.contains(*k)) {
            self.delete(kind, k);
        }
        for r in items.into_iter().filter(|r| r.kind() == kind) {
            self.apply(r);
        }
    }

    fn unlink_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.get(key).and_then(|p| pods::node_name(p)) {
            if let Some(set) = self.pods_by_node.get_mut(old) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_node.remove(old);
                }
            }
        }
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node whose `spec.providerID` names an instance.
    pub fn node_for_instance(&self, instance_id: &str) -> Option<&Node> {
        self.nodes
            .values()
            .find(|n| nodes::instance_id(n) == Some(instance_id))
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key).map(|p| &**p)
    }

    /// Every pod, by key.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values().map(|p| &**p)
    }

    /// The pods bound to a node, by key.
    pub fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.shared_pods_on(node)
            .into_iter()
            .map(|p| &**p)
            .collect()
    }

    fn shared_pods_on(&self, node: &str) -> Vec<&Arc<Pod>> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .collect()
    }

    /// A counter that changes whenever the pod was applied again (any update).
    pub fn pod_revision(&self, key: &str) -> Option<u64> {
        self.pod_revisions.get(key).copied()
    }

    /// A provisioner by name.
    pub fn provisioner(&self, name: &str) -> Option<&Provisioner> {
        self.provisioners.get(name)
    }

    /// Every provisioner, by name.
    pub fn provisioners(&self) -> impl Iterator<Item = &Provisioner> {
        self.provisioners.values()
    }

    /// An AWSNodeTemplate by name.
    pub fn node_template(&self, name: &str) -> Option<&AWSNodeTemplate> {
        self.node_templates.get(name)
    }

    /// Every DaemonSet.
    pub fn daemonsets(&self) -> impl Iterator<Item = &DaemonSet> {
        self.daemonsets.values()
    }

    /// Every PodDisruptionBudget.
    pub fn pdbs(&self) -> impl Iterator<Item = &PodDisruptionBudget> {
        self.pdbs.values()
    }

    /// Every object of the index as one `v1 List` (Namespaces, Provisioners, AWSNodeTemplates, Nodes,
    /// DaemonSets, PodDisruptionBudgets, Pods), as `kubectl get ... -o json` prints one; the
    /// plugin reads it back with `-f`.
    pub fn to_list(&self) -> serde_json::Value {
        fn push<T: serde::Serialize>(
            items: &mut Vec<serde_json::Value>,
            objects: impl Iterator<Item = T>,
        ) {
            items.extend(objects.filter_map(|o| serde_json::to_value(o).ok()));
        }
        let mut items = Vec::new();
        push(&mut items, self.namespaces.values());
        push(&mut items, self.provisioners.values());
        push(&mut items, self.node_templates.values());
        push(&mut items, self.nodes.values());
        push(&mut items, self.daemonsets.values());
        push(&mut items, self.pdbs.values());
        push(&mut items, self.pods.values().map(|p| &**p));
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// The first budget selecting the pod that allows no disruption now, if any.
    pub fn blocking_pdb(&self, pod: &Pod) -> Option<&PodDisruptionBudget> {
        self.pdbs
            .values()
            .find(|b| pdb::selects(b, pod) && pdb::disruptions_allowed(b, self.pods()) <= 0)
    }

    /// Records that a pod was placed on a node without being bound yet.
    pub fn nominate(&mut self, pod: &str, node: &str, at: Timestamp) {
        self.nominations.insert(
            pod.to_string(),
            Nomination {
                node: node.to_string(),
                at,
            },
        );
    }

    /// Where a pod was nominated, if it still is.
    pub fn nomination(&self, pod: &str) -> Option<&Nomination> {
        self.nominations.get(pod)
    }

    /// Every nomination, by pod key.
    pub fn nominations(&self) -> impl Iterator<Item = (&String, &Nomination)> {
        self.nominations.iter()
    }

    /// Records that the provisioning loop placed pods on a node at `at`.
    pub fn record_placement(&mut self, node: &str, at: Timestamp) {
        self.last_placement.insert(node.to_string(), at);
    }

    /// When the provisioning loop last placed pods on a node.
    pub fn last_placement(&self, node: &str) -> Option<Timestamp> {
        self.last_placement.get(node).copied()
    }

    /// Whether a nomination still holds: its node exists, is not being deleted, and the
    /// nomination is younger than `ttl`.
    fn nomination_holds(&self, pod: &str, now: Timestamp, ttl: Duration) -> bool {
        self.nominations.get(pod).is_some_and(|n| {
            self.nodes
                .get(&n.node)
                .is_some_and(|node| !nodes::is_deleting(node))
                && elapsed(n.at, now) < ttl
        })
    }

    /// Pods to provision for: [`pods::is_provisionable`] and not nominated to a node that is
    /// still coming (nomination younger than `nomination_ttl`), by key.
    pub fn provisionable_pods(&self, now: Timestamp, nomination_ttl: Duration) -> Vec<&Pod> {
        self.shared_provisionable(now, nomination_ttl)
            .into_iter()
            .map(|p| &**p)
            .collect()
    }

    fn shared_provisionable(&self, now: Timestamp, nomination_ttl: Duration) -> Vec<&Arc<Pod>> {
        self.pods
            .iter()
            .filter(|(k, p)| {
                pods::is_provisionable(p) && !self.nomination_holds(k, now, nomination_ttl)
            })
            .map(|(_, p)| p)
            .collect()
    }

    /// Capacity a provisioner's nodes hold (every node with its label, being deleted or not;
    /// an in-flight node without `status.capacity` counts at its instance type's capacity).
    pub fn usage(&self, provisioner: &str, types: &TypeIndex<'_>) -> ResourceList {
        let mut used = ResourceList::new();
        for n in self
            .nodes
            .values()
            .filter(|n| nodes::provisioner(n) == Some(provisioner))
        {
            add_into(&mut used, &node_capacity(n, self, types).0);
        }
        used
    }

    /// The input of a provisioning round. `instance_types` fills in the capacity of in-flight
    /// nodes whose kubelet has not reported yet (by their instance-type label).
    pub fn snapshot(&self, options: &SnapshotOptions, instance_types: &[InstanceType]) -> Snapshot {
        let types = TypeIndex::new(instance_types);
        let pods: Vec<Arc<Pod>> = self
            .shared_provisionable(options.now, options.nomination_ttl)
            .into_iter()
            .cloned()
            .collect();
        let mut provisioners: Vec<Provisioner> = self
            .provisioners
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        sort_by_weight(&mut provisioners);
        let mut existing = Vec::new();
        let mut in_flight = BTreeSet::new();
        for n in self.nodes.values() {
            // Every node goes in: kube-scheduler counts the pods of all of them for topology
            // spread and pod (anti-)affinity. The engine fills only Karpenter's nodes that are
            // not cordoned or being deleted.
            let fillable = nodes::is_owned(n) && !nodes::is_deleting(n) && !nodes::is_cordoned(n);
            let ready = !fillable || nodes::is_ready(n);
            let mut node = n.clone();
            if !ready {
                in_flight.insert(nodes::name(n).to_string());
                // Startup and not-ready taints go away when the node initialises; the pods
                // placed here will not be blocked by them.
                let startup: Vec<_> = nodes::provisioner(n)
                    .and_then(|p| self.provisioners.get(p))
                    .map(|p| p.spec.startup_taints.clone())
                    .unwrap_or_default();
                if let Some(taints) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) {
                    taints.retain(|t| {
                        !t.key.starts_with("node.kubernetes.io/")
                            && !startup
                                .iter()
                                .any(|s| s.key == t.key && s.effect == t.effect)
                    });
                }
                let (capacity, allocatable) = node_capacity(n, self, &types);
                let status = node.status.get_or_insert_with(NodeStatus::default);
                if status.allocatable.as_ref().is_none_or(|a| a.is_empty()) {
                    status.allocatable = Some(to_quantities(&allocatable));
                }
                if status.capacity.as_ref().is_none_or(|a| a.is_empty()) {
                    status.capacity = Some(to_quantities(&capacity));
                }
            }
            let pods = self
                .shared_pods_on(nodes::name(n))
                .into_iter()
                .filter(|p| !pods::is_terminal(p))
                .cloned()
                .chain(
                    self.nominations
                        .iter()
                        .filter(|(_, nom)| nom.node == nodes::name(n))
                        .filter_map(|(k, _)| self.pods.get(k))
                        .filter(|p| pods::node_name(p).is_none())
                        .cloned(),
                )
                .collect();
            existing.push(ExistingNode { node, pods });
        }
        let usage = self
            .provisioners
            .keys()
            .map(|p| (p.clone(), self.usage(p, &types)))
            .collect();
        Snapshot {
            pods,
            existing_nodes: existing,
            namespaces: self
                .namespaces
                .iter()
                .map(|(name, ns)| (name.clone(), ns.metadata.labels.clone().unwrap_or_default()))
                .collect(),
            in_flight,
            daemonsets: self.daemonsets.values().cloned().collect(),
            provisioners,
            usage,
        }
    }
}

/// Provisioners in the order a round tries them: heaviest weight first, then by name.
pub fn sort_by_weight(provisioners: &mut [Provisioner]) {
    provisioners.sort_by(|a, b| {
        b.weight()
            .cmp(&a.weight())
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// Options of [`Cluster::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// The time of the round.
    pub now: Timestamp,
    /// How long a nomination keeps a pod out of provisioning.
    pub nomination_ttl: Duration,
}

/// The input of one provisioning round, taken out of the index (the pods shared, the rest
/// copied).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Provisionable pods, by key (shared with the index).
    pub pods: Vec<Arc<Pod>>,
    /// Every node, each with its bound and nominated pods: Karpenter's nodes that can take
    /// pods (in-flight ones included) are filled, and the rest count for topology.
    pub existing_nodes: Vec<ExistingNode>,
    /// Namespace labels by name, for `namespaceSelector`s.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Names of Karpenter's fillable nodes that are not Ready yet.
    pub in_flight: BTreeSet<String>,
    /// Every DaemonSet.
    pub daemonsets: Vec<DaemonSet>,
    /// Provisioners not being deleted, heaviest weight first (then by name).
    pub provisioners: Vec<Provisioner>,
    /// Capacity held by each provisioner's nodes (its `status.resources`).
    pub usage: BTreeMap<String, ResourceList>,
}

/// Instance types by name, for filling in in-flight nodes.
#[derive(Debug, Default)]
pub struct TypeIndex<'a> {
    types: &'a [InstanceType],
    /// Built at the first lookup: most rounds have no node that needs one.
    by_name: std::cell::OnceCell<HashMap<&'a str, &'a InstanceType>>,
}

// === impl TypeIndex ===

impl<'a> TypeIndex<'a> {
    /// Indexes a list.
    pub fn new(types: &'a [InstanceType]) -> Self {
        Self {
            types,
            by_name: std::cell::OnceCell::new(),
        }
    }

    /// A type by name.
    pub fn get(&self, name: &str) -> Option<&'a InstanceType> {
        self.by_name
            .get_or_init(|| self.types.iter().map(|t| (t.name.as_str(), t)).collect())
            .get(name)
            .copied()
    }
}

/// A node's (capacity, allocatable): from its status, or from its instance type (with its
/// provisioner's kubelet settings) when the kubelet has not reported.
fn node_capacity(
    n: &Node,
    cluster: &Cluster,
    types: &TypeIndex<'_>,
) -> (ResourceList, ResourceList) {
    let status = n.status.as_ref();
    let cap = resources::parse_list(status.and_then(|s| s.capacity.as_ref())).unwrap_or_default();
    let alloc =
        resources::parse_list(status.and_then(|s| s.allocatable.as_ref())).unwrap_or_default();
    if !cap.is_empty() {
        let alloc = if alloc.is_empty() { cap.clone() } else { alloc };
        return (cap, alloc);
    }
    let t = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::api::labels::INSTANCE_TYPE))
        .and_then(|name| types.get(name));
    let kubelet = nodes::provisioner(n)
        .and_then(|p| cluster.provisioners.get(p))
        .and_then(|p| p.spec.kubelet_configuration.as_ref());
    match t {
        Some(t) => (t.capacity_for(kubelet), t.allocatable(kubelet)),
        None => (ResourceList::new(), ResourceList::new()),
    }
}

fn add_into(a: &mut ResourceList, b: &ResourceList) {
    resources::add_into(a, b);
}

/// Milli-unit resources as Kubernetes quantities.
pub fn to_quantities(list: &ResourceList) -> BTreeMap<String, KubeQuantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), KubeQuantity(format_milli(k, *v))))
        .collect()
}

/// Time from `from` to `to`, zero when `to` is earlier.
pub fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let d = to.duration_since(from);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
