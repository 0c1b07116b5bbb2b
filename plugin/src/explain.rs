//! `kubectl karpenter explain KIND/NAME`: why a pod is pending (or where it went and why), why
//! a node exists and what its lifecycle holds, and what a Provisioner allows.
//!
//! Nothing here decides anything: a pending pod is answered by re-running the controller's own
//! packing engine ([`karpenter::scheduling::Scheduler`]) on the state read, a node by the
//! Decision summary the controller wrote on it and the lifecycle rules of
//! [`karpenter::lifecycle`], a Provisioner by the API's own defaulting and validation.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use clap::ValueEnum;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use karpenter::api::{default_provisioner, labels, validation::validate_provisioner, Provisioner};
use karpenter::cluster::nodes::{self, DecisionSummary};
use karpenter::cluster::{pods, Cluster, SnapshotOptions, TypeIndex};
use karpenter::lifecycle::expiry;
use karpenter::scheduling::{
    Decision, InstanceType, NewNode, Requirements, Scheduler, SchedulerInput, SchedulerOptions,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::facts::{self, CatalogArgs, Price};
use crate::source::{self, BundleArgs, Inventory, KubeArgs};
use crate::Status;

/// Examples shown at the end of `explain --help`.
pub const EXAMPLES: &str = "\
Examples:
  # Why is this pod pending? (the live cluster of the current context)
  kubectl karpenter explain pod/inflate-6b88c9fb68-4xk2q -n default

  # Why does this node exist, and when will it go?
  kubectl karpenter explain node/ip-192-168-12-34.ec2.internal

  # What does a Provisioner allow after defaulting, and how much of its limits is used?
  kubectl karpenter explain provisioner/default

  # Offline, from a support bundle
  kubectl get pods,nodes,provisioners,awsnodetemplates,daemonsets,poddisruptionbudgets -A -o yaml > bundle.yaml
  kubectl karpenter explain pod/web-0 -n shop -f bundle.yaml

Exit status: 0 when the object was found and explained (a pod that fits nowhere is an answer),
1 when it does not exist, 2 for usage errors, unreadable files and an unreachable cluster.";

/// Output formats of `explain`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExplainOutput {
    /// Sentences and short tables.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Arguments of `explain`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct ExplainArgs {
    /// What to explain: `pod/NAME`, `node/NAME` or `provisioner/NAME` (also `po`, `no`,
    /// plurals, or the kind and the name as two words).
    #[arg(value_name = "KIND/NAME")]
    pub target: String,

    /// The name, when the kind is given on its own (`explain pod web-0`).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Files instead of the live cluster.
    #[command(flatten)]
    pub files: BundleArgs,

    /// The cluster to read.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// The instance-type catalog.
    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Evaluate ages and TTLs at this time (RFC 3339), e.g. when the files are a support
    /// bundle taken earlier; default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_name = "FORMAT", value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// The kinds `explain` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Pod.
    Pod,
    /// A Node.
    Node,
    /// A Provisioner.
    Provisioner,
}

/// Parses `pod/NAME`, `po NAME`, `nodes/NAME`, `provisioner.karpenter.sh/NAME`, ...
pub fn parse_target(target: &str, name: Option<&str>) -> Result<(Kind, String)> {
    let (kind, name) = match (target.split_once('/'), name) {
        (Some((k, n)), None) => (k, n.to_string()),
        (None, Some(n)) => (target, n.to_string()),
        (Some(_), Some(_)) => {
            return Err(Error::Usage(format!(
                "give either KIND/NAME or KIND NAME, not both ({target} {})",
                name.unwrap_or_default()
            )))
        }
        (None, None) => {
            return Err(Error::Usage(format!(
                "{target:?}: say what to explain as KIND/NAME, e.g. pod/{target}, node/{target} \
                 or provisioner/{target}"
            )))
        }
    };
    let kind = match kind.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" | "pod.v1" | "pods.v1" => Kind::Pod,
        "node" | "nodes" | "no" | "node.v1" | "nodes.v1" => Kind::Node,
        "provisioner"
        | "provisioners"
        | "prov"
        | "provisioner.karpenter.sh"
        | "provisioners.karpenter.sh" => Kind::Provisioner,
        other => {
            return Err(Error::Usage(format!(
                "cannot explain {other:?}: explain pod/NAME, node/NAME or provisioner/NAME"
            )))
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!(
            "{target:?}: the name is missing or not a name"
        )));
    }
    Ok((kind, name))
}

/// Runs `explain`.
pub fn run(args: &ExplainArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<Status> {
    let (kind, name) = parse_target(&args.target, args.name.as_deref())?;
    let catalog = args.catalog.load()?;
    let inv = source::load(&args.files.files(), &args.kube, stdin)?;
    let now = crate::facts::parse_now(args.now.as_deref())?;
    let explanation = match kind {
        Kind::Pod => Explanation::Pod(Box::new(explain_pod(&inv, &catalog, &name, now)?)),
        Kind::Node => Explanation::Node(Box::new(explain_node(&inv, &catalog, &name, now)?)),
        Kind::Provisioner => {
            Explanation::Provisioner(Box::new(explain_provisioner(&inv, &catalog, &name)?))
        }
    };
    match args.output {
        ExplainOutput::Text => stdout
            .write_all(explanation.render().as_bytes())
            .map_err(Error::Write)?,
        ExplainOutput::Json => {
            serde_json::to_writer_pretty(&mut *stdout, &explanation).map_err(Error::Json)?;
            writeln!(stdout).map_err(Error::Write)?;
        }
        ExplainOutput::Yaml => {
            let text = serde_yaml::to_string(&explanation)
                .map_err(|e| Error::Simulate(format!("failed to write YAML: {e}")))?;
            stdout.write_all(text.as_bytes()).map_err(Error::Write)?;
        }
    }
    Ok(Status::Success)
}

/// One explanation, as `-o json|yaml` prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind")]
pub enum Explanation {
    /// A pod.
    #[serde(rename = "PodExplanation")]
    Pod(Box<PodExplanation>),
    /// A node.
    #[serde(rename = "NodeExplanation")]
    Node(Box<NodeExplanation>),
    /// A provisioner.
    #[serde(rename = "ProvisionerExplanation")]
    Provisioner(Box<ProvisionerExplanation>),
}

// === impl Explanation ===

impl Explanation {
    /// The text form.
    pub fn render(&self) -> String {
        match self {
            Self::Pod(p) => p.render(),
            Self::Node(n) => n.render(),
            Self::Provisioner(p) => p.render(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

/// Where a pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PodState {
    /// Bound to a node.
    Bound,
    /// Not bound; kube-scheduler nominated a node for it.
    Nominated,
    /// Not bound; the engine says where it would go, or why it fits nowhere.
    Pending,
    /// Finished, being deleted, or a DaemonSet/static pod: Karpenter does not provision for it.
    NotProvisionable,
}

/// A provisioner's verdict on a pending pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The provisioner.
    pub provisioner: String,
    /// Its weight (higher is tried first).
    pub weight: i32,
    /// Whether a new node of this provisioner would take the pod.
    pub fits: bool,
    /// The first constraint that failed, in words, or why it was not needed.
    pub reason: String,
}

/// Why a pod is where it is.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodExplanation {
    /// `namespace/name`.
    pub pod: String,
    /// Where it stands.
    pub state: PodState,
    /// One sentence.
    pub summary: String,
    /// The node it is bound or nominated to, or would be placed on (existing node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The provisioner that launched that node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// The Decision summary on that node, when the controller launched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launched_for: Option<DecisionSummary>,
    /// Per provisioner in weight order (pending pods).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provisioners: Vec<Verdict>,
    /// Preferences relaxed to place it, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relaxed: Vec<String>,
    /// The node a round would launch for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_launch: Option<NewNode>,
    /// Likely mistakes in the pod's spec (label keys that are near misses of well-known ones).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// Caveats about the input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn find_pod<'a>(inv: &'a Inventory, name: &str) -> Result<&'a Pod> {
    let key = format!("{}/{name}", inv.namespace);
    if let Some(p) = inv.cluster.pod(&key) {
        return Ok(p);
    }
    if inv.any_namespace {
        let matches: Vec<&Pod> = inv
            .cluster
            .pods()
            .filter(|p| p.metadata.name.as_deref() == Some(name))
            .collect();
        match matches.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                let namespaces: Vec<&str> = many
                    .iter()
                    .filter_map(|p| p.metadata.namespace.as_deref())
                    .collect();
                return Err(Error::Usage(format!(
                    "pod {name:?} is in several namespaces ({}): pass -n NAMESPACE",
                    namespaces.join(", ")
                )));
            }
        }
    }
    Err(Error::ObjectNotFound {
        kind: "pods".into(),
        name: name.into(),
        where_: if inv.any_namespace {
            " in any namespace".into()
        } else {
            format!(" in namespace {:?}", inv.namespace)
        },
    })
}

/// Label keys in the pod's node selector and required node affinity that look like a typo of
/// a well-known key.
fn label_hints(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut keys: Vec<&str> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for t in terms {
        keys.extend(t.match_expressions.iter().flatten().map(|e| e.key.as_str()));
    }
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| labels::suggest_key(k).map(|s| format!("label key {k:?}: {s}")))
        .collect()
}

fn weight_order(inv: &Inventory) -> Vec<Provisioner> {
    let mut ps: Vec<Provisioner> = inv
        .cluster
        .provisioners()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    karpenter::cluster::sort_by_weight(&mut ps);
    ps
}

/// One provisioning round on the inventory, as the controller would run it now, with `target`
/// among the pending pods, restricted to `only` provisioners when given.
fn round(
    inv: &Inventory,
    catalog: &[InstanceType],
    target: &Pod,
    now: Timestamp,
    only: Option<&str>,
) -> Result<Decision> {
    let snapshot = inv.cluster.snapshot(
        &SnapshotOptions {
            now,
            nomination_ttl: std::time::Duration::ZERO,
        },
        catalog,
    );
    let target_key = pods::key(target);
    let mut pending = snapshot.pods;
    if !inv.live {
        // Files rarely carry kube-scheduler's verdict: every unbound pod is pending, as
        // `simulate` reads them.
        pending = inv
            .cluster
            .pods()
            .filter(|p| pods::node_name(p).is_none() && pods::wants_a_node(p))
            .map(|p| std::sync::Arc::new(p.clone()))
            .collect();
    }
    if !pending.iter().any(|p| pods::key(p) == target_key) {
        pending.push(std::sync::Arc::new(target.clone()));
    }
    let provisioners = snapshot
        .provisioners
        .into_iter()
        .filter(|p| only.is_none_or(|o| p.metadata.name.as_deref() == Some(o)))
        .collect();
    let input = SchedulerInput {
        provisioners,
        instance_types: catalog.to_vec(),
        existing_nodes: snapshot.existing_nodes,
        daemonsets: snapshot.daemonsets,
        namespaces: snapshot.namespaces,
        options: SchedulerOptions::default(),
        ..Default::default()
    };
    Scheduler::new(input)
        .solve(&pending)
        .map_err(|e| Error::Simulate(e.to_string()))
}

fn launched_by(inv: &Inventory, node: &str) -> (Option<String>, Option<DecisionSummary>) {
    match inv.cluster.node(node) {
        Some(n) => (
            nodes::provisioner(n).map(str::to_string),
            DecisionSummary::of(n),
        ),
        None => (None, None),
    }
}

/// Explains a pod.
pub fn explain_pod(
    inv: &Inventory,
    catalog: &[InstanceType],
    name: &str,
    now: Timestamp,
) -> Result<PodExplanation> {
    let pod = find_pod(inv, name)?;
    let key = pods::key(pod);
    let mut e = PodExplanation {
        pod: key.clone(),
        state: PodState::Pending,
        summary: String::new(),
        node: None,
        provisioner: None,
        launched_for: None,
        provisioners: Vec::new(),
        relaxed: Vec::new(),
        would_launch: None,
        hints: label_hints(pod),
        notes: inv.notes.clone(),
    };
    if let Some(node) = pods::node_name(pod) {
        let (provisioner, summary) = launched_by(inv, node);
        e.state = PodState::Bound;
        e.summary = match (&provisioner, inv.cluster.node(node)) {
            (Some(p), _) => {
                let cause = match &summary {
                    Some(s) if s.pod_names.iter().any(|n| n == &key) => {
                        " for this pod (it was pending when the node was launched)"
                    }
                    Some(_) => " for other pods; this pod was placed on it later",
                    None => "",
                };
                format!("bound to node {node}, launched by provisioner {p}{cause}")
            }
            (None, Some(_)) => format!(
                "bound to node {node}, which Karpenter did not launch (no {} label)",
                labels::PROVISIONER_NAME
            ),
            (None, None) => format!("bound to node {node} (not in the input)"),
        };
        e.node = Some(node.to_string());
        e.provisioner = provisioner;
        e.launched_for = summary;
        return Ok(e);
    }
    if !pods::wants_a_node(pod) {
        e.state = PodState::NotProvisionable;
        e.summary = if pods::is_terminal(pod) {
            "finished: it needs no node".into()
        } else if pods::is_deleting(pod) {
            "being deleted: Karpenter does not provision for it".into()
        } else if pods::is_daemonset_pod(pod) {
            "a DaemonSet pod: the DaemonSet controller places it on every matching node; \
             Karpenter counts it as overhead of each new node"
                .into()
        } else {
            "a static or mirror pod: the kubelet runs it; Karpenter does not provision for it"
                .into()
        };
        return Ok(e);
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.clone())
        .filter(|n| !n.is_empty());
    if inv.live && !pods::is_marked_unschedulable(pod) && nominated.is_none() {
        e.notes.push(
            "kube-scheduler has not marked this pod Unschedulable (yet): it may still fit an \
             existing node; Karpenter provisions only for pods marked Unschedulable"
                .into(),
        );
    }
    let decision = round(inv, catalog, pod, now, None)?;
    let order = weight_order(inv);
    if let Some(n) = nominated {
        e.state = PodState::Nominated;
        e.summary =
            format!("nominated to node {n}: kube-scheduler binds it when room is made there");
        e.node = Some(n);
    }
    if let Some(r) = decision.relaxed.iter().find(|r| r.pod == key) {
        e.relaxed = r.relaxed.clone();
    }
    if let Some(node) = decision.existing_node_of(&key) {
        let in_flight = inv.cluster.node(node).is_some_and(|n| !nodes::is_ready(n));
        if e.state == PodState::Pending {
            e.summary = if in_flight {
                format!(
                    "pending; fits node {node}, which is still starting: Karpenter binds it there"
                )
            } else {
                format!("pending; fits existing node {node}: kube-scheduler should bind it there")
            };
            e.node = Some(node.to_string());
        }
        e.provisioner = launched_by(inv, node).0;
        return Ok(e);
    }
    if let Some(n) = decision.node_of(&key) {
        if e.state == PodState::Pending {
            e.summary = format!(
                "pending; a new node of provisioner {} would take it: {} ({}, {})",
                n.provisioner,
                n.instance_type,
                n.capacity_type,
                n.zones.join(",")
            );
        }
        let chosen = n.provisioner.clone();
        let mut before = true;
        for p in &order {
            let pname = p.metadata.name.clone().unwrap_or_default();
            let v = if pname == chosen {
                before = false;
                Verdict {
                    provisioner: pname,
                    weight: p.weight(),
                    fits: true,
                    reason: format!(
                        "{} option(s), cheapest {} at {}",
                        n.instance_type_options.len(),
                        n.instance_type,
                        price_text(n)
                    ),
                }
            } else if before {
                let alone = round(inv, catalog, pod, now, Some(&pname))?;
                let reason = alone
                    .unschedulable
                    .iter()
                    .find(|u| u.pod == key)
                    .and_then(|u| u.reasons.get(&pname).cloned())
                    .unwrap_or_else(|| {
                        "fits on its own, but not beside the other pending pods of this round"
                            .into()
                    });
                Verdict {
                    provisioner: pname,
                    weight: p.weight(),
                    fits: false,
                    reason,
                }
            } else {
                Verdict {
                    provisioner: pname,
                    weight: p.weight(),
                    fits: false,
                    reason: format!("not tried: provisioner {chosen} comes first and fits"),
                }
            };
            e.provisioners.push(v);
        }
        e.would_launch = Some(n.clone());
        return Ok(e);
    }
    // Fits nowhere.
    let reasons: BTreeMap<String, String> = decision
        .unschedulable
        .iter()
        .find(|u| u.pod == key)
        .map(|u| u.reasons.clone())
        .unwrap_or_default();
    if e.state == PodState::Pending {
        e.summary = if order.is_empty() {
            "pending; no Provisioner exists, so Karpenter launches nothing for it".into()
        } else {
            "pending; it fits no existing node and no new node of any provisioner".into()
        };
    }
    for p in &order {
        let pname = p.metadata.name.clone().unwrap_or_default();
        e.provisioners.push(Verdict {
            reason: reasons
                .get(&pname)
                .cloned()
                .unwrap_or_else(|| "no reason recorded".into()),
            provisioner: pname,
            weight: p.weight(),
            fits: false,
        });
    }
    Ok(e)
}

fn price_text(n: &NewNode) -> String {
    let p = Price {
        per_hour: n.price_per_hour,
        upper_bound: n.price_is_upper_bound,
    };
    format!("{} USD/hour", p.display())
}

// === impl PodExplanation ===

impl PodExplanation {
    /// The text form.
    pub fn render(&self) -> String {
        let mut out = format!("Pod {}: {}\n", self.pod, self.summary);
        if let Some(s) = &self.launched_for {
            out.push_str(&summary_lines(s));
        }
        if !self.provisioners.is_empty() {
            out.push_str("\nProvisioners, in weight order:\n");
            for v in &self.provisioners {
                let mark = if v.fits { "fits" } else { "no" };
                out.push_str(&format!(
                    "  {} (weight {}): {mark}: {}\n",
                    v.provisioner, v.weight, v.reason
                ));
            }
        }
        if !self.relaxed.is_empty() {
            out.push_str("\nRelaxed to place it:\n");
            for r in &self.relaxed {
                out.push_str(&format!("  - {r}\n"));
            }
        }
        if let Some(n) = &self.would_launch {
            out.push_str("\nIt would get:\n");
            out.push_str(&format!(
                "  provisioner:    {}\n  instance type:  {} ({} option(s): {}{})\n  capacity type:  {}\n  zones:          {}\n  price:          {}\n  pods on it:     {}\n",
                n.provisioner,
                n.instance_type,
                n.instance_type_options.len(),
                n.instance_type_options.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
                if n.instance_type_options.len() > 8 { ", ..." } else { "" },
                n.capacity_type,
                n.zones.join(", "),
                price_text(n),
                n.pods.len()
            ));
        }
        lines(&mut out, "Hints", &self.hints);
        lines(&mut out, "Notes", &self.notes);
        out
    }
}

fn lines(out: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("\n{title}:\n"));
    for i in items {
        out.push_str(&format!("  - {i}\n"));
    }
}

fn summary_lines(s: &DecisionSummary) -> String {
    let mut out = String::new();
    let more = s.pods.saturating_sub(s.pod_names.len());
    if !s.pod_names.is_empty() {
        out.push_str(&format!(
            "  launched for {} pod(s): {}{}\n",
            s.pods,
            s.pod_names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    } else {
        out.push_str(&format!("  launched for {} pod(s)\n", s.pods));
    }
    out.push_str(&format!(
        "  options sent to EC2, cheapest first: {} of {} ({}{}); cheapest at {:.4} USD/hour\n",
        s.instance_type_options.len(),
        s.options,
        s.instance_type_options.join(", "),
        if s.options > s.instance_type_options.len() {
            ", ..."
        } else {
            ""
        },
        s.price_per_hour
    ));
    if !s.instance_type.is_empty() {
        let first = s.instance_type_options.first().map(String::as_str);
        let why = if first == Some(s.instance_type.as_str()) {
            "the cheapest option".to_string()
        } else if s.instance_type_options.contains(&s.instance_type) {
            "a dearer option: the cheaper ones had no capacity in the allowed zones, or EC2's \
             allocation strategy preferred it"
                .to_string()
        } else {
            "an option beyond the first listed".to_string()
        };
        out.push_str(&format!(
            "  EC2 launched {} ({}): {why}\n",
            s.instance_type,
            if s.capacity_type.is_empty() {
                "capacity type not recorded"
            } else {
                &s.capacity_type
            }
        ));
    }
    if !s.zones.is_empty() {
        out.push_str(&format!("  allowed zones: {}\n", s.zones.join(", ")));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// Why a node exists and what its lifecycle holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeExplanation {
    /// The node.
    pub node: String,
    /// The provisioner that launched it; none when Karpenter did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// Instance type, capacity type and zone (from the labels).
    pub instance_type: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// The zone.
    pub zone: String,
    /// The price from the catalog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// `Ready`/`NotReady`, then `cordoned`, `empty`, `terminating`.
    pub status: Vec<String>,
    /// When it was created (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The Decision summary the controller wrote when it launched the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launched_for: Option<DecisionSummary>,
    /// The pods on it besides DaemonSet, static and finished ones.
    pub pods: Vec<String>,
    /// What the pods request and what it has.
    pub requested: BTreeMap<String, String>,
    /// Its allocatable.
    pub allocatable: BTreeMap<String, String>,
    /// Its lifecycle, one sentence each: emptiness and its TTL, expiry, termination.
    pub lifecycle: Vec<String>,
    /// What keeps it from being disrupted (do-not-evict pods, PDBs), each named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
}

fn quantities(list: &BTreeMap<String, i64>) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.clone(), karpenter::api::quantity::format_milli(k, *v)))
        .collect()
}

fn at(t: Timestamp, now: Timestamp) -> String {
    let d = facts::seconds_between(now, t);
    let rel = if d >= 0 {
        format!("in {}", facts::human_duration(d))
    } else {
        format!("{} ago", facts::human_duration(-d))
    };
    format!("{} ({rel})", t.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

fn add_secs(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .unwrap_or(t)
}

/// Explains a node.
pub fn explain_node(
    inv: &Inventory,
    catalog: &[InstanceType],
    name: &str,
    now: Timestamp,
) -> Result<NodeExplanation> {
    let c: &Cluster = &inv.cluster;
    let node = c.node(name).ok_or_else(|| Error::ObjectNotFound {
        kind: "nodes".into(),
        name: name.into(),
        where_: String::new(),
    })?;
    let provisioner = nodes::provisioner(node).map(str::to_string);
    let prov = provisioner.as_deref().and_then(|p| c.provisioner(p));
    let (requested, workload) = facts::requested(c, name);
    let pods_on: Vec<String> = c
        .pods_on(name)
        .into_iter()
        .filter(|p| pods::counts_against_emptiness(p))
        .map(pods::key)
        .collect();
    let mut lifecycle = Vec::new();
    let created = facts::created(node);
    if provisioner.is_none() {
        lifecycle.push(format!(
            "not launched by Karpenter (no {} label): Karpenter never empties, expires or \
             terminates it",
            labels::PROVISIONER_NAME
        ));
    } else if prov.is_none() {
        lifecycle.push(format!(
            "its provisioner {} does not exist (any more): no TTL applies until it does",
            provisioner.as_deref().unwrap_or_default()
        ));
    }
    if nodes::is_deleting(node) {
        let since = node
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| at(t.0, now))
            .unwrap_or_default();
        lifecycle.push(format!(
            "terminating since {since}: cordoned, pods being evicted"
        ));
        match nodes::annotation(node, nodes::DRAIN_BLOCKED) {
            Some(why) => lifecycle.push(format!("the drain is held: {why}")),
            None if nodes::has_finalizer(node) => lifecycle.push(format!(
                "{} pod(s) left to evict; then the instance is terminated and the finalizer {} removed",
                c.pods_on(name)
                    .into_iter()
                    .filter(|p| pods::needs_eviction(p))
                    .count(),
                nodes::TERMINATION_FINALIZER
            )),
            None => {}
        }
    } else if let Some(p) = prov {
        if workload == 0 {
            let since = nodes::annotation(node, nodes::EMPTINESS_TIMESTAMP)
                .and_then(|s| s.parse::<Timestamp>().ok());
            match (p.spec.ttl_seconds_after_empty, since) {
                (Some(ttl), Some(since)) => lifecycle.push(format!(
                    "empty since {}; ttlSecondsAfterEmpty {ttl} deletes it at {}",
                    at(since, now),
                    at(add_secs(since, ttl), now)
                )),
                (Some(ttl), None) => lifecycle.push(format!(
                    "empty, not yet marked ({}): ttlSecondsAfterEmpty {ttl} deletes it {ttl}s \
                     after the controller marks it",
                    nodes::EMPTINESS_TIMESTAMP
                )),
                (None, _) => lifecycle
                    .push("empty, and kept: its provisioner sets no ttlSecondsAfterEmpty".into()),
            }
        } else {
            lifecycle.push(format!(
                "not empty: {workload} pod(s) besides DaemonSet and static ones"
            ));
        }
        match (p.spec.ttl_seconds_until_expired, created) {
            (Some(ttl), Some(created)) => lifecycle.push(format!(
                "expires at {} (ttlSecondsUntilExpired {ttl})",
                at(add_secs(created, ttl), now)
            )),
            (Some(ttl), None) => lifecycle.push(format!(
                "expires {ttl}s after creation (ttlSecondsUntilExpired); its creation time is not known"
            )),
            (None, _) => lifecycle.push("never expires: no ttlSecondsUntilExpired".into()),
        }
        if let Some(why) = nodes::annotation(node, nodes::DISRUPTION_BLOCKED) {
            lifecycle.push(format!("the controller recorded: {why}"));
        }
    }
    let blockers = if provisioner.is_some() {
        expiry::blockers(c, name)
    } else {
        Vec::new()
    };
    Ok(NodeExplanation {
        node: name.to_string(),
        provisioner,
        instance_type: facts::label(node, labels::INSTANCE_TYPE).to_string(),
        capacity_type: facts::label(node, labels::CAPACITY_TYPE).to_string(),
        zone: facts::label(node, labels::ZONE).to_string(),
        price: facts::node_price(catalog, node),
        status: facts::node_status(c, node)
            .into_iter()
            .map(str::to_string)
            .collect(),
        created: created.map(|t| at(t, now)),
        launched_for: DecisionSummary::of(node),
        pods: pods_on,
        requested: quantities(&requested),
        allocatable: quantities(&facts::allocatable(node)),
        lifecycle,
        blockers,
    })
}

// === impl NodeExplanation ===

impl NodeExplanation {
    /// The text form.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Node {}: {} {} in {}, {}",
            self.node,
            or_unknown(&self.instance_type),
            or_unknown(&self.capacity_type),
            or_unknown(&self.zone),
            self.status.join(", ")
        );
        if let Some(p) = &self.price {
            out.push_str(&format!(", {} USD/hour", p.display()));
        }
        out.push('\n');
        match &self.provisioner {
            Some(p) => out.push_str(&format!("  launched by provisioner {p}\n")),
            None => out.push_str("  not launched by Karpenter\n"),
        }
        if let Some(c) = &self.created {
            out.push_str(&format!("  created {c}\n"));
        }
        match &self.launched_for {
            Some(s) => out.push_str(&summary_lines(s)),
            None if self.provisioner.is_some() => out.push_str(&format!(
                "  no decision summary ({}): launched by another controller version, or adopted\n",
                nodes::DECISION_ANNOTATION
            )),
            None => {}
        }
        out.push_str(&format!(
            "\nPods ({}): {}\n",
            self.pods.len(),
            if self.pods.is_empty() {
                "none besides DaemonSet and static pods".to_string()
            } else {
                self.pods.join(", ")
            }
        ));
        let keys: Vec<&String> = self
            .allocatable
            .keys()
            .filter(|k| {
                matches!(k.as_str(), "cpu" | "memory" | "pods") || self.requested.contains_key(*k)
            })
            .collect();
        for k in keys {
            out.push_str(&format!(
                "  {k}: {} requested of {} allocatable\n",
                self.requested.get(k).map_or("0", String::as_str),
                self.allocatable[k]
            ));
        }
        lines(&mut out, "Lifecycle", &self.lifecycle);
        lines(&mut out, "Blocks disruption", &self.blockers);
        out
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "<unknown>"
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Provisioners

/// One requirement after defaulting.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementView {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    /// The values.
    pub values: Vec<String>,
    /// True when defaulting adds it (it was not written), or it equals what defaulting adds.
    pub defaulted: bool,
}

/// A limit and its use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitView {
    /// The resource.
    pub resource: String,
    /// The limit.
    pub limit: String,
    /// Used: the larger of `status.resources` and the capacity of its nodes in the input.
    pub used: String,
    /// What is left (never negative).
    pub left: String,
}

/// An instance type a provisioner allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeView {
    /// The instance type.
    pub name: String,
    /// Its cheapest allowed offering (USD/hour), when priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    /// vCPUs.
    pub cpu: String,
    /// Memory.
    pub memory: String,
}

/// What a provisioner allows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionerExplanation {
    /// The provisioner.
    pub provisioner: String,
    /// Its weight.
    pub weight: i32,
    /// Whether validation accepts it (the webhook's rules).
    pub valid: bool,
    /// Validation errors and warnings, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Its requirements after defaulting.
    pub requirements: Vec<RequirementView>,
    /// Its taints (and startup taints), as `key=value:Effect`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    /// How many catalog instance types it allows (with an offering it allows).
    pub instance_types: usize,
    /// The cheapest few of them.
    pub cheapest: Vec<TypeView>,
    /// Its limits and their use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitView>,
    /// The nodes it owns.
    pub nodes: Vec<String>,
    /// `ttlSecondsAfterEmpty` and `ttlSecondsUntilExpired`, in words.
    pub ttls: Vec<String>,
}

/// How many of the cheapest allowed instance types `explain provisioner` lists.
pub const CHEAPEST_LISTED: usize = 5;

/// Explains a provisioner.
pub fn explain_provisioner(
    inv: &Inventory,
    catalog: &[InstanceType],
    name: &str,
) -> Result<ProvisionerExplanation> {
    let c = &inv.cluster;
    let stored = c.provisioner(name).ok_or_else(|| Error::ObjectNotFound {
        kind: "provisioners.karpenter.sh".into(),
        name: name.into(),
        where_: String::new(),
    })?;
    // What defaulting adds to an empty spec is the set of defaults; a requirement equal to
    // one of them is marked, whether the webhook or the author wrote it.
    let mut empty = karpenter::api::ProvisionerSpec::default();
    default_provisioner(&mut empty);
    let mut p = stored.clone();
    default_provisioner(&mut p.spec);
    let report = validate_provisioner(&p);
    let mut problems: Vec<String> = report
        .errors
        .iter()
        .map(|e| format!("error: {e}"))
        .collect();
    problems.extend(report.warnings.iter().map(|w| format!("warning: {w}")));
    let requirements = p
        .spec
        .requirements
        .iter()
        .map(|r| RequirementView {
            key: r.key.clone(),
            operator: r.operator.clone(),
            values: r.values.clone(),
            defaulted: empty.requirements.contains(r),
        })
        .collect();
    let taints = p
        .spec
        .taints
        .iter()
        .map(|t| t.display())
        .chain(
            p.spec
                .startup_taints
                .iter()
                .map(|t| format!("{} (startup)", t.display())),
        )
        .collect();
    let mut reqs = Requirements::from_api(&p.spec.requirements).unwrap_or_default();
    reqs.add_all(&Requirements::from_labels(p.spec.labels.iter()));
    let mut allowed: Vec<(Option<f64>, &InstanceType)> = catalog
        .iter()
        .filter(|t| t.compatible(&reqs) && t.has_offering(&reqs, None))
        .map(|t| (t.cheapest_price(&reqs, None), t))
        .collect();
    allowed.sort_by(|a, b| {
        a.0.unwrap_or(f64::MAX)
            .total_cmp(&b.0.unwrap_or(f64::MAX))
            .then_with(|| a.1.name.cmp(&b.1.name))
    });
    let kubelet = p.spec.kubelet_configuration.as_ref();
    let cheapest = allowed
        .iter()
        .take(CHEAPEST_LISTED)
        .map(|(price, t)| {
            let cap = t.capacity_for(kubelet);
            let fmt = |k: &str| {
                cap.get(k)
                    .map(|v| karpenter::api::quantity::format_milli(k, *v))
                    .unwrap_or_default()
            };
            TypeView {
                name: t.name.clone(),
                price_per_hour: *price,
                cpu: fmt("cpu"),
                memory: fmt("memory"),
            }
        })
        .collect();
    let index = TypeIndex::new(catalog);
    let mut used = c.usage(name, &index);
    if let Some(status) = p.status.as_ref() {
        for (k, q) in &status.resources {
            if let Ok(v) = q.milli() {
                let e = used.entry(k.clone()).or_insert(0);
                *e = (*e).max(v);
            }
        }
    }
    let fmt = karpenter::api::quantity::format_milli;
    let limits = p
        .spec
        .limits
        .iter()
        .flat_map(|l| &l.resources)
        .filter_map(|(k, q)| {
            let limit = q.milli().ok()?;
            let u = used.get(k).copied().unwrap_or(0);
            Some(LimitView {
                resource: k.clone(),
                limit: fmt(k, limit),
                used: fmt(k, u),
                left: fmt(k, (limit - u).max(0)),
            })
        })
        .collect();
    let owned: Vec<String> = c
        .nodes()
        .filter(|n| nodes::provisioner(n) == Some(name))
        .map(|n| nodes::name(n).to_string())
        .collect();
    let ttls = vec![
        match p.spec.ttl_seconds_after_empty {
            Some(t) => format!("empty nodes are deleted {t}s after they become empty"),
            None => "empty nodes are kept (no ttlSecondsAfterEmpty)".into(),
        },
        match p.spec.ttl_seconds_until_expired {
            Some(t) => format!("nodes are replaced {t}s after launch (ttlSecondsUntilExpired)"),
            None => "nodes never expire (no ttlSecondsUntilExpired)".into(),
        },
    ];
    Ok(ProvisionerExplanation {
        provisioner: name.to_string(),
        weight: p.weight(),
        valid: report.is_valid(),
        problems,
        requirements,
        taints,
        instance_types: allowed.len(),
        cheapest,
        limits,
        nodes: owned,
        ttls,
    })
}

// === impl ProvisionerExplanation ===

impl ProvisionerExplanation {
    /// The text form.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Provisioner {} (weight {}): {}\n",
            self.provisioner,
            self.weight,
            if self.valid {
                "valid"
            } else {
                "INVALID: the webhook rejects it and the controller cannot use it"
            }
        );
        for p in &self.problems {
            out.push_str(&format!("  {p}\n"));
        }
        out.push_str("\nRequirements (after defaulting):\n");
        for r in &self.requirements {
            out.push_str(&format!(
                "  {} {} [{}]{}\n",
                r.key,
                r.operator,
                r.values.join(", "),
                if r.defaulted { "   (default)" } else { "" }
            ));
        }
        lines(&mut out, "Taints", &self.taints);
        out.push_str(&format!(
            "\nInstance types allowed: {} of the catalog",
            self.instance_types
        ));
        if self.cheapest.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("; the cheapest {}:\n", self.cheapest.len()));
            let mut rows = vec![[
                "INSTANCE-TYPE".to_string(),
                "CPU".into(),
                "MEMORY".into(),
                "PRICE/H".into(),
            ]];
            for t in &self.cheapest {
                rows.push([
                    t.name.clone(),
                    t.cpu.clone(),
                    t.memory.clone(),
                    t.price_per_hour
                        .map_or_else(|| "unknown".into(), |p| format!("{p:.4}")),
                ]);
            }
            out.push_str(&crate::table::render(&rows, "  "));
        }
        if !self.limits.is_empty() {
            out.push_str("\nLimits:\n");
            let mut rows = vec![[
                "RESOURCE".to_string(),
                "LIMIT".into(),
                "USED".into(),
                "LEFT".into(),
            ]];
            for l in &self.limits {
                rows.push([
                    l.resource.clone(),
                    l.limit.clone(),
                    l.used.clone(),
                    l.left.clone(),
                ]);
            }
            out.push_str(&crate::table::render(&rows, "  "));
        }
        out.push_str(&format!(
            "\nNodes ({}): {}\n",
            self.nodes.len(),
            if self.nodes.is_empty() {
                "none".into()
            } else {
                self.nodes.join(", ")
            }
        ));
        lines(&mut out, "Lifecycle", &self.ttls);
        out
    }
}
