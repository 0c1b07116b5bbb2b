//! Facts about a Node: ours or not, ready, being deleted, its instance.

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use crate::api::labels;

/// The finalizer that makes deleting a Node drain it and terminate its instance first.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";
/// Annotation holding when a node was first seen empty (RFC 3339).
pub const EMPTINESS_TIMESTAMP: &str = "karpenter.sh/emptiness-timestamp";
/// Annotation holding the summary of the Decision that launched the node (JSON).
pub const DECISION_ANNOTATION: &str = "karpenter.sh/decision";
/// Annotation saying what holds a drain (the PDB and the pod), while it is held.
pub const DRAIN_BLOCKED: &str = "karpenter.sh/drain-blocked";
/// Annotation saying why a node cannot be expired or emptied right now.
pub const DISRUPTION_BLOCKED: &str = "karpenter.sh/disruption-blocked";
/// Label Karpenter adds once a node is Ready and its startup taints are gone.
pub const INITIALIZED: &str = "karpenter.sh/initialized";

/// The node's name.
pub fn name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or("")
}

/// The provisioner that launched the node (its `karpenter.sh/provisioner-name` label).
pub fn provisioner(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::PROVISIONER_NAME))
        .map(String::as_str)
}

/// Whether Karpenter launched the node.
pub fn is_owned(node: &Node) -> bool {
    provisioner(node).is_some()
}

/// Whether the node reports `Ready=True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the node is being deleted.
pub fn is_deleting(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_some()
}

/// Whether the node is cordoned.
pub fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// Whether the node carries the termination finalizer.
pub fn has_finalizer(node: &Node) -> bool {
    node.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TERMINATION_FINALIZER)
}

/// An annotation's value.
pub fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The part of the Decision that launched a node, kept on the Node as the
/// [`DECISION_ANNOTATION`] (JSON) so that `kubectl karpenter explain node/...` can say why the
/// node exists and why it is this instance type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionSummary {
    /// The provisioner that launched it.
    pub provisioner: String,
    /// The instance type that was launched (empty in annotations written before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_type: String,
    /// The capacity type that was launched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capacity_type: String,
    /// The cheapest instance-type options the launch offered EC2, cheapest first (at most
    /// [`DecisionSummary::MAX_LISTED`]).
    pub instance_type_options: Vec<String>,
    /// How many options the launch offered in all.
    pub options: usize,
    /// Zones the node was allowed in.
    pub zones: Vec<String>,
    /// Price of the cheapest option (USD/hour).
    pub price_per_hour: f64,
    /// How many pods the node was launched for.
    pub pods: usize,
    /// The pods it was launched for, as `namespace/name` (at most
    /// [`DecisionSummary::MAX_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_names: Vec<String>,
}

impl DecisionSummary {
    /// Most options and pod names listed in the annotation (it must stay small).
    pub const MAX_LISTED: usize = 10;

    /// The summary on a node, if it carries a readable one.
    pub fn of(node: &Node) -> Option<Self> {
        serde_json::from_str(annotation(node, DECISION_ANNOTATION)?).ok()
    }
}

/// The EC2 instance ID from `spec.providerID` (`aws:///us-east-1a/i-0123...`).
pub fn instance_id(node: &Node) -> Option<&str> {
    let id = node.spec.as_ref()?.provider_id.as_deref()?;
    let last = id.rsplit('/').next()?;
    last.starts_with("i-").then_some(last)
}

/// `aws:///<zone>/<instance id>`.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    #[test]
    fn instance_id_from_provider_id() {
        let node = Node {
            spec: Some(NodeSpec {
                provider_id: Some(provider_id("us-east-1a", "i-0abc")),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(instance_id(&node), Some("i-0abc"));
        let kind = Node {
            spec: Some(NodeSpec {
                provider_id: Some("kind://docker/kind/kind-worker".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(instance_id(&kind), None);
        assert_eq!(instance_id(&Node::default()), None);
    }
}
