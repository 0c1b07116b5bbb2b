//! Scenario files: timed steps holding ordinary Kubernetes YAML.
//!
//! ```yaml
//! name: inflate                       # optional
//! start: "2021-11-23T04:46:00Z"       # optional virtual start time
//! cluster: demo                       # optional cluster name (instance tags)
//! steps:
//!   - apply: |                        # one or more Kubernetes documents (string or list)
//!       apiVersion: apps/v1
//!       kind: Deployment
//!       ...
//!   - at: 11s                         # optional: run the controller until this virtual time
//!     scale: {deployment: inflate, namespace: default, replicas: 10}
//!   - delete: {kind: Deployment, name: inflate, namespace: default}
//!   - wait: 60s                       # run the controller this long
//!   - capacityError: {instanceType: m5.large, zone: us-east-1a, capacityType: spot}
//!   - restoreCapacity: {instanceType: m5.large, zone: us-east-1a, capacityType: spot}
//! ```
//!
//! Each step holds exactly one action, plus an optional `at` (time since `start`).

use serde::Deserialize;
use serde_json::Value;

use crate::api::validation::parse_duration_secs;

/// Why a scenario cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// The file is not YAML of the scenario's shape.
    #[error("invalid scenario: {0}")]
    Parse(String),
    /// A step is wrong.
    #[error("steps[{index}].{field}: {message}")]
    Step {
        /// Position of the step.
        index: usize,
        /// The field at fault.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Virtual start time (RFC 3339).
    pub start: Option<String>,
    /// Cluster name.
    pub cluster: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Run the controller until this long after the start first.
    pub at: Option<f64>,
    /// What to do.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply Kubernetes documents.
    Apply(Vec<Value>),
    /// Set a Deployment's replicas.
    Scale {
        /// `namespace/name`.
        deployment: String,
        /// Replicas.
        replicas: i32,
    },
    /// Delete an object.
    Delete {
        /// Kind.
        kind: String,
        /// `namespace/name` for namespaced kinds, the name otherwise.
        key: String,
    },
    /// Run the controller for this many seconds.
    Wait(f64),
    /// Make an offering fail with insufficient capacity.
    CapacityError(OfferingRef),
    /// Give an offering its capacity back.
    RestoreCapacity(OfferingRef),
}

/// An offering: instance type, zone, capacity type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferingRef {
    /// Instance type.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    apply: Option<serde_yaml::Value>,
    #[serde(default)]
    scale: Option<RawScale>,
    #[serde(default)]
    delete: Option<RawDelete>,
    #[serde(default)]
    wait: Option<String>,
    #[serde(default)]
    capacity_error: Option<OfferingRef>,
    #[serde(default)]
    restore_capacity: Option<OfferingRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawScale {
    deployment: String,
    #[serde(default)]
    namespace: Option<String>,
    replicas: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDelete {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Kinds a scenario may apply.
pub const KINDS: &[&str] = &[
    "Provisioner",
    "AWSNodeTemplate",
    "Deployment",
    "Pod",
    "DaemonSet",
    "PodDisruptionBudget",
    "Node",
];

// === impl Scenario ===

impl Scenario {
    /// Parses a scenario file.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario =
            serde_yaml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        let mut steps = Vec::new();
        for (index, s) in raw.steps.into_iter().enumerate() {
            let err = |field: &str, message: String| ScenarioError::Step {
                index,
                field: field.to_string(),
                message,
            };
            let at =
                s.at.as_deref()
                    .map(|a| {
                        parse_duration_secs(a)
                            .map_err(|m| err("at", format!("{m}; write e.g. `at: 30s`")))
                    })
                    .transpose()?;
            let mut actions = Vec::new();
            if let Some(v) = s.apply {
                actions.push(Action::Apply(documents(v).map_err(|m| err("apply", m))?));
            }
            if let Some(sc) = s.scale {
                let ns = sc.namespace.unwrap_or_else(|| "default".into());
                actions.push(Action::Scale {
                    deployment: format!("{ns}/{}", sc.deployment),
                    replicas: sc.replicas,
                });
            }
            if let Some(d) = s.delete {
                let key = if matches!(d.kind.as_str(), "Provisioner" | "AWSNodeTemplate" | "Node") {
                    d.name
                } else {
                    format!(
                        "{}/{}",
                        d.namespace.unwrap_or_else(|| "default".into()),
                        d.name
                    )
                };
                if !KINDS.contains(&d.kind.as_str()) {
                    return Err(err(
                        "delete.kind",
                        format!("unsupported kind {:?}; use one of {KINDS:?}", d.kind),
                    ));
                }
                actions.push(Action::Delete { kind: d.kind, key });
            }
            if let Some(w) = s.wait {
                let secs = parse_duration_secs(&w)
                    .map_err(|m| err("wait", format!("{m}; write e.g. `wait: 60s`")))?;
                actions.push(Action::Wait(secs));
            }
            if let Some(o) = s.capacity_error {
                actions.push(Action::CapacityError(o));
            }
            if let Some(o) = s.restore_capacity {
                actions.push(Action::RestoreCapacity(o));
            }
            if actions.len() != 1 {
                return Err(err(
                    "",
                    format!(
                        "a step holds exactly one of apply, scale, delete, wait, capacityError, restoreCapacity; found {}",
                        actions.len()
                    ),
                ));
            }
            steps.push(Step {
                at,
                action: actions.remove(0),
            });
        }
        Ok(Self {
            name: raw.name.unwrap_or_else(|| "scenario".into()),
            start: raw.start,
            cluster: raw.cluster.unwrap_or_else(|| "demo".into()),
            steps,
        })
    }
}

/// The documents of an `apply`: a multi-document YAML string, one object, or a list.
fn documents(v: serde_yaml::Value) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match v {
        serde_yaml::Value::String(s) => {
            for d in serde_yaml::Deserializer::from_str(&s) {
                let v = Value::deserialize(d).map_err(|e| e.to_string())?;
                if !v.is_null() {
                    out.push(v);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for i in items {
                out.push(serde_json::to_value(i).map_err(|e| e.to_string())?);
            }
        }
        other => out.push(serde_json::to_value(other).map_err(|e| e.to_string())?),
    }
    for (i, d) in out.iter().enumerate() {
        let kind = d.get("kind").and_then(Value::as_str).unwrap_or("");
        if !KINDS.contains(&kind) {
            return Err(format!(
                "document {i} has kind {kind:?}; a scenario applies {KINDS:?}"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_parses() {
        let s = Scenario::from_yaml(super::super::DEFAULT_SCENARIO).unwrap();
        assert_eq!(s.steps.len(), 5);
        assert!(matches!(
            s.steps[2].action,
            Action::Scale { replicas: 10, .. }
        ));
        assert_eq!(s.steps[2].at, Some(11.0));
    }

    #[test]
    fn errors_name_the_step_and_field() {
        let e = Scenario::from_yaml("steps:\n  - wait: soon\n").unwrap_err();
        assert!(e.to_string().starts_with("steps[0].wait:"), "{e}");
        let e = Scenario::from_yaml("steps:\n  - wait: 1s\n    delete: {kind: Pod, name: a}\n")
            .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = Scenario::from_yaml("steps:\n  - apply: {kind: Service, metadata: {name: a}}\n")
            .unwrap_err();
        assert!(e.to_string().contains("Service"), "{e}");
        let e = Scenario::from_yaml("steps:\n  - scael: {}\n").unwrap_err();
        assert!(e.to_string().contains("scael"), "{e}");
    }
}
