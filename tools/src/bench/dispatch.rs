//! `bench dispatch`: dispatch decisions per second and their latency with a fleet of drivers
//! that complete each order at once (accept, pick up, deliver), measured twice: through the
//! engine in-process (the decision itself: lock, rank, claim) and end to end over HTTP
//! (`POST /v1/orders` with `dispatch: now`, then the driver's three answers). The whole event
//! history is replayed afterwards and every invariant violation is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use geodispatch::dispatch::{DispatchMode, OrderSpec, Transition, engine::DispatchOutcome};
use geodispatch::domain::{GeoPoint, OrderId};
use geodispatch_testkit::fleet::{fleet, load_fleet, point_in_square};
use geodispatch_testkit::load;
use geodispatch_testkit::rng::SplitMix64;

use super::{Bed, redis_cpu_usec};

/// Options of `bench dispatch`.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Drivers in the 30×30 km Paris square.
    pub drivers: usize,
    /// Seconds per measured phase.
    pub duration: Duration,
    /// Concurrent dispatch loops (engine phase) and HTTP connections (HTTP phase).
    pub concurrency: usize,
    /// HTTP worker threads of the service.
    pub http_workers: usize,
}

/// What one load loop counted: decisions, no-driver answers, errors, latencies.
type LoopTotals = (u64, u64, u64, Histogram<u64>);

struct Phase {
    decisions: u64,
    no_driver: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Phase {
    fn json(&self, name: &str) -> serde_json::Value {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let rate = self.decisions as f64 / self.elapsed.as_secs_f64();
        eprintln!(
            "{name}: {rate:.0} dispatches/s, p50 {:.2} ms, p99 {:.2} ms, no driver {}, errors {}",
            ms(0.5),
            ms(0.99),
            self.no_driver,
            self.errors
        );
        json!({"dispatches_per_s": rate, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
               "decisions": self.decisions, "no_driver": self.no_driver, "errors": self.errors})
    }
}

/// Engine phase: `concurrency` loops of create-and-dispatch (timed: the `dispatch: now` path)
/// then accept, pickup and deliver at once.
async fn engine_phase(
    bed: &Bed,
    opts: &DispatchOptions,
    tag: &str,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.concurrency {
        let d = bed.context.dispatcher.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(1_000 + c as u64);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut decisions, mut none, mut errors) = (0u64, 0u64, 0u64);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let id = OrderId::parse(&format!("{tag}{c}-{seq}")).expect("valid id");
                let (lat, lon) = point_in_square(&mut rng, 12.0);
                let t = Instant::now();
                let outcome = d
                    .create_and_dispatch(
                        &id,
                        "paris",
                        &OrderSpec::at(GeoPoint { lat, lon }, DispatchMode::Now),
                        false,
                    )
                    .await;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                match outcome {
                    Ok(Ok(DispatchOutcome::Offered(r))) => {
                        decisions += 1;
                        // The driver completes at once: accept, pickup, deliver in one round trip.
                        let who = Some((r.driver_id.as_str(), r.fencing_token));
                        let steps = [Transition::Accept, Transition::Pickup, Transition::Deliver];
                        match d.transitions_in("paris", id.as_str(), &steps, who).await {
                            Ok(results) if results.iter().all(Result::is_ok) => {}
                            _ => errors += 1,
                        }
                    }
                    Ok(Ok(DispatchOutcome::NoDriver)) => {
                        decisions += 1;
                        none += 1;
                        let _ = d
                            .transition_in("paris", id.as_str(), Transition::Cancel, None)
                            .await;
                    }
                    _ => errors += 1,
                }
            }
            anyhow::Ok((decisions, none, errors, hist))
        }));
    }
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<LoopTotals>>>,
    started: Instant,
) -> anyhow::Result<Phase> {
    let mut phase = Phase {
        decisions: 0,
        no_driver: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for t in tasks {
        let (d, n, e, h) = t.await??;
        phase.decisions += d;
        phase.no_driver += n;
        phase.errors += e;
        phase.latency_us.add(h)?;
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

/// HTTP phase: `concurrency` keep-alive connections, each looping `POST /v1/orders` (dispatch
/// now, timed) → accept → pickup → deliver.
async fn http_phase(
    bed: &Bed,
    opts: &DispatchOptions,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..opts.concurrency {
        let addr = bed.app_addr.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = load::Conn::open(&addr).await?;
            let mut rng = SplitMix64::new(5_000 + c as u64);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut decisions, mut none, mut errors) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let (lat, lon) = point_in_square(&mut rng, 12.0);
                let body = format!("{{\"order_id\":\"h{n}\",\"pickup\":{{\"lat\":{lat},\"lon\":{lon}}},\"dispatch\":\"now\"}}");
                let t = Instant::now();
                let (status, answer) = conn.request("POST", "/v1/orders", Some(body.as_bytes())).await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                if status != 201 {
                    errors += 1;
                    continue;
                }
                let order: serde_json::Value = serde_json::from_slice(answer)?;
                decisions += 1;
                let (Some(driver), Some(fence)) = (order["driver_id"].as_str(), order["fencing_token"].as_u64()) else {
                    none += 1;
                    conn.request("POST", &format!("/v1/orders/h{n}/cancel"), Some(b"{}")).await?;
                    continue;
                };
                let answer_body = format!("{{\"driver_id\":\"{driver}\",\"fencing_token\":{fence}}}");
                for op in ["accept", "pickup", "deliver"] {
                    let (status, _) = conn
                        .request("POST", &format!("/v1/orders/h{n}/{op}"), Some(answer_body.as_bytes()))
                        .await?;
                    if status != 200 {
                        errors += 1;
                        break;
                    }
                }
            }
            anyhow::Ok((decisions, none, errors, hist))
        }));
    }
    collect(tasks, started).await
}

/// `bench dispatch`.
pub async fn dispatch(opts: DispatchOptions) -> anyhow::Result<serde_json::Value> {
    let bed = Bed::start_with(opts.http_workers, |s| {
        s.dispatch_workers = 0;
        s.offer_ttl_ms = 3_600_000;
        s.dispatch_retry_ms = 3_600_000;
        s.events_maxlen = 100_000_000;
    })
    .await?;
    let drivers = fleet(opts.drivers, 11);
    load_fleet(&bed.app_addr, &drivers, 4).await?;
    eprintln!("loaded {} drivers", drivers.len());
    let mut r = bed.redis().await?;

    engine_phase(&bed, &opts, "w", Duration::from_secs(1)).await?;
    let cpu0 = redis_cpu_usec(&mut r).await?;
    let engine = engine_phase(&bed, &opts, "e", opts.duration).await?;
    let redis_us = (redis_cpu_usec(&mut r).await? - cpu0) / engine.decisions.max(1) as f64;
    eprintln!("redis time per dispatch cycle (create, dispatch, 3 answers): {redis_us:.0} us");
    let engine_json = engine.json("engine (lock, rank, claim)");

    let http = http_phase(&bed, &opts, opts.duration).await?;
    let http_json = http.json("http (create+dispatch, then 3 answers)");

    // Anchor, same run, same connections: our own no-Redis endpoint (HTTP overhead alone). An
    // HTTP dispatch cycle is 4 requests (create with dispatch, accept, pickup, deliver).
    let hello = load::run(&bed.app_addr, opts.concurrency, opts.duration, |_, _| {
        ("GET", "/healthz".to_owned(), None)
    })
    .await?;
    let http_requests_per_s =
        4.0 * http.decisions as f64 / http.elapsed.as_secs_f64().max(f64::EPSILON);
    let http_vs_hello = http_requests_per_s / hello.rps().max(f64::EPSILON);
    eprintln!(
        "anchor /healthz: {:.0} req/s, p99 {:.2} ms; dispatch requests over HTTP: {http_requests_per_s:.0} req/s = {http_vs_hello:.2}x hello",
        hello.rps(),
        hello.ms(0.99)
    );

    let history = geodispatch::events::read_history(&bed.context.store, "paris").await?;
    let report = geodispatch::events::check_invariants(&history);
    eprintln!(
        "invariants over {} events of {} orders: double assignments {}, driver double orders {}, after terminal {}, fence regressions {}",
        report.events,
        report.orders,
        report.double_assignments,
        report.driver_double_orders,
        report.after_terminal,
        report.fence_regressions
    );
    bed.stop().await;
    Ok(json!({
        "drivers": opts.drivers, "concurrency": opts.concurrency,
        "engine": engine_json, "redis_us_per_cycle": redis_us,
        // Redis main-thread CPU used per second by the engine phase (1.0 = saturated).
        "engine_redis_cpu_share": redis_us * engine.decisions as f64 / engine.elapsed.as_secs_f64() / 1e6,
        "http": http_json,
        "anchor_hello": {"rps": hello.rps(), "p99_ms": hello.ms(0.99)},
        "http_requests_per_s": http_requests_per_s, "http_vs_hello": http_vs_hello,
        "invariants": {"ok": report.ok(), "events": report.events, "orders": report.orders,
            "double_assignments": report.double_assignments, "driver_double_orders": report.driver_double_orders,
            "after_terminal": report.after_terminal, "fence_regressions": report.fence_regressions}
    }))
}
