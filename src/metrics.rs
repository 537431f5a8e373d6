//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4): HTTP requests and
//! latency by route template, dispatch outcomes, lock acquisitions, contention and lost leases,
//! fence rejections, rate-limit rejections, writes a replica did not confirm, Redis pool state,
//! stale-driver sweeps and their Redis time, and queue entries taken over or dead-lettered.
//! Labels never carry driver or order ids (unbounded cardinality); routes are their templates
//! (`/v1/orders/{order_id}/accept`).
//!
//! The registry is `prometheus-client`'s, rendered with its Prometheus text encoder (not its
//! OpenMetrics one, which ends with `# EOF` and, scraped by Prometheus 2.x, turns the
//! histogram's `le="1"` into `le="1.0"`). Every family is declared once in `FAMILIES` with the
//! name it is exposed under and its label names; callers name a family and pass label values.
//! No lock is taken by every request: a family's lock is read-shared (taken for writing only
//! when a label set is first seen), counters are atomics, and each histogram series has its
//! own short mutex, so requests wait for each other only to record the same series at once.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
    prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What a family measures, which decides how it is stored and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Counted on the request path; the exposed name ends with `_total`.
    Counter,
    /// A counter of seconds (fractional); the exposed name ends with `_seconds_total`.
    Seconds,
    /// Observed on the request path, with [`BUCKETS`].
    Histogram,
    /// Measured at scrape time and passed to [`render`].
    Gauge,
}

/// One metric family: the name it is exposed under, what it is, its label names in the order
/// callers pass them, and its help text.
#[derive(Debug)]
struct Def {
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
}

/// The Content-Type of [`render`]'s text (Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric, in the order `/metrics` shows them (gauges last, as they are measured at
/// scrape time).
const FAMILIES: &[Def] = &[
    Def {
        name: "geodispatch_http_requests_total",
        kind: Kind::Counter,
        labels: &["method", "route", "status"],
        help: "HTTP requests by method, route template and status",
    },
    Def {
        name: "geodispatch_http_request_duration_seconds",
        kind: Kind::Histogram,
        labels: &["method", "route"],
        help: "HTTP request latency by method and route template",
    },
    Def {
        name: "geodispatch_match_rounds_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Matching rounds run by this instance (batched policy)",
    },
    Def {
        name: "geodispatch_match_orders_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Due orders the matching rounds considered (per round: divide by the rounds)",
    },
    Def {
        name: "geodispatch_match_drivers_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Distinct candidate drivers of the matching rounds (per round: divide by the rounds)",
    },
    Def {
        name: "geodispatch_match_matched_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Order-driver pairs the matching rounds chose",
    },
    Def {
        name: "geodispatch_match_waiting_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Due orders a matching round left waiting for a driver about to be free (counted once per round)",
    },
    Def {
        name: "geodispatch_match_repositions_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Idle drivers the matching rounds sent toward a pickup spot (driver.reposition events)",
    },
    Def {
        name: "geodispatch_match_claims_total",
        kind: Kind::Counter,
        labels: &["result"],
        help: "Claims of chosen pairs by result (offered, conflict: the driver or order was taken meanwhile)",
    },
    Def {
        name: "geodispatch_match_solve_seconds",
        kind: Kind::Histogram,
        labels: &[],
        help: "Time a matching round spent in the assignment solver",
    },
    Def {
        name: "geodispatch_match_round_seconds",
        kind: Kind::Histogram,
        labels: &[],
        help: "Wall time of a whole matching round (pool read, searches, solve, claims)",
    },
    Def {
        name: "geodispatch_dispatch_outcomes_total",
        kind: Kind::Counter,
        labels: &["outcome", "source"],
        help: "Dispatch attempts by outcome (offered, no_driver, locked, not_pending, lock_lost, error) and source (request, worker)",
    },
    Def {
        name: "geodispatch_lock_acquisitions_total",
        kind: Kind::Counter,
        labels: &["result"],
        help: "Order lock attempts by result (acquired, contended)",
    },
    Def {
        name: "geodispatch_lock_lost_total",
        kind: Kind::Counter,
        labels: &["stage"],
        help: "Leases found lost: by the renewal watchdog or refused by the claim script (expired while held)",
    },
    Def {
        name: "geodispatch_fence_rejections_total",
        kind: Kind::Counter,
        labels: &["stage"],
        help: "Writes refused by a fencing check, by stage (claim, answer)",
    },
    Def {
        name: "geodispatch_rate_limit_rejections_total",
        kind: Kind::Counter,
        labels: &["class"],
        help: "Requests refused by a rate limit, by class",
    },
    Def {
        name: "geodispatch_stale_drivers_swept_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Drivers removed from the GEO indexes by the liveness sweeper",
    },
    Def {
        name: "geodispatch_sweeper_redis_seconds_total",
        kind: Kind::Seconds,
        labels: &[],
        help: "Redis time spent by this instance's sweep_stale calls (measured by the script with Redis' clock); its rate is the sweeper's share of the Redis thread",
    },
    Def {
        name: "geodispatch_timers_fired_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Timers fired by the timer scan: offers expired, waiting orders re-queued, finished orders' timers cleared",
    },
    Def {
        name: "geodispatch_queue_entries_reclaimed_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Dispatch queue entries taken over from a stalled worker (XAUTOCLAIM)",
    },
    Def {
        name: "geodispatch_queue_dead_letters_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Dispatch queue entries moved to their city's dead-letter stream after queue_max_deliveries deliveries without an acknowledgement (their orders failed)",
    },
    Def {
        name: "geodispatch_webhook_deliveries_total",
        kind: Kind::Counter,
        labels: &["endpoint", "outcome"],
        help: "Webhook attempts by endpoint id and outcome (delivered, retry, dead, gone)",
    },
    Def {
        name: "geodispatch_webhook_delivery_seconds",
        kind: Kind::Histogram,
        labels: &[],
        help: "Latency of webhook requests, from sending to the end of the answer (or the failure)",
    },
    Def {
        name: "geodispatch_webhook_dead_letters_total",
        kind: Kind::Counter,
        labels: &["endpoint"],
        help: "Webhook deliveries given up (retry schedule exhausted, an answer not retried, or 410 Gone), by endpoint id",
    },
    Def {
        name: "geodispatch_webhook_endpoints_disabled_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Webhook endpoints disabled by the service (410 Gone, or webhook_disable_after dead letters in a row)",
    },
    Def {
        name: "geodispatch_webhook_fanout_gaps_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Times webhook fan-out found the event its cursor names trimmed from the city's event stream: events after it were trimmed before their fan-out and not sent",
    },
    Def {
        name: "geodispatch_webhook_dropped_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Events not queued for an endpoint whose backlog was full (webhook_max_backlog)",
    },
    Def {
        name: "geodispatch_writes_not_replicated_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Writes not acknowledged: fewer replicas than required confirmed them in time (WAIT), or the connection was replaced before they could be",
    },
    Def {
        name: "geodispatch_webhook_backlog",
        kind: Kind::Gauge,
        labels: &["endpoint"],
        help: "Undelivered webhook messages by endpoint id (read from Redis at scrape time)",
    },
    Def {
        name: "geodispatch_redis_pool_connections",
        kind: Kind::Gauge,
        labels: &["state"],
        help: "Dedicated Redis connections of this instance by state (open, idle, max)",
    },
];

/// The label values of one series, in the order of its family's label names. Equality and
/// hashing look at the values only: within a family the names are always the same.
#[derive(Clone, Debug)]
struct Series {
    names: &'static [&'static str],
    values: Vec<String>,
}

impl Series {
    /// The series of `def` that `pairs` names. Label names are the family's: a call site that
    /// passes others is a bug, caught in debug builds (in release a missing label is empty
    /// and an unknown one is dropped, as a scrape must not fail over it).
    fn of(def: &'static Def, pairs: &[(&str, &str)]) -> Self {
        debug_assert!(
            pairs.iter().map(|(k, _)| *k).eq(def.labels.iter().copied()),
            "{} takes labels {:?}, not {pairs:?}",
            def.name,
            def.labels
        );
        let values = def
            .labels
            .iter()
            .map(|name| {
                let value = pairs.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v);
                value.to_owned()
            })
            .collect();
        Series {
            names: def.labels,
            values,
        }
    }
}

impl PartialEq for Series {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl Eq for Series {}

impl Hash for Series {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values.hash(state);
    }
}

impl EncodeLabelSet for Series {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        // The encoder escapes `\`, `"` and newlines in values.
        for (name, value) in self.names.iter().zip(&self.values) {
            (*name, value.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// A family that shows its `# HELP` and `# TYPE` lines before its first sample too (the
/// crate leaves out empty families; dashboards and tests look for every declared family).
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

type HistogramFamily = Family<Series, Histogram, fn() -> Histogram>;

/// The live handles of one family of [`FAMILIES`] (same index).
enum Handle {
    Counter(Family<Series, Counter>),
    Seconds(Family<Series, Counter<f64, AtomicU64>>),
    Histogram(HistogramFamily),
    Gauge,
}

struct Metrics {
    registry: Registry,
    handles: Vec<Handle>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let handles = FAMILIES
        .iter()
        .map(|def| match def.kind {
            Kind::Counter => {
                let family = Family::<Series, Counter>::default();
                // The encoder appends `_total` to counters.
                let name = def
                    .name
                    .strip_suffix("_total")
                    .expect("counters end with _total");
                registry.register(name, def.help, Described(family.clone()));
                Handle::Counter(family)
            }
            Kind::Seconds => {
                let family = Family::<Series, Counter<f64, AtomicU64>>::default();
                let name = def
                    .name
                    .strip_suffix("_total")
                    .expect("counters end with _total");
                registry.register(name, def.help, Described(family.clone()));
                Handle::Seconds(family)
            }
            Kind::Histogram => {
                let family = HistogramFamily::new_with_constructor(|| Histogram::new(BUCKETS));
                registry.register(def.name, def.help, Described(family.clone()));
                Handle::Histogram(family)
            }
            Kind::Gauge => Handle::Gauge,
        })
        .collect();
    Metrics { registry, handles }
});

/// The declaration and handles of the family exposed as `name`.
fn family(name: &str) -> Option<(&'static Def, &'static Handle)> {
    let found = FAMILIES
        .iter()
        .zip(&METRICS.handles)
        .find(|(def, _)| def.name == name);
    debug_assert!(found.is_some(), "metric {name} is not declared in FAMILIES");
    found
}

/// Add 1 to a counter.
pub(crate) fn inc(name: &'static str, pairs: &[(&str, &str)]) {
    add(name, pairs, 1.0);
}

/// Add `v` to a counter. Counters count events, so `v` is rounded to a whole number (a
/// negative one adds nothing: a counter never goes down).
pub(crate) fn add(name: &'static str, pairs: &[(&str, &str)], v: f64) {
    if let Some((def, Handle::Counter(family))) = family(name) {
        family
            .get_or_create(&Series::of(def, pairs))
            .inc_by(v.round() as u64);
    }
}

/// Add `seconds` to a counter of seconds.
pub(crate) fn add_seconds(name: &'static str, pairs: &[(&str, &str)], seconds: f64) {
    if let Some((def, Handle::Seconds(family))) = family(name) {
        family
            .get_or_create(&Series::of(def, pairs))
            .inc_by(seconds.max(0.0));
    }
}

/// Record one observation (seconds) in a histogram.
pub(crate) fn observe(name: &'static str, pairs: &[(&str, &str)], seconds: f64) {
    if let Some((def, Handle::Histogram(family))) = family(name) {
        family
            .get_or_create(&Series::of(def, pairs))
            .observe(seconds);
    }
}

/// The current value of a counter (tests).
#[cfg(test)]
pub(crate) fn counter(name: &'static str, pairs: &[(&str, &str)]) -> f64 {
    match family(name) {
        Some((def, Handle::Counter(family))) => family
            .get(&Series::of(def, pairs))
            .map_or(0.0, |c| c.get() as f64),
        Some((def, Handle::Seconds(family))) => {
            family.get(&Series::of(def, pairs)).map_or(0.0, |c| c.get())
        }
        _ => 0.0,
    }
}

/// A gauge measured at scrape time: name, labels, value.
pub(crate) type Gauge<'a> = (&'static str, Vec<(&'a str, String)>, f64);

/// The gauges of one scrape, rendered after the registry's families.
#[derive(Debug)]
struct ScrapeGauges(Vec<(&'static Def, Series, f64)>);

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for def in FAMILIES.iter().filter(|d| d.kind == Kind::Gauge) {
            // Registered families get the full stop from the registry; match them.
            let help = format!("{}.", def.help);
            let mut family = encoder.encode_descriptor(def.name, &help, None, MetricType::Gauge)?;
            for (_, series, v) in self.0.iter().filter(|(d, ..)| d.name == def.name) {
                let sample = family.encode_family(series)?;
                // Counts (connections) render as integers, as they always have.
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    ConstGauge::new(*v as i64).encode(sample)?;
                } else {
                    ConstGauge::new(*v).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

/// Render every metric, with `gauges` measured at scrape time.
pub(crate) fn render(gauges: &[Gauge<'_>]) -> String {
    let gauges = gauges
        .iter()
        .filter_map(|(name, pairs, v)| {
            let (def, _) = family(name).filter(|(def, _)| def.kind == Kind::Gauge)?;
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Some((def, Series::of(def, &pairs), *v))
        })
        .collect();
    let mut scrape = Registry::default();
    scrape.register_collector(Box::new(ScrapeGauges(gauges)));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &METRICS.registry).expect("a String takes any write");
    prometheus_text::encode(&mut out, &scrape).expect("a String takes any write");
    out
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
    }

    #[test]
    fn label_values_are_escaped() {
        inc(
            "geodispatch_fence_rejections_total",
            &[("stage", "unit\\test \"quoted\"\nline")],
        );
        let text = render(&[]);
        assert!(
            text.contains(
                "geodispatch_fence_rejections_total{stage=\"unit\\\\test \\\"quoted\\\"\\nline\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_family_is_described_under_its_own_name_even_before_its_first_sample() {
        let text = render(&[]);
        for def in FAMILIES {
            let kind = match def.kind {
                Kind::Counter | Kind::Seconds => "counter",
                Kind::Histogram => "histogram",
                Kind::Gauge => "gauge",
            };
            assert!(
                text.contains(&format!("\n# TYPE {} {kind}\n", def.name)),
                "{}:\n{text}",
                def.name
            );
            assert!(text.contains(&format!("# HELP {} {}", def.name, def.help)));
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn histogram_buckets_keep_their_bounds_and_add_inf_sum_and_count() {
        let pairs = [("method", "PUT"), ("route", "/unit-test/buckets")];
        observe("geodispatch_http_request_duration_seconds", &pairs, 0.75);
        observe("geodispatch_http_request_duration_seconds", &pairs, 7.0);
        let text = render(&[]);
        let series = "geodispatch_http_request_duration_seconds_bucket{method=\"PUT\",route=\"/unit-test/buckets\",le=";
        for (le, n) in [("0.0005", 0), ("0.5", 0), ("1", 1), ("5", 1), ("+Inf", 2)] {
            assert!(
                text.contains(&format!("{series}\"{le}\"}} {n}\n")),
                "le={le}:\n{text}"
            );
        }
        let buckets = text.lines().filter(|l| l.starts_with(series)).count();
        assert_eq!(buckets, BUCKETS.len() + 1);
        assert!(text.contains("geodispatch_http_request_duration_seconds_sum{method=\"PUT\",route=\"/unit-test/buckets\"} 7.75\n"));
        assert!(text.contains("geodispatch_http_request_duration_seconds_count{method=\"PUT\",route=\"/unit-test/buckets\"} 2\n"));
    }

    #[test]
    fn counters_read_back_what_was_added_and_label_less_ones_render_bare() {
        let before = counter("geodispatch_stale_drivers_swept_total", &[]);
        add("geodispatch_stale_drivers_swept_total", &[], 3.0);
        inc("geodispatch_stale_drivers_swept_total", &[]);
        assert_eq!(
            counter("geodispatch_stale_drivers_swept_total", &[]),
            before + 4.0
        );
        assert_eq!(
            counter(
                "geodispatch_lock_acquisitions_total",
                &[("result", "never-counted")]
            ),
            0.0
        );
        let text = render(&[]);
        assert!(
            text.contains("\ngeodispatch_stale_drivers_swept_total "),
            "{text}"
        );
    }

    #[test]
    fn scrape_time_gauges_render_last_with_integer_values() {
        let text = render(&[
            (
                "geodispatch_redis_pool_connections",
                vec![("state", "max".to_owned())],
                64.0,
            ),
            (
                "geodispatch_redis_pool_connections",
                vec![("state", "idle".to_owned())],
                2.5,
            ),
        ]);
        assert!(text.contains("\ngeodispatch_redis_pool_connections{state=\"max\"} 64\n"));
        assert!(text.contains("\ngeodispatch_redis_pool_connections{state=\"idle\"} 2.5\n"));
        assert!(text.ends_with("geodispatch_redis_pool_connections{state=\"idle\"} 2.5\n"));
        assert!(!render(&[]).contains("geodispatch_redis_pool_connections{"));
    }
}
