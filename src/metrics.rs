//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4): HTTP requests and
//! latency by route template, dispatch outcomes, lock acquisitions, contention and lost leases,
//! fence rejections, rate-limit rejections, Redis pool state and stale-driver sweeps. Labels
//! never carry driver or order ids (unbounded cardinality); routes are their templates
//! (`/v1/orders/{order_id}/accept`).
//!
//! A small registry of our own (counters and fixed-bucket histograms behind a mutex) keeps
//! the dependency tree lean; the registry is process-wide.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use actix_web::{HttpResponse, get, web};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Every metric: name, type, help.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "geodispatch_http_requests_total",
        "counter",
        "HTTP requests by method, route template and status",
    ),
    (
        "geodispatch_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by method and route template",
    ),
    (
        "geodispatch_dispatch_outcomes_total",
        "counter",
        "Dispatch attempts by outcome (offered, no_driver, locked, not_pending, lock_lost, error) and source (request, worker)",
    ),
    (
        "geodispatch_lock_acquisitions_total",
        "counter",
        "Order lock attempts by result (acquired, contended)",
    ),
    (
        "geodispatch_lock_lost_total",
        "counter",
        "Leases found lost: by the renewal watchdog or refused by the claim script (expired while held)",
    ),
    (
        "geodispatch_fence_rejections_total",
        "counter",
        "Writes refused by a fencing check, by stage (claim, answer)",
    ),
    (
        "geodispatch_rate_limit_rejections_total",
        "counter",
        "Requests refused by a rate limit, by class",
    ),
    (
        "geodispatch_stale_drivers_swept_total",
        "counter",
        "Drivers removed from the GEO indexes by the liveness sweeper",
    ),
    (
        "geodispatch_timers_fired_total",
        "counter",
        "Timers fired by the timer scan: offers expired, waiting orders re-queued, finished orders' timers cleared",
    ),
    (
        "geodispatch_queue_entries_reclaimed_total",
        "counter",
        "Dispatch queue entries taken over from a stalled worker (XAUTOCLAIM)",
    ),
    (
        "geodispatch_redis_pool_connections",
        "gauge",
        "Dedicated Redis connections of this instance by state (open, idle, max)",
    ),
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, String), f64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

/// Add 1 to a counter.
pub fn inc(name: &'static str, pairs: &[(&str, &str)]) {
    add(name, pairs, 1.0);
}

/// Add `v` to a counter.
pub fn add(name: &'static str, pairs: &[(&str, &str)], v: f64) {
    let mut r = REGISTRY.lock().expect("not poisoned");
    *r.counters.entry((name, labels(pairs))).or_default() += v;
}

/// Record one observation (seconds) in a histogram.
pub fn observe(name: &'static str, pairs: &[(&str, &str)], seconds: f64) {
    let mut r = REGISTRY.lock().expect("not poisoned");
    let h = r.histograms.entry((name, labels(pairs))).or_default();
    for (i, bound) in BUCKETS.iter().enumerate() {
        if seconds <= *bound {
            h.counts[i] += 1;
        }
    }
    h.count += 1;
    h.sum += seconds;
}

/// The current value of a counter (tests and the simulator).
pub fn counter(name: &'static str, pairs: &[(&str, &str)]) -> f64 {
    let r = REGISTRY.lock().expect("not poisoned");
    r.counters
        .get(&(name, labels(pairs)))
        .copied()
        .unwrap_or(0.0)
}

/// A gauge measured at scrape time: name, labels, value.
pub type Gauge<'a> = (&'static str, Vec<(&'a str, String)>, f64);

/// Render every metric, with `gauges` measured at scrape time.
pub fn render(gauges: &[Gauge<'_>]) -> String {
    let r = REGISTRY.lock().expect("not poisoned");
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((n, l), v) in &r.counters {
            if n == name {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        for ((n, l), h) in &r.histograms {
            if n != name {
                continue;
            }
            let sep = if l.is_empty() { "" } else { "," };
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{l}{sep}le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(
                out,
                "{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}",
                h.sum, h.count
            );
        }
        for (n, pairs, v) in gauges {
            if n == name {
                let pairs: Vec<(&str, &str)> =
                    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(&pairs));
            }
        }
    }
    out
}

/// Prometheus metrics of this instance.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[get("/metrics")]
pub async fn metrics(store: web::Data<crate::store::Store>) -> HttpResponse {
    let status = store.pool().status();
    let gauges = vec![
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "open".to_owned())],
            status.size as f64,
        ),
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "idle".to_owned())],
            status.available as f64,
        ),
        (
            "geodispatch_redis_pool_connections",
            vec![("state", "max".to_owned())],
            status.max_size as f64,
        ),
    ];
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render(&gauges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        inc(
            "geodispatch_fence_rejections_total",
            &[("stage", "unit-test")],
        );
        observe(
            "geodispatch_http_request_duration_seconds",
            &[("method", "GET"), ("route", "/unit-test")],
            0.003,
        );
        let text = render(&[]);
        assert!(text.contains("# TYPE geodispatch_fence_rejections_total counter"));
        assert!(text.contains("geodispatch_fence_rejections_total{stage=\"unit-test\"} 1"));
        assert!(text.contains(
            "geodispatch_http_request_duration_seconds_bucket{method=\"GET\",route=\"/unit-test\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "geodispatch_http_request_duration_seconds_bucket{method=\"GET\",route=\"/unit-test\",le=\"0.005\"} 1"
        ));
        assert_eq!(labels(&[("a", "x\"y")]), "a=\"x\\\"y\"");
    }
}
