#![forbid(unsafe_code)]
//! Leader election on the real apiserver: of two replicas exactly one leads; when the leader
//! stops (cleanly, releasing the Lease) or vanishes (its renewals stop), the other takes over,
//! and never while the first still leads.

use std::time::Duration;

use karpenter::runtime::lease::{Elector, LeaseTimings};
use karpenter_e2e::controlplane::{ControlPlane, Options};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;

async fn client(cp: &ControlPlane) -> Client {
    let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

const FAST: LeaseTimings = LeaseTimings {
    lease_duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(300),
};

struct Replica {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(client: Client, ns: &str, id: &str) -> Replica {
    let (lead_tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let elector = Elector::new(client, ns, "karpenter-leader", id, FAST);
    let task = tokio::spawn(elector.run(lead_tx, stop_rx));
    Replica {
        leading,
        stop,
        task,
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn one_replica_leads_and_the_other_takes_over() {
    karpenter_e2e::install_crypto();
    let cp = ControlPlane::shared(Options::default().without_crds());
    let ns = cp.namespace("lease").expect("namespace");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = client(cp).await;
        let a = replica(c.clone(), &ns.name, "replica-a");
        let b = replica(c.clone(), &ns.name, "replica-b");
        wait_for("a leader", || *a.leading.borrow() || *b.leading.borrow()).await;
        // Watch for a while: never both.
        for _ in 0..20 {
            assert!(
                !(*a.leading.borrow() && *b.leading.borrow()),
                "two leaders at once"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (leader, follower) = if *a.leading.borrow() { (a, b) } else { (b, a) };

        // A clean stop releases the Lease: the follower takes over well before expiry.
        leader.stop.send(true).expect("stop");
        leader.task.await.expect("leader task");
        wait_for("the follower to take over", || *follower.leading.borrow()).await;

        // A replica that vanishes without releasing (as after kill -9): a third one waits for
        // the Lease to expire, then leads.
        follower.task.abort();
        let _ = follower.task.await;
        let started = tokio::time::Instant::now();
        let c2 = replica(c.clone(), &ns.name, "replica-c");
        wait_for("replica-c to lead after expiry", || *c2.leading.borrow()).await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "took over an unexpired lease after {:?}",
            started.elapsed()
        );
        let lease = cp
            .get_json(&["-n", &ns.name, "lease", "karpenter-leader"])
            .expect("lease");
        assert_eq!(lease["spec"]["holderIdentity"], "replica-c");
        assert!(
            lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0) >= 2,
            "{lease}"
        );
        c2.stop.send(true).expect("stop");
        c2.task.await.expect("task");
        let lease = cp
            .get_json(&["-n", &ns.name, "lease", "karpenter-leader"])
            .expect("lease");
        assert!(
            lease["spec"].get("holderIdentity").is_none(),
            "released: {lease}"
        );
    });
}
