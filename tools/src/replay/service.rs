//! The service a replay plays against: the instance's plane placed on the globe, its service
//! area, the settings scaled to the replay's speed, and (by default) a `redis-server` and a
//! real `geodispatch serve` process started for the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use geodispatch::store::local::{LocalRedis, LocalRedisOptions, die_with_parent, free_port};
use geodispatch_testkit::load::Conn;

use super::instance::{Instance, Point};

/// The id of the replay's service area.
pub const CITY: &str = "mdrp";

/// Simulated minutes a courier must stay at a restaurant or customer before the service
/// detects its arrival (`arrival_dwell_ms`, scaled to the speed).
pub const ARRIVAL_DWELL_MIN: f64 = 0.5;

/// Radius of the sphere Redis GEO measures distances on, metres.
const EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// The instance's plane on the globe: its centre at `origin` (lat, lon), x east and y north,
/// metres converted to degrees with the local scale of the sphere Redis measures on, so the
/// distances the service computes match the instance's to a fraction of a percent.
#[derive(Debug, Clone, Copy)]
pub struct Plane {
    centre: Point,
    lat0: f64,
    lon0: f64,
}

impl Plane {
    /// Centre the instance's bounding box at (`lat0`, `lon0`).
    pub fn new(inst: &Instance, lat0: f64, lon0: f64) -> Self {
        let (lo, hi) = bounds(inst);
        Self {
            centre: Point {
                x: (lo.x + hi.x) / 2.0,
                y: (lo.y + hi.y) / 2.0,
            },
            lat0,
            lon0,
        }
    }

    /// (lat, lon) of a point of the plane.
    pub fn to_geo(&self, p: Point) -> (f64, f64) {
        let m_per_deg = EARTH_RADIUS_M.to_radians();
        let lat = self.lat0 + (p.y - self.centre.y) / m_per_deg;
        let lon = self.lon0 + (p.x - self.centre.x) / (m_per_deg * self.lat0.to_radians().cos());
        (lat, lon)
    }

    /// A GeoJSON FeatureCollection with one service area: the instance's bounding box grown
    /// by `margin_m` on every side.
    pub fn cities_geojson(&self, inst: &Instance, margin_m: f64) -> serde_json::Value {
        let (lo, hi) = bounds(inst);
        let corners = [
            Point {
                x: lo.x - margin_m,
                y: lo.y - margin_m,
            },
            Point {
                x: hi.x + margin_m,
                y: lo.y - margin_m,
            },
            Point {
                x: hi.x + margin_m,
                y: hi.y + margin_m,
            },
            Point {
                x: lo.x - margin_m,
                y: hi.y + margin_m,
            },
            Point {
                x: lo.x - margin_m,
                y: lo.y - margin_m,
            },
        ];
        let ring: Vec<[f64; 2]> = corners
            .iter()
            .map(|&c| {
                let (lat, lon) = self.to_geo(c);
                [lon, lat]
            })
            .collect();
        json!({"type": "FeatureCollection", "features": [{
            "type": "Feature",
            "properties": {"id": CITY, "name": format!("MDRP instance {}", inst.name), "timezone": "America/Chicago"},
            "geometry": {"type": "Polygon", "coordinates": [ring]}
        }]})
    }
}

/// The instance's bounding box (lowest corner, highest corner).
pub fn bounds(inst: &Instance) -> (Point, Point) {
    let mut lo = Point {
        x: f64::INFINITY,
        y: f64::INFINITY,
    };
    let mut hi = Point {
        x: f64::NEG_INFINITY,
        y: f64::NEG_INFINITY,
    };
    for p in inst.points() {
        lo.x = lo.x.min(p.x);
        lo.y = lo.y.min(p.y);
        hi.x = hi.x.max(p.x);
        hi.y = hi.y.max(p.y);
    }
    (lo, hi)
}

/// Simulated minutes of past orders that count as a restaurant's demand (repositioning).
pub const REPOSITION_WINDOW_MIN: f64 = 60.0;
/// Simulated minutes ahead repositioning provides for.
pub const REPOSITION_HORIZON_MIN: f64 = 15.0;

/// The simulated durations behind the service's timing settings, in simulated minutes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Time compression: simulated time runs this many times faster than real time.
    pub speed: f64,
    /// Interval between two matching rounds (batched policy).
    pub round_min: f64,
    /// How far ahead rounds count on couriers about to be free (0: not at all).
    pub busy_horizon_min: f64,
    /// Arrival before the ready time aimed at, beyond half the pickup service.
    pub lead_margin_min: f64,
    /// Rounds send idle couriers toward the restaurants of recent orders.
    pub reposition: bool,
}

impl Timing {
    /// Real milliseconds of `minutes` simulated minutes (at least 1).
    pub fn ms(&self, minutes: f64) -> u64 {
        (minutes * 60_000.0 / self.speed).round().max(1.0) as u64
    }
}

/// The service settings of a replay, as `GEODISPATCH_*` variables: every interval and time
/// to live means the same simulated time at every speed (see the module docs of
/// [`crate::replay`]).
pub fn settings_env(
    inst: &Instance,
    policy: &str,
    timing: Timing,
    cities_file: &Path,
) -> Vec<(String, String)> {
    let (lo, hi) = bounds(inst);
    let diagonal = lo.distance(hi);
    let radius = (diagonal + 2_000.0).ceil();
    let round_ms = timing.ms(timing.round_min);
    [
        ("GEODISPATCH_KEY_PREFIX", "replay".to_owned()),
        ("GEODISPATCH_AUTH_ENABLED", "false".to_owned()),
        ("GEODISPATCH_RATE_LIMITS_ENABLED", "false".to_owned()),
        ("GEODISPATCH_CITIES_FILE", cities_file.display().to_string()),
        ("GEODISPATCH_HTTP_WORKERS", "2".to_owned()),
        ("GEODISPATCH_DISPATCH_POLICY", policy.to_owned()),
        ("GEODISPATCH_MATCH_INTERVAL_MS", round_ms.to_string()),
        // Every order enters the pool when it is placed; the round decides when it is due.
        (
            "GEODISPATCH_MATCH_LOOKAHEAD_MS",
            timing.ms(180.0).to_string(),
        ),
        (
            "GEODISPATCH_MATCH_LEASE_TTL_MS",
            (3 * round_ms).max(3_000).to_string(),
        ),
        (
            "GEODISPATCH_MATCH_SPEED_MPS",
            format!("{}", inst.params.metres_per_minute * timing.speed / 60.0),
        ),
        // A courier picks up half a pickup service after arriving, and travel is rounded up to
        // whole minutes: aim to arrive that long (and the margin: by default half a minute,
        // the rounding on average) before the food is ready.
        (
            "GEODISPATCH_MATCH_PICKUP_LEAD_MS",
            timing
                .ms(inst.params.pickup_service / 2.0 + timing.lead_margin_min)
                .to_string(),
        ),
        // A courier carrying an order is free once its drop-off service ends.
        (
            "GEODISPATCH_MATCH_DROPOFF_SERVICE_MS",
            timing.ms(inst.params.dropoff_service).to_string(),
        ),
        (
            "GEODISPATCH_MATCH_BUSY_HORIZON_MS",
            if timing.busy_horizon_min > 0.0 {
                timing.ms(timing.busy_horizon_min).to_string()
            } else {
                "0".to_owned()
            },
        ),
        // Repositioning: the last hour's orders are the demand, a quarter of an hour ahead.
        (
            "GEODISPATCH_REPOSITION_IDLE_DRIVERS",
            timing.reposition.to_string(),
        ),
        (
            "GEODISPATCH_REPOSITION_WINDOW_MS",
            timing.ms(REPOSITION_WINDOW_MIN).to_string(),
        ),
        (
            "GEODISPATCH_REPOSITION_HORIZON_MS",
            timing.ms(REPOSITION_HORIZON_MIN).to_string(),
        ),
        // Arrivals: couriers report every simulated minute and stay at least half a pickup
        // (drop-off) service at each stop, so half a minute there is an arrival.
        ("GEODISPATCH_ARRIVAL_DETECTION", "true".to_owned()),
        ("GEODISPATCH_ARRIVAL_RADIUS_M", "50".to_owned()),
        (
            "GEODISPATCH_ARRIVAL_DWELL_MS",
            timing.ms(ARRIVAL_DWELL_MIN).to_string(),
        ),
        ("GEODISPATCH_OFFER_TTL_MS", timing.ms(5.0).to_string()),
        ("GEODISPATCH_DISPATCH_RETRY_MS", timing.ms(0.5).to_string()),
        ("GEODISPATCH_TIMER_INTERVAL_MS", timing.ms(0.1).to_string()),
        ("GEODISPATCH_DRIVER_TTL_MS", timing.ms(10.0).to_string()),
        ("GEODISPATCH_SWEEP_INTERVAL_MS", timing.ms(2.0).to_string()),
        ("GEODISPATCH_DISPATCH_MAX_ATTEMPTS", "1000000000".to_owned()),
        ("GEODISPATCH_DISPATCH_RADIUS_M", format!("{radius}")),
        (
            "GEODISPATCH_SEARCH_MAX_RADIUS_M",
            format!("{}", radius.max(50_000.0)),
        ),
        // Distance alone ranks couriers. (Not `score_per_delivery = 0`: a delivery would
        // still write a score of 0, below the unscored default, and rank every courier who
        // delivered once as if 4.25 km farther away.)
        ("GEODISPATCH_RANKING_SCORE_WEIGHT", "0".to_owned()),
        // Keep the whole event history for the invariant check.
        ("GEODISPATCH_EVENTS_MAXLEN", "10000000".to_owned()),
        ("GEODISPATCH_LOG_FORMAT", "text".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A `redis-server` and a `geodispatch serve` process owned by the run.
pub struct LocalService {
    redis: LocalRedis,
    child: tokio::process::Child,
    /// `127.0.0.1:port` of the service.
    pub addr: String,
}

impl LocalService {
    /// Start Redis (data in `dir/redis`) and `binary serve` with `env`, its log in
    /// `dir/service.log`; wait for `/readyz`.
    pub async fn start(
        binary: &Path,
        env: &[(String, String)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let redis = LocalRedis::start(LocalRedisOptions {
            data_dir: dir.join("redis"),
            appendonly: false,
            extra_args: vec![],
        })
        .await?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.join("service.log"))?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("serve")
            .envs(env.iter().cloned())
            .env("GEODISPATCH_REDIS_URL", redis.url())
            .env("GEODISPATCH_LISTEN", &addr)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Conn::open(&addr).await
                && let Ok((200, _)) = c.request("GET", "/readyz", None).await
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the service exited ({status}) before it was ready: see {}",
                    dir.join("service.log").display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the service on {addr} never became ready: see {}",
                dir.join("service.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { redis, child, addr })
    }

    /// URL of its Redis.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// Stop both processes.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.redis.stop().await;
    }
}

/// The service binary: `explicit`, or `geodispatch` next to the running executable.
pub fn service_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match explicit {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("geodispatch"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "no service binary at {} (build it with `cargo build --release --workspace`, or pass --service-binary)",
        binary.display()
    );
    Ok(binary)
}

/// Sum of the samples of `GET /metrics` whose line starts with `prefix` (a metric name,
/// optionally with the start of its labels).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter(|l| {
            // The name must end where the prefix does, unless the prefix carries labels.
            prefix.contains('{') || matches!(l.as_bytes().get(prefix.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_samples_of_one_name_and_label_prefix() {
        let text = "# TYPE x counter\ngeodispatch_match_claims_total{result=\"offered\"} 5\ngeodispatch_match_claims_total{result=\"conflict\"} 2\ngeodispatch_match_claims_total_other 9\n";
        assert_eq!(metric(text, "geodispatch_match_claims_total"), 7.0);
        assert_eq!(
            metric(text, "geodispatch_match_claims_total{result=\"conflict\"}"),
            2.0
        );
        assert_eq!(metric(text, "geodispatch_missing"), 0.0);
    }
}
