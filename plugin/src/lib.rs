#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! `kubectl karpenter`: a kubectl plugin for Karpenter Provisioners and AWSNodeTemplates.
//!
//! ```text
//!  -f FILE|DIR|-  ──> manifest (read, split into documents) ──> validate (dispatch on kind)
//!                                                                  │ karpenter::api: decode,
//!                                                                  │ default, validate
//!                                                                  v
//!                                                        report (text or JSON) ──> stdout
//! ```
//!
//! `explain` and `nodes` read the cluster (or a support bundle) through [`source`] into the
//! controller's own cluster index; [`explain`] re-runs the controller's engine and rules on it,
//! [`nodes`] shows the per-node view, both with the node facts of [`facts`].
//!
//! Start with [`cli::Cli`] (the command line) and [`run`]; `validate` lives in [`validate`],
//! `simulate` (the packing engine on manifests, or on the embedded demo) in [`simulate`],
//! `walkthrough` (the controller's lifecycle loops on a scenario, offline) in [`walkthrough`],
//! file reading and YAML splitting in [`manifest`], the indentation hints for YAML syntax
//! errors in [`indentation`], and the output in [`report`]. The binary (`main.rs`) only parses
//! arguments, calls [`run`] and maps the result to an exit code.

pub mod cli;
pub mod completion;
pub mod error;
pub mod explain;
pub mod facts;
pub mod indentation;
pub mod manifest;
pub mod nodes;
pub mod report;
pub mod simulate;
pub mod source;
pub mod table;
pub mod validate;
pub mod walkthrough;

use std::io::{Read, Write};

pub use error::{Error, Result};

use cli::{Cli, Command};
use report::Style;

/// Exit code when everything checked is valid.
pub const EXIT_OK: u8 = 0;
/// Exit code when any object is invalid or a file has a syntax error.
pub const EXIT_INVALID: u8 = 1;
/// Exit code for usage errors and unreadable input.
pub const EXIT_ERROR: u8 = 2;

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything checked is valid (warnings allowed).
    Success,
    /// Something is invalid.
    Invalid,
}

// === impl Status ===

impl Status {
    /// The process exit code for this status.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Success => EXIT_OK,
            Status::Invalid => EXIT_INVALID,
        }
    }
}

/// Runs a parsed command line against the given streams. Results go to `stdout`; an [`Error`]
/// means the command could not run and is for the caller to print on stderr.
pub fn run(
    cli: &Cli,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    style: Style,
) -> Result<Status> {
    match &cli.command {
        Command::Validate(args) => validate::run(args, stdin, stdout, style),
        Command::Simulate(args) => simulate::run(args, stdin, stdout, style),
        Command::Walkthrough(args) => walkthrough::run(args, stdin, stdout),
        Command::Explain(args) => explain::run(args, stdin, stdout),
        Command::Nodes(args) => nodes::run(args, stdin, stdout, style),
        Command::Completion(args) => completion::run(args, stdout),
        Command::Complete(args) => completion::complete(args, stdout),
        Command::Version => {
            writeln!(stdout, "kubectl-karpenter {}", env!("CARGO_PKG_VERSION"))
                .map_err(Error::Write)?;
            Ok(Status::Success)
        }
    }
}
