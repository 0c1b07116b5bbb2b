//! The command line: `kubectl karpenter <COMMAND>`, one subcommand per module.
//!
//! kubectl runs any `kubectl-<name>` executable on `PATH` as `kubectl <name>`, passing the
//! remaining arguments through, so this binary is both `kubectl-karpenter` and
//! `kubectl karpenter`.

use clap::{Parser, Subcommand, ValueEnum};

use crate::simulate::{self, SimulateArgs};
use crate::validate::{self, ValidateArgs};
use crate::walkthrough::{self, WalkthroughArgs};

/// Top-level help text after the commands.
const AFTER_HELP: &str = "\
Examples:
  kubectl karpenter validate -f provisioner.yaml
  kubectl get provisioners -o yaml | kubectl karpenter validate -f -
  kubectl karpenter simulate
  kubectl karpenter simulate -f provisioner.yaml -f deployment.yaml -o json
  kubectl karpenter walkthrough

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
        long_about = "Pack pending pods onto new instances offline with the controller's own \
packing engine: existing Nodes (and pods bound to them) first, then new nodes from each \
Provisioner in weight order, cheapest instance types first. Reads Provisioners, Pods, \
Deployments (expanded to their replicas), DaemonSets and Nodes. Provisioners are defaulted and \
validated first, like the webhook does. Without -f, runs the embedded demo.",
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

    /// Print the plugin's version.
    Version,
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
