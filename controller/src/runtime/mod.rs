//! The controller's runtime: what connects the pure loops to a real cluster. Needs the
//! `runtime` feature (the kube-rs client).
//!
//! - [`lease`]: one active replica through a `coordination.k8s.io` Lease.
//! - [`metrics`]: Prometheus metrics with Karpenter's names.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.

pub mod admin;
pub mod lease;
pub mod metrics;
