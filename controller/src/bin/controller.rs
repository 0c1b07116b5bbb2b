#![forbid(unsafe_code)]
//! `karpenter-controller`: the provisioning and lifecycle controllers.
//!
//! The library's API rules, catalog and packing engine are in place; the loops that watch the
//! cluster and call EC2 land with the lifecycle work. Until then this binary only reports its
//! version, so that packaging (image, Helm chart) can be exercised without pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("karpenter-controller {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") => {
            println!(
                "karpenter-controller {}\n\nUsage: karpenter-controller [--version]\n\n\
                 The provisioning and lifecycle controllers are not available in this build yet.\n\
                 Use `kubectl karpenter validate` to check Provisioners offline.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "error: the provisioning and lifecycle controllers are not available in this build yet; \
                 run `karpenter-controller --help`"
            );
            ExitCode::from(2)
        }
    }
}
