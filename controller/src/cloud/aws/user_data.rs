//! Bootstrap user data per AMI family, the SSM parameter naming each family's AMI, and the
//! content hash that names launch templates.

use std::collections::BTreeMap;

use crate::api::provisioner::Taint;
use crate::cloud::catalog::Architecture;

/// The AMI families this provider launches.
pub const SUPPORTED_AMI_FAMILIES: &[&str] = &["AL2", "Bottlerocket", "Ubuntu"];

/// What a node needs to join the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap<'a> {
    /// Cluster name.
    pub cluster_name: &'a str,
    /// API server endpoint URL.
    pub cluster_endpoint: &'a str,
    /// Cluster CA bundle, base64.
    pub ca_bundle: &'a str,
    /// Node labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Node taints.
    pub taints: &'a [Taint],
}

/// Labels in the `kubernetes.io` and `k8s.io` namespaces the kubelet may set on its own Node.
const KUBELET_ALLOWED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Whether the kubelet accepts a label in `--node-labels`: it refuses the
/// `node-restriction.kubernetes.io/` prefix and every other `kubernetes.io`/`k8s.io` label
/// outside its allow-list and the `kubelet.kubernetes.io/` and `node.kubernetes.io/` prefixes
/// (and would not start). Those labels are left to the controller, on the Node object.
pub fn kubelet_may_set(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |d: &str| {
        d == "kubernetes.io"
            || d == "k8s.io"
            || d.ends_with(".kubernetes.io")
            || d.ends_with(".k8s.io")
    };
    if !restricted(domain) {
        return true;
    }
    if domain == "node-restriction.kubernetes.io" {
        return false;
    }
    KUBELET_ALLOWED_LABELS.contains(&key)
        || domain == "kubelet.kubernetes.io"
        || domain.ends_with(".kubelet.kubernetes.io")
        || domain == "node.kubernetes.io"
        || domain.ends_with(".node.kubernetes.io")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// === impl Bootstrap ===

impl Bootstrap<'_> {
    /// `--kubelet-extra-args` for EKS's `bootstrap.sh`: node labels and taints.
    fn kubelet_extra_args(&self) -> String {
        let mut args = Vec::new();
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| kubelet_may_set(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !labels.is_empty() {
            args.push(format!("--node-labels={}", labels.join(",")));
        }
        if !self.taints.is_empty() {
            let taints: Vec<String> = self.taints.iter().map(Taint::display).collect();
            args.push(format!("--register-with-taints={}", taints.join(",")));
        }
        args.join(" ")
    }

    /// An AL2 (or Ubuntu EKS) shell script calling `/etc/eks/bootstrap.sh`.
    pub fn al2(&self) -> String {
        format!(
            "#!/bin/bash -xe\n\
             exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n\
             /etc/eks/bootstrap.sh {} --apiserver-endpoint {} --b64-cluster-ca {} \\\n  \
             --container-runtime containerd \\\n  --kubelet-extra-args {}\n",
            shell_quote(self.cluster_name),
            shell_quote(self.cluster_endpoint),
            shell_quote(self.ca_bundle),
            shell_quote(&self.kubelet_extra_args()),
        )
    }

    /// Bottlerocket TOML settings.
    pub fn bottlerocket(&self) -> String {
        let mut s = format!(
            "[settings.kubernetes]\napi-server = {}\ncluster-certificate = {}\ncluster-name = {}\n",
            toml_string(self.cluster_endpoint),
            toml_string(self.ca_bundle),
            toml_string(self.cluster_name),
        );
        let labels: Vec<(&String, &String)> = self
            .labels
            .iter()
            .filter(|(k, _)| kubelet_may_set(k))
            .collect();
        if !labels.is_empty() {
            s.push_str("\n[settings.kubernetes.node-labels]\n");
            for (k, v) in labels {
                s.push_str(&format!("{} = {}\n", toml_string(k), toml_string(v)));
            }
        }
        if !self.taints.is_empty() {
            let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for t in self.taints {
                let v = format!("{}:{}", t.value.as_deref().unwrap_or(""), t.effect);
                by_key.entry(&t.key).or_default().push(toml_string(&v));
            }
            s.push_str("\n[settings.kubernetes.node-taints]\n");
            for (k, vs) in by_key {
                s.push_str(&format!("{} = [{}]\n", toml_string(k), vs.join(", ")));
            }
        }
        s
    }

    /// The user data for an AMI family; `None` for families this provider cannot bootstrap.
    pub fn for_family(&self, family: &str) -> Option<String> {
        match family {
            "AL2" | "Ubuntu" => Some(self.al2()),
            "Bottlerocket" => Some(self.bottlerocket()),
            _ => None,
        }
    }
}

/// The SSM parameter holding the recommended AMI of a family for a Kubernetes version.
pub fn ami_parameter(
    prefix: &str,
    family: &str,
    kubernetes_version: &str,
    arch: Architecture,
) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    Some(match (family, arch) {
        ("AL2", Architecture::Amd64) => format!(
            "{prefix}/eks/optimized-ami/{kubernetes_version}/amazon-linux-2/recommended/image_id"
        ),
        ("AL2", Architecture::Arm64) => format!(
            "{prefix}/eks/optimized-ami/{kubernetes_version}/amazon-linux-2-arm64/recommended/image_id"
        ),
        ("Bottlerocket", a) => format!(
            "{prefix}/bottlerocket/aws-k8s-{kubernetes_version}/{}/latest/image_id",
            match a {
                Architecture::Amd64 => "x86_64",
                Architecture::Arm64 => "arm64",
            }
        ),
        ("Ubuntu", a) => format!(
            "{prefix}/canonical/ubuntu/eks/20.04/{kubernetes_version}/stable/current/{}/hvm/ebs-gp2/ami-id",
            a.as_str()
        ),
        _ => return None,
    })
}

/// 64-bit FNV-1a: a stable content hash (the same across builds and platforms).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn al2_calls_bootstrap_with_labels_and_taints() {
        let mut labels = BTreeMap::new();
        labels.insert(
            "karpenter.sh/provisioner-name".to_string(),
            "default".to_string(),
        );
        labels.insert("team".to_string(), "a".to_string());
        let taints = [taint("gpu", Some("true"), "NoSchedule")];
        let b = Bootstrap {
            cluster_name: "demo",
            cluster_endpoint: "https://example.com",
            ca_bundle: "Q0E=",
            labels: &labels,
            taints: &taints,
        };
        let ud = b.al2();
        assert!(ud.starts_with("#!/bin/bash"));
        assert!(ud.contains(
            "/etc/eks/bootstrap.sh 'demo' --apiserver-endpoint 'https://example.com' --b64-cluster-ca 'Q0E='"
        ), "{ud}");
        assert!(ud.contains(
            "--kubelet-extra-args '--node-labels=karpenter.sh/provisioner-name=default,team=a --register-with-taints=gpu=true:NoSchedule'"
        ), "{ud}");
    }

    #[test]
    fn bottlerocket_is_toml_settings() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_string(), "a".to_string());
        let taints = [
            taint("gpu", Some("true"), "NoSchedule"),
            taint("gpu", None, "NoExecute"),
        ];
        let b = Bootstrap {
            cluster_name: "demo",
            cluster_endpoint: "https://example.com",
            ca_bundle: "Q0E=",
            labels: &labels,
            taints: &taints,
        };
        assert_eq!(
            b.bottlerocket(),
            "[settings.kubernetes]\napi-server = \"https://example.com\"\ncluster-certificate = \"Q0E=\"\ncluster-name = \"demo\"\n\n[settings.kubernetes.node-labels]\n\"team\" = \"a\"\n\n[settings.kubernetes.node-taints]\n\"gpu\" = [\"true:NoSchedule\", \":NoExecute\"]\n"
        );
        assert_eq!(b.for_family("Windows2019"), None);
    }

    #[test]
    fn node_labels_leave_out_what_the_kubelet_refuses_to_set_itself() {
        let mut labels = BTreeMap::new();
        for (k, v) in [
            ("team", "a"),
            ("karpenter.sh/provisioner-name", "default"),
            ("node.kubernetes.io/instance-type", "m5.large"),
            ("topology.kubernetes.io/zone", "us-east-1a"),
            ("kubelet.kubernetes.io/x", "y"),
            ("node-restriction.kubernetes.io/team", "a"),
            ("node-role.kubernetes.io/worker", ""),
            ("example.k8s.io/x", "y"),
            ("kubernetes.io/role", "worker"),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        let b = Bootstrap {
            cluster_name: "demo",
            cluster_endpoint: "https://example.com",
            ca_bundle: "Q0E=",
            labels: &labels,
            taints: &[],
        };
        let ud = b.al2();
        assert!(ud.contains(
            "--node-labels=karpenter.sh/provisioner-name=default,kubelet.kubernetes.io/x=y,node.kubernetes.io/instance-type=m5.large,team=a,topology.kubernetes.io/zone=us-east-1a'"
        ), "{ud}");
        let toml = b.bottlerocket();
        for refused in [
            "node-restriction.kubernetes.io/team",
            "node-role.kubernetes.io/worker",
            "example.k8s.io/x",
            "kubernetes.io/role",
        ] {
            assert!(!ud.contains(refused), "{refused} in {ud}");
            assert!(!toml.contains(refused), "{refused} in {toml}");
            assert!(!kubelet_may_set(refused));
        }
        assert!(toml.contains("\"team\" = \"a\""), "{toml}");
    }

    #[test]
    fn ami_parameters() {
        assert_eq!(
            ami_parameter("/aws/service/", "AL2", "1.27", Architecture::Arm64).unwrap(),
            "/aws/service/eks/optimized-ami/1.27/amazon-linux-2-arm64/recommended/image_id"
        );
        assert_eq!(
            ami_parameter("/t", "Bottlerocket", "1.27", Architecture::Amd64).unwrap(),
            "/t/bottlerocket/aws-k8s-1.27/x86_64/latest/image_id"
        );
        assert_eq!(
            ami_parameter("/t", "Custom", "1.27", Architecture::Amd64),
            None
        );
    }

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&["x"]), fnv1a(&["x"]));
    }
}
