#![deny(missing_docs)]
//! The controller's loops: provisioning, emptiness, expiry, termination and garbage
//! collection. Each is logic over four seams, so tests run it with in-memory ones and a manual
//! clock, and production wires kube-rs and EC2:
//!
//! ```text
//!   cluster::SharedCluster ──read──┐
//!   Clock ─────────────────now─────┤
//!                                  v
//!   Provisioning ─ Emptiness ─ Expiry ─ Termination ─ GarbageCollection
//!                                  │
//!        KubeWriter (Node create, Binding, patches, Eviction, Events)   CloudProvider
//! ```
//!
//! Every loop's `reconcile` does one pass and says when it next wants to run; none sleeps.
//! [`Lifecycle`] runs them all once, in order, as the simulator and the tests do.

pub mod batcher;
pub mod clock;
pub mod emptiness;
pub mod expiry;
pub mod gc;
pub mod provisioning;
pub mod termination;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::cloud::provider::{CloudError, CloudProvider};
use crate::cluster::SharedCluster;
use crate::scheduling::SchedulingError;

pub use clock::{Clock, ManualClock, SystemClock};
pub use emptiness::Emptiness;
pub use expiry::Expiry;
pub use gc::{GarbageCollection, GcConfig};
pub use provisioning::{Provisioning, ProvisioningConfig, RoundReport};
pub use termination::{Termination, TerminationConfig};
pub use writer::{Event, EventType, Eviction, InMemoryWriter, KubeWriter, ObjectRef, WriteError};

/// Why a loop's pass stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    /// A Kubernetes write failed.
    #[error("kubernetes write failed")]
    Write(#[from] WriteError),
    /// The cloud provider failed.
    #[error("cloud provider call failed")]
    Cloud(#[source] CloudError),
    /// The packing engine refused its input.
    #[error("packing failed")]
    Scheduling(#[from] SchedulingError),
}

/// Settings of every loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleConfig {
    /// Provisioning.
    pub provisioning: ProvisioningConfig,
    /// Termination.
    pub termination: TerminationConfig,
    /// Garbage collection.
    pub gc: GcConfig,
}

/// What one [`Lifecycle::tick`] did.
#[derive(Debug, Default)]
pub struct Tick {
    /// The provisioning round, when a batch closed.
    pub round: Option<RoundReport>,
    /// The earliest time a loop asked to run again.
    pub next: Option<Timestamp>,
}

/// All loops over shared seams.
pub struct Lifecycle<C, W> {
    /// Provisioning.
    pub provisioning: Provisioning<C, W>,
    /// Emptiness TTL.
    pub emptiness: Emptiness<W>,
    /// Expiry TTL.
    pub expiry: Expiry<W>,
    /// The termination finalizer.
    pub termination: Termination<C, W>,
    /// Garbage collection.
    pub gc: GarbageCollection<C, W>,
}

// === impl Lifecycle ===

impl<C: CloudProvider, W: KubeWriter> Lifecycle<C, W> {
    /// Every loop over the same seams.
    pub fn new(
        cluster: SharedCluster,
        cloud: Arc<C>,
        writer: Arc<W>,
        clock: Arc<dyn Clock>,
        config: LifecycleConfig,
    ) -> Self {
        Self {
            provisioning: Provisioning::new(
                cluster.clone(),
                cloud.clone(),
                writer.clone(),
                clock.clone(),
                config.provisioning.clone(),
            ),
            emptiness: Emptiness::new(
                cluster.clone(),
                writer.clone(),
                clock.clone(),
                config.provisioning.batch_max,
            ),
            expiry: Expiry::new(cluster.clone(), writer.clone(), clock.clone()),
            termination: Termination::new(
                cluster.clone(),
                cloud.clone(),
                writer.clone(),
                clock.clone(),
                config.termination,
            ),
            gc: GarbageCollection::new(cluster, cloud, writer, clock, config.gc),
        }
    }

    /// Runs each loop once: provisioning, emptiness, expiry, termination, garbage collection.
    pub async fn tick(&self) -> Result<Tick, LifecycleError> {
        let round = self.provisioning.reconcile().await?;
        let mut next = self.provisioning.observe();
        for n in [
            self.emptiness.reconcile().await?,
            self.expiry.reconcile().await?,
            self.termination.reconcile().await?,
            self.gc.reconcile().await?,
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(n, |m: Timestamp| m.min(n)));
        }
        Ok(Tick { round, next })
    }
}

/// Shortest wait worth scheduling, so a loop never spins.
pub const MIN_REQUEUE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests;
