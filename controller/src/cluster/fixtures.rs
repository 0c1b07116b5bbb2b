//! Small object builders for the index and lifecycle tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec, PodStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::labels;
use crate::api::{default_provisioner, Provisioner, ProvisionerSpec, Requirement};

use super::nodes::{provider_id, TERMINATION_FINALIZER};

/// A pending pod (marked unschedulable) requesting `cpu`, owned by a ReplicaSet.
pub fn pending_pod(name: &str, cpu: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), "inflate".to_string())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "inflate".into(),
                uid: "rs-uid".into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some([("cpu".to_string(), KubeQuantity(cpu.into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
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

/// A running pod bound to `node`.
pub fn bound_pod(name: &str, cpu: &str, node: &str) -> Pod {
    let mut p = pending_pod(name, cpu);
    if let Some(s) = p.spec.as_mut() {
        s.node_name = Some(node.into());
    }
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    p
}

/// The guide's provisioner (m5.large/m5.2xlarge in us-east-1a/b), defaulted, with
/// `ttlSecondsAfterEmpty: 30`.
pub fn provisioner(name: &str) -> Provisioner {
    let mut spec = ProvisionerSpec {
        requirements: vec![
            Requirement::new(labels::INSTANCE_TYPE, "In", &["m5.large", "m5.2xlarge"]),
            Requirement::new(labels::ZONE, "In", &["us-east-1a", "us-east-1b"]),
            Requirement::new(labels::CAPACITY_TYPE, "In", &["on-demand"]),
        ],
        ttl_seconds_after_empty: Some(30),
        provider_ref: Some(crate::api::provisioner::ProviderRef {
            kind: None,
            name: "default".into(),
            api_version: None,
        }),
        ..Default::default()
    };
    default_provisioner(&mut spec);
    Provisioner::new(name, spec)
}

/// A Ready node of ours (m5.large, 2 CPU) created at `created`, with the finalizer.
pub fn owned_node(name: &str, provisioner: &str, instance: &str, created: Timestamp) -> Node {
    let capacity: BTreeMap<String, KubeQuantity> = [
        ("cpu".to_string(), KubeQuantity("2".into())),
        ("memory".to_string(), KubeQuantity("8Gi".into())),
        ("pods".to_string(), KubeQuantity("29".into())),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    (
                        labels::PROVISIONER_NAME.to_string(),
                        provisioner.to_string(),
                    ),
                    (labels::INSTANCE_TYPE.to_string(), "m5.large".to_string()),
                    (labels::ZONE.to_string(), "us-east-1a".to_string()),
                    (labels::CAPACITY_TYPE.to_string(), "on-demand".to_string()),
                    (labels::HOSTNAME.to_string(), name.to_string()),
                ]
                .into(),
            ),
            finalizers: Some(vec![TERMINATION_FINALIZER.to_string()]),
            creation_timestamp: Some(Time(created)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id("us-east-1a", instance)),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A fixed instant to start tests at.
pub fn t0() -> Timestamp {
    Timestamp::from_second(1_637_642_771).unwrap_or(Timestamp::UNIX_EPOCH)
}
