#![forbid(unsafe_code)]
//! `helm install` of the chart into the real control plane, then the real controller and
//! webhook, run outside the cluster with TokenRequest tokens of the chart's ServiceAccounts and
//! the args of the chart's Deployments, pass the guide's walkthrough: the chart's RBAC
//! suffices. The chart's own pods never run (the test cluster has no kubelet for them), but
//! kube-scheduler sees them, and they must never land on a node Karpenter made, nor make the
//! controller launch one for them.

use std::time::Duration;

use karpenter_e2e::controlplane::{ControlPlane, Options};
use karpenter_e2e::helm;
use serde_json::Value;

const NS: &str = helm::RELEASE;

/// The args of the chart's Deployment `name`'s only container.
fn deployment_args(cp: &ControlPlane, name: &str) -> Vec<String> {
    let d = cp
        .get_json(&["-n", NS, "deployment", name])
        .unwrap_or_else(|e| panic!("{e}"));
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a.starts_with(&format!("--{name}=")))
}

/// What `kubectl auth can-i` says for `kubeconfig`.
fn can_i(cp: &ControlPlane, kubeconfig: &std::path::Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = cp.kubectl_as(kubeconfig, &all, None).expect("kubectl");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn helm_install_then_the_walkthrough_under_the_charts_service_accounts() {
    karpenter_e2e::install_crypto();
    // The chart installs the CRDs itself.
    let cp = ControlPlane::start(
        Options::default()
            .controller_manager()
            .scheduler()
            .kwok()
            .without_crds(),
    )
    .expect("control plane");
    let home = karpenter_e2e::Scratch::new("helm-install").expect("scratch");
    let chart = helm::chart_dir().display().to_string();
    // Bad values fail `helm install` itself, naming the value.
    for (bad, field) in [
        (vec!["--set", "serviceAccount.roleArn=karpenter"], "roleArn"),
        (vec![], "clusterName"),
    ] {
        let mut args = vec![
            "install",
            helm::RELEASE,
            chart.as_str(),
            "--namespace",
            NS,
            "--create-namespace",
        ];
        if field != "clusterName" {
            args.extend(["--set", "clusterName=e2e"]);
        }
        args.extend(bad.iter().copied());
        let out = helm::helm(&home.0, Some(&cp.kubeconfig), &args).expect("run helm");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(field),
            "{args:?}: {err}"
        );
    }
    // No release and none of its objects (helm installs `crds/` before it renders the
    // templates, so the CRDs may already be there).
    let status = helm::helm(
        &home.0,
        Some(&cp.kubeconfig),
        &["status", helm::RELEASE, "-n", NS],
    )
    .expect("run helm");
    assert!(!status.status.success(), "a release was recorded");
    let left = cp
        .kubectl_ok(&["get", "deployments,serviceaccounts", "-A", "-o", "name"])
        .expect("kubectl");
    assert!(!left.contains("karpenter-"), "{left}");
    let started = std::time::Instant::now();
    let out = helm::helm_ok(
        &home.0,
        Some(&cp.kubeconfig),
        &[
            "install",
            helm::RELEASE,
            &chart,
            "--namespace",
            NS,
            "--create-namespace",
            "--set",
            "clusterName=e2e",
            "--set",
            "controller.cloudProvider=sim",
            "--set",
            "controller.batchIdleDuration=1s",
            "--set",
            "serviceAccount.roleArn=arn:aws:iam::123456789012:role/karpenter-e2e",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));
    eprintln!("helm install: {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("karpenter=controller"),
        "NOTES.txt is shown: {out}"
    );
    // What helm created is there, CRDs included.
    cp.kubectl_ok(&[
        "get",
        "crd",
        "provisioners.karpenter.sh",
        "awsnodetemplates.karpenter.k8s.aws",
    ])
    .expect("CRDs from the chart");
    cp.eventually("the CRDs to be served", Duration::from_secs(30), || {
        cp.kubectl(&["get", "provisioners"])
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    })
    .expect("served");
    let sa = cp
        .get_json(&["-n", NS, "serviceaccount", "karpenter-controller"])
        .expect("ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/karpenter-e2e"
    );
    // The generated certificate survives an upgrade (the chart looks its Secret up), and the
    // caBundle stays the CA that signed it.
    let cert = |cp: &ControlPlane| {
        let s = cp
            .get_json(&["-n", NS, "secret", "karpenter-webhook-cert"])
            .expect("Secret");
        let m = cp
            .get_json(&[
                "mutatingwebhookconfiguration",
                "defaulting.webhook.karpenter.sh",
            ])
            .expect("MutatingWebhookConfiguration");
        (
            s["data"]["tls.crt"].clone(),
            s["data"]["ca.crt"].clone(),
            m["webhooks"][0]["clientConfig"]["caBundle"].clone(),
        )
    };
    let before = cert(&cp);
    assert!(before.0.as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(before.1, before.2, "caBundle is the Secret's CA");
    helm::helm_ok(
        &home.0,
        Some(&cp.kubeconfig),
        &[
            "upgrade",
            helm::RELEASE,
            &chart,
            "--namespace",
            NS,
            "--reuse-values",
            "--set",
            "logLevel=debug",
        ],
    )
    .expect("helm upgrade");
    let args = deployment_args(&cp, "karpenter-controller");
    assert!(
        args.iter().any(|a| a == "--log-level=debug"),
        "the upgrade applied: {args:?}"
    );
    assert_eq!(
        cert(&cp),
        before,
        "helm upgrade kept the webhook's certificate"
    );
    let status = helm::helm_ok(
        &home.0,
        Some(&cp.kubeconfig),
        &["status", helm::RELEASE, "-n", NS],
    )
    .expect("helm status");
    assert!(status.contains("STATUS: deployed"), "{status}");

    // The webhook: the chart's args (less the addresses, files and logging the harness sets),
    // the chart's webhook ServiceAccount; the chart's webhook configurations re-pointed from the
    // Service (no pod behind it here) to it, nothing else changed.
    let webhook_kc = cp
        .service_account_kubeconfig(NS, "karpenter-webhook")
        .expect("webhook token");
    let wargs: Vec<String> = deployment_args(&cp, "karpenter-webhook")
        .into_iter()
        .filter(|a| {
            !["--listen=", "--admin-listen=", "--tls-", "--log-"]
                .iter()
                .any(|p| a.starts_with(p))
        })
        .collect();
    assert!(flag(&wargs, "cluster-autoscaler-guard"), "{wargs:?}");
    let wargs: Vec<&str> = wargs.iter().map(String::as_str).collect();
    let webhook = cp
        .start_webhook_as("karpenter-webhook", &webhook_kc, &wargs)
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &cp.pki.ca_pem);
    for (kind, name) in [
        (
            "mutatingwebhookconfiguration",
            "defaulting.webhook.karpenter.sh",
        ),
        (
            "validatingwebhookconfiguration",
            "validation.webhook.karpenter.sh",
        ),
        (
            "validatingwebhookconfiguration",
            "cluster-autoscaler-guard.webhook.karpenter.sh",
        ),
    ] {
        let cfg = cp.get_json(&[kind, name]).expect("installed by the chart");
        let hooks = cfg["webhooks"].as_array().expect("webhooks");
        let patch: Vec<Value> = hooks
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let svc = &h["clientConfig"]["service"];
                assert_eq!(svc["name"], "karpenter-webhook", "{name}");
                assert_eq!(svc["namespace"], NS, "{name}");
                let path = svc["path"].as_str().expect("path");
                serde_json::json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig"),
                    "value": {"url": format!("{}{path}", webhook.base_url), "caBundle": ca}})
            })
            .collect();
        cp.kubectl_ok(&[
            "patch",
            kind,
            name,
            "--type=json",
            "-p",
            &Value::Array(patch).to_string(),
        ])
        .expect("re-point the webhook");
    }
    let probe = "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata:\n  name: probe\nspec:\n  providerRef:\n    name: default\n";
    cp.eventually(
        "the chart's webhooks to call ours",
        Duration::from_secs(30),
        || {
            let out = cp
                .kubectl_as(
                    &cp.kubeconfig,
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(probe),
                )
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("karpenter.sh/capacity-type")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));
    // The guard's watchers synced under the chart's ClusterRole.
    let wlog = std::fs::read_to_string(cp.dir.join("karpenter-webhook.log")).unwrap_or_default();
    assert!(!wlog.to_lowercase().contains("forbidden"), "{wlog}");

    // The controller: the chart's args with a loopback metrics address, the chart's controller
    // ServiceAccount (leader election on, in the release namespace).
    let controller_kc = cp
        .service_account_kubeconfig(NS, "karpenter-controller")
        .expect("controller token");
    let cargs: Vec<String> = deployment_args(&cp, "karpenter-controller")
        .into_iter()
        .map(|a| {
            if a.starts_with("--metrics-listen=") {
                "--metrics-listen=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .chain([format!("--kubeconfig={}", controller_kc.display())])
        .collect();
    assert!(
        cargs.iter().any(|a| a == "--cloud-provider=sim"),
        "{cargs:?}"
    );
    assert!(
        cargs
            .iter()
            .any(|a| a == &format!("--leader-election-namespace={NS}")),
        "{cargs:?}"
    );
    assert!(!cargs.iter().any(|a| a == "--no-leader-election"));
    let cargs: Vec<&str> = cargs.iter().map(String::as_str).collect();
    cp.start_component(
        "karpenter-controller",
        &karpenter_e2e::binary("karpenter-controller").expect("controller built"),
        &cargs,
    )
    .expect("controller starts");
    let lease = cp
        .eventually(
            "the controller to take the Lease",
            Duration::from_secs(60),
            || {
                let l = cp
                    .get_json(&[
                        "-n",
                        NS,
                        "lease",
                        karpenter::runtime::rbac::LEADER_ELECTION_LEASE,
                    ])
                    .ok()?;
                l["spec"]["holderIdentity"].as_str().map(str::to_string)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(40)));
    eprintln!("leader: {lease}");

    let report = karpenter_e2e::walkthrough::run(&cp, "karpenter-controller")
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.logs(80)));
    eprintln!(
        "walkthrough under the chart's RBAC: 10 pods Running on {} node(s) in {:.1} s; nodes gone {:.1} s after the delete",
        report.nodes,
        report.scale_up.as_secs_f64(),
        report.scale_down.as_secs_f64()
    );
    let clog = std::fs::read_to_string(cp.dir.join("karpenter-controller.log")).unwrap_or_default();
    assert!(
        !clog.to_lowercase().contains("forbidden"),
        "a call the ClusterRole does not allow:\n{clog}"
    );

    // The controller saw the chart's own pending pods and refused to launch for them: their
    // affinity excludes every node a Provisioner makes.
    let refused = clog
        .lines()
        .find(|l| l.contains(&format!("Could not schedule pod {NS}/karpenter-")))
        .unwrap_or_else(|| panic!("the chart's pods were not considered:\n{clog}"));
    assert!(
        refused.contains("karpenter.sh/provisioner-name"),
        "{refused}"
    );
    // The chart's own pods exist (kube-controller-manager made them), never ran on a node
    // Karpenter made, and were no reason to launch one: the walkthrough's nodes were all gone.
    let pods = cp.get_json(&["-n", NS, "pods"]).expect("pods");
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    // 2 controller + 2 webhook replicas, plus those of the upgrade's stuck rollout.
    assert!(pods.len() >= 4, "{} pods", pods.len());
    for p in &pods {
        assert!(
            p["spec"]["nodeName"].is_null(),
            "a chart pod was scheduled: {p}"
        );
    }
    assert!(karpenter_e2e::walkthrough::karpenter_nodes(&cp).is_empty());

    // The tokens carry only the chart's rules.
    assert!(can_i(&cp, &controller_kc, &["create", "nodes"]));
    assert!(can_i(
        &cp,
        &controller_kc,
        &["create", "pods", "--subresource=eviction", "-n", "default"]
    ));
    assert!(!can_i(&cp, &controller_kc, &["get", "secrets", "-n", NS]));
    assert!(!can_i(
        &cp,
        &controller_kc,
        &["delete", "pods", "-n", "default"]
    ));
    assert!(!can_i(
        &cp,
        &controller_kc,
        &["update", "leases/other", "-n", NS]
    ));
    assert!(!can_i(
        &cp,
        &controller_kc,
        &["create", "leases", "-n", "default"]
    ));
    assert!(!can_i(&cp, &webhook_kc, &["list", "configmaps", "-A"]));
    assert!(can_i(
        &cp,
        &webhook_kc,
        &["list", "configmaps/cluster-autoscaler-status", "-A"]
    ));
    assert!(!can_i(&cp, &webhook_kc, &["create", "provisioners"]));

    // helm uninstall removes the release and keeps the CRDs (and so every Provisioner).
    cp.stop_component("karpenter-controller");
    cp.stop_component("karpenter-webhook");
    helm::helm_ok(
        &home.0,
        Some(&cp.kubeconfig),
        &["uninstall", helm::RELEASE, "-n", NS],
    )
    .expect("helm uninstall");
    let left = cp
        .kubectl_ok(&[
            "-n",
            NS,
            "get",
            "deployments,serviceaccounts,roles",
            "-o",
            "name",
        ])
        .expect("kubectl");
    assert!(!left.contains("karpenter-"), "{left}");
    cp.kubectl_ok(&["get", "crd", "provisioners.karpenter.sh"])
        .expect("CRDs stay");
}

/// The README's plain `kubectl apply` install, run as written (bash, openssl, sed, the real
/// kubectl) against a fresh API server: the committed rendering, filled with a certificate, is
/// accepted, and the webhook configurations carry that certificate.
#[test]
fn kubectl_apply_of_the_rendering_filled_as_the_readme_says() {
    let readme =
        std::fs::read_to_string(karpenter_e2e::repo_root().join("README.md")).expect("README");
    let section = readme
        .split("**Plain `kubectl apply`**")
        .nth(1)
        .expect("the README's kubectl apply install");
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its sh block");
    assert!(
        script.contains("kubectl apply -f karpenter.yaml"),
        "{script}"
    );
    let cp = ControlPlane::start(Options::default().without_crds()).expect("control plane");
    let work = karpenter_e2e::Scratch::new("kubectl-apply").expect("scratch");
    std::os::unix::fs::symlink(
        karpenter_e2e::repo_root().join("manifests"),
        work.0.join("manifests"),
    )
    .expect("symlink manifests");
    let bins = karpenter_e2e::controlplane::component_dir().expect("components");
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("CLUSTER=e2e\n{script}")])
        .current_dir(&work.0)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the README's commands failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let crt = std::fs::read(work.0.join("tls.crt")).expect("tls.crt");
    let crt_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &crt);
    // The certificate is valid for the Service's DNS name and is its own trust anchor.
    let check = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkhost",
            "karpenter-webhook.karpenter.svc",
            "-in",
            "tls.crt",
        ])
        .current_dir(&work.0)
        .output()
        .expect("openssl");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("does match"),
        "{check:?}"
    );
    let secret = cp
        .get_json(&["-n", NS, "secret", "karpenter-webhook-cert"])
        .expect("Secret");
    assert_eq!(secret["data"]["tls.crt"], crt_b64.as_str());
    assert!(secret["data"]["tls.key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    for (kind, name) in [
        (
            "mutatingwebhookconfiguration",
            "defaulting.webhook.karpenter.sh",
        ),
        (
            "validatingwebhookconfiguration",
            "validation.webhook.karpenter.sh",
        ),
        (
            "validatingwebhookconfiguration",
            "cluster-autoscaler-guard.webhook.karpenter.sh",
        ),
    ] {
        let cfg = cp.get_json(&[kind, name]).expect("applied");
        for h in cfg["webhooks"].as_array().expect("webhooks") {
            assert_eq!(h["clientConfig"]["caBundle"], crt_b64.as_str(), "{name}");
        }
    }
    let args = deployment_args(&cp, "karpenter-controller");
    assert!(args.iter().any(|a| a == "--cluster-name=e2e"), "{args:?}");
    cp.kubectl_ok(&["get", "crd", "provisioners.karpenter.sh"])
        .expect("CRDs applied");
}
