//! The Kubernetes changes the loops make, behind one trait, and an in-memory implementation
//! that applies them to the [`Cluster`] index (for tests and the simulator).
//!
//! The kube-rs implementation maps each method to one API call: `create_node` to a Node
//! create, `bind_pod` to the `pods/binding` subresource, `annotate_node` to a merge patch,
//! `cordon` to a patch of `spec.unschedulable`, `evict` to the `pods/eviction` subresource
//! (429 becomes [`Eviction::Blocked`]), `delete_node` to a delete (the finalizer holds it),
//! `remove_finalizer` to a merge patch guarded by the resourceVersion it read,
//! `set_provisioner_resources` to a server-side apply of the Provisioner's `status.resources`,
//! `set_provisioner_condition` to a guarded merge patch of its conditions, and `event` to an
//! `events.k8s.io/v1` Event.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{NodeSpec, Pod, PodStatus, Taint as KubeTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::api::provisioner::Condition;
use crate::api::{ProvisionerStatus, Quantity};
use crate::cluster::{nodes, pods, Kind, Resource, SharedCluster};

use super::clock::Clock;

/// A Kubernetes object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// `Node`, `Pod` or `Provisioner`.
    pub kind: &'static str,
    /// Namespace, for namespaced kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

// === impl ObjectRef ===

impl ObjectRef {
    /// A Provisioner.
    pub fn provisioner(name: &str) -> Self {
        Self {
            kind: "Provisioner",
            namespace: None,
            name: name.to_string(),
        }
    }

    /// A Node.
    pub fn node(name: &str) -> Self {
        Self {
            kind: "Node",
            namespace: None,
            name: name.to_string(),
        }
    }

    /// A Pod from its `namespace/name` key.
    pub fn pod(key: &str) -> Self {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        Self {
            kind: "Pod",
            namespace: Some(ns.to_string()),
            name: name.to_string(),
        }
    }
}

/// `conditions` with `condition` in place of the one of its type (appended when absent).
pub fn with_condition(conditions: &[Condition], condition: &Condition) -> Vec<Condition> {
    let mut out = conditions.to_vec();
    match out.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(c) => *c = condition.clone(),
        None => out.push(condition.clone()),
    }
    out
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// A Kubernetes Event to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// What it is about.
    pub regarding: ObjectRef,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase reason, e.g. `FailedProvisioning`.
    pub reason: String,
    /// The sentence a user reads.
    pub message: String,
}

/// The outcome of an eviction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// The pod is being deleted.
    Evicted,
    /// A PodDisruptionBudget refused it (HTTP 429); try again later.
    Blocked {
        /// `namespace/name` of the budget, when known.
        pdb: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// The pod no longer exists.
    Gone,
}

/// Why a change could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The object already exists (a retried create).
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// The object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// The change conflicts with the object's state (e.g. binding a bound pod).
    #[error("conflict on {kind} {name}: {message}")]
    Conflict {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// What conflicts.
        message: String,
    },
    /// Any other API failure (transport, authorisation, a stopped writer).
    #[error("failed to {operation}: {message}")]
    Api {
        /// What was attempted, e.g. `bind pod default/a`.
        operation: String,
        /// Why it failed.
        message: String,
    },
}

/// The Kubernetes changes the lifecycle loops make. One method, one API call; every method is
/// safe to repeat after a crash (creates answer [`WriteError::AlreadyExists`], deletes and
/// finalizer removals of missing objects answer `NotFound`).
pub trait KubeWriter: Send + Sync {
    /// Creates a Node (labels, taints, finalizer, providerID, annotations, and the capacity it
    /// will have).
    fn create_node(
        &self,
        node: &k8s_openapi::api::core::v1::Node,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Binds a pod (`namespace/name`) to a node through the Binding subresource.
    fn bind_pod(
        &self,
        pod: &str,
        node: &str,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Sets (`Some`) or removes (`None`) annotations on a Node.
    fn annotate_node(
        &self,
        node: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Marks a Node unschedulable.
    fn cordon(&self, node: &str) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Asks the Eviction API to evict a pod (`namespace/name`).
    fn evict(&self, pod: &str) -> impl Future<Output = Result<Eviction, WriteError>> + Send;

    /// Deletes a Node (with the finalizer on, this starts its termination).
    fn delete_node(&self, node: &str) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Removes the `karpenter.sh/termination` finalizer, letting the Node go.
    fn remove_finalizer(&self, node: &str) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Writes a Provisioner's `status.resources` (the capacity its nodes hold).
    fn set_provisioner_resources(
        &self,
        provisioner: &str,
        resources: &BTreeMap<String, Quantity>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Sets one condition (by type) in a Provisioner's status, keeping the others.
    fn set_provisioner_condition(
        &self,
        provisioner: &str,
        condition: &Condition,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Records an Event.
    fn event(&self, event: &Event) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// A [`KubeWriter`] that applies every change to the index at once, as the API server plus the
/// watches would; evicted pods are deleted at once (as with a zero grace period). Can be told
/// to stop after a number of writes, to stand for a controller killed between two steps.
pub struct InMemoryWriter {
    cluster: SharedCluster,
    clock: Arc<dyn Clock>,
    events: Mutex<Vec<Event>>,
    budget: Option<Arc<AtomicUsize>>,
    writes: AtomicUsize,
}

// === impl InMemoryWriter ===

impl std::fmt::Debug for InMemoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryWriter")
            .field("writes", &self.writes())
            .finish()
    }
}

impl InMemoryWriter {
    /// A writer over the index.
    pub fn new(cluster: SharedCluster, clock: Arc<dyn Clock>) -> Self {
        Self {
            cluster,
            clock,
            events: Mutex::new(Vec::new()),
            budget: None,
            writes: AtomicUsize::new(0),
        }
    }

    /// Shares a budget of operations: each write takes one, and once it is spent every call
    /// fails as if the process had died. The same budget can guard a cloud provider.
    pub fn with_budget(mut self, budget: Arc<AtomicUsize>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Every Event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes and returns the Events recorded so far.
    pub fn drain_events(&self) -> Vec<Event> {
        std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many writes succeeded.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn take(&self, operation: impl FnOnce() -> String) -> Result<(), WriteError> {
        if let Some(b) = &self.budget {
            if !take_budget(b) {
                return Err(WriteError::Api {
                    operation: operation(),
                    message: "controller stopped".into(),
                });
            }
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn node_op(
        &self,
        name: &str,
        op: &str,
        f: impl FnOnce(&mut k8s_openapi::api::core::v1::Node),
    ) -> Result<(), WriteError> {
        self.take(|| format!("{op} node {name}"))?;
        let mut c = self.cluster.write();
        let Some(mut node) = c.node(name).cloned() else {
            return Err(WriteError::NotFound {
                kind: "Node",
                name: name.to_string(),
            });
        };
        f(&mut node);
        let gone = node.metadata.deletion_timestamp.is_some()
            && node.metadata.finalizers.as_ref().is_none_or(Vec::is_empty);
        if gone {
            c.delete(Kind::Node, name);
        } else {
            c.apply(Resource::Node(Box::new(node)));
        }
        Ok(())
    }
}

/// Takes one operation from a budget; `false` when it is spent.
pub fn take_budget(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl KubeWriter for InMemoryWriter {
    async fn create_node(&self, node: &k8s_openapi::api::core::v1::Node) -> Result<(), WriteError> {
        let name = nodes::name(node).to_string();
        self.take(|| format!("create node {name}"))?;
        let mut c = self.cluster.write();
        if c.node(&name).is_some() {
            return Err(WriteError::AlreadyExists { kind: "Node", name });
        }
        let mut n = node.clone();
        n.metadata.creation_timestamp = Some(Time(self.clock.now()));
        n.metadata.uid.get_or_insert_with(|| format!("uid-{name}"));
        c.apply(Resource::Node(Box::new(n)));
        Ok(())
    }

    async fn bind_pod(&self, pod: &str, node: &str) -> Result<(), WriteError> {
        self.take(|| format!("bind pod {pod}"))?;
        let mut c = self.cluster.write();
        let Some(mut p) = c.pod(pod).cloned() else {
            return Err(WriteError::NotFound {
                kind: "Pod",
                name: pod.to_string(),
            });
        };
        if let Some(bound) = pods::node_name(&p) {
            return Err(WriteError::Conflict {
                kind: "Pod",
                name: pod.to_string(),
                message: format!("pod is already assigned to node {bound}"),
            });
        }
        if c.node(node).is_none() {
            return Err(WriteError::NotFound {
                kind: "Node",
                name: node.to_string(),
            });
        }
        p.spec.get_or_insert_with(Default::default).node_name = Some(node.to_string());
        let status = p.status.get_or_insert_with(PodStatus::default);
        if let Some(conds) = status.conditions.as_mut() {
            for cond in conds.iter_mut().filter(|c| c.type_ == "PodScheduled") {
                cond.status = "True".into();
                cond.reason = None;
                cond.message = None;
            }
        }
        c.apply(Resource::Pod(std::sync::Arc::new(p)));
        Ok(())
    }

    async fn annotate_node(
        &self,
        node: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), WriteError> {
        self.node_op(node, "annotate", |n| {
            let a = n.metadata.annotations.get_or_insert_with(BTreeMap::new);
            for (k, v) in changes {
                match v {
                    Some(v) => a.insert(k.clone(), v.clone()),
                    None => a.remove(k),
                };
            }
        })
    }

    async fn cordon(&self, node: &str) -> Result<(), WriteError> {
        self.node_op(node, "cordon", |n| {
            let spec = n.spec.get_or_insert_with(NodeSpec::default);
            spec.unschedulable = Some(true);
            let taints = spec.taints.get_or_insert_with(Vec::new);
            if !taints.iter().any(|t| t.key == pods::UNSCHEDULABLE_TAINT) {
                taints.push(KubeTaint {
                    key: pods::UNSCHEDULABLE_TAINT.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
            }
        })
    }

    async fn evict(&self, pod: &str) -> Result<Eviction, WriteError> {
        self.take(|| format!("evict pod {pod}"))?;
        let mut c = self.cluster.write();
        let Some(p): Option<Pod> = c.pod(pod).cloned() else {
            return Ok(Eviction::Gone);
        };
        if let Some(b) = c.blocking_pdb(&p) {
            let name = crate::cluster::pdb::key(b);
            return Ok(Eviction::Blocked {
                message: format!(
                    "Cannot evict pod as it would violate the pod's disruption budget {name}"
                ),
                pdb: Some(name),
            });
        }
        c.delete(Kind::Pod, pod);
        Ok(Eviction::Evicted)
    }

    async fn delete_node(&self, node: &str) -> Result<(), WriteError> {
        let now = self.clock.now();
        self.node_op(node, "delete", |n| {
            n.metadata.deletion_timestamp.get_or_insert(Time(now));
        })
    }

    async fn remove_finalizer(&self, node: &str) -> Result<(), WriteError> {
        self.node_op(node, "remove the finalizer of", |n| {
            if let Some(f) = n.metadata.finalizers.as_mut() {
                f.retain(|f| f != nodes::TERMINATION_FINALIZER);
            }
        })
    }

    async fn set_provisioner_resources(
        &self,
        provisioner: &str,
        resources: &BTreeMap<String, Quantity>,
    ) -> Result<(), WriteError> {
        self.take(|| format!("update the status of provisioner {provisioner}"))?;
        let mut c = self.cluster.write();
        let Some(mut p) = c.provisioner(provisioner).cloned() else {
            return Err(WriteError::NotFound {
                kind: "Provisioner",
                name: provisioner.to_string(),
            });
        };
        p.status
            .get_or_insert_with(ProvisionerStatus::default)
            .resources = resources.clone();
        c.apply(Resource::Provisioner(Box::new(p)));
        Ok(())
    }

    async fn set_provisioner_condition(
        &self,
        provisioner: &str,
        condition: &Condition,
    ) -> Result<(), WriteError> {
        self.take(|| format!("update the conditions of provisioner {provisioner}"))?;
        let mut c = self.cluster.write();
        let Some(mut p) = c.provisioner(provisioner).cloned() else {
            return Err(WriteError::NotFound {
                kind: "Provisioner",
                name: provisioner.to_string(),
            });
        };
        let status = p.status.get_or_insert_with(ProvisionerStatus::default);
        status.conditions = with_condition(&status.conditions, condition);
        c.apply(Resource::Provisioner(Box::new(p)));
        Ok(())
    }

    async fn event(&self, event: &Event) -> Result<(), WriteError> {
        self.take(|| format!("record event {}", event.reason))?;
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}
