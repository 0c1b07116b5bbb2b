#![forbid(unsafe_code)]
//! Karpenter-style node autoscaling for Kubernetes on AWS.
//!
//! ```text
//!  Provisioner ──(defaulting, validation: api)──┐
//!                                               v
//!  pending Pods ──> scheduling (packing) ──> Decision ──> cloud (EC2 instance) ──> Node <── Pod
//! ```
//!
//! - [`api`]: the Provisioner and AWSNodeTemplate types with their defaulting and validation,
//!   shared by the webhook and the kubectl plugin.
//! - [`cloud`]: cloud providers and the built-in AWS instance-type catalog.
//! - [`cluster`]: the in-memory index of the cluster that every loop reads.
//! - [`lifecycle`]: the loops: provisioning, emptiness, expiry, termination, garbage collection.
//! - [`scheduling`]: the packing engine: pods to instance types, prices and reasons.
//! - [`simulator`]: the offline walkthrough: scenario files over the in-memory cluster.
//! - `runtime` (feature `runtime`): the kube-rs side: cache feeds, the Kubernetes writer,
//!   leader election, metrics and health.

pub mod api;
pub mod cloud;
pub mod cluster;
pub mod lifecycle;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod scheduling;
pub mod simulator;
