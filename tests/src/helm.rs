//! The Helm chart (`manifests/helm/karpenter/`) through the real `helm` binary (built with the
//! control plane's components), and the committed `manifests/rendered/` it produces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::controlplane::component;
use crate::{io, repo_root, E2eError};

/// The release name and namespace of the committed rendering (and of the guide).
pub const RELEASE: &str = "karpenter";

/// The placeholder cluster name of the committed rendering.
pub const PLACEHOLDER_CLUSTER_NAME: &str = "my-cluster";

/// Keys whose values the chart generates anew on every `helm template` (the webhook's CA and
/// serving certificate); [`normalize_generated`] empties them.
pub const GENERATED_KEYS: &[&str] = &["caBundle", "ca.crt", "tls.crt", "tls.key"];

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join("manifests/helm/karpenter")
}

/// The committed rendering.
pub fn rendered_file() -> PathBuf {
    repo_root().join("manifests/rendered/karpenter.yaml")
}

/// Runs the real helm with `args`, its config, cache and data folders in `home` (so nothing
/// outside the test's scratch folder is read or written), and `kubeconfig` if given.
pub fn helm(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Result<Output, E2eError> {
    let mut cmd = Command::new(component("helm")?);
    cmd.args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    if let Some(kc) = kubeconfig {
        cmd.env("KUBECONFIG", kc);
    }
    cmd.output().map_err(io("run helm"))
}

/// Like [`helm`], returning stdout, or an error with helm's stderr.
pub fn helm_ok(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Result<String, E2eError> {
    let out = helm(home, kubeconfig, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(E2eError::Command(format!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// `helm template` of the chart as release [`RELEASE`] in namespace [`RELEASE`], CRDs
/// included, with `sets` (`key=value`, each passed as `--set`).
pub fn template(home: &Path, sets: &[&str]) -> Result<String, E2eError> {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        RELEASE,
        "--include-crds",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    helm_ok(home, None, &args)
}

/// Empties the values of [`GENERATED_KEYS`] (the certificate material the chart generates), so
/// that two renderings compare equal; nothing else is changed.
pub fn normalize_generated(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let generated = GENERATED_KEYS.iter().find(|k| {
            trimmed
                .strip_prefix(**k)
                .and_then(|rest| rest.strip_prefix(": "))
                .is_some_and(|v| !v.is_empty())
        });
        match generated {
            Some(key) => {
                out.push_str(indent);
                out.push_str(key);
                out.push_str(": \"\"");
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The header of the committed rendering.
pub const RENDERED_HEADER: &str = "\
# Generated: `cargo run -p karpenter-e2e --bin render-manifests`, which runs
#   helm template karpenter manifests/helm/karpenter --namespace karpenter --include-crds \\
#     --set clusterName=my-cluster
# with every other value at its default; tests/tests/helm_chart.rs fails when this drifts.
# The webhook's CA and certificate (Secret karpenter-webhook-cert, every caBundle) are left
# empty: fill them before `kubectl apply` (README, \"Install\"), or pipe `helm template` into
# `kubectl apply -f -`, which generates them. Replace my-cluster, and add the cluster endpoint,
# CA bundle and IRSA role (see the chart's values.yaml).
";

/// What `manifests/rendered/karpenter.yaml` must contain: the header and the normalized
/// default rendering.
pub fn expected_rendering(home: &Path) -> Result<String, E2eError> {
    let set = format!("clusterName={PLACEHOLDER_CLUSTER_NAME}");
    let yaml = template(home, &[&set])?;
    Ok(format!("{RENDERED_HEADER}{}", normalize_generated(&yaml)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_empties_only_generated_values() {
        let yaml = "data:\n  ca.crt: QUJD\n  tls.key: REVG\n  other: x\nclientConfig:\n  caBundle: QUJD\n  caBundleX: y\n";
        assert_eq!(
            normalize_generated(yaml),
            "data:\n  ca.crt: \"\"\n  tls.key: \"\"\n  other: x\nclientConfig:\n  caBundle: \"\"\n  caBundleX: y\n"
        );
    }
}
