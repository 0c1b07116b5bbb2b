//! The termination finalizer: a Node with `karpenter.sh/termination` that is being deleted is
//! cordoned, its pods are evicted through the Eviction API (non-critical ones first; DaemonSet,
//! static and terminal pods and pods tolerating the cordon are left), and once they are gone
//! its instance is terminated and the finalizer removed. An eviction refused by a
//! PodDisruptionBudget (429) is retried with exponential backoff, and what holds the drain is
//! recorded as an Event and as the `karpenter.sh/drain-blocked` annotation on the Node.
//!
//! Crash safety: every step is repeatable (cordon twice, evict a gone pod, terminate a
//! terminated instance), and the finalizer goes only after the instance is terminated, so a
//! stop between any two steps leaves a Node that the next pass finishes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::{info, warn};

use crate::cloud::provider::{CloudError, CloudProvider};
use crate::cluster::{nodes, pods, SharedCluster};

use super::clock::{self, Clock};
use super::writer::{Event, EventType, Eviction, KubeWriter, ObjectRef, WriteError};
use super::{LifecycleError, MIN_REQUEUE};

/// Settings of the termination loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminationConfig {
    /// First wait after a refused eviction; doubled on every refusal.
    pub eviction_backoff: Duration,
    /// Longest wait between eviction attempts of a pod.
    pub eviction_backoff_max: Duration,
    /// How soon to look again while evicted pods are still going.
    pub drain_poll: Duration,
}

impl Default for TerminationConfig {
    fn default() -> Self {
        Self {
            eviction_backoff: Duration::from_secs(1),
            eviction_backoff_max: Duration::from_secs(60),
            drain_poll: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    next: Timestamp,
}

/// The termination loop.
pub struct Termination<C, W> {
    cluster: SharedCluster,
    cloud: Arc<C>,
    writer: Arc<W>,
    clock: Arc<dyn Clock>,
    config: TerminationConfig,
    backoff: Mutex<HashMap<String, Backoff>>,
}

// === impl Termination ===

impl<C: CloudProvider, W: KubeWriter> Termination<C, W> {
    /// A loop over the seams.
    pub fn new(
        cluster: SharedCluster,
        cloud: Arc<C>,
        writer: Arc<W>,
        clock: Arc<dyn Clock>,
        config: TerminationConfig,
    ) -> Self {
        Self {
            cluster,
            cloud,
            writer,
            clock,
            config,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// One pass over every Node being deleted that carries the finalizer; returns when a
    /// drain wants to look again.
    pub async fn reconcile(&self) -> Result<Option<Timestamp>, LifecycleError> {
        let names: Vec<String> = self
            .cluster
            .read()
            .nodes()
            .filter(|n| nodes::is_deleting(n) && nodes::has_finalizer(n))
            .map(|n| nodes::name(n).to_string())
            .collect();
        let mut next: Option<Timestamp> = None;
        for name in names {
            if let Some(t) = self.terminate(&name).await? {
                next = Some(next.map_or(t, |m| m.min(t)));
            }
        }
        Ok(next)
    }

    /// Moves one node's termination as far as it can go now.
    pub async fn terminate(&self, name: &str) -> Result<Option<Timestamp>, LifecycleError> {
        let now = self.clock.now();
        let Some(node) = self.cluster.read().node(name).cloned() else {
            return Ok(None);
        };
        if !nodes::is_cordoned(&node) {
            ok_if_gone(self.writer.cordon(name).await)?;
            info!(target: "controller.termination", node = name, "Cordoned node {name}");
        }
        // Pods the drain waits for, and those of them still to evict (non-critical first).
        let (waiting, to_evict): (usize, Vec<String>) = {
            let c = self.cluster.read();
            let draining: Vec<_> = c
                .pods_on(name)
                .into_iter()
                .filter(|p| {
                    !pods::is_daemonset_pod(p)
                        && !pods::is_static_pod(p)
                        && !pods::is_terminal(p)
                        && !pods::tolerates_unschedulable(p)
                })
                .collect();
            let live: Vec<_> = draining.iter().filter(|p| !pods::is_deleting(p)).collect();
            let non_critical: Vec<String> = live
                .iter()
                .filter(|p| !pods::is_critical(p))
                .map(|p| pods::key(p))
                .collect();
            // Critical pods go only once no non-critical pod is left, evicting or not.
            let any_non_critical_left = draining.iter().any(|p| !pods::is_critical(p));
            let batch = if !non_critical.is_empty() {
                non_critical
            } else if !any_non_critical_left {
                live.iter().map(|p| pods::key(p)).collect()
            } else {
                Vec::new()
            };
            (draining.len(), batch)
        };
        if waiting > 0 {
            let mut blocker: Option<String> = None;
            let mut wake = clock::add(now, self.config.drain_poll.max(MIN_REQUEUE));
            for pod in to_evict {
                let due = self.backoff_due(&pod);
                if due.is_some_and(|d| now < d) {
                    if let Some(d) = due {
                        wake = wake.min(d);
                    }
                    continue;
                }
                match self.writer.evict(&pod).await? {
                    Eviction::Evicted | Eviction::Gone => {
                        self.clear_backoff(&pod);
                        info!(target: "controller.termination", node = name, pod = pod.as_str(), "Evicted pod {pod} from node {name}");
                    }
                    Eviction::Blocked { pdb, message } => {
                        let d = self.refused(&pod, now);
                        wake = wake.min(d);
                        blocker.get_or_insert_with(|| match pdb {
                            Some(b) => {
                                format!("PodDisruptionBudget {b} blocks eviction of pod {pod}")
                            }
                            None => format!("eviction of pod {pod} refused: {message}"),
                        });
                    }
                }
            }
            if let Some(why) = blocker {
                if nodes::annotation(&node, nodes::DRAIN_BLOCKED) != Some(why.as_str()) {
                    warn!(target: "controller.termination", node = name, "Drain of node {name} blocked: {why}");
                    self.writer
                        .event(&Event {
                            regarding: ObjectRef::node(name),
                            type_: EventType::Warning,
                            reason: "DrainBlocked".into(),
                            message: why.clone(),
                        })
                        .await?;
                    let changes = BTreeMap::from([(nodes::DRAIN_BLOCKED.to_string(), Some(why))]);
                    ok_if_gone(self.writer.annotate_node(name, &changes).await)?;
                }
            }
            return Ok(Some(wake));
        }
        if let Some(id) = nodes::instance_id(&node) {
            match self.cloud.delete(id).await {
                Ok(()) => {
                    info!(target: "controller.termination", node = name, instance = id, "Terminated instance {id} of node {name}");
                }
                Err(e @ CloudError::NotOwned { .. }) => {
                    warn!(target: "controller.termination", node = name, instance = id, "Leaving instance {id} alone: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        ok_if_gone(self.writer.remove_finalizer(name).await)?;
        info!(target: "controller.termination", node = name, "Deleted node {name}");
        Ok(None)
    }

    fn backoff_due(&self, pod: &str) -> Option<Timestamp> {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pod)
            .map(|b| b.next)
    }

    fn clear_backoff(&self, pod: &str) {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pod);
    }

    /// Records a refusal; returns when to try again.
    fn refused(&self, pod: &str, now: Timestamp) -> Timestamp {
        let mut map = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempts = map.get(pod).map_or(0, |b| b.attempts);
        let wait = self
            .config
            .eviction_backoff
            .saturating_mul(2u32.saturating_pow(attempts))
            .min(self.config.eviction_backoff_max);
        let next = clock::add(now, wait);
        map.insert(
            pod.to_string(),
            Backoff {
                attempts: attempts + 1,
                next,
            },
        );
        next
    }
}

fn ok_if_gone(r: Result<(), WriteError>) -> Result<(), LifecycleError> {
    match r {
        Ok(()) | Err(WriteError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
