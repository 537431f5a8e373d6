//! Seed data: the loader behind `serve --seed DIR` (a deterministic fleet and sample orders,
//! written by `geodispatch-tools seed generate`).
//!
//! Format (JSON Lines, one object per line):
//! - `drivers.jsonl`: `{"driver_id", "city", "lat", "lon", "vehicle_type", "rating", "status"}`
//! - `orders.jsonl`: `{"order_id", "city", "pickup": {"lat", "lon"}, "dropoff": {"lat", "lon"}, "vehicle_type"}`
//!
//! Regenerate with `cargo run -p geodispatch-tools -- seed generate --out seed-data` (same
//! seed, same bytes).
//! Loading is idempotent; a part whose capability is not built yet is skipped with a log line.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::app::AppContext;
use crate::domain::GeoPoint;

/// One seed driver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedDriver {
    /// Driver id.
    pub driver_id: String,
    /// City the position lies in.
    pub city: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// `bike`, `scooter`, `car` or `van`.
    pub vehicle_type: String,
    /// Rating 3.5–5.0 (the initial leaderboard score).
    pub rating: f64,
    /// `available` or `offline`.
    pub status: String,
}

/// One seed order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedOrder {
    /// Order id.
    pub order_id: String,
    /// City of the pickup.
    pub city: String,
    /// Pickup point.
    pub pickup: GeoPoint,
    /// Drop-off point.
    pub dropoff: GeoPoint,
    /// Required vehicle type.
    pub vehicle_type: String,
}

/// Read a JSON Lines file.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// Load `dir` into Redis (idempotent): driver positions (ratings as initial scores) and the
/// sample orders (as queued orders). Missing files are skipped with a log line.
pub(crate) async fn load(context: &AppContext, dir: &Path) -> anyhow::Result<()> {
    let drivers_path = dir.join("drivers.jsonl");
    if drivers_path.exists() {
        let drivers: Vec<SeedDriver> = read_jsonl(&drivers_path)?;
        let stored = load_drivers(context, &drivers).await?;
        tracing::info!(
            count = drivers.len(),
            stored,
            "seed: driver positions loaded (recorded now; they age out after driver_ttl_ms unless refreshed)"
        );
    } else {
        tracing::info!(path = %drivers_path.display(), "seed: no drivers file, skipping");
    }
    let orders_path = dir.join("orders.jsonl");
    if orders_path.exists() {
        let orders: Vec<SeedOrder> = read_jsonl(&orders_path)?;
        let created = load_orders(context, &orders).await?;
        tracing::info!(
            count = orders.len(),
            created,
            "seed: sample orders loaded as queued orders (ids already present are left alone); the queue workers dispatch them"
        );
    }
    Ok(())
}

/// Create the sample orders that do not exist yet, as `queued` orders; returns how many were new.
async fn load_orders(context: &AppContext, orders: &[SeedOrder]) -> anyhow::Result<usize> {
    let mut created = 0;
    for o in orders {
        let id = crate::domain::OrderId::parse(&o.order_id)
            .map_err(|e| anyhow::anyhow!("seed order id {:?}: {e}", o.order_id))?;
        let city = context
            .cities
            .resolve(o.pickup)
            .with_context(|| format!("seed order {id}: pickup outside every city"))?
            .id
            .to_string();
        let vehicle = crate::drivers::VehicleType::parse(&o.vehicle_type);
        match context
            .dispatcher
            .create(
                &id,
                &city,
                &crate::dispatch::OrderSpec {
                    dropoff: Some(o.dropoff),
                    vehicle,
                    ..crate::dispatch::OrderSpec::at(
                        o.pickup,
                        crate::dispatch::DispatchMode::Queued,
                    )
                },
            )
            .await
        {
            Ok(()) => created += 1,
            Err(crate::dispatch::TransitionError::Exists) => {}
            Err(other) => anyhow::bail!("seed order {id}: {other:?}"),
        }
    }
    Ok(created)
}

/// Keep the seed fleet fresh: re-post its positions every `driver_ttl_ms / 2`.
pub(crate) fn spawn_refresh(
    context: AppContext,
    dir: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let drivers: Vec<SeedDriver> = match read_jsonl(&dir.join("drivers.jsonl")) {
            Ok(d) => d,
            Err(_) => return,
        };
        let period =
            std::time::Duration::from_millis((context.settings.driver_ttl_ms / 2).max(1_000));
        tracing::info!(
            every_ms = period.as_millis() as u64,
            "seed: refreshing the seed fleet's positions"
        );
        loop {
            tokio::time::sleep(period).await;
            if let Err(err) = load_drivers(&context, &drivers).await {
                tracing::warn!(error = format!("{err:#}"), "seed: refresh failed");
            }
        }
    })
}

/// Store the seed fleet's positions, recorded now, in batches. Returns how many were stored.
pub(crate) async fn load_drivers(
    context: &AppContext,
    drivers: &[SeedDriver],
) -> anyhow::Result<usize> {
    use crate::domain::{CityId, DriverId};
    use crate::drivers::{RecordedAt, ShiftStatus, VehicleType};

    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut conn = context.store.conn();
    let mut stored = 0;
    for chunk in drivers.chunks(1_000) {
        let mut items = Vec::with_capacity(chunk.len());
        for d in chunk {
            let id = DriverId::parse(&d.driver_id)
                .map_err(|e| anyhow::anyhow!("{}: {e}", d.driver_id))?;
            let update = crate::drivers::LocationUpdate {
                lat: d.lat,
                lon: d.lon,
                recorded_at: RecordedAt(now_ms as i64),
                accuracy_m: None,
                heading_deg: None,
                speed_mps: None,
                vehicle_type: VehicleType::parse(&d.vehicle_type),
                status: Some(if d.status == "offline" {
                    ShiftStatus::Offline
                } else {
                    ShiftStatus::Available
                }),
            };
            let pos = update
                .validate("")
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", d.driver_id))?;
            let city = context
                .cities
                .resolve(pos.point)
                .map(|c| c.id.clone())
                .or_else(|| CityId::parse(&d.city).ok())
                .ok_or_else(|| anyhow::anyhow!("{}: outside every city", d.driver_id))?;
            items.push((id, city, pos));
        }
        let outcomes = crate::drivers::store_positions(&context.store, &context.settings, &items)
            .await
            .context("storing seed positions")?;
        // Ratings become initial leaderboard scores; NX keeps scores earned since.
        // One pipeline per city: a pipeline must stay in one Cluster slot.
        let mut pipes: Vec<(String, redis::Pipeline)> = Vec::new();
        for (((id, _, _), outcome), d) in items.iter().zip(&outcomes).zip(chunk) {
            if let crate::drivers::PositionOutcome::Accepted(state) = outcome {
                let pipe = match pipes.iter().position(|(c, _)| *c == state.city) {
                    Some(i) => &mut pipes[i].1,
                    None => {
                        pipes.push((state.city.clone(), redis::pipe()));
                        &mut pipes.last_mut().expect("just pushed").1
                    }
                };
                pipe.cmd("ZADD")
                    .arg(context.store.keys().scores(&state.city))
                    .arg("NX")
                    .arg(d.rating)
                    .arg(id.as_str())
                    .ignore();
                stored += 1;
            }
        }
        for (_, pipe) in pipes {
            let _: () = pipe
                .query_async(&mut conn)
                .await
                .context("storing seed scores")?;
        }
    }
    Ok(stored)
}
