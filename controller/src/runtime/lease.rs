//! One active replica through a `coordination.k8s.io/v1` Lease.
//!
//! Every replica runs an [`Elector`]; the one whose identity holds an unexpired Lease leads. The
//! holder renews every `retry_period`; a replica that cannot renew within `renew_deadline` stops
//! leading at once (before the Lease could expire and another replica take it), so two replicas
//! never write or call EC2 at the same time. Writes use the Lease's `resourceVersion`, so two
//! candidates racing for a free Lease cannot both win.
//!
//! [`decide`] is the pure rule, tested with plain values; [`Elector::run`] applies it against the
//! API server and publishes leadership on a `tokio::sync::watch` channel.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Timings of the election (Kubernetes' own defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the Lease it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create it, holding it.
    Create,
    /// The Lease is free or expired: take it over (a new transition).
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds an unexpired Lease.
    Follow {
        /// The holder's identity.
        holder: String,
    },
}

/// The election rule for `identity` at `now`, given the Lease as read (`None` when absent).
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = lease else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::Acquire;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if now < at + SignedDuration::from_secs(duration) => LeaseAction::Follow {
            holder: holder.to_string(),
        },
        _ => LeaseAction::Acquire,
    }
}

/// Why the election could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// An attempt took longer than half the renew deadline.
    #[error("lease request timed out")]
    Timeout,
    /// An API call failed.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// A candidate for the Lease `namespace/name`.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: LeaseTimings,
}

// === impl Elector ===

impl Elector {
    /// A candidate `identity` (e.g. the pod name) for the Lease `namespace/name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: reads the Lease and creates, acquires or renews it. `Ok(true)` when we
    /// hold it afterwards; a lost race (409) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let err = |source| LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        };
        let current = self.api.get_opt(&self.name).await.map_err(err)?;
        let now = Timestamp::now();
        let action = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let seconds = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let result = match (action, current) {
            (LeaseAction::Follow { .. }, _) => return Ok(false),
            (LeaseAction::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (action, Some(mut lease)) => {
                let mut spec = lease.spec.take().unwrap_or_default();
                if action == LeaseAction::Acquire {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                lease.spec = Some(spec);
                // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Releases the Lease if we hold it, so another replica takes over without waiting for
    /// expiry (on a clean shutdown).
    pub async fn release(&self) -> Result<(), LeaseError> {
        let err = |source| LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(err)? else {
            return Ok(());
        };
        let mine = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !mine {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Runs the election until `shutdown` turns true, publishing `true` on `leading` while we
    /// hold the Lease. Leadership is dropped as soon as renewals have failed for
    /// `renew_deadline`, and the Lease is released on shutdown.
    pub async fn run(self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            // Bounded, so a hung connection cannot outlive the renew deadline.
            let attempt =
                tokio::time::timeout(self.timings.renew_deadline / 2, self.try_acquire_or_renew());
            match attempt.await.unwrap_or(Err(LeaseError::Timeout)) {
                Ok(true) => {
                    if last_renewal.is_none() {
                        tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                    }
                    last_renewal = Some(now);
                }
                // Someone else holds it (or won a race): stop at once.
                Ok(false) => {
                    if last_renewal.take().is_some() {
                        tracing::warn!(identity = %self.identity, "another replica holds the lease; stopped acting");
                    }
                }
                // The API server is unreachable: keep leading until the renew deadline, which
                // ends before the Lease can expire for the others.
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            let still =
                last_renewal.is_some_and(|t| now.duration_since(t) < self.timings.renew_deadline);
            if !still && last_renewal.take().is_some() {
                tracing::warn!(identity = %self.identity, "could not renew the lease in time; stopped acting");
            }
            leading.send_if_modified(|v| std::mem::replace(v, still) != still);
            tokio::select! {
                _ = tokio::time::sleep(self.timings.retry_period) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                leading.send_if_modified(|v| std::mem::replace(v, false));
                if let Err(e) = self.release().await {
                    tracing::warn!(error = %e, "could not release the lease");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(0)), LeaseAction::Create);
    }

    #[test]
    fn the_holder_renews_even_after_expiry() {
        assert_eq!(
            decide(Some(&spec(Some("a"), 0)), "a", at(100)),
            LeaseAction::Renew
        );
    }

    #[test]
    fn another_holders_fresh_lease_is_followed() {
        assert_eq!(
            decide(Some(&spec(Some("b"), 0)), "a", at(14)),
            LeaseAction::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_acquired() {
        assert_eq!(
            decide(Some(&spec(Some("b"), 0)), "a", at(15)),
            LeaseAction::Acquire
        );
        assert_eq!(
            decide(Some(&spec(None, 0)), "a", at(1)),
            LeaseAction::Acquire
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            decide(Some(&never_renewed), "a", at(0)),
            LeaseAction::Acquire
        );
    }
}
