//! The watchers that keep the guard's [`ClusterSnapshot`] warm: Cluster Autoscaler-looking
//! Deployments, `cluster-autoscaler-status` ConfigMaps, `cluster-autoscaler` Leases and the
//! names of Provisioners (metadata only). Requests read the stores; they never call the API.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use karpenter::api::Provisioner;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};

use crate::admin::Readiness;
use crate::config::ClientArgs;
use crate::decision::ClusterView;
use crate::guard::{self, ClusterSnapshot, LEASE, STATUS_CONFIGMAP};
use crate::Error;

/// The warm cache behind the guard.
#[derive(Clone)]
pub struct WatchedCluster {
    deployments: Store<Deployment>,
    config_maps: Store<ConfigMap>,
    leases: Store<Lease>,
    provisioners: Store<PartialObjectMeta<Provisioner>>,
    synced: Arc<AtomicBool>,
}

impl ClusterView for WatchedCluster {
    fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            deployments: self.deployments.state(),
            config_maps: self.config_maps.state(),
            leases: self.leases.state(),
            provisioners: self
                .provisioners
                .state()
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect(),
        }
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// A Kubernetes client from `--kubeconfig`/`--context`, `$KUBECONFIG`, `~/.kube/config` or the
/// in-cluster configuration, like kubectl.
pub async fn client(args: &ClientArgs) -> Result<Client, Error> {
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| Error::Kube(e);
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| boxed(e.into()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| boxed(e.into()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| boxed(e.into()))?,
        (None, None) => Config::infer().await.map_err(|e| boxed(e.into()))?,
    };
    Client::try_from(config).map_err(|e| boxed(e.into()))
}

/// Starts the watchers on the current runtime; `readiness` learns when all caches synced.
pub fn start(client: Client, readiness: Arc<Readiness>) -> WatchedCluster {
    let (deployments, w) = reflector::store();
    let stream = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .map(|ev| ev.map(keep_cluster_autoscalers));
    spawn_reflector("deployments", w, stream);

    let (config_maps, w) = reflector::store();
    let fields = format!("metadata.name={STATUS_CONFIGMAP}");
    let stream = watcher(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&fields),
    );
    spawn_reflector("configmaps", w, stream);

    let (leases, w) = reflector::store();
    let fields = format!("metadata.name={LEASE}");
    let stream = watcher(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().fields(&fields),
    );
    spawn_reflector("leases", w, stream);

    let (provisioners, w) = reflector::store();
    let stream = watcher(
        Api::<PartialObjectMeta<Provisioner>>::all(client),
        watcher::Config::default(),
    );
    spawn_reflector("provisioners", w, stream);

    let synced = Arc::new(AtomicBool::new(false));
    let cluster = WatchedCluster {
        deployments,
        config_maps,
        leases,
        provisioners,
        synced: synced.clone(),
    };
    let c = cluster.clone();
    tokio::spawn(async move {
        let ready = futures::future::try_join4(
            c.deployments.wait_until_ready(),
            c.config_maps.wait_until_ready(),
            c.leases.wait_until_ready(),
            c.provisioners.wait_until_ready(),
        )
        .await;
        if ready.is_ok() {
            synced.store(true, Ordering::Release);
            readiness.set_caches_synced();
            tracing::info!("cluster caches synced");
        }
    });
    cluster
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}

/// Keeps only Deployments that look like a Cluster Autoscaler (whatever their replicas), so
/// the store stays small in big clusters; one that stops looking like one is removed.
fn keep_cluster_autoscalers(ev: Event<Deployment>) -> Event<Deployment> {
    let slim = |mut d: Deployment| {
        d.metadata.managed_fields = None;
        d
    };
    match ev {
        Event::Apply(d) if guard::identify(&d).is_some() => Event::Apply(slim(d)),
        Event::Apply(d) => Event::Delete(d),
        Event::InitApply(d) if guard::identify(&d).is_some() => Event::InitApply(slim(d)),
        // Dropping an object from the initial list: replace it by a no-op deletion.
        Event::InitApply(d) => Event::Delete(d),
        other => other,
    }
}

fn spawn_reflector<K, S>(what: &'static str, writer: reflector::store::Writer<K>, stream: S)
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
{
    tokio::spawn(async move {
        reflector::reflector(writer, stream)
            .for_each(|r| {
                if let Err(e) = r {
                    tracing::warn!(watch = what, error = %crate::tls::error_chain(&e), "watch failed; retrying");
                }
                futures::future::ready(())
            })
            .await;
    });
}
