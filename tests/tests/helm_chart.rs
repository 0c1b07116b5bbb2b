#![forbid(unsafe_code)]
//! The Helm chart (`manifests/helm/karpenter/`) with the real helm: it lints; its CRDs are the
//! generated ones; the committed `manifests/rendered/` is what helm renders; every document
//! parses into its k8s-openapi type and back without losing a field; the Deployments' args and
//! env are flags the real binaries accept; the webhook configurations point at the Service, the
//! port and the paths the webhook serves, with a CA bundle that verifies its certificate; the
//! RBAC equals the API calls listed in `karpenter::runtime::rbac`, both ways; bad values fail
//! naming the value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karpenter::runtime::rbac::{self, Scope};
use karpenter_e2e::helm::{self, RELEASE};
use karpenter_e2e::{repo_root, Scratch};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn home() -> Scratch {
    Scratch::new("helm").expect("scratch folder")
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("helm's output is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn render(sets: &[&str]) -> Vec<Value> {
    let home = home();
    let mut all = vec!["clusterName=my-cluster"];
    all.extend_from_slice(sets);
    docs(&helm::template(&home.0, &all).unwrap_or_else(|e| panic!("{e}")))
}

fn committed() -> Vec<Value> {
    karpenter_e2e::yaml_documents(&helm::rendered_file()).expect("manifests/rendered parses")
}

fn of_kind<T: DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}: {d}")))
        .collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container(docs: &[Value], deployment: &str) -> Container {
    let d: Deployment = serde_json::from_value(named(docs, "Deployment", deployment).clone())
        .expect("a Deployment");
    let spec = d.spec.and_then(|s| s.template.spec).expect("a pod spec");
    assert_eq!(spec.containers.len(), 1, "{deployment}: one container");
    spec.containers.into_iter().next().expect("a container")
}

fn help(binary: &str) -> String {
    let out = std::process::Command::new(karpenter_e2e::binary(binary).expect("binary built"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{binary} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chart_crds_equal_the_generated_ones() {
    let chart = helm::chart_dir().join("crds");
    let generated = repo_root().join("manifests/crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&chart),
        names(&generated),
        "copy manifests/crds/* into the chart's crds/"
    );
    for name in names(&generated) {
        let a = std::fs::read_to_string(chart.join(&name)).expect("read");
        let b = std::fs::read_to_string(generated.join(&name)).expect("read");
        assert!(a == b, "crds/{name} differs from manifests/crds/{name}: cp manifests/crds/*.yaml manifests/helm/karpenter/crds/");
    }
}

#[test]
fn helm_lint_passes() {
    let home = home();
    let chart = helm::chart_dir().display().to_string();
    let out = helm::helm_ok(
        &home.0,
        None,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "clusterName=my-cluster",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn committed_rendering_is_what_helm_renders() {
    let home = home();
    let expected = helm::expected_rendering(&home.0).unwrap_or_else(|e| panic!("{e}"));
    let file = helm::rendered_file();
    let actual = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is stale: run `cargo run -p karpenter-e2e --bin render-manifests`",
        file.display()
    );
}

/// `1` and `1.0` compare equal: the typed form keeps JSON Schema bounds as floats.
fn numbers_as_floats(v: Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Number(n)),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Deserializes into `T` and serializes back: a misspelt or misplaced field is dropped by the
/// typed form and shows up as a difference.
fn round_trips<T: DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", doc["metadata"]["name"]));
    let back = numbers_as_floats(serde_json::to_value(&typed).expect("serialize"));
    let doc = &numbers_as_floats(doc.clone());
    assert_eq!(
        &back, doc,
        "{} {} lost or changed fields",
        doc["kind"], doc["metadata"]["name"]
    );
}

fn check_types(docs: &[Value]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "CustomResourceDefinition" => round_trips::<CustomResourceDefinition>(d),
            "ServiceAccount" => round_trips::<ServiceAccount>(d),
            "Secret" => round_trips::<Secret>(d),
            "ClusterRole" => round_trips::<ClusterRole>(d),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(d),
            "Role" => round_trips::<Role>(d),
            "RoleBinding" => round_trips::<RoleBinding>(d),
            "Service" => round_trips::<Service>(d),
            "Deployment" => round_trips::<Deployment>(d),
            "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(d),
            "MutatingWebhookConfiguration" => round_trips::<MutatingWebhookConfiguration>(d),
            "ValidatingWebhookConfiguration" => round_trips::<ValidatingWebhookConfiguration>(d),
            other => panic!("unexpected kind {other:?} in the rendering"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

#[test]
fn every_rendered_document_parses_into_its_type() {
    let kinds = check_types(&committed());
    let want: BTreeMap<String, usize> = [
        ("CustomResourceDefinition", 2),
        ("ServiceAccount", 2),
        ("Secret", 1),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 2),
        ("Deployment", 2),
        ("PodDisruptionBudget", 2),
        ("MutatingWebhookConfiguration", 1),
        ("ValidatingWebhookConfiguration", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, want);
    // Every namespaced object is in the release namespace.
    for d in committed() {
        let kind = d["kind"].as_str().unwrap_or_default();
        let cluster_scoped = matches!(
            kind,
            "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
        );
        assert_eq!(
            d["metadata"]["namespace"].as_str(),
            (!cluster_scoped).then_some(RELEASE),
            "{kind} {}",
            d["metadata"]["name"]
        );
    }
    // With every optional part on, too.
    check_types(&render(&[
        "serviceAccount.roleArn=arn:aws:iam::123456789012:role/karpenter",
        "clusterEndpoint=https://example.eks.amazonaws.com",
        "clusterCABundle=QUJD",
        "aws.region=eu-west-1",
        "aws.defaultInstanceProfile=KarpenterNodeInstanceProfile",
        "tolerations[0].key=CriticalAddonsOnly",
        "tolerations[0].operator=Exists",
        "imagePullSecrets[0].name=registry",
        "podAnnotations.a=b",
        "additionalLabels.team=platform",
    ]));
}

/// Flags (`--name`) and environment variables (`[env: NAME=`) a binary's `--help` lists, and
/// the possible values of its enum flags.
struct Help {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
    text: String,
}

fn parse_help(text: String) -> Help {
    let mut flags = BTreeSet::new();
    let mut env = BTreeSet::new();
    for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(f) = word.strip_prefix("--") {
            let f = f.split(['=', '<']).next().unwrap_or_default();
            if !f.is_empty() {
                flags.insert(f.to_string());
            }
        }
    }
    for part in text.split("[env: ").skip(1) {
        if let Some(name) = part.split('=').next() {
            env.insert(name.to_string());
        }
    }
    Help { flags, env, text }
}

/// Flags of our binaries that take one of a fixed set of values.
const ENUM_FLAGS: &[&str] = &["cloud-provider", "log-format", "cluster-autoscaler-guard"];

/// The possible values `--help` lists for `--flag` (`[possible values: a, b]`, or clap's long
/// form: a `Possible values:` list of `- a: ...` lines).
fn possible_values(text: &str, flag: &str) -> Vec<String> {
    let Some(rest) = text.split(&format!("--{flag} <")).nth(1) else {
        return Vec::new();
    };
    let mut section = Vec::new();
    for line in rest.lines().skip(1) {
        let t = line.trim_start();
        let is_flag = t.starts_with("--")
            || (t.len() > 3 && t.starts_with('-') && t.as_bytes().get(2) == Some(&b','));
        if is_flag {
            break;
        }
        section.push(t);
    }
    let joined = section.join("\n");
    if let Some(v) = joined.split("[possible values: ").nth(1) {
        return v
            .split(']')
            .next()
            .unwrap_or_default()
            .split(", ")
            .map(String::from)
            .collect();
    }
    section
        .iter()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(':').next())
        .map(|v| v.trim().to_string())
        .collect()
}

/// Checks every `--flag=value` of `c` against `help`; returns them as a map.
fn check_args(c: &Container, help: &Help) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for arg in c.args.as_deref().unwrap_or_default() {
        let (flag, value) = arg
            .strip_prefix("--")
            .and_then(|a| a.split_once('='))
            .unwrap_or_else(|| panic!("{}: {arg:?} is not --flag=value", c.name));
        assert!(
            help.flags.contains(flag),
            "{}: --{flag} is not a flag of the binary",
            c.name
        );
        assert!(
            seen.insert(flag.to_string(), value.to_string()).is_none(),
            "--{flag} twice"
        );
        // Enum flags: the value is one of the possible values listed for that flag.
        let values = possible_values(&help.text, flag);
        if ENUM_FLAGS.contains(&flag) {
            assert!(
                !values.is_empty(),
                "--{flag}: no possible values found in --help"
            );
        }
        if !values.is_empty() {
            assert!(
                values.iter().any(|v| v == value),
                "--{flag}={value}: not one of {values:?}"
            );
        }
    }
    for e in c.env.as_deref().unwrap_or_default() {
        assert!(
            help.env.contains(&e.name),
            "{}: env {} is not read by the binary",
            c.name,
            e.name
        );
    }
    seen
}

#[test]
fn deployment_args_and_env_are_flags_the_binaries_accept() {
    let controller_help = parse_help(help("karpenter-controller"));
    let webhook_help = parse_help(help("karpenter-webhook"));
    for sets in [
        vec![],
        vec![
            "clusterEndpoint=https://example.eks.amazonaws.com",
            "clusterCABundle=QUJD",
            "aws.region=eu-west-1",
            "aws.defaultInstanceProfile=KarpenterNodeInstanceProfile",
            "controller.cloudProvider=sim",
            "webhook.clusterAutoscalerGuard=warn",
            "logFormat=text",
        ],
    ] {
        let docs = render(&sets);
        let c = container(&docs, "karpenter-controller");
        let args = check_args(&c, &controller_help);
        assert_eq!(args["cluster-name"], "my-cluster");
        assert_eq!(args["leader-election-namespace"], RELEASE);
        let port = args["metrics-listen"].rsplit(':').next().expect("a port");
        let ports = c.ports.as_deref().unwrap_or_default();
        assert!(ports
            .iter()
            .any(|p| p.container_port.to_string() == port
                && p.name.as_deref() == Some("http-metrics")));
        let w = container(&docs, "karpenter-webhook");
        let wargs = check_args(&w, &webhook_help);
        let mounts = w.volume_mounts.as_deref().unwrap_or_default();
        for f in ["tls-cert-file", "tls-key-file"] {
            assert!(
                mounts
                    .iter()
                    .any(|m| wargs[f].starts_with(&format!("{}/", m.mount_path))),
                "--{f} is not on a mounted volume"
            );
        }
        if sets.is_empty() {
            assert!(
                !args.contains_key("cluster-endpoint"),
                "empty values are left out"
            );
        } else {
            assert_eq!(args["cluster-ca-bundle"], "QUJD");
            assert_eq!(args["cloud-provider"], "sim");
            assert_eq!(wargs["cluster-autoscaler-guard"], "warn");
        }
    }
}

fn clients(docs: &[Value]) -> Vec<(String, WebhookClientConfig)> {
    let mut out = Vec::new();
    for m in of_kind::<MutatingWebhookConfiguration>(docs, "MutatingWebhookConfiguration") {
        for w in m.webhooks.unwrap_or_default() {
            out.push((w.name, w.client_config));
        }
    }
    for v in of_kind::<ValidatingWebhookConfiguration>(docs, "ValidatingWebhookConfiguration") {
        for w in v.webhooks.unwrap_or_default() {
            out.push((w.name, w.client_config));
        }
    }
    out
}

#[test]
fn webhook_configurations_point_at_the_service_port_and_paths_the_webhook_serves() {
    let docs = render(&[]);
    let help = help("karpenter-webhook");
    let svc: Service = serde_json::from_value(named(&docs, "Service", "karpenter-webhook").clone())
        .expect("Service");
    let w = container(&docs, "karpenter-webhook");
    let listen_port = w
        .args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|a| a.strip_prefix("--listen="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<i32>().ok())
        .expect("--listen=HOST:PORT");
    let secret: Secret =
        serde_json::from_value(named(&docs, "Secret", "karpenter-webhook-cert").clone())
            .expect("Secret");
    let data = secret.data.expect("Secret data");
    let ca = data.get("ca.crt").expect("ca.crt").0.clone();
    let mut paths = BTreeSet::new();
    for (name, cc) in clients(&docs) {
        let s = cc
            .service
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: a service reference"));
        assert_eq!(Some(&s.name), svc.metadata.name.as_ref(), "{name}");
        assert_eq!(
            Some(&s.namespace),
            svc.metadata.namespace.as_ref(),
            "{name}"
        );
        let port = s.port.unwrap_or(443);
        assert_eq!(port, 443, "{name}");
        let spec = svc.spec.as_ref().expect("spec");
        let sp = spec
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.port == port)
            .unwrap_or_else(|| panic!("{name}: port {port} is not on the Service"));
        let target = match sp.target_port.clone() {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(t)) => t,
            other => panic!("named target port expected, got {other:?}"),
        };
        let cp = w
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(&target))
            .unwrap_or_else(|| panic!("no container port {target}"));
        assert_eq!(
            cp.container_port, listen_port,
            "the Service reaches --listen"
        );
        // The Service selects the webhook's pods.
        let d: Deployment =
            serde_json::from_value(named(&docs, "Deployment", "karpenter-webhook").clone())
                .expect("Deployment");
        let pod_labels = d
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (k, v) in spec.selector.clone().unwrap_or_default() {
            assert_eq!(pod_labels.get(&k), Some(&v), "Service selector {k}");
        }
        let path = s.path.clone().unwrap_or_default();
        assert!(
            help.contains(&format!("POST {path} ")),
            "{name}: {path} is not served"
        );
        assert_eq!(
            cc.ca_bundle.as_ref().map(|b| &b.0),
            Some(&ca),
            "{name}: caBundle is the Secret's CA"
        );
        paths.insert(path);
    }
    assert_eq!(
        paths,
        ["/default", "/validate", "/validate/deployments"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn the_generated_certificate_serves_the_service_name_and_verifies_against_the_ca_bundle() {
    karpenter_e2e::install_crypto();
    let docs = render(&[]);
    let secret: Secret =
        serde_json::from_value(named(&docs, "Secret", "karpenter-webhook-cert").clone())
            .expect("Secret");
    let data = secret.data.expect("data");
    let pem = |k: &str| String::from_utf8(data[k].0.clone()).expect("PEM");
    let pki = karpenter_e2e::TestPki {
        ca_pem: pem("ca.crt"),
        cert_pem: pem("tls.crt"),
        key_pem: pem("tls.key"),
    };
    // The real webhook serves the generated certificate; a client trusting only the caBundle
    // accepts it for the Service's DNS name, as the API server does.
    let hook = karpenter_e2e::Webhook::start(&pki)
        .expect("the webhook starts with the chart's certificate")
        .with_server_name("karpenter-webhook.karpenter.svc");
    let provisioner = serde_json::json!({
        "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
        "metadata": {"name": "default"}, "spec": {"providerRef": {"name": "default"}}
    });
    let (status, answer) = hook
        .post(
            "/validate",
            &karpenter_e2e::provisioner_review("u1", &provisioner),
        )
        .expect("TLS with the chart's CA");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["uid"], "u1");
    // Another name is refused: the check is real.
    let other = karpenter_e2e::Webhook::start(&pki)
        .expect("starts")
        .with_server_name("karpenter-webhook.other.svc");
    assert!(other
        .post(
            "/validate",
            &karpenter_e2e::provisioner_review("u2", &provisioner)
        )
        .is_err());
}

/// `(scope, group, resource, resourceName or "", verb)` for every permission of `rules`.
fn granted(rules: &[PolicyRule], scope: Scope) -> Vec<(Scope, String, String, String, String)> {
    let mut out = Vec::new();
    for r in rules {
        let names = r.resource_names.clone().unwrap_or_default();
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                for n in &names {
                    for v in &r.verbs {
                        assert_ne!(v, "*", "no wildcard verbs");
                        assert_ne!(res, "*", "no wildcard resources");
                        out.push((scope, g.clone(), res.clone(), n.clone(), v.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the chart grants the ServiceAccount `sa`, through its bindings.
fn grants_of(docs: &[Value], sa: &str) -> Vec<(Scope, String, String, String, String)> {
    let mut out = Vec::new();
    let subject_is = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(RELEASE)
        })
    };
    for b in of_kind::<ClusterRoleBinding>(docs, "ClusterRoleBinding") {
        if subject_is(&b.subjects) {
            assert_eq!(b.role_ref.kind, "ClusterRole");
            let role: ClusterRole =
                serde_json::from_value(named(docs, "ClusterRole", &b.role_ref.name).clone())
                    .expect("ClusterRole");
            out.extend(granted(&role.rules.unwrap_or_default(), Scope::Cluster));
        }
    }
    for b in of_kind::<RoleBinding>(docs, "RoleBinding") {
        if subject_is(&b.subjects) {
            assert_eq!(
                b.role_ref.kind, "Role",
                "no ClusterRole bound in the namespace"
            );
            let role: Role = serde_json::from_value(named(docs, "Role", &b.role_ref.name).clone())
                .expect("Role");
            out.extend(granted(
                &role.rules.unwrap_or_default(),
                Scope::ReleaseNamespace,
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn assert_same(
    name: &str,
    listed: &[(Scope, String, String, String, String)],
    chart: &[(Scope, String, String, String, String)],
) {
    let listed: BTreeSet<_> = listed.iter().collect();
    let chart: BTreeSet<_> = chart.iter().collect();
    let missing: Vec<_> = listed.difference(&chart).collect();
    let extra: Vec<_> = chart.difference(&listed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: the code calls but the chart does not grant {missing:?}; the chart grants but the code never calls {extra:?}"
    );
}

#[test]
fn rbac_grants_exactly_the_api_calls_the_code_makes() {
    let docs = committed();
    assert_same(
        "karpenter-controller",
        &rbac::permissions(rbac::CONTROLLER_API_CALLS),
        &grants_of(&docs, "karpenter-controller"),
    );
    assert_same(
        "karpenter-webhook",
        &rbac::permissions(rbac::WEBHOOK_API_CALLS),
        &grants_of(&docs, "karpenter-webhook"),
    );
    // The Role is in the leader-election namespace the controller is given.
    let role = named(&docs, "Role", "karpenter-controller");
    assert_eq!(role["metadata"]["namespace"], RELEASE);
    // With the guard off, the webhook gets nothing and no token.
    let off = render(&["webhook.clusterAutoscalerGuard=off"]);
    assert!(grants_of(&off, "karpenter-webhook").is_empty());
    let d = named(&off, "Deployment", "karpenter-webhook");
    assert_eq!(
        d["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    assert!(clients(&off)
        .iter()
        .all(|(_, c)| c.service.as_ref().and_then(|s| s.path.as_deref())
            != Some("/validate/deployments")));
}

#[test]
fn service_account_carries_the_irsa_role_from_values() {
    let arn = "arn:aws:iam::123456789012:role/karpenter-controller";
    let docs = render(&[&format!("serviceAccount.roleArn={arn}")]);
    let sa = named(&docs, "ServiceAccount", "karpenter-controller");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        arn
    );
    let webhook = named(&docs, "ServiceAccount", "karpenter-webhook");
    assert!(
        webhook["metadata"]["annotations"].is_null(),
        "the webhook gets no AWS role"
    );
    let none = committed();
    assert!(
        named(&none, "ServiceAccount", "karpenter-controller")["metadata"]["annotations"].is_null()
    );
}

#[test]
fn pods_stay_off_the_nodes_karpenter_manages() {
    let docs = committed();
    for name in ["karpenter-controller", "karpenter-webhook"] {
        let d = named(&docs, "Deployment", name);
        let terms = &d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        let terms = terms.as_array().expect("node selector terms");
        assert!(!terms.is_empty());
        // Every term (they are ORed) excludes Karpenter's nodes.
        for t in terms {
            assert!(
                t["matchExpressions"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| {
                        x["key"] == "karpenter.sh/provisioner-name"
                            && x["operator"] == "DoesNotExist"
                    })),
                "{name}: {t}"
            );
        }
    }
}

#[test]
fn service_monitors_scrape_both_metrics_ports_when_enabled() {
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.additionalLabels.release=prom",
    ]);
    let monitors: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceMonitor")
        .collect();
    assert_eq!(monitors.len(), 2);
    for m in monitors {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["metadata"]["labels"]["release"], "prom");
        let selector = m["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("selector");
        let svc = docs
            .iter()
            .find(|d| {
                d["kind"] == "Service"
                    && selector
                        .iter()
                        .all(|(k, v)| &d["metadata"]["labels"][k] == v)
            })
            .unwrap_or_else(|| panic!("no Service matches {selector:?}"));
        let port = m["spec"]["endpoints"][0]["port"].clone();
        assert!(svc["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == port)));
    }
    assert!(
        !committed().iter().any(|d| d["kind"] == "ServiceMonitor"),
        "off by default"
    );
}

/// Runs `helm template` with `sets` (no placeholder cluster name) and returns helm's error.
fn template_error(sets: &[&str]) -> String {
    let home = home();
    match helm::template(&home.0, sets) {
        Ok(_) => panic!("helm template {sets:?} succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_values_fail_naming_the_value() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "clusterName"),
        (&["clusterName=bad name"], "clusterName"),
        (
            &["clusterName=c", "serviceAccount.roleArn=karpenter-role"],
            "roleArn",
        ),
        (
            &[
                "clusterName=c",
                "serviceAccount.roleArn=arn:aws:iam::123:role/x",
            ],
            "roleArn",
        ),
        (
            &["clusterName=c", "webhook.clusterAutoscalerGuard=maybe"],
            "clusterAutoscalerGuard",
        ),
        (
            &["clusterName=c", "controller.batchIdleDuration=soon"],
            "batchIdleDuration",
        ),
        (&["clusterName=c", "controller.replicas=two"], "replicas"),
        (
            &["clusterName=c", "clusterEndpoint=http://plain"],
            "clusterEndpoint",
        ),
        (&["clusterName=c", "clusterNmae=typo"], "clusterNmae"),
        (
            &["clusterName=c", "webhook.tls.existingSecret=mine"],
            "webhook.tls.caBundle",
        ),
    ];
    for (sets, field) in cases {
        let err = template_error(sets);
        assert!(
            err.contains(field),
            "{sets:?}: the error does not name {field}:\n{err}"
        );
    }
}

#[test]
fn every_value_is_documented_and_in_the_schema() {
    let text = std::fs::read_to_string(helm::chart_dir().join("values.yaml")).expect("values.yaml");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(helm::chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("schema is JSON");
    let values: Value = serde_yaml::from_str(&text).expect("values.yaml is YAML");
    // Every leaf has a `# --` comment block above its line.
    let lines: Vec<&str> = text.lines().collect();
    fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m)
                if !m.is_empty()
                    && !path.ends_with("affinity")
                    && !path.ends_with("resources")
                    && !path.ends_with("nodeSelector") =>
            {
                for (k, c) in m {
                    leaves(
                        c,
                        if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        },
                        out,
                    );
                }
            }
            _ => out.push(path),
        }
    }
    let mut all = Vec::new();
    leaves(&values, String::new(), &mut all);
    assert!(all.len() > 30, "{all:?}");
    for path in &all {
        // The schema knows it.
        let mut node = &schema;
        for part in path.split('.') {
            let props = if let Some(r) = node["$ref"].as_str() {
                &schema["definitions"][r.trim_start_matches("#/definitions/")]["properties"]
            } else {
                &node["properties"]
            };
            node = &props[part];
            assert!(!node.is_null(), "values.schema.json has no {path}");
        }
        // values.yaml documents it: the line before the key (at the key's indentation) is a
        // `# --` comment or its continuation.
        let key = path.rsplit('.').next().expect("a key");
        let depth = path.matches('.').count();
        let at = lines
            .iter()
            .position(|l| {
                let t = l.trim_start();
                l.len() - t.len() == depth * 2 && t.starts_with(&format!("{key}:"))
            })
            .unwrap_or_else(|| panic!("{path} not found in values.yaml"));
        let mut i = at;
        let mut documented = false;
        while i > 0 && lines[i - 1].trim_start().starts_with('#') {
            i -= 1;
            documented |= lines[i].trim_start().starts_with("# --");
        }
        assert!(documented, "values.yaml: {path} has no `# --` comment");
    }
}

#[test]
fn an_existing_certificate_secret_replaces_the_generated_one() {
    let docs = render(&[
        "webhook.tls.existingSecret=my-webhook-cert",
        "webhook.tls.caBundle=QUJD",
    ]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no generated Secret"
    );
    let d = named(&docs, "Deployment", "karpenter-webhook");
    let volumes = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "my-webhook-cert"),
        "{volumes:?}"
    );
    let clients = clients(&docs);
    assert_eq!(clients.len(), 3);
    for (name, cc) in clients {
        assert_eq!(cc.ca_bundle.map(|b| b.0), Some(b"ABC".to_vec()), "{name}");
    }
}
