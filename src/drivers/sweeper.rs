//! The liveness sweeper: Redis GEO has no per-member TTL, so a background task removes drivers
//! whose last position is older than `driver_ttl_ms` from their city's indexes, in bounded
//! batches by script. Search filters stale drivers itself, so correctness never waits for it.

use std::sync::Arc;
use std::time::Duration;

use super::{SWEEP_STALE, city_script_keys};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::scripts::{self, evalsha};
use crate::store::Store;

/// Sweep one city until a call removes fewer than a batch; returns how many were removed.
pub async fn sweep_city(store: &Store, settings: &Settings, city: &str) -> redis::RedisResult<u64> {
    let mut conn = store.conn();
    let cmd = evalsha(
        &SWEEP_STALE,
        &city_script_keys(store.keys(), city),
        &[
            settings.driver_ttl_ms.to_string(),
            settings.sweep_batch.to_string(),
        ],
    );
    let mut total = 0;
    loop {
        let removed: u64 = scripts::run(&mut conn, &SWEEP_STALE, &cmd).await?;
        total += removed;
        if removed < settings.sweep_batch as u64 {
            return Ok(total);
        }
    }
}

/// Start the sweeper task: every `sweep_interval_ms`, sweep every city. Several service
/// instances may sweep at once; the script is idempotent.
pub fn spawn_sweeper(
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
