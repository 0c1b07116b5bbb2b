//! The command line: `kubectl karpenter <COMMAND>`, one subcommand per module.
//!
//! kubectl runs any `kubectl-<name>` executable on `PATH` as `kubectl <name>`, passing the
//! remaining arguments through, so this binary is both `kubectl-karpenter` and
//! `kubectl karpenter`.

use clap::{Parser, Subcommand, ValueEnum};

use crate::completion::{self, CompleteArgs, CompletionArgs};
use crate::explain::{self, ExplainArgs};
use crate::nodes::{self, NodesArgs};
use crate::simulate::{self, SimulateArgs};
use crate::validate::{self, ValidateArgs};
use crate::walkthrough::{self, WalkthroughArgs};

/// Top-level help text after the commands.
const AFTER_HELP: &str = "\
Examples:
  kubectl karpenter explain pod/inflate-6b88c9fb68-4xk2q
  kubectl karpenter explain node/ip-192-168-12-34.ec2.internal
  kubectl karpenter nodes
  kubectl karpenter validate -f provisioner.yaml
  kubectl get provisioners -o yaml | kubectl karpenter validate -f -
  kubectl karpenter simulate -f deployment.yaml
  kubectl karpenter simulate --offline -f provisioner.yaml -f deployment.yaml -o json
  kubectl karpenter walkthrough

Commands that read a cluster take kubectl's flags (--kubeconfig, --context, --cluster, --user,
-n/--namespace, -A, --request-timeout) or files with -f (a support bundle) instead.

Run `kubectl karpenter <COMMAND> --help` for a command's flags and examples.";

/// `kubectl karpenter`: work with Karpenter Provisioners and AWSNodeTemplates from the command
/// line.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "kubectl-karpenter",
    bin_name = "kubectl karpenter",
    version,
    about = "Work with Karpenter Provisioners and AWSNodeTemplates",
    after_help = AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Explain a pod (why pending, or why on its node), a node (why it exists, when it goes) or
    /// a Provisioner (what it allows).
    #[command(
        long_about = "Explain, with the controller's own engine and rules, why a pod is pending \
(per Provisioner in weight order, the first constraint that failed, with both sides' values) or \
where it went and why; why a node exists (the pods and the Decision that launched it, why this \
instance type), when it is deleted as empty or expires and what blocks that, or what holds its \
drain; and what a Provisioner allows after defaulting, how much of its limits is used, and the \
nodes it owns. Reads the live cluster (kubectl's flags) or files (-f).",
        after_help = explain::EXAMPLES
    )]
    Explain(ExplainArgs),

    /// Show every node with its requested CPU and memory, price, age, Provisioner and state.
    #[command(
        long_about = "A per-node view: bars of the CPU and memory that the pods on each node \
request against its allocatable, instance type, capacity type, zone, price per hour, age, \
Provisioner and state (cordoned, empty, terminating), and the cluster's total price per hour \
and per month. Reads the live cluster (kubectl's flags) or files (-f).",
        after_help = nodes::EXAMPLES
    )]
    Nodes(NodesArgs),

    /// Check Provisioner and AWSNodeTemplate manifests before applying them.
    #[command(
        long_about = "Check Provisioner and AWSNodeTemplate manifests the way the webhook would: \
decode, apply defaults, validate, and say how to fix each problem.\n\n\
Karpenter objects (apiVersion karpenter.sh/v1alpha5 Provisioner, karpenter.k8s.aws/v1alpha1 \
AWSNodeTemplate) are checked; other objects in the same files are skipped. YAML syntax errors \
are reported with file, line and column, and a hint when a line is indented wrongly.",
        after_help = validate::EXAMPLES
    )]
    Validate(ValidateArgs),

    /// Show which instances pending pods would launch, at what price, and why pods fit nowhere.
    #[command(
        long_about = "Pack pending pods onto new instances with the controller's own packing \
engine: existing Nodes (and pods bound to them) first, then new nodes from each Provisioner in \
weight order, cheapest instance types first. Reads the cluster's pending pods, Nodes, \
Provisioners and DaemonSets (kubectl's flags) and adds the files given with -f: Provisioners, \
Pods, Deployments (expanded to their replicas), DaemonSets and Nodes. With --offline, reads \
only the files; with --offline and no -f, runs the embedded demo. Provisioners are defaulted \
and validated first, like the webhook does.",
        after_help = simulate::EXAMPLES
    )]
    Simulate(SimulateArgs),

    /// Play the getting-started walkthrough (or a scenario file) offline, as the controller's log.
    #[command(
        long_about = "Play the getting-started guide's walkthrough offline with the controller's own \
lifecycle loops: the guide's Provisioner, the inflate Deployment at 0 replicas, scaled to 10, \
nodes launched and pods bound, the Deployment deleted, and 30 s later the empty node cordoned \
and deleted. Runs over an in-memory cluster, the sim cloud provider (the built-in AWS \
catalog and prices) and a virtual clock, so it takes well under a second. -f plays a \
scenario file instead (timed steps holding ordinary Kubernetes YAML).",
        after_help = walkthrough::EXAMPLES
    )]
    Walkthrough(WalkthroughArgs),

    /// Print a shell completion script (bash, zsh or fish).
    #[command(after_help = completion::EXAMPLES)]
    Completion(CompletionArgs),

    /// Print the plugin's version.
    Version,

    /// Completions for kubectl's plugin completion (`kubectl_complete-karpenter`).
    #[command(name = "__complete", hide = true)]
    Complete(CompleteArgs),
}

/// Output formats, as kubectl's `-o/--output`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-karpenter").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn filenames_repeat_and_split_on_commas() {
        let cli = parse(&[
            "validate",
            "-f",
            "a.yaml,b.yaml",
            "--filename",
            "-",
            "-R",
            "-o",
            "json",
        ]);
        let Ok(Cli {
            command: Command::Validate(args),
        }) = cli
        else {
            unreachable!("{cli:?}")
        };
        assert_eq!(
            args.files.filenames,
            [
                PathBuf::from("a.yaml"),
                PathBuf::from("b.yaml"),
                PathBuf::from("-")
            ]
        );
        assert!(args.files.recursive);
        assert_eq!(args.output, OutputFormat::Json);
    }

    #[test]
    fn text_is_the_default_output_and_a_file_is_required() {
        let cli = parse(&["validate", "-f", "a.yaml"]);
        assert!(
            matches!(cli, Ok(Cli { command: Command::Validate(ref a) }) if a.output == OutputFormat::Text)
        );
        assert!(parse(&["validate"]).is_err());
        assert!(parse(&["validate", "-f", "a", "-o", "yaml"]).is_err());
        assert!(matches!(
            parse(&["version"]),
            Ok(Cli {
                command: Command::Version
            })
        ));
    }
}
