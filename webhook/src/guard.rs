//! The Cluster Autoscaler detector: a pure function over a [`ClusterSnapshot`] and a clock
//! value. Karpenter and the Cluster Autoscaler both react to the same unschedulable pods and
//! race each other, so the webhook refuses to run them side by side.
//!
//! Evidence that a Cluster Autoscaler runs:
//! - a Deployment identified as one (its name, its `app` or `app.kubernetes.io/name` label, or
//!   a container image named `cluster-autoscaler...`) with available replicas;
//! - a `cluster-autoscaler-status` ConfigMap whose `cluster-autoscaler.kubernetes.io/last-updated`
//!   annotation is fresh (the autoscaler rewrites it every scan, 10 s by default);
//! - a `cluster-autoscaler` leader-election Lease renewed recently.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

/// What the webhook does about a running Cluster Autoscaler (`--cluster-autoscaler-guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GuardMode {
    /// No guard; no cluster access needed.
    Off,
    /// Admit, with a warning naming the evidence.
    Warn,
    /// Deny, naming the evidence and what to do.
    #[default]
    Deny,
}

/// Name of the ConfigMap the Cluster Autoscaler writes its status to.
pub const STATUS_CONFIGMAP: &str = "cluster-autoscaler-status";
/// Annotation on the status ConfigMap with the time of the last write.
pub const LAST_UPDATED_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/last-updated";
/// Name of the Cluster Autoscaler's leader-election Lease.
pub const LEASE: &str = "cluster-autoscaler";

/// The part of the cluster the guard looks at, as kept warm by the watchers.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    /// Deployments that look like a Cluster Autoscaler (any replica count).
    pub deployments: Vec<Arc<Deployment>>,
    /// `cluster-autoscaler-status` ConfigMaps.
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// `cluster-autoscaler` Leases.
    pub leases: Vec<Arc<Lease>>,
    /// Names of the Provisioners that exist.
    pub provisioners: Vec<String>,
}

/// A snapshot in plain (non-shared) form, as stored in test fixtures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotFile {
    /// Deployments.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// ConfigMaps.
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
    /// Leases.
    #[serde(default)]
    pub leases: Vec<Lease>,
    /// Provisioner names.
    #[serde(default)]
    pub provisioners: Vec<String>,
}

impl From<SnapshotFile> for ClusterSnapshot {
    fn from(f: SnapshotFile) -> Self {
        ClusterSnapshot {
            deployments: f.deployments.into_iter().map(Arc::new).collect(),
            config_maps: f.config_maps.into_iter().map(Arc::new).collect(),
            leases: f.leases.into_iter().map(Arc::new).collect(),
            provisioners: f.provisioners,
        }
    }
}

/// One piece of evidence that a Cluster Autoscaler is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A Cluster Autoscaler Deployment with available replicas.
    Deployment {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why it was identified as a Cluster Autoscaler.
        matched: String,
        /// Available replicas.
        available: i32,
    },
    /// A status ConfigMap written recently.
    StatusConfigMap {
        /// Namespace.
        namespace: String,
        /// Seconds since the last write.
        age_secs: i64,
    },
    /// A leader-election Lease renewed recently.
    Lease {
        /// Namespace.
        namespace: String,
        /// The holder identity, when set.
        holder: Option<String>,
        /// Seconds since the last renewal.
        age_secs: i64,
    },
}

// === impl Evidence ===

impl Evidence {
    /// The command that stops this Cluster Autoscaler.
    pub fn remedy(&self) -> String {
        match self {
            Evidence::Deployment {
                namespace, name, ..
            } => format!("kubectl -n {namespace} scale deployment/{name} --replicas=0"),
            Evidence::StatusConfigMap { namespace, .. } | Evidence::Lease { namespace, .. } => {
                format!(
                    "kubectl -n {namespace} scale deployment/cluster-autoscaler --replicas=0 \
                     (or stop the Cluster Autoscaler wherever it runs)"
                )
            }
        }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Deployment {
                namespace,
                name,
                matched,
                available,
            } => write!(
                f,
                "Deployment {namespace}/{name} ({matched}) has {available} available replica(s)"
            ),
            Evidence::StatusConfigMap {
                namespace,
                age_secs,
            } => write!(
                f,
                "ConfigMap {namespace}/{STATUS_CONFIGMAP} was updated {age_secs}s ago"
            ),
            Evidence::Lease {
                namespace,
                holder,
                age_secs,
            } => {
                write!(f, "Lease {namespace}/{LEASE} was renewed {age_secs}s ago")?;
                if let Some(h) = holder {
                    write!(f, " by {h}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a Deployment is taken for a Cluster Autoscaler, or `None`.
///
/// Matches the names and labels of the upstream chart (`app.kubernetes.io/name:
/// aws-cluster-autoscaler`, release-prefixed names) and manifests (`app: cluster-autoscaler`),
/// and images such as `registry.k8s.io/autoscaling/cluster-autoscaler:v1.27.3`.
pub fn identify(d: &Deployment) -> Option<String> {
    let meta = &d.metadata;
    if let Some(name) = meta.name.as_deref().filter(|n| is_ca_name(n)) {
        return Some(format!("name {name}"));
    }
    if let Some(labels) = &meta.labels {
        for key in ["app", "app.kubernetes.io/name"] {
            if let Some(v) = labels.get(key).filter(|v| is_ca_name(v)) {
                return Some(format!("label {key}={v}"));
            }
        }
    }
    let pod_spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref())?;
    pod_spec
        .containers
        .iter()
        .chain(pod_spec.init_containers.iter().flatten())
        .filter_map(|c| c.image.as_deref())
        .find(|i| is_ca_image(i))
        .map(|i| format!("image {i}"))
}

/// Whether a name or label value names a Cluster Autoscaler (not, e.g., the
/// cluster-proportional-autoscaler).
pub fn is_ca_name(s: &str) -> bool {
    s.contains("cluster-autoscaler")
}

/// Whether a container image is a Cluster Autoscaler image.
pub fn is_ca_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    last.starts_with("cluster-autoscaler")
}

/// The replicas a Deployment asks for (Kubernetes defaults a missing value to 1).
pub fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Every piece of evidence in `snapshot` that a Cluster Autoscaler runs at `now`. Status
/// ConfigMaps and Leases older than `stale_after` do not count.
pub fn detect(snapshot: &ClusterSnapshot, now: Timestamp, stale_after: Duration) -> Vec<Evidence> {
    let mut found = Vec::new();
    // Namespaces whose Cluster Autoscaler Deployment was scaled to 0 and has no pod left: right
    // after `kubectl scale --replicas=0` its status ConfigMap and Lease still look fresh, and
    // the person who just followed our advice must not be refused again for them.
    let mut stopped: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut running: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for d in snapshot
        .deployments
        .iter()
        .filter(|d| identify(d).is_some())
    {
        let available = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        let pods = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let desired = d.spec.as_ref().and_then(|s| s.replicas);
        if available > 0 || pods > 0 || desired != Some(0) {
            running.insert(namespace(&d.metadata));
        } else {
            stopped.insert(namespace(&d.metadata));
        }
    }
    let stopped_here = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let ns = namespace(meta);
        stopped.contains(&ns) && !running.contains(&ns)
    };
    for d in &snapshot.deployments {
        let available = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        if available <= 0 {
            continue;
        }
        if let Some(matched) = identify(d) {
            found.push(Evidence::Deployment {
                namespace: namespace(&d.metadata),
                name: d.metadata.name.clone().unwrap_or_default(),
                matched,
                available,
            });
        }
    }
    let fresh = |at: Timestamp| -> Option<i64> {
        let age = now.duration_since(at);
        let limit = SignedDuration::try_from(stale_after).unwrap_or(SignedDuration::MAX);
        // A clock a little ahead of ours still counts as fresh.
        (age <= limit).then(|| age.as_secs().max(0))
    };
    for cm in &snapshot.config_maps {
        if cm.metadata.name.as_deref() != Some(STATUS_CONFIGMAP) || stopped_here(&cm.metadata) {
            continue;
        }
        let updated = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LAST_UPDATED_ANNOTATION))
            .and_then(|s| parse_go_time(s));
        if let Some(age_secs) = updated.and_then(fresh) {
            found.push(Evidence::StatusConfigMap {
                namespace: namespace(&cm.metadata),
                age_secs,
            });
        }
    }
    for lease in &snapshot.leases {
        if lease.metadata.name.as_deref() != Some(LEASE) || stopped_here(&lease.metadata) {
            continue;
        }
        let Some(spec) = &lease.spec else { continue };
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let lease_secs = spec.lease_duration_seconds.unwrap_or(0).max(0);
        let limit = stale_after.max(Duration::from_secs(lease_secs.unsigned_abs().into()));
        let Some(at) = renewed else { continue };
        let age = now.duration_since(at);
        if age <= SignedDuration::try_from(limit).unwrap_or(SignedDuration::MAX) {
            found.push(Evidence::Lease {
                namespace: namespace(&lease.metadata),
                holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
                age_secs: age.as_secs().max(0),
            });
        }
    }
    found
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// Parses Go's `time.Time.String()` format as the Cluster Autoscaler writes it:
/// `2023-03-01 12:00:00.123456789 +0000 UTC` (also accepts RFC 3339).
pub fn parse_go_time(s: &str) -> Option<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let mut parts = s.split_whitespace();
    let (date, time, offset) = (parts.next()?, parts.next()?, parts.next()?);
    if offset.len() != 5 || !offset.starts_with(['+', '-']) {
        return None;
    }
    let rfc3339 = format!("{date}T{time}{}:{}", &offset[..3], &offset[3..]);
    rfc3339.parse::<Timestamp>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn deployment(v: serde_json::Value) -> Arc<Deployment> {
        Arc::new(serde_json::from_value(v).unwrap_or_default())
    }

    fn snapshot_with(deployments: Vec<Arc<Deployment>>) -> ClusterSnapshot {
        ClusterSnapshot {
            deployments,
            ..Default::default()
        }
    }

    const STALE: Duration = Duration::from_secs(300);

    #[test]
    fn upstream_manifest_deployment_is_found() {
        // cluster-autoscaler-autodiscover.yaml from the upstream repository.
        let d = deployment(json!({
            "metadata": {"name": "cluster-autoscaler", "namespace": "kube-system",
                         "labels": {"app": "cluster-autoscaler"}},
            "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": [
                {"name": "cluster-autoscaler", "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.26.2"}]}}},
            "status": {"availableReplicas": 1}
        }));
        let found = detect(&snapshot_with(vec![d]), now(), STALE);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].remedy(),
            "kubectl -n kube-system scale deployment/cluster-autoscaler --replicas=0"
        );
        assert!(found[0].to_string().contains("name cluster-autoscaler"));
    }

    #[test]
    fn helm_chart_names_and_labels_are_found() {
        let by_label = deployment(json!({
            "metadata": {"name": "ca-release", "namespace": "autoscaler",
                         "labels": {"app.kubernetes.io/name": "aws-cluster-autoscaler",
                                    "app.kubernetes.io/instance": "ca-release"}},
            "spec": {"selector": {}, "template": {}},
            "status": {"availableReplicas": 2}
        }));
        let by_image = deployment(json!({
            "metadata": {"name": "scaler", "namespace": "ops"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "main", "image": "my.registry/mirror/cluster-autoscaler-arm64@sha256:abc"}]}}},
            "status": {"availableReplicas": 1}
        }));
        let found = detect(&snapshot_with(vec![by_label, by_image]), now(), STALE);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0]
            .to_string()
            .contains("label app.kubernetes.io/name=aws-cluster-autoscaler"));
        assert!(found[1].to_string().contains("image my.registry/mirror"));
    }

    #[test]
    fn scaled_to_zero_or_unavailable_is_not_running() {
        let zero = deployment(json!({
            "metadata": {"name": "cluster-autoscaler", "namespace": "kube-system"},
            "spec": {"replicas": 0, "selector": {}, "template": {}}, "status": {}
        }));
        let unavailable = deployment(json!({
            "metadata": {"name": "cluster-autoscaler-aws", "namespace": "kube-system"},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"replicas": 1, "availableReplicas": 0, "unavailableReplicas": 1}
        }));
        assert!(detect(&snapshot_with(vec![zero, unavailable]), now(), STALE).is_empty());
    }

    #[test]
    fn lookalikes_are_not_cluster_autoscalers() {
        let cpa = deployment(json!({
            "metadata": {"name": "dns-autoscaler", "namespace": "kube-system",
                         "labels": {"app": "cluster-proportional-autoscaler"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "a", "image": "registry.k8s.io/cpa/cluster-proportional-autoscaler:1.8.8"}]}}},
            "status": {"availableReplicas": 1}
        }));
        assert!(detect(&snapshot_with(vec![cpa]), now(), STALE).is_empty());
        assert!(!is_ca_image("example.com/cluster-autoscaler-fork/app:1"));
        assert!(is_ca_image("cluster-autoscaler"));
    }

    fn status_cm(updated: &str) -> Arc<ConfigMap> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": STATUS_CONFIGMAP, "namespace": "kube-system",
                             "annotations": {LAST_UPDATED_ANNOTATION: updated}},
                "data": {"status": "Cluster-autoscaler status at ..."}
            }))
            .unwrap_or_default(),
        )
    }

    #[test]
    fn fresh_status_configmap_counts_and_stale_does_not() {
        let snap = ClusterSnapshot {
            config_maps: vec![status_cm("2024-05-01 11:59:50.123456789 +0000 UTC")],
            ..Default::default()
        };
        let found = detect(&snap, now(), STALE);
        assert_eq!(
            found,
            vec![Evidence::StatusConfigMap {
                namespace: "kube-system".into(),
                age_secs: 9
            }]
        );
        let stale = ClusterSnapshot {
            config_maps: vec![status_cm("2024-05-01 10:00:00.0 +0000 UTC")],
            ..Default::default()
        };
        assert!(detect(&stale, now(), STALE).is_empty());
        let garbage = ClusterSnapshot {
            config_maps: vec![status_cm("yesterday")],
            ..Default::default()
        };
        assert!(detect(&garbage, now(), STALE).is_empty());
    }

    #[test]
    fn a_just_stopped_autoscaler_is_not_evidence_through_its_fresh_status() {
        let stopped: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cluster-autoscaler", "namespace": "kube-system"},
            "spec": {"replicas": 0, "selector": {}, "template": {}},
            "status": {"replicas": 0, "availableReplicas": 0}
        }))
        .unwrap_or_default();
        let snap = ClusterSnapshot {
            deployments: vec![Arc::new(stopped.clone())],
            config_maps: vec![status_cm("2024-05-01 11:59:50.123456789 +0000 UTC")],
            ..Default::default()
        };
        assert!(detect(&snap, now(), STALE).is_empty());
        // Still terminating (a pod left): the fresh status counts.
        let mut terminating = stopped.clone();
        if let Some(s) = terminating.status.as_mut() {
            s.replicas = Some(1);
        }
        let snap = ClusterSnapshot {
            deployments: vec![Arc::new(terminating)],
            config_maps: vec![status_cm("2024-05-01 11:59:50.123456789 +0000 UTC")],
            ..Default::default()
        };
        assert_eq!(detect(&snap, now(), STALE).len(), 1);
    }

    #[test]
    fn lease_freshness_uses_its_duration() {
        let lease = |renewed: &str, duration: i32| -> Arc<Lease> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": LEASE, "namespace": "kube-system"},
                    "spec": {"holderIdentity": "ca-7f9c", "leaseDurationSeconds": duration,
                             "renewTime": renewed}
                }))
                .unwrap_or_default(),
            )
        };
        let snap = ClusterSnapshot {
            leases: vec![
                lease("2024-05-01T11:59:58.000000Z", 15),
                lease("2024-05-01T11:00:00.000000Z", 15),
                lease("2024-05-01T11:00:00.000000Z", 7200),
            ],
            ..Default::default()
        };
        let found = detect(&snap, now(), STALE);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "Lease kube-system/cluster-autoscaler was renewed 2s ago by ca-7f9c"
        );
    }

    #[test]
    fn go_time_format_parses() {
        let t = parse_go_time("2024-05-01 11:59:50.123456789 +0200 CEST");
        assert_eq!(
            t.map(|t| t.to_string()),
            Some("2024-05-01T09:59:50.123456789Z".into())
        );
        assert!(parse_go_time("2024-05-01T09:59:50Z").is_some());
        assert!(parse_go_time("").is_none());
    }
}
