//! The provisioning loop: batch the provisionable pods, pack them with the engine, launch the
//! new nodes through the [`CloudProvider`], create their Node objects and bind the pods.
//!
//! ```text
//!  observe() ─> Batcher (1 s idle / 10 s max); while it is open, prepare(): the engine's
//!  catalog pass (Provisioners × instance types), kept and reused while they do not change
//!  ─> round():
//!    1. adopt: tagged instances without a Node get one (a round stopped after a launch)
//!    2. snapshot ─> Scheduler::solve ─> Decision
//!    3. per new node, at most `max_parallel_launches` at once:
//!       limits check ─> CloudProvider::create (client token) ─> create Node ─> bind pods
//!    4. existing nodes: bind (in flight) or nominate (Ready); Events for pods that fit nowhere
//!    5. Provisioner status.resources
//! ```
//!
//! Crash safety: the round keeps no state that matters between steps. An instance launched
//! whose Node was never created is adopted by the next round (step 1), so its pods are placed
//! there instead of on a second instance; a Node whose pods were not all bound is an in-flight
//! node the engine fills first; a retried launch with the same pods carries the same client
//! token, which the cloud answers with the instance it already launched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint as KubeTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::api::labels;
use crate::api::provisioner::{Condition, Taint};
use crate::api::validation::validate_provisioner;
use crate::api::{Provisioner, Quantity};
use crate::cloud::provider::PROVISIONER_TAG;
use crate::cloud::provider::{CloudError, CloudProvider, Instance, NodeRequest};
use crate::cluster::{nodes, pods, to_quantities, SharedCluster, SnapshotOptions, TypeIndex};
use crate::scheduling::resources::ResourceList;
use crate::scheduling::{
    Decision, InstanceType, NewNode, Prepared, Requirements, Scheduler, SchedulerInput,
    SchedulerOptions,
};

use super::batcher::Batcher;
use super::clock::Clock;
use super::writer::{Event, EventType, KubeWriter, ObjectRef, WriteError};
use super::LifecycleError;

/// Settings of the provisioning loop.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisioningConfig {
    /// The batch closes this long after the last new pod.
    pub batch_idle: Duration,
    /// The batch closes this long after the first pod at the latest.
    pub batch_max: Duration,
    /// Most launches in flight at once.
    pub max_parallel_launches: usize,
    /// How long a pod nominated to a node stays out of the next rounds.
    pub nomination_ttl: Duration,
    /// Packer options.
    pub scheduler: SchedulerOptions,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            max_parallel_launches: 10,
            nomination_ttl: Duration::from_secs(20),
            scheduler: SchedulerOptions::default(),
        }
    }
}

/// One launched node of a round.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Launched {
    /// Node name (the instance's private DNS name).
    pub node: String,
    /// Instance ID.
    pub instance_id: String,
    /// Instance type launched.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: String,
    /// Pods bound to it.
    pub pods: Vec<String>,
}

/// A node of the Decision that was not launched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotLaunched {
    /// Provisioner.
    pub provisioner: String,
    /// The pods it was for (they go back to the next batch).
    pub pods: Vec<String>,
    /// Why.
    pub reason: String,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    /// When the round ran (RFC 3339).
    pub at: String,
    /// Provisionable pods found.
    pub pods: usize,
    /// Nodes registered for tagged instances that had none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<String>,
    /// The engine's decision.
    pub decision: Decision,
    /// Nodes launched.
    pub launched: Vec<Launched>,
    /// Nodes not launched (limits, cloud errors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_launched: Vec<NotLaunched>,
    /// Pods bound to existing (in-flight) nodes, by node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bound_existing: BTreeMap<String, Vec<String>>,
    /// Pods nominated to existing Ready nodes (kube-scheduler binds them), by node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub nominated: BTreeMap<String, Vec<String>>,
    /// Provisioners left out because validation refuses them, with the errors.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub invalid_provisioners: BTreeMap<String, String>,
}

/// The provisioning loop over its seams.
pub struct Provisioning<C, W> {
    cluster: SharedCluster,
    cloud: Arc<C>,
    writer: Arc<W>,
    clock: Arc<dyn Clock>,
    config: ProvisioningConfig,
    state: Mutex<LoopState>,
}

#[derive(Debug)]
struct LoopState {
    batcher: Batcher,
    /// Pod key to the revision last taken into a batch.
    seen: HashMap<String, u64>,
    /// The engine's catalog pass from the last round (or from [`Provisioning::prepare`]),
    /// reused while the Provisioners and the cloud's type lists do not change.
    prepared: Option<Arc<Prepared>>,
    /// Whether the open batch has had its [`Provisioning::prepare`].
    batch_prepared: bool,
}

// === impl Provisioning ===

impl<C: CloudProvider, W: KubeWriter> Provisioning<C, W> {
    /// A loop over the seams.
    pub fn new(
        cluster: SharedCluster,
        cloud: Arc<C>,
        writer: Arc<W>,
        clock: Arc<dyn Clock>,
        config: ProvisioningConfig,
    ) -> Self {
        let batcher = Batcher::new(config.batch_idle, config.batch_max);
        Self {
            cluster,
            cloud,
            writer,
            clock,
            config,
            state: Mutex::new(LoopState {
                batcher,
                seen: HashMap::new(),
                prepared: None,
                batch_prepared: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LoopState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks at the index: a provisionable pod not seen in this version opens or extends the
    /// batch. Returns when the open batch closes, if one is open.
    pub fn observe(&self) -> Option<Timestamp> {
        let now = self.clock.now();
        let c = self.cluster.read();
        let mut st = self.state();
        let mut new = 0usize;
        let pods = c.provisionable_pods(now, self.config.nomination_ttl);
        let opened = st.batcher.is_open();
        for p in pods {
            let key = pods::key(p);
            let rev = c.pod_revision(&key).unwrap_or(0);
            if st.seen.get(&key) != Some(&rev) {
                st.seen.insert(key, rev);
                new += 1;
            }
        }
        if new > 0 {
            if !opened {
                info!(target: "controller.provisioning", "Waiting to batch additional pods");
            }
            st.batcher.add(now);
        }
        st.batcher.deadline()
    }

    /// Runs a round when the batch has closed; `None` when it has not.
    pub async fn reconcile(&self) -> Result<Option<RoundReport>, LifecycleError> {
        self.observe();
        let (ready, prepare) = {
            let mut st = self.state();
            let ready = st.batcher.is_ready(self.clock.now());
            let prepare = !ready && st.batcher.is_open() && !st.batch_prepared;
            if ready {
                st.batcher.take();
                st.batch_prepared = false;
            }
            if prepare {
                st.batch_prepared = true;
            }
            (ready, prepare)
        };
        if prepare {
            // Work that does not depend on the pods, done while the batch fills. A failure
            // here costs nothing: the round does the same work and reports its error.
            if let Err(e) = self.prepare().await {
                warn!(target: "controller.provisioning", error = %e, "Preparing the instance types for the next round failed");
            }
        }
        if !ready {
            return Ok(None);
        }
        self.round().await.map(Some)
    }

    /// The engine's catalog pass for the current Provisioners (each one's requirements
    /// against its instance types; see [`Prepared`]), kept for the next round. The
    /// reconcile loop runs it while a batch is open, so the round that closes the batch
    /// does not pay for it. Writes nothing.
    pub async fn prepare(&self) -> Result<(), LifecycleError> {
        let mut provisioners: Vec<Provisioner> = {
            let c = self.cluster.read();
            c.provisioners()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| validate_provisioner(p).is_valid())
                .cloned()
                .collect()
        };
        // The order of the round's input (its snapshot's): a different order would not be
        // reused.
        crate::cluster::sort_by_weight(&mut provisioners);
        let by_provisioner = self.types_by_provisioner(&provisioners).await?;
        let input = SchedulerInput {
            provisioners,
            instance_types_by_provisioner: by_provisioner,
            options: self.config.scheduler.clone(),
            ..Default::default()
        };
        let cached = self.state().prepared.clone();
        let prepared = Scheduler::with_prepared(input, cached).prepared();
        self.state().prepared = Some(prepared);
        Ok(())
    }

    /// Each Provisioner's instance types from the cloud, by name.
    async fn types_by_provisioner(
        &self,
        provisioners: &[Provisioner],
    ) -> Result<BTreeMap<String, Arc<[InstanceType]>>, LifecycleError> {
        let mut by_provisioner = BTreeMap::new();
        for p in provisioners {
            let types = self.cloud.instance_types(p).await?;
            by_provisioner.insert(p.metadata.name.clone().unwrap_or_default(), types);
        }
        Ok(by_provisioner)
    }

    /// One round, now, whatever the batch says.
    pub async fn round(&self) -> Result<RoundReport, LifecycleError> {
        let now = self.clock.now();
        let mut report = RoundReport {
            at: super::clock::format(now),
            ..Default::default()
        };
        report.adopted = self.adopt_orphans().await?;

        let provisioners: Vec<Provisioner> = {
            let c = self.cluster.read();
            c.provisioners()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .cloned()
                .collect()
        };
        // A Provisioner the webhook would refuse (stored before it ran, or with it off)
        // launches nothing: its owner gets an Event and a Ready=False condition saying why.
        let provisioners = self.gate_invalid(provisioners, now, &mut report).await?;
        let valid: BTreeSet<String> = provisioners
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let by_provisioner = self.types_by_provisioner(&provisioners).await?;
        // Every type once, for the snapshot's capacity lookups: the one list as it is when
        // the provisioners share it.
        let all_types: Arc<[InstanceType]> = {
            let mut lists = by_provisioner.values();
            match (lists.next(), lists.next()) {
                (None, _) => Arc::from(Vec::new()),
                (Some(one), None) => one.clone(),
                _ => {
                    let mut seen = BTreeSet::new();
                    by_provisioner
                        .values()
                        .flat_map(|v| v.iter())
                        .filter(|t| seen.insert(t.name.clone()))
                        .cloned()
                        .collect()
                }
            }
        };
        let snapshot = self.cluster.read().snapshot(
            &SnapshotOptions {
                now,
                nomination_ttl: self.config.nomination_ttl,
            },
            &all_types,
        );
        let mut snapshot = snapshot;
        snapshot
            .provisioners
            .retain(|p| p.metadata.name.as_ref().is_some_and(|n| valid.contains(n)));
        report.pods = snapshot.pods.len();
        if snapshot.pods.is_empty() {
            return Ok(report);
        }
        for p in &snapshot.provisioners {
            info!(
                target: "controller.provisioning",
                provisioner = p.metadata.name.as_deref().unwrap_or(""),
                pods = snapshot.pods.len(),
                "Found {} provisionable pod(s)", snapshot.pods.len()
            );
        }
        let in_flight = snapshot.in_flight.clone();
        let usage = snapshot.usage.clone();
        let input = SchedulerInput {
            provisioners: snapshot.provisioners.clone(),
            instance_types: Vec::new(),
            instance_types_by_provisioner: by_provisioner.clone(),
            existing_nodes: snapshot.existing_nodes,
            daemonsets: snapshot.daemonsets,
            namespaces: snapshot.namespaces,
            options: self.config.scheduler.clone(),
        };
        let cached = self.state().prepared.clone();
        let scheduler = Scheduler::with_prepared(input, cached);
        self.state().prepared = Some(scheduler.prepared());
        let decision = scheduler.solve(&snapshot.pods)?;
        for n in &decision.nodes {
            info!(
                target: "controller.provisioning",
                provisioner = n.provisioner.as_str(),
                pods = n.pods.len(),
                options = ?n.instance_type_options,
                "Computed packing for {} pod(s) with instance type option(s) [{}]",
                n.pods.len(),
                n.instance_type_options.join(" ")
            );
        }
        report.decision = decision.clone();

        // Limits: the capacity a provisioner's nodes hold plus the largest option of each new
        // node must stay within spec.limits (the engine checked the same; this guard also
        // counts nodes being deleted, whose instances still run).
        let mut usage_now = usage.clone();
        let mut launches = Vec::new();
        let indexes: BTreeMap<&str, TypeIndex<'_>> = by_provisioner
            .iter()
            .map(|(name, types)| (name.as_str(), TypeIndex::new(types)))
            .collect();
        let no_types = TypeIndex::new(&[]);
        for n in &decision.nodes {
            let Some(p) = snapshot
                .provisioners
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&n.provisioner))
            else {
                continue;
            };
            let types = indexes.get(n.provisioner.as_str()).unwrap_or(&no_types);
            let largest = largest_capacity(n, types, p);
            let used = usage_now.entry(n.provisioner.clone()).or_default();
            if let Some(exceeded) = exceeds_limits(p, used, &largest) {
                report.not_launched.push(NotLaunched {
                    provisioner: n.provisioner.clone(),
                    pods: n.pods.clone(),
                    reason: exceeded,
                });
                continue;
            }
            crate::scheduling::resources::add_into(used, &largest);
            launches.push((n.clone(), p.clone()));
        }

        let results: Vec<(NewNode, Result<Launched, LifecycleError>)> = stream::iter(launches)
            .map(|(n, p)| {
                let by = &by_provisioner;
                async move {
                    let r = self.launch(&n, &p, by.get(&n.provisioner)).await;
                    (n, r)
                }
            })
            .buffer_unordered(self.config.max_parallel_launches.max(1))
            .collect()
            .await;
        for (n, r) in results {
            match r {
                Ok(l) => report.launched.push(l),
                Err(LifecycleError::Cloud(e)) => {
                    warn!(
                        target: "controller.provisioning",
                        provisioner = n.provisioner.as_str(),
                        error = %e,
                        "Failed to launch a node for {} pod(s): {e}", n.pods.len()
                    );
                    report.not_launched.push(NotLaunched {
                        provisioner: n.provisioner.clone(),
                        pods: n.pods.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        report.launched.sort_by(|a, b| a.node.cmp(&b.node));
        for nl in &report.not_launched {
            let message = format!(
                "could not launch a node from provisioner {}: {}; retrying in the next batch",
                nl.provisioner, nl.reason
            );
            for pod in &nl.pods {
                self.event(Event {
                    regarding: ObjectRef::pod(pod),
                    type_: EventType::Warning,
                    reason: "FailedLaunch".into(),
                    message: message.clone(),
                })
                .await?;
            }
        }
        // Their pods go back into the next batch.
        if !report.not_launched.is_empty() {
            let mut st = self.state();
            for nl in &report.not_launched {
                for pod in &nl.pods {
                    st.seen.remove(pod);
                }
            }
        }

        for e in &decision.existing_nodes {
            if in_flight.contains(&e.node) {
                // kube-scheduler does not place pods on a node that is not Ready: bind now.
                let mut bound = Vec::new();
                for pod in &e.pods {
                    if self.bind(pod, &e.node).await? {
                        bound.push(pod.clone());
                    }
                }
                self.cluster.write().record_placement(&e.node, now);
                info!(
                    target: "controller.provisioning",
                    node = e.node.as_str(),
                    pods = bound.len(),
                    "Bound {} pod(s) to in-flight node {}", bound.len(), e.node
                );
                report.bound_existing.insert(e.node.clone(), bound);
            } else {
                // A Ready node: kube-scheduler binds; nominating keeps them out of the next
                // rounds meanwhile.
                {
                    let mut c = self.cluster.write();
                    for pod in &e.pods {
                        c.nominate(pod, &e.node, now);
                    }
                    c.record_placement(&e.node, now);
                }
                for pod in &e.pods {
                    self.event(Event {
                        regarding: ObjectRef::pod(pod),
                        type_: EventType::Normal,
                        reason: "Nominated".into(),
                        message: format!(
                            "pod fits on ready node {}; left for kube-scheduler to bind",
                            e.node
                        ),
                    })
                    .await?;
                }
                info!(
                    target: "controller.provisioning",
                    node = e.node.as_str(),
                    pods = e.pods.len(),
                    "Nominated {} pod(s) to ready node {}", e.pods.len(), e.node
                );
                report.nominated.insert(e.node.clone(), e.pods.clone());
            }
        }

        for u in &decision.unschedulable {
            let reasons: Vec<String> = u
                .reasons
                .iter()
                .map(|(p, r)| format!("provisioner {p}: {r}"))
                .collect();
            let message = if reasons.is_empty() {
                "no provisioner exists".to_string()
            } else {
                reasons.join("; ")
            };
            warn!(target: "controller.provisioning", pod = u.pod.as_str(), "Could not schedule pod {}: {message}", u.pod);
            self.event(Event {
                regarding: ObjectRef::pod(&u.pod),
                type_: EventType::Warning,
                reason: "FailedProvisioning".into(),
                message,
            })
            .await?;
        }

        self.update_status(&all_types).await?;
        Ok(report)
    }

    /// Launches one node, creates its Node and binds its pods.
    async fn launch(
        &self,
        n: &NewNode,
        p: &Provisioner,
        types: Option<&Arc<[InstanceType]>>,
    ) -> Result<Launched, LifecycleError> {
        let reqs = Requirements::from_api(&p.spec.requirements).unwrap_or_default();
        let capacity_types: BTreeSet<String> = match reqs.get(labels::CAPACITY_TYPE) {
            Some(set) if !set.complement => set.values.iter().cloned().collect(),
            _ => BTreeSet::new(),
        };
        let request = NodeRequest {
            provisioner: p.clone(),
            instance_types: n.instance_type_options.clone(),
            capacity_types,
            zones: n.zones.iter().cloned().collect(),
            labels: base_labels(p),
            taints: p
                .spec
                .taints
                .iter()
                .chain(&p.spec.startup_taints)
                .cloned()
                .collect(),
            client_token: client_token(&n.provisioner, &n.pods),
        };
        let instance = self.cloud.create(&request).await?;
        let t = types.and_then(|ts| ts.iter().find(|t| t.name == instance.instance_type));
        let summary = nodes::DecisionSummary {
            provisioner: n.provisioner.clone(),
            instance_type: instance.instance_type.clone(),
            capacity_type: instance.capacity_type.clone(),
            instance_type_options: n
                .instance_type_options
                .iter()
                .take(nodes::DecisionSummary::MAX_LISTED)
                .cloned()
                .collect(),
            options: n.instance_type_options.len(),
            zones: n.zones.clone(),
            price_per_hour: n.price_per_hour,
            pods: n.pods.len(),
            pod_names: n
                .pods
                .iter()
                .take(nodes::DecisionSummary::MAX_LISTED)
                .cloned()
                .collect(),
        };
        let node = node_for_instance(
            &instance,
            p,
            t,
            serde_json::to_string(&summary).unwrap_or_default(),
        );
        let name = nodes::name(&node).to_string();
        info!(
            target: "controller.provisioning",
            provisioner = n.provisioner.as_str(),
            instance = instance.id.as_str(),
            instance_type = instance.instance_type.as_str(),
            zone = instance.zone.as_str(),
            hostname = name.as_str(),
            "Launched instance: {}, type: {}, zone: {}, hostname: {}",
            instance.id, instance.instance_type, instance.zone, name
        );
        match self.writer.create_node(&node).await {
            Ok(()) | Err(WriteError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut bound = Vec::new();
        for pod in &n.pods {
            if self.bind(pod, &name).await? {
                bound.push(pod.clone());
            }
        }
        self.cluster
            .write()
            .record_placement(&name, self.clock.now());
        info!(
            target: "controller.provisioning",
            provisioner = n.provisioner.as_str(),
            node = name.as_str(),
            pods = bound.len(),
            "Bound {} pod(s) to node {}", bound.len(), name
        );
        Ok(Launched {
            node: name,
            instance_id: instance.id,
            instance_type: instance.instance_type,
            zone: instance.zone,
            capacity_type: instance.capacity_type,
            pods: bound,
        })
    }

    /// Binds a pod; a pod already bound or gone is not an error (`false`).
    async fn bind(&self, pod: &str, node: &str) -> Result<bool, LifecycleError> {
        match self.writer.bind_pod(pod, node).await {
            Ok(()) => Ok(true),
            Err(WriteError::Conflict { .. } | WriteError::NotFound { kind: "Pod", .. }) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The provisioners that pass validation. Each invalid one gets `Ready=False` (reason
    /// `Invalid`, the errors as the message) and a Warning Event when that changes; a valid one
    /// marked invalid before gets `Ready=True` back.
    async fn gate_invalid(
        &self,
        provisioners: Vec<Provisioner>,
        now: Timestamp,
        report: &mut RoundReport,
    ) -> Result<Vec<Provisioner>, LifecycleError> {
        let mut valid = Vec::with_capacity(provisioners.len());
        for p in provisioners {
            let name = p.metadata.name.clone().unwrap_or_default();
            let checked = validate_provisioner(&p);
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            if checked.is_valid() {
                if ready.is_some_and(|c| c.status == "False") {
                    let condition = Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(super::clock::format(now)),
                        ..Default::default()
                    };
                    match self
                        .writer
                        .set_provisioner_condition(&name, &condition)
                        .await
                    {
                        Ok(()) | Err(WriteError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                valid.push(p);
                continue;
            }
            let message = checked
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            report
                .invalid_provisioners
                .insert(name.clone(), message.clone());
            if ready.and_then(|c| c.message.as_deref()) == Some(message.as_str())
                && ready.is_some_and(|c| c.status == "False")
            {
                continue;
            }
            warn!(
                target: "controller.provisioning",
                provisioner = name.as_str(),
                "Provisioner {name} is invalid and launches nothing: {message}"
            );
            let condition = Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: Some("Invalid".into()),
                message: Some(message.clone()),
                last_transition_time: Some(super::clock::format(now)),
                ..Default::default()
            };
            match self
                .writer
                .set_provisioner_condition(&name, &condition)
                .await
            {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            self.event(Event {
                regarding: ObjectRef::provisioner(&name),
                type_: EventType::Warning,
                reason: "InvalidProvisioner".into(),
                message: format!("launches nothing until fixed: {message}"),
            })
            .await?;
        }
        Ok(valid)
    }

    async fn event(&self, e: Event) -> Result<(), LifecycleError> {
        self.writer.event(&e).await.map_err(LifecycleError::from)
    }

    /// Gives every tagged instance of a known provisioner that has no Node its Node.
    async fn adopt_orphans(&self) -> Result<Vec<String>, LifecycleError> {
        let instances = self.cloud.list().await?;
        let mut adopted = Vec::new();
        for i in instances {
            let (known, p) = {
                let c = self.cluster.read();
                let known = c.node_for_instance(&i.id).is_some();
                let p = i
                    .tags
                    .get(PROVISIONER_TAG)
                    .and_then(|n| c.provisioner(n))
                    .cloned();
                (known, p)
            };
            let Some(p) = p.filter(|_| !known) else {
                continue;
            };
            let types = self.cloud.instance_types(&p).await?;
            let t = types.iter().find(|t| t.name == i.instance_type);
            let node = node_for_instance(&i, &p, t, format!("{{\"adopted\":\"{}\"}}", i.id));
            let name = nodes::name(&node).to_string();
            match self.writer.create_node(&node).await {
                Ok(()) | Err(WriteError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            info!(
                target: "controller.provisioning",
                instance = i.id.as_str(),
                node = name.as_str(),
                "Registered node {name} for launched instance {} that had none", i.id
            );
            adopted.push(name);
        }
        Ok(adopted)
    }

    /// Writes each provisioner's `status.resources` when it changed.
    async fn update_status(&self, types: &[InstanceType]) -> Result<(), LifecycleError> {
        let changes: Vec<(String, BTreeMap<String, Quantity>)> = {
            let c = self.cluster.read();
            let index = TypeIndex::new(types);
            c.provisioners()
                .filter_map(|p| {
                    let name = p.metadata.name.clone()?;
                    let used = c.usage(&name, &index);
                    let q: BTreeMap<String, Quantity> = to_quantities(&used)
                        .into_iter()
                        .map(|(k, v)| (k, Quantity::new(v.0)))
                        .collect();
                    let current = p.status.as_ref().map(|s| &s.resources);
                    (current != Some(&q)).then_some((name, q))
                })
                .collect()
        };
        for (name, q) in changes {
            match self.writer.set_provisioner_resources(&name, &q).await {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The client token of a launch: the provisioner and the pods, so a retried launch for the
/// same pods gets the instance launched the first time.
pub fn client_token(provisioner: &str, pods: &[String]) -> String {
    let mut sorted: Vec<&String> = pods.iter().collect();
    sorted.sort();
    // FNV-1a, 64 bits: stable across processes and releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in provisioner.bytes().chain(
        sorted
            .iter()
            .flat_map(|p| std::iter::once(0u8).chain(p.bytes())),
    ) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{provisioner}-{h:016x}")
}

/// Labels every node of a provisioner gets: its `labels`, its single-valued `In`
/// requirements, and the provisioner name.
fn base_labels(p: &Provisioner) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = p.spec.labels.clone();
    for r in &p.spec.requirements {
        if r.operator == "In" && r.values.len() == 1 {
            out.insert(labels::normalize(&r.key).to_string(), r.values[0].clone());
        }
    }
    out.insert(
        labels::PROVISIONER_NAME.to_string(),
        p.metadata.name.clone().unwrap_or_default(),
    );
    out
}

/// The Node object for an instance: labels from the provisioner, the instance type and the
/// instance; taints and startup taints; the finalizer; providerID; the decision annotation;
/// and the capacity the kubelet will report, so the engine can fill it while it is in flight.
pub fn node_for_instance(
    instance: &Instance,
    p: &Provisioner,
    t: Option<&InstanceType>,
    decision: String,
) -> Node {
    let name = if instance.private_dns_name.is_empty() {
        instance.id.clone()
    } else {
        instance.private_dns_name.clone()
    };
    let mut l = base_labels(p);
    if let Some(t) = t {
        for (k, v) in &t.labels {
            l.insert(k.clone(), v.clone());
        }
        for (k, set) in t.requirements.iter() {
            if let Some(v) = set.single().filter(|_| !set.complement) {
                l.entry(k.clone()).or_insert_with(|| v.to_string());
            }
        }
    }
    l.insert(labels::INSTANCE_TYPE.into(), instance.instance_type.clone());
    l.insert(labels::ZONE.into(), instance.zone.clone());
    l.insert(labels::CAPACITY_TYPE.into(), instance.capacity_type.clone());
    l.insert(labels::HOSTNAME.into(), name.clone());
    let taints: Vec<KubeTaint> = p
        .spec
        .taints
        .iter()
        .chain(&p.spec.startup_taints)
        .map(kube_taint)
        .collect();
    let kubelet = p.spec.kubelet_configuration.as_ref();
    let mut annotations = p.spec.annotations.clone();
    annotations.insert(nodes::DECISION_ANNOTATION.into(), decision);
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(l),
            annotations: Some(annotations),
            finalizers: Some(vec![nodes::TERMINATION_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(nodes::provider_id(&instance.zone, &instance.id)),
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: t.map(|t| NodeStatus {
            capacity: Some(to_quantities(&t.capacity_for(kubelet))),
            allocatable: Some(to_quantities(&t.allocatable(kubelet))),
            ..Default::default()
        }),
    }
}

fn kube_taint(t: &Taint) -> KubeTaint {
    KubeTaint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
        time_added: None,
    }
}

/// The largest capacity, per resource, among a new node's options.
fn largest_capacity(n: &NewNode, types: &TypeIndex<'_>, p: &Provisioner) -> ResourceList {
    let kubelet = p.spec.kubelet_configuration.as_ref();
    let mut out = ResourceList::new();
    for t in n
        .instance_type_options
        .iter()
        .filter_map(|name| types.get(name))
    {
        for (k, v) in t.capacity_for(kubelet) {
            let e = out.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    out
}

/// The first limit `used + extra` would exceed, in words.
fn exceeds_limits(p: &Provisioner, used: &ResourceList, extra: &ResourceList) -> Option<String> {
    let limits = p.spec.limits.as_ref()?;
    for (k, q) in &limits.resources {
        let Ok(limit) = q.milli() else { continue };
        let now = used.get(k).copied().unwrap_or(0);
        let add = extra.get(k).copied().unwrap_or(0);
        if now + add > limit {
            return Some(format!(
                "limit {k}={} of provisioner {} would be exceeded (in use {}, node adds up to {})",
                q,
                p.metadata.name.as_deref().unwrap_or(""),
                crate::api::quantity::format_milli(k, now),
                crate::api::quantity::format_milli(k, add)
            ));
        }
    }
    None
}

impl From<CloudError> for LifecycleError {
    fn from(e: CloudError) -> Self {
        Self::Cloud(e)
    }
}
