//! Seed data: a deterministic fleet and sample orders, generated from a fixed random seed, and
//! the loader behind `serve --seed DIR`.
//!
//! Format (JSON Lines, one object per line):
//! - `drivers.jsonl`: `{"driver_id", "city", "lat", "lon", "vehicle_type", "rating", "status"}`
//! - `orders.jsonl`: `{"order_id", "city", "pickup": {"lat", "lon"}, "dropoff": {"lat", "lon"}, "vehicle_type"}`
//!
//! Regenerate with `geodispatch seed generate --out seed-data` (same seed, same bytes).
//! Loading is idempotent; a part whose capability is not built yet is skipped with a log line.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cities::{City, CityIndex};
use crate::domain::GeoPoint;
use crate::startup::AppContext;

/// Vehicle types in the generated fleet, with their share in percent.
const VEHICLE_MIX: [(&str, u64); 4] = [("bike", 20), ("scooter", 30), ("car", 40), ("van", 10)];

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

/// SplitMix64: tiny, fast and stable across crate versions, so a seed always gives the same fleet.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniformly random point inside `city` (rejection sampling in its bounding box).
    pub fn point_in(&mut self, city: &City) -> GeoPoint {
        loop {
            let p = GeoPoint {
                lat: round6(
                    city.bbox.min_lat + self.next_f64() * (city.bbox.max_lat - city.bbox.min_lat),
                ),
                lon: round6(
                    city.bbox.min_lon + self.next_f64() * (city.bbox.max_lon - city.bbox.min_lon),
                ),
            };
            if city.contains(p) {
                return p;
            }
        }
    }

    fn vehicle_type(&mut self) -> &'static str {
        let mut roll = self.next_u64() % 100;
        for (vt, share) in VEHICLE_MIX {
            if roll < share {
                return vt;
            }
            roll -= share;
        }
        "car"
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Generate the fleet and orders for every city.
pub fn generate(
    cities: &CityIndex,
    seed: u64,
    drivers_per_city: usize,
    orders_per_city: usize,
) -> (Vec<SeedDriver>, Vec<SeedOrder>) {
    let mut rng = SplitMix64::new(seed);
    let mut drivers = Vec::new();
    let mut orders = Vec::new();
    for city in cities.all() {
        for i in 0..drivers_per_city {
            let p = rng.point_in(city);
            drivers.push(SeedDriver {
                driver_id: format!("{}-d{:05}", city.id, i + 1),
                city: city.id.to_string(),
                lat: p.lat,
                lon: p.lon,
                vehicle_type: rng.vehicle_type().to_owned(),
                rating: (350 + rng.next_u64() % 151) as f64 / 100.0,
                status: if rng.next_u64().is_multiple_of(10) {
                    "offline"
                } else {
                    "available"
                }
                .to_owned(),
            });
        }
        for i in 0..orders_per_city {
            let pickup = rng.point_in(city);
            let dropoff = rng.point_in(city);
            orders.push(SeedOrder {
                order_id: format!("{}-o{:05}", city.id, i + 1),
                city: city.id.to_string(),
                pickup,
                dropoff,
                vehicle_type: rng.vehicle_type().to_owned(),
            });
        }
    }
    (drivers, orders)
}

/// Write `drivers.jsonl` and `orders.jsonl` into `dir`.
pub fn write(dir: &Path, drivers: &[SeedDriver], orders: &[SeedOrder]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_jsonl(&dir.join("drivers.jsonl"), drivers)?;
    write_jsonl(&dir.join("orders.jsonl"), orders)?;
    Ok(())
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Read a JSON Lines file.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
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
pub async fn load(context: &AppContext, dir: &Path) -> anyhow::Result<()> {
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
                o.pickup,
                Some(o.dropoff),
                vehicle,
                crate::dispatch::DispatchMode::Queued,
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
pub fn spawn_refresh(context: AppContext, dir: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
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
pub async fn load_drivers(context: &AppContext, drivers: &[SeedDriver]) -> anyhow::Result<usize> {
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
        let outcomes = crate::drivers::store_positions(
            &mut conn,
            context.store.keys(),
            &context.settings,
            &items,
        )
        .await
        .map_err(|e| anyhow::anyhow!("storing seed positions: {e}"))?;
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
                    .arg(crate::drivers::scores_key(
                        context.store.keys(),
                        &state.city,
                    ))
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

/// Default random seed of `seed generate`.
pub const DEFAULT_SEED: u64 = 20_261_123;
/// Default fleet size per city.
pub const DEFAULT_DRIVERS_PER_CITY: usize = 2_000;
/// Default sample orders per city.
pub const DEFAULT_ORDERS_PER_CITY: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_inside_the_cities() {
        let cities = CityIndex::load(None).unwrap();
        let (a, oa) = generate(&cities, 42, 200, 20);
        let (b, ob) = generate(&cities, 42, 200, 20);
        assert_eq!(a, b);
        assert_eq!(oa, ob);
        assert_eq!(a.len(), 400);
        for d in &a {
            let city = cities
                .resolve(GeoPoint {
                    lat: d.lat,
                    lon: d.lon,
                })
                .expect("inside a city");
            assert_eq!(city.id.as_str(), d.city);
        }
        let (c, _) = generate(&cities, 43, 200, 20);
        assert_ne!(a, c, "another seed gives another fleet");
    }

    #[test]
    fn committed_seed_data_matches_the_generator() {
        // The committed files must be exactly what `geodispatch seed generate` writes.
        let cities = CityIndex::load(None).unwrap();
        let (drivers, orders) = generate(
            &cities,
            DEFAULT_SEED,
            DEFAULT_DRIVERS_PER_CITY,
            DEFAULT_ORDERS_PER_CITY,
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seed-data");
        let fresh = std::env::temp_dir().join(format!("gd-seed-{}", uuid::Uuid::new_v4()));
        write(&fresh, &drivers, &orders).unwrap();
        for file in ["drivers.jsonl", "orders.jsonl"] {
            let committed = std::fs::read(dir.join(file)).unwrap();
            let generated = std::fs::read(fresh.join(file)).unwrap();
            assert!(
                committed == generated,
                "seed-data/{file} is stale: run `geodispatch seed generate`"
            );
        }
        std::fs::remove_dir_all(fresh).unwrap();
    }
}
