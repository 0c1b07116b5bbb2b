//! Facts about a Pod that every loop asks: may it be provisioned for, is it a daemon, a static
//! or a terminal pod, may it be evicted, is it critical.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};

use crate::scheduling::pod::tolerates;

/// Annotation that stops Karpenter from disrupting a node running the pod (`"true"`).
pub const DO_NOT_EVICT: &str = "karpenter.sh/do-not-evict";
/// Annotation the kubelet puts on the mirror of a static pod.
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";
/// The taint a cordoned node carries.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Priority classes drained last.
pub const CRITICAL_PRIORITY_CLASSES: &[&str] = &["system-cluster-critical", "system-node-critical"];

/// `namespace/name` of a pod (`default` when the namespace is unset).
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The node a pod is bound to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a DaemonSet owns the pod.
pub fn is_daemonset_pod(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

/// Whether the pod is a static pod or its mirror (owned by the Node, or annotated as a mirror).
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD))
        || pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Node")
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod is being deleted.
pub fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether kube-scheduler reported the pod `PodScheduled=False` with reason `Unschedulable`.
pub fn is_marked_unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

/// Whether Karpenter should find capacity for the pod: unbound, marked unschedulable, not a
/// daemon, static or mirror pod, not being deleted and not finished. (Pods already placed on an
/// in-flight node are excluded by the index, which knows the nominations.)
pub fn is_provisionable(pod: &Pod) -> bool {
    node_name(pod).is_none() && is_marked_unschedulable(pod) && wants_a_node(pod)
}

/// Whether the pod is one a node is provisioned for when it is pending: not a daemon, static
/// or mirror pod, not being deleted and not finished.
pub fn wants_a_node(pod: &Pod) -> bool {
    counts_against_emptiness(pod) && !is_deleting(pod)
}

/// Whether the pod keeps a node from being empty: anything but daemon, static and terminal pods.
pub fn counts_against_emptiness(pod: &Pod) -> bool {
    !is_daemonset_pod(pod) && !is_static_pod(pod) && !is_terminal(pod)
}

/// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule` (it would come back
/// to a cordoned node, so draining it is pointless).
pub fn tolerates_unschedulable(pod: &Pod) -> bool {
    let taint = crate::api::provisioner::Taint {
        key: UNSCHEDULABLE_TAINT.to_string(),
        value: None,
        effect: "NoSchedule".to_string(),
        time_added: None,
    };
    let tolerations: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    tolerates(&tolerations, &taint)
}

/// Whether a drain evicts the pod: not a daemon, static or terminal pod, not one that tolerates
/// the cordon, and not already being deleted.
pub fn needs_eviction(pod: &Pod) -> bool {
    !is_daemonset_pod(pod)
        && !is_static_pod(pod)
        && !is_terminal(pod)
        && !tolerates_unschedulable(pod)
        && !is_deleting(pod)
}

/// Whether the pod runs at `system-cluster-critical` or `system-node-critical` priority.
pub fn is_critical(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref())
        .is_some_and(|p| CRITICAL_PRIORITY_CLASSES.contains(&p))
}

/// Whether the pod carries `karpenter.sh/do-not-evict: "true"`.
pub fn has_do_not_evict(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DO_NOT_EVICT))
        .is_some_and(|v| v == "true")
}

/// Annotation prefixes and keys a pod keeps in the controller's cache: Karpenter's own
/// (`karpenter.sh/do-not-evict`) and the mirror-pod mark.
const KEPT_ANNOTATIONS: &[&str] = &["karpenter.sh/", MIRROR_POD];

/// Drops what no loop of the controller reads from a pod, to keep its cache small: containers
/// keep only their name, resources, host ports and restart policy (sidecars), the spec keeps
/// what scheduling and draining read (node name and selector, affinity, tolerations, topology
/// spread, overhead, priority), the status its phase and conditions, and the annotations only
/// [`KEPT_ANNOTATIONS`]. Volumes, env, probes, images and container statuses go. Every function
/// of this module and the engine's `PodInfo` give the same answers on the slim pod.
pub fn slim(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.retain(|k, _| KEPT_ANNOTATIONS.iter().any(|p| k.starts_with(p)));
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    if let Some(spec) = pod.spec.take() {
        let containers = |cs: Vec<Container>| -> Vec<Container> {
            shrunk(cs.into_iter().map(slim_container).collect())
        };
        pod.spec = Some(PodSpec {
            containers: containers(spec.containers),
            init_containers: spec.init_containers.map(containers),
            node_name: spec.node_name,
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            tolerations: spec.tolerations.map(shrunk),
            topology_spread_constraints: spec.topology_spread_constraints,
            overhead: spec.overhead,
            priority_class_name: spec.priority_class_name,
            priority: spec.priority,
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: status.conditions.map(shrunk),
            ..Default::default()
        });
    }
}

fn slim_container(c: Container) -> Container {
    let ports: Vec<ContainerPort> = c
        .ports
        .into_iter()
        .flatten()
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .collect();
    Container {
        name: c.name,
        resources: c.resources,
        ports: (!ports.is_empty()).then_some(ports),
        restart_policy: c.restart_policy,
        ..Default::default()
    }
}

fn shrunk<T>(mut v: Vec<T>) -> Vec<T> {
    v.shrink_to_fit();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pending() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
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

    fn owned_by(kind: &str) -> OwnerReference {
        OwnerReference {
            kind: kind.into(),
            name: "x".into(),
            api_version: "v1".into(),
            uid: "u".into(),
            ..Default::default()
        }
    }

    #[test]
    fn provisionable_needs_every_condition() {
        assert!(is_provisionable(&pending()));
        let mut bound = pending();
        bound.spec.as_mut().unwrap().node_name = Some("n".into());
        assert!(!is_provisionable(&bound));
        let mut not_marked = pending();
        not_marked.status = None;
        assert!(!is_provisionable(&not_marked));
        let mut other_reason = pending();
        other_reason
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .reason = Some("SchedulerError".into());
        assert!(!is_provisionable(&other_reason));
        let mut ds = pending();
        ds.metadata.owner_references = Some(vec![owned_by("DaemonSet")]);
        assert!(!is_provisionable(&ds));
        let mut mirror = pending();
        mirror.metadata.annotations = Some([(MIRROR_POD.to_string(), "x".to_string())].into());
        assert!(!is_provisionable(&mirror));
        let mut static_pod = pending();
        static_pod.metadata.owner_references = Some(vec![owned_by("Node")]);
        assert!(!is_provisionable(&static_pod));
        let mut deleting = pending();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!is_provisionable(&deleting));
        let mut rs = pending();
        rs.metadata.owner_references = Some(vec![owned_by("ReplicaSet")]);
        assert!(is_provisionable(&rs));
    }

    #[test]
    fn eviction_skips_daemons_static_terminal_and_tolerating_pods() {
        let p = pending();
        assert!(needs_eviction(&p));
        let mut done = pending();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!needs_eviction(&done));
        assert!(!counts_against_emptiness(&done));
        let mut tol = pending();
        tol.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some(UNSCHEDULABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(!needs_eviction(&tol));
        let mut all = pending();
        all.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(!needs_eviction(&all));
        let mut ds = pending();
        ds.metadata.owner_references = Some(vec![owned_by("DaemonSet")]);
        assert!(!needs_eviction(&ds));
        assert!(!counts_against_emptiness(&ds));
    }

    #[test]
    fn critical_and_do_not_evict() {
        let mut p = pending();
        assert!(!is_critical(&p));
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        assert!(is_critical(&p));
        assert!(!has_do_not_evict(&p));
        p.metadata.annotations = Some([(DO_NOT_EVICT.to_string(), "true".to_string())].into());
        assert!(has_do_not_evict(&p));
    }

    /// A pod with what a real one carries: image, env, probes, volumes, a non-host port,
    /// container statuses, annotations of other tools; and what the loops read.
    fn rich() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web"},
                "annotations": {DO_NOT_EVICT: "true", "prometheus.io/scrape": "true",
                    "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web", "uid": "rs"}]},
            "spec": {
                "priorityClassName": "system-cluster-critical", "priority": 2000000000,
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                        "operator": "In", "values": ["us-east-1a"]}]}]}}},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web",
                    "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "overhead": {"cpu": "10m"},
                "initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "migrate", "image": "tool", "resources": {"requests": {"cpu": "2"}}}],
                "containers": [{"name": "web", "image": "nginx:1.27",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80}, {"containerPort": 8080, "hostPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}}],
                "volumes": [{"name": "data", "emptyDir": {}}]},
            "status": {"phase": "Pending", "qosClass": "Burstable",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [{"name": "web", "image": "nginx:1.27", "imageID": "",
                    "ready": false, "restartCount": 0}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_slim_pod_answers_every_question_as_the_full_one() {
        let full = rich();
        let mut thin = full.clone();
        slim(&mut thin);
        let info = |p: &Pod| crate::scheduling::PodInfo::from_pod(p).unwrap();
        assert_eq!(info(&thin), info(&full));
        assert_eq!(info(&thin).host_ports.len(), 1);
        for check in [
            is_provisionable,
            needs_eviction,
            has_do_not_evict,
            is_critical,
            is_static_pod,
            is_daemonset_pod,
            counts_against_emptiness,
            tolerates_unschedulable,
        ] {
            assert_eq!(check(&thin), check(&full));
        }
        assert_eq!(key(&thin), key(&full));
        assert_eq!(thin.metadata.labels, full.metadata.labels);
        assert_eq!(
            thin.metadata.owner_references,
            full.metadata.owner_references
        );
        // What no loop reads is gone.
        let spec = thin.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none() && spec.containers[0].image.is_none());
        assert!(spec.containers[0].readiness_probe.is_none());
        assert!(thin.status.as_ref().unwrap().container_statuses.is_none());
        let annotations = thin.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [DO_NOT_EVICT]);
        // A mirror pod stays one.
        let mut mirror = full.clone();
        mirror.metadata.annotations = Some([(MIRROR_POD.to_string(), "x".to_string())].into());
        slim(&mut mirror);
        assert!(is_static_pod(&mirror));
    }
}
