//! Watches that keep the [`Cluster`](crate::cluster::Cluster) index warm: Pods, Nodes,
//! Provisioners, AWSNodeTemplates, DaemonSets, PodDisruptionBudgets and Namespaces, each through a kube-rs
//! watcher (a relist replaces that kind; later events apply or delete one object). Every
//! replica keeps them running, leader or not, so a new leader starts with warm caches.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};

use crate::api::{AWSNodeTemplate, Provisioner};
use crate::cluster::{pods, Kind, Resource, SharedCluster};

/// What the feeds report: when every kind has listed once, and a wake-up on every change.
#[derive(Clone)]
pub struct FeedSignals {
    /// True once every watch has completed its first list.
    pub synced: watch::Receiver<bool>,
    /// Notified after every applied change.
    pub changed: Arc<Notify>,
}

/// Objects per page of a watch's initial list.
const LIST_PAGE: u32 = 100;

/// The annotation `kubectl apply` keeps its last input in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Wraps an object for the index, without what the controller never reads and what takes
/// much of a cached object's size: `managedFields` and kubectl's last-applied copy (and, for
/// Pods, everything [`pods::slim`] drops; for Nodes, the kubelet's image list).
fn wrap<K: kube::Resource + 'static>(f: fn(K) -> Resource) -> impl Fn(K) -> Resource + Send + Copy {
    move |mut k| {
        let meta = k.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        f(k)
    }
}

/// Starts one watch per kind over `client` (all namespaces) feeding `cluster`.
pub fn start(client: Client, cluster: SharedCluster) -> FeedSignals {
    let (synced_tx, synced) = watch::channel(false);
    let changed = Arc::new(Notify::new());
    let kinds = 7;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Kind>(kinds);
    macro_rules! feed {
        ($ty:ty, $kind:expr, $ctor:expr) => {
            tokio::spawn(run::<$ty>(
                Api::all(client.clone()),
                $kind,
                wrap($ctor),
                cluster.clone(),
                changed.clone(),
                done_tx.clone(),
            ));
        };
    }
    // Slimmed before it is moved to the heap, in one allocation: the parts dropped are
    // freed first, and no intermediate copy is left behind.
    feed!(Pod, Kind::Pod, |mut p: Pod| {
        pods::slim(&mut p);
        Resource::Pod(Arc::new(p))
    });
    feed!(Node, Kind::Node, |mut n: Node| {
        // The kubelet lists every image it holds; no loop reads them.
        if let Some(status) = n.status.as_mut() {
            status.images = None;
        }
        Resource::Node(Box::new(n))
    });
    feed!(Provisioner, Kind::Provisioner, |p: Provisioner| {
        Resource::Provisioner(Box::new(p))
    });
    feed!(AWSNodeTemplate, Kind::NodeTemplate, |t: AWSNodeTemplate| {
        Resource::NodeTemplate(Box::new(t))
    });
    feed!(DaemonSet, Kind::DaemonSet, |d: DaemonSet| {
        Resource::DaemonSet(Box::new(d))
    });
    feed!(
        PodDisruptionBudget,
        Kind::PodDisruptionBudget,
        |b: PodDisruptionBudget| Resource::PodDisruptionBudget(Box::new(b))
    );
    feed!(Namespace, Kind::Namespace, |n: Namespace| {
        Resource::Namespace(Box::new(n))
    });
    drop(done_tx);
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(kind) = done_rx.recv().await {
            seen.insert(kind);
            if seen.len() == kinds {
                let _ = synced_tx.send(true);
                tracing::info!("caches synced");
            }
        }
    });
    FeedSignals { synced, changed }
}

async fn run<K>(
    api: Api<K>,
    kind: Kind,
    to_resource: impl Fn(K) -> Resource + Send + Copy + 'static,
    cluster: SharedCluster,
    changed: Arc<Notify>,
    done: tokio::sync::mpsc::Sender<Kind>,
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // Pages of 100 rather than 500: a page is deserialized whole before its objects are
    // slimmed, and the smaller the page, the less the list leaves behind in the allocator.
    let mut stream = watcher::watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .boxed();
    let mut relist: Vec<Resource> = Vec::new();
    let mut first = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(obj)) => relist.push(to_resource(obj)),
            Ok(Event::InitDone) => {
                cluster.write().replace(kind, std::mem::take(&mut relist));
                changed.notify_one();
                if std::mem::take(&mut first) {
                    let _ = done.send(kind).await;
                }
            }
            Ok(Event::Apply(obj)) => {
                cluster.write().apply(to_resource(obj));
                changed.notify_one();
            }
            Ok(Event::Delete(obj)) => {
                let key = to_resource(obj).key();
                cluster.write().delete(kind, &key);
                changed.notify_one();
            }
            // The watcher retries by itself; say why it is not current.
            Err(e) => tracing::warn!(?kind, error = %e, "watch failed; retrying"),
        }
    }
}
