//! Bootstrap user data per AMI family, the SSM parameter naming each family's AMI, and the
//! content hash that names launch templates.

use std::collections::BTreeMap;

use crate::api::provisioner::{KubeletConfiguration, Taint};
use crate::cloud::catalog::{Architecture, AwsInstanceTypeInfo};
use crate::scheduling::resources::{ResourceList, PODS};
use crate::scheduling::InstanceType;

/// Why an AWSNodeTemplate's `userData` cannot be merged with ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// Bottlerocket user data that is not TOML.
    #[error("userData is not valid TOML (Bottlerocket settings): {0}")]
    Toml(String),
    /// A MIME multi-part document without a usable boundary.
    #[error("userData is a MIME multi-part document but {0}")]
    Mime(String),
}

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
    /// Kubelet settings of the instance types this user data boots; `None` leaves the AMI's
    /// defaults (the planned allocatable is then not guaranteed).
    pub kubelet: Option<&'a KubeletArgs>,
}

/// The kubelet settings one instance type boots with: exactly what the engine planned with
/// ([`InstanceType::capacity_for`] and [`InstanceType::reservations`] under the provisioner's
/// `kubeletConfiguration`), so the node's allocatable is what the engine packed against.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeletArgs {
    /// `--max-pods` (with `--use-max-pods false`, so bootstrap.sh does not pick its own).
    pub max_pods: i64,
    /// `--pods-per-core` (already folded into `max_pods`; passed so the kubelet agrees).
    pub pods_per_core: Option<i32>,
    /// `--kube-reserved`, resource to quantity.
    pub kube_reserved: BTreeMap<String, String>,
    /// `--system-reserved`, resource to quantity.
    pub system_reserved: BTreeMap<String, String>,
    /// `--eviction-hard`, signal to threshold (`100Mi` or `10%`).
    pub eviction_hard: BTreeMap<String, String>,
    /// `--eviction-soft`, signal to threshold.
    pub eviction_soft: BTreeMap<String, String>,
    /// `--eviction-soft-grace-period`, signal to duration.
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// `--eviction-max-pod-grace-period`, seconds.
    pub eviction_max_pod_grace_period: Option<i32>,
    /// `--image-gc-high-threshold`, percent.
    pub image_gc_high_threshold_percent: Option<i32>,
    /// `--image-gc-low-threshold`, percent.
    pub image_gc_low_threshold_percent: Option<i32>,
    /// `--cpu-cfs-quota`.
    pub cpu_cfs_quota: Option<bool>,
    /// bootstrap.sh `--dns-cluster-ip` (the first `clusterDNS` entry).
    pub cluster_dns_ip: Option<String>,
    /// bootstrap.sh `--container-runtime` (`containerd` unless the provisioner says otherwise).
    pub container_runtime: String,
}

/// A Bottlerocket `[settings.kubernetes.<name>]` table: its name and entries.
type BottlerocketTable<'a> = (&'static str, &'a BTreeMap<String, String>);

/// The kubelet's default hard eviction thresholds: all four are written out, since a partial
/// `--eviction-hard` leaves the others unset on some kubelet versions.
const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
];

/// A quantity that parses back to exactly `milli` (no rounding): `70m`, `2`, `574Mi`, `1Gi`.
pub fn exact_quantity(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let whole = milli / 1000;
    if whole != 0 {
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if whole % unit == 0 {
                return format!("{}{suffix}", whole / unit);
            }
        }
    }
    whole.to_string()
}

fn quantities(list: &ResourceList) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.clone(), exact_quantity(*v)))
        .collect()
}

// === impl KubeletArgs ===

impl KubeletArgs {
    /// The settings the engine planned an instance type with under `kubelet`.
    pub fn planned(t: &InstanceType, kubelet: Option<&KubeletConfiguration>) -> Self {
        let max_pods = t.capacity_for(kubelet).get(PODS).copied().unwrap_or(0) / 1000;
        let r = t.reservations(kubelet);
        let mut eviction_hard: BTreeMap<String, String> = DEFAULT_EVICTION_HARD
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let k = kubelet.cloned().unwrap_or_default();
        for (signal, v) in &k.eviction_hard {
            eviction_hard.insert(signal.clone(), v.trim().to_string());
        }
        Self {
            max_pods,
            pods_per_core: k.pods_per_core.filter(|p| *p > 0),
            kube_reserved: quantities(&r.kube_reserved),
            system_reserved: quantities(&r.system_reserved),
            eviction_hard,
            eviction_soft: k.eviction_soft,
            eviction_soft_grace_period: k.eviction_soft_grace_period,
            eviction_max_pod_grace_period: k.eviction_max_pod_grace_period,
            image_gc_high_threshold_percent: k.image_gc_high_threshold_percent,
            image_gc_low_threshold_percent: k.image_gc_low_threshold_percent,
            cpu_cfs_quota: k.cpu_cfs_quota,
            cluster_dns_ip: k.cluster_dns.first().cloned(),
            container_runtime: k
                .container_runtime
                .unwrap_or_else(|| "containerd".to_string()),
        }
    }

    /// The kubelet flags (for bootstrap.sh's `--kubelet-extra-args`).
    pub fn flags(&self) -> Vec<String> {
        let join = |m: &BTreeMap<String, String>, sep: &str| {
            m.iter()
                .map(|(k, v)| format!("{k}{sep}{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut f = vec![format!("--max-pods={}", self.max_pods)];
        if let Some(p) = self.pods_per_core {
            f.push(format!("--pods-per-core={p}"));
        }
        if !self.kube_reserved.is_empty() {
            f.push(format!(
                "--kube-reserved={}",
                join(&self.kube_reserved, "=")
            ));
        }
        if !self.system_reserved.is_empty() {
            f.push(format!(
                "--system-reserved={}",
                join(&self.system_reserved, "=")
            ));
        }
        f.push(format!(
            "--eviction-hard={}",
            join(&self.eviction_hard, "<")
        ));
        if !self.eviction_soft.is_empty() {
            f.push(format!(
                "--eviction-soft={}",
                join(&self.eviction_soft, "<")
            ));
            f.push(format!(
                "--eviction-soft-grace-period={}",
                join(&self.eviction_soft_grace_period, "=")
            ));
        }
        if let Some(s) = self.eviction_max_pod_grace_period {
            f.push(format!("--eviction-max-pod-grace-period={s}"));
        }
        if let Some(p) = self.image_gc_high_threshold_percent {
            f.push(format!("--image-gc-high-threshold={p}"));
        }
        if let Some(p) = self.image_gc_low_threshold_percent {
            f.push(format!("--image-gc-low-threshold={p}"));
        }
        if let Some(q) = self.cpu_cfs_quota {
            f.push(format!("--cpu-cfs-quota={q}"));
        }
        f
    }

    /// The same settings as Bottlerocket `[settings.kubernetes]` TOML: the scalar keys, then
    /// the tables (each a `(name, entries)` pair).
    fn bottlerocket(&self) -> (Vec<String>, Vec<BottlerocketTable<'_>>) {
        let mut scalars = vec![format!("max-pods = {}", self.max_pods)];
        if let Some(ip) = &self.cluster_dns_ip {
            scalars.push(format!("cluster-dns-ip = {}", toml_string(ip)));
        }
        if let Some(s) = self.eviction_max_pod_grace_period {
            scalars.push(format!("eviction-max-pod-grace-period = {s}"));
        }
        if let Some(p) = self.image_gc_high_threshold_percent {
            scalars.push(format!(
                "image-gc-high-threshold-percent = {}",
                toml_string(&p.to_string())
            ));
        }
        if let Some(p) = self.image_gc_low_threshold_percent {
            scalars.push(format!(
                "image-gc-low-threshold-percent = {}",
                toml_string(&p.to_string())
            ));
        }
        if let Some(q) = self.cpu_cfs_quota {
            scalars.push(format!("cpu-cfs-quota-enforced = {q}"));
        }
        let mut tables = Vec::new();
        for (name, m) in [
            ("kube-reserved", &self.kube_reserved),
            ("system-reserved", &self.system_reserved),
            ("eviction-hard", &self.eviction_hard),
            ("eviction-soft", &self.eviction_soft),
            (
                "eviction-soft-grace-period",
                &self.eviction_soft_grace_period,
            ),
        ] {
            if !m.is_empty() {
                tables.push((name, m));
            }
        }
        (scalars, tables)
    }
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

/// bootstrap.sh writes `--kubelet-extra-args` verbatim into a systemd drop-in
/// (`Environment='KUBELET_EXTRA_ARGS=...'`), where `%` starts a specifier: a threshold such as
/// `nodefs.available<10%` would make systemd drop the whole assignment (labels, max pods and
/// all). `%%` is systemd's literal `%`.
fn systemd_escape(s: &str) -> String {
    s.replace('%', "%%")
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
        if let Some(k) = self.kubelet {
            args.extend(k.flags());
        }
        args.join(" ")
    }

    /// bootstrap.sh arguments beyond the cluster's: the container runtime, and with kubelet
    /// settings `--use-max-pods false` (ours is in the extra args) and `--dns-cluster-ip`.
    fn bootstrap_args(&self) -> String {
        let mut out = String::new();
        let runtime = self
            .kubelet
            .map(|k| k.container_runtime.as_str())
            .unwrap_or("containerd");
        out.push_str(&format!(
            " \\\n  --container-runtime {}",
            shell_quote(runtime)
        ));
        if let Some(k) = self.kubelet {
            out.push_str(" \\\n  --use-max-pods false");
            if let Some(ip) = &k.cluster_dns_ip {
                out.push_str(&format!(" \\\n  --dns-cluster-ip {}", shell_quote(ip)));
            }
        }
        out
    }

    /// An AL2 (or Ubuntu EKS) shell script calling `/etc/eks/bootstrap.sh`.
    pub fn al2(&self) -> String {
        format!(
            "#!/bin/bash -xe\n\
             exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n\
             /etc/eks/bootstrap.sh {} --apiserver-endpoint {} --b64-cluster-ca {}{} \\\n  \
             --kubelet-extra-args {}\n",
            shell_quote(self.cluster_name),
            shell_quote(self.cluster_endpoint),
            shell_quote(self.ca_bundle),
            self.bootstrap_args(),
            shell_quote(&systemd_escape(&self.kubelet_extra_args())),
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
        let (scalars, tables) = self
            .kubelet
            .map(KubeletArgs::bottlerocket)
            .unwrap_or_default();
        for line in scalars {
            s.push_str(&line);
            s.push('\n');
        }
        for (name, entries) in tables {
            s.push_str(&format!("\n[settings.kubernetes.{name}]\n"));
            for (k, v) in entries {
                s.push_str(&format!("{} = {}\n", toml_string(k), toml_string(v)));
            }
        }
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

/// The accelerator an instance type carries, which picks the AMI variant of its family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Accelerator {
    /// None the AMI needs drivers for (AMD GPUs included: no EKS variant carries theirs).
    #[default]
    None,
    /// NVIDIA GPUs: AL2's GPU AMI, Bottlerocket's `-nvidia` variant.
    Nvidia,
    /// AWS Neuron (Inferentia, Trainium): AL2's GPU AMI (it carries the Neuron driver).
    Neuron,
}

// === impl Accelerator ===

impl Accelerator {
    /// The accelerator of an instance type.
    pub fn of(info: &AwsInstanceTypeInfo) -> Self {
        if info
            .gpus
            .iter()
            .any(|g| g.manufacturer.eq_ignore_ascii_case("nvidia") && g.count > 0)
        {
            return Self::Nvidia;
        }
        if info
            .neuron_devices
            .iter()
            .chain(&info.inference_accelerators)
            .any(|a| a.manufacturer.eq_ignore_ascii_case("aws") && a.count > 0)
        {
            return Self::Neuron;
        }
        Self::None
    }
}

/// The SSM parameter holding the recommended AMI of a family for a Kubernetes version, in the
/// variant an accelerator needs (AL2's GPU AMI is x86_64 only; arm64 types use the arm64 AMI).
pub fn ami_parameter(
    prefix: &str,
    family: &str,
    kubernetes_version: &str,
    arch: Architecture,
    accelerator: Accelerator,
) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    Some(match (family, arch) {
        ("AL2", Architecture::Amd64) => format!(
            "{prefix}/eks/optimized-ami/{kubernetes_version}/amazon-linux-2{}/recommended/image_id",
            if accelerator == Accelerator::None { "" } else { "-gpu" }
        ),
        ("AL2", Architecture::Arm64) => format!(
            "{prefix}/eks/optimized-ami/{kubernetes_version}/amazon-linux-2-arm64/recommended/image_id"
        ),
        ("Bottlerocket", a) => format!(
            "{prefix}/bottlerocket/aws-k8s-{kubernetes_version}{}/{}/latest/image_id",
            if accelerator == Accelerator::Nvidia { "-nvidia" } else { "" },
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

/// Merges Bottlerocket TOML settings: the user's, with ours winning on every key we set
/// (cluster, kubelet settings); tables such as `settings.kubernetes.node-labels` are merged key
/// by key, and the user's other settings (host containers, registry mirrors, ...) are kept.
pub fn merge_bottlerocket(user: &str, ours: &str) -> Result<String, UserDataError> {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut merged: toml::Table =
        toml::from_str(user).map_err(|e| UserDataError::Toml(e.to_string()))?;
    let ours: toml::Table = toml::from_str(ours).map_err(|e| UserDataError::Toml(e.to_string()))?;
    merge(&mut merged, ours);
    toml::to_string(&merged).map_err(|e| UserDataError::Toml(e.to_string()))
}

/// The header block (up to the first empty line) and the body of a MIME entity.
fn split_headers(s: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = s.find(sep) {
            return (&s[..i], &s[i + sep.len()..]);
        }
    }
    (s, "")
}

/// The `boundary` parameter of a multipart `Content-Type` header block, if it is one.
fn multipart_boundary(headers: &str) -> Option<Result<String, UserDataError>> {
    let content_type = headers.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_string())
    })?;
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    let boundary = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    Some(match boundary {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(UserDataError::Mime(format!(
            "its Content-Type {content_type:?} names no boundary"
        ))),
    })
}

/// Merges user data for AL2 and Ubuntu into one MIME multi-part document: the user's parts
/// (or the user's script as one part) first, our bootstrap script last, so the node joins
/// after the user's set-up has run.
pub fn merge_mime(user: &str, ours: &str) -> Result<String, UserDataError> {
    const SCRIPT: &str = "Content-Type: text/x-shellscript; charset=\"us-ascii\"";
    let mut parts: Vec<String> = Vec::new();
    let (headers, body) = split_headers(user.trim_start());
    match multipart_boundary(headers) {
        Some(boundary) => {
            let delimiter = format!("--{}", boundary?);
            let mut current: Option<Vec<&str>> = None;
            for line in body.lines() {
                let l = line.trim_end_matches('\r');
                if l == delimiter || l == format!("{delimiter}--") {
                    if let Some(p) = current.take() {
                        parts.push(p.join("\n").trim_end().to_string());
                    }
                    if l != delimiter {
                        break;
                    }
                    current = Some(Vec::new());
                } else if let Some(p) = current.as_mut() {
                    p.push(l);
                }
            }
            if let Some(p) = current.take() {
                parts.push(p.join("\n").trim_end().to_string());
            }
            parts.retain(|p| !p.trim().is_empty());
        }
        None if user.trim().is_empty() => {}
        None => parts.push(format!("{SCRIPT}\n\n{}", user.trim_end())),
    }
    parts.push(format!("{SCRIPT}\n\n{}", ours.trim_end()));
    let boundary = format!("karpenter-{:016x}", fnv1a(&[user, ours]));
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n\n");
    for p in parts {
        out.push_str(&format!("--{boundary}\n{p}\n\n"));
    }
    out.push_str(&format!("--{boundary}--\n"));
    Ok(out)
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
            kubelet: None,
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
            kubelet: None,
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
            kubelet: None,
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

    /// The value of `--name=` in a command line (up to the next space or quote).
    fn flag<'a>(ud: &'a str, name: &str) -> Option<&'a str> {
        let start = ud.find(&format!("{name}="))? + name.len() + 1;
        let rest = &ud[start..];
        Some(&rest[..rest.find([' ', '\'']).unwrap_or(rest.len())])
    }

    fn pairs(v: &str, sep: char) -> BTreeMap<String, String> {
        v.split(',')
            .filter_map(|p| p.split_once(sep))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What a kubelet started with these settings reports as allocatable: capacity (pods from
    /// `max-pods`) minus kube-reserved, system-reserved and the hard eviction thresholds of
    /// memory and nodefs.
    fn kubelet_allocatable(
        capacity: &ResourceList,
        max_pods: i64,
        kube: &BTreeMap<String, String>,
        system: &BTreeMap<String, String>,
        evict: &BTreeMap<String, String>,
    ) -> ResourceList {
        use crate::api::quantity::parse_milli;
        use crate::scheduling::instance_type::{
            eviction_signal_resource, eviction_threshold_milli,
        };
        let mut cap = capacity.clone();
        cap.insert(PODS.into(), max_pods * 1000);
        let mut out = cap.clone();
        for m in [kube, system] {
            for (r, q) in m {
                let v = parse_milli(q).unwrap();
                if let Some(c) = out.get_mut(r) {
                    *c = (*c - v).max(0);
                }
            }
        }
        for (signal, t) in evict {
            if let Some(r) = eviction_signal_resource(signal) {
                let v = eviction_threshold_milli(t, cap[r]).unwrap();
                if let Some(c) = out.get_mut(r) {
                    *c = (*c - v).max(0);
                }
            }
        }
        out
    }

    /// A tiny reader for the TOML we write: `[table]` headers and `key = value` lines.
    fn toml_tables(s: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut table = String::new();
        for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = t.to_string();
                continue;
            }
            let (k, v) = line.split_once(" = ").unwrap();
            out.entry(table.clone()).or_default().insert(
                k.trim_matches('"').to_string(),
                v.trim_matches('"').to_string(),
            );
        }
        out
    }

    fn kubelet_configs() -> Vec<Option<KubeletConfiguration>> {
        use crate::api::Quantity;
        let q = |s: &str| Quantity::from(s);
        vec![
            None,
            Some(KubeletConfiguration::default()),
            Some(KubeletConfiguration {
                max_pods: Some(110),
                ..Default::default()
            }),
            Some(KubeletConfiguration {
                pods_per_core: Some(4),
                kube_reserved: [("cpu".to_string(), q("250m")), ("memory".into(), q("1Gi"))].into(),
                system_reserved: [
                    ("cpu".to_string(), q("100m")),
                    ("memory".into(), q("300Mi")),
                    ("ephemeral-storage".into(), q("2Gi")),
                ]
                .into(),
                eviction_hard: [
                    ("memory.available".to_string(), "5%".to_string()),
                    ("nodefs.available".into(), "1500Mi".into()),
                ]
                .into(),
                ..Default::default()
            }),
        ]
    }

    #[test]
    fn the_kubelet_flags_give_the_allocatable_the_engine_planned() {
        use crate::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};
        let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
        let labels = BTreeMap::new();
        let mut checked = 0;
        for name in [
            "t3.micro",
            "m5.large",
            "c6g.4xlarge",
            "r5.24xlarge",
            "p3dn.24xlarge",
        ] {
            let t = types.iter().find(|t| t.name == name).unwrap();
            for k in kubelet_configs() {
                let args = KubeletArgs::planned(t, k.as_ref());
                let b = Bootstrap {
                    cluster_name: "demo",
                    cluster_endpoint: "https://example.com",
                    ca_bundle: "Q0E=",
                    labels: &labels,
                    taints: &[],
                    kubelet: Some(&args),
                };
                let want = t.allocatable(k.as_ref());
                // AL2: bootstrap.sh arguments and kubelet flags.
                // What the kubelet gets once systemd has read the drop-in.
                let ud = b.al2().replace("%%", "%");
                assert!(ud.contains("--use-max-pods false"), "{ud}");
                let max_pods: i64 = flag(&ud, "--max-pods").unwrap().parse().unwrap();
                let got = kubelet_allocatable(
                    &t.capacity,
                    max_pods,
                    &pairs(flag(&ud, "--kube-reserved").unwrap(), '='),
                    &flag(&ud, "--system-reserved")
                        .map(|v| pairs(v, '='))
                        .unwrap_or_default(),
                    &pairs(flag(&ud, "--eviction-hard").unwrap(), '<'),
                );
                assert_eq!(got, want, "{name} {k:?}\n{ud}");
                // Bottlerocket: the same settings in TOML.
                let toml = toml_tables(&b.bottlerocket());
                let empty = BTreeMap::new();
                let max_pods: i64 = toml["settings.kubernetes"]["max-pods"].parse().unwrap();
                let got = kubelet_allocatable(
                    &t.capacity,
                    max_pods,
                    &toml["settings.kubernetes.kube-reserved"],
                    toml.get("settings.kubernetes.system-reserved")
                        .unwrap_or(&empty),
                    &toml["settings.kubernetes.eviction-hard"],
                );
                assert_eq!(got, want, "{name} {k:?} (Bottlerocket)");
                checked += 1;
            }
        }
        assert_eq!(checked, 20);
    }

    #[test]
    fn every_kubelet_setting_reaches_the_kubelet() {
        let k = KubeletConfiguration {
            cluster_dns: vec!["10.100.0.10".into()],
            max_pods: Some(50),
            pods_per_core: Some(10),
            eviction_soft: [("memory.available".to_string(), "500Mi".to_string())].into(),
            eviction_soft_grace_period: [("memory.available".to_string(), "1m30s".to_string())]
                .into(),
            eviction_max_pod_grace_period: Some(60),
            image_gc_high_threshold_percent: Some(80),
            image_gc_low_threshold_percent: Some(60),
            cpu_cfs_quota: Some(false),
            ..Default::default()
        };
        let types = crate::cloud::instance_types::builtin_us_east_1(&Default::default()).unwrap();
        let t = types.iter().find(|t| t.name == "m5.large").unwrap();
        let args = KubeletArgs::planned(t, Some(&k));
        // 2 vCPUs x 10 pods per core is below maxPods: the engine planned 20.
        assert_eq!(args.max_pods, 20);
        let labels = BTreeMap::new();
        let b = Bootstrap {
            cluster_name: "demo",
            cluster_endpoint: "https://example.com",
            ca_bundle: "Q0E=",
            labels: &labels,
            taints: &[],
            kubelet: Some(&args),
        };
        let ud = b.al2();
        for want in [
            "--use-max-pods false",
            "--dns-cluster-ip '10.100.0.10'",
            "--container-runtime 'containerd'",
            "--max-pods=20",
            "--pods-per-core=10",
            "--eviction-soft=memory.available<500Mi",
            "--eviction-soft-grace-period=memory.available=1m30s",
            "--eviction-max-pod-grace-period=60",
            "--image-gc-high-threshold=80",
            "--image-gc-low-threshold=60",
            "--cpu-cfs-quota=false",
            // `%` doubled for the systemd drop-in bootstrap.sh writes the extra args into.
            "--eviction-hard=imagefs.available<15%%,memory.available<100Mi,nodefs.available<10%%,nodefs.inodesFree<5%%",
        ] {
            assert!(ud.contains(want), "{want} missing from {ud}");
        }
        assert!(!ud.replace("%%", "").contains('%'), "a lone % in {ud}");
        let toml = b.bottlerocket();
        let t = toml_tables(&toml);
        let k8s = &t["settings.kubernetes"];
        assert_eq!(k8s["max-pods"], "20");
        assert_eq!(k8s["cluster-dns-ip"], "10.100.0.10");
        assert_eq!(k8s["eviction-max-pod-grace-period"], "60");
        assert_eq!(k8s["image-gc-high-threshold-percent"], "80");
        assert_eq!(k8s["image-gc-low-threshold-percent"], "60");
        assert_eq!(k8s["cpu-cfs-quota-enforced"], "false");
        assert_eq!(
            t["settings.kubernetes.eviction-soft"]["memory.available"],
            "500Mi"
        );
        assert_eq!(
            t["settings.kubernetes.eviction-soft-grace-period"]["memory.available"],
            "1m30s"
        );
        // The scalar keys stay in [settings.kubernetes], before any sub-table.
        let first_table = toml.find("\n[settings.kubernetes.").unwrap();
        assert!(toml.find("max-pods").unwrap() < first_table, "{toml}");
    }

    #[test]
    fn exact_quantities_parse_back() {
        use crate::api::quantity::parse_milli;
        for m in [
            0,
            1,
            70,
            1000,
            2500,
            1_024_000,
            574 * (1 << 20) * 1000,
            (1i64 << 30) * 1000,
            1_500_000_123,
        ] {
            assert_eq!(parse_milli(&exact_quantity(m)).unwrap(), m, "{m}");
        }
        assert_eq!(exact_quantity(70), "70m");
        assert_eq!(exact_quantity(574 * (1 << 20) * 1000), "574Mi");
    }

    #[test]
    fn bottlerocket_user_data_is_merged_with_ours_winning_on_our_keys() {
        let user = r#"
[settings.kubernetes]
cluster-name = "someone-else"
max-pods = 500
image-gc-high-threshold-percent = "70"

[settings.kubernetes.node-labels]
team = "mine"
custom = "kept"

[settings.host-containers.admin]
enabled = true

[[settings.container-registry.mirrors]]
registry = "docker.io"
endpoint = ["https://mirror.example.com"]
"#;
        let mut labels = BTreeMap::new();
        labels.insert("team".to_string(), "ours".to_string());
        let types = crate::cloud::instance_types::builtin_us_east_1(&Default::default()).unwrap();
        let t = types.iter().find(|t| t.name == "m5.large").unwrap();
        let args = KubeletArgs::planned(t, None);
        let b = Bootstrap {
            cluster_name: "demo",
            cluster_endpoint: "https://example.com",
            ca_bundle: "Q0E=",
            labels: &labels,
            taints: &[],
            kubelet: Some(&args),
        };
        let merged = merge_bottlerocket(user, &b.bottlerocket()).unwrap();
        let v: toml::Table = toml::from_str(&merged).unwrap();
        let k8s = v["settings"]["kubernetes"].as_table().unwrap();
        assert_eq!(k8s["cluster-name"].as_str(), Some("demo"), "{merged}");
        assert_eq!(k8s["api-server"].as_str(), Some("https://example.com"));
        assert_eq!(
            k8s["max-pods"].as_integer(),
            Some(29),
            "ours: the planned max pods"
        );
        assert_eq!(k8s["image-gc-high-threshold-percent"].as_str(), Some("70"));
        assert_eq!(k8s["node-labels"]["team"].as_str(), Some("ours"));
        assert_eq!(k8s["node-labels"]["custom"].as_str(), Some("kept"));
        assert_eq!(k8s["kube-reserved"]["cpu"].as_str(), Some("70m"));
        assert_eq!(
            v["settings"]["host-containers"]["admin"]["enabled"].as_bool(),
            Some(true)
        );
        let mirrors = v["settings"]["container-registry"]["mirrors"]
            .as_array()
            .unwrap();
        assert_eq!(mirrors[0]["registry"].as_str(), Some("docker.io"));
        let err = merge_bottlerocket("[settings\n", &b.bottlerocket()).unwrap_err();
        assert!(matches!(err, UserDataError::Toml(_)), "{err}");
    }

    #[test]
    fn al2_user_data_becomes_a_mime_multipart_with_ours_last() {
        let ours = "#!/bin/bash -xe\n/etc/eks/bootstrap.sh 'demo'\n";
        // A plain script: one part before ours.
        let merged = merge_mime("#!/bin/bash\necho hello\n", ours).unwrap();
        assert!(merged.starts_with("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\""));
        let (headers, _) = split_headers(&merged);
        let boundary = multipart_boundary(headers).unwrap().unwrap();
        let parts: Vec<&str> = merged.split(&format!("--{boundary}")).collect();
        // Preamble, two parts, the closing "--".
        assert_eq!(parts.len(), 4, "{merged}");
        assert!(parts[1].contains("text/x-shellscript") && parts[1].contains("echo hello"));
        assert!(parts[2].contains("/etc/eks/bootstrap.sh 'demo'"));
        assert!(parts[3].starts_with("--"));
        // A multi-part document: its parts (headers kept) come first.
        let user = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"==B==\"\r\n\r\n--==B==\r\nContent-Type: text/cloud-config; charset=\"us-ascii\"\r\n\r\npackages:\r\n- jq\r\n--==B==\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\necho two\r\n--==B==--\r\n";
        let merged = merge_mime(user, ours).unwrap();
        let first = merged.find("text/cloud-config").unwrap();
        let second = merged.find("echo two").unwrap();
        let last = merged.find("bootstrap.sh").unwrap();
        assert!(first < second && second < last, "{merged}");
        assert!(!merged.contains("==B=="), "{merged}");
        assert!(merged.trim_end().ends_with("--"));
        let err = merge_mime(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed\n\nx",
            ours,
        );
        assert!(matches!(err, Err(UserDataError::Mime(_))), "{err:?}");
        // No user data: ours alone, still multi-part.
        assert!(merge_mime("", ours).unwrap().contains("bootstrap.sh"));
    }

    #[test]
    fn ami_parameters() {
        let none = Accelerator::None;
        assert_eq!(
            ami_parameter("/aws/service/", "AL2", "1.27", Architecture::Arm64, none).unwrap(),
            "/aws/service/eks/optimized-ami/1.27/amazon-linux-2-arm64/recommended/image_id"
        );
        assert_eq!(
            ami_parameter("/t", "Bottlerocket", "1.27", Architecture::Amd64, none).unwrap(),
            "/t/bottlerocket/aws-k8s-1.27/x86_64/latest/image_id"
        );
        assert_eq!(
            ami_parameter("/t", "Custom", "1.27", Architecture::Amd64, none),
            None
        );
    }

    #[test]
    fn gpu_and_neuron_types_boot_the_accelerated_ami_variant() {
        use crate::cloud::catalog::builtin_us_east_1;
        let infos = builtin_us_east_1().unwrap();
        let of = |n: &str| Accelerator::of(infos.iter().find(|i| i.name == n).unwrap());
        assert_eq!(of("p3dn.24xlarge"), Accelerator::Nvidia);
        assert_eq!(of("g4dn.xlarge"), Accelerator::Nvidia);
        assert_eq!(of("inf2.xlarge"), Accelerator::Neuron);
        assert_eq!(of("m5.large"), Accelerator::None);
        let amd64 = Architecture::Amd64;
        let p = |family, a| ami_parameter("/aws/service", family, "1.27", amd64, a).unwrap();
        assert_eq!(
            p("AL2", Accelerator::Nvidia),
            "/aws/service/eks/optimized-ami/1.27/amazon-linux-2-gpu/recommended/image_id"
        );
        assert_eq!(p("AL2", Accelerator::Neuron), p("AL2", Accelerator::Nvidia));
        assert_eq!(
            p("Bottlerocket", Accelerator::Nvidia),
            "/aws/service/bottlerocket/aws-k8s-1.27-nvidia/x86_64/latest/image_id"
        );
        // Bottlerocket's Neuron support is in the standard variant.
        assert_eq!(
            p("Bottlerocket", Accelerator::Neuron),
            p("Bottlerocket", Accelerator::None)
        );
        assert_eq!(
            ami_parameter(
                "/t",
                "Bottlerocket",
                "1.27",
                Architecture::Arm64,
                Accelerator::Nvidia
            )
            .unwrap(),
            "/t/bottlerocket/aws-k8s-1.27-nvidia/arm64/latest/image_id"
        );
        assert_eq!(
            ami_parameter(
                "/t",
                "AL2",
                "1.27",
                Architecture::Arm64,
                Accelerator::Nvidia
            )
            .unwrap(),
            "/t/eks/optimized-ami/1.27/amazon-linux-2-arm64/recommended/image_id"
        );
    }

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&["x"]), fnv1a(&["x"]));
    }
}
