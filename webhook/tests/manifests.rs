#![forbid(unsafe_code)]
//! The manifests in `manifests/webhook/` parse into k8s-openapi types and point at the paths
//! and ports the binary serves.

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karpenter_webhook::admin::{HEALTHZ_PATH, READYZ_PATH};
use karpenter_webhook::{
    Args, DEFAULT_ADMIN_PORT, DEFAULT_PATH, DEFAULT_TLS_PORT, VALIDATE_DEPLOYMENTS_PATH,
    VALIDATE_PATH,
};
use serde::Deserialize;

fn documents(name: &str) -> Vec<serde_yaml::Value> {
    let path = format!("{}/../manifests/webhook/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .map(|d| serde_yaml::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

fn service() -> Service {
    let mut s: Vec<Service> = of_kind(&documents("service.yaml"), "Service");
    assert_eq!(s.len(), 1);
    s.remove(0)
}

/// Checks a webhook's client config against the Service, returning its path.
fn check_client(c: &WebhookClientConfig, svc: &Service) -> String {
    let s = c.service.as_ref().expect("a service reference");
    assert_eq!(Some(&s.name), svc.metadata.name.as_ref());
    assert_eq!(Some(&s.namespace), svc.metadata.namespace.as_ref());
    let port = s.port.unwrap_or(443);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .expect("ports");
    let target = ports
        .iter()
        .find(|p| p.port == port)
        .and_then(|p| p.target_port.clone())
        .expect("the webhook port is on the Service");
    // The target is named; the Deployment maps the name to the binary's port (checked below).
    assert_eq!(target, IntOrString::String("https-webhook".into()));
    assert!(c.url.is_none());
    s.path.clone().expect("a path")
}

fn check_common(versions: &[String], side_effects: &str, timeout: Option<i32>) {
    assert_eq!(versions, ["v1"]);
    assert_eq!(side_effects, "None");
    assert!(timeout.is_some_and(|t| (1..=5).contains(&t)), "{timeout:?}");
}

fn covers(rules: &[RuleWithOperations], group: &str, resource: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_ref()
            .is_some_and(|g| g.iter().any(|x| x == group))
            && r.resources
                .as_ref()
                .is_some_and(|x| x.iter().any(|x| x == resource))
            && r.operations
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "CREATE") && o.iter().any(|x| x == "UPDATE"))
    })
}

#[test]
fn mutating_webhook_points_at_the_defaulting_path() {
    let svc = service();
    let docs = documents("webhooks.yaml");
    let m: Vec<MutatingWebhookConfiguration> = of_kind(&docs, "MutatingWebhookConfiguration");
    assert_eq!(m.len(), 1);
    let hooks = m[0].webhooks.as_ref().expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    check_common(
        &h.admission_review_versions,
        &h.side_effects,
        h.timeout_seconds,
    );
    assert_eq!(h.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(check_client(&h.client_config, &svc), DEFAULT_PATH);
    let rules = h.rules.as_deref().unwrap_or_default();
    assert!(covers(rules, "karpenter.sh", "provisioners"));
}

#[test]
fn validating_webhooks_point_at_the_validation_paths() {
    let svc = service();
    let docs = documents("webhooks.yaml");
    let v: Vec<ValidatingWebhookConfiguration> = of_kind(&docs, "ValidatingWebhookConfiguration");
    let hooks: Vec<_> = v
        .iter()
        .flat_map(|c| c.webhooks.clone().unwrap_or_default())
        .collect();
    assert_eq!(hooks.len(), 2);
    let mut paths = Vec::new();
    for h in &hooks {
        check_common(
            &h.admission_review_versions,
            &h.side_effects,
            h.timeout_seconds,
        );
        let path = check_client(&h.client_config, &svc);
        let rules = h.rules.as_deref().unwrap_or_default();
        if path == VALIDATE_PATH {
            assert_eq!(h.failure_policy.as_deref(), Some("Fail"));
            assert!(covers(rules, "karpenter.sh", "provisioners"));
            assert!(covers(rules, "karpenter.k8s.aws", "awsnodetemplates"));
        } else {
            assert_eq!(path, VALIDATE_DEPLOYMENTS_PATH);
            assert_eq!(h.failure_policy.as_deref(), Some("Ignore"));
            assert!(covers(rules, "apps", "deployments"));
            assert!(covers(rules, "apps", "deployments/scale"));
            let conditions = h.match_conditions.as_deref().unwrap_or_default();
            assert!(
                conditions
                    .iter()
                    .any(|c| c.expression.contains("cluster-autoscaler")),
                "the Deployment rule must be narrowed by matchConditions"
            );
        }
        paths.push(path);
    }
    paths.sort();
    assert_eq!(paths, [VALIDATE_PATH, VALIDATE_DEPLOYMENTS_PATH]);
}

#[test]
fn service_and_deployment_match_the_binary() {
    let svc = service();
    let ports = svc.spec.and_then(|s| s.ports).expect("ports");
    assert!(ports.iter().any(|p| p.port == 443));
    let docs = documents("deployment.yaml");
    let d: Vec<Deployment> = of_kind(&docs, "Deployment");
    assert_eq!(d.len(), 1);
    let pod = d[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let c = &pod.containers[0];
    let port_of = |name: &str| {
        c.ports
            .as_ref()
            .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some(name)))
            .map(|p| p.container_port)
    };
    assert_eq!(port_of("https-webhook"), Some(i32::from(DEFAULT_TLS_PORT)));
    assert_eq!(port_of("http-metrics"), Some(i32::from(DEFAULT_ADMIN_PORT)));
    // The container's arguments are accepted by the binary and agree with the ports.
    let args = c.args.clone().unwrap_or_default();
    let parsed = Args::try_parse_from(std::iter::once("karpenter-webhook".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("container args rejected: {e}"));
    assert_eq!(parsed.server.listen.port(), DEFAULT_TLS_PORT);
    assert_eq!(parsed.admin.admin_listen.port(), DEFAULT_ADMIN_PORT);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some(READYZ_PATH));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some(HEALTHZ_PATH));
    // Every Service target port name exists on the container.
    for p in &ports {
        if let Some(IntOrString::String(name)) = &p.target_port {
            assert!(port_of(name).is_some(), "{name}");
        }
    }
}
