//! The Kubernetes API calls the controller and the webhook make, in one place.
//!
//! The Helm chart's ClusterRoles and Role (`manifests/helm/karpenter/templates/rbac-*.yaml`)
//! grant exactly these; `tests/tests/helm_chart.rs` compares the rendered chart with these lists
//! both ways, as `cloud::iam` is compared with the IAM policy. When code here starts a new
//! watch or writes a new kind, add the call below and the test names the rule the chart lacks.
//!
//! Where each call is made:
//! - [`feed`](super::feed): `list` + `watch` of Pods, Nodes, Provisioners, AWSNodeTemplates,
//!   DaemonSets, PodDisruptionBudgets and Namespaces (kube-rs watchers, all namespaces);
//! - [`writer`](super::writer): Node `create`, `patch` (annotations, cordon, finalizer),
//!   `delete`, `get` (before removing the finalizer); `nodes/status` `patch`; `pods/binding`
//!   and `pods/eviction` `create`; `provisioners/status` `patch`; `events.k8s.io` Events
//!   `create`, and `patch` when kube-rs's recorder folds a repeat into a series;
//! - [`lease`](super::lease): the [`LEADER_ELECTION_LEASE`] in the leader-election namespace:
//!   `get`, `create`, `update`;
//! - the webhook's Cluster Autoscaler guard (`webhook/src/watch.rs`): `list` + `watch` of
//!   Deployments, of Provisioners (metadata only), and of the `cluster-autoscaler-status`
//!   ConfigMaps and `cluster-autoscaler` Leases by a `metadata.name` field selector, which the
//!   API server authorises against `resourceNames`.

/// The name of the controller's leader-election Lease.
pub const LEADER_ELECTION_LEASE: &str = "karpenter-leader-election";

/// Where a call is authorised: cluster-wide (a ClusterRole) or in the namespace the chart is
/// installed in (a Role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every namespace, or a cluster-scoped resource.
    Cluster,
    /// Only the release namespace (the leader-election namespace).
    ReleaseNamespace,
}

/// One kind of API call: the verbs used on a resource (or subresource) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, `resource/subresource` for a subresource.
    pub resource: &'static str,
    /// The verbs, sorted.
    pub verbs: &'static [&'static str],
    /// When not empty, the only object names the calls use.
    pub resource_names: &'static [&'static str],
    /// Where the calls are authorised.
    pub scope: Scope,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verbs,
        resource_names: &[],
        scope: Scope::Cluster,
    }
}

const WATCH: &[&str] = &["list", "watch"];

/// Every API call `karpenter-controller` makes.
pub const CONTROLLER_API_CALLS: &[ApiCall] = &[
    call("", "pods", WATCH),
    call("", "namespaces", WATCH),
    call("", "pods/binding", &["create"]),
    call("", "pods/eviction", &["create"]),
    call(
        "",
        "nodes",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    call("", "nodes/status", &["patch"]),
    call("apps", "daemonsets", WATCH),
    call("policy", "poddisruptionbudgets", WATCH),
    call("karpenter.sh", "provisioners", WATCH),
    call("karpenter.sh", "provisioners/status", &["patch"]),
    call("karpenter.k8s.aws", "awsnodetemplates", WATCH),
    call("events.k8s.io", "events", &["create", "patch"]),
    // A Lease cannot be created by name (the name is in the body, not the path).
    ApiCall {
        scope: Scope::ReleaseNamespace,
        ..call("coordination.k8s.io", "leases", &["create"])
    },
    ApiCall {
        resource_names: &[LEADER_ELECTION_LEASE],
        scope: Scope::ReleaseNamespace,
        ..call("coordination.k8s.io", "leases", &["get", "update"])
    },
];

/// Every API call `karpenter-webhook` makes with its Cluster Autoscaler guard on (with
/// `--cluster-autoscaler-guard=off` it makes none).
pub const WEBHOOK_API_CALLS: &[ApiCall] = &[
    call("apps", "deployments", WATCH),
    call("karpenter.sh", "provisioners", WATCH),
    ApiCall {
        resource_names: &["cluster-autoscaler-status"],
        ..call("", "configmaps", WATCH)
    },
    ApiCall {
        resource_names: &["cluster-autoscaler"],
        ..call("coordination.k8s.io", "leases", WATCH)
    },
];

/// One `(scope, group, resource, resource name or "", verb)` tuple per permission in `calls`,
/// sorted and without duplicates: the form in which RBAC rules are compared.
pub fn permissions(calls: &[ApiCall]) -> Vec<(Scope, String, String, String, String)> {
    let mut out: Vec<_> = calls
        .iter()
        .flat_map(|c| {
            let names: Vec<&str> = if c.resource_names.is_empty() {
                vec![""]
            } else {
                c.resource_names.to_vec()
            };
            names.into_iter().flat_map(move |n| {
                c.verbs.iter().map(move |v| {
                    (
                        c.scope,
                        c.group.to_string(),
                        c.resource.to_string(),
                        n.to_string(),
                        v.to_string(),
                    )
                })
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_sorted_known_and_unique() {
        let known = [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        for c in CONTROLLER_API_CALLS.iter().chain(WEBHOOK_API_CALLS) {
            assert!(c.verbs.windows(2).all(|w| w[0] < w[1]), "{c:?}");
            assert!(c.verbs.iter().all(|v| known.contains(v)), "{c:?}");
        }
    }

    #[test]
    fn a_watch_is_always_a_list_too() {
        for c in CONTROLLER_API_CALLS.iter().chain(WEBHOOK_API_CALLS) {
            assert_eq!(
                c.verbs.contains(&"watch"),
                c.verbs.contains(&"list"),
                "{c:?}"
            );
        }
    }

    #[test]
    fn permissions_expand_names_and_verbs() {
        let p = permissions(CONTROLLER_API_CALLS);
        assert!(p.contains(&(
            Scope::ReleaseNamespace,
            "coordination.k8s.io".into(),
            "leases".into(),
            LEADER_ELECTION_LEASE.into(),
            "update".into()
        )));
        assert!(!p.iter().any(|t| t.4 == "update" && t.3.is_empty()));
    }
}
