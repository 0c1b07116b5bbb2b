//! Emptiness: a node of a provisioner with `ttlSecondsAfterEmpty` that has no pods but daemon,
//! static or terminal ones gets `karpenter.sh/emptiness-timestamp`; the annotation goes when a
//! pod lands; once the TTL has passed since the timestamp, the Node is deleted (the finalizer
//! then drains it and terminates the instance).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::info;

use crate::cluster::{elapsed, nodes, pods, SharedCluster};

use super::clock::{self, Clock};
use super::writer::{KubeWriter, WriteError};
use super::LifecycleError;

/// The emptiness loop.
pub struct Emptiness<W> {
    cluster: SharedCluster,
    writer: Arc<W>,
    clock: Arc<dyn Clock>,
    recent: Duration,
}

enum Action {
    Mark(String),
    Unmark(String),
    Delete(String, u64),
}

// === impl Emptiness ===

impl<W: KubeWriter> Emptiness<W> {
    /// A loop over the seams; nodes that received pods within `recent` are left alone (their
    /// pods may not have reached the index yet).
    pub fn new(
        cluster: SharedCluster,
        writer: Arc<W>,
        clock: Arc<dyn Clock>,
        recent: Duration,
    ) -> Self {
        Self {
            cluster,
            writer,
            clock,
            recent,
        }
    }

    /// One pass; returns when the next empty node's TTL runs out.
    pub async fn reconcile(&self) -> Result<Option<Timestamp>, LifecycleError> {
        let now = self.clock.now();
        let mut actions = Vec::new();
        let mut next: Option<Timestamp> = None;
        {
            let c = self.cluster.read();
            for n in c.nodes() {
                let name = nodes::name(n).to_string();
                let Some(ttl) = nodes::provisioner(n)
                    .and_then(|p| c.provisioner(p))
                    .and_then(|p| p.spec.ttl_seconds_after_empty)
                else {
                    continue;
                };
                if nodes::is_deleting(n) || !nodes::is_ready(n) {
                    continue;
                }
                let empty = !c
                    .pods_on(&name)
                    .iter()
                    .any(|p| pods::counts_against_emptiness(p))
                    && !c.nominations().any(|(_, nom)| nom.node == name);
                let marked = nodes::annotation(n, nodes::EMPTINESS_TIMESTAMP);
                let recent = c
                    .last_placement(&name)
                    .is_some_and(|t| elapsed(t, now) < self.recent);
                match (empty, marked) {
                    (false, Some(_)) => actions.push(Action::Unmark(name)),
                    (true, None) if !recent => {
                        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                        let due = clock::add(now, ttl);
                        next = Some(next.map_or(due, |m| m.min(due)));
                        actions.push(Action::Mark(name));
                    }
                    (true, Some(since)) => {
                        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                        let since = clock::parse(since).unwrap_or(now);
                        let due = clock::add(since, ttl);
                        if now >= due {
                            actions.push(Action::Delete(name, ttl.as_secs()));
                        } else {
                            next = Some(next.map_or(due, |m| m.min(due)));
                        }
                    }
                    _ => {}
                }
            }
        }
        for a in actions {
            let r = match a {
                Action::Mark(node) => {
                    let changes = BTreeMap::from([(
                        nodes::EMPTINESS_TIMESTAMP.to_string(),
                        Some(clock::format(now)),
                    )]);
                    let r = self.writer.annotate_node(&node, &changes).await;
                    if r.is_ok() {
                        info!(target: "controller.node", node = node.as_str(), "Added TTL to empty node {node}");
                    }
                    r
                }
                Action::Unmark(node) => {
                    let changes = BTreeMap::from([(nodes::EMPTINESS_TIMESTAMP.to_string(), None)]);
                    let r = self.writer.annotate_node(&node, &changes).await;
                    if r.is_ok() {
                        info!(target: "controller.node", node = node.as_str(), "Removed emptiness TTL from node {node}");
                    }
                    r
                }
                Action::Delete(node, ttl) => {
                    info!(
                        target: "controller.node",
                        node = node.as_str(),
                        ttl_seconds = ttl,
                        "Triggering termination after {ttl}s for empty node {node}"
                    );
                    self.writer.delete_node(&node).await
                }
            };
            match r {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(next)
    }
}
