//! The [`CloudProvider`] trait and what its implementations share: the launch request, the
//! instance view, errors, the unavailable-offerings cache and the injectable clock.
//!
//! ```text
//!  Decision.NewNode ──> NodeRequest ──> CloudProvider::create ──> Instance
//!                                            │  InsufficientInstanceCapacity
//!                                            v
//!                             UnavailableOfferings (3 min) ──> instance_types(): available=false
//! ```
//!
//! Implementations: [`super::sim::SimProvider`] (in-memory) and, with the `aws` feature,
//! `super::aws::AwsCloud` (EC2 CreateFleet).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::provisioner::Taint;
use crate::api::Provisioner;
use crate::scheduling::InstanceType;

use super::catalog::CatalogError;

/// How long an offering stays unavailable after an insufficient-capacity error.
pub const UNAVAILABLE_OFFERING_TTL: Duration = Duration::from_secs(180);

/// Tag key naming the provisioner that launched an instance.
pub const PROVISIONER_TAG: &str = "karpenter.sh/provisioner-name";
/// Tag key naming the cluster whose Karpenter launched an instance (value: the cluster name).
pub const MANAGED_BY_TAG: &str = "karpenter.sh/managed-by";
/// Tag key carrying the launch's client token (one node, one instance).
pub const CLIENT_TOKEN_TAG: &str = "karpenter.sh/client-token";

/// The cluster-ownership tag key: `kubernetes.io/cluster/<cluster>` (value `owned`).
pub fn cluster_tag_key(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// A cloud that can list instance types and launch, find and terminate instances.
///
/// Every instance a provider launches carries the cluster tag; `get`, `list` and `delete` only
/// ever see or touch such instances.
pub trait CloudProvider: Send + Sync {
    /// The instance types a provisioner may launch, with offerings (zone, capacity type, price,
    /// availability) restricted to where it can launch. Shared: a provider may hand out the
    /// same list every round while nothing changed.
    fn instance_types(
        &self,
        provisioner: &Provisioner,
    ) -> impl Future<Output = Result<Arc<[InstanceType]>, CloudError>> + Send;

    /// Launches one instance for a node; calling it again with the same client token returns
    /// the instance launched the first time instead of launching another.
    fn create(
        &self,
        request: &NodeRequest,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    /// Terminates an instance we own; an already-terminated instance is success, an instance
    /// without our cluster and provisioner tags is refused with [`CloudError::NotOwned`].
    fn delete(&self, instance_id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// One instance we own, `None` when it does not exist or is not ours.
    fn get(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<Instance>, CloudError>> + Send;

    /// Every non-terminated instance carrying our cluster tag.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Deletes cloud resources of ours that nothing uses any more (e.g. launch templates);
    /// returns what was deleted. Called by garbage collection; nothing by default.
    fn collect_garbage(&self) -> impl Future<Output = Result<Vec<String>, CloudError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// What to launch for one node.
#[derive(Debug, Clone)]
pub struct NodeRequest {
    /// The provisioner the node belongs to (its provider settings, labels, taints, kubelet).
    pub provisioner: Provisioner,
    /// Instance-type options, cheapest first; at most 60 are tried.
    pub instance_types: Vec<String>,
    /// Allowed capacity types (`spot`, `on-demand`); empty allows both.
    pub capacity_types: BTreeSet<String>,
    /// Allowed zones; empty allows every zone.
    pub zones: BTreeSet<String>,
    /// Node labels written into the bootstrap user data.
    pub labels: BTreeMap<String, String>,
    /// Node taints written into the bootstrap user data.
    pub taints: Vec<Taint>,
    /// Idempotency token: one node, one token, at most one instance.
    pub client_token: String,
}

// === impl NodeRequest ===

impl NodeRequest {
    /// Whether the request allows a capacity type.
    pub fn allows_capacity_type(&self, capacity_type: &str) -> bool {
        self.capacity_types.is_empty() || self.capacity_types.contains(capacity_type)
    }

    /// Whether the request allows a zone.
    pub fn allows_zone(&self, zone: &str) -> bool {
        self.zones.is_empty() || self.zones.contains(zone)
    }
}

/// Lifecycle state of an instance, as EC2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Launching.
    Pending,
    /// Running.
    Running,
    /// Shutting down.
    ShuttingDown,
    /// Terminated.
    Terminated,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
}

// === impl InstanceState ===

impl InstanceState {
    /// Parses EC2's state name; unknown names read as `Pending`.
    pub fn from_ec2(name: &str) -> Self {
        match name {
            "running" => Self::Running,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            _ => Self::Pending,
        }
    }

    /// Whether the instance is gone or going.
    pub fn is_terminating(self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Terminated)
    }
}

/// An instance as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Instance ID, e.g. `i-0123456789abcdef0`.
    pub id: String,
    /// Instance-type name.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Private DNS name (the node name on EKS), empty when unknown.
    pub private_dns_name: String,
    /// AMI ID, empty when unknown.
    pub image_id: String,
    /// All tags.
    pub tags: BTreeMap<String, String>,
}

// === impl Instance ===

impl Instance {
    /// The provisioner that launched the instance, from its tag.
    pub fn provisioner(&self) -> Option<&str> {
        self.tags.get(PROVISIONER_TAG).map(String::as_str)
    }
}

/// An error from a cloud provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// The cloud API answered with an error code.
    #[error("{operation} failed: {code}: {message}")]
    Api {
        /// API operation, e.g. `CreateFleet`.
        operation: &'static str,
        /// The AWS error code, e.g. `UnauthorizedOperation`.
        code: String,
        /// The error message.
        message: String,
    },
    /// The request never got an answer (connection, timeout, unparsable response).
    #[error("{operation} failed: {message}")]
    Transport {
        /// API operation.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Every allowed offering is out of capacity (now marked unavailable for a while).
    #[error("insufficient capacity for every offering of {instance_types:?}: {detail}")]
    InsufficientCapacity {
        /// The instance types that were tried.
        instance_types: Vec<String>,
        /// The error codes and messages seen, joined.
        detail: String,
    },
    /// No instance-type option has an allowed, available offering.
    #[error("no offering to launch: {0}")]
    NoOfferings(String),
    /// No subnet matched the selector.
    #[error("no subnets match subnetSelector {selector}: found {found}")]
    NoSubnets {
        /// The selector, as `key=value` pairs.
        selector: String,
        /// What the lookup found instead (e.g. `none`).
        found: String,
    },
    /// No security group matched the selector.
    #[error("no security groups match securityGroupSelector {selector}: found {found}")]
    NoSecurityGroups {
        /// The selector, as `key=value` pairs.
        selector: String,
        /// What the lookup found instead.
        found: String,
    },
    /// The instance profile is missing or unknown.
    #[error("instance profile {name:?} is unknown: {message}")]
    UnknownInstanceProfile {
        /// The profile name (empty when none was configured).
        name: String,
        /// Why.
        message: String,
    },
    /// The instance profile cannot be used: IAM has no profile of that name, or the profile
    /// has no role (its instances would get no credentials to join the cluster).
    #[error("{field} {name:?}: {problem}")]
    InvalidInstanceProfile {
        /// Where the name was set, e.g. `spec.provider.instanceProfile`.
        field: String,
        /// The profile name.
        name: String,
        /// What IAM answered, and what to do about it.
        problem: String,
    },
    /// The AMI family is unknown or not supported by this provider.
    #[error("amiFamily {family:?} is not supported: known {known:?}")]
    UnknownAmiFamily {
        /// The family given.
        family: String,
        /// The families this provider can launch.
        known: Vec<&'static str>,
    },
    /// The AMI parameter for a family could not be read.
    #[error("no AMI for amiFamily {family} ({parameter}): {message}")]
    AmiNotFound {
        /// AMI family.
        family: String,
        /// The SSM parameter read.
        parameter: String,
        /// Why.
        message: String,
    },
    /// A controller setting is missing or invalid.
    #[error("controller setting {field}: {message}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The provisioner's AWS settings cannot be resolved.
    #[error("provisioner {provisioner}: {message}")]
    InvalidProvider {
        /// Provisioner name.
        provisioner: String,
        /// What is wrong.
        message: String,
    },
    /// The instance lacks our cluster tag or a provisioner tag (e.g. an EKS node group
    /// instance); it is never touched.
    #[error("instance {instance_id} is not owned by cluster {cluster}; refusing to touch it")]
    NotOwned {
        /// The instance.
        instance_id: String,
        /// Our cluster.
        cluster: String,
    },
    /// The built-in catalog failed to load.
    #[error("failed to load the instance-type catalog")]
    Catalog(#[source] CatalogError),
}

// === impl CloudError ===

impl CloudError {
    /// The AWS error code, when the cloud answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the error is a configuration problem that retrying will not fix.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::NoSubnets { .. }
                | Self::NoSecurityGroups { .. }
                | Self::UnknownInstanceProfile { .. }
                | Self::InvalidInstanceProfile { .. }
                | Self::UnknownAmiFamily { .. }
                | Self::AmiNotFound { .. }
                | Self::InvalidProvider { .. }
                | Self::InvalidConfig { .. }
        )
    }
}

impl From<CatalogError> for CloudError {
    fn from(e: CatalogError) -> Self {
        Self::Catalog(e)
    }
}

/// A boxed future that sleeps.
pub type SleepFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Time as providers see it: a monotonic `now` and a `sleep`, injectable so tests never wait.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> SleepFuture<'_>;
}

/// The real clock: `Instant::now` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A manual clock for tests: `sleep` advances it at once and records the duration.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    offset: Duration,
    sleeps: Vec<Duration>,
}

// === impl ManualClock ===

impl ManualClock {
    /// A clock standing at the time of creation.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            state: Mutex::new(ManualState::default()),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let mut s = lock(&self.state);
        s.offset += by;
    }

    /// Every duration slept so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        lock(&self.state).sleeps.clone()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + lock(&self.state).offset
    }

    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        let mut s = lock(&self.state);
        s.offset += duration;
        s.sleeps.push(duration);
        Box::pin(std::future::ready(()))
    }
}

/// Locks a mutex, recovering the data if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An offering key: (instance type, zone, capacity type).
pub type OfferingKey = (String, String, String);

/// Offerings recently out of capacity; each entry expires after a TTL on the injected clock.
pub struct UnavailableOfferings {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    until: Mutex<HashMap<OfferingKey, Instant>>,
}

// === impl UnavailableOfferings ===

impl UnavailableOfferings {
    /// An empty cache with the standard 3-minute TTL.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            ttl: UNAVAILABLE_OFFERING_TTL,
            until: Mutex::new(HashMap::new()),
        }
    }

    /// Marks an offering unavailable for the TTL.
    pub fn mark(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        let until = self.clock.now() + self.ttl;
        lock(&self.until).insert(
            (
                instance_type.to_string(),
                zone.to_string(),
                capacity_type.to_string(),
            ),
            until,
        );
    }

    /// Whether an offering is currently marked unavailable.
    pub fn is_unavailable(&self, instance_type: &str, zone: &str, capacity_type: &str) -> bool {
        let now = self.clock.now();
        let mut map = lock(&self.until);
        map.retain(|_, until| *until > now);
        map.contains_key(&(
            instance_type.to_string(),
            zone.to_string(),
            capacity_type.to_string(),
        ))
    }

    /// Whether any offering is currently marked unavailable.
    pub fn any(&self) -> bool {
        let now = self.clock.now();
        let mut map = lock(&self.until);
        map.retain(|_, until| *until > now);
        !map.is_empty()
    }

    /// The offerings currently marked unavailable.
    pub fn current(&self) -> BTreeSet<OfferingKey> {
        let now = self.clock.now();
        let mut map = lock(&self.until);
        map.retain(|_, until| *until > now);
        map.keys().cloned().collect()
    }

    /// Sets `available = false` on every currently unavailable offering of `types`.
    pub fn apply(&self, types: &mut [InstanceType]) {
        let current = self.current();
        if !current.is_empty() {
            mark_unavailable(types, &current);
        }
    }
}

/// Sets `available = false` on the offerings of `types` that `unavailable` names.
pub fn mark_unavailable(types: &mut [InstanceType], unavailable: &BTreeSet<OfferingKey>) {
    if unavailable.is_empty() {
        return;
    }
    let marked: HashSet<&str> = unavailable.iter().map(|(t, _, _)| t.as_str()).collect();
    for t in types
        .iter_mut()
        .filter(|t| marked.contains(t.name.as_str()))
    {
        for o in &mut t.offerings {
            let key = (t.name.clone(), o.zone.clone(), o.capacity_type.clone());
            if unavailable.contains(&key) {
                o.available = false;
            }
        }
    }
}

impl std::fmt::Debug for UnavailableOfferings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnavailableOfferings")
            .field("ttl", &self.ttl)
            .field("entries", &lock(&self.until).len())
            .finish()
    }
}

/// Renders a selector as sorted `key=value` pairs, for error messages.
pub fn describe_selector(selector: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_offerings_expire_after_three_minutes() {
        let clock = Arc::new(ManualClock::new());
        let cache = UnavailableOfferings::new(clock.clone());
        cache.mark("m5.large", "us-east-1a", "spot");
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot"));
        assert!(!cache.is_unavailable("m5.large", "us-east-1b", "spot"));
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "on-demand"));
        clock.advance(Duration::from_secs(179));
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot"));
        clock.advance(Duration::from_secs(1));
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "spot"));
    }

    #[test]
    fn manual_clock_records_sleeps_without_waiting() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        drop(clock.sleep(Duration::from_secs(5)));
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
    }

    #[test]
    fn errors_name_selector_and_finding() {
        let mut sel = BTreeMap::new();
        sel.insert("karpenter.sh/discovery".to_string(), "demo".to_string());
        let e = CloudError::NoSubnets {
            selector: describe_selector(&sel),
            found: "none".into(),
        };
        assert_eq!(
            e.to_string(),
            "no subnets match subnetSelector {karpenter.sh/discovery=demo}: found none"
        );
        assert!(e.is_configuration());
        assert_eq!(e.code(), None);
        let e = CloudError::InvalidInstanceProfile {
            field: "spec.provider.instanceProfile".into(),
            name: "Nodes".into(),
            problem: "no IAM instance profile of that name exists".into(),
        };
        assert_eq!(
            e.to_string(),
            "spec.provider.instanceProfile \"Nodes\": no IAM instance profile of that name exists"
        );
        assert!(e.is_configuration());
    }

    #[test]
    fn instance_state_parsing() {
        assert_eq!(InstanceState::from_ec2("running"), InstanceState::Running);
        assert!(InstanceState::from_ec2("terminated").is_terminating());
        assert!(!InstanceState::from_ec2("pending").is_terminating());
    }
}
