//! The EC2/SSM/IAM calls the AWS provider makes, as a small trait over plain values.
//!
//! [`super::sdk::SdkApi`] implements it with aws-sdk-ec2, aws-sdk-ssm and aws-sdk-iam
//! (pagination inside);
//! tests wrap that implementation to inject faults (capacity errors, throttling) that a moto
//! server never returns.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use crate::api::aws::{BlockDeviceMapping, MetadataOptions};
use crate::cloud::catalog::AwsInstanceTypeInfo;
use crate::cloud::provider::{CloudError, Instance};

/// Error codes that mean "try again later".
pub const RETRYABLE_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
];

/// Error codes that mean an offering cannot be launched now (capacity, quota, or a type not
/// offered in a zone): the offering is marked unavailable and the launch falls back to the next
/// types, zones or capacity type. They come per override from CreateFleet, or for the whole call.
pub const CAPACITY_ERROR_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "MaxSpotInstanceCountExceeded",
    "VcpuLimitExceeded",
    "InstanceLimitExceeded",
    "Unsupported",
    "InsufficientFreeAddressesInSubnet",
];

/// Capacity codes that are account-wide quotas of a capacity type: every offering of that
/// capacity type in the request is marked, whatever override the error names.
pub const QUOTA_ERROR_CODES: &[&str] = &["MaxSpotInstanceCountExceeded"];

/// Whether an AWS error code is one of [`CAPACITY_ERROR_CODES`].
pub fn is_capacity_code(code: &str) -> bool {
    CAPACITY_ERROR_CODES.contains(&code)
}

/// An error from one API call: the AWS error code (empty when the request got no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// AWS error code, e.g. `RequestLimitExceeded`; empty for transport failures.
    pub code: String,
    /// Error message.
    pub message: String,
}

// === impl ApiError ===

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// Whether retrying the same call may succeed (throttling, 5xx, no answer).
    pub fn is_retryable(&self) -> bool {
        self.code.is_empty() || RETRYABLE_CODES.contains(&self.code.as_str())
    }

    /// The provider error for this API error in `operation`.
    pub fn into_cloud(self, operation: &'static str) -> CloudError {
        if self.code.is_empty() {
            CloudError::Transport {
                operation,
                message: self.message,
            }
        } else {
            CloudError::Api {
                operation,
                code: self.code,
                message: self.message,
            }
        }
    }
}

/// A describe filter, e.g. `tag:karpenter.sh/discovery` = `[demo]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Filter name.
    pub name: String,
    /// Accepted values.
    pub values: Vec<String>,
}

// === impl Filter ===

impl Filter {
    /// A filter from parts.
    pub fn new(name: &str, values: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// Subnet ID.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// Free IPv4 addresses.
    pub available_ips: i32,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// Group ID.
    pub id: String,
    /// Group name.
    pub name: String,
}

/// The latest spot price of one (instance type, zone).
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// USD per hour.
    pub price: f64,
}

/// An AMI, as DescribeImages answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// AMI ID.
    pub id: String,
    /// AMI name.
    pub name: String,
    /// EC2's architecture name: `x86_64` or `arm64`.
    pub architecture: String,
    /// Creation time, ISO 8601 (sorts as text).
    pub creation_date: String,
}

/// An IAM instance profile, as GetInstanceProfile answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceProfileInfo {
    /// Profile name.
    pub name: String,
    /// Profile ARN.
    pub arn: String,
    /// Names of the roles attached (at most one on AWS); empty means instances get no
    /// credentials.
    pub roles: Vec<String>,
}

/// A launch template Karpenter creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateSpec {
    /// Template name (carries the content hash).
    pub name: String,
    /// AMI ID.
    pub image_id: String,
    /// IAM instance profile name.
    pub instance_profile: String,
    /// Security group IDs.
    pub security_group_ids: Vec<String>,
    /// User data, base64.
    pub user_data: String,
    /// IMDS settings.
    pub metadata_options: Option<MetadataOptions>,
    /// Block devices.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Tags on the template itself.
    pub tags: BTreeMap<String, String>,
    /// Detailed (one-minute) CloudWatch monitoring of the instances.
    pub detailed_monitoring: bool,
}

/// A launch template as DescribeLaunchTemplates lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateInfo {
    /// Template ID.
    pub id: String,
    /// Template name.
    pub name: String,
    /// Tags on the template.
    pub tags: BTreeMap<String, String>,
}

/// One CreateFleet request of `Type=instant` for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRequest {
    /// Idempotency token.
    pub client_token: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// One config per launch template (per AMI/architecture).
    pub configs: Vec<FleetConfig>,
    /// Tags for the instance and its volumes.
    pub tags: BTreeMap<String, String>,
    /// The EC2 Fleet `Context` from the provider's `context`, when set.
    pub context: Option<String>,
}

/// A launch template with its overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Launch template name.
    pub launch_template_name: String,
    /// Instance type x zonal subnet overrides.
    pub overrides: Vec<FleetOverride>,
}

/// One override: an instance type in a subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOverride {
    /// Instance type.
    pub instance_type: String,
    /// Subnet ID.
    pub subnet_id: String,
    /// The subnet's zone (not sent; used to read errors back).
    pub zone: String,
}

/// What CreateFleet answered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetResponse {
    /// Launched instances.
    pub instances: Vec<FleetInstance>,
    /// Per-override errors (capacity and others).
    pub errors: Vec<FleetError>,
}

/// An instance CreateFleet launched.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetInstance {
    /// Instance ID.
    pub id: String,
    /// Instance type.
    pub instance_type: String,
    /// Subnet, when reported.
    pub subnet_id: Option<String>,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
}

/// An override CreateFleet could not launch.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetError {
    /// Instance type of the override, when reported.
    pub instance_type: Option<String>,
    /// Subnet of the override, when reported.
    pub subnet_id: Option<String>,
    /// AWS error code.
    pub code: String,
    /// Error message.
    pub message: String,
}

// === impl FleetError ===

impl FleetError {
    /// Whether the error means the offering is out of capacity.
    pub fn is_capacity_error(&self) -> bool {
        is_capacity_code(&self.code)
    }

    /// Whether the error concerns an override: it names no type or subnet, names the same
    /// ones, or is an account-wide quota ([`QUOTA_ERROR_CODES`]).
    pub fn covers(&self, o: &FleetOverride) -> bool {
        QUOTA_ERROR_CODES.contains(&self.code.as_str())
            || (self
                .instance_type
                .as_ref()
                .is_none_or(|t| t == &o.instance_type)
                && self.subnet_id.as_ref().is_none_or(|s| s == &o.subnet_id))
    }
}

/// The EC2, SSM and IAM operations the AWS provider uses. Implementations page through results.
pub trait Ec2Api: Send + Sync {
    /// DescribeSubnets.
    fn describe_subnets(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Subnet>, ApiError>> + Send;

    /// DescribeSecurityGroups.
    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<SecurityGroup>, ApiError>> + Send;

    /// DescribeInstanceTypes (all pages), without zones or prices.
    fn describe_instance_types(
        &self,
    ) -> impl Future<Output = Result<Vec<AwsInstanceTypeInfo>, ApiError>> + Send;

    /// DescribeInstanceTypeOfferings by availability zone: (instance type, zone) pairs.
    fn describe_instance_type_offerings(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, ApiError>> + Send;

    /// DescribeSpotPriceHistory for Linux, latest price per (type, zone).
    fn describe_spot_price_history(
        &self,
    ) -> impl Future<Output = Result<Vec<SpotPrice>, ApiError>> + Send;

    /// DescribeImages (all pages) by filters, owners and/or IDs.
    fn describe_images(
        &self,
        filters: Vec<Filter>,
        owners: Vec<String>,
        image_ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Image>, ApiError>> + Send;

    /// Pricing GetProducts: the on-demand USD/hour of every EC2 instance type in `region`
    /// (Linux, shared tenancy, no pre-installed software). An error (the Pricing API
    /// unreachable or not allowed) makes the provider fall back to its built-in price table.
    fn on_demand_prices(
        &self,
        region: &str,
    ) -> impl Future<Output = Result<HashMap<String, f64>, ApiError>> + Send;

    /// SSM GetParameter: the parameter's value.
    fn get_parameter(&self, name: &str) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// IAM GetInstanceProfile: the profile and its roles, `None` when no profile of that name
    /// exists (`NoSuchEntity`).
    fn instance_profile(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<InstanceProfileInfo>, ApiError>> + Send;

    /// DescribeLaunchTemplates by name: the template ID, `None` when it does not exist.
    fn find_launch_template(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, ApiError>> + Send;

    /// DescribeLaunchTemplates (all pages) by filters.
    fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<LaunchTemplateInfo>, ApiError>> + Send;

    /// DeleteLaunchTemplate by ID.
    fn delete_launch_template(&self, id: &str)
        -> impl Future<Output = Result<(), ApiError>> + Send;

    /// CreateLaunchTemplate: the new template's ID.
    fn create_launch_template(
        &self,
        spec: &LaunchTemplateSpec,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// CreateFleet (`Type=instant`).
    fn create_fleet(
        &self,
        request: &FleetRequest,
    ) -> impl Future<Output = Result<FleetResponse, ApiError>> + Send;

    /// DescribeInstances (all pages) by filters and/or IDs.
    fn describe_instances(
        &self,
        filters: Vec<Filter>,
        instance_ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Instance>, ApiError>> + Send;

    /// TerminateInstances.
    fn terminate_instances(
        &self,
        instance_ids: Vec<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_capacity_codes() {
        assert!(ApiError::new("RequestLimitExceeded", "slow down").is_retryable());
        assert!(ApiError::new("", "connection reset").is_retryable());
        assert!(!ApiError::new("UnauthorizedOperation", "no").is_retryable());
        let e = ApiError::new("UnauthorizedOperation", "no").into_cloud("CreateFleet");
        assert_eq!(e.code(), Some("UnauthorizedOperation"));
        assert_eq!(
            e.to_string(),
            "CreateFleet failed: UnauthorizedOperation: no"
        );
        let f = FleetError {
            instance_type: None,
            subnet_id: None,
            code: "InsufficientInstanceCapacity".into(),
            message: String::new(),
        };
        assert!(f.is_capacity_error());
    }
}
