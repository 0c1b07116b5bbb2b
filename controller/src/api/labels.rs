//! Well-known node labels, restricted label domains, legacy label normalisation and the
//! Kubernetes syntax rules for label keys and values.

/// `topology.kubernetes.io/zone`.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// `topology.kubernetes.io/region`.
pub const REGION: &str = "topology.kubernetes.io/region";
/// `node.kubernetes.io/instance-type`.
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
/// `kubernetes.io/arch`.
pub const ARCH: &str = "kubernetes.io/arch";
/// `kubernetes.io/os`.
pub const OS: &str = "kubernetes.io/os";
/// `kubernetes.io/hostname`.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// `kubernetes.io/metadata.name`: the API server sets it on every Namespace to its name.
pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
/// `node.kubernetes.io/windows-build`.
pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";
/// `karpenter.sh/capacity-type`: `spot` or `on-demand`.
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
/// `karpenter.sh/provisioner-name`: set by Karpenter on every node it launches.
pub const PROVISIONER_NAME: &str = "karpenter.sh/provisioner-name";
/// Set to `true` on a node Karpenter launched once it is ready, its startup taints are gone
/// and its extended resources are registered; until then the node is in flight.
pub const NODE_INITIALIZED: &str = "karpenter.sh/initialized";
/// `karpenter.k8s.aws/instance-category` (`m` of `m5.large`).
pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
/// `karpenter.k8s.aws/instance-family` (`m5` of `m5.large`).
pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
/// `karpenter.k8s.aws/instance-generation` (`5` of `m5.large`).
pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
/// `karpenter.k8s.aws/instance-size` (`large` of `m5.large`).
pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
/// `karpenter.k8s.aws/instance-cpu`: vCPUs.
pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
/// `karpenter.k8s.aws/instance-memory`: MiB.
pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
/// `karpenter.k8s.aws/instance-hypervisor`: `nitro`, `xen` or empty for bare metal.
pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
/// `karpenter.k8s.aws/instance-gpu-name`.
pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
/// `karpenter.k8s.aws/instance-gpu-manufacturer`.
pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
/// `karpenter.k8s.aws/instance-gpu-count`.
pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
/// `karpenter.k8s.aws/instance-gpu-memory`: MiB.
pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
/// `karpenter.k8s.aws/instance-local-nvme`: GB.
pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
/// `karpenter.k8s.aws/instance-network-bandwidth`: Mbps.
pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";
/// `karpenter.k8s.aws/instance-pods`: max pods.
pub const INSTANCE_PODS: &str = "karpenter.k8s.aws/instance-pods";
/// `karpenter.k8s.aws/instance-encryption-in-transit-supported`.
pub const INSTANCE_ENCRYPTION_IN_TRANSIT: &str =
    "karpenter.k8s.aws/instance-encryption-in-transit-supported";
/// `karpenter.k8s.aws/instance-accelerator-name`.
pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
/// `karpenter.k8s.aws/instance-accelerator-manufacturer`.
pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str =
    "karpenter.k8s.aws/instance-accelerator-manufacturer";
/// `karpenter.k8s.aws/instance-accelerator-count`.
pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";

/// Capacity type value for on-demand instances.
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
/// Capacity type value for spot instances.
pub const CAPACITY_TYPE_SPOT: &str = "spot";

/// Labels Karpenter understands and may set on the nodes it launches.
pub const WELL_KNOWN_LABELS: &[&str] = &[
    ZONE,
    REGION,
    INSTANCE_TYPE,
    ARCH,
    OS,
    WINDOWS_BUILD,
    CAPACITY_TYPE,
    PROVISIONER_NAME,
    INSTANCE_CATEGORY,
    INSTANCE_FAMILY,
    INSTANCE_GENERATION,
    INSTANCE_SIZE,
    INSTANCE_CPU,
    INSTANCE_MEMORY,
    INSTANCE_HYPERVISOR,
    INSTANCE_GPU_NAME,
    INSTANCE_GPU_MANUFACTURER,
    INSTANCE_GPU_COUNT,
    INSTANCE_GPU_MEMORY,
    INSTANCE_LOCAL_NVME,
    INSTANCE_NETWORK_BANDWIDTH,
    INSTANCE_PODS,
    INSTANCE_ENCRYPTION_IN_TRANSIT,
    INSTANCE_ACCELERATOR_NAME,
    INSTANCE_ACCELERATOR_MANUFACTURER,
    INSTANCE_ACCELERATOR_COUNT,
];

/// Labels that must never appear in a Provisioner's labels or requirements: Karpenter sets them.
pub const RESTRICTED_LABELS: &[&str] = &[HOSTNAME, PROVISIONER_NAME];

/// Domains reserved for Kubernetes and Karpenter; only well-known labels may use them.
pub const RESTRICTED_LABEL_DOMAINS: &[&str] = &[
    "kubernetes.io",
    "k8s.io",
    "karpenter.sh",
    "karpenter.k8s.aws",
];

/// Sub-domains of the restricted domains that users may still use freely.
pub const LABEL_DOMAIN_EXCEPTIONS: &[&str] = &[
    "kops.k8s.io",
    "node.kubernetes.io",
    "node-restriction.kubernetes.io",
];

/// Legacy (beta) label keys and the keys they mean today.
pub const NORMALIZED_LABELS: &[(&str, &str)] = &[
    ("failure-domain.beta.kubernetes.io/zone", ZONE),
    ("failure-domain.beta.kubernetes.io/region", REGION),
    ("beta.kubernetes.io/arch", ARCH),
    ("beta.kubernetes.io/os", OS),
    ("beta.kubernetes.io/instance-type", INSTANCE_TYPE),
];

/// Whether `key` is a well-known label.
pub fn is_well_known(key: &str) -> bool {
    WELL_KNOWN_LABELS.contains(&key)
}

/// The current key for a legacy key, or the key itself.
pub fn normalize(key: &str) -> &str {
    NORMALIZED_LABELS
        .iter()
        .find(|(old, _)| *old == key)
        .map_or(key, |(_, new)| new)
}

/// The domain (prefix before `/`) of a label key, if any.
pub fn domain(key: &str) -> Option<&str> {
    key.split_once('/').map(|(d, _)| d)
}

fn has_domain_suffix(domain: &str, suffix: &str) -> bool {
    domain == suffix || domain.ends_with(&format!(".{suffix}"))
}

/// When `key` uses a restricted domain without being well-known or excepted, the domain it uses.
pub fn restricted_domain(key: &str) -> Option<&'static str> {
    if is_well_known(key) {
        return None;
    }
    let domain = domain(key)?;
    if LABEL_DOMAIN_EXCEPTIONS
        .iter()
        .any(|e| has_domain_suffix(domain, e))
    {
        return None;
    }
    RESTRICTED_LABEL_DOMAINS
        .iter()
        .copied()
        .find(|r| has_domain_suffix(domain, r))
}

/// Checks a label key (a Kubernetes qualified name); the error says what is wrong.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix before '/' must not be empty".into());
        }
        check_dns_subdomain(p).map_err(|e| format!("prefix {p:?} {e}"))?;
    }
    if name.contains('/') {
        return Err("must contain at most one '/'".into());
    }
    if name.is_empty() {
        return Err("name part after '/' must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "name part must be at most 63 characters (has {})",
            name.len()
        ));
    }
    check_name_chars(name)
}

/// Checks a label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!(
            "must be at most 63 characters (has {})",
            value.len()
        ));
    }
    check_name_chars(value)
}

fn check_name_chars(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        return Err(format!("contains whitespace {c:?}"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let first = s.chars().next();
    let last = s.chars().last();
    if !first.is_some_and(|c| c.is_ascii_alphanumeric())
        || !last.is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be at most 253 characters".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        return Err(format!("contains whitespace {c:?}"));
    }
    for part in s.split('.') {
        let ok = !part.is_empty()
            && part.len() <= 63
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return Err("must be a DNS subdomain: lower-case letters, digits, '-' and '.'".into());
        }
    }
    Ok(())
}

/// Edit distance between two short strings, counting a swap of neighbours as one edit
/// (optimal string alignment), for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `input` within a small edit distance, if any.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.len() / 5).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| (edit_distance(input, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// The key a mistyped or mis-spaced label key most likely meant.
pub fn suggested_key(key: &str) -> Option<String> {
    let trimmed = key.trim();
    if trimmed != key {
        return Some(trimmed.to_string());
    }
    if normalize(key) != key {
        return None;
    }
    closest(key, WELL_KNOWN_LABELS.iter().copied().chain([HOSTNAME])).map(str::to_string)
}

/// A suggestion for a label key that looks like a mistyped or mis-spaced well-known key.
pub fn suggest_key(key: &str) -> Option<String> {
    let trimmed = key.trim();
    if trimmed != key {
        let what = match (
            key.starts_with(char::is_whitespace),
            key.ends_with(char::is_whitespace),
        ) {
            (true, true) => "leading and trailing whitespace",
            (true, false) => "a leading space",
            _ => "a trailing space",
        };
        return Some(format!("the key has {what}; remove it: {trimmed:?}"));
    }
    let normalized = normalize(key);
    if normalized != key {
        return None;
    }
    closest(key, WELL_KNOWN_LABELS.iter().copied().chain([HOSTNAME]))
        .map(|c| format!("did you mean {c:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "example.com/app",
            "a.b-c/x_y.z",
            "karpenter.sh/capacity-type",
        ] {
            assert_eq!(check_qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " karpenter.sh/capacity-type",
            "a/b/c",
            "/x",
            "x/",
            "Example.com/x",
            "-app",
            "app-",
            "a b",
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_qualified_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_values() {
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("m5.large").is_ok());
        assert!(check_label_value("bad value").is_err());
        assert!(check_label_value("-x").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn restricted_domains_and_exceptions() {
        assert_eq!(
            restricted_domain("kubernetes.io/custom"),
            Some("kubernetes.io")
        );
        assert_eq!(
            restricted_domain("foo.kubernetes.io/x"),
            Some("kubernetes.io")
        );
        assert_eq!(restricted_domain("karpenter.sh/foo"), Some("karpenter.sh"));
        assert_eq!(
            restricted_domain("karpenter.k8s.aws/foo"),
            Some("karpenter.k8s.aws")
        );
        assert_eq!(restricted_domain("k8s.io/x"), Some("k8s.io"));
        assert_eq!(restricted_domain(ZONE), None);
        assert_eq!(restricted_domain("node.kubernetes.io/custom"), None);
        assert_eq!(
            restricted_domain("node-restriction.kubernetes.io/team"),
            None
        );
        assert_eq!(restricted_domain("kops.k8s.io/ig"), None);
        assert_eq!(restricted_domain("example.com/team"), None);
        assert_eq!(restricted_domain("notkubernetes.io/x"), None);
    }

    #[test]
    fn normalizes_legacy_keys() {
        assert_eq!(normalize("failure-domain.beta.kubernetes.io/zone"), ZONE);
        assert_eq!(normalize("beta.kubernetes.io/instance-type"), INSTANCE_TYPE);
        assert_eq!(normalize("example.com/x"), "example.com/x");
    }

    #[test]
    fn suggestions() {
        let s = suggest_key(" karpenter.sh/capacity-type").unwrap_or_default();
        assert!(s.contains("leading space"), "{s}");
        assert!(s.contains("\"karpenter.sh/capacity-type\""), "{s}");
        let s = suggest_key("karpenter.sh/capacity_type").unwrap_or_default();
        assert!(s.contains("karpenter.sh/capacity-type"), "{s}");
        let s = suggest_key("topology.kubernetes.io/zones").unwrap_or_default();
        assert!(s.contains(ZONE), "{s}");
        assert_eq!(suggest_key("example.com/team"), None);
        assert_eq!(closest("teir", ["tier", "zone"]), Some("tier"));
    }
}
