#![forbid(unsafe_code)]
//! `karpenter-webhook`: see the library's documentation and `--help`.

use std::io::Write;

use clap::Parser;
use karpenter_webhook::config::LogFormat;
use karpenter_webhook::Args;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One crypto provider in the workspace: aws-lc-rs. Already installed is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    match args.log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    match karpenter_webhook::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                karpenter_webhook::tls::error_chain(&e)
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Standard error that drops what it cannot write: a closed log pipe must never take a request
/// down with it (the default writer reports write failures with a panicking `eprintln!`).
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
