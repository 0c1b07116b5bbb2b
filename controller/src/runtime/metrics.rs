//! Prometheus metrics in text format, with Karpenter's metric names where they exist:
//! `karpenter_nodes_created` and `karpenter_nodes_terminated` (by provisioner and reason),
//! `karpenter_provisioner_scheduling_duration_seconds` (histogram),
//! `karpenter_cloudprovider_errors_total` (by method and error code), plus our
//! `karpenter_pods_pending` gauge.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the scheduling-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct State {
    counters: BTreeMap<(&'static str, Labels), f64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<&'static str, Histogram>,
}

/// The controller's metrics; cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

const HELP: [(&str, &str, &str); 5] = [
    (
        "karpenter_nodes_created",
        "counter",
        "Nodes created, by provisioner and reason.",
    ),
    (
        "karpenter_nodes_terminated",
        "counter",
        "Nodes terminated, by provisioner and reason.",
    ),
    (
        "karpenter_cloudprovider_errors_total",
        "counter",
        "Cloud provider errors, by method and error code.",
    ),
    (
        "karpenter_pods_pending",
        "gauge",
        "Provisionable pods waiting for capacity.",
    ),
    (
        "karpenter_provisioner_scheduling_duration_seconds",
        "histogram",
        "Time to compute a packing decision for one batch.",
    ),
];

// === impl Metrics ===

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    /// A node was created by `provisioner` (reason e.g. `provisioning`).
    pub fn node_created(&self, provisioner: &str, reason: &str) {
        self.add("karpenter_nodes_created", provisioner, reason);
    }

    /// A node was terminated (reason e.g. `emptiness`, `expiration`, `deleted`, `gc`).
    pub fn node_terminated(&self, provisioner: &str, reason: &str) {
        self.add("karpenter_nodes_terminated", provisioner, reason);
    }

    fn add(&self, name: &'static str, provisioner: &str, reason: &str) {
        let labels = vec![
            ("provisioner", provisioner.to_string()),
            ("reason", reason.to_string()),
        ];
        self.with(|s| *s.counters.entry((name, labels)).or_default() += 1.0);
    }

    /// A cloud-provider call failed with `code` (e.g. `InsufficientInstanceCapacity`).
    pub fn cloud_error(&self, method: &str, code: &str) {
        let labels = vec![
            ("method", method.to_string()),
            ("provider", "aws".to_string()),
            ("error", code.to_string()),
        ];
        self.with(|s| {
            *s.counters
                .entry(("karpenter_cloudprovider_errors_total", labels))
                .or_default() += 1.0
        });
    }

    /// Sets the number of provisionable pods waiting.
    pub fn set_pods_pending(&self, n: usize) {
        self.with(|s| {
            s.gauges
                .insert(("karpenter_pods_pending", Vec::new()), n as f64);
        });
    }

    /// Records how long one packing decision took.
    pub fn observe_scheduling(&self, seconds: f64) {
        self.with(|s| {
            let h = s
                .histograms
                .entry("karpenter_provisioner_scheduling_duration_seconds")
                .or_default();
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            for (name, kind, help) in HELP {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                let series = if kind == "gauge" {
                    &s.gauges
                } else {
                    &s.counters
                };
                for ((n, labels), v) in series.iter().filter(|((n, _), _)| *n == name) {
                    let _ = writeln!(out, "{n}{} {v}", render_labels(labels));
                }
                if let Some(h) = s.histograms.get(name) {
                    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                        let le = bound.to_string();
                        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.counts[i]);
                    }
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
                }
            }
            out
        })
    }
}

fn render_labels(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_the_histogram_render_as_prometheus_text() {
        let m = Metrics::default();
        m.node_created("default", "provisioning");
        m.node_created("default", "provisioning");
        m.node_terminated("gpu", "emptiness");
        m.cloud_error("create", "InsufficientInstanceCapacity");
        m.set_pods_pending(7);
        m.observe_scheduling(0.004);
        m.observe_scheduling(0.2);
        let text = m.render();
        assert!(
            text.contains(
                "karpenter_nodes_created{provisioner=\"default\",reason=\"provisioning\"} 2\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("karpenter_nodes_terminated{provisioner=\"gpu\",reason=\"emptiness\"} 1\n"));
        assert!(text.contains("error=\"InsufficientInstanceCapacity\"} 1\n"));
        assert!(text.contains("karpenter_pods_pending 7\n"));
        assert!(
            text.contains(
                "karpenter_provisioner_scheduling_duration_seconds_bucket{le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("karpenter_provisioner_scheduling_duration_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("karpenter_provisioner_scheduling_duration_seconds_count 2\n"));
        assert!(text.contains("# TYPE karpenter_nodes_created counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.node_created("a\"b", "x\\y");
        assert!(m
            .render()
            .contains("provisioner=\"a\\\"b\",reason=\"x\\\\y\""));
    }
}
