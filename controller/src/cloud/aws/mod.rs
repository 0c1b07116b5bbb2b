//! The AWS cloud provider: EC2 CreateFleet over discovered subnets and security groups, AMIs
//! from SSM parameters, launch templates per content hash.
//!
//! ```text
//!  Provisioner.provider ──> subnets, security groups (selectors)   ──┐
//!                      ──> AMI per arch (SSM {prefix}/...)           ├─> launch template per hash
//!  NodeRequest ────────> user data (AL2 / Bottlerocket)            ──┘         │
//!                      ──> overrides: types x zonal subnets ──> CreateFleet(instant) ──> Instance
//!                                    ^                                   │ capacity errors
//!                                    └──── UnavailableOfferings (3 min) <┘
//! ```
//!
//! Before anything is launched, the instance profile is looked up in IAM (GetInstanceProfile):
//! a missing profile, or one without a role, is a configuration error.
//!
//! Start with [`AwsCloud::new`] over an [`Ec2Api`] ([`SdkApi`] for real calls). Every call is
//! retried on throttling and transient errors with capped exponential backoff on the injected
//! [`Clock`]; a launch looks for an instance carrying its client token before retrying, so one
//! node never gets two instances.

pub mod api;
mod discovery;
pub mod sdk;
pub mod user_data;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::api::aws::AwsNodeTemplateSpec;
use crate::api::labels::{CAPACITY_TYPE, CAPACITY_TYPE_ON_DEMAND, CAPACITY_TYPE_SPOT};
use crate::api::{AwsProvider, Provisioner};
use crate::cloud::catalog::{Architecture, AwsInstanceTypeInfo};
use crate::cloud::instance_types::{aws_instance_type, AwsCatalogOptions};
use crate::cloud::provider::{
    cluster_tag_key, lock, mark_unavailable, Clock, CloudError, CloudProvider, Instance,
    NodeRequest, OfferingKey, UnavailableOfferings, CLIENT_TOKEN_TAG, MANAGED_BY_TAG,
    PROVISIONER_TAG,
};
use crate::scheduling::instance_type::mark_absent_labels;
use crate::scheduling::InstanceType;

pub use api::{ApiError, Ec2Api};
use api::{
    Filter, FleetConfig, FleetOverride, FleetRequest, FleetResponse, InstanceProfileInfo,
    LaunchTemplateSpec, SecurityGroup, Subnet,
};
pub use sdk::{SdkApi, SdkSettings};
use user_data::{fnv1a, Accelerator, Bootstrap, KubeletArgs, SUPPORTED_AMI_FAMILIES};

/// Most instance types one CreateFleet call may carry.
pub const MAX_INSTANCE_TYPES: usize = 60;
/// Selector key that lists IDs instead of tags.
pub const IDS_SELECTOR_KEY: &str = "aws-ids";
/// Tag key of the default discovery selector.
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";

/// Settings of the AWS provider. Nothing is read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// Cluster name: the ownership tag and the default discovery tag value.
    pub cluster_name: String,
    /// AWS region, for region-aware on-demand prices.
    pub region: String,
    /// API server endpoint written into user data.
    pub cluster_endpoint: String,
    /// Cluster CA bundle (base64) written into user data.
    pub cluster_ca_bundle: String,
    /// Kubernetes version of the AMIs, e.g. `1.27`.
    pub kubernetes_version: String,
    /// Prefix of the AMI SSM parameters (`/aws/service` on AWS; tests use their own).
    pub ssm_parameter_prefix: String,
    /// Instance profile used when the provider sets none.
    pub default_instance_profile: Option<String>,
    /// How long instance types, spot prices and AMIs are cached.
    pub cache_ttl: Duration,
    /// How long subnets and security groups found by a selector are cached.
    pub discovery_ttl: Duration,
    /// How long on-demand prices from the Pricing API are cached (a failed lookup falls back
    /// to the built-in table for `cache_ttl`).
    pub pricing_ttl: Duration,
    /// Attempts per call on throttling or transient errors (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubled per attempt up to [`AwsConfig::max_backoff`].
    pub base_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Capacity-error rounds per launch (each round drops what was out of capacity).
    pub max_launch_rounds: u32,
    /// How long one of our launch templates may go unused before it is deleted (templates
    /// count towards EC2's 5,000 per Region).
    pub launch_template_idle: Duration,
    /// How often unused launch templates are looked for.
    pub launch_template_gc_interval: Duration,
}

// === impl AwsConfig ===

impl AwsConfig {
    /// Defaults for a cluster.
    pub fn new(cluster_name: &str) -> Self {
        Self {
            cluster_name: cluster_name.to_string(),
            region: "us-east-1".to_string(),
            cluster_endpoint: String::new(),
            cluster_ca_bundle: String::new(),
            kubernetes_version: "1.27".to_string(),
            ssm_parameter_prefix: "/aws/service".to_string(),
            default_instance_profile: None,
            cache_ttl: Duration::from_secs(300),
            discovery_ttl: Duration::from_secs(60),
            pricing_ttl: Duration::from_secs(6 * 3600),
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_launch_rounds: 3,
            launch_template_idle: Duration::from_secs(30 * 60),
            launch_template_gc_interval: Duration::from_secs(5 * 60),
        }
    }

    /// Checks what every node needs to join: an empty endpoint or CA bundle would boot
    /// instances that never join the cluster (and are billed).
    pub fn validate(&self) -> Result<(), CloudError> {
        if self.cluster_name.trim().is_empty() {
            return Err(CloudError::InvalidConfig {
                field: "clusterName",
                message: "is empty; set the EKS cluster name".into(),
            });
        }
        if !self.cluster_endpoint.starts_with("https://") {
            return Err(CloudError::InvalidConfig {
                field: "clusterEndpoint",
                message: format!(
                    "{:?} is not an https:// URL; set the cluster's API server endpoint (aws eks describe-cluster --query cluster.endpoint)",
                    self.cluster_endpoint
                ),
            });
        }
        let ca = self.cluster_ca_bundle.trim();
        if ca.is_empty()
            || base64::engine::general_purpose::STANDARD
                .decode(ca)
                .is_err()
        {
            return Err(CloudError::InvalidConfig {
                field: "clusterCABundle",
                message: "is empty or not base64; set the cluster's CA bundle (aws eks describe-cluster --query cluster.certificateAuthority.data)".into(),
            });
        }
        Ok(())
    }

    /// The backoff ceiling of a retry: `base_backoff` doubled per attempt, capped at
    /// `max_backoff`. The wait itself is jittered below it ([`jittered`]).
    fn backoff(&self, attempt: u32) -> Duration {
        self.base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff)
    }
}

/// "Equal jitter": half the ceiling plus a random part of the other half, so replicas and
/// retried calls throttled together do not retry in lock-step. `random` is any 64-bit value.
fn jittered(ceiling: Duration, random: u64) -> Duration {
    let half = ceiling / 2;
    let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) })
}

/// A small xorshift generator for jitter (no cryptographic use), seeded per process.
#[derive(Debug)]
struct Jitter(Mutex<u64>);

// === impl Jitter ===

impl Jitter {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self(Mutex::new(seed | 1))
    }

    fn next(&self) -> u64 {
        let mut s = lock(&self.0);
        let mut x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *s = x;
        x
    }
}

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

#[derive(Default)]
struct Caches {
    types: Option<Cached<Vec<AwsInstanceTypeInfo>>>,
    /// On-demand prices per instance type, and whether they came from the Pricing API.
    on_demand: Option<Cached<(HashMap<String, f64>, bool)>>,
    spot: Option<Cached<HashMap<(String, String), f64>>>,
    amis: HashMap<String, Cached<String>>,
    /// Subnets per selector (as `key=value` text).
    subnets: HashMap<String, Cached<Vec<Subnet>>>,
    /// Security groups per selector (as `key=value` text).
    security_groups: HashMap<String, Cached<Vec<SecurityGroup>>>,
    /// AMIs per `amiSelector` (as `key=value` text), newest first.
    selected_amis: HashMap<String, Cached<Vec<api::Image>>>,
    /// Instance profiles found in IAM with a role (misses are never cached).
    instance_profiles: HashMap<String, Cached<InstanceProfileInfo>>,
    launch_templates: BTreeMap<String, String>,
    /// When each of our launch templates (by name) was last used, or first seen unused.
    template_used: HashMap<String, Instant>,
    /// When unused launch templates were last looked for.
    template_gc_at: Option<Instant>,
    /// The instance-type list last built per provisioner, handed out again while what it
    /// was built from is the same (the packing engine reuses its work on an unchanged list).
    /// Only lists built from the current instance-type answer are kept.
    built_types: HashMap<String, BuiltTypes>,
}

/// An instance-type list and what it was built from.
struct BuiltTypes {
    infos: Arc<Vec<AwsInstanceTypeInfo>>,
    spot: Arc<HashMap<(String, String), f64>>,
    zones: BTreeSet<String>,
    architectures: Option<BTreeSet<String>>,
    unavailable: BTreeSet<OfferingKey>,
    types: Arc<[InstanceType]>,
}

impl BuiltTypes {
    /// The list, if it was built from these inputs. The caches hand out the same `Arc`
    /// while they hold a value, and this entry keeps the old one alive: equal addresses
    /// are the same values.
    fn reuse(
        &self,
        infos: &Arc<Vec<AwsInstanceTypeInfo>>,
        spot: &Arc<HashMap<(String, String), f64>>,
        zones: &BTreeSet<&str>,
        architectures: &Option<BTreeSet<String>>,
        unavailable: &BTreeSet<OfferingKey>,
    ) -> Option<Arc<[InstanceType]>> {
        let same = Arc::ptr_eq(&self.infos, infos)
            && Arc::ptr_eq(&self.spot, spot)
            && self
                .zones
                .iter()
                .map(String::as_str)
                .eq(zones.iter().copied())
            && &self.architectures == architectures
            && &self.unavailable == unavailable;
        same.then(|| self.types.clone())
    }
}

/// Fleet overrides grouped by architecture (one launch template each), in option order.
type ArchOverrides = Vec<(Architecture, Vec<FleetOverride>)>;

/// What tells our launch templates of one launch apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TemplateKey<'a> {
    arch: Architecture,
    accelerator: Accelerator,
    kubelet: Option<&'a KubeletArgs>,
}

/// Most launch-template configs one CreateFleet call may carry.
pub const MAX_LAUNCH_TEMPLATE_CONFIGS: usize = 50;

/// One launch template's overrides.
type Group<'a> = (TemplateKey<'a>, Vec<FleetOverride>);

/// Groups overrides by launch template (architecture, accelerator, kubelet settings of their
/// type, from `key_of`), groups in the order their first type appears in `options` (cheapest
/// first), overrides in their order. At most [`MAX_LAUNCH_TEMPLATE_CONFIGS`] groups are kept:
/// the types of later groups (the dearest) are left out of this call.
fn group_overrides<'a>(
    by_arch: &ArchOverrides,
    options: &[String],
    key_of: impl Fn(&str) -> (Accelerator, Option<&'a KubeletArgs>),
) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for (arch, overrides) in by_arch {
        for o in overrides {
            let (accelerator, kubelet) = key_of(&o.instance_type);
            let key = TemplateKey {
                arch: *arch,
                accelerator,
                kubelet,
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some(g) => g.1.push(o.clone()),
                None => groups.push((key, vec![o.clone()])),
            }
        }
    }
    let rank = |g: &Group<'_>| {
        g.1.iter()
            .filter_map(|o| options.iter().position(|n| *n == o.instance_type))
            .min()
            .unwrap_or(usize::MAX)
    };
    groups.sort_by_key(|g| rank(g));
    groups.truncate(MAX_LAUNCH_TEMPLATE_CONFIGS);
    groups
}

/// What one launch template boots beyond the provider's settings.
struct BootSettings<'a> {
    /// The capacity type of the fleet that uses the template (the node's capacity-type label).
    capacity_type: &'a str,
    /// The kubelet settings the engine planned its instance types with.
    kubelet: Option<&'a KubeletArgs>,
    /// The AWSNodeTemplate's `userData`, merged with ours.
    user_data: Option<&'a str>,
    /// The AWSNodeTemplate's `detailedMonitoring`.
    detailed_monitoring: bool,
}

/// The AWSNodeTemplate settings that are not part of the inline provider block.
#[derive(Debug, Clone, Default)]
struct TemplateExtras {
    user_data: Option<String>,
    ami_selector: Option<BTreeMap<String, String>>,
    detailed_monitoring: bool,
}

/// The AMI family whose AMIs come from `amiSelector` and boot the user's `userData` alone.
pub const CUSTOM_AMI_FAMILY: &str = "Custom";

/// EC2's name of an architecture in DescribeImages.
fn ec2_architecture(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Amd64 => "x86_64",
        Architecture::Arm64 => "arm64",
    }
}

/// The provider's AWS settings resolved for one launch.
struct Resolved {
    provider: AwsProvider,
    subnets: Vec<Subnet>,
}

/// The AWS [`CloudProvider`].
pub struct AwsCloud<A> {
    api: A,
    config: AwsConfig,
    clock: Arc<dyn Clock>,
    unavailable: UnavailableOfferings,
    node_templates: Mutex<HashMap<String, AwsNodeTemplateSpec>>,
    caches: Mutex<Caches>,
    jitter: Jitter,
}

impl<A> std::fmt::Debug for AwsCloud<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCloud")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl AwsCloud ===

impl<A: Ec2Api> AwsCloud<A> {
    /// A provider over an API implementation, with an injected clock.
    pub fn new(api: A, config: AwsConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            api,
            unavailable: UnavailableOfferings::new(clock.clone()),
            clock,
            config,
            node_templates: Mutex::new(HashMap::new()),
            caches: Mutex::new(Caches::default()),
            jitter: Jitter::new(),
        }
    }

    /// The API implementation.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The unavailable-offerings cache.
    pub fn unavailable(&self) -> &UnavailableOfferings {
        &self.unavailable
    }

    /// Records an AWSNodeTemplate that provisioners may reference with `providerRef`.
    pub fn set_node_template(&self, name: &str, spec: AwsNodeTemplateSpec) {
        lock(&self.node_templates).insert(name.to_string(), spec);
    }

    /// How long to wait before retry `attempt`: the backoff ceiling, jittered.
    fn retry_wait(&self, attempt: u32) -> Duration {
        jittered(self.config.backoff(attempt), self.jitter.next())
    }

    /// Calls `f` until it succeeds, fails for good, or attempts run out.
    async fn call<T, F, Fut>(&self, operation: &'static str, mut f: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt + 1 < self.config.max_attempts => {
                    tracing::debug!(operation, code = %e.code, attempt, "retrying");
                    self.clock.sleep(self.retry_wait(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into_cloud(operation)),
            }
        }
    }

    /// The AWS settings of a provisioner: inline `provider` or the referenced AWSNodeTemplate.
    fn provider_of(&self, provisioner: &Provisioner) -> Result<AwsProvider, CloudError> {
        let name = provisioner.metadata.name.clone().unwrap_or_default();
        if let Some(p) = &provisioner.spec.provider {
            return Ok(p.clone());
        }
        if let Some(r) = &provisioner.spec.provider_ref {
            return lock(&self.node_templates)
                .get(&r.name)
                .map(AwsNodeTemplateSpec::provider)
                .ok_or_else(|| CloudError::InvalidProvider {
                    provisioner: name,
                    message: format!("AWSNodeTemplate {:?} not found", r.name),
                });
        }
        Err(CloudError::InvalidProvider {
            provisioner: name,
            message: "neither provider nor providerRef is set".into(),
        })
    }

    /// The referenced AWSNodeTemplate's `userData`, `amiSelector` and `detailedMonitoring`
    /// (nothing for an inline provider, which has none of them).
    fn extras_of(&self, provisioner: &Provisioner) -> TemplateExtras {
        if provisioner.spec.provider.is_some() {
            return TemplateExtras::default();
        }
        let Some(r) = &provisioner.spec.provider_ref else {
            return TemplateExtras::default();
        };
        lock(&self.node_templates)
            .get(&r.name)
            .map(|t| TemplateExtras {
                user_data: t.user_data.clone(),
                ami_selector: t.ami_selector.clone().filter(|s| !s.is_empty()),
                detailed_monitoring: t.detailed_monitoring.unwrap_or(false),
            })
            .unwrap_or_default()
    }

    /// Where a provisioner's instance profile name comes from, for error messages.
    fn instance_profile_field(&self, provisioner: &Provisioner, provider: &AwsProvider) -> String {
        if provider.instance_profile.is_none() {
            return "defaultInstanceProfile (controller setting; the provisioner sets no instanceProfile)".into();
        }
        match (&provisioner.spec.provider, &provisioner.spec.provider_ref) {
            (None, Some(r)) => format!("AWSNodeTemplate {:?} spec.instanceProfile", r.name),
            _ => "spec.provider.instanceProfile".into(),
        }
    }

    /// The launch template spec for one architecture of a request.
    fn launch_template_spec(
        &self,
        provider: &AwsProvider,
        family: &str,
        image_id: String,
        instance_profile: &str,
        security_groups: &[SecurityGroup],
        request: &NodeRequest,
        boot: &BootSettings<'_>,
    ) -> Result<LaunchTemplateSpec, CloudError> {
        let mut labels = request.labels.clone();
        // The option actually launched, also after a spot to on-demand fallback.
        labels.insert(CAPACITY_TYPE.to_string(), boot.capacity_type.to_string());
        let bootstrap = Bootstrap {
            cluster_name: &self.config.cluster_name,
            cluster_endpoint: &self.config.cluster_endpoint,
            ca_bundle: &self.config.cluster_ca_bundle,
            labels: &labels,
            taints: &request.taints,
            kubelet: boot.kubelet,
        };
        let provisioner = request
            .provisioner
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        let invalid = |e: user_data::UserDataError| CloudError::InvalidProvider {
            provisioner: provisioner.clone(),
            message: e.to_string(),
        };
        let user_data = if family == CUSTOM_AMI_FAMILY {
            // A custom AMI boots the user's data alone: it knows how to join.
            boot.user_data.unwrap_or_default().to_string()
        } else {
            let ours =
                bootstrap
                    .for_family(family)
                    .ok_or_else(|| CloudError::UnknownAmiFamily {
                        family: family.to_string(),
                        known: SUPPORTED_AMI_FAMILIES.to_vec(),
                    })?;
            match boot.user_data.filter(|u| !u.trim().is_empty()) {
                None => ours,
                Some(user) if family == "Bottlerocket" => {
                    user_data::merge_bottlerocket(user, &ours).map_err(invalid)?
                }
                Some(user) => user_data::merge_mime(user, &ours).map_err(invalid)?,
            }
        };
        let user_data = base64::engine::general_purpose::STANDARD.encode(user_data);
        let sg_ids: Vec<String> = security_groups.iter().map(|g| g.id.clone()).collect();
        let metadata_options = metadata_options_with_defaults(provider.metadata_options.as_ref());
        let block_device_mappings = if provider.block_device_mappings.is_empty() {
            default_block_devices(family)
        } else {
            provider.block_device_mappings.clone()
        };
        let metadata = format!("{metadata_options:?}");
        let devices = format!("{block_device_mappings:?}");
        let hash = fnv1a(&[
            &image_id,
            instance_profile,
            &sg_ids.join(","),
            &user_data,
            &metadata,
            &devices,
            if boot.detailed_monitoring {
                "monitoring"
            } else {
                ""
            },
        ]);
        let mut tags = BTreeMap::new();
        tags.insert(cluster_tag_key(&self.config.cluster_name), "owned".into());
        tags.insert(PROVISIONER_TAG.into(), provisioner.clone());
        tags.insert(MANAGED_BY_TAG.into(), self.config.cluster_name.clone());
        Ok(LaunchTemplateSpec {
            name: launch_template_name(&self.config.cluster_name, hash),
            image_id,
            instance_profile: instance_profile.to_string(),
            security_group_ids: sg_ids,
            user_data,
            metadata_options: Some(metadata_options),
            block_device_mappings,
            tags,
            detailed_monitoring: boot.detailed_monitoring,
        })
    }

    /// Filters for our instances: the cluster tag alone is not enough (EKS node groups and
    /// self-managed nodes carry it too); a provisioner tag must be there as well.
    fn owned_filters(&self) -> Vec<Filter> {
        vec![
            Filter::new(
                &format!("tag:{}", cluster_tag_key(&self.config.cluster_name)),
                &["owned"],
            ),
            Filter::new("tag-key", &[PROVISIONER_TAG]),
            Filter::new(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ),
        ]
    }

    /// Whether an instance is ours: `kubernetes.io/cluster/<name>=owned` and a
    /// `karpenter.sh/provisioner-name` tag.
    fn owns(&self, instance: &Instance) -> bool {
        instance
            .tags
            .get(&cluster_tag_key(&self.config.cluster_name))
            .is_some_and(|v| v == "owned")
            && instance
                .tags
                .get(PROVISIONER_TAG)
                .is_some_and(|v| !v.is_empty())
    }

    /// Our live instance launched with a client token, if any.
    async fn find_by_token(&self, token: &str) -> Result<Option<Instance>, CloudError> {
        let mut filters = self.owned_filters();
        filters.push(Filter::new(&format!("tag:{CLIENT_TOKEN_TAG}"), &[token]));
        let found = self
            .call("DescribeInstances", || {
                self.api.describe_instances(filters.clone(), vec![])
            })
            .await?;
        Ok(found.into_iter().min_by(|a, b| a.id.cmp(&b.id)))
    }

    /// CreateFleet with retries; before each retry, looks for an instance of this token.
    async fn create_fleet(
        &self,
        request: &FleetRequest,
        token: &str,
    ) -> Result<Result<FleetResponse, Instance>, CloudError> {
        let mut attempt = 0;
        loop {
            match self.api.create_fleet(request).await {
                Ok(r) => return Ok(Ok(r)),
                Err(e) if e.is_retryable() && attempt + 1 < self.config.max_attempts => {
                    tracing::debug!(code = %e.code, attempt, "retrying CreateFleet");
                    self.clock.sleep(self.retry_wait(attempt)).await;
                    attempt += 1;
                    if let Some(i) = self.find_by_token(token).await? {
                        return Ok(Err(i));
                    }
                }
                Err(e) => return Err(e.into_cloud("CreateFleet")),
            }
        }
    }

    /// The capacity type and overrides per architecture for what is still available.
    ///
    /// Types are filtered to those with an available offering (allowed zone, offered there,
    /// not marked unavailable) before the list is cut to [`MAX_INSTANCE_TYPES`], so types
    /// past the first 60 are tried when those are out. Without a capacity-type requirement the
    /// launch is on-demand; spot is tried before on-demand when both are allowed, leaving out
    /// spot types dearer than the cheapest on-demand option of the request.
    fn plan(
        &self,
        request: &NodeRequest,
        infos: &[AwsInstanceTypeInfo],
        subnets: &[Subnet],
        spot: &HashMap<(String, String), f64>,
    ) -> Option<(String, ArchOverrides)> {
        // One subnet per zone: the one with the most free addresses.
        let mut zonal: BTreeMap<&str, &Subnet> = BTreeMap::new();
        for s in subnets {
            let e = zonal.entry(s.zone.as_str()).or_insert(s);
            if s.available_ips > e.available_ips {
                *e = s;
            }
        }
        let options: Vec<&AwsInstanceTypeInfo> = request
            .instance_types
            .iter()
            .filter_map(|n| infos.iter().find(|i| &i.name == n))
            .collect();
        // The zonal subnets where a type can be launched with a capacity type now.
        let usable = |info: &AwsInstanceTypeInfo, ct: &str| -> Vec<(&str, &Subnet)> {
            // A type without a known price is still launchable (priced as unknown).
            if !info.supported_usage_classes.iter().any(|u| u == ct) {
                return vec![];
            }
            zonal
                .iter()
                .filter(|(zone, _)| {
                    request.allows_zone(zone)
                        && info.zones.iter().any(|z| z == *zone)
                        && !self.unavailable.is_unavailable(&info.name, zone, ct)
                })
                .map(|(z, s)| (*z, *s))
                .collect()
        };
        let capacity_types: Vec<&str> = if request.capacity_types.is_empty() {
            vec![CAPACITY_TYPE_ON_DEMAND]
        } else {
            [CAPACITY_TYPE_SPOT, CAPACITY_TYPE_ON_DEMAND]
                .into_iter()
                .filter(|ct| request.allows_capacity_type(ct))
                .collect()
        };
        let cheapest_on_demand = if capacity_types.contains(&CAPACITY_TYPE_ON_DEMAND) {
            options
                .iter()
                .filter(|i| !usable(i, CAPACITY_TYPE_ON_DEMAND).is_empty())
                .filter_map(|i| i.on_demand_price)
                .min_by(f64::total_cmp)
        } else {
            None
        };
        for ct in capacity_types {
            let mut by_arch: ArchOverrides = Vec::new();
            let mut kept = 0;
            for info in &options {
                if kept == MAX_INSTANCE_TYPES {
                    break;
                }
                let zones = usable(info, ct);
                if zones.is_empty() {
                    continue;
                }
                if ct == CAPACITY_TYPE_SPOT {
                    let cheapest_spot = zones
                        .iter()
                        .filter_map(|(z, _)| spot.get(&(info.name.clone(), z.to_string())))
                        .copied()
                        .min_by(f64::total_cmp);
                    if let (Some(s), Some(o)) = (cheapest_spot, cheapest_on_demand) {
                        if s > o {
                            continue;
                        }
                    }
                }
                kept += 1;
                let i = match by_arch.iter().position(|(a, _)| *a == info.architecture) {
                    Some(i) => i,
                    None => {
                        by_arch.push((info.architecture, Vec::new()));
                        by_arch.len() - 1
                    }
                };
                for (zone, subnet) in zones {
                    by_arch[i].1.push(FleetOverride {
                        instance_type: info.name.clone(),
                        subnet_id: subnet.id.clone(),
                        zone: zone.to_string(),
                    });
                }
            }
            if !by_arch.is_empty() {
                return Some((ct.to_string(), by_arch));
            }
        }
        None
    }

    /// The instance a fleet launched, described (falls back to what the fleet said).
    async fn launched(
        &self,
        fleet: &api::FleetInstance,
        subnets: &[Subnet],
    ) -> Result<Instance, CloudError> {
        let ids = vec![fleet.id.clone()];
        let described = self
            .call("DescribeInstances", || {
                self.api.describe_instances(vec![], ids.clone())
            })
            .await
            .ok()
            .and_then(|v| v.into_iter().next());
        Ok(described.unwrap_or_else(|| Instance {
            id: fleet.id.clone(),
            instance_type: fleet.instance_type.clone(),
            zone: fleet
                .subnet_id
                .as_ref()
                .and_then(|s| subnets.iter().find(|x| &x.id == s))
                .map(|s| s.zone.clone())
                .unwrap_or_default(),
            capacity_type: fleet.capacity_type.clone(),
            state: crate::cloud::provider::InstanceState::Pending,
            private_dns_name: String::new(),
            image_id: String::new(),
            tags: BTreeMap::new(),
        }))
    }

    async fn resolve(&self, provisioner: &Provisioner) -> Result<Resolved, CloudError> {
        let provider = self.provider_of(provisioner)?;
        let subnets = self.subnets(&provider).await?;
        Ok(Resolved { provider, subnets })
    }
}

/// IMDS settings of a new launch template: what the provider sets, and for the rest IMDSv2
/// required with a hop limit of 2 (so pods on the node network can reach it), IPv6 off.
fn metadata_options_with_defaults(
    given: Option<&crate::api::aws::MetadataOptions>,
) -> crate::api::aws::MetadataOptions {
    let g = given.cloned().unwrap_or_default();
    crate::api::aws::MetadataOptions {
        http_endpoint: g.http_endpoint.or_else(|| Some("enabled".into())),
        http_protocol_ipv6: g.http_protocol_ipv6.or_else(|| Some("disabled".into())),
        http_put_response_hop_limit: g.http_put_response_hop_limit.or(Some(2)),
        http_tokens: g.http_tokens.or_else(|| Some("required".into())),
    }
}

/// Root volumes of a new launch template when the provider sets none: an encrypted gp3
/// volume of 20 GiB (Bottlerocket: a 4 GiB OS volume and a 20 GiB data volume).
fn default_block_devices(family: &str) -> Vec<crate::api::aws::BlockDeviceMapping> {
    let volume = |device: &str, size: &str| crate::api::aws::BlockDeviceMapping {
        device_name: Some(device.into()),
        ebs: Some(crate::api::aws::BlockDevice {
            delete_on_termination: Some(true),
            encrypted: Some(true),
            volume_size: Some(size.into()),
            volume_type: Some("gp3".into()),
            ..Default::default()
        }),
    };
    match family {
        "Bottlerocket" => vec![volume("/dev/xvda", "4Gi"), volume("/dev/xvdb", "20Gi")],
        "Ubuntu" => vec![volume("/dev/sda1", "20Gi")],
        _ => vec![volume("/dev/xvda", "20Gi")],
    }
}

/// Longest launch template name EC2 accepts.
pub const MAX_LAUNCH_TEMPLATE_NAME: usize = 128;

/// The name of our launch template of a content hash: `karpenter.k8s.aws/<cluster>/<hash>`,
/// the cluster name shortened (with a hash of it, so names stay distinct) when the whole would
/// pass EC2's 128 characters.
fn launch_template_name(cluster: &str, hash: u64) -> String {
    const PREFIX: &str = "karpenter.k8s.aws/";
    let room = MAX_LAUNCH_TEMPLATE_NAME - PREFIX.len() - 1 - 16;
    let cluster = if cluster.len() <= room {
        cluster.to_string()
    } else {
        let mut keep = room - 17;
        while !cluster.is_char_boundary(keep) {
            keep -= 1;
        }
        format!("{}-{:016x}", &cluster[..keep], fnv1a(&[cluster]))
    };
    format!("{PREFIX}{cluster}/{hash:016x}")
}

/// Whether an error code says a launch template does not exist.
fn is_template_not_found(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("InvalidLaunchTemplateName.NotFoundException" | "InvalidLaunchTemplateId.NotFound")
    )
}

/// The CreateFleet client token of one request: the node's token and a hash of everything else
/// the request carries, within CreateFleet's 64 characters.
///
/// EC2 remembers a token with its parameters for at least a day, and answers the same token with
/// other parameters with `IdempotentParameterMismatch`: a launch that is retried with other
/// overrides (after capacity errors, a restart, a changed catalog) must send another token. The
/// same request sends the same token, so a retried call whose answer was lost is replayed by EC2;
/// across calls the client-token tag lookup is the guard against a second instance.
fn fleet_token(token: &str, request: &FleetRequest) -> String {
    let params = format!(
        "{}|{:?}|{:?}|{:?}",
        request.capacity_type, request.configs, request.tags, request.context
    );
    let suffix = format!("-{:016x}", fnv1a(&[&params]));
    let keep = 64 - suffix.len();
    let base: String = if token.len() > keep {
        format!("{:016x}", fnv1a(&[token]))
    } else {
        token.to_string()
    };
    format!("{base}{suffix}")
}

impl<A: Ec2Api> CloudProvider for AwsCloud<A> {
    async fn instance_types(
        &self,
        provisioner: &Provisioner,
    ) -> Result<Arc<[InstanceType]>, CloudError> {
        let Resolved { provider, subnets } = self.resolve(provisioner).await?;
        let zones: BTreeSet<&str> = subnets.iter().map(|s| s.zone.as_str()).collect();
        // With an amiSelector, only the architectures of the selected AMIs can boot.
        let extras = self.extras_of(provisioner);
        let architectures: Option<BTreeSet<String>> =
            match (&extras.ami_selector, &provider.launch_template) {
                (Some(sel), None) => {
                    let family = provider.ami_family.clone().unwrap_or_else(|| "AL2".into());
                    let images = self.selected_amis(&family, sel).await?;
                    Some(images.iter().map(|i| i.architecture.clone()).collect())
                }
                _ => None,
            };
        let infos = self.instance_type_infos().await?;
        let spot = self.spot_prices().await?;
        let unavailable = self.unavailable.current();
        let name = provisioner.metadata.name.clone().unwrap_or_default();
        if let Some(types) = lock(&self.caches)
            .built_types
            .get(&name)
            .and_then(|b| b.reuse(&infos, &spot, &zones, &architectures, &unavailable))
        {
            return Ok(types);
        }
        let mut types: Vec<InstanceType> = infos
            .iter()
            .filter(|info| {
                architectures
                    .as_ref()
                    .is_none_or(|a| a.contains(ec2_architecture(info.architecture)))
            })
            .filter_map(|info| {
                let mut info = info.clone();
                info.zones.retain(|z| zones.contains(z.as_str()));
                if info.zones.is_empty() {
                    return None;
                }
                let mut t = aws_instance_type(&info, &AwsCatalogOptions::default());
                for o in &mut t.offerings {
                    if o.capacity_type == CAPACITY_TYPE_SPOT {
                        o.price = spot.get(&(t.name.clone(), o.zone.clone())).copied();
                    }
                    // No known on-demand price: still launchable, priced as unknown (the
                    // packer ranks it after every priced option).
                    o.available = true;
                }
                Some(t)
            })
            .collect();
        mark_absent_labels(&mut types);
        mark_unavailable(&mut types, &unavailable);
        let types: Arc<[InstanceType]> = types.into();
        let mut caches = lock(&self.caches);
        // Lists built from an older instance-type answer are never handed out again: drop
        // them, so the lists of Provisioners gone (or renamed) do not pile up.
        caches
            .built_types
            .retain(|_, b| Arc::ptr_eq(&b.infos, &infos));
        caches.built_types.insert(
            name,
            BuiltTypes {
                infos,
                spot,
                zones: zones.iter().map(|z| z.to_string()).collect(),
                architectures,
                unavailable,
                types: types.clone(),
            },
        );
        Ok(types)
    }

    async fn create(&self, request: &NodeRequest) -> Result<Instance, CloudError> {
        self.config.validate()?;
        let name = request
            .provisioner
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        let Resolved { provider, subnets } = self.resolve(&request.provisioner).await?;
        let family = provider.ami_family.clone().unwrap_or_else(|| "AL2".into());
        let extras = self.extras_of(&request.provisioner);
        if provider.launch_template.is_none()
            && family != CUSTOM_AMI_FAMILY
            && !SUPPORTED_AMI_FAMILIES.contains(&family.as_str())
        {
            return Err(CloudError::UnknownAmiFamily {
                family,
                known: SUPPORTED_AMI_FAMILIES.to_vec(),
            });
        }
        if provider.launch_template.is_none()
            && family == CUSTOM_AMI_FAMILY
            && extras.ami_selector.is_none()
        {
            return Err(CloudError::InvalidProvider {
                provisioner: name,
                message: "amiFamily Custom has no AMI of its own: set amiSelector on the \
                          AWSNodeTemplate (and userData that joins the cluster)"
                    .into(),
            });
        }
        // AMIs from the selector, newest first, instead of the family's SSM parameters.
        let selected = match (&extras.ami_selector, &provider.launch_template) {
            (Some(sel), None) => Some(self.selected_amis(&family, sel).await?),
            _ => None,
        };
        let instance_profile = provider
            .instance_profile
            .clone()
            .or_else(|| self.config.default_instance_profile.clone())
            .unwrap_or_default();
        if provider.launch_template.is_none() && instance_profile.is_empty() {
            return Err(CloudError::UnknownInstanceProfile {
                name: String::new(),
                message: "the provider sets no instanceProfile and no default is configured".into(),
            });
        }
        if provider.launch_template.is_none() {
            // Before anything is created or launched: the profile must exist and have a role.
            let field = self.instance_profile_field(&request.provisioner, &provider);
            self.instance_profile(&field, &instance_profile).await?;
        }
        let security_groups = if provider.launch_template.is_none() {
            self.security_groups(&provider).await?
        } else {
            vec![]
        };
        if let Some(existing) = self.find_by_token(&request.client_token).await? {
            return Ok(existing);
        }
        let infos = self.instance_type_infos().await?;
        let mut tags: BTreeMap<String, String> = provider.tags.clone();
        tags.insert(
            "Name".into(),
            format!("karpenter/{}/{name}", self.config.cluster_name),
        );
        tags.insert(PROVISIONER_TAG.into(), name.clone());
        tags.insert(cluster_tag_key(&self.config.cluster_name), "owned".into());
        tags.insert(CLIENT_TOKEN_TAG.into(), request.client_token.clone());
        tags.insert(MANAGED_BY_TAG.into(), self.config.cluster_name.clone());
        // Spot prices only rank spot against on-demand: without them nothing is left out.
        let spot = if !request.capacity_types.is_empty()
            && request.allows_capacity_type(CAPACITY_TYPE_SPOT)
        {
            self.spot_prices().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "spot prices unknown; no spot type is left out by price");
                Arc::default()
            })
        } else {
            Arc::default()
        };
        // The kubelet settings each option was planned with (our templates only: a user's
        // launch template carries its own user data).
        let own_templates = provider.launch_template.is_none();
        let kubelet = request.provisioner.spec.kubelet_configuration.as_ref();
        let planned: HashMap<String, (Accelerator, KubeletArgs)> = request
            .instance_types
            .iter()
            .filter_map(|n| infos.iter().find(|i| &i.name == n))
            .map(|info| {
                let t = aws_instance_type(info, &AwsCatalogOptions::default());
                let args = KubeletArgs::planned(&t, kubelet);
                (info.name.clone(), (Accelerator::of(info), args))
            })
            .collect();
        let mut errors: Vec<String> = Vec::new();
        let mut tried: BTreeSet<String> = BTreeSet::new();
        for _ in 0..self.config.max_launch_rounds.max(1) {
            let Some((capacity_type, mut by_arch)) = self.plan(request, &infos, &subnets, &spot)
            else {
                break;
            };
            if provider.launch_template.is_some() {
                // The user's template carries its own AMI: one config for every override.
                let all: Vec<FleetOverride> = by_arch.drain(..).flat_map(|(_, o)| o).collect();
                by_arch.push((Architecture::Amd64, all));
            }

            // A template of ours deleted behind our back is recreated once.
            let mut recreated = false;
            // One launch template per architecture, accelerator (the AMI variant) and kubelet
            // settings (max pods and reservations differ by instance type), in option order.
            let mut groups = group_overrides(&by_arch, &request.instance_types, |t| match planned
                .get(t)
            {
                Some((a, k)) if own_templates => (*a, Some(k)),
                _ => (Accelerator::None, None),
            });
            // With an amiSelector: each group boots the newest selected AMI of its
            // architecture; types of an architecture no selected AMI has are left out.
            let mut images: HashMap<Architecture, String> = HashMap::new();
            if let Some(sel) = &selected {
                for (key, _) in &groups {
                    if let Some(i) = sel
                        .iter()
                        .find(|i| i.architecture == ec2_architecture(key.arch))
                    {
                        images.insert(key.arch, i.id.clone());
                    }
                }
                groups.retain(|(k, _)| images.contains_key(&k.arch));
                if groups.is_empty() {
                    return Err(CloudError::AmiNotFound {
                        family: family.clone(),
                        parameter: format!(
                            "amiSelector {}",
                            crate::cloud::provider::describe_selector(
                                extras.ami_selector.as_ref().unwrap_or(&BTreeMap::new())
                            )
                        ),
                        message: format!(
                            "the selected AMIs ({}) fit none of the architectures of {:?}",
                            sel.iter()
                                .map(|i| format!("{} {}", i.id, i.architecture))
                                .collect::<Vec<_>>()
                                .join(", "),
                            request.instance_types
                        ),
                    });
                }
            }
            let (fleet, response) = loop {
                let mut configs = Vec::new();
                for (key, overrides) in groups.iter().cloned() {
                    tried.extend(overrides.iter().map(|o| o.instance_type.clone()));
                    let template = match &provider.launch_template {
                        Some(t) => t.clone(),
                        None => {
                            let ami = match images.get(&key.arch) {
                                Some(id) => id.clone(),
                                None => self.ami(&family, key.arch, key.accelerator).await?,
                            };
                            let boot = BootSettings {
                                capacity_type: &capacity_type,
                                kubelet: key.kubelet,
                                user_data: extras.user_data.as_deref(),
                                detailed_monitoring: extras.detailed_monitoring,
                            };
                            let spec = self.launch_template_spec(
                                &provider,
                                &family,
                                ami,
                                &instance_profile,
                                &security_groups,
                                request,
                                &boot,
                            )?;
                            self.ensure_launch_template(&spec).await?;
                            spec.name
                        }
                    };
                    configs.push(FleetConfig {
                        launch_template_name: template,
                        overrides,
                    });
                }
                let mut fleet = FleetRequest {
                    client_token: String::new(),
                    capacity_type: capacity_type.clone(),
                    configs,
                    tags: tags.clone(),
                    context: provider.context.clone(),
                };
                fleet.client_token = fleet_token(&request.client_token, &fleet);
                let response = match self.create_fleet(&fleet, &request.client_token).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(existing)) => return Ok(existing),
                    // A capacity or quota error for the whole call concerns every override.
                    Err(CloudError::Api { code, message, .. }) if api::is_capacity_code(&code) => {
                        FleetResponse {
                            instances: vec![],
                            errors: vec![api::FleetError {
                                instance_type: None,
                                subnet_id: None,
                                code,
                                message,
                            }],
                        }
                    }
                    Err(e) if !recreated && own_templates && is_template_not_found(e.code()) => {
                        recreated = true;
                        self.forget_launch_templates(&fleet);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if !recreated
                    && own_templates
                    && response.instances.is_empty()
                    && response
                        .errors
                        .iter()
                        .any(|e| is_template_not_found(Some(&e.code)))
                {
                    recreated = true;
                    self.forget_launch_templates(&fleet);
                    continue;
                }
                break (fleet, response);
            };
            for e in &response.errors {
                if e.is_capacity_error() {
                    for o in fleet.configs.iter().flat_map(|c| &c.overrides) {
                        if e.covers(o) {
                            self.unavailable
                                .mark(&o.instance_type, &o.zone, &capacity_type);
                        }
                    }
                }
                errors.push(format!("{}: {}", e.code, e.message));
            }
            if let Some(first) = response.instances.first() {
                return self.launched(first, &subnets).await;
            }
            if let Some(e) = response.errors.iter().find(|e| !e.is_capacity_error()) {
                if e.message.contains("iamInstanceProfile")
                    || e.message.contains("Instance Profile")
                {
                    return Err(CloudError::UnknownInstanceProfile {
                        name: instance_profile,
                        message: e.message.clone(),
                    });
                }
                return Err(CloudError::Api {
                    operation: "CreateFleet",
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
            if response.errors.is_empty() {
                return Err(CloudError::Api {
                    operation: "CreateFleet",
                    code: "NoInstances".into(),
                    message: "CreateFleet launched nothing and reported no error".into(),
                });
            }
        }
        if errors.is_empty() {
            Err(CloudError::NoOfferings(format!(
                "none of {:?} has an available offering in the subnets' zones {:?} (allowed zones {:?}, capacity types {:?})",
                request.instance_types,
                subnets.iter().map(|s| s.zone.as_str()).collect::<BTreeSet<_>>(),
                request.zones,
                request.capacity_types
            )))
        } else {
            Err(CloudError::InsufficientCapacity {
                instance_types: tried.into_iter().collect(),
                detail: errors.join("; "),
            })
        }
    }

    async fn delete(&self, instance_id: &str) -> Result<(), CloudError> {
        let Some(instance) = self.describe(instance_id).await? else {
            return Ok(());
        };
        if !self.owns(&instance) {
            return Err(CloudError::NotOwned {
                instance_id: instance_id.to_string(),
                cluster: self.config.cluster_name.clone(),
            });
        }
        if instance.state == crate::cloud::provider::InstanceState::Terminated {
            return Ok(());
        }
        let ids = vec![instance_id.to_string()];
        match self
            .call("TerminateInstances", || {
                self.api.terminate_instances(ids.clone())
            })
            .await
        {
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(()),
            r => r,
        }
    }

    async fn get(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        Ok(self.describe(instance_id).await?.filter(|i| self.owns(i)))
    }

    async fn collect_garbage(&self) -> Result<Vec<String>, CloudError> {
        self.collect_launch_templates().await
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        let filters = self.owned_filters();
        let mut all = self
            .call("DescribeInstances", || {
                self.api.describe_instances(filters.clone(), vec![])
            })
            .await?;
        all.retain(|i| self.owns(i) && !i.state.is_terminating());
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }
}

impl<A: Ec2Api> AwsCloud<A> {
    /// One instance by ID, ours or not; `None` when EC2 does not know it.
    async fn describe(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        let ids = vec![instance_id.to_string()];
        match self
            .call("DescribeInstances", || {
                self.api.describe_instances(vec![], ids.clone())
            })
            .await
        {
            Ok(v) => Ok(v.into_iter().find(|i| i.id == instance_id)),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The EC2/SSM/IAM/Pricing operations this module calls, as IAM actions (checked against
/// [`crate::cloud::iam::IAM_ACTIONS`]).
pub const CALLED_ACTIONS: &[&str] = &[
    "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate",
    "ec2:DeleteLaunchTemplate",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
    "ec2:TerminateInstances",
    "iam:GetInstanceProfile",
    "pricing:GetProducts",
    "ssm:GetParameter",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn called_actions_are_in_the_policy() {
        for a in CALLED_ACTIONS {
            assert!(
                crate::cloud::iam::IAM_ACTIONS.contains(a),
                "{a} is called but not in IAM_ACTIONS"
            );
        }
    }

    #[test]
    fn an_empty_endpoint_or_ca_bundle_is_a_configuration_error() {
        let mut c = AwsConfig::new("demo");
        let err = c.validate().unwrap_err();
        assert!(err.is_configuration());
        assert!(err.to_string().contains("clusterEndpoint"), "{err}");
        c.cluster_endpoint = "https://ABC.gr7.us-east-1.eks.amazonaws.com".into();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("clusterCABundle"), "{err}");
        c.cluster_ca_bundle = "not base64!".into();
        assert!(c.validate().is_err());
        c.cluster_ca_bundle = "Q0EK".into();
        c.validate().unwrap();
        c.cluster_name = " ".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clusterName"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = AwsConfig::new("demo");
        assert_eq!(c.backoff(0), Duration::from_millis(200));
        assert_eq!(c.backoff(1), Duration::from_millis(400));
        assert_eq!(c.backoff(10), Duration::from_secs(5));
    }

    #[test]
    fn retries_wait_a_jittered_half_to_all_of_the_backoff() {
        let d = Duration::from_millis(400);
        assert_eq!(jittered(d, 0), Duration::from_millis(200));
        assert_eq!(jittered(d, 200_000_000), d);
        assert_eq!(jittered(Duration::ZERO, 12345), Duration::ZERO);
        let j = Jitter::new();
        let waits: BTreeSet<Duration> = (0..50).map(|_| jittered(d, j.next())).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d), "{waits:?}");
        assert!(
            waits.len() > 40,
            "waits are spread, not lock-step: {waits:?}"
        );
    }

    fn fleet(capacity_type: &str, types: &[&str]) -> FleetRequest {
        FleetRequest {
            client_token: String::new(),
            capacity_type: capacity_type.into(),
            configs: vec![FleetConfig {
                launch_template_name: "lt".into(),
                overrides: types
                    .iter()
                    .map(|t| FleetOverride {
                        instance_type: t.to_string(),
                        subnet_id: "subnet-1".into(),
                        zone: "us-east-1a".into(),
                    })
                    .collect(),
            }],
            tags: BTreeMap::new(),
            context: None,
        }
    }

    #[test]
    fn new_templates_default_to_imdsv2_and_an_encrypted_gp3_root_volume() {
        let m = metadata_options_with_defaults(None);
        assert_eq!(m.http_tokens.as_deref(), Some("required"));
        assert_eq!(m.http_put_response_hop_limit, Some(2));
        assert_eq!(m.http_endpoint.as_deref(), Some("enabled"));
        // What the template says wins, field by field.
        let given = crate::api::aws::MetadataOptions {
            http_tokens: Some("optional".into()),
            ..Default::default()
        };
        let m = metadata_options_with_defaults(Some(&given));
        assert_eq!(m.http_tokens.as_deref(), Some("optional"));
        assert_eq!(m.http_put_response_hop_limit, Some(2));
        let al2 = default_block_devices("AL2");
        assert_eq!(al2.len(), 1);
        assert_eq!(al2[0].device_name.as_deref(), Some("/dev/xvda"));
        let ebs = al2[0].ebs.as_ref().unwrap();
        assert_eq!(ebs.encrypted, Some(true));
        assert_eq!(ebs.volume_type.as_deref(), Some("gp3"));
        assert_eq!(
            ebs.volume_size.as_ref().unwrap().milli().unwrap(),
            (20_i64 << 30) * 1000
        );
        let br = default_block_devices("Bottlerocket");
        assert_eq!(br[1].device_name.as_deref(), Some("/dev/xvdb"));
    }

    #[test]
    fn overrides_group_per_launch_template_within_create_fleet_limits() {
        let names: Vec<String> = (0..60).map(|i| format!("t{i}.large")).collect();
        let args: Vec<KubeletArgs> = (0..60)
            .map(|i| KubeletArgs {
                max_pods: i,
                ..Default::default()
            })
            .collect();
        let o = |t: &str| FleetOverride {
            instance_type: t.to_string(),
            subnet_id: "subnet-1".into(),
            zone: "us-east-1a".into(),
        };
        // arm64 types listed after the amd64 ones, though t1 (arm64) is the second cheapest.
        let arm: Vec<FleetOverride> = names.iter().skip(1).step_by(2).map(|n| o(n)).collect();
        let amd: Vec<FleetOverride> = names.iter().step_by(2).map(|n| o(n)).collect();
        let by_arch: ArchOverrides = vec![(Architecture::Amd64, amd), (Architecture::Arm64, arm)];
        let index = |t: &str| names.iter().position(|n| n == t).unwrap();
        let groups = group_overrides(&by_arch, &names, |t| {
            (Accelerator::None, Some(&args[index(t)]))
        });
        assert_eq!(groups.len(), MAX_LAUNCH_TEMPLATE_CONFIGS);
        let kept: Vec<&str> = groups
            .iter()
            .map(|g| g.1[0].instance_type.as_str())
            .collect();
        // The cheapest 50, in option order: the dearest 10 are left out.
        assert_eq!(
            kept,
            names[..50].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(groups[1].0.arch, Architecture::Arm64);
        // Same settings: one group.
        let same = KubeletArgs::default();
        let groups = group_overrides(&by_arch, &names, |_| (Accelerator::None, Some(&same)));
        assert_eq!(groups.len(), 2, "one per architecture");
        assert_eq!(groups[0].1.len() + groups[1].1.len(), 60);
    }

    #[test]
    fn launch_template_names_fit_ec2_for_any_cluster_name() {
        assert_eq!(
            launch_template_name("demo", 0xab),
            "karpenter.k8s.aws/demo/00000000000000ab"
        );
        // EKS allows cluster names of up to 100 characters.
        let a = format!("{}a", "c".repeat(99));
        let b = format!("{}b", "c".repeat(99));
        let (na, nb) = (launch_template_name(&a, 1), launch_template_name(&b, 1));
        assert!(na.len() <= MAX_LAUNCH_TEMPLATE_NAME, "{} {na}", na.len());
        assert_ne!(na, nb, "shortened names stay distinct");
        assert_eq!(na, launch_template_name(&a, 1));
        for n in 1..=100 {
            let name = launch_template_name(&"é".repeat(n), 7);
            assert!(name.len() <= MAX_LAUNCH_TEMPLATE_NAME, "{n}: {name}");
        }
        let longest_kept = "x".repeat(93);
        assert!(launch_template_name(&longest_kept, 1).contains(&longest_kept));
    }

    #[test]
    fn fleet_tokens_follow_the_request_parameters_and_fit_create_fleet() {
        let a = fleet("on-demand", &["m5.large", "m5.xlarge"]);
        let t = fleet_token("node-1", &a);
        assert!(t.starts_with("node-1-"), "{t}");
        assert_eq!(
            t,
            fleet_token("node-1", &a.clone()),
            "same request, same token"
        );
        // Fewer overrides (after a capacity error), another capacity type, another context,
        // another node: each is another token.
        let others = [
            fleet_token("node-1", &fleet("on-demand", &["m5.xlarge"])),
            fleet_token("node-1", &fleet("spot", &["m5.large", "m5.xlarge"])),
            fleet_token(
                "node-1",
                &FleetRequest {
                    context: Some("c-1".into()),
                    ..a.clone()
                },
            ),
            fleet_token("node-2", &a),
        ];
        for o in &others {
            assert_ne!(o, &t);
        }
        let long = "x".repeat(100);
        let t = fleet_token(&long, &a);
        assert!(t.len() <= 64, "{t}");
        assert_eq!(t, fleet_token(&long, &a));
        assert_ne!(t, fleet_token(&"y".repeat(100), &a));
    }
}
