//! AWS settings: the inline `provider` block of a Provisioner and the
//! `karpenter.k8s.aws/v1alpha1` `AWSNodeTemplate` that `providerRef` points to.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::provisioner::Requirement;
use super::quantity::Quantity;

/// The AMI families Karpenter knows how to bootstrap.
pub const AMI_FAMILIES: &[&str] = &[
    "AL2",
    "Bottlerocket",
    "Ubuntu",
    "Windows2019",
    "Windows2022",
    "Custom",
];

/// EBS volume types.
pub const VOLUME_TYPES: &[&str] = &["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"];

/// AWS settings shared by the inline provider and the AWSNodeTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsProvider {
    /// Type metadata of the inline block (upstream writes `extensions.karpenter.sh/v1alpha1`);
    /// kept for round-tripping, otherwise ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the inline block (upstream writes `AWS`); kept for round-tripping, otherwise ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The EC2 Fleet `Context` (a reserved EC2 field) sent with every CreateFleet call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// IAM instance profile given to launched instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Tags (or `aws-ids`) that select subnets; defaults to `karpenter.sh/discovery: <cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_selector: Option<BTreeMap<String, String>>,
    /// Tags (or `aws-ids`) that select security groups; defaults to `karpenter.sh/discovery: <cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_selector: Option<BTreeMap<String, String>>,
    /// AMI family: AL2 (default), Bottlerocket, Ubuntu, Windows2019, Windows2022 or Custom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AL2", "Bottlerocket", "Ubuntu", "Windows2019", "Windows2022", "Custom"]))]
    pub ami_family: Option<String>,
    /// Tags applied to instances and volumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Name of a user-managed launch template; excludes the settings a launch template carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    /// Instance metadata service settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Block devices of launched instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
}

/// Instance metadata service (IMDS) settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataOptions {
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_endpoint: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(
        default,
        rename = "httpProtocolIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_protocol_ipv6: Option<String>,
    /// Hop limit for PUT responses, 1 to 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: Option<i64>,
    /// `required` (IMDSv2) or `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["required", "optional"]))]
    pub http_tokens: Option<String>,
}

/// A block device of a launched instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockDeviceMapping {
    /// Device name, e.g. `/dev/xvda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The EBS volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs: Option<BlockDevice>,
}

/// An EBS volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockDevice {
    /// Delete the volume when the instance terminates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// Encrypt the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Provisioned IOPS (io1, io2, gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i64>,
    /// KMS key for encryption.
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Snapshot to create the volume from.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Throughput in MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i64>,
    /// Size, a quantity such as `20Gi` (1Gi to 64Ti).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<Quantity>,
    /// Volume type, e.g. `gp3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]))]
    pub volume_type: Option<String>,
}

/// The desired state of an AWSNodeTemplate.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "karpenter.k8s.aws",
    version = "v1alpha1",
    kind = "AWSNodeTemplate",
    plural = "awsnodetemplates",
    doc = "An AWSNodeTemplate holds the AWS settings (subnets, security groups, AMI, user data) that Provisioners reference with providerRef.",
    status = "AwsNodeTemplateStatus",
    category = "karpenter",
    printcolumn(name = "AMIFamily", type_ = "string", json_path = ".spec.amiFamily"),
    printcolumn(
        name = "InstanceProfile",
        type_ = "string",
        json_path = ".spec.instanceProfile"
    ),
    printcolumn(
        name = "LaunchTemplate",
        type_ = "string",
        json_path = ".spec.launchTemplate",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[allow(clippy::duplicated_attributes)] // repeated printcolumn types are not duplicates
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsNodeTemplateSpec {
    /// Type metadata upstream's schema allows inside the spec; kept for round-tripping, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind upstream's schema allows inside the spec; kept for round-tripping, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The EC2 Fleet `Context` (a reserved EC2 field) sent with every CreateFleet call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// IAM instance profile given to launched instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Tags (or `aws-ids`) that select subnets; defaults to `karpenter.sh/discovery: <cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_selector: Option<BTreeMap<String, String>>,
    /// Tags (or `aws-ids`) that select security groups; defaults to `karpenter.sh/discovery: <cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_selector: Option<BTreeMap<String, String>>,
    /// AMI family: AL2 (default), Bottlerocket, Ubuntu, Windows2019, Windows2022 or Custom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AL2", "Bottlerocket", "Ubuntu", "Windows2019", "Windows2022", "Custom"]))]
    pub ami_family: Option<String>,
    /// Tags applied to instances and volumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Name of a user-managed launch template; excludes the settings a launch template carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    /// Instance metadata service settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Block devices of launched instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// User data merged with Karpenter's bootstrap script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Tags (or `aws-ids`, `aws::name`, `aws::owners`) that select AMIs instead of the family default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_selector: Option<BTreeMap<String, String>>,
    /// Enable detailed CloudWatch monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
}

// === impl AwsNodeTemplateSpec ===

impl AwsNodeTemplateSpec {
    /// The settings shared with the inline provider.
    pub fn provider(&self) -> AwsProvider {
        AwsProvider {
            api_version: None,
            kind: None,
            context: self.context.clone(),
            instance_profile: self.instance_profile.clone(),
            subnet_selector: self.subnet_selector.clone(),
            security_group_selector: self.security_group_selector.clone(),
            ami_family: self.ami_family.clone(),
            tags: self.tags.clone(),
            launch_template: self.launch_template.clone(),
            metadata_options: self.metadata_options.clone(),
            block_device_mappings: self.block_device_mappings.clone(),
        }
    }
}

/// Observed state of an AWSNodeTemplate, as Karpenter v0.27–v0.31 controllers write it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsNodeTemplateStatus {
    /// Subnets found by the selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResolvedSubnet>,
    /// Security groups found by the selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<ResolvedSecurityGroup>,
    /// AMIs found by the selector (or the family's defaults), with the instance types each fits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<ResolvedAmi>,
}

/// A subnet resolved from a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSubnet {
    /// Subnet ID.
    pub id: String,
    /// Its availability zone.
    pub zone: String,
}

/// A security group resolved from a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSecurityGroup {
    /// Security group ID.
    pub id: String,
    /// Its name (written by v0.28 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An AMI resolved from the selector or the AMI family.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAmi {
    /// AMI ID.
    pub id: String,
    /// AMI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The instance types the AMI suits (architecture, GPU, ...), as node selector requirements.
    pub requirements: Vec<Requirement>,
}
