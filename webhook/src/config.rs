//! Command-line configuration: small flattened clap structs, one per concern.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, ValueEnum};

use crate::guard::GuardMode;

const AFTER_HELP: &str = "\
Endpoints (HTTPS, AdmissionReview admission.k8s.io/v1):
  POST /default                Provisioner defaulting (RFC 6902 JSONPatch)
  POST /validate               Provisioner and AWSNodeTemplate validation, Cluster Autoscaler guard
  POST /validate/deployments   refuses to create or scale up a Cluster Autoscaler while Provisioners exist
Admin (plain HTTP): GET /healthz, /readyz, /metrics

Cluster Autoscaler guard escape hatch: annotate a Provisioner (or the Cluster Autoscaler
Deployment) with
    karpenter.sh/allow-with-cluster-autoscaler: \"true\"
to admit it while the other runs (for migrations); the response then carries a warning.
With --cluster-autoscaler-guard=off the webhook needs no cluster access at all.";

/// `karpenter-webhook`: defaults and validates Karpenter Provisioners and AWSNodeTemplates, and
/// keeps a Cluster Autoscaler and Karpenter from running side by side.
#[derive(Debug, Clone, Parser)]
#[command(name = "karpenter-webhook", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// The HTTPS admission server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Serving certificates.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The plain-HTTP admin server.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The Cluster Autoscaler guard.
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Access to the Kubernetes API (only with the guard on).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The HTTPS admission server.
#[derive(Debug, Clone, ClapArgs)]
pub struct ServerArgs {
    /// Address of the HTTPS admission server (port 0 picks a free port).
    #[arg(long, env = "WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes; larger bodies get 413 (Kubernetes objects are
    /// at most about 1.5 MiB).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body (and the first request on a connection); slower
    /// clients get 408 or are disconnected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// Serving certificates.
#[derive(Debug, Clone, ClapArgs)]
pub struct TlsArgs {
    /// PEM certificate chain (e.g. tls.crt mounted from a Secret); reloaded when it changes.
    #[arg(
        long,
        env = "WEBHOOK_TLS_CERT_FILE",
        required_unless_present = "tls_self_signed"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (e.g. tls.key mounted from a Secret); reloaded when it changes.
    #[arg(
        long,
        env = "WEBHOOK_TLS_KEY_FILE",
        required_unless_present = "tls_self_signed"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Generate a self-signed certificate at start-up instead of reading files (the API server
    /// must then be given its certificate as caBundle out of band).
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_self_signed: bool,
    /// DNS names of the self-signed certificate.
    #[arg(
        long = "tls-self-signed-name",
        default_values_t = [
            "karpenter-webhook".to_string(),
            "karpenter-webhook.karpenter.svc".to_string(),
            "karpenter-webhook.karpenter.svc.cluster.local".to_string(),
        ]
    )]
    pub tls_self_signed_names: Vec<String>,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
}

/// The plain-HTTP admin server.
#[derive(Debug, Clone, ClapArgs)]
pub struct AdminArgs {
    /// Address of the plain-HTTP server for /healthz, /readyz and /metrics (port 0 picks a
    /// free port).
    #[arg(long, env = "WEBHOOK_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
}

/// The Cluster Autoscaler guard.
#[derive(Debug, Clone, ClapArgs)]
pub struct GuardArgs {
    /// What to do when a Provisioner is created or updated while a Cluster Autoscaler runs (or
    /// a Cluster Autoscaler is started while Provisioners exist): deny, warn (admit with a
    /// warning) or off (no check, no cluster access). The annotation
    /// karpenter.sh/allow-with-cluster-autoscaler: "true" admits one object with a warning.
    #[arg(long, value_enum, default_value_t = GuardMode::Deny)]
    pub cluster_autoscaler_guard: GuardMode,
    /// A cluster-autoscaler-status ConfigMap or cluster-autoscaler Lease older than this is
    /// not taken as evidence of a running Cluster Autoscaler.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub cluster_autoscaler_stale_after: Duration,
}

/// Access to the Kubernetes API, with kubectl's flag names.
#[derive(Debug, Clone, ClapArgs)]
pub struct ClientArgs {
    /// Path to a kubeconfig; defaults to $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, ClapArgs)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `karpenter_webhook=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses `250ms`, `10s`, `5m`, `1h30m` (Go-style, as the Provisioner API's durations; a bare
/// number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let secs = match s.parse::<u64>() {
        Ok(n) => n as f64,
        Err(_) => karpenter::api::validation::parse_duration_secs(s)
            .map_err(|e| format!("invalid duration: {e}; write e.g. 500ms, 10s or 5m"))?,
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 minutes").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_consistent_and_documents_the_escape_hatch() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("karpenter.sh/allow-with-cluster-autoscaler"));
        assert!(help.contains("--cluster-autoscaler-guard"));
        let a = Args::try_parse_from(["karpenter-webhook", "--tls-self-signed"]);
        let a = a.map_err(|e| e.to_string());
        assert!(a.is_ok(), "{a:?}");
        assert!(Args::try_parse_from(["karpenter-webhook"]).is_err());
        let a = Args::try_parse_from([
            "karpenter-webhook",
            "--tls-cert-file=c",
            "--tls-key-file=k",
            "--cluster-autoscaler-guard=off",
        ]);
        assert_eq!(
            a.map(|a| a.guard.cluster_autoscaler_guard).ok(),
            Some(GuardMode::Off)
        );
    }
}
