#![forbid(unsafe_code)]
//! `dev-cluster`: the test suite's control plane, started by hand. etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (the kubelet of every Node labelled
//! `type=kwok`) on 127.0.0.1, our CRDs installed, and a moto server as EC2, until Ctrl-C.
//!
//! ```sh
//! cargo run -p karpenter-e2e --bin dev-cluster
//! ```

use std::process::ExitCode;

use karpenter_e2e::controlplane::{ControlPlane, Options};

fn main() -> ExitCode {
    karpenter_e2e::install_crypto();
    let no_moto = std::env::args().any(|a| a == "--no-moto");
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: dev-cluster [--no-moto]\n\nStarts a real control plane (etcd, kube-apiserver, \
             kube-controller-manager, kube-scheduler, kwok) and a moto EC2 server on 127.0.0.1, \
             prints the environment to use them, and runs until Ctrl-C."
        );
        return ExitCode::SUCCESS;
    }
    let cp = match ControlPlane::start(Options::default().controller_manager().scheduler().kwok()) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("export KUBECONFIG={}", cp.kubeconfig.display());
    println!(
        "export PATH={}:$PATH   # kubectl v1.36.3, helm, krew",
        karpenter_e2e::controlplane::component_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    if !no_moto {
        match cp.start_moto() {
            Ok(endpoint) => {
                println!("export AWS_ENDPOINT_URL_EC2={endpoint} AWS_ENDPOINT_URL_SSM={endpoint} AWS_ENDPOINT_URL_IAM={endpoint}");
                println!("export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1");
            }
            Err(e) => eprintln!("warning: no moto server: {e}"),
        }
    }
    println!(
        "# Nodes labelled type=kwok are run by kwok; logs in {}",
        cp.dir.display()
    );
    println!("# Ctrl-C stops everything.");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
