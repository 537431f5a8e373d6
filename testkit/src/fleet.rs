//! The benchmark fleet: drivers spread over the 30×30 km square around central Paris, and how
//! they are posted to a service over HTTP.

use std::time::Instant;

use serde_json::json;

use crate::load;
use crate::now_ms;
use crate::rng::SplitMix64;

/// The benchmark city: the 30×30 km square around central Paris.
pub const CENTER: (f64, f64) = (48.85, 2.35);
pub const HALF_KM: f64 = 15.0;
pub const VEHICLES: [&str; 4] = ["bike", "scooter", "car", "van"];

pub fn point_in_square(rng: &mut SplitMix64, half_km: f64) -> (f64, f64) {
    let dlat = half_km / 111.32;
    let dlon = half_km / (111.32 * CENTER.0.to_radians().cos());
    let lat = CENTER.0 + (rng.next_f64() * 2.0 - 1.0) * dlat;
    let lon = CENTER.1 + (rng.next_f64() * 2.0 - 1.0) * dlon;
    ((lat * 1e6).round() / 1e6, (lon * 1e6).round() / 1e6)
}

/// How many times a batch answered 503 is sent again before loading fails.
const BATCH_RETRIES: u64 = 10;

/// Post `drivers` (id, lat, lon, vehicle) in batches of 1000 over `connections` connections;
/// returns positions per second.
pub async fn load_fleet(
    addr: &str,
    drivers: &[(String, f64, f64, &'static str)],
    connections: usize,
) -> anyhow::Result<f64> {
    load_fleet_with(addr, drivers, connections, false).await
}

/// [`load_fleet`], with `motion`: every position also carries `accuracy_m` (3.0–19.9 m, one
/// decimal), `heading_deg` (whole degrees) and `speed_mps` (0.0–14.9, one decimal), as a
/// phone's fix does.
pub async fn load_fleet_with(
    addr: &str,
    drivers: &[(String, f64, f64, &'static str)],
    connections: usize,
    motion: bool,
) -> anyhow::Result<f64> {
    load_fleet_at(addr, drivers, connections, motion, now_ms()).await
}

/// [`load_fleet_with`], every position recorded at `t` (ms since the epoch), so that a fleet
/// loaded over a while turns stale at one moment.
pub async fn load_fleet_at(
    addr: &str,
    drivers: &[(String, f64, f64, &'static str)],
    connections: usize,
    motion: bool,
    t: i64,
) -> anyhow::Result<f64> {
    let bodies: Vec<Vec<u8>> = drivers
        .chunks(1_000)
        .map(|chunk| {
            let positions: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, (id, lat, lon, vt))| {
                    let mut p = json!({"driver_id": id, "lat": lat, "lon": lon, "recorded_at": t, "vehicle_type": vt});
                    if motion {
                        p["accuracy_m"] = json!(3.0 + (i % 170) as f64 / 10.0);
                        p["heading_deg"] = json!(((i * 37) % 360) as f64);
                        p["speed_mps"] = json!((i % 150) as f64 / 10.0);
                    }
                    p
                })
                .collect();
            serde_json::to_vec(&json!({ "positions": positions })).expect("json")
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mine: Vec<Vec<u8>> = bodies
            .iter()
            .skip(c)
            .step_by(connections)
            .cloned()
            .collect();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = load::Conn::open(&addr).await?;
            for body in mine {
                // A 503 (Redis slower than the service's timeout, as on a loaded machine with
                // fsync always) is retried as a phone would: the same positions again, which
                // the service accepts (only an older `recorded_at` is refused).
                let mut attempt = 0;
                let (status, answer) = loop {
                    let (status, answer) = conn
                        .request("POST", "/v1/locations/batch", Some(&body))
                        .await?;
                    if status != 503 || attempt == BATCH_RETRIES {
                        break (status, answer);
                    }
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                };
                anyhow::ensure!(status == 200, "batch answered {status}");
                let text = std::str::from_utf8(answer).unwrap_or("");
                anyhow::ensure!(
                    !text.contains("\"invalid\"") && !text.contains("\"stale\""),
                    "a batch item was rejected: {text}"
                );
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(drivers.len() as f64 / started.elapsed().as_secs_f64())
}

pub fn fleet(n: usize, seed: u64) -> Vec<(String, f64, f64, &'static str)> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let (lat, lon) = point_in_square(&mut rng, HALF_KM);
            (
                format!("d{i:07}"),
                lat,
                lon,
                VEHICLES[(rng.next_u64() % 4) as usize],
            )
        })
        .collect()
}

pub fn queries(n: usize, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| point_in_square(&mut rng, 10.0)).collect()
}
