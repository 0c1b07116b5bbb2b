#![deny(missing_docs)]
//! The offline walkthrough: a [`scenario::Scenario`] played over the in-memory
//! [`Cluster`](crate::cluster::Cluster), the `sim` cloud provider and a virtual clock, by the
//! same lifecycle loops the controller runs.
//!
//! ```text
//!  scenario step ─> apply/scale/delete ─> Cluster <─ kube emulation (deployments, kubelet)
//!                                            │
//!            ManualClock ─> Lifecycle::tick (provisioning, emptiness, expiry, termination, gc)
//!                                            │ tracing events
//!                                            v
//!                            timeline in the guide's log form, decisions, final state
//! ```
//!
//! The kube emulation is the least that makes the guide's story run: Deployments keep their
//! replicas as pods marked `Unschedulable` (kube-scheduler's verdict when no node fits), pods
//! nominated to a Ready node get bound there, nodes become Ready as soon as they exist, bound
//! pods start Running, and pods of a deleted Deployment or a deleted node go.

pub mod scenario;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, Pod, PodCondition, PodStatus};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::api::{
    decode_node_template, decode_provisioner, default_provisioner, validate_provisioner,
};
use crate::cloud::instance_types::AwsCatalogOptions;
use crate::cloud::provider::{CloudError, CloudProvider};
use crate::cloud::sim::SimProvider;
use crate::cluster::{nodes, pods, Cluster, Kind, Resource, SharedCluster};
use crate::lifecycle::clock::{self, Clock};
use crate::lifecycle::{
    Event, InMemoryWriter, Lifecycle, LifecycleConfig, LifecycleError, ManualClock, RoundReport,
    MIN_REQUEUE,
};

use scenario::{Action, Scenario, ScenarioError};

/// The guide's walkthrough, embedded.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../manifests/scenarios/inflate.yaml");

/// The longest a run may go on in virtual time (a scenario that never settles stops here).
pub const MAX_VIRTUAL_TIME: Duration = Duration::from_secs(24 * 3600);

/// Why a walkthrough could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The scenario is wrong.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// An object in the scenario is invalid.
    #[error("steps[{index}]: {kind} {name}: {message}")]
    Object {
        /// Step.
        index: usize,
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A step names an object that does not exist.
    #[error("steps[{index}]: {kind} {key} not found")]
    NotFound {
        /// Step.
        index: usize,
        /// Kind.
        kind: String,
        /// Key.
        key: String,
    },
    /// A loop failed.
    #[error("controller loop failed")]
    Lifecycle(#[from] LifecycleError),
    /// The cloud provider could not start.
    #[error("sim cloud provider")]
    Cloud(#[from] CloudError),
    /// The async runtime could not start.
    #[error("failed to start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Virtual time, RFC 3339 with milliseconds.
    pub time: String,
    /// `INFO`, `WARN`, ...
    pub level: String,
    /// `controller.provisioning/default`, `controller.node`, `controller.termination`, or
    /// `scenario` for the steps.
    pub logger: String,
    /// The sentence.
    pub message: String,
    /// Structured fields.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

// === impl LogLine ===

impl LogLine {
    /// The guide's log form: `time  LEVEL  logger  message`.
    pub fn render(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.time, self.level, self.logger, self.message
        )
    }
}

/// What the run left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalState {
    /// Nodes left, by name.
    pub nodes: Vec<String>,
    /// Instances still running, by ID.
    pub instances: Vec<String>,
    /// Pods left, as `namespace/name -> node` (empty when pending).
    pub pods: BTreeMap<String, String>,
    /// Instances launched over the run.
    pub launches: usize,
    /// Every object left in the cluster, as a `v1 List`: `kubectl karpenter explain` and
    /// `nodes` read this document with `-f`.
    pub objects: serde_json::Value,
}

/// A finished run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Walkthrough {
    /// Scenario name.
    pub scenario: String,
    /// The timeline.
    pub timeline: Vec<LogLine>,
    /// Every provisioning round with its Decision.
    pub decisions: Vec<RoundReport>,
    /// Every Event recorded.
    pub events: Vec<Event>,
    /// The end state.
    #[serde(rename = "final")]
    pub final_state: FinalState,
    /// Virtual seconds the run covered.
    pub virtual_seconds: f64,
}

// === impl Walkthrough ===

impl Walkthrough {
    /// The timeline, one rendered line each.
    pub fn render(&self) -> String {
        let mut out: String = self.timeline.iter().map(|l| l.render() + "\n").collect();
        out.push_str(&format!(
            "final: {} node(s), {} instance(s), {} launched over {:.0}s of virtual time\n",
            self.final_state.nodes.len(),
            self.final_state.instances.len(),
            self.final_state.launches,
            self.virtual_seconds
        ));
        out
    }
}

/// Plays a scenario file's text.
pub fn run(text: &str) -> Result<Walkthrough, SimulatorError> {
    let scenario = Scenario::from_yaml(text)?;
    play(&scenario)
}

/// Plays a parsed scenario.
pub fn play(scenario: &Scenario) -> Result<Walkthrough, SimulatorError> {
    let start = scenario
        .start
        .as_deref()
        .and_then(clock::parse)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let clock = ManualClock::new(start);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture {
        clock: clock.clone(),
        lines: lines.clone(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(SimulatorError::Runtime)?;
    let result = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(Runner::new(scenario, clock.clone())?.play(scenario, &lines))
    });
    let (decisions, events, final_state) = result?;
    let timeline = lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Walkthrough {
        scenario: scenario.name.clone(),
        timeline,
        decisions,
        events,
        final_state,
        virtual_seconds: clock.elapsed().as_secs_f64(),
    })
}

struct Runner {
    cluster: SharedCluster,
    clock: Arc<ManualClock>,
    cloud: Arc<SimProvider>,
    writer: Arc<InMemoryWriter>,
    lifecycle: Lifecycle<SimProvider, InMemoryWriter>,
    deployments: BTreeMap<String, Deployment>,
    next_pod: BTreeMap<String, usize>,
}

type Played = (Vec<RoundReport>, Vec<Event>, FinalState);

// === impl Runner ===

impl Runner {
    fn new(scenario: &Scenario, clock: Arc<ManualClock>) -> Result<Self, SimulatorError> {
        let cluster = SharedCluster::new(Cluster::new());
        let cloud = Arc::new(SimProvider::new(
            &scenario.cluster,
            clock.clone(),
            &AwsCatalogOptions::default(),
        )?);
        let writer = Arc::new(InMemoryWriter::new(cluster.clone(), clock.clone()));
        let lifecycle = Lifecycle::new(
            cluster.clone(),
            cloud.clone(),
            writer.clone(),
            clock.clone(),
            LifecycleConfig::default(),
        );
        Ok(Self {
            cluster,
            clock,
            cloud,
            writer,
            lifecycle,
            deployments: BTreeMap::new(),
            next_pod: BTreeMap::new(),
        })
    }

    async fn play(
        mut self,
        scenario: &Scenario,
        lines: &Arc<Mutex<Vec<LogLine>>>,
    ) -> Result<Played, SimulatorError> {
        let start = self.clock.now();
        let mut rounds = Vec::new();
        for (index, step) in scenario.steps.iter().enumerate() {
            if let Some(at) = step.at {
                let until = clock::add(start, Duration::from_secs_f64(at.max(0.0)));
                self.run_until(until, &mut rounds).await?;
            }
            let vclock = self.clock.clone();
            let say = |message: String| {
                lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(LogLine {
                        time: format_ms(Clock::now(vclock.as_ref())),
                        level: "STEP".into(),
                        logger: "scenario".into(),
                        message,
                        fields: BTreeMap::new(),
                    });
            };
            match &step.action {
                Action::Apply(docs) => {
                    for d in docs {
                        let what = self.apply(index, d)?;
                        say(format!("kubectl apply: {what}"));
                    }
                }
                Action::Scale {
                    deployment,
                    replicas,
                } => {
                    let Some(d) = self.deployments.get_mut(deployment) else {
                        return Err(SimulatorError::NotFound {
                            index,
                            kind: "Deployment".into(),
                            key: deployment.clone(),
                        });
                    };
                    d.spec.get_or_insert_with(Default::default).replicas = Some(*replicas);
                    let name = deployment.split('/').nth(1).unwrap_or(deployment);
                    say(format!(
                        "kubectl scale deployment {name} --replicas {replicas}"
                    ));
                }
                Action::Delete { kind, key } => {
                    self.delete(index, kind, key)?;
                    say(format!(
                        "kubectl delete {} {}",
                        kind.to_lowercase(),
                        key.rsplit('/').next().unwrap_or(key)
                    ));
                }
                Action::Wait(secs) => {
                    say(format!("wait {secs}s"));
                    let until =
                        clock::add(self.clock.now(), Duration::from_secs_f64(secs.max(0.0)));
                    self.run_until(until, &mut rounds).await?;
                }
                Action::CapacityError(o) => {
                    self.cloud
                        .exhaust(&o.instance_type, &o.zone, &o.capacity_type);
                    say(format!(
                        "capacity error from now on for {} {} {}",
                        o.instance_type, o.zone, o.capacity_type
                    ));
                }
                Action::RestoreCapacity(o) => {
                    self.cloud
                        .restore(&o.instance_type, &o.zone, &o.capacity_type);
                    say(format!(
                        "capacity restored for {} {} {}",
                        o.instance_type, o.zone, o.capacity_type
                    ));
                }
            }
            self.emulate();
        }
        // Let what was started finish: open batches, drains, TTLs already running.
        let limit = clock::add(start, MAX_VIRTUAL_TIME);
        while !self.settled() && self.clock.now() < limit {
            let horizon = clock::add(self.clock.now(), Duration::from_secs(60));
            self.run_until(horizon, &mut rounds).await?;
        }
        let final_state = self.final_state().await?;
        Ok((rounds, self.writer.events(), final_state))
    }

    /// Whether nothing is in motion: no pod waiting for a batch, no node being deleted or
    /// marked empty.
    fn settled(&self) -> bool {
        let c = self.cluster.read();
        let pending = c
            .provisionable_pods(self.clock.now(), Duration::from_secs(20))
            .len();
        let moving = c.nodes().any(|n| {
            nodes::is_deleting(n) || nodes::annotation(n, nodes::EMPTINESS_TIMESTAMP).is_some()
        });
        pending == 0 && !moving
    }

    /// Runs the loops and the emulation until `until`, waking when a loop asks to.
    async fn run_until(
        &mut self,
        until: Timestamp,
        rounds: &mut Vec<RoundReport>,
    ) -> Result<(), SimulatorError> {
        loop {
            self.emulate();
            let tick = self.lifecycle.tick().await?;
            if let Some(r) = tick.round {
                rounds.push(r);
            }
            self.emulate();
            let now = self.clock.now();
            let floor = clock::add(now, MIN_REQUEUE);
            let next = tick.next.map_or(until, |n| n.max(floor).min(until));
            if next <= now {
                return Ok(());
            }
            self.clock
                .advance(Duration::try_from(next.duration_since(now)).unwrap_or(MIN_REQUEUE));
        }
    }

    fn apply(&mut self, index: usize, doc: &Value) -> Result<String, SimulatorError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let bad = |message: String| SimulatorError::Object {
            index,
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        let resource = match kind.as_str() {
            "Provisioner" => {
                // As the webhook would: default, then refuse an invalid one.
                let mut p = decode_provisioner(doc).map_err(|e| bad(e.to_string()))?;
                default_provisioner(&mut p.spec);
                let report = validate_provisioner(&p);
                if !report.is_valid() {
                    return Err(bad(report.to_string()));
                }
                Resource::Provisioner(Box::new(p))
            }
            "AWSNodeTemplate" => Resource::NodeTemplate(Box::new(
                decode_node_template(doc).map_err(|e| bad(e.to_string()))?,
            )),
            "Deployment" => {
                let mut d: Deployment = decode(doc).map_err(bad)?;
                d.metadata.namespace.get_or_insert_with(|| "default".into());
                let key = format!(
                    "{}/{}",
                    d.metadata.namespace.as_deref().unwrap_or("default"),
                    name
                );
                self.deployments.insert(key, d);
                return Ok(format!("deployment {name}"));
            }
            "Pod" => {
                let mut p: Pod = decode(doc).map_err(bad)?;
                p.metadata.namespace.get_or_insert_with(|| "default".into());
                Resource::Pod(std::sync::Arc::new(p))
            }
            "DaemonSet" => Resource::DaemonSet(Box::new(decode::<DaemonSet>(doc).map_err(bad)?)),
            "PodDisruptionBudget" => Resource::PodDisruptionBudget(Box::new(
                decode::<PodDisruptionBudget>(doc).map_err(bad)?,
            )),
            "Node" => Resource::Node(Box::new(decode::<Node>(doc).map_err(bad)?)),
            "Namespace" => Resource::Namespace(Box::new(decode::<Namespace>(doc).map_err(bad)?)),
            other => return Err(bad(format!("unsupported kind {other:?}"))),
        };
        self.cluster.write().apply(resource);
        Ok(format!("{} {name}", kind.to_lowercase()))
    }

    fn delete(&mut self, index: usize, kind: &str, key: &str) -> Result<(), SimulatorError> {
        let not_found = || SimulatorError::NotFound {
            index,
            kind: kind.to_string(),
            key: key.to_string(),
        };
        if kind == "Deployment" {
            self.deployments.remove(key).ok_or_else(not_found)?;
            return Ok(());
        }
        let k = match kind {
            "Provisioner" => Kind::Provisioner,
            "AWSNodeTemplate" => Kind::NodeTemplate,
            "Pod" => Kind::Pod,
            "DaemonSet" => Kind::DaemonSet,
            "PodDisruptionBudget" => Kind::PodDisruptionBudget,
            "Namespace" => Kind::Namespace,
            _ => Kind::Node,
        };
        if k == Kind::Node {
            // `kubectl delete node`: the finalizer holds it; the termination loop drains it.
            let now = self.clock.now();
            let mut c = self.cluster.write();
            let mut n = c.node(key).cloned().ok_or_else(not_found)?;
            n.metadata.deletion_timestamp = Some(Time(now));
            if nodes::has_finalizer(&n) {
                c.apply(Resource::Node(Box::new(n)));
            } else {
                c.delete(Kind::Node, key);
            }
            return Ok(());
        }
        self.cluster.write().delete(k, key);
        Ok(())
    }

    /// The least of kube-controller-manager, kube-scheduler and the kubelets.
    fn emulate(&mut self) {
        let now = self.clock.now();
        let mut c = self.cluster.write();
        // Kubelets: nodes register Ready; bound pods run; pods of vanished nodes go.
        let names: Vec<String> = c
            .nodes()
            .filter(|n| !nodes::is_ready(n) && !nodes::is_deleting(n))
            .map(|n| nodes::name(n).to_string())
            .collect();
        for name in names {
            if let Some(mut n) = c.node(&name).cloned() {
                n.status.get_or_insert_with(Default::default).conditions =
                    Some(vec![NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }]);
                c.apply(Resource::Node(Box::new(n)));
            }
        }
        let mut updates = Vec::new();
        let mut gone = Vec::new();
        for p in c.pods() {
            match pods::node_name(p) {
                Some(node) if c.node(node).is_none() => gone.push(pods::key(p)),
                Some(_)
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") =>
                {
                    let mut p = p.clone();
                    p.status.get_or_insert_with(PodStatus::default).phase = Some("Running".into());
                    updates.push(p);
                }
                _ => {}
            }
        }
        // kube-scheduler: nominated pods go to their Ready node.
        let nominated: Vec<(String, String)> = c
            .nominations()
            .map(|(p, n)| (p.clone(), n.node.clone()))
            .collect();
        for (pod, node) in nominated {
            if c.node(&node).is_some_and(nodes::is_ready) {
                if let Some(mut p) = c.pod(&pod).cloned() {
                    p.spec.get_or_insert_with(Default::default).node_name = Some(node);
                    p.status = Some(PodStatus {
                        phase: Some("Running".into()),
                        ..Default::default()
                    });
                    updates.push(p);
                }
            }
        }
        for p in updates {
            c.apply(Resource::Pod(std::sync::Arc::new(p)));
        }
        for k in gone {
            c.delete(Kind::Pod, &k);
        }
        // Deployments: keep `replicas` pods; pods of deleted Deployments go.
        let owned: Vec<(String, String)> = c
            .pods()
            .filter_map(|p| owner_deployment(p).map(|d| (d, pods::key(p))))
            .collect();
        for (d, key) in &owned {
            if !self.deployments.contains_key(d) {
                c.delete(Kind::Pod, key);
            }
        }
        for (key, d) in &self.deployments {
            let want =
                usize::try_from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0))
                    .unwrap_or(0);
            let mut have: Vec<String> = owned
                .iter()
                .filter(|(o, _)| o == key)
                .map(|(_, k)| k.clone())
                .collect();
            have.retain(|k| c.pod(k).is_some());
            have.sort_by_key(|k| std::cmp::Reverse(pod_ordinal(k)));
            while have.len() > want {
                if let Some(k) = have.first().cloned() {
                    c.delete(Kind::Pod, &k);
                    have.remove(0);
                }
            }
            for _ in have.len()..want {
                let n = self.next_pod.entry(key.clone()).or_insert(0);
                let pod = deployment_pod(d, key, *n, now);
                *n += 1;
                c.apply(Resource::Pod(std::sync::Arc::new(pod)));
            }
        }
    }

    async fn final_state(&self) -> Result<FinalState, SimulatorError> {
        let instances = self.cloud.list().await?;
        let c = self.cluster.read();
        Ok(FinalState {
            nodes: c.nodes().map(|n| nodes::name(n).to_string()).collect(),
            instances: instances.into_iter().map(|i| i.id).collect(),
            pods: c
                .pods()
                .map(|p| (pods::key(p), pods::node_name(p).unwrap_or("").to_string()))
                .collect(),
            launches: self.cloud.launches(),
            objects: c.to_list(),
        })
    }
}

const OWNER_KIND: &str = "ReplicaSet";

fn owner_deployment(p: &Pod) -> Option<String> {
    let o = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == OWNER_KIND)?;
    let deployment = o.name.strip_suffix("-rs")?;
    Some(format!(
        "{}/{deployment}",
        p.metadata.namespace.as_deref().unwrap_or("default")
    ))
}

fn pod_ordinal(key: &str) -> usize {
    key.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A replica of a Deployment, as kube-scheduler leaves it when nothing fits: pending and
/// marked `Unschedulable`.
fn deployment_pod(d: &Deployment, key: &str, ordinal: usize, now: Timestamp) -> Pod {
    let name = key.rsplit('/').next().unwrap_or(key);
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(format!("{name}-{ordinal}"));
    meta.namespace = d.metadata.namespace.clone();
    meta.creation_timestamp = Some(Time(now));
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: OWNER_KIND.into(),
        name: format!("{name}-rs"),
        uid: format!("{name}-rs-uid"),
        controller: Some(true),
        ..Default::default()
    }]);
    Pod {
        metadata: meta,
        spec: template.spec,
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/0 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn decode<T: serde::de::DeserializeOwned>(doc: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })
}

fn format_ms(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A tracing layer that keeps the loops' events with the virtual time.
struct Capture {
    clock: Arc<ManualClock>,
    lines: Arc<Mutex<Vec<LogLine>>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .insert(field.name().to_string(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .insert(field.name().to_string(), format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("controller.") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let logger = match f.fields.get("provisioner") {
            Some(p) => format!("{}/{p}", meta.target()),
            None => meta.target().to_string(),
        };
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(LogLine {
                time: format_ms(Clock::now(self.clock.as_ref())),
                level: meta.level().to_string(),
                logger,
                message: f.message,
                fields: f.fields,
            });
    }
}

#[cfg(test)]
mod tests;
