//! Where `explain`, `nodes` and `simulate` read the cluster from: the live cluster through a
//! kubeconfig (kubectl's flags), or files (`-f`, a support bundle).
//!
//! ```text
//!  --kubeconfig/--context/... ──> kube-rs client ──> list Pods, Nodes, Provisioners, ... ─┐
//!  -f FILE|DIR|-  ──> manifest::load ──> documents (v1 List, multi-doc, walkthrough JSON) ─┼─> Inventory
//!                                                                                         │  (cluster index,
//!                                                                                         │   notes)
//! ```
//!
//! Both paths end in the same [`Inventory`]: the controller's own cluster index
//! ([`karpenter::cluster::Cluster`]), so the commands see the state the way the controller does.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karpenter::api::{decode_node_template, decode_provisioner, default_provisioner};
use karpenter::cluster::{Cluster, Resource};
use karpenter::scheduling::simulate::expand_deployment;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::{self, Content, FilenameArgs};

/// kubectl's flags for reaching a cluster.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, several files merged as kubectl
    /// does, or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// The namespace of the pod to explain (default: the context's namespace, or `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Look in every namespace (for a pod name that is unique across them).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// How long to wait for the API server per request (`0` waits forever), e.g. `10s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub request_timeout: String,
}

/// `-f`/`-R` of `explain` and `nodes`: files instead of the live cluster.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct BundleArgs {
    /// Read from files (a support bundle: `kubectl get ... -o yaml`, manifests, the
    /// walkthrough's JSON) instead of the live cluster; repeatable, directories, `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub filenames: Vec<PathBuf>,

    /// Read the directories given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

impl BundleArgs {
    /// As the file reader takes them.
    pub fn files(&self) -> FilenameArgs {
        FilenameArgs {
            filenames: self.filenames.clone(),
            recursive: self.recursive,
        }
    }
}

/// What the commands read: the cluster index plus what could not be read into it.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Every object read, in the controller's index.
    pub cluster: Cluster,
    /// The namespace that bare pod names refer to.
    pub namespace: String,
    /// Whether `-A` was given (or files were read, where any namespace is fine).
    pub any_namespace: bool,
    /// Whether the objects came from the live cluster.
    pub live: bool,
    /// Objects that could not be used, and other caveats, in words.
    pub notes: Vec<String>,
}

/// Parses kubectl's `--request-timeout`: a bare number of seconds or a Go duration; `0` for
/// none.
pub fn parse_timeout(s: &str) -> Result<Option<Duration>> {
    let t = s.trim();
    let parsed = match t.parse::<f64>() {
        Ok(n) => Ok(n),
        Err(_) => karpenter::api::validation::parse_duration_secs(t),
    };
    let secs = parsed.map_err(|e| {
        Error::Usage(format!(
            "--request-timeout {s:?}: {e}; write a duration such as 30s, 1m or 0 (no timeout)"
        ))
    })?;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(Error::Usage(format!(
            "--request-timeout {s:?}: must be 0 or a positive duration"
        )));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// The kube-rs client configuration for the flags, and the kubeconfig context's name.
async fn client_config(args: &KubeArgs) -> Result<(Config, String)> {
    let explicit = args.kubeconfig.is_some()
        || args.context.is_some()
        || args.cluster.is_some()
        || args.user.is_some();
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
            what: format!("cannot read the kubeconfig {}", path.display()),
            message: e.to_string(),
        }),
        None => Kubeconfig::read().map_err(|e| Error::Kubeconfig {
            what: "cannot read a kubeconfig ($KUBECONFIG or ~/.kube/config)".into(),
            message: e.to_string(),
        }),
    };
    let kubeconfig = match kubeconfig {
        Ok(k) => k,
        // Inside a pod with no kubeconfig: the service account, as kubectl does.
        Err(e) if !explicit => {
            return match Config::incluster() {
                Ok(c) => Ok((c, "in-cluster".into())),
                Err(_) => Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let context = args
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Kubeconfig {
            what: if context.is_empty() {
                "the kubeconfig has no usable context (set one with kubectl config use-context, or pass --context)".into()
            } else {
                format!("cannot use the kubeconfig context {context:?}")
            },
            message: e.to_string(),
        })?;
    let timeout = parse_timeout(&args.request_timeout)?;
    config.connect_timeout = timeout.or(config.connect_timeout);
    config.read_timeout = timeout;
    config.write_timeout = timeout;
    Ok((config, context))
}

/// The API group/version/kind/plural of each kind read from the cluster.
const KINDS: [(&str, &str, &str, &str); 7] = [
    ("", "v1", "Node", "nodes"),
    ("", "v1", "Pod", "pods"),
    ("karpenter.sh", "v1alpha5", "Provisioner", "provisioners"),
    (
        "karpenter.k8s.aws",
        "v1alpha1",
        "AWSNodeTemplate",
        "awsnodetemplates",
    ),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    ("", "v1", "Namespace", "namespaces"),
];

/// Lists one kind across namespaces as plain JSON documents (kind and apiVersion set).
async fn list_kind(
    client: &Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
) -> Result<Vec<Value>, kube::Error> {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.clone(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .map(|mut v| {
            v["apiVersion"] = Value::from(api_version.as_str());
            v["kind"] = Value::from(kind);
            v
        })
        .collect())
}

/// Reads the cluster's Pods, Nodes, Provisioners, AWSNodeTemplates, DaemonSets,
/// PodDisruptionBudgets and Namespaces into documents; also the namespace bare pod names refer to, and notes
/// for kinds it could not list.
pub fn read_live(args: &KubeArgs) -> Result<(Vec<Value>, String, Vec<String>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(async {
        let (config, context) = client_config(args).await?;
        let server = config.cluster_url.to_string();
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig {
            what: format!("cannot build a client for {server}"),
            message: e.to_string(),
        })?;
        let results = futures::future::join_all(KINDS.iter().map(|k| list_kind(&client, *k))).await;
        let mut docs = Vec::new();
        let mut notes = Vec::new();
        for (k, r) in KINDS.iter().zip(results) {
            match r {
                Ok(items) => docs.extend(items),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    notes.push(if k.0.contains("karpenter") {
                        format!(
                            "the cluster serves no {} API ({}/{}): is Karpenter's CRD installed?",
                            k.2, k.0, k.1
                        )
                    } else {
                        format!("the cluster serves no {} API", k.3)
                    })
                }
                Err(kube::Error::Api(s)) if s.code == 403 => notes.push(format!(
                    "not allowed to list {} across namespaces ({}); they are left out",
                    k.3, s.message
                )),
                Err(e) if k.2 == "Node" || k.2 == "Pod" => {
                    return Err(unreachable(&server, &context, e));
                }
                Err(e) => notes.push(format!("cannot list {}: {e}", k.3)),
            }
        }
        Ok((docs, namespace, notes))
    })
}

fn unreachable(server: &str, context: &str, e: kube::Error) -> Error {
    let hint = match &e {
        kube::Error::Api(s) if s.code == 401 => {
            " (the credentials were refused: refresh them, e.g. aws eks update-kubeconfig)"
        }
        _ => "",
    };
    Error::Cluster {
        what: format!("cannot read the cluster at {server} (context {context:?}){hint}"),
        message: e.to_string(),
    }
}

/// Reads files given with `-f` into documents: multi-document YAML, JSON, `v1 List`s and the
/// document `kubectl karpenter walkthrough -o json` writes. Syntax errors are fatal (with
/// file and line).
pub fn read_files(files: &FilenameArgs, stdin: &mut dyn std::io::Read) -> Result<Vec<Value>> {
    let manifests = manifest::load(files, stdin)?;
    let mut out = Vec::new();
    for d in manifests.iter().flat_map(manifest::documents) {
        match d.content {
            Content::SyntaxError(e) => {
                return Err(Error::Syntax {
                    file: d.file.clone(),
                    line: e.line,
                    message: match e.hint {
                        Some(h) => format!("{}; {h}", e.message),
                        None => e.message,
                    },
                })
            }
            Content::Value(v) => flatten(v, &mut out),
        }
    }
    Ok(out)
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    // The walkthrough's JSON carries the final cluster as `final.objects`.
    if v.get("timeline").is_some() {
        if let Some(objects) = v.pointer("/final/objects") {
            flatten(objects.clone(), out);
        }
        return;
    }
    match v {
        Value::Object(mut o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
            if let Some(Value::Array(items)) = o.remove("items") {
                for i in items {
                    flatten(i, out);
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                flatten(i, out);
            }
        }
        Value::Null => {}
        other => out.push(other),
    }
}

fn name_of(doc: &Value) -> String {
    let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(doc: &Value, notes: &mut Vec<String>) -> Option<T> {
    // From a borrowed Value: no copy of the document first.
    match T::deserialize(doc) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!(
                "{} {} left out: {e}",
                doc["kind"].as_str().unwrap_or("object"),
                name_of(doc)
            ));
            None
        }
    }
}

/// Builds the inventory from documents. `expand` turns Deployments into pending pods (files
/// only: a live cluster has the pods themselves).
pub fn inventory(docs: &[Value], expand: bool) -> Inventory {
    let mut inv = Inventory::default();
    for doc in docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let resource =
            match kind {
                "Node" => decode::<Node>(doc, &mut inv.notes).map(|n| Resource::Node(Box::new(n))),
                "Pod" => decode::<Pod>(doc, &mut inv.notes)
                    .map(|p| Resource::Pod(std::sync::Arc::new(p))),
                "DaemonSet" => decode::<DaemonSet>(doc, &mut inv.notes)
                    .map(|d| Resource::DaemonSet(Box::new(d))),
                "PodDisruptionBudget" => decode::<PodDisruptionBudget>(doc, &mut inv.notes)
                    .map(|b| Resource::PodDisruptionBudget(Box::new(b))),
                "Namespace" => decode::<Namespace>(doc, &mut inv.notes)
                    .map(|n| Resource::Namespace(Box::new(n))),
                "Provisioner" => match decode_provisioner(doc) {
                    Ok(mut p) => {
                        default_provisioner(&mut p.spec);
                        Some(Resource::Provisioner(Box::new(p)))
                    }
                    Err(e) => {
                        inv.notes.push(format!(
                            "Provisioner {} left out (the controller cannot use it either): {e}",
                            name_of(doc)
                        ));
                        None
                    }
                },
                "AWSNodeTemplate" => match decode_node_template(doc) {
                    Ok(t) => Some(Resource::NodeTemplate(Box::new(t))),
                    Err(e) => {
                        inv.notes
                            .push(format!("AWSNodeTemplate {} left out: {e}", name_of(doc)));
                        None
                    }
                },
                "Deployment" if expand => {
                    if let Some(d) = decode::<Deployment>(doc, &mut inv.notes) {
                        for p in expand_deployment(&d) {
                            inv.cluster.apply(Resource::Pod(std::sync::Arc::new(p)));
                        }
                    }
                    None
                }
                _ => None,
            };
        if let Some(r) = resource {
            inv.cluster.apply(r);
        }
    }
    inv
}

/// Reads the inventory from files when `-f` is given, from the live cluster otherwise.
pub fn load(
    files: &FilenameArgs,
    kube: &KubeArgs,
    stdin: &mut dyn std::io::Read,
) -> Result<Inventory> {
    if files.filenames.is_empty() {
        let (docs, namespace, notes) = read_live(kube)?;
        let mut inv = inventory(&docs, false);
        inv.notes.extend(notes);
        inv.namespace = namespace;
        inv.any_namespace = kube.all_namespaces;
        inv.live = true;
        Ok(inv)
    } else {
        let docs = read_files(files, stdin)?;
        let mut inv = inventory(&docs, true);
        inv.namespace = kube.namespace.clone().unwrap_or_else(|| "default".into());
        inv.any_namespace = kube.all_namespaces || kube.namespace.is_none();
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_as_kubectl_writes_them() {
        assert_eq!(parse_timeout("0").ok(), Some(None));
        assert_eq!(
            parse_timeout("10s").ok(),
            Some(Some(Duration::from_secs(10)))
        );
        assert_eq!(parse_timeout("5").ok(), Some(Some(Duration::from_secs(5))));
        assert_eq!(
            parse_timeout("1m30s").ok(),
            Some(Some(Duration::from_secs(90)))
        );
        let e = parse_timeout("soon")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--request-timeout") && e.contains("30s"), "{e}");
    }

    #[test]
    fn lists_walkthrough_documents_and_arrays_flatten() {
        let mut out = Vec::new();
        flatten(
            serde_json::json!({"kind": "List", "items": [
                {"kind": "Node", "metadata": {"name": "a"}},
                {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}
            ]}),
            &mut out,
        );
        flatten(
            serde_json::json!({"timeline": [], "final": {"objects": {"kind": "List", "items": [
                {"kind": "Node", "metadata": {"name": "b"}}
            ]}}}),
            &mut out,
        );
        let names: Vec<String> = out.iter().map(name_of).collect();
        assert_eq!(names, ["a", "p", "b"]);
    }

    #[test]
    fn bad_objects_are_left_out_with_a_note_naming_them() {
        let docs = vec![
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "ok", "namespace": "team"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "bad", "namespace": "team"}, "spec": {"containers": 3}}),
            serde_json::json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
                "metadata": {"name": "p"}, "spec": {"ttlSecondsAfterEmpty": "thirty"}}),
        ];
        let inv = inventory(&docs, true);
        assert!(inv.cluster.pod("team/ok").is_some());
        assert!(inv.cluster.pod("team/bad").is_none());
        assert!(
            inv.notes
                .iter()
                .any(|n| n.contains("Pod team/bad left out")),
            "{:?}",
            inv.notes
        );
        assert!(
            inv.notes.iter().any(|n| n.contains("Provisioner p left out")
                && n.contains("ttlSecondsAfterEmpty")),
            "{:?}",
            inv.notes
        );
    }
}
