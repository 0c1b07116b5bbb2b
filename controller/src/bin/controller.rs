#![forbid(unsafe_code)]
//! `karpenter-controller`: watches the cluster, launches nodes for pending pods, and removes
//! empty, expired and deleted ones. Every replica keeps warm caches; only the holder of the
//! `karpenter-leader-election` Lease writes to Kubernetes or calls the cloud provider.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use karpenter::cloud::provider::CloudProvider;
use karpenter::cluster::{Cluster, SharedCluster};
use karpenter::lifecycle::{Lifecycle, LifecycleConfig, SystemClock};
use karpenter::runtime::{admin, feed, lease, metrics::Metrics, writer::KubeApiWriter};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

/// Where instances come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CloudKind {
    /// EC2 (the `aws` build feature).
    Aws,
    /// In-memory instances with the built-in catalog and prices, for trying the controller on
    /// a cluster whose nodes are simulated (e.g. by kwok). Instances live in this process only.
    Sim,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (production).
    Json,
}

/// karpenter-controller: launches EC2 nodes for pending pods as Provisioners allow, and
/// removes empty, expired and deleted ones.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Name of the cluster (tags instances `kubernetes.io/cluster/<name>=owned`).
    #[arg(long, env = "CLUSTER_NAME")]
    cluster_name: String,
    /// The API server endpoint nodes join (written into their user data).
    #[arg(long, env = "CLUSTER_ENDPOINT", default_value = "")]
    cluster_endpoint: String,
    /// Base64 CA bundle of the cluster, for the nodes' bootstrap.
    #[arg(long, env = "CLUSTER_CA_BUNDLE", default_value = "")]
    cluster_ca_bundle: String,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Override of the EC2, SSM and IAM endpoint (e.g. a moto server on 127.0.0.1).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint: Option<String>,
    /// Instance profile for nodes whose provider does not name one.
    #[arg(long, env = "AWS_DEFAULT_INSTANCE_PROFILE")]
    default_instance_profile: Option<String>,
    /// Kubernetes minor version of the node AMIs (e.g. `1.29`); default: the API server's.
    #[arg(long, env = "KUBERNETES_VERSION")]
    kubernetes_version: Option<String>,
    /// SSM path under which the public AMI parameters are read; only an emulator that cannot
    /// hold `/aws/service/...` needs another.
    #[arg(long, default_value = "/aws/service")]
    ssm_parameter_prefix: String,
    /// Cloud provider.
    #[arg(long, value_enum, default_value_t = CloudKind::Aws)]
    cloud_provider: CloudKind,
    /// A batch of pending pods closes after this long without a new one.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    batch_idle_duration: Duration,
    /// A batch closes after this long at most.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    batch_max_duration: Duration,
    /// Path to a kubeconfig; defaults to $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "karpenter")]
    leader_election_namespace: String,
    /// Run without leader election (one replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// This replica's identity in the Lease (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8000")]
    metrics_listen: SocketAddr,
    /// Log filter, e.g. `info` or `karpenter=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = karpenter::api::validation::parse_duration_secs(s)?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn client(args: &Args) -> Result<kube::Client, RunError> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| RunError::Kube(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Kube(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Kube(e.to_string()))?,
    };
    // The loops retry on their own schedule; kube-rs's default 429 retries would hide the
    // Eviction API's PodDisruptionBudget answers for minutes.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| RunError::Kube(e.to_string()))
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(mut args: Args) -> Result<(), RunError> {
    if args.cluster_name.trim().is_empty() {
        return Err(RunError::Config("--cluster-name must not be empty".into()));
    }
    let client = client(&args).await?;
    // One clear line when the API server cannot be reached, before anything starts.
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| RunError::Kube(e.to_string()))?;
    // Nodes boot the AMI of the control plane's minor version unless told otherwise (EKS
    // minor versions read `27+` on some providers).
    args.kubernetes_version.get_or_insert_with(|| {
        format!(
            "{}.{}",
            version.major,
            version
                .minor
                .trim_end_matches(|c: char| !c.is_ascii_digit())
        )
    });
    let cluster = SharedCluster::new(Cluster::new());
    let signals = feed::start(client.clone(), cluster.clone());
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let (addr, _admin) = admin::serve(
        args.metrics_listen,
        metrics.clone(),
        signals.synced.clone(),
        stop.clone(),
    )
    .await
    .map_err(|source| RunError::Listen {
        addr: args.metrics_listen,
        source,
    })?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let (lead_tx, leading) = watch::channel(args.no_leader_election);
    if !args.no_leader_election {
        let elector = lease::Elector::new(
            client.clone(),
            &args.leader_election_namespace,
            karpenter::runtime::rbac::LEADER_ELECTION_LEASE,
            &identity,
            lease::LeaseTimings::default(),
        );
        tokio::spawn(elector.run(lead_tx, stop.clone()));
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });

    let writer = Arc::new(KubeApiWriter::new(client.clone(), &identity));
    let clock = Arc::new(SystemClock);
    let mut config = LifecycleConfig::default();
    config.provisioning.batch_idle = args.batch_idle_duration;
    config.provisioning.batch_max = args.batch_max_duration;
    match args.cloud_provider {
        CloudKind::Sim => {
            let sim = karpenter::cloud::sim::SimProvider::new(
                &args.cluster_name,
                Arc::new(karpenter::cloud::provider::SystemClock),
                &Default::default(),
            )
            .map_err(|e| RunError::Config(e.to_string()))?;
            tracing::warn!("cloud provider sim: instances exist in this process only");
            let lifecycle = Lifecycle::new(cluster, Arc::new(sim), writer, clock, config);
            drive(lifecycle, signals, leading, stop, metrics).await;
        }
        CloudKind::Aws => {
            aws(
                &args, cluster, writer, clock, config, signals, leading, stop, metrics,
            )
            .await?
        }
    }
    Ok(())
}

#[cfg(feature = "aws")]
#[allow(clippy::too_many_arguments)]
async fn aws(
    args: &Args,
    cluster: SharedCluster,
    writer: Arc<KubeApiWriter>,
    clock: Arc<SystemClock>,
    config: LifecycleConfig,
    signals: feed::FeedSignals,
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    use karpenter::cloud::aws::{AwsCloud, AwsConfig, SdkApi, SdkSettings};
    let settings = SdkSettings {
        region: args.region.clone(),
        endpoint_url: args.aws_endpoint.clone(),
        page_size: None,
    };
    let api = SdkApi::from_environment(&settings).await;
    let mut aws_config = AwsConfig::new(&args.cluster_name);
    aws_config.region = args.region.clone();
    aws_config.cluster_endpoint = args.cluster_endpoint.clone();
    aws_config.cluster_ca_bundle = args.cluster_ca_bundle.clone();
    aws_config.default_instance_profile = args.default_instance_profile.clone();
    if let Some(v) = &args.kubernetes_version {
        aws_config.kubernetes_version = v.clone();
    }
    aws_config.ssm_parameter_prefix = args.ssm_parameter_prefix.clone();
    // An empty endpoint or CA bundle would boot nodes that never join, and are billed.
    aws_config
        .validate()
        .map_err(|e| RunError::Config(format!("{e} (--cluster-endpoint, --cluster-ca-bundle)")))?;
    let cloud = AwsCloud::new(
        api,
        aws_config,
        Arc::new(karpenter::cloud::provider::SystemClock),
    );
    // Our launch templates by tag: reused without a lookup, and deleted once unused.
    match cloud.load_launch_templates().await {
        Ok(n) => tracing::info!(templates = n, "found launch templates of this cluster"),
        Err(e) => tracing::warn!(error = %e, "could not list launch templates of this cluster"),
    }
    let lifecycle = Lifecycle::new(cluster, Arc::new(cloud), writer, clock, config);
    drive(lifecycle, signals, leading, stop, metrics).await;
    Ok(())
}

#[cfg(not(feature = "aws"))]
#[allow(clippy::too_many_arguments)]
async fn aws(
    _: &Args,
    _: SharedCluster,
    _: Arc<KubeApiWriter>,
    _: Arc<SystemClock>,
    _: LifecycleConfig,
    _: feed::FeedSignals,
    _: watch::Receiver<bool>,
    _: watch::Receiver<bool>,
    _: Arc<Metrics>,
) -> Result<(), RunError> {
    Err(RunError::Config(
        "this build has no AWS provider (built without the `aws` feature); use --cloud-provider sim".into(),
    ))
}

/// Runs the loops while this replica leads, waking on cluster changes and when a loop asked.
async fn drive<C: CloudProvider>(
    lifecycle: Lifecycle<C, KubeApiWriter>,
    signals: feed::FeedSignals,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut synced = signals.synced.clone();
    while !*synced.borrow() {
        tokio::select! {
            _ = synced.changed() => {}
            _ = stop.changed() => return,
        }
    }
    loop {
        if *stop.borrow() {
            return;
        }
        if !*leading.borrow() {
            tokio::select! {
                _ = leading.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let started = std::time::Instant::now();
        let wait = match lifecycle.tick().await {
            Ok(tick) => {
                if tick.round.is_some() {
                    metrics.observe_scheduling(started.elapsed().as_secs_f64());
                }
                tick.next
                    .and_then(|t| {
                        let now = k8s_openapi::jiff::Timestamp::now();
                        (t > now).then(|| t.duration_since(now).unsigned_abs())
                    })
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(5))
            }
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e).map(|s| s.to_string()), "lifecycle pass failed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = signals.changed.notified() => {}
            _ = stop.changed() => {}
            _ = leading.changed() => {}
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "karpenter".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls provider was already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
