#![forbid(unsafe_code)]
//! The harness's own tests: the real control plane behaves as the controller will rely on
//! (watches resume from a resourceVersion, finalizers hold deletes, the Eviction API honours
//! PodDisruptionBudgets, the Binding subresource binds, kube-scheduler marks pods
//! Unschedulable, kwok runs pods on the nodes we create, kube-controller-manager runs
//! Deployments), and it can mint restricted credentials.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use karpenter_e2e::controlplane::{ControlPlane, Options, KWOK_NODE_LABEL};
use kube::api::{
    Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

fn cp() -> &'static ControlPlane {
    karpenter_e2e::install_crypto();
    ControlPlane::shared(Options::default().controller_manager().scheduler().kwok())
}

async fn client(kubeconfig: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    // kube-rs retries 429 answers by default (up to 15 times, honouring Retry-After), which
    // would hide the Eviction API's "PDB allows no disruption" answer for minutes.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A kwok node with `cpu` CPUs.
fn kwok_node(cp: &ControlPlane, name: &str, cpu: u32) {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            KWOK_NODE_LABEL.0: KWOK_NODE_LABEL.1, "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "status": {
            "capacity": {"cpu": cpu.to_string(), "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": cpu.to_string(), "memory": "16Gi", "pods": "110"}}
    });
    let out = cp.apply(&node.to_string()).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_json(ns: &str, name: &str, extra_spec: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m"}}}],
        "tolerations": [{"operator": "Exists"}]
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}}, "spec": spec})
}

#[test]
fn version_is_the_pinned_release() {
    let cp = cp();
    let version = cp
        .kubectl_ok(&["version", "-o", "json"])
        .expect("kubectl version");
    let v: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.36.3", "{v}");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.36.3", "{v}");
    assert_eq!(v["serverVersion"]["minor"], "36", "{v}");
    eprintln!("control-plane start-up: {:.1} s", cp.startup.as_secs_f64());
}

#[test]
fn a_watch_delivers_events_after_a_resource_version() {
    let cp = cp();
    let ns = cp.namespace("watch").expect("namespace");
    runtime().block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cp.kubeconfig).await, &ns.name);
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "w"}, "data": {"n": "0"}}))
                .expect("cm");
        let created = api
            .create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let rv = created
            .metadata
            .resource_version
            .clone()
            .expect("resourceVersion");
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": "1"}})),
        )
        .await
        .expect("patch");
        // Watching from the creation's resourceVersion replays the later change only.
        let mut stream = api
            .watch(&WatchParams::default().timeout(20), &rv)
            .await
            .expect("watch")
            .boxed();
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event");
        match event {
            WatchEvent::Modified(cm) => {
                assert_eq!(
                    cm.data.unwrap_or_default().get("n").map(String::as_str),
                    Some("1")
                )
            }
            other => panic!("expected Modified, got {other:?}"),
        }
    });
}

#[test]
fn a_finalizer_keeps_a_deleted_object_until_it_is_removed() {
    let cp = cp();
    let ns = cp.namespace("finalizer").expect("namespace");
    runtime().block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&cp.kubeconfig).await, &ns.name);
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "f", "finalizers": ["karpenter.sh/termination"]}}))
        .expect("cm");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        api.delete("f", &DeleteParams::default())
            .await
            .expect("delete");
        let held = api.get("f").await.expect("still there");
        assert!(
            held.metadata.deletion_timestamp.is_some(),
            "deletion is pending"
        );
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove finalizer");
        let gone = api.get_opt("f").await.expect("get");
        assert!(gone.is_none(), "removed once the finalizer is gone");
    });
}

#[test]
fn the_binding_subresource_binds_and_the_scheduler_reports_unschedulable() {
    let cp = cp();
    let ns = cp.namespace("binding").expect("namespace");
    kwok_node(cp, "kwok-binding", 4);
    runtime().block_on(async {
        let api: Api<Pod> = Api::namespaced(client(&cp.kubeconfig).await, &ns.name);
        // A pod no scheduler handles, bound by us.
        let pod: Pod = serde_json::from_value(pod_json(&ns.name, "bind-me", json!({"schedulerName": "nobody"})))
            .expect("pod");
        api.create(&PostParams::default(), &pod).await.expect("create");
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
                             "metadata": {"name": "bind-me"},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": "kwok-binding"}});
        let _: serde_json::Value = api
            .create_subresource("binding", "bind-me", &PostParams::default(), &binding)
            .await
            .expect("bind");
        let bound = api.get("bind-me").await.expect("get");
        assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("kwok-binding"));
        // kwok, as the node's kubelet, runs it.
        let mut running = false;
        for _ in 0..100 {
            let p = api.get("bind-me").await.expect("get");
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                running = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(running, "kwok runs the bound pod\n{}", cp.logs(30));

        // A pod that fits nowhere: kube-scheduler says so.
        let pod: Pod = serde_json::from_value(pod_json(
            &ns.name,
            "too-big",
            json!({"nodeSelector": {"example.com/none": "x"}}),
        ))
        .expect("pod");
        api.create(&PostParams::default(), &pod).await.expect("create");
        let mut reason = None;
        for _ in 0..100 {
            let p = api.get("too-big").await.expect("get");
            reason = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| c.reason);
            if reason.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(reason.as_deref(), Some("Unschedulable"), "{}", cp.logs(30));
    });
    cp.kubectl_ok(&["delete", "node", "kwok-binding", "--wait=false"])
        .expect("delete node");
}

#[test]
fn eviction_under_a_pdb_with_no_disruptions_left_is_429() {
    let cp = cp();
    let ns = cp.namespace("evict").expect("namespace");
    kwok_node(cp, "kwok-evict", 4);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "guard", "namespace": ns.name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}});
    let out = cp.apply(&pdb.to_string()).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pod = pod_json(&ns.name, "guarded", json!({"nodeName": "kwok-evict"}));
    pod["metadata"]["labels"]["app"] = json!("guarded");
    let out = cp.apply(&pod.to_string()).expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The disruption controller sees one healthy pod of one required: nothing may go.
    cp.eventually(
        "the PDB to count the running pod",
        Duration::from_secs(60),
        || {
            let v = cp.get_json(&["-n", &ns.name, "pdb", "guard"]).ok()?;
            (v.pointer("/status/currentHealthy") == Some(&json!(1))
                && v.pointer("/status/disruptionsAllowed") == Some(&json!(0)))
            .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(30)));
    runtime().block_on(async {
        let api: Api<Pod> = Api::namespaced(client(&cp.kubeconfig).await, &ns.name);
        match api.evict("guarded", &EvictParams::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 429, "{status:?}"),
            other => panic!("eviction must be refused with 429, got {other:?}"),
        }
        // Relax the budget: the eviction goes through and kwok removes the pod.
        let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            Api::namespaced(api.clone().into_client(), &ns.name);
        pdbs.patch(
            "guard",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minAvailable": 0}})),
        )
        .await
        .expect("relax");
        let mut evicted = false;
        for _ in 0..150 {
            if api.evict("guarded", &EvictParams::default()).await.is_ok() {
                evicted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(evicted, "eviction allowed once the PDB permits it");
        let mut gone = false;
        for _ in 0..100 {
            if api.get_opt("guarded").await.expect("get").is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(gone, "the evicted pod is removed by its (kwok) kubelet");
    });
    cp.kubectl_ok(&["delete", "node", "kwok-evict", "--wait=false"])
        .expect("delete node");
}

#[test]
fn a_deployment_becomes_running_pods_on_kwok_nodes() {
    let cp = cp();
    let ns = cp.namespace("deploy").expect("namespace");
    kwok_node(cp, "kwok-deploy", 8);
    cp.kubectl_ok(&[
        "-n",
        &ns.name,
        "create",
        "deployment",
        "inflate",
        "--image=public.ecr.aws/eks-distro/kubernetes/pause:3.2",
        "--replicas=3",
    ])
    .expect("create deployment");
    let ready = cp.eventually("3 ready replicas", Duration::from_secs(90), || {
        let v = cp
            .get_json(&["-n", &ns.name, "deployment", "inflate"])
            .ok()?;
        (v.pointer("/status/readyReplicas") == Some(&json!(3))).then_some(v)
    });
    assert!(ready.is_ok(), "{ready:?}\n{}", cp.logs(40));
    cp.kubectl_ok(&["delete", "node", "kwok-deploy", "--wait=false"])
        .expect("delete node");
}

#[test]
fn minted_credentials_carry_only_their_rules() {
    let cp = cp();
    let ns = cp.namespace("rbac").expect("namespace");
    let reader = cp
        .user_kubeconfig(
            "node-reader",
            "- apiGroups: [\"\"]\n  resources: [nodes]\n  verbs: [get, list]",
        )
        .expect("user");
    let can = |kc: &std::path::Path, verb: &str, what: &str| {
        let out = cp
            .kubectl_as(kc, &["auth", "can-i", verb, what], None)
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can(&reader, "list", "nodes"));
    assert!(!can(&reader, "delete", "nodes"));
    assert!(!can(&reader, "list", "pods"));
    let sa = cp
        .service_account_kubeconfig(&ns.name, "robot")
        .expect("sa kubeconfig");
    let who = cp
        .kubectl_as(
            &sa,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&who.stdout).trim(),
        format!("system:serviceaccount:{}:robot", ns.name)
    );
    assert!(
        !can(&sa, "list", "nodes"),
        "a fresh ServiceAccount has no node access"
    );
}
