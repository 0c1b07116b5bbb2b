//! Provisioner and AWSNodeTemplate validation: the rules Karpenter's webhook enforced in
//! v0.27–v0.31, plus hints for the mistakes people actually make.
//!
//! Every problem is a [`FieldError`] naming the field path, the bad value and the fix. All
//! problems are collected; validation never stops at the first one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::aws::{AWSNodeTemplate, AwsProvider, AMI_FAMILIES, VOLUME_TYPES};
use super::labels;
use super::provisioner::{
    KubeletConfiguration, Provisioner, ProvisionerSpec, Requirement, Taint, OPERATORS,
    TAINT_EFFECTS,
};
use super::quantity::{parse_milli, Quantity};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.requirements[2].key`.
    pub field: String,
    /// The offending value as written, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The replacement the fix proposes (a field name, key or value), for tools that apply it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// Everything validation found: errors reject the object, warnings do not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Problems that make the object invalid.
    pub errors: Vec<FieldError>,
    /// Problems worth knowing about that do not block the object.
    pub warnings: Vec<FieldError>,
}

// === impl FieldError ===

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: None,
            message: message.into(),
            fix: None,
            suggestion: None,
        }
    }

    /// Attaches the proposed replacement.
    pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// Attaches the offending value.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Attaches the fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Attaches a fix when there is one.
    pub fn maybe_fix(mut self, fix: Option<String>) -> Self {
        self.fix = fix;
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.field)?;
        if let Some(v) = &self.value {
            write!(f, ": {v:?}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

// === impl Report ===

impl Report {
    /// Whether there are no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn err(&mut self, e: FieldError) {
        self.errors.push(e);
    }

    fn warn(&mut self, e: FieldError) {
        self.warnings.push(e);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// The `apiVersion` upstream writes into an inline `spec.provider` block.
pub const INLINE_PROVIDER_API_VERSION: &str = "extensions.karpenter.sh/v1alpha1";
/// The `kind` upstream writes into an inline `spec.provider` block.
pub const INLINE_PROVIDER_KIND: &str = "AWS";

/// Validates a Provisioner (metadata and spec).
pub fn validate_provisioner(p: &Provisioner) -> Report {
    let mut r = Report::default();
    match p.metadata.name.as_deref() {
        None | Some("") => r.err(
            FieldError::new("metadata.name", "is required")
                .fix("set metadata.name (indented under metadata:), e.g. `name: default`"),
        ),
        Some(name) => {
            if let Err(e) = check_object_name(name) {
                r.err(
                    FieldError::new("metadata.name", format!("is not a valid name: {e}"))
                        .value(name)
                        .fix("use at most 63 lower-case letters, digits and '-'"),
                );
            }
        }
    }
    validate_spec(&p.spec, &mut r);
    r
}

/// Validates a Provisioner spec, adding to `r`.
pub fn validate_spec(spec: &ProvisionerSpec, r: &mut Report) {
    validate_ttls(spec, r);
    validate_labels(&spec.labels, r);
    validate_annotations(&spec.annotations, r);
    validate_taints(spec, r);
    validate_requirements(&spec.requirements, r);
    if let Some(k) = &spec.kubelet_configuration {
        validate_kubelet(k, "spec.kubeletConfiguration", r);
    }
    if let Some(w) = spec.weight {
        if !(1..=100).contains(&w) {
            r.err(
                FieldError::new("spec.weight", "must be between 1 and 100")
                    .value(w.to_string())
                    .fix("choose a weight from 1 (lowest) to 100 (highest), or remove it"),
            );
        }
    }
    if let Some(limits) = &spec.limits {
        validate_resource_list(&limits.resources, "spec.limits.resources", None, r);
    }
    match (&spec.provider, &spec.provider_ref) {
        (None, None) => r.err(
            FieldError::new(
                "spec",
                "needs exactly one of provider or providerRef; found neither",
            )
            .fix(
                "add `providerRef: {name: <AWSNodeTemplate name>}` or an inline `provider:` block",
            ),
        ),
        (Some(_), Some(_)) => r.err(
            FieldError::new(
                "spec",
                "needs exactly one of provider or providerRef; found both",
            )
            .fix("keep providerRef and move the provider settings into the AWSNodeTemplate"),
        ),
        (Some(p), None) => {
            validate_aws_provider(p, "spec.provider", r);
            for (field, value, expected) in [
                (
                    "apiVersion",
                    p.api_version.as_deref(),
                    INLINE_PROVIDER_API_VERSION,
                ),
                ("kind", p.kind.as_deref(), INLINE_PROVIDER_KIND),
            ] {
                if let Some(v) = value.filter(|v| !v.is_empty() && *v != expected) {
                    r.warn(
                        FieldError::new(
                            format!("spec.provider.{field}"),
                            format!("is ignored; inline provider blocks are {expected}"),
                        )
                        .value(v)
                        .fix(format!("set {field}: {expected} or remove it")),
                    );
                }
            }
            r.warn(
                FieldError::new("spec.provider", "inline provider settings are deprecated")
                    .fix("move them to an AWSNodeTemplate and reference it with spec.providerRef"),
            );
        }
        (None, Some(pr)) => {
            if pr.name.trim().is_empty() {
                r.err(
                    FieldError::new("spec.providerRef.name", "is required")
                        .fix("name the AWSNodeTemplate to use"),
                );
            }
            if let Some(kind) = pr.kind.as_deref() {
                if !kind.is_empty() && kind != "AWSNodeTemplate" {
                    r.err(
                        FieldError::new("spec.providerRef.kind", "must be AWSNodeTemplate")
                            .value(kind)
                            .fix("set kind: AWSNodeTemplate or remove it"),
                    );
                }
            }
            if let Some(v) = pr.api_version.as_deref() {
                if !v.is_empty() && v != "karpenter.k8s.aws/v1alpha1" {
                    r.err(
                        FieldError::new(
                            "spec.providerRef.apiVersion",
                            "must be karpenter.k8s.aws/v1alpha1",
                        )
                        .value(v)
                        .fix("set apiVersion: karpenter.k8s.aws/v1alpha1 or remove it"),
                    );
                }
            }
        }
    }
    warn_narrow_on_demand(spec, r);
}

/// Validates an AWSNodeTemplate.
pub fn validate_node_template(t: &AWSNodeTemplate) -> Report {
    let mut r = Report::default();
    if t.metadata.name.as_deref().unwrap_or("").is_empty() {
        r.err(FieldError::new("metadata.name", "is required").fix("set metadata.name"));
    }
    let spec = &t.spec;
    validate_aws_provider(&spec.provider(), "spec", &mut r);
    if spec.launch_template.is_some() && spec.user_data.is_some() {
        r.err(
            FieldError::new("spec.userData", "cannot be combined with launchTemplate")
                .fix("put the user data in the launch template, or remove launchTemplate"),
        );
    }
    if spec.launch_template.is_some() && spec.ami_selector.is_some() {
        r.err(
            FieldError::new("spec.amiSelector", "cannot be combined with launchTemplate")
                .fix("set the AMI in the launch template and remove amiSelector, or remove launchTemplate"),
        );
    }
    if spec.ami_family.as_deref() == Some("Custom") && spec.ami_selector.is_none() {
        r.err(
            FieldError::new("spec.amiSelector", "is required when amiFamily is Custom").fix(
                "select the AMIs with amiSelector (tags or aws-ids), or pick another amiFamily",
            ),
        );
    }
    if let Some(sel) = &spec.ami_selector {
        validate_selector(sel, "spec.amiSelector", "ami-", &mut r);
    }
    r
}

fn validate_ttls(spec: &ProvisionerSpec, r: &mut Report) {
    for (field, v) in [
        ("spec.ttlSecondsAfterEmpty", spec.ttl_seconds_after_empty),
        (
            "spec.ttlSecondsUntilExpired",
            spec.ttl_seconds_until_expired,
        ),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            r.err(
                FieldError::new(field, "cannot be negative")
                    .value(v.to_string())
                    .fix("use 0 or more seconds, or remove the field to disable it"),
            );
        }
    }
    let consolidation = spec
        .consolidation
        .as_ref()
        .and_then(|c| c.enabled)
        .unwrap_or(false);
    if consolidation && spec.ttl_seconds_after_empty.is_some() {
        r.err(
            FieldError::new(
                "spec.ttlSecondsAfterEmpty",
                "cannot be set when consolidation.enabled is true (consolidation already removes empty nodes)",
            )
            .fix("remove ttlSecondsAfterEmpty, or set consolidation.enabled: false"),
        );
    }
}

fn key_error(field: &str, key: &str, problem: &str) -> FieldError {
    let err = FieldError::new(field, format!("is not a valid label key: {problem}"));
    let err = match labels::suggested_key(key) {
        Some(k) => err.suggest(k),
        None => err,
    };
    err.value(key)
        .maybe_fix(labels::suggest_key(key).or_else(|| {
            Some("use an optional DNS prefix and '/' followed by a name of letters, digits, '-', '_' and '.'".into())
        }))
}

fn validate_labels(map: &BTreeMap<String, String>, r: &mut Report) {
    for (key, value) in map {
        let field = format!("spec.labels[{key:?}]");
        if let Err(e) = labels::check_qualified_name(key) {
            r.err(key_error(&field, key, &e));
            continue;
        }
        if labels::RESTRICTED_LABELS.contains(&labels::normalize(key)) {
            r.err(
                FieldError::new(
                    &field,
                    "is set by Karpenter and cannot be set by a provisioner",
                )
                .value(key)
                .fix("remove this label"),
            );
            continue;
        }
        if let Some(domain) = labels::restricted_domain(key) {
            r.err(restricted_error(&field, key, domain));
        }
        if let Err(e) = labels::check_label_value(value) {
            r.err(
                FieldError::new(&field, format!("is not a valid label value: {e}"))
                    .value(value)
                    .fix("use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"),
            );
        }
    }
}

fn restricted_error(field: &str, key: &str, domain: &str) -> FieldError {
    let hint = labels::suggest_key(key)
        .map(|s| format!("{s} Otherwise "))
        .unwrap_or_default();
    FieldError::new(
        field,
        format!("uses the restricted domain {domain:?}, which only well-known labels may use"),
    )
    .value(key)
    .fix(format!(
        "{hint}use a domain of your own (e.g. example.com/{}), or one of the allowed sub-domains {}",
        key.rsplit('/').next().unwrap_or(key),
        labels::LABEL_DOMAIN_EXCEPTIONS.join(", ")
    ))
}

fn validate_annotations(map: &BTreeMap<String, String>, r: &mut Report) {
    for key in map.keys() {
        if let Err(e) = labels::check_qualified_name(key) {
            r.err(key_error(&format!("spec.annotations[{key:?}]"), key, &e));
        }
    }
}

fn validate_taints(spec: &ProvisionerSpec, r: &mut Report) {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (list, taints) in [
        ("taints", &spec.taints),
        ("startupTaints", &spec.startup_taints),
    ] {
        for (i, t) in taints.iter().enumerate() {
            let base = format!("spec.{list}[{i}]");
            validate_taint(t, &base, r);
            let id = (t.key.clone(), t.effect.clone());
            if let Some(first) = seen.get(&id) {
                r.err(
                    FieldError::new(
                        &base,
                        format!("duplicates the taint key and effect of {first}"),
                    )
                    .value(t.display())
                    .fix("keep one taint per key and effect across taints and startupTaints"),
                );
            } else {
                seen.insert(id, base);
            }
        }
    }
}

fn validate_taint(t: &Taint, base: &str, r: &mut Report) {
    if let Err(e) = labels::check_qualified_name(&t.key) {
        r.err(
            FieldError::new(
                format!("{base}.key"),
                format!("is not a valid taint key: {e}"),
            )
            .value(&t.key)
            .fix(
                labels::suggest_key(&t.key)
                    .unwrap_or_else(|| "use a qualified name such as example.com/dedicated".into()),
            ),
        );
    }
    if let Some(v) = &t.value {
        if let Err(e) = labels::check_label_value(v) {
            r.err(
                FieldError::new(
                    format!("{base}.value"),
                    format!("is not a valid taint value: {e}"),
                )
                .value(v)
                .fix("use at most 63 letters, digits, '-', '_' and '.'"),
            );
        }
    }
    if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
        let suggestion = labels::closest(&t.effect, TAINT_EFFECTS.iter().copied())
            .map(|c| format!("did you mean {c:?}? "))
            .unwrap_or_default();
        r.err(
            FieldError::new(format!("{base}.effect"), "is not a taint effect")
                .value(&t.effect)
                .fix(format!(
                    "{suggestion}use one of {}",
                    TAINT_EFFECTS.join(", ")
                )),
        );
    }
}

/// Validates requirements (shared by Provisioners and the packing engine's inputs).
pub fn validate_requirements(reqs: &[Requirement], r: &mut Report) {
    for (i, req) in reqs.iter().enumerate() {
        validate_requirement(req, &format!("spec.requirements[{i}]"), r);
    }
}

fn validate_requirement(req: &Requirement, base: &str, r: &mut Report) {
    let key = labels::normalize(&req.key);
    let key_field = format!("{base}.key");
    if let Err(e) = labels::check_qualified_name(key) {
        r.err(key_error(&key_field, &req.key, &e));
    } else if labels::RESTRICTED_LABELS.contains(&key) {
        let fix = if key == labels::HOSTNAME {
            "remove it; a provisioner cannot pin hostnames (use pod affinity or topology spread on the pods instead)"
        } else {
            "remove it; Karpenter sets karpenter.sh/provisioner-name on every node it launches"
        };
        r.err(
            FieldError::new(
                &key_field,
                "is restricted and cannot be used in requirements",
            )
            .value(&req.key)
            .fix(fix),
        );
    } else if let Some(domain) = labels::restricted_domain(key) {
        r.err(restricted_error(&key_field, &req.key, domain));
    }
    let op_field = format!("{base}.operator");
    if !OPERATORS.contains(&req.operator.as_str()) {
        let lower = req.operator.to_ascii_lowercase();
        let suggestion = OPERATORS
            .iter()
            .find(|o| o.to_ascii_lowercase() == lower)
            .copied()
            .or_else(|| labels::closest(&req.operator, OPERATORS.iter().copied()))
            .map(|c| format!("did you mean {c:?}? "))
            .unwrap_or_default();
        r.err(
            FieldError::new(&op_field, "is not a supported operator")
                .value(&req.operator)
                .fix(format!("{suggestion}use one of {}", OPERATORS.join(", "))),
        );
        return;
    }
    let values_field = format!("{base}.values");
    match req.operator.as_str() {
        "In" if req.values.is_empty() => r.err(
            FieldError::new(&values_field, "must not be empty for operator In")
                .fix("list at least one value, or use operator Exists"),
        ),
        "Exists" | "DoesNotExist" if !req.values.is_empty() => r.err(
            FieldError::new(
                &values_field,
                format!("must be empty for operator {}", req.operator),
            )
            .value(req.values.join(", "))
            .fix("remove the values, or use In/NotIn"),
        ),
        "Gt" | "Lt" => {
            let ok = req.values.len() == 1
                && req.values[0].parse::<u64>().is_ok()
                && !req.values[0].starts_with('+');
            if !ok {
                r.err(
                    FieldError::new(
                        &values_field,
                        format!(
                            "operator {} needs exactly one non-negative integer",
                            req.operator
                        ),
                    )
                    .value(req.values.join(", "))
                    .fix("give a single whole number, e.g. values: [\"2\"]"),
                );
            }
        }
        _ => {}
    }
    let numeric = matches!(req.operator.as_str(), "Gt" | "Lt");
    for (j, v) in req.values.iter().enumerate().filter(|_| !numeric) {
        if let Err(e) = labels::check_label_value(v) {
            r.err(
                FieldError::new(
                    format!("{values_field}[{j}]"),
                    format!("is not a valid label value: {e}"),
                )
                .value(v)
                .fix(if v.trim() != v {
                    format!("remove the surrounding whitespace: {:?}", v.trim())
                } else {
                    "use at most 63 letters, digits, '-', '_' and '.'".to_string()
                }),
            );
        }
    }
    // Values that can never match anything Karpenter launches.
    let known: Option<&[&str]> = match key {
        labels::CAPACITY_TYPE => {
            Some(&[labels::CAPACITY_TYPE_ON_DEMAND, labels::CAPACITY_TYPE_SPOT])
        }
        labels::ARCH => Some(&["amd64", "arm64"]),
        labels::OS => Some(&["linux", "windows"]),
        _ => None,
    };
    if let Some(known) = known {
        if matches!(req.operator.as_str(), "In" | "NotIn") {
            for (j, v) in req.values.iter().enumerate() {
                if !known.contains(&v.as_str()) {
                    let suggestion = labels::closest(v, known.iter().copied())
                        .map(|c| format!("did you mean {c:?}? "))
                        .unwrap_or_default();
                    r.err(
                        FieldError::new(
                            format!("{values_field}[{j}]"),
                            format!("is not a known value of {key}"),
                        )
                        .value(v)
                        .fix(format!("{suggestion}use one of {}", known.join(", "))),
                    );
                }
            }
        }
    }
}

const EVICTION_SIGNALS: &[&str] = &[
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "pid.available",
];
const RESERVED_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "pid"];

fn validate_kubelet(k: &KubeletConfiguration, base: &str, r: &mut Report) {
    for (i, ip) in k.cluster_dns.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            r.err(
                FieldError::new(format!("{base}.clusterDNS[{i}]"), "is not an IP address")
                    .value(ip)
                    .fix("use the cluster DNS service IP, e.g. 10.100.0.10"),
            );
        }
    }
    for (field, v) in [
        ("maxPods", k.max_pods),
        ("podsPerCore", k.pods_per_core),
        ("evictionMaxPodGracePeriod", k.eviction_max_pod_grace_period),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            r.err(
                FieldError::new(format!("{base}.{field}"), "cannot be negative")
                    .value(v.to_string())
                    .fix("use 0 or more, or remove the field"),
            );
        }
    }
    if let Some(rt) = k.container_runtime.as_deref() {
        if rt != "containerd" && rt != "dockerd" {
            r.err(
                FieldError::new(format!("{base}.containerRuntime"), "is not supported")
                    .value(rt)
                    .fix("use containerd or dockerd"),
            );
        }
    }
    validate_resource_list(
        &k.system_reserved,
        &format!("{base}.systemReserved"),
        Some(RESERVED_RESOURCES),
        r,
    );
    validate_resource_list(
        &k.kube_reserved,
        &format!("{base}.kubeReserved"),
        Some(RESERVED_RESOURCES),
        r,
    );
    for (name, map) in [
        ("evictionHard", &k.eviction_hard),
        ("evictionSoft", &k.eviction_soft),
    ] {
        for (signal, value) in map {
            let field = format!("{base}.{name}[{signal:?}]");
            check_signal(signal, &field, r);
            check_threshold(value, &field, r);
        }
    }
    for (signal, d) in &k.eviction_soft_grace_period {
        let field = format!("{base}.evictionSoftGracePeriod[{signal:?}]");
        check_signal(signal, &field, r);
        if let Err(e) = parse_duration_secs(d) {
            r.err(
                FieldError::new(&field, format!("is not a duration: {e}"))
                    .value(d)
                    .fix("write a duration such as 30s, 1m30s or 2h"),
            );
        }
        if !k.eviction_soft.contains_key(signal) {
            r.err(
                FieldError::new(&field, "has no matching evictionSoft threshold").fix(format!(
                    "add evictionSoft[{signal:?}] or remove this grace period"
                )),
            );
        }
    }
    for signal in k.eviction_soft.keys() {
        if !k.eviction_soft_grace_period.contains_key(signal) {
            r.err(
                FieldError::new(
                    format!("{base}.evictionSoft[{signal:?}]"),
                    "has no matching evictionSoftGracePeriod",
                )
                .fix(format!("add evictionSoftGracePeriod[{signal:?}], e.g. 1m")),
            );
        }
    }
    for (field, v) in [
        (
            "imageGCHighThresholdPercent",
            k.image_gc_high_threshold_percent,
        ),
        (
            "imageGCLowThresholdPercent",
            k.image_gc_low_threshold_percent,
        ),
    ] {
        if let Some(v) = v.filter(|v| !(0..=100).contains(v)) {
            r.err(
                FieldError::new(
                    format!("{base}.{field}"),
                    "must be a percentage from 0 to 100",
                )
                .value(v.to_string())
                .fix("use a whole number from 0 to 100"),
            );
        }
    }
    if let (Some(high), Some(low)) = (
        k.image_gc_high_threshold_percent,
        k.image_gc_low_threshold_percent,
    ) {
        if high < low {
            r.err(
                FieldError::new(
                    format!("{base}.imageGCHighThresholdPercent"),
                    format!("must be greater than or equal to imageGCLowThresholdPercent ({low})"),
                )
                .value(high.to_string())
                .fix("raise the high threshold or lower the low one"),
            );
        }
    }
}

fn check_signal(signal: &str, field: &str, r: &mut Report) {
    if !EVICTION_SIGNALS.contains(&signal) {
        let suggestion = labels::closest(signal, EVICTION_SIGNALS.iter().copied())
            .map(|c| format!("did you mean {c:?}? "))
            .unwrap_or_default();
        r.err(
            FieldError::new(field, "is not an eviction signal")
                .value(signal)
                .fix(format!(
                    "{suggestion}use one of {}",
                    EVICTION_SIGNALS.join(", ")
                )),
        );
    }
}

fn check_threshold(value: &str, field: &str, r: &mut Report) {
    if let Some(p) = value.strip_suffix('%') {
        match p.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => {}
            _ => r.err(
                FieldError::new(field, "is not a percentage from 0% to 100%")
                    .value(value)
                    .fix("write a percentage such as 10% or a quantity such as 100Mi"),
            ),
        }
    } else {
        match parse_milli(value) {
            Ok(v) if v >= 0 => {}
            Ok(_) => r.err(
                FieldError::new(field, "cannot be negative")
                    .value(value)
                    .fix("write a non-negative quantity such as 100Mi"),
            ),
            Err(e) => r.err(
                FieldError::new(field, format!("is not a threshold: {e}"))
                    .value(value)
                    .fix("write a percentage such as 10% or a quantity such as 100Mi"),
            ),
        }
    }
}

fn validate_resource_list(
    map: &BTreeMap<String, Quantity>,
    base: &str,
    allowed: Option<&[&str]>,
    r: &mut Report,
) {
    for (name, q) in map {
        let field = format!("{base}[{name:?}]");
        if let Some(allowed) = allowed {
            if !allowed.contains(&name.as_str()) {
                let suggestion = labels::closest(name, allowed.iter().copied())
                    .map(|c| format!("did you mean {c:?}? "))
                    .unwrap_or_default();
                r.err(
                    FieldError::new(&field, "is not a resource that can be reserved")
                        .value(name)
                        .fix(format!("{suggestion}use one of {}", allowed.join(", "))),
                );
                continue;
            }
        } else if let Err(e) = labels::check_qualified_name(name) {
            r.err(
                FieldError::new(&field, format!("is not a valid resource name: {e}"))
                    .value(name)
                    .fix("use a resource name such as cpu, memory or nvidia.com/gpu"),
            );
            continue;
        }
        match q.milli() {
            Ok(v) if v < 0 => r.err(
                FieldError::new(&field, "cannot be negative")
                    .value(q.as_str())
                    .fix("use 0 or more"),
            ),
            Ok(_) => {}
            Err(e) => r.err(
                FieldError::new(&field, e.to_string())
                    .value(q.as_str())
                    .fix("write a quantity such as 500m, 2, 4Gi"),
            ),
        }
    }
}

fn validate_selector(sel: &BTreeMap<String, String>, base: &str, id_prefix: &str, r: &mut Report) {
    if sel.contains_key(IDS_KEY) && sel.len() > 1 {
        let others: Vec<&str> = sel
            .keys()
            .map(String::as_str)
            .filter(|k| *k != IDS_KEY)
            .collect();
        r.err(
            FieldError::new(
                format!("{base}[{IDS_KEY:?}]"),
                format!(
                    "cannot be combined with other keys ({}): IDs select exactly those resources",
                    others.join(", ")
                ),
            )
            .fix(format!(
                "keep either {IDS_KEY} or the tag keys; list every wanted ID in {IDS_KEY} (comma-separated)"
            )),
        );
    }
    if sel.is_empty() {
        r.err(
            FieldError::new(base, "must not be empty")
                .fix("select by tag, e.g. {karpenter.sh/discovery: my-cluster}, or by aws-ids, or remove the selector"),
        );
    }
    for (k, v) in sel {
        let field = format!("{base}[{k:?}]");
        if k.trim().is_empty() {
            r.err(FieldError::new(&field, "has an empty key").fix("name the tag to select by"));
        } else if k != k.trim() {
            r.err(
                FieldError::new(&field, "key has surrounding whitespace")
                    .value(k)
                    .fix(format!("use {:?}", k.trim())),
            );
        }
        if v.trim().is_empty() {
            r.err(
                FieldError::new(&field, "has an empty value")
                    .fix("give the tag value, or \"*\" to match any value"),
            );
        }
        if k == IDS_KEY {
            for id in v.split(',').map(str::trim) {
                if !id.starts_with(id_prefix) {
                    r.err(
                        FieldError::new(&field, format!("is not an ID starting with {id_prefix}"))
                            .value(id)
                            .fix(format!("list {id_prefix}... IDs separated by commas")),
                    );
                }
            }
        }
    }
}

/// Smallest EBS volume upstream accepts, 1G, in milli-bytes.
const MIN_VOLUME_MILLI: i64 = 1_000_000_000 * 1000;
/// Largest EBS volume upstream accepts, 64T, in milli-bytes.
const MAX_VOLUME_MILLI: i64 = 64_000_000_000_000 * 1000;
/// The selector key that lists IDs; it cannot be combined with tag keys.
const IDS_KEY: &str = "aws-ids";

/// Validates AWS provider settings found at `base`.
pub fn validate_aws_provider(p: &AwsProvider, base: &str, r: &mut Report) {
    if let Some(ip) = &p.instance_profile {
        if ip.trim().is_empty() {
            r.err(
                FieldError::new(format!("{base}.instanceProfile"), "must not be empty")
                    .fix("name the IAM instance profile for the nodes, or remove the field"),
            );
        }
    }
    if let Some(sel) = &p.subnet_selector {
        validate_selector(sel, &format!("{base}.subnetSelector"), "subnet-", r);
    }
    if let Some(sel) = &p.security_group_selector {
        validate_selector(sel, &format!("{base}.securityGroupSelector"), "sg-", r);
    }
    if let Some(f) = p.ami_family.as_deref() {
        if !AMI_FAMILIES.contains(&f) {
            let suggestion = AMI_FAMILIES
                .iter()
                .find(|a| a.eq_ignore_ascii_case(f))
                .copied()
                .or_else(|| labels::closest(f, AMI_FAMILIES.iter().copied()))
                .map(|c| format!("did you mean {c:?}? "))
                .unwrap_or_default();
            r.err(
                FieldError::new(format!("{base}.amiFamily"), "is not a supported AMI family")
                    .value(f)
                    .fix(format!(
                        "{suggestion}use one of {}",
                        AMI_FAMILIES.join(", ")
                    )),
            );
        }
    }
    for key in p.tags.keys() {
        let field = format!("{base}.tags[{key:?}]");
        if key.is_empty() {
            r.err(FieldError::new(&field, "has an empty key").fix("name the tag"));
        } else if key == labels::PROVISIONER_NAME
            || key == "karpenter.sh/managed-by"
            || key.starts_with("kubernetes.io/cluster/")
        {
            r.err(
                FieldError::new(
                    &field,
                    "is a tag Karpenter sets and uses to find its own instances",
                )
                .value(key)
                .fix("remove this tag; Karpenter adds it itself"),
            );
        }
    }
    if p.launch_template.is_some() {
        let conflicts = [
            ("securityGroupSelector", p.security_group_selector.is_some()),
            ("metadataOptions", p.metadata_options.is_some()),
            ("amiFamily", p.ami_family.is_some()),
            ("instanceProfile", p.instance_profile.is_some()),
            ("blockDeviceMappings", !p.block_device_mappings.is_empty()),
        ];
        for (name, set) in conflicts {
            if set {
                r.err(
                    FieldError::new(
                        format!("{base}.{name}"),
                        "cannot be combined with launchTemplate (the launch template carries it)",
                    )
                    .fix(format!(
                        "set it in the launch template and remove {name}, or remove launchTemplate"
                    )),
                );
            }
        }
    }
    if let Some(m) = &p.metadata_options {
        let b = format!("{base}.metadataOptions");
        for (name, v, allowed) in [
            (
                "httpEndpoint",
                &m.http_endpoint,
                &["enabled", "disabled"][..],
            ),
            (
                "httpProtocolIPv6",
                &m.http_protocol_ipv6,
                &["enabled", "disabled"][..],
            ),
            ("httpTokens", &m.http_tokens, &["required", "optional"][..]),
        ] {
            if let Some(v) = v.as_deref() {
                if !allowed.contains(&v) {
                    r.err(
                        FieldError::new(format!("{b}.{name}"), "is not an allowed value")
                            .value(v)
                            .fix(format!("use one of {}", allowed.join(", "))),
                    );
                }
            }
        }
        if let Some(h) = m
            .http_put_response_hop_limit
            .filter(|h| !(1..=64).contains(h))
        {
            r.err(
                FieldError::new(
                    format!("{b}.httpPutResponseHopLimit"),
                    "must be from 1 to 64",
                )
                .value(h.to_string())
                .fix("use 2 for pods that reach IMDS through a container network"),
            );
        }
    }
    let mut devices = BTreeSet::new();
    for (i, m) in p.block_device_mappings.iter().enumerate() {
        let b = format!("{base}.blockDeviceMappings[{i}]");
        match m.device_name.as_deref() {
            None | Some("") => r.err(
                FieldError::new(format!("{b}.deviceName"), "is required")
                    .fix("name the device, e.g. /dev/xvda"),
            ),
            Some(d) => {
                if !devices.insert(d.to_string()) {
                    r.err(
                        FieldError::new(format!("{b}.deviceName"), "is mapped more than once")
                            .value(d)
                            .fix("keep one mapping per device"),
                    );
                }
            }
        }
        let Some(ebs) = &m.ebs else {
            r.err(
                FieldError::new(format!("{b}.ebs"), "is required")
                    .fix("describe the EBS volume, e.g. {volumeSize: 20Gi, volumeType: gp3}"),
            );
            continue;
        };
        match &ebs.volume_size {
            Some(size) => {
                // Upstream's bounds are decimal: 1G (10^9 bytes) to 64T (64 x 10^12 bytes).
                match size.milli() {
                    Ok(milli) if (MIN_VOLUME_MILLI..=MAX_VOLUME_MILLI).contains(&milli) => {}
                    _ => r.err(
                        FieldError::new(
                            format!("{b}.ebs.volumeSize"),
                            "must be a size from 1G to 64T (decimal units)",
                        )
                        .value(size.as_str())
                        .fix("write a size such as 20Gi; at most 64T (58.2Ti)"),
                    ),
                }
            }
            None if ebs.snapshot_id.is_none() => r.err(
                FieldError::new(
                    format!("{b}.ebs.volumeSize"),
                    "is required unless snapshotID is set",
                )
                .fix(
                    "give the volume a size, e.g. volumeSize: 20Gi, or create it from a snapshotID",
                ),
            ),
            None => {}
        }
        if let Some(t) = ebs.volume_type.as_deref() {
            if !VOLUME_TYPES.contains(&t) {
                r.err(
                    FieldError::new(format!("{b}.ebs.volumeType"), "is not an EBS volume type")
                        .value(t)
                        .fix(format!("use one of {}", VOLUME_TYPES.join(", "))),
                );
            }
        }
        let vt = ebs.volume_type.as_deref().unwrap_or("gp3");
        if ebs.iops.is_some() && !matches!(vt, "io1" | "io2" | "gp3") {
            r.err(
                FieldError::new(
                    format!("{b}.ebs.iops"),
                    format!("cannot be set for volume type {vt}"),
                )
                .fix("remove iops, or use io1, io2 or gp3"),
            );
        }
        if ebs.throughput.is_some() && vt != "gp3" {
            r.err(
                FieldError::new(
                    format!("{b}.ebs.throughput"),
                    format!("cannot be set for volume type {vt}"),
                )
                .fix("remove throughput, or use gp3"),
            );
        }
    }
}

fn warn_narrow_on_demand(spec: &ProvisionerSpec, r: &mut Report) {
    let allows = |key: &str, value: &str| {
        spec.requirements
            .iter()
            .filter(|q| labels::normalize(q.key.trim()) == key)
            .all(|q| match q.operator.as_str() {
                "In" => q.values.iter().any(|v| v == value),
                "NotIn" => !q.values.iter().any(|v| v == value),
                "DoesNotExist" => false,
                _ => true,
            })
    };
    let on_demand_only = !allows(labels::CAPACITY_TYPE, labels::CAPACITY_TYPE_SPOT);
    let types: Option<usize> = spec
        .requirements
        .iter()
        .filter(|q| labels::normalize(&q.key) == labels::INSTANCE_TYPE && q.operator == "In")
        .map(|q| q.values.len())
        .min();
    if let Some(n) = types.filter(|n| on_demand_only && *n < 5) {
        r.warn(
            FieldError::new(
                "spec.requirements",
                format!("allows only {n} instance type(s) with on-demand capacity only"),
            )
            .fix("allow at least 5 instance types so launches can fall back when a type has no capacity"),
        );
    }
}

fn check_object_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("at most 63 characters (has {})", name.len()));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Err(
            "lower-case letters, digits, '-' and '.', starting and ending alphanumeric".into(),
        );
    }
    Ok(())
}

/// Parses a Go-style duration (`1h30m`, `90s`, `500ms`) into seconds.
pub fn parse_duration_secs(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(0.0);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} has a number without a unit (s, m, h, ms)"))?;
        if num_len == 0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{s:?} has a bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?} has unknown unit {u:?}")),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
