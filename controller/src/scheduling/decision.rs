//! The packer's output: nodes to launch, placements on existing nodes, and why the rest did not
//! fit. Serialises to the stable document `kubectl karpenter simulate -o json` prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to launch and where every pod goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// New nodes to launch, in creation order.
    pub nodes: Vec<NewNode>,
    /// Pods placed on nodes that already exist (only nodes that received pods).
    pub existing_nodes: Vec<ExistingNodePlacement>,
    /// Pods that fit nowhere, with the first failing constraint per provisioner.
    pub unschedulable: Vec<Unschedulable>,
    /// Sum of the new nodes' prices (USD/hour).
    pub total_price_per_hour: f64,
    /// Soft constraints relaxed to place pods, per pod, in the order they were relaxed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relaxed: Vec<Relaxation>,
    /// Assumptions the prices rest on (e.g. unknown spot prices), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A node to launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewNode {
    /// The provisioner it comes from.
    pub provisioner: String,
    /// The cheapest option.
    pub instance_type: String,
    /// All options that fit, cheapest first (at most 60).
    pub instance_type_options: Vec<String>,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Zones the node may land in (one when pinned).
    pub zones: Vec<String>,
    /// Price of the cheapest option (USD/hour).
    pub price_per_hour: f64,
    /// True when the price is an upper bound because the spot price is unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub price_is_upper_bound: bool,
    /// Pods as `namespace/name`.
    pub pods: Vec<String>,
}

/// Pods placed on an existing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExistingNodePlacement {
    /// Node name.
    pub node: String,
    /// Pods as `namespace/name`.
    pub pods: Vec<String>,
}

/// A pod that fits nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unschedulable {
    /// `namespace/name`.
    pub pod: String,
    /// Provisioner name to the first constraint that failed there, in words.
    pub reasons: BTreeMap<String, String>,
}

/// Soft constraints relaxed for one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relaxation {
    /// `namespace/name`.
    pub pod: String,
    /// What was relaxed, in order.
    pub relaxed: Vec<String>,
}

// === impl Decision ===

impl Decision {
    /// The new node and index holding a pod, if any.
    pub fn node_of(&self, pod: &str) -> Option<&NewNode> {
        self.nodes.iter().find(|n| n.pods.iter().any(|p| p == pod))
    }

    /// The existing node holding a pod, if any.
    pub fn existing_node_of(&self, pod: &str) -> Option<&str> {
        self.existing_nodes
            .iter()
            .find(|n| n.pods.iter().any(|p| p == pod))
            .map(|n| n.node.as_str())
    }

    /// Whether the pod was placed somewhere.
    pub fn is_scheduled(&self, pod: &str) -> bool {
        self.node_of(pod).is_some() || self.existing_node_of(pod).is_some()
    }

    /// Number of pods placed (new and existing nodes).
    pub fn scheduled_count(&self) -> usize {
        self.nodes.iter().map(|n| n.pods.len()).sum::<usize>()
            + self
                .existing_nodes
                .iter()
                .map(|n| n.pods.len())
                .sum::<usize>()
    }
}

// === impl Decision (table) ===

impl Decision {
    /// A kubectl-style table: one row per new node, then existing-node placements and
    /// unschedulable pods with their reasons.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<[String; 6]> = vec![[
            "PROVISIONER".into(),
            "INSTANCE-TYPE".into(),
            "CAPACITY-TYPE".into(),
            "ZONES".into(),
            "PRICE/H".into(),
            "PODS".into(),
        ]];
        for n in &self.nodes {
            let price = if n.price_is_upper_bound {
                format!("<={:.4}", n.price_per_hour)
            } else {
                format!("{:.4}", n.price_per_hour)
            };
            rows.push([
                n.provisioner.clone(),
                n.instance_type.clone(),
                n.capacity_type.clone(),
                n.zones.join(","),
                price,
                n.pods.len().to_string(),
            ]);
        }
        let mut widths = [0usize; 6];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("   ").trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "total: {} new node(s), {:.4} USD/hour\n",
            self.nodes.len(),
            self.total_price_per_hour
        ));
        for e in &self.existing_nodes {
            out.push_str(&format!(
                "existing node {}: {}\n",
                e.node,
                e.pods.join(", ")
            ));
        }
        for u in &self.unschedulable {
            out.push_str(&format!("unschedulable {}:\n", u.pod));
            for (p, r) in &u.reasons {
                out.push_str(&format!("  {p}: {r}\n"));
            }
        }
        for r in &self.relaxed {
            out.push_str(&format!("relaxed {}: {}\n", r.pod, r.relaxed.join("; ")));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}
