//! `kubectl karpenter simulate`: pack pending pods onto new instances offline, with the
//! controller's own packing engine, and show what would launch, at what price, and why pods
//! that fit nowhere do not fit.
//!
//! Provisioners are checked with the same rules as `validate` (and the webhook) first: an
//! invalid Provisioner would never reach the cluster, so it is reported and nothing is packed.
//! Without `-f`, the embedded demo runs: the getting-started Provisioner and `inflate` scaled to
//! 10 replicas.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::ValueEnum;
use karpenter::scheduling::simulate::{simulate, SimulateOptions};
use karpenter::scheduling::Decision;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::{self, Content, FilenameArgs, Manifest};
use crate::report::{Finding, Style, ValidationReport};
use crate::source::KubeArgs;
use crate::validate::{check, classify, Target};
use crate::Status;

/// The embedded demo's Provisioner (the getting-started guide's, written correctly).
pub const DEMO_PROVISIONER: &str = include_str!("../../manifests/examples/provisioner.yaml");
/// The embedded demo's workload (`inflate`, scaled by the demo to [`DEMO_REPLICAS`]).
pub const DEMO_WORKLOAD: &str = include_str!("../../manifests/examples/inflate.yaml");
/// Replicas of `inflate` in the embedded demo, as in the guide's walkthrough.
pub const DEMO_REPLICAS: i64 = 10;

/// Examples shown at the end of `simulate --help`.
pub const EXAMPLES: &str = "\
Examples:
  # The cluster's pending pods, and what a new Deployment would add
  kubectl karpenter simulate
  kubectl karpenter simulate -f deployment.yaml

  # The embedded demo: the getting-started Provisioner and inflate x10
  kubectl karpenter simulate --offline

  # Your Provisioners and workloads only, with the built-in AWS us-east-1 catalog
  kubectl karpenter simulate --offline -f provisioners.yaml -f workloads/

  # Scale a Deployment first, as `kubectl scale` would
  kubectl karpenter simulate --offline -f manifests/ --scale deployment/inflate=25

  # Your own instance types (see the catalog file format in the README), as JSON
  kubectl karpenter simulate --offline -f scenario.yaml --instance-types types.yaml -o json

Without --offline, the cluster of the current kubeconfig context (or --context, --kubeconfig)
is read too: its pending pods, Nodes with their pods, Provisioners and DaemonSets.

Spot prices are not known offline: spot nodes are priced at their on-demand price (shown as
an upper bound, <=) unless --assume-spot-discount is given.

Exit status: 0 when every pending pod fits, 1 when some pod fits nowhere or a Provisioner is
invalid, 2 when a file cannot be read or the command line is wrong.";

/// Output formats of `simulate`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SimulateOutput {
    /// A kubectl-style table with reasons.
    #[default]
    Table,
    /// The Decision as one JSON document.
    Json,
    /// The Decision as YAML.
    Yaml,
}

/// Arguments of `simulate`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct SimulateArgs {
    /// Provisioners, Pods, Deployments, DaemonSets and Nodes to read (files, directories, `-`
    /// for standard input); repeat or separate with commas. Without it, the embedded demo runs.
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

    /// Set a Deployment's replicas before packing: `deployment/NAME=N` or `NAME=N` (repeatable).
    #[arg(long, value_name = "DEPLOYMENT=N")]
    pub scale: Vec<String>,

    /// The instance-type catalog.
    #[command(flatten)]
    pub catalog: crate::facts::CatalogArgs,

    /// Skip the price-improvement pass (plain first-fit-decreasing, as Karpenter packs).
    #[arg(long)]
    pub no_improve: bool,

    /// Read only the files given with -f, not the cluster (with no -f: the embedded demo).
    #[arg(long)]
    pub offline: bool,

    /// The cluster whose pending pods, Nodes, Provisioners and DaemonSets are added.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Output format.
    #[arg(short = 'o', long, value_name = "FORMAT", value_enum, default_value_t = SimulateOutput::Table)]
    pub output: SimulateOutput,
}

/// A `--scale` argument that could not be understood, or that names no Deployment.
fn bad_scale(arg: &str, why: &str) -> Error {
    Error::Usage(format!(
        "--scale {arg:?}: {why}; write deployment/NAME=N or NAME=N, e.g. --scale deployment/inflate=10"
    ))
}

fn parse_scale(arg: &str) -> Result<(String, i64)> {
    let (name, n) = arg
        .split_once('=')
        .ok_or_else(|| bad_scale(arg, "missing '='"))?;
    let name = name
        .strip_prefix("deployment/")
        .or_else(|| name.strip_prefix("deployments/"))
        .or_else(|| name.strip_prefix("deploy/"))
        .unwrap_or(name)
        .trim();
    if name.is_empty() || name.contains('/') {
        return Err(bad_scale(
            arg,
            "the Deployment name is missing or not a name",
        ));
    }
    let n: i64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad_scale(arg, "the replica count must be a whole number, 0 or more"))?;
    Ok((name.to_string(), n))
}

/// Runs `simulate`.
pub fn run(
    args: &SimulateArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    style: Style,
) -> Result<Status> {
    let scales = args
        .scale
        .iter()
        .map(|s| parse_scale(s))
        .collect::<Result<Vec<_>>>()?;
    // Checked before any I/O: a bad flag is a usage error whatever the input.
    let catalog = args.catalog.load()?;
    let demo = args.offline && args.filenames.is_empty();
    let live = if args.offline {
        Vec::new()
    } else {
        live_documents(&args.kube)?
    };
    let manifests = if demo {
        vec![
            Manifest::new("<embedded demo: provisioner.yaml>", DEMO_PROVISIONER),
            Manifest::new("<embedded demo: inflate.yaml>", DEMO_WORKLOAD),
        ]
    } else if args.filenames.is_empty() {
        Vec::new()
    } else {
        manifest::load(
            &FilenameArgs {
                filenames: args.filenames.clone(),
                recursive: args.recursive,
            },
            stdin,
        )?
    };
    let mut scales = scales;
    if demo && !scales.iter().any(|(n, _)| n == "inflate") {
        scales.push(("inflate".into(), DEMO_REPLICAS));
    }

    // Syntax errors and invalid Karpenter objects stop the simulation, reported as `validate`
    // reports them.
    let mut docs: Vec<Value> = Vec::new();
    let mut problems = ValidationReport::default();
    for d in manifests.iter().flat_map(manifest::documents) {
        match &d.content {
            Content::SyntaxError(_) => problems.findings.push(check(&d)),
            Content::Value(v) => {
                if matches!(
                    classify(v),
                    Target::Provisioner | Target::NodeTemplate | Target::Unsupported(_)
                ) {
                    let finding = check(&d);
                    if matches!(&finding, Finding::Object(o) if !o.valid) {
                        problems.findings.push(finding);
                    }
                }
                docs.push(v.clone());
            }
        }
    }
    for v in live {
        if matches!(classify(&v), Target::Provisioner) {
            let d = manifest::Document {
                file: "<cluster>".into(),
                index: 0,
                item: None,
                content: Content::Value(v.clone()),
            };
            let finding = check(&d);
            if matches!(&finding, Finding::Object(o) if !o.valid) {
                problems.findings.push(finding);
            }
        }
        docs.push(v);
    }
    if !problems.findings.is_empty() {
        problems.write_text(stdout, style)?;
        writeln!(
            stdout,
            "nothing was simulated: fix the problems above first"
        )
        .map_err(Error::Write)?;
        return Ok(Status::Invalid);
    }
    for (name, replicas) in &scales {
        let mut found = false;
        for doc in docs.iter_mut() {
            if doc["kind"] == "Deployment" && doc["metadata"]["name"] == name.as_str() {
                doc["spec"]["replicas"] = Value::from(*replicas);
                found = true;
            }
        }
        if !found {
            return Err(bad_scale(
                &format!("{name}={replicas}"),
                "no Deployment of that name is in the input",
            ));
        }
    }

    let mut options = SimulateOptions::default();
    options.scheduler.improve = !args.no_improve;
    let decision =
        simulate(&docs, catalog, &options).map_err(|e| Error::Simulate(e.to_string()))?;
    write_decision(&decision, args.output, demo, stdout)?;
    Ok(if decision.unschedulable.is_empty() {
        Status::Success
    } else {
        Status::Invalid
    })
}

/// The live cluster's part of a simulation: its Provisioners, Nodes, DaemonSets, the pods
/// bound to nodes (they fill them) and the pending pods (unbound workload pods).
fn live_documents(kube: &KubeArgs) -> Result<Vec<Value>> {
    let (docs, _, notes) = crate::source::read_live(kube)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(docs
        .into_iter()
        .filter(|d| match d["kind"].as_str() {
            Some("Provisioner" | "Node" | "DaemonSet") => true,
            Some("Pod") => serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(d.clone())
                .is_ok_and(|p| {
                    use karpenter::cluster::pods;
                    pods::wants_a_node(&p)
                        || pods::node_name(&p).is_some() && !pods::is_terminal(&p)
                }),
            _ => false,
        })
        .collect())
}

fn write_decision(
    decision: &Decision,
    output: SimulateOutput,
    demo: bool,
    stdout: &mut dyn Write,
) -> Result<()> {
    match output {
        SimulateOutput::Table => {
            if demo {
                writeln!(
                    stdout,
                    "embedded demo: the getting-started Provisioner (manifests/examples/provisioner.yaml) \
                     and inflate scaled to {DEMO_REPLICAS} replicas of 1 CPU\n"
                )
                .map_err(Error::Write)?;
            }
            stdout
                .write_all(decision.render_table().as_bytes())
                .map_err(Error::Write)
        }
        SimulateOutput::Json => {
            serde_json::to_writer_pretty(&mut *stdout, decision).map_err(Error::Json)?;
            writeln!(stdout).map_err(Error::Write)
        }
        SimulateOutput::Yaml => {
            let text = serde_yaml::to_string(decision)
                .map_err(|e| Error::Simulate(format!("failed to write YAML: {e}")))?;
            stdout.write_all(text.as_bytes()).map_err(Error::Write)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_arguments() {
        assert_eq!(
            parse_scale("deployment/inflate=10").ok(),
            Some(("inflate".into(), 10))
        );
        assert_eq!(parse_scale("inflate=0").ok(), Some(("inflate".into(), 0)));
        assert_eq!(parse_scale("deploy/web = 3").ok(), Some(("web".into(), 3)));
        for bad in ["inflate", "inflate=-1", "inflate=x", "=3", "pod/a/b=1"] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
    }

    fn run_to_string(args: &SimulateArgs) -> (Status, String) {
        let mut out = Vec::new();
        let status = run(
            args,
            &mut std::io::empty(),
            &mut out,
            Style { color: false },
        );
        let status = status.unwrap_or_else(|e| panic!("{e}"));
        (status, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn the_embedded_demo_packs_inflate_at_the_best_price() {
        let (status, out) = run_to_string(&SimulateArgs {
            output: SimulateOutput::Json,
            offline: true,
            ..Default::default()
        });
        assert_eq!(status, Status::Success, "{out}");
        let d: Value = serde_json::from_str(&out).unwrap_or_default();
        let pods: usize = d["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|n| n["pods"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(pods, 10, "{out}");
        let total = d["totalPricePerHour"].as_f64().unwrap_or(0.0);
        // On-demand prices: m5.large 0.096, m5.2xlarge 0.384. Spot offerings have no known
        // price, so a spot node is priced (at most) at its on-demand price.
        assert!((total - 0.672).abs() < 1e-9, "{out}");
    }

    #[test]
    fn without_improvement_it_packs_like_karpenter() {
        let (_, out) = run_to_string(&SimulateArgs {
            output: SimulateOutput::Json,
            no_improve: true,
            offline: true,
            ..Default::default()
        });
        let d: Value = serde_json::from_str(&out).unwrap_or_default();
        let total = d["totalPricePerHour"].as_f64().unwrap_or(0.0);
        assert!((total - 0.768).abs() < 1e-9, "{out}");
    }
}
