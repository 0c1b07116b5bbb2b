#![forbid(unsafe_code)]
//! Load bench: starts the real `karpenter-webhook` binary over TLS on 127.0.0.1 and drives it
//! with an in-repo keep-alive HTTP/1.1 client over rustls, printing requests/second, p50/p99
//! latency for a validating and a defaulting review, and the server's resident memory.
//!
//! `cargo bench -p karpenter-webhook` (release build). Tunables (environment):
//! `LOAD_CONNECTIONS` (default 8), `LOAD_SECONDS` per phase (default 5, at most 60),
//! `LOAD_MAX_REQUESTS` per phase (default 500000), `LOAD_RATE` (default 5000): each phase runs
//! once flat out (closed loop: throughput) and once paced at `LOAD_RATE` requests/second
//! (latency at that load). Pacing uses tokio's timer (1 ms granularity), so paced latency is
//! measured from the actual send; the server is far from saturated at the default rate.
//! The client runs on one thread so the server keeps most of the machine; the numbers include
//! the load generator's CPU use.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{fixture, Conn, TempDir, TestCa, Webhook};

struct Phase {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    expect: fn(&serde_json::Value) -> bool,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

async fn run_phase(
    webhook: &Webhook,
    ca: &TestCa,
    phase: &Phase,
    connections: usize,
    seconds: u64,
    max_requests: u64,
    rate: Option<u64>,
) {
    let config = ca.client_config();
    // Warm up: one request per connection and a short burst.
    let mut conns = Vec::new();
    for _ in 0..connections {
        let mut c = Conn::connect(webhook.tls, config.clone())
            .await
            .expect("TLS handshake");
        let r = c
            .request("POST", phase.path, &phase.body)
            .await
            .expect("warm-up response");
        assert!(
            (phase.expect)(&r.json()),
            "{}: unexpected {}",
            phase.name,
            r.text()
        );
        conns.push(c);
    }
    let per_conn = (max_requests / connections as u64).max(1);
    // Paced: each connection sends every `interval`, offset so the connections interleave.
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r.max(1) as f64));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, mut c) in conns.into_iter().enumerate() {
        let body = phase.body.clone();
        let path = phase.path;
        let offset = interval.map(|i| i.mul_f64(n as f64 / connections as f64));
        tasks.push(tokio::task::spawn_local(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(per_conn.min(1 << 20) as usize);
            let mut errors = 0u64;
            for i in 0..per_conn {
                if Instant::now() >= deadline {
                    break;
                }
                if let (Some(every), Some(offset)) = (interval, offset) {
                    let at = start + offset + every.mul_f64(i as f64);
                    tokio::time::sleep_until(at.into()).await;
                }
                let t = Instant::now();
                match c.request("POST", path, &body).await {
                    Ok(r) if r.status == 200 => {
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX))
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let label = match rate {
        Some(r) => format!("{} @{r}/s", phase.name),
        None => format!("{} max", phase.name),
    };
    println!(
        "{:<17} {:>8} req in {:>5.2}s = {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p99.9 {:>6.3} ms  max {:>7.3} ms  errors {}  server RSS {} KiB",
        label,
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0),
        errors,
        rss_kib(webhook.pid(), "VmRSS:").unwrap_or(0),
    );
}

fn main() {
    support::install_crypto();
    let connections = env_or("LOAD_CONNECTIONS", 8).clamp(1, 256) as usize;
    let seconds = env_or("LOAD_SECONDS", 5).clamp(1, 60);
    let max_requests = env_or("LOAD_MAX_REQUESTS", 500_000).max(1);
    let rate = env_or("LOAD_RATE", 5000).clamp(1, 1_000_000);

    let ca = TestCa::new();
    let dir = TempDir::new("bench");
    let (cert, key) = ca.issue(&["localhost"]);
    let cert_path = dir.write("tls.crt", &cert);
    let key_path = dir.write("tls.key", &key);
    let webhook = Webhook::start(&[
        "--tls-cert-file",
        &cert_path.display().to_string(),
        "--tls-key-file",
        &key_path.display().to_string(),
        "--cluster-autoscaler-guard=off",
        "--log-level=warn,karpenter_webhook::run=info",
    ]);
    println!(
        "karpenter-webhook pid {} on {} (TLS, HTTP/1.1 keep-alive); {connections} connections, \
         {seconds}s per phase, at most {max_requests} requests; idle RSS {} KiB",
        webhook.pid(),
        webhook.tls,
        rss_kib(webhook.pid(), "VmRSS:").unwrap_or(0)
    );
    let phases = [
        Phase {
            name: "validating",
            path: "/validate",
            body: fixture("provisioner-create-valid.json"),
            expect: |v| v["response"]["allowed"] == true,
        },
        Phase {
            name: "defaulting",
            path: "/default",
            body: fixture("provisioner-create-needs-defaults.json"),
            expect: |v| v["response"]["patchType"] == "JSONPatch",
        },
        Phase {
            name: "denying",
            path: "/validate",
            body: fixture("provisioner-create-schema-invalid.json"),
            expect: |v| v["response"]["allowed"] == false,
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        for phase in &phases {
            run_phase(
                &webhook,
                &ca,
                phase,
                connections,
                seconds,
                max_requests,
                None,
            )
            .await;
            run_phase(
                &webhook,
                &ca,
                phase,
                connections,
                seconds,
                max_requests,
                Some(rate),
            )
            .await;
        }
    });
    println!(
        "server peak RSS (VmHWM) {} KiB",
        rss_kib(webhook.pid(), "VmHWM:").unwrap_or(0)
    );
}
