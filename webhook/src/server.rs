//! The HTTPS admission API: an axum [`Router`] with one handler per webhook path. Handlers read
//! the body with a size limit and a deadline, parse it, and hand it to
//! [`Admission::decide`](crate::decision::Admission::decide).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::admission_review::AdmissionReview;
use crate::decision::{Admission, ClusterView, Endpoint};
use crate::metrics::{Metrics, RequestOutcome};
use crate::{DEFAULT_PATH, VALIDATE_DEPLOYMENTS_PATH, VALIDATE_PATH};

/// Bodies over the limit are still read (and dropped) up to this size, so that the client
/// reads the 413 instead of a connection reset; larger ones are cut off.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, for tests.
    Fixed(Timestamp),
}

impl Clock {
    /// The current time.
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time allowed to receive the body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The rules.
    pub admission: Arc<Admission>,
    /// The cluster cache the guard reads.
    pub view: Arc<dyn ClusterView>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Clock,
    /// Body limits.
    pub limits: Limits,
}

/// A request that failed before a decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is larger than the limit.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time.
    #[error("request body did not arrive within {0:?}")]
    Timeout(Duration),
    /// The body could not be read (the client went away mid-body).
    #[error("failed to read the request body (truncated?): {0}")]
    Body(String),
    /// The body is not JSON.
    #[error("request body is not a JSON AdmissionReview: {0}")]
    Malformed(String),
}

// === impl ApiError ===

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Body(_) | ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A metav1.Status, so the API server can log something readable.
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": self.to_string(), "code": status.as_u16(),
        });
        let mut resp = (status, Json(body)).into_response();
        if !matches!(self, ApiError::Malformed(_)) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The admission API: `POST` [`DEFAULT_PATH`], [`VALIDATE_PATH`] and
/// [`VALIDATE_DEPLOYMENTS_PATH`]; anything else is 404 with a message.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            DEFAULT_PATH,
            post(|s: State<AppState>, r: Request| review(s, Endpoint::Default, r)),
        )
        .route(
            VALIDATE_PATH,
            post(|s: State<AppState>, r: Request| review(s, Endpoint::Validate, r)),
        )
        .route(
            VALIDATE_DEPLOYMENTS_PATH,
            post(|s: State<AppState>, r: Request| review(s, Endpoint::ValidateDeployments, r)),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(req: Request) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no webhook at {}; POST AdmissionReviews to {DEFAULT_PATH}, {VALIDATE_PATH} or \
             {VALIDATE_DEPLOYMENTS_PATH}\n",
            req.uri().path()
        ),
    )
}

async fn review(
    State(state): State<AppState>,
    endpoint: Endpoint,
    req: Request,
) -> Result<Json<AdmissionReview>, ApiError> {
    let start = Instant::now();
    let result = read_json(req, state.limits).await;
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            state
                .metrics
                .record(endpoint, RequestOutcome::Error, None, start.elapsed());
            tracing::info!(?endpoint, error = %e, "rejected a request");
            return Err(e);
        }
    };
    let decision = state
        .admission
        .decide(endpoint, &value, state.view.as_ref(), state.clock.now());
    state.metrics.record(
        endpoint,
        RequestOutcome::Decided(decision.outcome),
        decision.rule,
        start.elapsed(),
    );
    if let Some(status) = &decision.response.status {
        tracing::info!(
            ?endpoint,
            uid = %decision.response.uid,
            rule = ?decision.rule,
            code = status.code,
            "denied: {}",
            status.message.lines().next().unwrap_or("")
        );
    }
    Ok(Json(decision.response.into_review()))
}

async fn read_json(req: Request, limits: Limits) -> Result<Value, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(ApiError::TooLarge(limits.max_body_bytes));
    }
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let mut body = req.into_body();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limits.max_body_bytes));
    let mut total = 0usize;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| ApiError::Timeout(limits.body_timeout))?;
        match frame {
            None => break,
            Some(Err(e)) => return Err(ApiError::Body(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    total = total.saturating_add(data.len());
                    if total > DRAIN_LIMIT {
                        return Err(ApiError::TooLarge(limits.max_body_bytes));
                    }
                    if total <= limits.max_body_bytes {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    if total > limits.max_body_bytes {
        return Err(ApiError::TooLarge(limits.max_body_bytes));
    }
    serde_json::from_slice(&buf).map_err(|e| {
        if e.is_eof() {
            ApiError::Malformed(format!(
                "the JSON ends early at line {} column {} (truncated body?)",
                e.line(),
                e.column()
            ))
        } else {
            ApiError::Malformed(e.to_string())
        }
    })
}
