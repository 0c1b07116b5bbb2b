//! The admission decision: one parsed AdmissionReview in, one response out. Pure and
//! synchronous: the cluster comes in as a [`ClusterView`], the time as a value.
//!
//! - [`Endpoint::Default`]: Provisioner defaulting as an RFC 6902 patch that only adds.
//! - [`Endpoint::Validate`]: CRD schema, then the semantic rules of [`karpenter::api`], then the
//!   Cluster Autoscaler guard for Provisioners.
//! - [`Endpoint::ValidateDeployments`]: the guard's other direction: no Cluster Autoscaler
//!   Deployment is created or scaled up while Provisioners exist.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use karpenter::api::{
    decode_node_template_all, decode_provisioner, decode_provisioner_all, default_provisioner,
    json_patch, validate_node_template, validate_provisioner, Defaulted, FieldError,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admission_review::{uid_of, AdmissionRequest, AdmissionResponse, Gvk, Operation};
use crate::guard::{self, ClusterSnapshot, Evidence, GuardMode};
use crate::schema::{CrdSchemas, SchemaError};
use crate::ALLOW_WITH_CLUSTER_AUTOSCALER;

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Provisioner defaulting ([`crate::DEFAULT_PATH`]).
    Default,
    /// Provisioner and AWSNodeTemplate validation ([`crate::VALIDATE_PATH`]).
    Validate,
    /// The Cluster Autoscaler Deployment rule ([`crate::VALIDATE_DEPLOYMENTS_PATH`]).
    ValidateDeployments,
}

/// What the decision was, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted unchanged.
    Allowed,
    /// Admitted with a patch.
    Patched,
    /// Denied by a rule.
    Denied,
    /// The review could not be understood or was sent to the wrong webhook.
    Invalid,
}

/// The rule that denied (or, in warn mode, would have denied) a request, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The CRD's JSON Schema.
    Schema,
    /// The semantic Provisioner/AWSNodeTemplate rules (including decoding).
    Validation,
    /// A Provisioner while a Cluster Autoscaler runs.
    ClusterAutoscaler,
    /// A Cluster Autoscaler Deployment while Provisioners exist.
    DeploymentGuard,
    /// A kind this webhook does not handle.
    Unsupported,
    /// Not a readable AdmissionReview.
    InvalidReview,
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The response to send back.
    pub response: AdmissionResponse,
    /// Allowed, patched, denied or invalid.
    pub outcome: Outcome,
    /// The rule that fired, if any (also set for warn-mode guard warnings).
    pub rule: Option<Rule>,
}

/// Where the guard gets the cluster's state from.
pub trait ClusterView: Send + Sync {
    /// The current snapshot of the cache.
    fn snapshot(&self) -> ClusterSnapshot;
    /// Whether the caches have synced.
    fn synced(&self) -> bool;
}

/// A fixed snapshot: for tests and for `--cluster-autoscaler-guard=off`.
#[derive(Debug, Clone, Default)]
pub struct StaticView(pub ClusterSnapshot);

impl ClusterView for StaticView {
    fn snapshot(&self) -> ClusterSnapshot {
        self.0.clone()
    }
    fn synced(&self) -> bool {
        true
    }
}

/// The admission rules with their compiled schemas and guard settings.
#[derive(Debug)]
pub struct Admission {
    schemas: CrdSchemas,
    guard: GuardMode,
    stale_after: Duration,
}

// === impl Decision ===

impl Decision {
    fn allowed(response: AdmissionResponse) -> Self {
        Decision {
            response,
            outcome: Outcome::Allowed,
            rule: None,
        }
    }

    fn denied(response: AdmissionResponse, rule: Rule) -> Self {
        Decision {
            response,
            outcome: Outcome::Denied,
            rule: Some(rule),
        }
    }

    fn invalid(uid: &str, rule: Rule, message: impl Into<String>) -> Self {
        Decision {
            response: AdmissionResponse::invalid(uid, message),
            outcome: Outcome::Invalid,
            rule: Some(rule),
        }
    }
}

// === impl Admission ===

impl Admission {
    /// Compiles the CRD schemas; `stale_after` bounds how old Cluster Autoscaler status
    /// ConfigMaps and Leases may be to count as evidence.
    pub fn new(guard: GuardMode, stale_after: Duration) -> Result<Self, SchemaError> {
        Ok(Admission {
            schemas: CrdSchemas::new()?,
            guard,
            stale_after,
        })
    }

    /// The guard mode.
    pub fn guard(&self) -> GuardMode {
        self.guard
    }

    /// Decides one review. Never panics, whatever the JSON.
    pub fn decide(
        &self,
        endpoint: Endpoint,
        review: &Value,
        view: &dyn ClusterView,
        now: Timestamp,
    ) -> Decision {
        let req = match AdmissionRequest::parse(review) {
            Ok(r) => r,
            Err(e) => {
                return Decision::invalid(
                    uid_of(review),
                    Rule::InvalidReview,
                    format!("invalid AdmissionReview: {e}"),
                )
            }
        };
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return Decision::allowed(AdmissionResponse::allow(req.uid));
        }
        match endpoint {
            Endpoint::Default => self.default(&req),
            Endpoint::Validate => self.validate(&req, view, now),
            Endpoint::ValidateDeployments => self.validate_deployment(&req, view),
        }
    }

    fn default(&self, req: &AdmissionRequest<'_>) -> Decision {
        if !is_provisioner(req.kind) {
            return unsupported(req, "karpenter.sh/v1alpha5 Provisioner");
        }
        let Some(object) = req.object else {
            return Decision::invalid(req.uid, Rule::InvalidReview, "request.object is missing");
        };
        // An object that does not decode is left alone: the validating webhook explains why.
        let Ok(mut p) = decode_provisioner(object) else {
            return Decision::allowed(AdmissionResponse::allow(req.uid));
        };
        let changes = default_provisioner(&mut p.spec);
        if changes.is_empty() {
            return Decision::allowed(AdmissionResponse::allow(req.uid));
        }
        Decision {
            response: AdmissionResponse::allow(req.uid)
                .with_patch(&defaulting_patch(object, &changes)),
            outcome: Outcome::Patched,
            rule: None,
        }
    }

    fn validate(
        &self,
        req: &AdmissionRequest<'_>,
        view: &dyn ClusterView,
        now: Timestamp,
    ) -> Decision {
        let provisioner = is_provisioner(req.kind);
        let template = req.kind.group == "karpenter.k8s.aws"
            && req.kind.version == "v1alpha1"
            && req.kind.kind == "AWSNodeTemplate";
        if !provisioner && !template {
            return unsupported(
                req,
                "karpenter.sh/v1alpha5 Provisioner and karpenter.k8s.aws/v1alpha1 AWSNodeTemplate",
            );
        }
        let Some(object) = req.object else {
            return Decision::invalid(req.uid, Rule::InvalidReview, "request.object is missing");
        };
        // Never block the removal of finalizers from an object being deleted.
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            return Decision::allowed(AdmissionResponse::allow(req.uid));
        }
        let mut errors = if provisioner {
            self.schemas.check_provisioner(object)
        } else {
            self.schemas.check_node_template(object)
        };
        let schema_failed = !errors.is_empty();
        // Every decode error, then the rules on what could be salvaged: one denial lists all.
        let (decode_errors, report) = if provisioner {
            let d = decode_provisioner_all(object);
            (d.errors, d.object.map(|p| validate_provisioner(&p)))
        } else {
            let d = decode_node_template_all(object);
            (d.errors, d.object.map(|t| validate_node_template(&t)))
        };
        let metadata_reported = decode_errors.iter().any(|e| e.field == "metadata");
        merge(&mut errors, decode_errors);
        let warnings = match report {
            Some(report) => {
                let errs = report
                    .errors
                    .into_iter()
                    .filter(|e| !(metadata_reported && e.field.starts_with("metadata.")))
                    .collect();
                merge(&mut errors, errs);
                report.warnings
            }
            None => Vec::new(),
        };
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        if !errors.is_empty() {
            let kind = req.kind.kind;
            let name = req.display_name();
            let mut message = format!(
                "{kind} {name:?} is invalid ({} error{}):",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for e in &errors {
                let _ = write!(message, "\n- {e}");
            }
            let rule = if schema_failed {
                Rule::Schema
            } else {
                Rule::Validation
            };
            return Decision::denied(
                AdmissionResponse::deny(req.uid, 422, "Invalid", message).with_warnings(warnings),
                rule,
            );
        }
        // Metadata-only updates (finalizers, labels by controllers) do not start anything new.
        let spec_unchanged = req.operation == Operation::Update
            && req.old_object.and_then(|o| o.get("spec")) == object.get("spec");
        if !provisioner || self.guard == GuardMode::Off || spec_unchanged {
            return Decision::allowed(AdmissionResponse::allow(req.uid).with_warnings(warnings));
        }
        self.guard_provisioner(req, object, warnings, view, now)
    }

    fn guard_provisioner(
        &self,
        req: &AdmissionRequest<'_>,
        object: &Value,
        mut warnings: Vec<String>,
        view: &dyn ClusterView,
        now: Timestamp,
    ) -> Decision {
        let evidence = guard::detect(&view.snapshot(), now, self.stale_after);
        if evidence.is_empty() {
            return Decision::allowed(AdmissionResponse::allow(req.uid).with_warnings(warnings));
        }
        let remedy = remedies(&evidence);
        let summary = evidence
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let escaped = has_escape_annotation(object);
        if escaped || self.guard == GuardMode::Warn {
            let why = if escaped {
                format!("allowed by the {ALLOW_WITH_CLUSTER_AUTOSCALER} annotation")
            } else {
                "allowed because --cluster-autoscaler-guard=warn".to_string()
            };
            warnings.push(format!(
                "a Cluster Autoscaler is running ({summary}); it and Karpenter will race for the \
                 same pending pods ({why}); stop it with: {}",
                remedy.join(" && ")
            ));
            return Decision {
                response: AdmissionResponse::allow(req.uid).with_warnings(warnings),
                outcome: Outcome::Allowed,
                rule: Some(Rule::ClusterAutoscaler),
            };
        }
        let verb = match req.operation {
            Operation::Create => "created",
            _ => "updated",
        };
        let mut message = format!(
            "Provisioner {:?} was not {verb}: a Cluster Autoscaler is running in this cluster, \
             and it and Karpenter would race to add nodes for the same pending pods.\nEvidence:",
            req.display_name()
        );
        for e in &evidence {
            let _ = write!(message, "\n- {e}");
        }
        message.push_str("\nStop the Cluster Autoscaler first:");
        for r in &remedy {
            let _ = write!(message, "\n  {r}");
        }
        let _ = write!(
            message,
            "\nTo run both on purpose during a migration, annotate the Provisioner with \
             {ALLOW_WITH_CLUSTER_AUTOSCALER}: \"true\"."
        );
        Decision::denied(
            AdmissionResponse::deny(req.uid, 403, "Forbidden", message).with_warnings(warnings),
            Rule::ClusterAutoscaler,
        )
    }

    fn validate_deployment(&self, req: &AdmissionRequest<'_>, view: &dyn ClusterView) -> Decision {
        let allow = || Decision::allowed(AdmissionResponse::allow(req.uid));
        let scale = req.kind.group == "autoscaling"
            && req.kind.kind == "Scale"
            && req.sub_resource == Some("scale")
            && req.resource == "deployments";
        let deployment =
            req.kind.group == "apps" && req.kind.kind == "Deployment" && req.sub_resource.is_none();
        if !scale && !deployment {
            return unsupported(req, "apps/v1 Deployment and its scale subresource");
        }
        if self.guard == GuardMode::Off {
            return allow();
        }
        let Some(object) = req.object else {
            return Decision::invalid(req.uid, Rule::InvalidReview, "request.object is missing");
        };
        let snapshot = view.snapshot();
        let namespace = req
            .namespace
            .or_else(|| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
            })
            .unwrap_or("default");
        let name = req.display_name();
        let cached = snapshot.deployments.iter().find(|d| {
            d.metadata.name.as_deref() == Some(name)
                && d.metadata.namespace.as_deref().unwrap_or("default") == namespace
        });
        let (matched, new, old, escaped) = if deployment {
            // A Deployment the API server will reject anyway is not our business.
            let Ok(new_d) = Deployment::deserialize(object) else {
                return allow();
            };
            let Some(matched) = guard::identify(&new_d) else {
                return allow();
            };
            let old = req
                .old_object
                .and_then(|o| Deployment::deserialize(o).ok())
                .filter(|d| guard::identify(d).is_some())
                .map_or(0, |d| guard::desired_replicas(&d));
            (
                matched,
                guard::desired_replicas(&new_d),
                old,
                has_escape_annotation(object),
            )
        } else {
            let replicas = |o: Option<&Value>| {
                o.and_then(|o| o.pointer("/spec/replicas"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            };
            let selector = object
                .pointer("/status/selector")
                .and_then(Value::as_str)
                .unwrap_or("");
            let matched = if guard::is_ca_name(name) {
                format!("name {name}")
            } else if let Some(m) = cached.and_then(|d| guard::identify(d)) {
                m
            } else if guard::is_ca_name(selector) {
                format!("selector {selector}")
            } else {
                return allow();
            };
            let escaped = cached
                .and_then(|d| d.metadata.annotations.as_ref())
                .and_then(|a| a.get(ALLOW_WITH_CLUSTER_AUTOSCALER))
                .is_some_and(|v| v == "true");
            let new = i32::try_from(replicas(Some(object))).unwrap_or(i32::MAX);
            let old = i32::try_from(replicas(req.old_object)).unwrap_or(i32::MAX);
            (matched, new, old, escaped)
        };
        if new <= 0 || new <= old || snapshot.provisioners.is_empty() {
            return allow();
        }
        let mut names = snapshot.provisioners.clone();
        names.sort();
        let listed = if names.len() > 5 {
            format!("{}, ... ({} in all)", names[..5].join(", "), names.len())
        } else {
            names.join(", ")
        };
        if escaped || self.guard == GuardMode::Warn {
            let why = if escaped {
                format!("allowed by the {ALLOW_WITH_CLUSTER_AUTOSCALER} annotation")
            } else {
                "allowed because --cluster-autoscaler-guard=warn".to_string()
            };
            return Decision {
                response: AdmissionResponse::allow(req.uid).with_warnings(vec![format!(
                    "Deployment {namespace}/{name} runs a Cluster Autoscaler while Karpenter \
                     Provisioners exist ({listed}); both will add nodes for the same pending \
                     pods ({why})"
                )]),
                outcome: Outcome::Allowed,
                rule: Some(Rule::DeploymentGuard),
            };
        }
        let message = format!(
            "Deployment {namespace}/{name} ({matched}) would run a Cluster Autoscaler \
             ({old} -> {new} replicas) while Karpenter Provisioners exist ({listed}); both would \
             add nodes for the same pending pods and race.\nEither keep the Cluster Autoscaler \
             at 0 replicas, remove the Provisioners first (kubectl delete provisioners --all), \
             or, to run both on purpose during a migration, annotate the Deployment with \
             {ALLOW_WITH_CLUSTER_AUTOSCALER}: \"true\"."
        );
        Decision::denied(
            AdmissionResponse::deny(req.uid, 403, "Forbidden", message),
            Rule::DeploymentGuard,
        )
    }
}

fn is_provisioner(kind: Gvk<'_>) -> bool {
    kind.group == "karpenter.sh" && kind.version == "v1alpha5" && kind.kind == "Provisioner"
}

fn unsupported(req: &AdmissionRequest<'_>, handled: &str) -> Decision {
    Decision::invalid(
        req.uid,
        Rule::Unsupported,
        format!(
            "unsupported resource {}: this webhook handles {handled}; check the webhook \
             configuration's rules",
            req.kind
        ),
    )
}

fn has_escape_annotation(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ALLOW_WITH_CLUSTER_AUTOSCALER))
        .and_then(Value::as_str)
        == Some("true")
}

fn remedies(evidence: &[Evidence]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let deployments = evidence
        .iter()
        .any(|e| matches!(e, Evidence::Deployment { .. }));
    for e in evidence {
        // A status ConfigMap or Lease next to a Deployment is the same autoscaler.
        if deployments && !matches!(e, Evidence::Deployment { .. }) {
            continue;
        }
        let r = e.remedy();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Adds `more` to `errors`, skipping a field already reported unless the new error carries a
/// fix the old one lacks.
fn merge(errors: &mut Vec<FieldError>, more: Vec<FieldError>) {
    for e in more {
        match errors.iter_mut().find(|x| x.field == e.field) {
            Some(x) if x.fix.is_none() && e.fix.is_some() => *x = e,
            Some(_) => {}
            None => errors.push(e),
        }
    }
}

/// The RFC 6902 patch for `changes`, made applicable to `object`: when the object has no
/// `spec`, the requirements are added with a new `spec` (an `add` below a missing parent fails).
pub fn defaulting_patch(object: &Value, changes: &[Defaulted]) -> Value {
    if object.get("spec").is_some_and(Value::is_object) {
        return json_patch(changes);
    }
    let requirements: Vec<Value> = changes
        .iter()
        .flat_map(|c| match &c.value {
            Value::Array(items) if c.path == "/spec/requirements" => items.clone(),
            v => vec![v.clone()],
        })
        .collect();
    json!([{"op": "add", "path": "/spec", "value": {"requirements": requirements}}])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rules for `mode`, compiled once per test binary.
    fn admission(mode: GuardMode) -> &'static Admission {
        static ALL: std::sync::OnceLock<[Admission; 3]> = std::sync::OnceLock::new();
        let all = ALL.get_or_init(|| {
            [GuardMode::Off, GuardMode::Warn, GuardMode::Deny].map(|m| {
                match Admission::new(m, Duration::from_secs(300)) {
                    Ok(a) => a,
                    Err(e) => panic!("{e}"),
                }
            })
        });
        match mode {
            GuardMode::Off => &all[0],
            GuardMode::Warn => &all[1],
            GuardMode::Deny => &all[2],
        }
    }

    fn review(kind: Value, operation: &str, object: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "kind": kind, "resource": {"group": "", "version": "", "resource": "x"},
            "operation": operation, "object": object}})
    }

    #[test]
    fn patch_creates_a_missing_spec() {
        let mut p = karpenter::api::ProvisionerSpec::default();
        let changes = default_provisioner(&mut p);
        let patch = defaulting_patch(&json!({"metadata": {}}), &changes);
        assert_eq!(patch[0]["path"], "/spec");
        assert_eq!(
            patch[0]["value"]["requirements"].as_array().map(Vec::len),
            Some(5)
        );
        let patch = defaulting_patch(&json!({"spec": {}}), &changes);
        assert_eq!(patch.as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn merge_prefers_errors_with_fixes() {
        let mut errors = vec![FieldError::new("a", "bad")];
        merge(
            &mut errors,
            vec![
                FieldError::new("a", "bad").fix("do x"),
                FieldError::new("b", "worse"),
            ],
        );
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].fix.as_deref(), Some("do x"));
    }

    #[test]
    fn delete_and_connect_are_always_allowed() {
        let a = admission(GuardMode::Deny);
        let r = review(
            json!({"group": "x", "version": "y", "kind": "Z"}),
            "DELETE",
            json!(null),
        );
        for ep in [
            Endpoint::Default,
            Endpoint::Validate,
            Endpoint::ValidateDeployments,
        ] {
            let d = a.decide(ep, &r, &StaticView::default(), Timestamp::UNIX_EPOCH);
            assert!(d.response.allowed);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9./:_-]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("In"),
                Just("Gt"),
                Just("karpenter.sh/capacity-type"),
                Just("spot"),
                Just("Provisioner"),
                Just("cluster-autoscaler"),
                Just("true"),
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        "[a-zA-Z]{1,8}",
                        Just("spec".to_string()),
                        Just("metadata".to_string()),
                        Just("requirements".to_string()),
                        Just("key".to_string()),
                        Just("operator".to_string()),
                        Just("values".to_string()),
                        Just("name".to_string()),
                        Just("replicas".to_string()),
                        Just("annotations".to_string()),
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_kind() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"group": "karpenter.sh", "version": "v1alpha5", "kind": "Provisioner"})),
            Just(
                json!({"group": "karpenter.k8s.aws", "version": "v1alpha1", "kind": "AWSNodeTemplate"})
            ),
            Just(json!({"group": "apps", "version": "v1", "kind": "Deployment"})),
            Just(json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})),
        ]
    }

    fn snapshot() -> StaticView {
        let file: guard::SnapshotFile = serde_json::from_value(json!({
            "deployments": [{"metadata": {"name": "cluster-autoscaler", "namespace": "kube-system"},
                             "spec": {"selector": {}, "template": {}}, "status": {"availableReplicas": 1}}],
            "provisioners": ["default"]
        }))
        .unwrap_or_default();
        StaticView(file.into())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let a = admission(GuardMode::Deny);
            for ep in [Endpoint::Default, Endpoint::Validate, Endpoint::ValidateDeployments] {
                let d = a.decide(ep, &v, &snapshot(), Timestamp::UNIX_EPOCH);
                prop_assert_eq!(d.outcome, Outcome::Invalid);
            }
        }

        #[test]
        fn arbitrary_objects_in_a_review_never_panic(
            kind in arb_kind(),
            op in prop_oneof![Just("CREATE"), Just("UPDATE")],
            object in arb_json(),
            old in arb_json(),
            sub in prop_oneof![Just(Value::Null), Just(json!("scale"))],
            mode in prop_oneof![Just(GuardMode::Off), Just(GuardMode::Warn), Just(GuardMode::Deny)],
        ) {
            let a = admission(mode);
            let mut r = review(kind, op, object);
            r["request"]["oldObject"] = old;
            r["request"]["subResource"] = sub;
            r["request"]["resource"]["resource"] = json!("deployments");
            for ep in [Endpoint::Default, Endpoint::Validate, Endpoint::ValidateDeployments] {
                let d = a.decide(ep, &r, &snapshot(), Timestamp::UNIX_EPOCH);
                prop_assert_eq!(d.response.uid.as_str(), "u");
                prop_assert_eq!(d.response.allowed, d.response.status.is_none());
            }
        }
    }
}
