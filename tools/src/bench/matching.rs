//! `bench match`: what one batched matching round costs with `orders` pending orders and
//! `drivers` available drivers in one city (the 30×30 km Paris square): the service CPU of the
//! round (user + system time of this process, which runs the service in-process, measured
//! around the round and nothing else), the Redis CPU it caused, its wall time and the solver's
//! share. Each round starts from the same state: fresh orders, every driver available (the
//! previous round's offers are cancelled, which frees their drivers).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use geodispatch::dispatch::{DispatchMode, OrderSpec, Transition};
use geodispatch::domain::{DispatchPolicy, GeoPoint, OrderId};
use geodispatch_testkit::fleet::{HALF_KM, fleet, load_fleet, point_in_square};
use geodispatch_testkit::rng::SplitMix64;

use super::{Bed, redis_cpu_usec};

/// Options of `bench match`.
#[derive(Debug, Clone)]
pub struct MatchOptions {
    /// Pending orders per round.
    pub orders: usize,
    /// Available drivers in the city.
    pub drivers: usize,
    /// Measured rounds.
    pub rounds: usize,
}

/// User + system CPU time of this process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Run the benchmark; returns its JSON report.
pub async fn matching(opts: MatchOptions) -> anyhow::Result<serde_json::Value> {
    let bed = Bed::start_with(1, |s| {
        s.dispatch_policy = DispatchPolicy::Batched;
        // The service's own rounds stay idle (their first tick finds an empty pool): the
        // benchmark runs each measured round itself.
        s.match_interval_ms = 3_600_000;
        s.match_max_orders = opts.orders.max(1);
        s.offer_ttl_ms = 3_600_000;
    })
    .await?;
    load_fleet(&bed.app_addr, &fleet(opts.drivers, 11), 2).await?;
    let dispatcher = bed.context.dispatcher.clone();
    let mut redis = bed.redis().await?;
    let mut rng = SplitMix64::new(5);
    let mut rows = Vec::new();
    for round in 0..opts.rounds + 1 {
        let ids: Vec<OrderId> = (0..opts.orders)
            .map(|i| OrderId::parse(&format!("m{round}-{i}")).expect("valid id"))
            .collect();
        for chunk in ids.chunks(100) {
            let creates = chunk.iter().map(|id| {
                let (lat, lon) = point_in_square(&mut SplitMix64::new(rng.next_u64()), HALF_KM);
                let spec = OrderSpec::at(GeoPoint { lat, lon }, DispatchMode::Queued);
                let dispatcher = dispatcher.clone();
                async move { dispatcher.create(id, "paris", &spec).await }
            });
            for created in join_all(creates).await {
                created.map_err(|e| anyhow::anyhow!("creating an order: {e}"))?;
            }
        }
        let redis_before = redis_cpu_usec(&mut redis).await?;
        let cpu_before = process_cpu();
        let started = Instant::now();
        let report = dispatcher
            .match_round("paris")
            .await
            .map_err(|e| anyhow::anyhow!("round: {e}"))?;
        let wall = started.elapsed();
        let cpu = process_cpu() - cpu_before;
        let redis_cpu = redis_cpu_usec(&mut redis).await? - redis_before;
        // Round 0 warms up (connections, script cache); the rest are measured.
        if round > 0 {
            eprintln!(
                "round {round}: {} due orders × {} drivers ({} pairs): {} offered, {} conflicts; service CPU {:.1} ms, solve {:.1} ms, wall {:.1} ms, Redis CPU {:.1} ms",
                report.due,
                report.drivers,
                report.pairs,
                report.offered,
                report.conflicts,
                cpu.as_secs_f64() * 1e3,
                report.solve.as_secs_f64() * 1e3,
                wall.as_secs_f64() * 1e3,
                redis_cpu / 1e3
            );
            rows.push(json!({
                "due": report.due, "drivers": report.drivers, "pairs": report.pairs,
                "matched": report.matched, "offered": report.offered, "conflicts": report.conflicts,
                "service_cpu_ms": cpu.as_secs_f64() * 1e3,
                "solve_ms": report.solve.as_secs_f64() * 1e3,
                "wall_ms": wall.as_secs_f64() * 1e3,
                "redis_cpu_ms": redis_cpu / 1e3,
            }));
        }
        // Free every driver again for the next round.
        for chunk in ids.chunks(100) {
            let cancels = chunk
                .iter()
                .map(|id| dispatcher.transition_in("paris", id.as_str(), Transition::Cancel, None));
            join_all(cancels).await;
        }
    }
    bed.stop().await;
    let stat = |key: &str| {
        let mut v: Vec<f64> = rows.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        json!({"median": v.get(v.len() / 2), "max": v.last()})
    };
    Ok(json!({
        "orders": opts.orders, "drivers": opts.drivers, "rounds": rows,
        "service_cpu_ms": stat("service_cpu_ms"), "solve_ms": stat("solve_ms"),
        "wall_ms": stat("wall_ms"), "redis_cpu_ms": stat("redis_cpu_ms"),
    }))
}
