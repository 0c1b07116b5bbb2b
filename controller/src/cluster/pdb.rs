//! PodDisruptionBudgets: which budgets select a pod, and whether one allows no disruption.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::scheduling::pod::selector_requirements;

use super::pods;

/// `namespace/name` of a budget.
pub fn key(pdb: &PodDisruptionBudget) -> String {
    format!(
        "{}/{}",
        pdb.metadata.namespace.as_deref().unwrap_or("default"),
        pdb.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether the budget selects the pod (same namespace, selector matches its labels). A budget
/// without a selector, or with one that cannot be read, selects nothing.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let same_ns = pdb.metadata.namespace.as_deref().unwrap_or("default")
        == pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let Ok(reqs) = selector_requirements(selector) else {
        return false;
    };
    same_ns && reqs.matches_labels(&pod.metadata.labels.clone().unwrap_or_default())
}

fn resolve(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = pct * i64::from(total);
            let r = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            i32::try_from(r).unwrap_or(i32::MAX)
        }
    }
}

/// How many more pods the budget lets go: `status.disruptionsAllowed` when the disruption
/// controller has written it, otherwise computed from `minAvailable`/`maxUnavailable` over the
/// selected pods (`pods` is every pod the caller knows; Running ones count as healthy).
pub fn disruptions_allowed<'a>(
    pdb: &PodDisruptionBudget,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> i32 {
    if let Some(allowed) = pdb.status.as_ref().map(|s| s.disruptions_allowed) {
        if pdb
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation.is_some())
        {
            return allowed;
        }
    }
    let selected: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| selects(pdb, p) && !pods::is_terminal(p) && !pods::is_deleting(p))
        .collect();
    let expected = i32::try_from(selected.len()).unwrap_or(i32::MAX);
    let healthy = i32::try_from(
        selected
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count(),
    )
    .unwrap_or(i32::MAX);
    let spec = pdb.spec.as_ref();
    if let Some(min) = spec.and_then(|s| s.min_available.as_ref()) {
        return (healthy - resolve(min, expected, true)).max(0);
    }
    if let Some(max) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        return (resolve(max, expected, true) - (expected - healthy)).max(0);
    }
    // A budget with neither field allows nothing to go (as the API server's defaulting of
    // `minAvailable: 1` would, for one selected pod at least).
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn pod(name: &str, app: &str, running: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(if running { "Running" } else { "Pending" }.into()),
                ..Default::default()
            }),
        }
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn computes_allowance_from_spec_when_status_is_missing() {
        let pods = [
            pod("a", "web", true),
            pod("b", "web", true),
            pod("c", "db", true),
        ];
        assert_eq!(
            disruptions_allowed(&pdb(Some(IntOrString::Int(2)), None), &pods),
            0
        );
        assert_eq!(
            disruptions_allowed(&pdb(Some(IntOrString::Int(1)), None), &pods),
            1
        );
        assert_eq!(
            disruptions_allowed(&pdb(None, Some(IntOrString::String("50%".into()))), &pods),
            1
        );
        assert!(selects(&pdb(None, None), &pods[0]));
        assert!(!selects(&pdb(None, None), &pods[2]));
    }

    #[test]
    fn status_wins_when_observed() {
        let mut b = pdb(Some(IntOrString::Int(0)), None);
        b.status = Some(PodDisruptionBudgetStatus {
            disruptions_allowed: 0,
            observed_generation: Some(1),
            ..Default::default()
        });
        assert_eq!(disruptions_allowed(&b, &[pod("a", "web", true)]), 0);
    }
}
