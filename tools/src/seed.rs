//! `geodispatch-tools seed generate`: the deterministic fleet and sample orders of `seed-data/`,
//! from a fixed random seed (same seed, same bytes), in the JSON Lines format that
//! `geodispatch serve --seed DIR` loads.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use geodispatch::app::seed::{SeedDriver, SeedOrder};
use geodispatch::cities::{City, CityIndex};
use geodispatch::domain::GeoPoint;
use geodispatch_testkit::rng::SplitMix64;
use serde::Serialize;

/// Vehicle types in the generated fleet, with their share in percent.
const VEHICLE_MIX: [(&str, u64); 4] = [("bike", 20), ("scooter", 30), ("car", 40), ("van", 10)];

/// Default random seed of `seed generate`.
pub const DEFAULT_SEED: u64 = 20_261_123;
/// Default fleet size per city.
pub const DEFAULT_DRIVERS_PER_CITY: usize = 2_000;
/// Default sample orders per city.
pub const DEFAULT_ORDERS_PER_CITY: usize = 200;

/// Random draws of the generator.
trait Draw {
    fn point_in(&mut self, city: &City) -> GeoPoint;
    fn vehicle_type(&mut self) -> &'static str;
}

impl Draw for SplitMix64 {
    /// A uniformly random point inside `city` (rejection sampling in its bounding box).
    fn point_in(&mut self, city: &City) -> GeoPoint {
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
        // The committed files must be exactly what `geodispatch-tools seed generate` writes.
        let cities = CityIndex::load(None).unwrap();
        let (drivers, orders) = generate(
            &cities,
            DEFAULT_SEED,
            DEFAULT_DRIVERS_PER_CITY,
            DEFAULT_ORDERS_PER_CITY,
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seed-data");
        let fresh = std::env::temp_dir().join(format!("gd-seed-{}", uuid::Uuid::new_v4()));
        write(&fresh, &drivers, &orders).unwrap();
        for file in ["drivers.jsonl", "orders.jsonl"] {
            let committed = std::fs::read(dir.join(file)).unwrap();
            let generated = std::fs::read(fresh.join(file)).unwrap();
            assert!(
                committed == generated,
                "seed-data/{file} is stale: run `geodispatch-tools seed generate`"
            );
        }
        std::fs::remove_dir_all(fresh).unwrap();
    }
}
