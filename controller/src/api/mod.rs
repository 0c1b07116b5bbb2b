//! The `karpenter.sh/v1alpha5` Provisioner API and the `karpenter.k8s.aws/v1alpha1`
//! AWSNodeTemplate: types, well-known labels, defaulting and validation. Pure: no I/O.
//!
//! Start with [`Provisioner`], then [`default_provisioner`] and [`validate_provisioner`];
//! [`decode`] turns untyped JSON/YAML values into typed objects with field-path errors.

pub mod aws;
pub mod decode;
pub mod defaults;
pub mod labels;
pub mod provisioner;
pub mod quantity;
pub mod validation;

pub use aws::{AWSNodeTemplate, AwsNodeTemplateSpec, AwsProvider};
pub use decode::{
    decode_node_template, decode_node_template_all, decode_provisioner, decode_provisioner_all,
    DecodeError, Decoded,
};
pub use defaults::{default_provisioner, json_patch, Defaulted};
pub use provisioner::{Provisioner, ProvisionerSpec, ProvisionerStatus, Requirement, Taint};
pub use quantity::Quantity;
pub use validation::{validate_node_template, validate_provisioner, FieldError, Report};

/// API group of Provisioners.
pub const GROUP: &str = "karpenter.sh";
/// `apiVersion` of Provisioners.
pub const PROVISIONER_API_VERSION: &str = "karpenter.sh/v1alpha5";
/// `apiVersion` of AWSNodeTemplates.
pub const NODE_TEMPLATE_API_VERSION: &str = "karpenter.k8s.aws/v1alpha1";
