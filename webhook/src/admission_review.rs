//! The `admission.k8s.io/v1` AdmissionReview wire format: a borrowed view of the request (read
//! straight from the parsed JSON, so any JSON value can be looked at without a panic) and the
//! response the API server expects back.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

/// `apiVersion` of AdmissionReviews.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of AdmissionReviews.
pub const KIND: &str = "AdmissionReview";

/// The review could not be read as an AdmissionReview request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The body is JSON but not an object.
    #[error("expected an AdmissionReview object, found {0}")]
    NotAnObject(&'static str),
    /// `apiVersion`/`kind` are not `admission.k8s.io/v1` `AdmissionReview`.
    #[error("expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, found {0}")]
    WrongType(String),
    /// There is no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A required field of `request` is missing or has the wrong type.
    #[error("request.{0} is missing or not a {1}")]
    Field(&'static str, &'static str),
}

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `CREATE`
    Create,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
}

/// Group, version and kind of the object under review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gvk<'a> {
    /// API group (empty for the core group).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Kind.
    pub kind: &'a str,
}

/// A borrowed view of `request` in an AdmissionReview.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionRequest<'a> {
    /// Identifies the request; echoed in the response.
    pub uid: &'a str,
    /// The kind of the object under review.
    pub kind: Gvk<'a>,
    /// The resource's plural name, e.g. `provisioners`.
    pub resource: &'a str,
    /// The sub-resource, e.g. `scale`, when there is one.
    pub sub_resource: Option<&'a str>,
    /// The operation.
    pub operation: Operation,
    /// The object's name, when known.
    pub name: Option<&'a str>,
    /// The object's namespace, for namespaced objects.
    pub namespace: Option<&'a str>,
    /// The object as it will be stored (CREATE, UPDATE).
    pub object: Option<&'a Value>,
    /// The object as it was (UPDATE, DELETE).
    pub old_object: Option<&'a Value>,
}

// === impl Gvk ===

impl std::fmt::Display for Gvk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}/{}", self.version, self.kind)
        } else {
            write!(f, "{}/{} {}", self.group, self.version, self.kind)
        }
    }
}

// === impl AdmissionRequest ===

impl<'a> AdmissionRequest<'a> {
    /// Reads the request out of a parsed AdmissionReview.
    pub fn parse(review: &'a Value) -> Result<Self, ReviewError> {
        let Some(obj) = review.as_object() else {
            return Err(ReviewError::NotAnObject(json_type(review)));
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version != API_VERSION || kind != KIND {
            return Err(ReviewError::WrongType(format!(
                "apiVersion {api_version:?} and kind {kind:?}"
            )));
        }
        let req = match obj.get("request") {
            Some(Value::Object(r)) => r,
            _ => return Err(ReviewError::NoRequest),
        };
        let str_field = |name: &'static str| -> Result<&'a str, ReviewError> {
            req.get(name)
                .and_then(Value::as_str)
                .ok_or(ReviewError::Field(name, "string"))
        };
        let opt_str = |name: &str| -> Option<&'a str> {
            req.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let uid = str_field("uid")?;
        let gvk = req
            .get("kind")
            .and_then(Value::as_object)
            .ok_or(ReviewError::Field("kind", "group/version/kind object"))?;
        let part = |name: &str| gvk.get(name).and_then(Value::as_str).unwrap_or("");
        let kind = Gvk {
            group: part("group"),
            version: part("version"),
            kind: part("kind"),
        };
        let resource = req
            .get("resource")
            .and_then(|r| r.get("resource"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let operation = match str_field("operation")? {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            _ => {
                return Err(ReviewError::Field(
                    "operation",
                    "CREATE/UPDATE/DELETE/CONNECT",
                ))
            }
        };
        let non_null = |name: &str| req.get(name).filter(|v| !v.is_null());
        Ok(AdmissionRequest {
            uid,
            kind,
            resource,
            sub_resource: opt_str("subResource"),
            operation,
            name: opt_str("name"),
            namespace: opt_str("namespace"),
            object: non_null("object"),
            old_object: non_null("oldObject"),
        })
    }

    /// The object's name, from the request or the object's metadata, for messages.
    pub fn display_name(&self) -> &'a str {
        self.name
            .or_else(|| {
                self.object
                    .and_then(|o| o.pointer("/metadata/name"))
                    .and_then(Value::as_str)
            })
            .unwrap_or("<unnamed>")
    }
}

/// The uid of a review that could not be parsed, if one can be found, so that the API server
/// can still match the answer to its request.
pub fn uid_of(review: &Value) -> &str {
    review
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An AdmissionReview carrying a response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// Always `admission.k8s.io/v1`.
    pub api_version: &'static str,
    /// Always `AdmissionReview`.
    pub kind: &'static str,
    /// The answer.
    pub response: AdmissionResponse,
}

/// The answer to one admission request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why not, when `allowed` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The base64-encoded RFC 6902 patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Warnings shown by kubectl as `Warning: ...`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `Failure`.
    pub status: &'static str,
    /// The message kubectl prints after "denied the request:".
    pub message: String,
    /// `Invalid`, `Forbidden` or `BadRequest`.
    pub reason: &'static str,
    /// 422, 403 or 400.
    pub code: u16,
}

// === impl AdmissionResponse ===

impl AdmissionResponse {
    /// Admits the request unchanged.
    pub fn allow(uid: &str) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Denies the request.
    pub fn deny(uid: &str, code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        AdmissionResponse {
            allowed: false,
            status: Some(Status {
                status: "Failure",
                message: message.into(),
                reason,
                code,
            }),
            ..Self::allow(uid)
        }
    }

    /// Denies a request that could not be understood (HTTP 400 semantics).
    pub fn invalid(uid: &str, message: impl Into<String>) -> Self {
        Self::deny(uid, 400, "BadRequest", message)
    }

    /// Attaches an RFC 6902 patch (a JSON array of operations).
    pub fn with_patch(mut self, patch: &Value) -> Self {
        let bytes = serde_json::to_vec(patch).unwrap_or_default();
        self.patch_type = Some("JSONPatch");
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        self
    }

    /// Attaches warnings.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// Wraps the response in an AdmissionReview.
    pub fn into_review(self) -> AdmissionReview {
        AdmissionReview {
            api_version: API_VERSION,
            kind: KIND,
            response: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "request": request})
    }

    #[test]
    fn parses_a_request() {
        let r = review(json!({
            "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale", "operation": "UPDATE", "name": "ca", "namespace": "kube-system",
            "object": {"a": 1}, "oldObject": null
        }));
        let req = AdmissionRequest::parse(&r).map_err(|e| e.to_string());
        let req = req.as_ref().map_err(Clone::clone);
        assert!(req.is_ok(), "{req:?}");
        let Ok(req) = req else { return };
        assert_eq!(req.uid, "u1");
        assert_eq!(req.kind.to_string(), "apps/v1 Deployment");
        assert_eq!(req.sub_resource, Some("scale"));
        assert_eq!(req.operation, Operation::Update);
        assert!(req.old_object.is_none());
        assert_eq!(req.display_name(), "ca");
    }

    #[test]
    fn explains_what_is_missing() {
        assert_eq!(
            AdmissionRequest::parse(&json!([])),
            Err(ReviewError::NotAnObject("a list"))
        );
        assert!(matches!(
            AdmissionRequest::parse(&json!({"kind": "Pod"})),
            Err(ReviewError::WrongType(_))
        ));
        assert_eq!(
            AdmissionRequest::parse(&json!({"apiVersion": API_VERSION, "kind": KIND})),
            Err(ReviewError::NoRequest)
        );
        assert_eq!(
            AdmissionRequest::parse(&review(json!({"uid": 7}))),
            Err(ReviewError::Field("uid", "string"))
        );
        assert_eq!(uid_of(&review(json!({"uid": "x"}))), "x");
    }

    #[test]
    fn response_serialises_like_the_api_server_expects() {
        let r = AdmissionResponse::allow("u")
            .with_patch(&json!([{"op": "add", "path": "/a", "value": 1}]))
            .into_review();
        let v = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(
            v["response"]["patch"],
            "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d"
        );
        let d = serde_json::to_value(AdmissionResponse::deny("u", 403, "Forbidden", "no"))
            .unwrap_or_default();
        assert_eq!(d["status"]["code"], 403);
        assert!(d.get("warnings").is_none());
    }
}
