#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! `karpenter-webhook`: the HTTPS admission webhook that `kubectl apply` passes through on its
//! way to a Provisioner or AWSNodeTemplate.
//!
//! ```text
//!                      kube-apiserver
//!        AdmissionReview │ (HTTPS, port 443 -> 8443)
//!                        v
//!   server (axum + rustls, certs hot-reloaded)          admin (plain HTTP, 8080)
//!        │ /default   /validate   /validate/deployments     /healthz /readyz /metrics
//!        v
//!   decision::Admission::decide(review, snapshot, now)   <- pure, no I/O
//!        │            │                 │
//!        │            │                 └─ guard::detect (Cluster Autoscaler evidence)
//!        │            └─ schema (CRD JSON Schema) + karpenter::api::validate_*
//!        └─ karpenter::api::default_provisioner -> RFC 6902 patch
//!                                            ^
//!   watch: kube watchers keep ClusterSnapshot warm (Deployments, ConfigMaps, Leases,
//!          Provisioner names) when --cluster-autoscaler-guard is warn or deny.
//! ```
//!
//! Start with [`decision::Admission`]: it turns one parsed AdmissionReview into a response and
//! is what the HTTP handlers in [`server`] call. The Provisioner rules themselves live in
//! [`karpenter::api`] and are reused here, never re-implemented. [`guard`] is the pure Cluster
//! Autoscaler detector; [`watch`] feeds it. [`run`] wires everything together for `main.rs`.

pub mod admin;
pub mod admission_review;
pub mod config;
pub mod decision;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod schema;
pub mod server;
pub mod tls;
pub mod watch;

mod run;

pub use config::Args;
pub use error::Error;
pub use run::run;

/// Path of the mutating (defaulting) webhook for Provisioners.
pub const DEFAULT_PATH: &str = "/default";
/// Path of the validating webhook for Provisioners and AWSNodeTemplates.
pub const VALIDATE_PATH: &str = "/validate";
/// Path of the validating webhook for apps/v1 Deployments (the Cluster Autoscaler rule).
pub const VALIDATE_DEPLOYMENTS_PATH: &str = "/validate/deployments";
/// Port the HTTPS admission server listens on by default (the Service's `targetPort`).
pub const DEFAULT_TLS_PORT: u16 = 8443;
/// Port the plain-HTTP admin server (`/healthz`, `/readyz`, `/metrics`) listens on by default.
pub const DEFAULT_ADMIN_PORT: u16 = 8080;
/// Annotation that lets a Provisioner (or a Cluster Autoscaler Deployment) through the Cluster
/// Autoscaler guard, for migrations: `karpenter.sh/allow-with-cluster-autoscaler: "true"`.
pub const ALLOW_WITH_CLUSTER_AUTOSCALER: &str = "karpenter.sh/allow-with-cluster-autoscaler";
