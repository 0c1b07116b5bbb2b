//! Provisioner defaulting: what the mutating webhook adds and `kubectl karpenter validate` shows.
//!
//! A default is added only when no requirement uses its key (with any operator); keys are
//! compared after trimming and legacy-label normalisation. Defaulting is idempotent.

use serde::Serialize;
use serde_json::Value;

use super::labels;
use super::provisioner::{ProvisionerSpec, Requirement};

/// One change made by defaulting, addressed as an RFC 6902 `add` operation relative to the
/// object root.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Defaulted {
    /// JSON pointer of the `add` operation (`/spec/requirements` or `/spec/requirements/-`).
    pub path: String,
    /// The value added.
    pub value: Value,
    /// Why, in words: `karpenter.sh/capacity-type In [on-demand]: no capacity type was requested`.
    pub reason: String,
}

/// Instance categories allowed when a provisioner does not constrain instance types at all.
pub const DEFAULT_INSTANCE_CATEGORIES: &[&str] = &["c", "m", "r"];
/// Generations must be greater than this when instance types are not constrained.
pub const DEFAULT_MIN_GENERATION_EXCLUSIVE: &str = "2";

fn has_key(reqs: &[Requirement], key: &str) -> bool {
    // A key with stray whitespace is rejected by validation with a fix; do not add a second
    // requirement for the same key behind the user's back.
    reqs.iter().any(|r| labels::normalize(r.key.trim()) == key)
}

/// Applies the Provisioner defaults in place and returns what changed (empty when nothing did).
pub fn default_provisioner(spec: &mut ProvisionerSpec) -> Vec<Defaulted> {
    let mut wanted: Vec<(Requirement, String)> = Vec::new();
    let simple = [
        (
            labels::CAPACITY_TYPE,
            labels::CAPACITY_TYPE_ON_DEMAND,
            "no capacity type was requested",
        ),
        (labels::ARCH, "amd64", "no architecture was requested"),
        (labels::OS, "linux", "no operating system was requested"),
    ];
    for (key, value, why) in simple {
        if !has_key(&spec.requirements, key) {
            wanted.push((Requirement::new(key, "In", &[value]), why.to_string()));
        }
    }
    let instance_keys = [
        labels::INSTANCE_TYPE,
        labels::INSTANCE_FAMILY,
        labels::INSTANCE_CATEGORY,
        labels::INSTANCE_GENERATION,
    ];
    if !instance_keys.iter().any(|k| has_key(&spec.requirements, k)) {
        let why = "no instance type, family, category or generation was requested";
        wanted.push((
            Requirement::new(labels::INSTANCE_CATEGORY, "In", DEFAULT_INSTANCE_CATEGORIES),
            why.to_string(),
        ));
        wanted.push((
            Requirement::new(
                labels::INSTANCE_GENERATION,
                "Gt",
                &[DEFAULT_MIN_GENERATION_EXCLUSIVE],
            ),
            why.to_string(),
        ));
    }
    let mut changes = Vec::with_capacity(wanted.len());
    for (req, why) in wanted {
        let reason = format!(
            "{} {} [{}]: {why}",
            req.key,
            req.operator,
            req.values.join(", ")
        );
        let value = serde_json::to_value(&req).unwrap_or(Value::Null);
        if spec.requirements.is_empty() {
            changes.push(Defaulted {
                path: "/spec/requirements".into(),
                value: Value::Array(vec![value]),
                reason,
            });
        } else {
            changes.push(Defaulted {
                path: "/spec/requirements/-".into(),
                value,
                reason,
            });
        }
        spec.requirements.push(req);
    }
    changes
}

/// The changes as an RFC 6902 JSON patch document.
pub fn json_patch(changes: &[Defaulted]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| serde_json::json!({"op": "add", "path": c.path, "value": c.value}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &ProvisionerSpec) -> Vec<String> {
        spec.requirements.iter().map(|r| r.key.clone()).collect()
    }

    #[test]
    fn empty_spec_gets_every_default() {
        let mut spec = ProvisionerSpec::default();
        let changes = default_provisioner(&mut spec);
        assert_eq!(
            keys(&spec),
            [
                labels::CAPACITY_TYPE,
                labels::ARCH,
                labels::OS,
                labels::INSTANCE_CATEGORY,
                labels::INSTANCE_GENERATION
            ]
        );
        assert_eq!(changes.len(), 5);
        assert_eq!(changes[0].path, "/spec/requirements");
        assert!(changes[1..]
            .iter()
            .all(|c| c.path == "/spec/requirements/-"));
        assert_eq!(spec.requirements[0].values, ["on-demand"]);
        assert_eq!(spec.requirements[4].operator, "Gt");
    }

    #[test]
    fn any_operator_suppresses_the_default() {
        let mut spec = ProvisionerSpec {
            requirements: vec![
                Requirement::new(labels::CAPACITY_TYPE, "NotIn", &["spot"]),
                Requirement::new("beta.kubernetes.io/arch", "Exists", &[]),
                Requirement::new(labels::INSTANCE_FAMILY, "In", &["m5"]),
            ],
            ..Default::default()
        };
        let changes = default_provisioner(&mut spec);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].value["key"], labels::OS);
        assert_eq!(changes[0].path, "/spec/requirements/-");
    }

    #[test]
    fn second_pass_changes_nothing() {
        let mut spec = ProvisionerSpec::default();
        default_provisioner(&mut spec);
        let once = spec.clone();
        assert!(default_provisioner(&mut spec).is_empty());
        assert_eq!(spec, once);
    }

    #[test]
    fn patch_applies_to_the_original_json() {
        let mut spec = ProvisionerSpec {
            requirements: vec![Requirement::new(labels::ZONE, "In", &["us-east-1a"])],
            ..Default::default()
        };
        let changes = default_provisioner(&mut spec);
        let patch = json_patch(&changes);
        assert_eq!(patch.as_array().map(Vec::len), Some(5));
        assert_eq!(patch[0]["op"], "add");
        assert_eq!(patch[0]["path"], "/spec/requirements/-");
    }
}
