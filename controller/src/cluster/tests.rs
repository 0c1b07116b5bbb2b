use std::time::Duration;

use k8s_openapi::api::core::v1::Taint as KubeTaint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::*;
use super::*;
use crate::api::provisioner::Taint;
use crate::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};

fn opts(now: Timestamp) -> SnapshotOptions {
    SnapshotOptions {
        now,
        nomination_ttl: Duration::from_secs(20),
    }
}

fn catalog() -> Vec<InstanceType> {
    builtin_us_east_1(&AwsCatalogOptions::default()).unwrap()
}

#[test]
fn pods_by_node_follow_binding_and_deletion() {
    let mut c = Cluster::new();
    c.apply(Resource::Pod(std::sync::Arc::new(pending_pod("a", "1"))));
    assert!(c.pods_on("n1").is_empty());
    let r0 = c.pod_revision("default/a").unwrap();
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "a", "1", "n1",
    ))));
    assert_eq!(c.pods_on("n1").len(), 1);
    assert!(c.pod_revision("default/a").unwrap() > r0);
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "a", "1", "n2",
    ))));
    assert!(c.pods_on("n1").is_empty());
    assert_eq!(c.pods_on("n2").len(), 1);
    c.delete(Kind::Pod, "default/a");
    assert!(c.pods_on("n2").is_empty());
    assert!(c.pod("default/a").is_none());
}

#[test]
fn replace_drops_objects_missing_from_a_relist() {
    let mut c = Cluster::new();
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "a", "1", "n1",
    ))));
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "b", "1", "n1",
    ))));
    c.replace(
        Kind::Pod,
        vec![Resource::Pod(std::sync::Arc::new(bound_pod(
            "b", "1", "n1",
        )))],
    );
    assert!(c.pod("default/a").is_none());
    assert_eq!(c.pods_on("n1").len(), 1);
}

#[test]
fn nominated_pods_are_not_provisionable_while_their_node_is_coming() {
    let mut c = Cluster::new();
    let now = t0();
    c.apply(Resource::Node(Box::new(owned_node(
        "n1", "default", "i-1", now,
    ))));
    c.apply(Resource::Pod(std::sync::Arc::new(pending_pod("a", "1"))));
    c.apply(Resource::Pod(std::sync::Arc::new(pending_pod("b", "1"))));
    assert_eq!(c.provisionable_pods(now, Duration::from_secs(20)).len(), 2);
    c.nominate("default/a", "n1", now);
    let left = c.provisionable_pods(now, Duration::from_secs(20));
    assert_eq!(left.len(), 1);
    assert_eq!(pods::key(left[0]), "default/b");
    // The nomination lapses after its TTL ...
    let later = now + k8s_openapi::jiff::SignedDuration::from_secs(21);
    assert_eq!(
        c.provisionable_pods(later, Duration::from_secs(20)).len(),
        2
    );
    // ... and when its node goes.
    c.delete(Kind::Node, "n1");
    assert_eq!(c.provisionable_pods(now, Duration::from_secs(20)).len(), 2);
}

#[test]
fn snapshot_orders_provisioners_and_carries_every_node() {
    let mut c = Cluster::new();
    let now = t0();
    let mut heavy = provisioner("zz-heavy");
    heavy.spec.weight = Some(50);
    let mut going = provisioner("going");
    going.metadata.deletion_timestamp = Some(Time(now));
    c.apply(Resource::Provisioner(Box::new(provisioner("default"))));
    c.apply(Resource::Provisioner(Box::new(heavy)));
    c.apply(Resource::Provisioner(Box::new(going)));
    c.apply(Resource::Node(Box::new(owned_node(
        "ours", "default", "i-1", now,
    ))));
    let mut foreign = owned_node("foreign", "default", "i-2", now);
    foreign.metadata.labels = None;
    c.apply(Resource::Node(Box::new(foreign)));
    let mut cordoned = owned_node("cordoned", "default", "i-3", now);
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    c.apply(Resource::Node(Box::new(cordoned)));
    let mut deleting = owned_node("deleting", "default", "i-4", now);
    deleting.metadata.deletion_timestamp = Some(Time(now));
    c.apply(Resource::Node(Box::new(deleting)));
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "on-ours", "1", "ours",
    ))));
    c.apply(Resource::Pod(std::sync::Arc::new(pending_pod("p", "1"))));
    let s = c.snapshot(&opts(now), &[]);
    let names: Vec<_> = s
        .provisioners
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["zz-heavy", "default"]);
    let nodes: Vec<_> = s
        .existing_nodes
        .iter()
        .map(|e| nodes::name(&e.node).to_string())
        .collect();
    // Every node goes in (kube-scheduler counts all of their pods for topology); the engine
    // fills only "ours" (see the scheduling tests).
    assert_eq!(nodes, ["cordoned", "deleting", "foreign", "ours"]);
    let ours = s
        .existing_nodes
        .iter()
        .find(|e| nodes::name(&e.node) == "ours")
        .unwrap();
    assert_eq!(ours.pods.len(), 1);
    assert_eq!(s.pods.len(), 1);
    // Usage counts every node of the provisioner, cordoned and deleting ones too: 3 x 2 CPU.
    assert_eq!(s.usage["default"]["cpu"], 6000);
}

#[test]
fn in_flight_nodes_get_their_type_capacity_and_lose_startup_taints() {
    let mut c = Cluster::new();
    let now = t0();
    let mut p = provisioner("default");
    p.spec.startup_taints = vec![Taint {
        key: "example.com/agent-not-ready".into(),
        value: None,
        effect: "NoSchedule".into(),
        time_added: None,
    }];
    c.apply(Resource::Provisioner(Box::new(p)));
    let mut n = owned_node("coming", "default", "i-1", now);
    n.status = None;
    n.spec.as_mut().unwrap().taints = Some(vec![
        KubeTaint {
            key: "example.com/agent-not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
        KubeTaint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
        KubeTaint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
    ]);
    c.apply(Resource::Node(Box::new(n)));
    let types = catalog();
    let s = c.snapshot(&opts(now), &types);
    assert!(s.in_flight.contains("coming"));
    let e = &s.existing_nodes[0];
    let taints = e.node.spec.as_ref().unwrap().taints.as_ref().unwrap();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0].key, "dedicated");
    let alloc = e
        .node
        .status
        .as_ref()
        .unwrap()
        .allocatable
        .as_ref()
        .unwrap();
    assert_eq!(alloc["cpu"].0, "1930m", "m5.large allocatable CPU");
    assert_eq!(s.usage["default"]["cpu"], 2000);
}

#[test]
fn blocking_pdb_is_found_for_a_selected_pod() {
    use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut c = Cluster::new();
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "a", "1", "n1",
    ))));
    let b = PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("inflate".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "inflate".to_string())].into()),
                ..Default::default()
            }),
            min_available: Some(IntOrString::Int(1)),
            ..Default::default()
        }),
        status: None,
    };
    c.apply(Resource::PodDisruptionBudget(Box::new(b)));
    let pod = c.pod("default/a").unwrap().clone();
    assert_eq!(
        c.blocking_pdb(&pod).and_then(|b| b.metadata.name.clone()),
        Some("inflate".to_string())
    );
    c.apply(Resource::Pod(std::sync::Arc::new(bound_pod(
        "b", "1", "n1",
    ))));
    assert!(c.blocking_pdb(&pod).is_none());
}
