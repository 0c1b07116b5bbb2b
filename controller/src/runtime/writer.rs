//! [`KubeWriter`] over kube-rs: one API call per change, with the patch type that fits each.
//!
//! The client given to [`KubeApiWriter::new`] should have kube-rs's default retries off
//! (`Config::default_retry = false`): they retry 429 answers for minutes, and a 429 from the
//! Eviction API is the "PodDisruptionBudget allows no disruption" answer the termination loop
//! acts on (it retries with its own backoff).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::Client;
use serde_json::json;

use crate::api::provisioner::Condition;
use crate::api::{Provisioner, Quantity, PROVISIONER_API_VERSION};
use crate::lifecycle::{Event, EventType, Eviction, KubeWriter, WriteError};

/// The finalizer that holds a Node until it is drained and its instance terminated.
pub const FINALIZER: &str = "karpenter.sh/termination";

/// The field manager of the controller's server-side applies.
pub const FIELD_MANAGER: &str = "karpenter";

/// How often a guarded read-modify-write is tried when the object changes in between.
const CONFLICT_RETRIES: u32 = 3;

/// Writes through the Kubernetes API.
pub struct KubeApiWriter {
    client: Client,
    recorder: Recorder,
}

// === impl KubeApiWriter ===

impl KubeApiWriter {
    /// A writer using `client`; Events are reported by `karpenter` from `instance`.
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: "karpenter".into(),
            instance: Some(instance.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("default", key))
}

fn map_err(kind: &'static str, name: &str, operation: String, e: kube::Error) -> WriteError {
    match e {
        kube::Error::Api(s) if s.code == 404 => WriteError::NotFound {
            kind,
            name: name.to_string(),
        },
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            WriteError::AlreadyExists {
                kind,
                name: name.to_string(),
            }
        }
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict {
            kind,
            name: name.to_string(),
            message: s.message,
        },
        other => WriteError::Api {
            operation,
            message: other.to_string(),
        },
    }
}

impl KubeWriter for KubeApiWriter {
    async fn create_node(&self, node: &Node) -> Result<(), WriteError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let created = self
            .nodes()
            .create(&PostParams::default(), node)
            .await
            .map_err(|e| map_err("Node", &name, format!("create node {name}"), e))?;
        // A Node's status is its kubelet's to write, but until the kubelet reports, the
        // scheduler needs the capacity we planned with: write it through the status subresource
        // if the create dropped it.
        if created
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .is_none()
        {
            if let Some(status) = &node.status {
                self.nodes()
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .map_err(|e| {
                        map_err("Node", &name, format!("write the status of node {name}"), e)
                    })?;
            }
        }
        Ok(())
    }

    async fn bind_pod(&self, pod: &str, node: &str) -> Result<(), WriteError> {
        let (ns, name) = split(pod);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        });
        self.pods(ns)
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
            .map(|_| ())
            .map_err(|e| map_err("Pod", pod, format!("bind pod {pod} to {node}"), e))
    }

    async fn annotate_node(
        &self,
        node: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), WriteError> {
        let patch = json!({"metadata": {"annotations": changes}});
        self.nodes()
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| map_err("Node", node, format!("annotate node {node}"), e))
    }

    async fn cordon(&self, node: &str) -> Result<(), WriteError> {
        self.nodes()
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| map_err("Node", node, format!("cordon node {node}"), e))
    }

    async fn evict(&self, pod: &str) -> Result<Eviction, WriteError> {
        let (ns, name) = split(pod);
        match self.pods(ns).evict(name, &EvictParams::default()).await {
            Ok(_) => Ok(Eviction::Evicted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked {
                pdb: None,
                message: s.message,
            }),
            Err(e) => Err(map_err("Pod", pod, format!("evict pod {pod}"), e)),
        }
    }

    async fn delete_node(&self, node: &str) -> Result<(), WriteError> {
        self.nodes()
            .delete(node, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| map_err("Node", node, format!("delete node {node}"), e))
    }

    async fn remove_finalizer(&self, node: &str) -> Result<(), WriteError> {
        let current = self
            .nodes()
            .get(node)
            .await
            .map_err(|e| map_err("Node", node, format!("read node {node}"), e))?;
        let finalizers = current.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        // The resourceVersion we read makes this a compare-and-swap: if another controller
        // changed the list meanwhile, the patch fails with 409 instead of dropping its entry.
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": current.metadata.resource_version,
        }});
        self.nodes()
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                map_err(
                    "Node",
                    node,
                    format!("remove the finalizer of node {node}"),
                    e,
                )
            })
    }

    async fn set_provisioner_resources(
        &self,
        provisioner: &str,
        resources: &BTreeMap<String, Quantity>,
    ) -> Result<(), WriteError> {
        let api: Api<Provisioner> = Api::all(self.client.clone());
        // Server-side apply of the whole map (the CRD marks it atomic): a resource whose last
        // node went, or every resource once the provisioner has no node, is removed. A merge
        // patch cannot drop keys it does not name, and a stale usage would hold the limits.
        let body = json!({
            "apiVersion": PROVISIONER_API_VERSION,
            "kind": "Provisioner",
            "metadata": {"name": provisioner},
            "status": {"resources": resources},
        });
        api.patch_status(
            provisioner,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            map_err(
                "Provisioner",
                provisioner,
                format!("write the status of provisioner {provisioner}"),
                e,
            )
        })
    }

    async fn set_provisioner_condition(
        &self,
        provisioner: &str,
        condition: &Condition,
    ) -> Result<(), WriteError> {
        let api: Api<Provisioner> = Api::all(self.client.clone());
        // The list is atomic and may hold conditions of others: read it, put ours in place and
        // write it back guarded by the resourceVersion read; a concurrent change is re-read.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = api.get_status(provisioner).await.map_err(|e| {
                map_err(
                    "Provisioner",
                    provisioner,
                    format!("read the status of provisioner {provisioner}"),
                    e,
                )
            })?;
            let existing = current.status.map(|s| s.conditions).unwrap_or_default();
            let conditions = crate::lifecycle::writer::with_condition(&existing, condition);
            if conditions == existing {
                return Ok(());
            }
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"conditions": conditions},
            });
            let result = api
                .patch_status(provisioner, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
                .map_err(|e| {
                    map_err(
                        "Provisioner",
                        provisioner,
                        format!("write the conditions of provisioner {provisioner}"),
                        e,
                    )
                });
            match result {
                Err(WriteError::Conflict { .. }) if attempt < CONFLICT_RETRIES => continue,
                other => return other,
            }
        }
    }

    async fn event(&self, event: &Event) -> Result<(), WriteError> {
        let r = &event.regarding;
        let (api_version, uid) = match r.kind {
            "Provisioner" => (PROVISIONER_API_VERSION, None),
            _ => ("v1", None::<String>),
        };
        let reference = ObjectReference {
            api_version: Some(api_version.to_string()),
            kind: Some(r.kind.to_string()),
            name: Some(r.name.clone()),
            namespace: r.namespace.clone(),
            uid,
            ..Default::default()
        };
        let ev = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.message.chars().take(1024).collect()),
            action: event.reason.clone(),
            secondary: None,
        };
        self.recorder
            .publish(&ev, &reference)
            .await
            .map_err(|e| WriteError::Api {
                operation: format!("record event {} on {} {}", event.reason, r.kind, r.name),
                message: e.to_string(),
            })
    }
}
