//! `kubectl karpenter nodes`: every node with bars of requested CPU and memory against
//! allocatable, instance type, capacity type, zone, price, age, Provisioner and state, and the
//! cluster's price per hour and per month.

use std::io::{Read, Write};

use clap::ValueEnum;
use k8s_openapi::jiff::Timestamp;
use karpenter::api::labels;
use karpenter::cluster::nodes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::facts::{self, CatalogArgs, Price, HOURS_PER_MONTH};
use crate::report::Style;
use crate::source::{self, BundleArgs, Inventory, KubeArgs};
use crate::Status;

/// Examples shown at the end of `nodes --help`.
pub const EXAMPLES: &str = "\
Examples:
  # Every node of the current context, with what its pods request and what it costs
  kubectl karpenter nodes

  # More columns, or a document for scripts
  kubectl karpenter nodes -o wide
  kubectl karpenter nodes -o json | jq '.summary.pricePerMonth'

  # From a support bundle
  kubectl karpenter nodes -f bundle.yaml

Prices come from the built-in AWS us-east-1 catalog (or --instance-types). A spot node whose
price is not known is shown at its on-demand price as an upper bound (<=).";

/// Output formats of `nodes`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodesOutput {
    /// The table.
    #[default]
    Table,
    /// The table with pods, requests in numbers and instance IDs.
    Wide,
    /// A `List` document.
    Json,
    /// A `List` document as YAML.
    Yaml,
}

/// Arguments of `nodes`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct NodesArgs {
    /// Files instead of the live cluster.
    #[command(flatten)]
    pub files: BundleArgs,

    /// The cluster to read.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Only the nodes of this provisioner.
    #[arg(long, value_name = "NAME")]
    pub provisioner: Option<String>,

    /// The instance-type catalog.
    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Evaluate ages and TTLs at this time (RFC 3339), e.g. when the files are a support
    /// bundle taken earlier; default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_name = "FORMAT", value_enum, default_value_t = NodesOutput::Table)]
    pub output: NodesOutput,
}

/// One node's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Always `NodeView`.
    pub kind: &'static str,
    /// The node.
    pub name: String,
    /// Instance type label.
    pub instance_type: String,
    /// Capacity type label.
    pub capacity_type: String,
    /// Zone label.
    pub zone: String,
    /// The provisioner that launched it (none when Karpenter did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// CPU requested by its pods, in millicores.
    pub cpu_requested_milli: i64,
    /// CPU allocatable, in millicores.
    pub cpu_allocatable_milli: i64,
    /// Memory requested, bytes.
    pub memory_requested_bytes: i64,
    /// Memory allocatable, bytes.
    pub memory_allocatable_bytes: i64,
    /// Pods besides DaemonSet and static ones.
    pub pods: usize,
    /// The price, when the catalog knows the type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Seconds since creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// `Ready`/`NotReady`, then `cordoned`, `empty`, `terminating`.
    pub status: Vec<String>,
    /// The EC2 instance ID from the providerID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// The totals under the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Nodes listed.
    pub nodes: usize,
    /// Sum of the known prices (USD/hour).
    pub price_per_hour: f64,
    /// The same over a month of 730 hours.
    pub price_per_month: f64,
    /// True when some spot price is an upper bound.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub upper_bound: bool,
    /// Nodes whose instance type the catalog does not know (not in the totals).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
}

/// The view: rows and totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesView {
    /// `v1`.
    pub api_version: &'static str,
    /// `List`.
    pub kind: &'static str,
    /// One per node, by name.
    pub items: Vec<NodeView>,
    /// Totals.
    pub summary: Summary,
}

/// Builds the view.
pub fn view(
    inv: &Inventory,
    catalog: &[karpenter::scheduling::InstanceType],
    provisioner: Option<&str>,
    now: Timestamp,
) -> NodesView {
    let c = &inv.cluster;
    let mut items = Vec::new();
    let mut summary = Summary {
        nodes: 0,
        price_per_hour: 0.0,
        price_per_month: 0.0,
        upper_bound: false,
        unpriced: Vec::new(),
    };
    for n in c.nodes() {
        let prov = nodes::provisioner(n).map(str::to_string);
        if provisioner.is_some_and(|p| prov.as_deref() != Some(p)) {
            continue;
        }
        let name = nodes::name(n).to_string();
        let (req, pods) = facts::requested(c, &name);
        let alloc = facts::allocatable(n);
        let price = facts::node_price(catalog, n);
        match price {
            Some(p) => {
                summary.price_per_hour += p.per_hour;
                summary.upper_bound |= p.upper_bound;
            }
            None => summary.unpriced.push(name.clone()),
        }
        let get = |l: &karpenter::scheduling::resources::ResourceList, k: &str| {
            l.get(k).copied().unwrap_or(0)
        };
        items.push(NodeView {
            kind: "NodeView",
            instance_type: facts::label(n, labels::INSTANCE_TYPE).to_string(),
            capacity_type: facts::label(n, labels::CAPACITY_TYPE).to_string(),
            zone: facts::label(n, labels::ZONE).to_string(),
            provisioner: prov,
            cpu_requested_milli: get(&req, "cpu"),
            cpu_allocatable_milli: get(&alloc, "cpu"),
            memory_requested_bytes: get(&req, "memory") / 1000,
            memory_allocatable_bytes: get(&alloc, "memory") / 1000,
            pods,
            price,
            age_seconds: facts::created(n).map(|t| facts::seconds_between(t, now)),
            status: facts::node_status(c, n)
                .into_iter()
                .map(str::to_string)
                .collect(),
            instance_id: nodes::instance_id(n).map(str::to_string),
            name,
        });
    }
    summary.nodes = items.len();
    summary.price_per_hour = (summary.price_per_hour * 1e6).round() / 1e6;
    summary.price_per_month = (summary.price_per_hour * HOURS_PER_MONTH * 100.0).round() / 100.0;
    NodesView {
        api_version: "v1",
        kind: "List",
        items,
        summary,
    }
}

/// Width of the usage bars, in characters.
const BAR: usize = 10;

/// `[####------]  40%`, coloured green, yellow or red on a terminal.
pub fn bar(used: i64, total: i64, style: Style) -> String {
    if total <= 0 {
        return format!("[{}]    -", " ".repeat(BAR));
    }
    let frac = (used as f64 / total as f64).clamp(0.0, 1.0);
    let filled = (frac * BAR as f64).round() as usize;
    let pct = (used as f64 * 100.0 / total as f64).round() as i64;
    let body = format!("{}{}", "#".repeat(filled), "-".repeat(BAR - filled));
    let body = if style.color {
        let code = match pct {
            ..=49 => "32",
            50..=79 => "33",
            _ => "31",
        };
        format!("\x1b[{code}m{body}\x1b[0m")
    } else {
        body
    };
    format!("[{body}] {pct:>3}%")
}

fn gib(bytes: i64) -> String {
    format!("{:.1}Gi", bytes as f64 / (1u64 << 30) as f64)
}

// === impl NodesView ===

impl NodesView {
    /// The kubectl-style table (`wide` adds pods, numbers and instance IDs).
    pub fn render(&self, wide: bool, style: Style) -> String {
        if self.items.is_empty() {
            return "No nodes found.\n".into();
        }
        let mut rows: Vec<[String; 13]> = vec![[
            "NAME".into(),
            "INSTANCE-TYPE".into(),
            "CAPACITY".into(),
            "ZONE".into(),
            "CPU".into(),
            "MEMORY".into(),
            "PRICE/H".into(),
            "AGE".into(),
            "PROVISIONER".into(),
            "STATUS".into(),
            "PODS".into(),
            "REQUESTED".into(),
            "INSTANCE-ID".into(),
        ]];
        for n in &self.items {
            rows.push([
                n.name.clone(),
                n.instance_type.clone(),
                n.capacity_type.clone(),
                n.zone.clone(),
                bar(n.cpu_requested_milli, n.cpu_allocatable_milli, style),
                bar(n.memory_requested_bytes, n.memory_allocatable_bytes, style),
                n.price.map_or_else(|| "unknown".into(), |p| p.display()),
                n.age_seconds
                    .map_or_else(|| "<unknown>".into(), facts::human_duration),
                n.provisioner.clone().unwrap_or_else(|| "<none>".into()),
                n.status.join(","),
                n.pods.to_string(),
                format!(
                    "cpu {}/{} mem {}/{}",
                    karpenter::api::quantity::format_milli("cpu", n.cpu_requested_milli),
                    karpenter::api::quantity::format_milli("cpu", n.cpu_allocatable_milli),
                    gib(n.memory_requested_bytes),
                    gib(n.memory_allocatable_bytes)
                ),
                n.instance_id.clone().unwrap_or_else(|| "<none>".into()),
            ]);
        }
        let mut out = if wide {
            crate::table::render(&rows, "")
        } else {
            let narrow: Vec<[String; 10]> = rows
                .into_iter()
                .map(|r| {
                    let mut it = r.into_iter();
                    std::array::from_fn(|_| it.next().unwrap_or_default())
                })
                .collect();
            crate::table::render(&narrow, "")
        };
        let s = &self.summary;
        let le = if s.upper_bound { "<=" } else { "" };
        out.push_str(&format!(
            "\n{} node(s): {le}{:.4} USD/hour, {le}{:.2} USD/month ({HOURS_PER_MONTH} h)\n",
            s.nodes, s.price_per_hour, s.price_per_month
        ));
        if s.upper_bound {
            out.push_str(
                "<=: some spot prices are not known offline; those nodes are counted at their \
                 on-demand price\n",
            );
        }
        if !s.unpriced.is_empty() {
            out.push_str(&format!(
                "not priced (instance type not in the catalog): {}\n",
                s.unpriced.join(", ")
            ));
        }
        out
    }
}

/// Runs `nodes`.
pub fn run(
    args: &NodesArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    style: Style,
) -> Result<Status> {
    let catalog = args.catalog.load()?;
    let inv = source::load(&args.files.files(), &args.kube, stdin)?;
    let now = facts::parse_now(args.now.as_deref())?;
    let v = view(&inv, &catalog, args.provisioner.as_deref(), now);
    match args.output {
        NodesOutput::Table | NodesOutput::Wide => stdout
            .write_all(v.render(args.output == NodesOutput::Wide, style).as_bytes())
            .map_err(Error::Write)?,
        NodesOutput::Json => {
            serde_json::to_writer_pretty(&mut *stdout, &v).map_err(Error::Json)?;
            writeln!(stdout).map_err(Error::Write)?;
        }
        NodesOutput::Yaml => {
            let text = serde_yaml::to_string(&v)
                .map_err(|e| Error::Simulate(format!("failed to write YAML: {e}")))?;
            stdout.write_all(text.as_bytes()).map_err(Error::Write)?;
        }
    }
    for n in &inv.notes {
        // Notes are caveats, not output: stderr keeps the table parseable.
        eprintln!("note: {n}");
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_tenths_and_say_the_percentage() {
        let plain = Style { color: false };
        assert_eq!(bar(0, 2000, plain), "[----------]   0%");
        assert_eq!(bar(900, 2000, plain), "[#####-----]  45%");
        assert_eq!(bar(2000, 2000, plain), "[##########] 100%");
        // Over-committed (a bound pod the scheduler squeezed in) still fits the column.
        assert_eq!(bar(3000, 2000, plain), "[##########] 150%");
        assert_eq!(bar(5, 0, plain), "[          ]    -");
        assert!(bar(1900, 2000, Style { color: true }).contains("\x1b[31m"));
    }
}
