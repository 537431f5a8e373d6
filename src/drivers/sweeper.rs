//! The liveness sweeper: Redis GEO has no per-member TTL, so a background task removes drivers
//! whose last position is older than `driver_ttl_ms` from their city's indexes, by script, and
//! makes the liveness bucket index exact (positions keep it a lower bound). Search filters stale
//! drivers itself, so correctness never waits for it.
//!
//! Its work is bounded twice, so that a whole fleet turning stale at once (an upstream outage
//! stopping every phone) does not take Redis from requests: each `sweep_stale.lua` call stops
//! once it has spent `sweep_call_budget_us` of Redis time (measured by the script with Redis'
//! clock) or dropped `sweep_batch` drivers, and the calls of a city are paced through the
//! city's pace key so that every instance together spends at most `sweep_redis_share` of the
//! Redis thread: after a call that spent `t`, none works for `t × (1 − share) / share`.

use crate::store::scripts::SWEEP_STALE;
use std::sync::Arc;
use std::time::Duration;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::store::Store;
use crate::store::scripts::{self, evalsha};

use super::scripts::{SweepArgs, SweepReply};

/// Liveness buckets passed per `sweep_stale` call (the call finishes as many as its budget
/// allows; the rest are passed again).
const BUCKETS_PER_CALL: usize = 128;

/// One sweep pass over a city: every liveness bucket whose index entry is before the TTL
/// cutoff, or will be within two sweep intervals (so that its entry, which positions keep only
/// a lower bound, is made exact before search would read the bucket as stale), is swept once:
/// stale drivers dropped, the entry set exact. Each call takes at most [`BUCKETS_PER_CALL`]
/// buckets, `sweep_call_budget_us` of Redis time and `sweep_batch` drivers, and waits the
/// city's pace between calls. Returns how many drivers were dropped.
pub async fn sweep_city(store: &Store, settings: &Settings, city: &str) -> redis::RedisResult<u64> {
    let mut conn = store.conn();
    let keys = store.keys();
    let lead = 2 * settings.sweep_interval_ms as i64;
    let due_before = store.redis_now_ms() - settings.driver_ttl_ms as i64 + lead;
    let due: Vec<u16> = redis::cmd("ZRANGE")
        .arg(keys.seen_index(city))
        .arg("-inf")
        .arg(format!("({due_before}"))
        .arg("BYSCORE")
        .query_async(&mut conn)
        .await?;
    let args = SweepArgs {
        driver_ttl_ms: settings.driver_ttl_ms,
        max_drivers: settings.sweep_batch,
        budget_us: settings.sweep_call_budget_us,
        share: settings.sweep_redis_share,
    }
    .argv();
    let mut total = 0;
    let mut next = 0;
    while next < due.len() {
        let chunk = &due[next..due.len().min(next + BUCKETS_PER_CALL)];
        let cmd = evalsha(&SWEEP_STALE, &keys.sweep_script(city, chunk), &args);
        let reply: Vec<i64> = scripts::run(&mut conn, &SWEEP_STALE, &cmd).await?;
        let reply = SweepReply::decode(&reply).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "sweep_stale",
                e.to_string(),
            ))
        })?;
        if reply.spent_us > 0 {
            crate::metrics::add_seconds(
                "geodispatch_sweeper_redis_seconds_total",
                &[],
                reply.spent_us as f64 / 1e6,
            );
        }
        total += reply.dropped;
        // A call that worked made progress (it finished a bucket or dropped drivers); one that
        // found the pace ahead did nothing and is repeated after the wait.
        next += reply.buckets_done;
        if next < due.len() && reply.wait_us > 0 {
            tokio::time::sleep(Duration::from_micros(reply.wait_us)).await;
        }
    }
    Ok(total)
}

/// Start the sweeper task: every `sweep_interval_ms`, sweep every city. Several service
/// instances may sweep at once; the script is idempotent.
pub(crate) fn spawn_sweeper(
    store: Store,
    settings: Arc<Settings>,
    cities: Arc<CityIndex>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(settings.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for city in cities.all() {
                match sweep_city(&store, &settings, city.id.as_str()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        crate::metrics::add("geodispatch_stale_drivers_swept_total", &[], n as f64);
                        tracing::info!(city = %city.id, removed = n, "swept stale drivers")
                    }
                    Err(err) => tracing::warn!(city = %city.id, error = %err, "sweep failed"),
                }
            }
        }
    })
}
