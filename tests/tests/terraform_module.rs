#![forbid(unsafe_code)]
//! The Terraform module (`manifests/terraform/`), parsed with `hcl-rs`: the guide's inputs with
//! their defaults, its outputs, the IRSA module at its pinned version, the resource addresses;
//! the controller policy is `manifests/iam/controller-policy.json` filled by `templatefile`
//! with exactly its two parameters; the Helm release installs our chart with values the chart's
//! schema knows, and the IRSA subject is the chart's controller ServiceAccount.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::{Block, Body, Expression};
use karpenter_e2e::repo_root;
use serde_json::Value;

fn module_dir() -> PathBuf {
    repo_root().join("manifests/terraform")
}

/// Every `.tf` file of the module, parsed.
fn files() -> Vec<(String, Body)> {
    let mut out = Vec::new();
    let dir = module_dir();
    for entry in std::fs::read_dir(&dir).expect("manifests/terraform") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).expect("read");
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                body,
            ));
        }
    }
    assert!(out.len() >= 4, "main, variables, outputs, versions");
    out
}

fn blocks(kind: &str) -> Vec<Block> {
    files()
        .into_iter()
        .flat_map(|(_, b)| b.into_blocks())
        .filter(|b| b.identifier() == kind)
        .collect()
}

fn labels(b: &Block) -> Vec<String> {
    b.labels().iter().map(|l| l.as_str().to_string()).collect()
}

fn attr<'a>(b: &'a Block, key: &str) -> Option<&'a Expression> {
    b.body()
        .attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
}

fn one(kind: &str, name: &[&str]) -> Block {
    blocks(kind)
        .into_iter()
        .find(|b| labels(b) == name)
        .unwrap_or_else(|| panic!("no {kind} {name:?}"))
}

#[test]
fn inputs_and_defaults_are_the_guides() {
    let want: BTreeMap<&str, Option<Value>> = [
        ("cluster_name", None),
        ("cluster_endpoint", Some(Value::from(""))),
        ("helm_create_namespace", Some(Value::from(true))),
        ("helm_name", Some(Value::from("karpenter"))),
        ("helm_namespace", Some(Value::from("karpenter"))),
        ("iam_path", Some(Value::from(""))),
        ("permissions_boundary", Some(Value::from(""))),
        ("provider_url", Some(Value::from(""))),
        ("worker_iam_role_name", Some(Value::from(""))),
    ]
    .into_iter()
    .collect();
    let mut got = BTreeMap::new();
    for v in blocks("variable") {
        let name = labels(&v).join(".");
        let default = attr(&v, "default").map(|e| match e {
            Expression::String(s) => Value::from(s.as_str()),
            Expression::Bool(b) => Value::from(*b),
            other => panic!("variable {name}: unexpected default {other}"),
        });
        assert!(
            attr(&v, "description").is_some(),
            "variable {name} has no description"
        );
        assert!(attr(&v, "type").is_some(), "variable {name} has no type");
        got.insert(name, default);
    }
    let got: BTreeMap<&str, Option<Value>> =
        got.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert_eq!(got, want);
}

#[test]
fn outputs_are_the_guides() {
    let names: BTreeSet<String> = blocks("output")
        .iter()
        .map(|b| labels(b).join("."))
        .collect();
    assert_eq!(
        names,
        ["hr_manifest", "karpenter_iam"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let hr = one("output", &["hr_manifest"]);
    assert_eq!(
        attr(&hr, "value").map(|e| e.to_string()).as_deref(),
        Some("helm_release.karpenter.manifest")
    );
    let iam = attr(&one("output", &["karpenter_iam"]), "value")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        iam.contains("aws_iam_policy.karpenter_contoller.policy"),
        "{iam}"
    );
}

#[test]
fn module_and_resource_addresses_are_the_guides() {
    let m = one("module", &["iam_assumable_role_karpenter"]);
    assert_eq!(
        attr(&m, "source"),
        Some(&Expression::String(
            "terraform-aws-modules/iam/aws//modules/iam-assumable-role-with-oidc".into()
        ))
    );
    assert_eq!(
        attr(&m, "version"),
        Some(&Expression::String("4.7.0".into()))
    );
    assert_eq!(blocks("module").len(), 1);
    let resources: BTreeSet<String> = blocks("resource")
        .iter()
        .map(|b| labels(b).join("."))
        .collect();
    let want: BTreeSet<String> = [
        "aws_iam_instance_profile.karpenter",
        "aws_iam_policy.karpenter_contoller",
        "aws_iam_policy.ssm_managed_instance",
        "aws_iam_role_policy_attachment.karpenter_contoller_policy_attachment",
        "aws_iam_role_policy_attachment.karpenter_ssm_policy",
        "helm_release.karpenter",
    ]
    .map(String::from)
    .into_iter()
    .collect();
    assert_eq!(resources, want);
    let data: BTreeSet<String> = blocks("data").iter().map(|b| labels(b).join(".")).collect();
    assert_eq!(
        data,
        ["aws_eks_cluster.cluster".to_string()]
            .into_iter()
            .collect()
    );
    // The attachments attach what their names say.
    let a = one(
        "resource",
        &[
            "aws_iam_role_policy_attachment",
            "karpenter_contoller_policy_attachment",
        ],
    );
    assert_eq!(
        attr(&a, "policy_arn").map(|e| e.to_string()).as_deref(),
        Some("aws_iam_policy.karpenter_contoller.arn")
    );
    assert_eq!(
        attr(&a, "role").map(|e| e.to_string()).as_deref(),
        Some("module.iam_assumable_role_karpenter.iam_role_name")
    );
    let s = one(
        "resource",
        &["aws_iam_role_policy_attachment", "karpenter_ssm_policy"],
    );
    assert_eq!(
        attr(&s, "policy_arn").map(|e| e.to_string()).as_deref(),
        Some("aws_iam_policy.ssm_managed_instance.arn")
    );
    assert_eq!(
        attr(&s, "role").map(|e| e.to_string()).as_deref(),
        Some("var.worker_iam_role_name")
    );
}

/// `"${path.module}/REL"` as a path inside the module folder.
fn module_path(e: &Expression) -> PathBuf {
    let text = e.to_string();
    let rel = text
        .trim_matches('"')
        .strip_prefix("${path.module}/")
        .unwrap_or_else(|| panic!("{text}: not relative to path.module"));
    module_dir().join(rel)
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn controller_policy_is_the_committed_one_with_its_two_parameters() {
    let policy = one("resource", &["aws_iam_policy", "karpenter_contoller"]);
    let Some(Expression::FuncCall(call)) = attr(&policy, "policy") else {
        panic!("policy is not a function call");
    };
    assert_eq!(call.name.name.as_str(), "templatefile");
    assert_eq!(call.args.len(), 2);
    let file = module_path(&call.args[0]);
    assert_eq!(
        canonical(&file),
        canonical(&repo_root().join("manifests/iam/controller-policy.json"))
    );
    let Expression::Object(vars) = &call.args[1] else {
        panic!("templatefile's variables are not an object");
    };
    let names: BTreeSet<String> = vars.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        ["cluster_name", "node_role_arn"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    // The template uses exactly those parameters and nothing else Terraform would interpolate.
    let text = std::fs::read_to_string(&file).expect("policy");
    let used: BTreeSet<String> = text
        .split("${")
        .skip(1)
        .filter_map(|s| s.split('}').next())
        .map(String::from)
        .collect();
    assert_eq!(used, names);
    assert!(!text.contains("%{"), "no template directives");
    // Filled, it is the JSON the AWS provider's action list is tested against.
    let rendered = karpenter::cloud::iam::render_policy(
        "my-cluster",
        "arn:aws:iam::123456789012:role/KarpenterNodeRole-my-cluster",
    )
    .expect("render");
    let actions = karpenter::cloud::iam::policy_actions(&rendered).expect("actions");
    let mut want: Vec<String> = karpenter::cloud::iam::IAM_ACTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    let mut actions = actions;
    actions.sort();
    actions.dedup();
    assert_eq!(actions, want);
    // The node role the policy may pass is the worker role of the instance profile.
    let node_role = attr(&one("locals", &[]), "node_role_arn")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        node_role.contains("var.worker_iam_role_name"),
        "{node_role}"
    );
    let profile = one("resource", &["aws_iam_instance_profile", "karpenter"]);
    assert_eq!(
        attr(&profile, "role").map(|e| e.to_string()).as_deref(),
        Some("var.worker_iam_role_name")
    );
    // The SSM policy is a policy document.
    let ssm = one("resource", &["aws_iam_policy", "ssm_managed_instance"]);
    let Some(Expression::FuncCall(f)) = attr(&ssm, "policy") else {
        panic!("ssm policy is not file(...)");
    };
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(module_path(&f.args[0])).expect("read"))
            .expect("ssm policy is JSON");
    assert_eq!(doc["Version"], "2012-10-17");
}

#[test]
fn helm_release_installs_our_chart_with_values_the_chart_knows() {
    let release = one("resource", &["helm_release", "karpenter"]);
    let chart = attr(&release, "chart").expect("chart");
    assert_eq!(
        canonical(&module_path(chart)),
        canonical(&karpenter_e2e::helm::chart_dir())
    );
    for (key, var) in [
        ("name", "var.helm_name"),
        ("namespace", "var.helm_namespace"),
        ("create_namespace", "var.helm_create_namespace"),
    ] {
        assert_eq!(
            attr(&release, key).map(|e| e.to_string()).as_deref(),
            Some(var),
            "{key}"
        );
    }
    // values = [yamlencode({...})]: every key path it sets is in the chart's schema.
    let Some(Expression::Array(values)) = attr(&release, "values") else {
        panic!("values is not a list");
    };
    let Expression::FuncCall(enc) = &values[0] else {
        panic!("values[0] is not yamlencode(...)");
    };
    assert_eq!(enc.name.name.as_str(), "yamlencode");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(karpenter_e2e::helm::chart_dir().join("values.schema.json"))
            .expect("schema"),
    )
    .expect("JSON");
    fn walk(e: &Expression, schema: &Value, path: String, out: &mut Vec<String>) {
        match e {
            Expression::Object(o) => {
                for (k, v) in o {
                    let k = k.to_string().trim_matches('"').to_string();
                    let node = &schema["properties"][&k];
                    assert!(!node.is_null(), "the chart has no value {path}{k}");
                    walk(v, node, format!("{path}{k}."), out);
                }
            }
            _ => out.push(path.trim_end_matches('.').to_string()),
        }
    }
    let mut set = Vec::new();
    walk(&enc.args[0], &schema, String::new(), &mut set);
    set.sort();
    assert_eq!(
        set,
        [
            "aws.defaultInstanceProfile",
            "clusterCABundle",
            "clusterEndpoint",
            "clusterName",
            "serviceAccount.roleArn"
        ]
    );
    // The IRSA subject is the chart's controller ServiceAccount: <release>-controller.
    let m = one("module", &["iam_assumable_role_karpenter"]);
    let subjects = attr(&m, "oidc_fully_qualified_subjects")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        subjects.contains("system:serviceaccount:${var.helm_namespace}:${local.service_account}"),
        "{subjects}"
    );
    let sa = attr(&one("locals", &[]), "service_account")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(sa, "\"${var.helm_name}-controller\"");
    let home = karpenter_e2e::Scratch::new("tf-helm").expect("scratch");
    let rendered =
        karpenter_e2e::helm::template(&home.0, &["clusterName=c"]).expect("helm template");
    assert!(
        rendered.contains("kind: ServiceAccount\nmetadata:\n  name: karpenter-controller\n"),
        "the chart's controller ServiceAccount is <release>-controller"
    );
}

#[test]
fn readme_lists_every_input_and_output() {
    let readme = std::fs::read_to_string(module_dir().join("README.md")).expect("README.md");
    for b in blocks("variable").iter().chain(blocks("output").iter()) {
        let name = labels(b).join("");
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README.md does not list {name}"
        );
    }
    assert!(readme.contains("terraform destroy") && !readme.contains("tterraform"));
}
