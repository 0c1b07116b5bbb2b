//! Cloud providers and the instance-type catalog.

#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog;
pub mod iam;
pub mod instance_types;
pub mod provider;
pub mod sim;
