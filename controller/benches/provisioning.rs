//! Provisioning-round benchmark: 1,000 provisionable pods in the cluster index to every launch
//! request issued, over the `sim` cloud (built-in us-east-1 catalog, instant launches) and the
//! in-memory writer, not counting the batch window. Timed twice: as the reconcile loop runs it
//! (the engine's catalog pass, which depends only on the Provisioners and the instance types,
//! done while the batch was open) and cold (the first round after a start, paying that pass).
//! Also times the parts on their own, to say what dominates: the index snapshot, the
//! instance-type listing, the catalog pass and the packing engine.
//!
//! Run: `cargo bench -p karpenter --no-default-features --bench provisioning`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use karpenter::api::provisioner::ProviderRef;
use karpenter::api::{default_provisioner, Provisioner, ProvisionerSpec};
use karpenter::cloud::instance_types::AwsCatalogOptions;
use karpenter::cloud::provider::CloudProvider;
use karpenter::cloud::sim::SimProvider;
use karpenter::cluster::{Cluster, Resource, SharedCluster, SnapshotOptions};
use karpenter::lifecycle::{InMemoryWriter, ManualClock, Provisioning, ProvisioningConfig};
use karpenter::scheduling::{Scheduler, SchedulerInput, SchedulerOptions};

const PODS: usize = 1_000;
const RUNS: usize = 11;

fn pod(i: usize) -> Pod {
    let (cpu, mem) = [
        ("250m", "512Mi"),
        ("500m", "1Gi"),
        ("1", "2Gi"),
        ("2", "4Gi"),
    ][i % 4];
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p-{i}")),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), format!("app-{}", i % 10))].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(
                        [
                            ("cpu".to_string(), Quantity(cpu.into())),
                            ("memory".to_string(), Quantity(mem.into())),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn node(i: usize) -> k8s_openapi::api::core::v1::Node {
    let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": zone,
            "node.kubernetes.io/instance-type": "m5.2xlarge",
            "karpenter.sh/capacity-type": "on-demand",
            "karpenter.sh/provisioner-name": "default",
            "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux"},
            "finalizers": ["karpenter.sh/termination"]},
        "spec": {"providerID": format!("aws:///{zone}/i-{i:017x}")},
        "status": {"allocatable": {"cpu": "7910m", "memory": "29Gi", "pods": "58"},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "58"},
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("node")
}

/// Resident memory of the cluster index holding 10,000 bound pods on 1,000 nodes, measured
/// first, before anything else has grown the heap.
fn index_memory() {
    let before = rss_mb();
    let mut c = Cluster::new();
    for i in 0..1_000 {
        c.apply(Resource::Node(Box::new(node(i))));
    }
    for i in 0..10_000 {
        let mut p = pod(i);
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some(format!("node-{}", i % 1_000));
        }
        p.status = None;
        c.apply(Resource::Pod(std::sync::Arc::new(p)));
    }
    let after = rss_mb();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "cluster index with 10,000 pods on 1,000 nodes: {:.0} MB resident ({:.0} MB before it was filled)",
            a - b,
            b
        );
    }
    drop(c);
}

fn main() {
    index_memory();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // A valid Provisioner names its node template: an invalid one launches nothing.
    let mut spec = ProvisionerSpec {
        provider_ref: Some(ProviderRef {
            name: "default".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    default_provisioner(&mut spec);
    let provisioner = Provisioner::new("default", spec);
    let mut rounds = Vec::new();
    let mut cold_rounds = Vec::new();
    let mut parts = Vec::new();
    let mut nodes = 0;
    for run in 0..RUNS * 2 {
        // Warm and cold rounds alternate, each over a fresh cluster and cloud.
        let warm = run % 2 == 0;
        let clock = ManualClock::new(Timestamp::UNIX_EPOCH);
        let cloud = Arc::new(
            SimProvider::new("bench", clock.clone(), &AwsCatalogOptions::default())
                .expect("catalog"),
        );
        let mut c = Cluster::new();
        c.apply(Resource::Provisioner(Box::new(provisioner.clone())));
        for i in 0..PODS {
            c.apply(Resource::Pod(std::sync::Arc::new(pod(i))));
        }
        let cluster = SharedCluster::new(c);
        let writer = Arc::new(InMemoryWriter::new(cluster.clone(), clock.clone()));
        let p = Provisioning::new(
            cluster.clone(),
            cloud.clone(),
            writer,
            clock,
            ProvisioningConfig::default(),
        );
        if !warm {
            let t = Instant::now();
            let report = rt.block_on(p.round()).expect("round");
            cold_rounds.push(t.elapsed());
            assert_eq!(report.pods, PODS);
            continue;
        }

        // The parts on their own.
        let t = Instant::now();
        let types = rt
            .block_on(cloud.instance_types(&provisioner))
            .expect("types");
        let t_types = t.elapsed();
        let t = Instant::now();
        let snap = cluster.read().snapshot(
            &SnapshotOptions {
                now: Timestamp::UNIX_EPOCH,
                nomination_ttl: Duration::from_secs(20),
            },
            &types,
        );
        let t_snap = t.elapsed();
        let t = Instant::now();
        let scheduler = Scheduler::new(SchedulerInput {
            provisioners: snap.provisioners.clone(),
            instance_types_by_provisioner: [("default".to_string(), types.clone())].into(),
            ..Default::default()
        });
        let t_new = t.elapsed();
        let decision = scheduler.solve(&snap.pods).expect("solve");
        let t_solve = t.elapsed();
        let t = Instant::now();
        Scheduler::new(SchedulerInput {
            provisioners: snap.provisioners.clone(),
            instance_types_by_provisioner: [("default".to_string(), types.clone())].into(),
            options: SchedulerOptions {
                improve: false,
                ..Default::default()
            },
            ..Default::default()
        })
        .solve(&snap.pods)
        .expect("solve");
        let t_ffd = t.elapsed();
        parts.push((t_types, t_snap, t_solve, t_ffd, t_new));

        // The whole round, its catalog pass done while the batch was open.
        rt.block_on(p.prepare()).expect("prepare");
        let t = Instant::now();
        let report = rt.block_on(p.round()).expect("round");
        rounds.push(t.elapsed());
        assert_eq!(report.pods, PODS);
        assert_eq!(report.launched.len(), decision.nodes.len());
        assert_eq!(
            cloud.launches(),
            decision.nodes.len(),
            "one launch per node"
        );
        let bound: usize = report.launched.iter().map(|l| l.pods.len()).sum();
        assert_eq!(bound, PODS, "every pod bound");
        nodes = report.launched.len();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "provisioning round, {PODS} pods, {nodes} nodes launched (sim cloud), {RUNS} runs of each"
    );
    println!(
        "  whole round (snapshot, list, pack, {nodes} launches, Node creates, {PODS} binds): median {:.1} ms, min {:.1} ms",
        ms(median(rounds.clone())),
        ms(*rounds.iter().min().expect("runs"))
    );
    println!(
        "  the same round cold (first after a start: with the catalog pass): median {:.1} ms, min {:.1} ms",
        ms(median(cold_rounds.clone())),
        ms(*cold_rounds.iter().min().expect("runs"))
    );
    println!(
        "  instance types from the cloud: {:.1} ms   snapshot: {:.1} ms   packing (Scheduler::new + solve): {:.1} ms",
        ms(median(parts.iter().map(|p| p.0).collect())),
        ms(median(parts.iter().map(|p| p.1).collect())),
        ms(median(parts.iter().map(|p| p.2).collect())),
    );
    println!(
        "  of packing, the catalog pass (Scheduler::new): {:.1} ms; first-fit-decreasing alone (improve: false, with the catalog pass): {:.1} ms",
        ms(median(parts.iter().map(|p| p.4).collect())),
        ms(median(parts.iter().map(|p| p.3).collect())),
    );
}
