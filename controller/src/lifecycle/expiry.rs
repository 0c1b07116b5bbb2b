//! Expiry: nodes of a provisioner with `ttlSecondsUntilExpired` are deleted once that old,
//! one at a time, oldest first. A node running a `karpenter.sh/do-not-evict` pod, or a pod
//! whose PodDisruptionBudget allows no disruption, is skipped with an Event that names it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::info;

use crate::cluster::{elapsed, nodes, pdb, pods, SharedCluster};

use super::clock::{self, Clock};
use super::writer::{Event, EventType, KubeWriter, ObjectRef, WriteError};
use super::LifecycleError;

/// The expiry loop.
pub struct Expiry<W> {
    cluster: SharedCluster,
    writer: Arc<W>,
    clock: Arc<dyn Clock>,
}

// === impl Expiry ===

impl<W: KubeWriter> Expiry<W> {
    /// A loop over the seams.
    pub fn new(cluster: SharedCluster, writer: Arc<W>, clock: Arc<dyn Clock>) -> Self {
        Self {
            cluster,
            writer,
            clock,
        }
    }

    /// One pass: deletes at most one expired node; returns when the next node expires.
    pub async fn reconcile(&self) -> Result<Option<Timestamp>, LifecycleError> {
        let now = self.clock.now();
        let mut expired: Vec<(Timestamp, String, u64)> = Vec::new();
        let mut next: Option<Timestamp> = None;
        let mut busy = false;
        let mut blocked: Vec<(String, String)> = Vec::new();
        let mut pick: Option<(String, u64)> = None;
        {
            let c = self.cluster.read();
            for n in c.nodes() {
                let Some(ttl) = nodes::provisioner(n)
                    .and_then(|p| c.provisioner(p))
                    .and_then(|p| p.spec.ttl_seconds_until_expired)
                else {
                    continue;
                };
                let Some(created) = n.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
                    continue;
                };
                let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                if nodes::is_deleting(n) {
                    // One at a time: an expired node still terminating holds the others.
                    busy |= elapsed(created, now) >= ttl;
                    continue;
                }
                if elapsed(created, now) >= ttl {
                    expired.push((created, nodes::name(n).to_string(), ttl.as_secs()));
                } else {
                    let due = clock::add(created, ttl);
                    next = Some(next.map_or(due, |m| m.min(due)));
                }
            }
            if busy {
                return Ok(next);
            }
            expired.sort();
            for (_, name, ttl) in &expired {
                match blocker(&c, name) {
                    Some(why) => blocked.push((name.clone(), why)),
                    None => {
                        pick = Some((name.clone(), *ttl));
                        break;
                    }
                }
            }
        }
        for (node, why) in blocked {
            let message = format!("cannot expire node {node}: {why}");
            info!(target: "controller.node", node = node.as_str(), "{message}");
            self.writer
                .event(&Event {
                    regarding: ObjectRef::node(&node),
                    type_: EventType::Warning,
                    reason: "ExpiryBlocked".into(),
                    message,
                })
                .await?;
            let changes = BTreeMap::from([(nodes::DISRUPTION_BLOCKED.to_string(), Some(why))]);
            match self.writer.annotate_node(&node, &changes).await {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some((node, ttl)) = pick {
            info!(
                target: "controller.node",
                node = node.as_str(),
                ttl_seconds = ttl,
                "Triggering termination for expired node {node} after {ttl}s"
            );
            match self.writer.delete_node(&node).await {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        } else if !expired.is_empty() {
            // Blocked ones are looked at again shortly.
            let retry = clock::add(now, Duration::from_secs(10));
            next = Some(next.map_or(retry, |m| m.min(retry)));
        }
        Ok(next)
    }
}

/// What keeps a node from being disrupted now, in words (the first reason).
pub fn blocker(c: &crate::cluster::Cluster, node: &str) -> Option<String> {
    blockers(c, node).into_iter().next()
}

/// Everything that keeps a node from being disrupted now, in words: each pod with
/// `karpenter.sh/do-not-evict`, and each pod whose PodDisruptionBudget allows no disruption.
pub fn blockers(c: &crate::cluster::Cluster, node: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in c.pods_on(node) {
        if pods::is_terminal(p) {
            continue;
        }
        if pods::has_do_not_evict(p) {
            out.push(format!(
                "pod {} has annotation {}",
                pods::key(p),
                pods::DO_NOT_EVICT
            ));
        } else if pods::needs_eviction(p) {
            if let Some(b) = c.blocking_pdb(p) {
                out.push(format!(
                    "PodDisruptionBudget {} allows no disruption of pod {}",
                    pdb::key(b),
                    pods::key(p)
                ));
            }
        }
    }
    out
}
