//! The controller's runtime: what connects the pure loops to a real cluster. Needs the
//! `runtime` feature (the kube-rs client).
//!
//! - [`lease`]: one active replica through a `coordination.k8s.io` Lease.
//! - [`metrics`]: Prometheus metrics with Karpenter's names.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`feed`]: watches that keep the cluster index warm.
//! - [`writer`]: the lifecycle loops' Kubernetes changes over kube-rs.
//! - [`rbac`]: the API calls all of the above make (what the Helm chart's RBAC grants).

pub mod admin;
pub mod feed;
pub mod lease;
pub mod metrics;
pub mod rbac;
pub mod writer;
