//! Resource lists in exact milli-units and the effective requests of a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::api::quantity::{format_milli, parse_milli};

/// `cpu`.
pub const CPU: &str = "cpu";
/// `memory`.
pub const MEMORY: &str = "memory";
/// `ephemeral-storage`.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// `pods`: one pod is 1000 milli-pods.
pub const PODS: &str = "pods";
/// `nvidia.com/gpu`.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
/// `amd.com/gpu`.
pub const AMD_GPU: &str = "amd.com/gpu";
/// `aws.amazon.com/neuron`.
pub const AWS_NEURON: &str = "aws.amazon.com/neuron";

/// Resource name to milli-units.
pub type ResourceList = BTreeMap<String, i64>;

/// A quantity that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {value:?} for {resource}: {message}")]
pub struct ResourceError {
    /// Resource name.
    pub resource: String,
    /// The quantity as written.
    pub value: String,
    /// Parser message.
    pub message: String,
}

/// Parses a Kubernetes resource map into milli-units.
pub fn parse_list(
    list: Option<&BTreeMap<String, KubeQuantity>>,
) -> Result<ResourceList, ResourceError> {
    let mut out = ResourceList::new();
    for (k, q) in list.into_iter().flatten() {
        let v = parse_milli(&q.0).map_err(|e| ResourceError {
            resource: k.clone(),
            value: q.0.clone(),
            message: e.to_string(),
        })?;
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// Adds `b` into `a`.
pub fn add_into(a: &mut ResourceList, b: &ResourceList) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

/// `a - b`, keeping every key of `a` and `b`.
pub fn subtract(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_insert(0) -= v;
    }
    out
}

/// Whether a resource is one every node has (CPU, memory, pods, ephemeral storage), as
/// opposed to an extended resource such as `nvidia.com/gpu` that only some types offer.
pub fn is_standard(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "pods" | "ephemeral-storage")
}

/// Human form `cpu=2, memory=4Gi`.
pub fn describe(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={}", format_milli(k, *v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn container_requests(c: &Container) -> Result<ResourceList, ResourceError> {
    let res = c.resources.as_ref();
    let mut req = parse_list(res.and_then(|r| r.requests.as_ref()))?;
    // Kubernetes defaults a missing request to the limit.
    for (k, v) in parse_list(res.and_then(|r| r.limits.as_ref()))? {
        req.entry(k).or_insert(v);
    }
    Ok(req)
}

/// Effective requests of a pod: the sum over containers, at least the largest init container
/// (sidecar init containers with `restartPolicy: Always` add to the sum), plus pod overhead,
/// plus one `pods`.
pub fn pod_requests(pod: &Pod) -> Result<ResourceList, ResourceError> {
    let mut total = ResourceList::new();
    let Some(spec) = pod.spec.as_ref() else {
        total.insert(PODS.to_string(), 1000);
        return Ok(total);
    };
    for c in &spec.containers {
        add_into(&mut total, &container_requests(c)?);
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            add_into(&mut sidecars, &r);
            continue;
        }
        // A regular init container runs alongside the sidecars started before it.
        let mut with_sidecars = sidecars.clone();
        add_into(&mut with_sidecars, &r);
        for (k, v) in with_sidecars {
            let e = init_max.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    add_into(&mut total, &sidecars);
    for (k, v) in init_max {
        let e = total.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
    add_into(&mut total, &parse_list(spec.overhead.as_ref())?);
    total.retain(|_, v| *v != 0);
    *total.entry(PODS.to_string()).or_insert(0) += 1000;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sums_containers_and_maxes_init() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": "1"}}}
                ],
                "initContainers": [
                    {"name": "i", "resources": {"requests": {"cpu": "2", "memory": "512Mi"}}}
                ],
                "overhead": {"cpu": "100m"}
            }
        }));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r[CPU], 2100);
        assert_eq!(r[MEMORY], 1024 * 1024 * 1024 * 1000);
        assert_eq!(r[NVIDIA_GPU], 1000);
        assert_eq!(r[PODS], 1000);
    }

    #[test]
    fn zero_requests_are_dropped() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"example.com/foo": "0"}}}]}
        }));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r.len(), 1);
    }
}
