//! The lifecycle rules, each over the in-memory index, the `sim` cloud and a manual clock.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeCondition, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::api::labels;
use crate::api::provisioner::Limits;
use crate::cloud::instance_types::AwsCatalogOptions;
use crate::cloud::provider::{CloudProvider, Instance, NodeRequest};
use crate::cloud::sim::SimProvider;
use crate::cluster::fixtures::*;
use crate::cluster::{nodes, pods, Cluster, Kind, Resource};
use crate::scheduling::InstanceType;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A cloud that spends the same operation budget as the writer (a stop between steps).
struct Stoppable {
    inner: Arc<SimProvider>,
    budget: Arc<AtomicUsize>,
}

impl CloudProvider for Stoppable {
    async fn instance_types(
        &self,
        p: &crate::api::Provisioner,
    ) -> Result<Arc<[InstanceType]>, CloudError> {
        self.inner.instance_types(p).await
    }
    async fn create(&self, r: &NodeRequest) -> Result<Instance, CloudError> {
        if !writer::take_budget(&self.budget) {
            return Err(stopped());
        }
        self.inner.create(r).await
    }
    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        if !writer::take_budget(&self.budget) {
            return Err(stopped());
        }
        self.inner.delete(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<Instance>, CloudError> {
        self.inner.get(id).await
    }
    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.inner.list().await
    }
}

fn stopped() -> CloudError {
    CloudError::Transport {
        operation: "CreateFleet",
        message: "controller stopped".into(),
    }
}

struct World {
    cluster: SharedCluster,
    clock: Arc<ManualClock>,
    cloud: Arc<SimProvider>,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new(t0());
        let cloud = Arc::new(
            SimProvider::new("demo", clock.clone(), &AwsCatalogOptions::default()).unwrap(),
        );
        let mut c = Cluster::new();
        c.apply(Resource::Provisioner(Box::new(provisioner("default"))));
        Self {
            cluster: SharedCluster::new(c),
            clock,
            cloud,
        }
    }

    fn lifecycle(&self) -> (Lifecycle<SimProvider, InMemoryWriter>, Arc<InMemoryWriter>) {
        let w = Arc::new(InMemoryWriter::new(
            self.cluster.clone(),
            self.clock.clone(),
        ));
        let lc = Lifecycle::new(
            self.cluster.clone(),
            self.cloud.clone(),
            w.clone(),
            self.clock.clone(),
            LifecycleConfig::default(),
        );
        (lc, w)
    }

    fn stoppable(
        &self,
        budget: usize,
    ) -> (Lifecycle<Stoppable, InMemoryWriter>, Arc<InMemoryWriter>) {
        let b = Arc::new(AtomicUsize::new(budget));
        let w = Arc::new(
            InMemoryWriter::new(self.cluster.clone(), self.clock.clone()).with_budget(b.clone()),
        );
        let cloud = Arc::new(Stoppable {
            inner: self.cloud.clone(),
            budget: b,
        });
        let lc = Lifecycle::new(
            self.cluster.clone(),
            cloud,
            w.clone(),
            self.clock.clone(),
            LifecycleConfig::default(),
        );
        (lc, w)
    }

    fn add_pods(&self, n: usize, cpu: &str) {
        let mut c = self.cluster.write();
        for i in 0..n {
            c.apply(Resource::Pod(std::sync::Arc::new(pending_pod(
                &format!("inflate-{i}"),
                cpu,
            ))));
        }
    }

    /// The kubelets: every node becomes Ready.
    fn kubelet(&self) {
        let mut c = self.cluster.write();
        let names: Vec<_> = c
            .nodes()
            .filter(|n| !nodes::is_ready(n))
            .map(|n| nodes::name(n).to_string())
            .collect();
        for name in names {
            let mut n = c.node(&name).unwrap().clone();
            n.status.get_or_insert_with(Default::default).conditions = Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]);
            c.apply(Resource::Node(Box::new(n)));
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn bound(&self) -> usize {
        self.cluster
            .read()
            .pods()
            .filter(|p| pods::node_name(p).is_some())
            .count()
    }

    fn instances(&self) -> Vec<Instance> {
        block_on(self.cloud.list()).unwrap()
    }
}

fn events(w: &InMemoryWriter, reason: &str) -> Vec<Event> {
    w.events()
        .into_iter()
        .filter(|e| e.reason == reason)
        .collect()
}

// === provisioning ===

#[test]
fn an_invalid_stored_provisioner_launches_nothing_and_says_why_once() {
    let world = World::new();
    {
        // Both provider and providerRef: the webhook refuses it; it may be stored from before.
        let mut c = world.cluster.write();
        let mut p = c.provisioner("default").unwrap().clone();
        p.spec.provider = Some(Default::default());
        c.apply(Resource::Provisioner(Box::new(p)));
    }
    let (lc, w) = world.lifecycle();
    world.add_pods(3, "1");
    assert!(lc.provisioning.observe().is_some());
    world.advance(2);
    let report = block_on(lc.provisioning.reconcile()).unwrap().unwrap();
    assert!(report.launched.is_empty());
    assert!(world.instances().is_empty());
    let why = &report.invalid_provisioners["default"];
    assert!(why.contains("provider"), "{why}");
    let ready = |w: &World| {
        w.cluster
            .read()
            .provisioner("default")
            .unwrap()
            .status
            .clone()
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
    };
    let c = ready(&world).expect("Ready condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("Invalid"))
    );
    assert_eq!(c.message.as_deref(), Some(why.as_str()));
    let e = events(&w, "InvalidProvisioner");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].regarding.kind, "Provisioner");
    // The pods are reported as fitting nowhere, not silently dropped.
    assert_eq!(
        report.decision.unschedulable.len(),
        3,
        "{:?}",
        report.decision
    );
    // Another round: no second Event while nothing changed.
    world.advance(2);
    let _ = block_on(lc.provisioning.round()).unwrap();
    assert_eq!(events(&w, "InvalidProvisioner").len(), 1);
    // Fixed: Ready again, and the pods get their nodes.
    {
        let mut c = world.cluster.write();
        let mut p = c.provisioner("default").unwrap().clone();
        p.spec.provider = None;
        c.apply(Resource::Provisioner(Box::new(p)));
    }
    world.advance(2);
    let report = block_on(lc.provisioning.round()).unwrap();
    assert!(report.invalid_provisioners.is_empty());
    assert!(!report.launched.is_empty());
    assert_eq!(ready(&world).map(|c| c.status), Some("True".to_string()));
    assert_eq!(world.bound(), 3);
}

#[test]
fn the_batch_waits_for_the_idle_window_then_provisions_and_binds() {
    let world = World::new();
    let (lc, _) = world.lifecycle();
    world.add_pods(10, "1");
    let deadline = lc.provisioning.observe().unwrap();
    assert_eq!(deadline, clock::add(t0(), Duration::from_secs(1)));
    assert!(
        block_on(lc.provisioning.reconcile()).unwrap().is_none(),
        "batch still open"
    );
    world.advance(1);
    let report = block_on(lc.provisioning.reconcile()).unwrap().unwrap();
    assert_eq!(report.pods, 10);
    assert!(!report.launched.is_empty());
    assert_eq!(world.bound(), 10);
    assert_eq!(world.instances().len(), report.launched.len());
    // Every node: ours, with finalizer, providerID, labels and the decision annotation.
    let c = world.cluster.read();
    for l in &report.launched {
        let n = c.node(&l.node).unwrap();
        assert!(nodes::has_finalizer(n));
        assert_eq!(nodes::instance_id(n), Some(l.instance_id.as_str()));
        let lab = n.metadata.labels.as_ref().unwrap();
        assert_eq!(lab[labels::PROVISIONER_NAME], "default");
        assert_eq!(lab[labels::INSTANCE_TYPE], l.instance_type);
        assert_eq!(lab[labels::ZONE], l.zone);
        assert_eq!(lab[labels::CAPACITY_TYPE], "on-demand");
        assert_eq!(lab[labels::ARCH], "amd64");
        let d = nodes::annotation(n, nodes::DECISION_ANNOTATION).unwrap();
        assert!(d.contains("\"provisioner\":\"default\""), "{d}");
    }
    // status.resources holds what the nodes hold.
    let p = c.provisioner("default").unwrap();
    assert!(p.status.as_ref().unwrap().resources.contains_key("cpu"));
}

#[test]
fn a_provisioner_changed_while_the_batch_is_open_is_packed_as_it_is_at_the_round() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    world.add_pods(1, "1");
    // The batch is open: the catalog pass is done for the Provisioner as it is now (m5.large
    // or m5.2xlarge; one 1-CPU pod takes an m5.large), and nothing is written or launched.
    assert!(block_on(lc.provisioning.reconcile()).unwrap().is_none());
    assert!(world.instances().is_empty());
    assert!(w.events().is_empty());
    // Then the Provisioner changes: m5.2xlarge only.
    {
        let mut c = world.cluster.write();
        let mut p = c.provisioner("default").unwrap().clone();
        for r in &mut p.spec.requirements {
            if r.key == labels::INSTANCE_TYPE {
                r.values = vec!["m5.2xlarge".into()];
            }
        }
        c.apply(Resource::Provisioner(Box::new(p)));
    }
    world.advance(1);
    let report = block_on(lc.provisioning.reconcile()).unwrap().unwrap();
    let types: Vec<&str> = report
        .launched
        .iter()
        .map(|l| l.instance_type.as_str())
        .collect();
    assert_eq!(types, ["m5.2xlarge"]);
    assert_eq!(world.bound(), 1);
}

#[test]
fn new_nodes_carry_taints_and_startup_taints_and_in_flight_nodes_are_filled_first() {
    let world = World::new();
    {
        let mut p = provisioner("default");
        p.spec.startup_taints = vec![crate::api::provisioner::Taint {
            key: "example.com/agent".into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        world
            .cluster
            .write()
            .apply(Resource::Provisioner(Box::new(p)));
    }
    let (lc, _) = world.lifecycle();
    world.add_pods(1, "500m");
    let r = block_on(lc.provisioning.round()).unwrap();
    assert_eq!(r.launched.len(), 1);
    let node = r.launched[0].node.clone();
    let taints = world
        .cluster
        .read()
        .node(&node)
        .unwrap()
        .spec
        .clone()
        .unwrap()
        .taints
        .unwrap();
    assert_eq!(taints[0].key, "example.com/agent");
    // A second pod while the node is still in flight goes to it, bound, with no new launch.
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(pending_pod(
            "late", "500m",
        ))));
    let r = block_on(lc.provisioning.round()).unwrap();
    assert!(r.launched.is_empty());
    assert_eq!(r.bound_existing[&node], ["default/late"]);
    assert_eq!(world.cloud.launches(), 1);
}

#[test]
fn pods_fitting_on_a_ready_node_are_nominated_not_bound() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    world.add_pods(1, "500m");
    block_on(lc.provisioning.round()).unwrap();
    world.kubelet();
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(pending_pod(
            "late", "500m",
        ))));
    let r = block_on(lc.provisioning.round()).unwrap();
    assert_eq!(
        r.nominated.values().next().unwrap(),
        &["default/late".to_string()]
    );
    assert!(pods::node_name(world.cluster.read().pod("default/late").unwrap()).is_none());
    assert_eq!(events(&w, "Nominated").len(), 1);
    // A nominated pod is not provisioned for again while the nomination holds.
    let r = block_on(lc.provisioning.round()).unwrap();
    assert_eq!(r.pods, 0);
}

#[test]
fn a_pod_that_fits_nowhere_gets_an_event_with_the_engines_reason() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    world.add_pods(1, "64");
    let r = block_on(lc.provisioning.round()).unwrap();
    assert!(r.launched.is_empty());
    let e = events(&w, "FailedProvisioning");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].regarding.name, "inflate-0");
    assert!(
        e[0].message.contains("provisioner default"),
        "{}",
        e[0].message
    );
    assert!(e[0].message.contains("cpu"), "{}", e[0].message);
}

#[test]
fn a_failed_launch_requeues_its_pods_and_skips_the_unavailable_offering() {
    let world = World::new();
    for z in ["us-east-1a", "us-east-1b"] {
        for t in ["m5.large", "m5.2xlarge"] {
            world.cloud.exhaust(t, z, "on-demand");
        }
    }
    let (lc, w) = world.lifecycle();
    world.add_pods(1, "1");
    world.advance(0);
    lc.provisioning.observe();
    world.advance(1);
    let r = block_on(lc.provisioning.reconcile()).unwrap().unwrap();
    assert_eq!(r.not_launched.len(), 1);
    assert_eq!(events(&w, "FailedLaunch").len(), 1);
    assert_eq!(world.bound(), 0);
    // The pod is batched again; capacity comes back in one zone.
    world.cloud.restore("m5.large", "us-east-1b", "on-demand");
    world.advance(200); // past the 3-minute unavailable window
    assert!(
        lc.provisioning.observe().is_some(),
        "the pod re-opens a batch"
    );
    world.advance(1);
    let r = block_on(lc.provisioning.reconcile()).unwrap().unwrap();
    assert_eq!(r.launched.len(), 1);
    assert_eq!(r.launched[0].zone, "us-east-1b");
    assert_eq!(world.bound(), 1);
}

#[test]
fn limits_count_the_nodes_a_provisioner_already_holds() {
    let world = World::new();
    {
        let mut p = provisioner("default");
        p.spec.limits = Some(Limits {
            resources: [("cpu".to_string(), crate::api::Quantity::new("4"))].into(),
        });
        let mut c = world.cluster.write();
        c.apply(Resource::Provisioner(Box::new(p)));
        // A node being deleted still holds 2 CPU of the limit.
        let mut n = owned_node("old", "default", "i-old", t0());
        n.metadata.deletion_timestamp = Some(Time(t0()));
        c.apply(Resource::Node(Box::new(n)));
    }
    let (lc, w) = world.lifecycle();
    world.add_pods(3, "1500m");
    let r = block_on(lc.provisioning.round()).unwrap();
    // 2 CPU held + one m5.large (2 CPU) reaches the limit of 4: one launch, the rest wait.
    assert_eq!(r.launched.len(), 1, "{r:?}");
    assert_eq!(world.bound(), 1);
    let refused: Vec<_> = r.not_launched.iter().map(|n| n.reason.clone()).collect();
    assert!(
        refused.iter().all(|m| m.contains("limit cpu=4")),
        "{refused:?}"
    );
    assert_eq!(
        events(&w, "FailedLaunch").len() + events(&w, "FailedProvisioning").len(),
        2
    );
}

// === emptiness ===

fn one_ready_node(world: &World, lc: &Lifecycle<SimProvider, InMemoryWriter>) -> String {
    world.add_pods(1, "1");
    let r = block_on(lc.provisioning.round()).unwrap();
    world.kubelet();
    r.launched[0].node.clone()
}

#[test]
fn an_empty_node_is_annotated_then_deleted_after_the_ttl() {
    let world = World::new();
    let (lc, _) = world.lifecycle();
    let node = one_ready_node(&world, &lc);
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(
        nodes::annotation(
            world.cluster.read().node(&node).unwrap(),
            nodes::EMPTINESS_TIMESTAMP
        )
        .is_none(),
        "has a pod"
    );
    world.cluster.write().delete(Kind::Pod, "default/inflate-0");
    // Received a pod in the last round: skipped.
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(
        nodes::annotation(
            world.cluster.read().node(&node).unwrap(),
            nodes::EMPTINESS_TIMESTAMP
        )
        .is_none(),
        "recent placement"
    );
    world.advance(10);
    let next = block_on(lc.emptiness.reconcile()).unwrap();
    let stamp = nodes::annotation(
        world.cluster.read().node(&node).unwrap(),
        nodes::EMPTINESS_TIMESTAMP,
    )
    .map(str::to_string);
    assert_eq!(
        stamp.as_deref(),
        Some(clock::format(world.clock.now()).as_str())
    );
    assert_eq!(
        next,
        Some(clock::add(world.clock.now(), Duration::from_secs(30)))
    );
    world.advance(29);
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(!nodes::is_deleting(
        world.cluster.read().node(&node).unwrap()
    ));
    world.advance(1);
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(nodes::is_deleting(
        world.cluster.read().node(&node).unwrap()
    ));
    // The finalizer finishes it.
    block_on(lc.termination.reconcile()).unwrap();
    assert!(world.cluster.read().node(&node).is_none());
    assert!(world.instances().is_empty());
}

#[test]
fn the_emptiness_annotation_goes_when_a_pod_lands_and_daemons_do_not_count() {
    let world = World::new();
    let (lc, _) = world.lifecycle();
    let node = one_ready_node(&world, &lc);
    world.cluster.write().delete(Kind::Pod, "default/inflate-0");
    let mut ds = bound_pod("ds", "100m", &node);
    ds.metadata.owner_references = Some(vec![OwnerReference {
        kind: "DaemonSet".into(),
        name: "ds".into(),
        api_version: "apps/v1".into(),
        uid: "u".into(),
        ..Default::default()
    }]);
    let mut done = bound_pod("done", "100m", &node);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(ds)));
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(done)));
    world.advance(10);
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(nodes::annotation(
        world.cluster.read().node(&node).unwrap(),
        nodes::EMPTINESS_TIMESTAMP
    )
    .is_some());
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(bound_pod(
            "new", "1", &node,
        ))));
    block_on(lc.emptiness.reconcile()).unwrap();
    assert!(nodes::annotation(
        world.cluster.read().node(&node).unwrap(),
        nodes::EMPTINESS_TIMESTAMP
    )
    .is_none());
}

// === expiry ===

fn expiring_world(ttl: i64) -> World {
    let world = World::new();
    let mut p = provisioner("default");
    p.spec.ttl_seconds_until_expired = Some(ttl);
    p.spec.ttl_seconds_after_empty = None;
    let mut c = world.cluster.write();
    c.apply(Resource::Provisioner(Box::new(p)));
    for (name, age) in [("young", 10), ("oldest", 300), ("old", 200)] {
        let created = t0() - k8s_openapi::jiff::SignedDuration::from_secs(age);
        c.apply(Resource::Node(Box::new(owned_node(
            name,
            "default",
            &format!("i-{name}"),
            created,
        ))));
        c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
            &format!("p-{name}"),
            "1",
            name,
        ))));
    }
    drop(c);
    world
}

#[test]
fn expiry_deletes_one_node_at_a_time_oldest_first() {
    let world = expiring_world(100);
    let (lc, _) = world.lifecycle();
    block_on(lc.expiry.reconcile()).unwrap();
    let deleting = |w: &World| -> Vec<String> {
        w.cluster
            .read()
            .nodes()
            .filter(|n| nodes::is_deleting(n))
            .map(|n| nodes::name(n).to_string())
            .collect()
    };
    assert_eq!(deleting(&world), ["oldest"]);
    block_on(lc.expiry.reconcile()).unwrap();
    assert_eq!(
        deleting(&world),
        ["oldest"],
        "waits for the first to finish"
    );
    world.cluster.write().delete(Kind::Node, "oldest");
    block_on(lc.expiry.reconcile()).unwrap();
    assert_eq!(deleting(&world), ["old"]);
}

#[test]
fn expiry_skips_do_not_evict_and_pdb_blocked_nodes_with_an_event() {
    let world = expiring_world(100);
    {
        let mut c = world.cluster.write();
        let mut p = bound_pod("p-oldest", "1", "oldest");
        p.metadata.annotations =
            Some([(pods::DO_NOT_EVICT.to_string(), "true".to_string())].into());
        c.apply(Resource::Pod(std::sync::Arc::new(p)));
        let mut q = bound_pod("p-old", "1", "old");
        q.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        c.apply(Resource::Pod(std::sync::Arc::new(q)));
        c.apply(Resource::PodDisruptionBudget(Box::new(pdb("db", 1))));
    }
    let (lc, w) = world.lifecycle();
    let next = block_on(lc.expiry.reconcile()).unwrap();
    assert!(next.is_some());
    assert!(world.cluster.read().nodes().all(|n| !nodes::is_deleting(n)));
    let e = events(&w, "ExpiryBlocked");
    assert_eq!(e.len(), 2);
    assert!(e.iter().any(|e| e
        .message
        .contains("pod default/p-oldest has annotation karpenter.sh/do-not-evict")));
    assert!(e.iter().any(|e| e
        .message
        .contains("PodDisruptionBudget default/db allows no disruption of pod default/p-old")));
}

fn pdb(app: &str, min_available: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(app.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            min_available: Some(IntOrString::Int(min_available)),
            ..Default::default()
        }),
        status: None,
    }
}

// === termination ===

fn pod_with(name: &str, node: &str, f: impl FnOnce(&mut Pod)) -> Pod {
    let mut p = bound_pod(name, "100m", node);
    f(&mut p);
    p
}

#[test]
fn termination_cordons_evicts_non_critical_first_then_terminates_and_removes_the_finalizer() {
    let world = World::new();
    let (lc, _) = world.lifecycle();
    let node = one_ready_node(&world, &lc);
    {
        let mut c = world.cluster.write();
        c.apply(Resource::Pod(std::sync::Arc::new(pod_with(
            "critical",
            &node,
            |p| {
                p.spec.as_mut().unwrap().priority_class_name =
                    Some("system-cluster-critical".into());
            },
        ))));
        c.apply(Resource::Pod(std::sync::Arc::new(pod_with(
            "daemon",
            &node,
            |p| {
                p.metadata.owner_references = Some(vec![OwnerReference {
                    kind: "DaemonSet".into(),
                    name: "d".into(),
                    api_version: "apps/v1".into(),
                    uid: "u".into(),
                    ..Default::default()
                }]);
            },
        ))));
        c.apply(Resource::Pod(std::sync::Arc::new(pod_with(
            "mirror",
            &node,
            |p| {
                p.metadata.annotations =
                    Some([(pods::MIRROR_POD.to_string(), "x".to_string())].into());
            },
        ))));
    }
    block_on(InMemoryWriter::new(world.cluster.clone(), world.clock.clone()).delete_node(&node))
        .unwrap();
    // Pass 1: cordon, evict the non-critical pod only.
    let next = block_on(lc.termination.reconcile()).unwrap();
    assert!(next.is_some());
    {
        let c = world.cluster.read();
        assert!(nodes::is_cordoned(c.node(&node).unwrap()));
        assert!(c.pod("default/inflate-0").is_none());
        assert!(c.pod("default/critical").is_some());
    }
    // Pass 2: the critical pod; pass 3: terminate and let go.
    block_on(lc.termination.reconcile()).unwrap();
    assert!(world.cluster.read().pod("default/critical").is_none());
    assert_eq!(world.instances().len(), 1);
    block_on(lc.termination.reconcile()).unwrap();
    let c = world.cluster.read();
    assert!(c.node(&node).is_none());
    assert!(c.pod("default/daemon").is_some() && c.pod("default/mirror").is_some());
    drop(c);
    assert!(world.instances().is_empty());
}

#[test]
fn a_pdb_holds_the_drain_with_backoff_and_says_so_until_relaxed() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    let node = one_ready_node(&world, &lc);
    world
        .cluster
        .write()
        .apply(Resource::PodDisruptionBudget(Box::new(pdb("inflate", 1))));
    block_on(w.delete_node(&node)).unwrap();
    let next = block_on(lc.termination.reconcile()).unwrap().unwrap();
    assert_eq!(next, clock::add(world.clock.now(), Duration::from_secs(1)));
    let e = events(&w, "DrainBlocked");
    assert_eq!(e.len(), 1);
    assert!(e[0]
        .message
        .contains("PodDisruptionBudget default/inflate blocks eviction of pod default/inflate-0"));
    let c = world.cluster.read();
    assert!(
        nodes::annotation(c.node(&node).unwrap(), nodes::DRAIN_BLOCKED)
            .unwrap()
            .contains("default/inflate")
    );
    drop(c);
    // Backoff: retried after 1 s, then 2 s later, then 4 s later; one Event per blocker.
    let attempts_at = |secs: u64| {
        world.advance(secs);
        let before = w.writes();
        block_on(lc.termination.reconcile()).unwrap();
        w.writes() - before
    };
    assert_eq!(attempts_at(1), 1, "first retry after 1 s");
    assert_eq!(attempts_at(1), 0, "backing off 2 s");
    assert_eq!(attempts_at(1), 1);
    assert_eq!(attempts_at(3), 0, "backing off 4 s");
    assert_eq!(attempts_at(1), 1);
    assert_eq!(events(&w, "DrainBlocked").len(), 1);
    assert_eq!(
        world.instances().len(),
        1,
        "not terminated while pods remain"
    );
    // Relax the budget.
    world
        .cluster
        .write()
        .delete(Kind::PodDisruptionBudget, "default/inflate");
    world.advance(10);
    block_on(lc.termination.reconcile()).unwrap();
    block_on(lc.termination.reconcile()).unwrap();
    assert!(world.cluster.read().node(&node).is_none());
    assert!(world.instances().is_empty());
}

#[test]
fn pods_tolerating_the_cordon_and_terminal_pods_do_not_hold_the_drain() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    let node = one_ready_node(&world, &lc);
    world.cluster.write().delete(Kind::Pod, "default/inflate-0");
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(pod_with(
            "tolerant",
            &node,
            |p| {
                p.spec.as_mut().unwrap().tolerations =
                    Some(vec![k8s_openapi::api::core::v1::Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]);
            },
        ))));
    world
        .cluster
        .write()
        .apply(Resource::Pod(std::sync::Arc::new(pod_with(
            "done",
            &node,
            |p| {
                p.status.as_mut().unwrap().phase = Some("Failed".into());
            },
        ))));
    block_on(w.delete_node(&node)).unwrap();
    assert_eq!(block_on(lc.termination.reconcile()).unwrap(), None);
    assert!(world.cluster.read().node(&node).is_none());
    assert!(world.cluster.read().pod("default/tolerant").is_some());
}

// === garbage collection ===

#[test]
fn gc_terminates_tagged_instances_without_a_node_after_the_grace_and_never_foreign_ones() {
    let world = World::new();
    let (lc, _) = world.lifecycle();
    let mut req = NodeRequest {
        provisioner: provisioner("gone"),
        instance_types: vec!["m5.large".into()],
        capacity_types: Default::default(),
        zones: Default::default(),
        labels: Default::default(),
        taints: vec![],
        client_token: "orphan".into(),
    };
    req.capacity_types.insert("on-demand".into());
    let orphan = block_on(world.cloud.create(&req)).unwrap();
    world
        .cloud
        .add_foreign_instance("i-foreign", "m5.large", "us-east-1a");
    block_on(lc.gc.collect()).unwrap();
    assert_eq!(world.instances().len(), 1, "within the grace period");
    world.advance(119);
    block_on(lc.gc.collect()).unwrap();
    assert_eq!(world.instances().len(), 1);
    world.advance(1);
    block_on(lc.gc.collect()).unwrap();
    assert!(world.instances().is_empty());
    assert!(block_on(world.cloud.get(&orphan.id))
        .unwrap()
        .unwrap()
        .state
        .is_terminating());
    assert!(
        block_on(world.cloud.get("i-foreign")).unwrap().is_none(),
        "never visible, never touched"
    );
}

#[test]
fn gc_deletes_a_node_that_never_became_ready_and_one_whose_instance_is_gone() {
    let world = World::new();
    let (lc, w) = world.lifecycle();
    world.add_pods(1, "1");
    let r = block_on(lc.provisioning.round()).unwrap();
    let never = r.launched[0].node.clone();
    world
        .cluster
        .write()
        .apply(Resource::Node(Box::new(owned_node(
            "lost",
            "default",
            "i-lost",
            t0(),
        ))));
    block_on(lc.gc.collect()).unwrap();
    {
        let c = world.cluster.read();
        assert!(!nodes::is_deleting(c.node(&never).unwrap()));
        assert!(
            nodes::is_deleting(c.node("lost").unwrap()),
            "its instance does not exist"
        );
    }
    world.advance(15 * 60);
    block_on(lc.gc.collect()).unwrap();
    assert!(nodes::is_deleting(
        world.cluster.read().node(&never).unwrap()
    ));
    for _ in 0..3 {
        block_on(lc.termination.reconcile()).unwrap();
    }
    assert_eq!(world.cluster.read().nodes().count(), 0);
    assert!(world.instances().is_empty());
    let _ = w;
}

// === crash safety ===

/// Runs a whole provisioning round with a budget of `stop_after` operations, then restarts
/// with fresh loops over the stored state (the index and the cloud).
fn provisioning_with_stop(stop_after: usize, pods: usize) -> World {
    let world = World::new();
    world.add_pods(pods, "1");
    {
        let (lc, _) = world.stoppable(stop_after);
        let _ = block_on(lc.provisioning.round());
    }
    let (lc, _) = world.lifecycle();
    block_on(lc.provisioning.round()).unwrap();
    world
}

#[test]
fn a_provisioning_round_stopped_between_any_two_steps_resumes_without_duplicates_leaks_or_lost_pods(
) {
    // The uninterrupted round, for reference.
    let reference = provisioning_with_stop(usize::MAX, 10);
    let launches = reference.cloud.launches();
    let ops = {
        let world = World::new();
        world.add_pods(10, "1");
        let (lc, w) = world.lifecycle();
        block_on(lc.provisioning.round()).unwrap();
        w.writes() + launches
    };
    assert!(launches >= 1 && ops > launches);
    for stop in 0..=ops {
        let world = provisioning_with_stop(stop, 10);
        assert_eq!(
            world.cloud.launches(),
            launches,
            "stop after {stop} operations: duplicate launch"
        );
        let instances = world.instances();
        let c = world.cluster.read();
        for i in &instances {
            assert!(
                c.node_for_instance(&i.id).is_some(),
                "stop after {stop}: instance {} has no node",
                i.id
            );
        }
        assert_eq!(c.nodes().count(), instances.len(), "stop after {stop}");
        assert_eq!(c.pods().count(), 10, "stop after {stop}: pod lost");
        assert!(
            c.pods().all(|p| pods::node_name(p).is_some()),
            "stop after {stop}: pod left unbound"
        );
    }
}

#[test]
fn a_termination_stopped_between_any_two_steps_finishes_and_never_lets_the_node_go_first() {
    for stop in 0..8 {
        let world = World::new();
        let (lc, w) = world.lifecycle();
        let node = one_ready_node(&world, &lc);
        world
            .cluster
            .write()
            .apply(Resource::Pod(std::sync::Arc::new(bound_pod(
                "second", "100m", &node,
            ))));
        block_on(w.delete_node(&node)).unwrap();
        {
            let (stopped, _) = world.stoppable(stop);
            let _ = block_on(stopped.termination.reconcile());
            let c = world.cluster.read();
            if c.node(&node).is_none() {
                drop(c);
                assert!(
                    world.instances().is_empty(),
                    "stop after {stop}: node gone before its instance"
                );
            }
        }
        let (lc, _) = world.lifecycle();
        for _ in 0..4 {
            block_on(lc.termination.reconcile()).unwrap();
        }
        assert!(
            world.cluster.read().node(&node).is_none(),
            "stop after {stop}"
        );
        assert!(
            world.instances().is_empty(),
            "stop after {stop}: leaked instance"
        );
    }
}
