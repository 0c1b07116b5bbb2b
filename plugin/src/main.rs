#![forbid(unsafe_code)]
//! `kubectl-karpenter`: parse the command line, run it, map the outcome to an exit code.

use std::error::Error as _;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use kubectl_karpenter::{cli::Cli, report::Style, run, EXIT_ERROR, EXIT_INVALID};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the process (aws-lc-rs), before any client is built.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: cannot install the TLS crypto provider");
        return ExitCode::from(EXIT_ERROR);
    }
    let stdout = io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out = stdout.lock();
    let result = run(&cli, &mut io::stdin().lock(), &mut out, Style { color });
    let _ = out.flush();
    match result {
        Ok(status) => ExitCode::from(status.exit_code()),
        // A reader that went away (`... | head`) is not an error worth a message; exit as a
        // process killed by SIGPIPE would (128 + 13).
        Err(kubectl_karpenter::Error::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(141)
        }
        Err(e @ kubectl_karpenter::Error::ObjectNotFound { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
