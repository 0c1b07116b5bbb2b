//! `kubectl karpenter walkthrough`: the getting-started guide's walkthrough (or any scenario
//! file) played offline by the controller's own lifecycle loops over an in-memory cluster, the
//! `sim` cloud provider and a virtual clock, printed as the controller's log.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::ValueEnum;
use karpenter::simulator::{self, DEFAULT_SCENARIO};

use crate::error::{Error, Result};
use crate::Status;

/// Examples shown at the end of `walkthrough --help`.
pub const EXAMPLES: &str = "\
Examples:
  # The guide: Provisioner, inflate at 0, scale to 10, delete, node removed 30 s later
  kubectl karpenter walkthrough

  # Your own scenario (format: manifests/scenarios/README.md), every decision as JSON
  kubectl karpenter walkthrough -f my-scenario.yaml -o json

Exit status: 0 when the run ends with no node and no instance left, 1 when some are left,
2 when the scenario cannot be read or is invalid.";

/// Output formats of `walkthrough`.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WalkthroughOutput {
    /// The timeline in the controller's log form.
    #[default]
    Text,
    /// The timeline, every decision, the Events and the final state, as one JSON document.
    Json,
}

/// Arguments of `walkthrough`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct WalkthroughArgs {
    /// A scenario file (`-` for standard input). Without it, the guide's walkthrough runs.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_name = "FORMAT", value_enum, default_value_t = WalkthroughOutput::Text)]
    pub output: WalkthroughOutput,
}

/// Runs `walkthrough`.
pub fn run(args: &WalkthroughArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<Status> {
    let text = match &args.filename {
        None => DEFAULT_SCENARIO.to_string(),
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            stdin.read_to_string(&mut s).map_err(Error::ReadStdin)?;
            s
        }
        Some(p) => std::fs::read_to_string(p).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(p.clone())
            } else {
                Error::Read {
                    path: p.clone(),
                    source,
                }
            }
        })?,
    };
    let w = simulator::run(&text).map_err(|e| {
        let mut m = e.to_string();
        let mut s = std::error::Error::source(&e);
        while let Some(x) = s {
            m.push_str(&format!(": {x}"));
            s = x.source();
        }
        Error::Simulate(m)
    })?;
    match args.output {
        WalkthroughOutput::Text => stdout
            .write_all(w.render().as_bytes())
            .map_err(Error::Write)?,
        WalkthroughOutput::Json => {
            serde_json::to_writer_pretty(&mut *stdout, &w).map_err(Error::Json)?;
            writeln!(stdout).map_err(Error::Write)?;
        }
    }
    Ok(
        if w.final_state.nodes.is_empty() && w.final_state.instances.is_empty() {
            Status::Success
        } else {
            Status::Invalid
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(args: &WalkthroughArgs) -> (Status, String) {
        let mut buf = Vec::new();
        let s = run(args, &mut std::io::empty(), &mut buf).unwrap();
        (s, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn the_default_walkthrough_prints_the_guides_story() {
        let (status, text) = out(&WalkthroughArgs::default());
        assert_eq!(status, Status::Success);
        for needle in [
            "STEP\tscenario\tkubectl scale deployment inflate --replicas 10",
            "INFO\tcontroller.provisioning/default\tFound 10 provisionable pod(s)",
            "Computed packing for",
            "Launched instance: i-",
            "Added TTL to empty node ip-",
            "Triggering termination after 30s for empty node ip-",
            "INFO\tcontroller.termination\tCordoned node ip-",
            "INFO\tcontroller.termination\tDeleted node ip-",
            "final: 0 node(s), 0 instance(s)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }

    #[test]
    fn json_carries_decisions_and_final_state() {
        let (_, text) = out(&WalkthroughArgs {
            filename: None,
            output: WalkthroughOutput::Json,
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["decisions"][0]["pods"], 10);
        assert!(v["decisions"][0]["decision"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty()));
        assert_eq!(v["final"]["nodes"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["final"]["instances"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn a_missing_or_bad_scenario_is_a_clear_error() {
        let mut buf = Vec::new();
        let e = run(
            &WalkthroughArgs {
                filename: Some(PathBuf::from("/nonexistent.yaml")),
                output: WalkthroughOutput::Text,
            },
            &mut std::io::empty(),
            &mut buf,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent.yaml"), "{e}");
        let e = run(
            &WalkthroughArgs {
                filename: Some(PathBuf::from("-")),
                output: WalkthroughOutput::Text,
            },
            &mut "steps:\n  - wait: later\n".as_bytes(),
            &mut buf,
        )
        .unwrap_err();
        assert!(e.to_string().contains("steps[0].wait"), "{e}");
    }
}
