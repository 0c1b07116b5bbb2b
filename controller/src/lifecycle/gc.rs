//! Garbage collection. An instance tagged for this cluster with no Node for longer than a
//! grace period is terminated; a Node of ours that is not Ready within a deadline of its
//! creation is deleted (its finalizer terminates the instance); a Node of ours whose instance
//! is gone is deleted. The cloud provider only ever lists, and only terminates, instances with
//! our cluster tag, so nothing untagged is touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tracing::info;

use crate::cloud::provider::CloudProvider;
use crate::cluster::{elapsed, nodes, SharedCluster};

use super::clock::{self, Clock};
use super::writer::{KubeWriter, WriteError};
use super::LifecycleError;

/// Settings of garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcConfig {
    /// How long a tagged instance may have no Node (the time between launch and Node create).
    pub orphan_grace: Duration,
    /// How long a Node may stay not Ready after its creation.
    pub registration_deadline: Duration,
    /// How often to look.
    pub interval: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            orphan_grace: Duration::from_secs(120),
            registration_deadline: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(30),
        }
    }
}

/// The garbage collector. It remembers when it first saw each orphan, so a restart only
/// delays a termination, never hastens one.
pub struct GarbageCollection<C, W> {
    cluster: SharedCluster,
    cloud: Arc<C>,
    writer: Arc<W>,
    clock: Arc<dyn Clock>,
    config: GcConfig,
    orphans: Mutex<HashMap<String, Timestamp>>,
    last: Mutex<Option<Timestamp>>,
}

// === impl GarbageCollection ===

impl<C: CloudProvider, W: KubeWriter> GarbageCollection<C, W> {
    /// A collector over the seams.
    pub fn new(
        cluster: SharedCluster,
        cloud: Arc<C>,
        writer: Arc<W>,
        clock: Arc<dyn Clock>,
        config: GcConfig,
    ) -> Self {
        Self {
            cluster,
            cloud,
            writer,
            clock,
            config,
            orphans: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        }
    }

    /// A pass, when `interval` has passed since the last one; returns when the next is due.
    pub async fn reconcile(&self) -> Result<Option<Timestamp>, LifecycleError> {
        let now = self.clock.now();
        let due = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| clock::add(t, self.config.interval));
        if due.is_some_and(|d| now < d) {
            return Ok(due);
        }
        self.collect().await?;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
        Ok(Some(clock::add(now, self.config.interval)))
    }

    /// One pass, now.
    pub async fn collect(&self) -> Result<(), LifecycleError> {
        let now = self.clock.now();
        let instances = self.cloud.list().await?;
        let mut terminate = Vec::new();
        {
            let c = self.cluster.read();
            let mut orphans = self
                .orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut still = HashMap::new();
            for i in &instances {
                if c.node_for_instance(&i.id).is_some() {
                    continue;
                }
                let first = orphans.get(&i.id).copied().unwrap_or(now);
                if elapsed(first, now) >= self.config.orphan_grace {
                    terminate.push(i.id.clone());
                } else {
                    still.insert(i.id.clone(), first);
                }
            }
            *orphans = still;
        }
        for id in terminate {
            info!(target: "controller.gc", instance = id.as_str(), "Terminating instance {id}: no node after {}s", self.config.orphan_grace.as_secs());
            self.cloud.delete(&id).await?;
        }
        // Cloud resources nothing uses any more (launch templates); a failure here must not
        // stop the node clean-up below.
        match self.cloud.collect_garbage().await {
            Ok(deleted) if !deleted.is_empty() => {
                info!(target: "controller.gc", count = deleted.len(), "Deleted {} unused cloud resource(s): {}", deleted.len(), deleted.join(", "));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "controller.gc", error = %e, "Could not delete unused cloud resources");
            }
        }

        let mut delete = Vec::new();
        let candidates: Vec<(String, Option<String>, bool, Option<Timestamp>)> = self
            .cluster
            .read()
            .nodes()
            .filter(|n| nodes::is_owned(n) && !nodes::is_deleting(n))
            .map(|n| {
                (
                    nodes::name(n).to_string(),
                    nodes::instance_id(n).map(str::to_string),
                    nodes::is_ready(n),
                    n.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            })
            .collect();
        for (name, id, ready, created) in candidates {
            if let Some(id) = &id {
                let gone = self
                    .cloud
                    .get(id)
                    .await?
                    .is_none_or(|i| i.state.is_terminating());
                if gone {
                    delete.push((name, format!("its instance {id} is gone")));
                    continue;
                }
            }
            if !ready
                && created.is_some_and(|t| elapsed(t, now) >= self.config.registration_deadline)
            {
                delete.push((
                    name,
                    format!(
                        "not ready {}s after launch",
                        self.config.registration_deadline.as_secs()
                    ),
                ));
            }
        }
        for (name, why) in delete {
            info!(target: "controller.gc", node = name.as_str(), "Deleting node {name}: {why}");
            match self.writer.delete_node(&name).await {
                Ok(()) | Err(WriteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
