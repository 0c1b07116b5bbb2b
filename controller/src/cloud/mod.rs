//! Cloud providers and the instance-type catalog.

pub mod catalog;
pub mod instance_types;
