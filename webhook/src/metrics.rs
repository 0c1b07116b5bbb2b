//! Prometheus metrics in the text exposition format, kept in atomics (no locks on the request
//! path): request counts by path and outcome, denials by rule, a latency histogram per path,
//! certificate reloads and plaintext connections refused on the TLS port.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::decision::{Endpoint, Outcome, Rule};

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

const ENDPOINTS: [(Endpoint, &str); 3] = [
    (Endpoint::Default, crate::DEFAULT_PATH),
    (Endpoint::Validate, crate::VALIDATE_PATH),
    (
        Endpoint::ValidateDeployments,
        crate::VALIDATE_DEPLOYMENTS_PATH,
    ),
];
const OUTCOMES: [&str; 5] = ["allowed", "patched", "denied", "invalid", "error"];
const RULES: [(Rule, &str); 6] = [
    (Rule::Schema, "schema"),
    (Rule::Validation, "validation"),
    (Rule::ClusterAutoscaler, "cluster-autoscaler"),
    (Rule::DeploymentGuard, "deployment-guard"),
    (Rule::Unsupported, "unsupported"),
    (Rule::InvalidReview, "invalid-review"),
];

/// How a request ended, for the request counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A decision was made.
    Decided(Outcome),
    /// The request failed before a decision (bad body, too large, timeout).
    Error,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The webhook's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; ENDPOINTS.len()],
    denials: [AtomicU64; RULES.len()],
    warnings: [AtomicU64; RULES.len()],
    latency: [Histogram; ENDPOINTS.len()],
    cert_reloads: AtomicU64,
    cert_reload_errors: AtomicU64,
    plaintext: AtomicU64,
}

fn endpoint_index(e: Endpoint) -> usize {
    ENDPOINTS.iter().position(|(x, _)| *x == e).unwrap_or(0)
}

fn rule_index(r: Rule) -> usize {
    RULES.iter().position(|(x, _)| *x == r).unwrap_or(0)
}

// === impl Metrics ===

impl Metrics {
    /// Records one request.
    pub fn record(
        &self,
        endpoint: Endpoint,
        outcome: RequestOutcome,
        rule: Option<Rule>,
        elapsed: Duration,
    ) {
        let e = endpoint_index(endpoint);
        let o = match outcome {
            RequestOutcome::Decided(Outcome::Allowed) => 0,
            RequestOutcome::Decided(Outcome::Patched) => 1,
            RequestOutcome::Decided(Outcome::Denied) => 2,
            RequestOutcome::Decided(Outcome::Invalid) => 3,
            RequestOutcome::Error => 4,
        };
        self.requests[e][o].fetch_add(1, Ordering::Relaxed);
        if let Some(rule) = rule {
            let counter = match outcome {
                RequestOutcome::Decided(Outcome::Denied | Outcome::Invalid) => &self.denials,
                _ => &self.warnings,
            };
            counter[rule_index(rule)].fetch_add(1, Ordering::Relaxed);
        }
        let h = &self.latency[e];
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a certificate reload (`ok`) or a failed one.
    pub fn cert_reload(&self, ok: bool) {
        if ok {
            self.cert_reloads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.cert_reload_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a plaintext connection refused on the TLS port.
    pub fn plaintext_refused(&self) {
        self.plaintext.fetch_add(1, Ordering::Relaxed);
    }

    /// Total requests recorded for `endpoint`.
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.requests[endpoint_index(endpoint)]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let p = "karpenter_webhook";
        let _ = writeln!(
            out,
            "# HELP {p}_requests_total Admission requests by path and outcome.\n\
             # TYPE {p}_requests_total counter"
        );
        for (e, (_, path)) in ENDPOINTS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let v = self.requests[e][o].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{p}_requests_total{{path=\"{path}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        for (name, help, counters) in [
            ("denials_total", "Requests denied, by rule.", &self.denials),
            (
                "warnings_total",
                "Requests admitted with a guard warning (warn mode or escape annotation), by rule.",
                &self.warnings,
            ),
        ] {
            let _ = writeln!(out, "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter");
            for (i, (_, rule)) in RULES.iter().enumerate() {
                let v = counters[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "{p}_{name}{{rule=\"{rule}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP {p}_request_duration_seconds Time from request to response, by path.\n\
             # TYPE {p}_request_duration_seconds histogram"
        );
        for (e, (_, path)) in ENDPOINTS.iter().enumerate() {
            let h = &self.latency[e];
            for (i, bound) in BUCKETS.iter().enumerate() {
                let v = h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{p}_request_duration_seconds_bucket{{path=\"{path}\",le=\"{bound}\"}} {v}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{p}_request_duration_seconds_bucket{{path=\"{path}\",le=\"+Inf\"}} {count}\n\
                 {p}_request_duration_seconds_sum{{path=\"{path}\"}} {sum}\n\
                 {p}_request_duration_seconds_count{{path=\"{path}\"}} {count}"
            );
        }
        for (name, help, v) in [
            (
                "certificate_reloads_total",
                "Serving certificates loaded from changed files.",
                &self.cert_reloads,
            ),
            (
                "certificate_reload_errors_total",
                "Changed certificate files that failed to load (the old certificate stays).",
                &self.cert_reload_errors,
            ),
            (
                "plaintext_connections_total",
                "Plain-HTTP connections refused on the TLS port.",
                &self.plaintext,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter\n{p}_{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record(
            Endpoint::Validate,
            RequestOutcome::Decided(Outcome::Denied),
            Some(Rule::Schema),
            Duration::from_micros(700),
        );
        m.record(
            Endpoint::Validate,
            RequestOutcome::Error,
            None,
            Duration::from_millis(20),
        );
        let text = m.render();
        assert!(text
            .contains("karpenter_webhook_requests_total{path=\"/validate\",outcome=\"denied\"} 1"));
        assert!(text.contains("karpenter_webhook_denials_total{rule=\"schema\"} 1"));
        assert!(text.contains(
            "karpenter_webhook_request_duration_seconds_bucket{path=\"/validate\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "karpenter_webhook_request_duration_seconds_bucket{path=\"/validate\",le=\"0.025\"} 2"
        ));
        assert!(
            text.contains("karpenter_webhook_request_duration_seconds_count{path=\"/validate\"} 2")
        );
        assert_eq!(m.requests(Endpoint::Validate), 2);
    }
}
