//! `kubectl karpenter simulate` as a library function: parsed Kubernetes documents in
//! (Provisioners, Pods, Deployments, DaemonSets, Nodes), a [`Decision`] out.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::Value;

use crate::api::{decode_provisioner, default_provisioner};

use super::decision::Decision;
use super::instance_type::InstanceType;
use super::scheduler::{
    ExistingNode, Scheduler, SchedulerInput, SchedulerOptions, SchedulingError,
};

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulateError {
    /// A document could not be decoded as its kind.
    #[error("invalid {kind} {name}: {message}")]
    Decode {
        /// Kind of the document.
        kind: String,
        /// Name of the object.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A pod is bound to a node that is not among the documents.
    #[error("pod {pod} is bound to node {node}, which is not in the input")]
    UnknownNode {
        /// `namespace/name`.
        pod: String,
        /// Node name.
        node: String,
    },
    /// Packing failed.
    #[error(transparent)]
    Scheduling(#[from] SchedulingError),
}

/// Options of a simulation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimulateOptions {
    /// Packer options.
    pub scheduler: SchedulerOptions,
}

fn name_of(doc: &Value) -> String {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string()
}

fn decode<T: serde::de::DeserializeOwned>(kind: &str, doc: &Value) -> Result<T, SimulateError> {
    serde_json::from_value(doc.clone()).map_err(|e| SimulateError::Decode {
        kind: kind.to_string(),
        name: name_of(doc),
        message: e.to_string(),
    })
}

fn flatten(docs: &[Value], out: &mut Vec<Value>) {
    for d in docs {
        if d.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(items) = d.get("items").and_then(Value::as_array) {
                flatten(items, out);
            }
        } else if !d.is_null() {
            out.push(d.clone());
        }
    }
}

/// Expands a Deployment into its replicas, named `<deployment>-<i>`.
pub fn expand_deployment(d: &Deployment) -> Vec<Pod> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let namespace = d.metadata.namespace.clone();
    let Some(spec) = d.spec.as_ref() else {
        return Vec::new();
    };
    let replicas = spec.replicas.unwrap_or(1).max(0);
    (0..replicas)
        .map(|i| {
            let mut meta = spec.template.metadata.clone().unwrap_or_default();
            meta.name = Some(format!("{name}-{i}"));
            meta.namespace = namespace.clone();
            Pod {
                metadata: meta,
                spec: spec.template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Packs the pending pods of the documents onto their nodes and new instances.
pub fn simulate(
    docs: &[Value],
    instance_types: Vec<InstanceType>,
    options: &SimulateOptions,
) -> Result<Decision, SimulateError> {
    let mut all = Vec::new();
    flatten(docs, &mut all);
    let mut input = SchedulerInput {
        instance_types,
        options: options.scheduler.clone(),
        ..Default::default()
    };
    let mut pods: Vec<Pod> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut ignored: BTreeMap<String, usize> = BTreeMap::new();
    for doc in &all {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        match kind {
            "Provisioner" => {
                let mut p = decode_provisioner(doc).map_err(|e| SimulateError::Decode {
                    kind: kind.into(),
                    name: name_of(doc),
                    message: e.to_string(),
                })?;
                default_provisioner(&mut p.spec);
                input.provisioners.push(p);
            }
            "Pod" => pods.push(decode(kind, doc)?),
            "Deployment" => pods.extend(expand_deployment(&decode::<Deployment>(kind, doc)?)),
            "DaemonSet" => input.daemonsets.push(decode::<DaemonSet>(kind, doc)?),
            "Node" => nodes.push(decode(kind, doc)?),
            other => *ignored.entry(other.to_string()).or_insert(0) += 1,
        }
    }
    let mut existing: Vec<ExistingNode> = nodes
        .into_iter()
        .map(|node| ExistingNode {
            node,
            pods: Vec::new(),
        })
        .collect();
    let mut pending = Vec::new();
    for p in pods {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
        match bound {
            Some(node) => {
                let Some(e) = existing
                    .iter_mut()
                    .find(|e| e.node.metadata.name.as_deref() == Some(node.as_str()))
                else {
                    return Err(SimulateError::UnknownNode {
                        pod: format!(
                            "{}/{}",
                            p.metadata.namespace.as_deref().unwrap_or("default"),
                            p.metadata.name.as_deref().unwrap_or("")
                        ),
                        node,
                    });
                };
                e.pods.push(Arc::new(p));
            }
            None => pending.push(p),
        }
    }
    input.existing_nodes = existing;
    let mut decision = Scheduler::new(input).solve(&pending)?;
    for (kind, n) in ignored {
        let kind = if kind.is_empty() { "<no kind>" } else { &kind };
        decision
            .notes
            .push(format!("ignored {n} document(s) of kind {kind}"));
    }
    Ok(decision)
}
