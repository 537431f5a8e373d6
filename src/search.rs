//! Nearby search: `GET /v1/drivers/nearby`, nearest first, by radius or box, filtered by status
//! and vehicle type.
//!
//! Why not one `GEOSEARCH … BYRADIUS r ASC COUNT k`: Redis visits every member of the geohash
//! cells covering `r` before sorting, so that command's cost grows with the drivers inside the
//! radius (2.2 ms at 1 km and 1M drivers, blocking Redis meanwhile), not with `k`. Here the
//! search starts at the radius that should hold about `k` drivers (learned per city and filter
//! from earlier searches) and widens from the count it found until it has `k` fresh drivers or
//! reaches `radius_m`. Each step is one pipelined round trip: `TIME`, one small `GEOSEARCH` per
//! requested status (on the status' set, whose members carry their vehicle type), and the
//! oldest entries of the city's liveness bucket index, which name every bucket that may hold a
//! driver gone stale since the last sweep (an entry is a lower bound of its bucket's oldest
//! time, which the sweeper makes exact ahead of the TTL). Only candidates in those buckets
//! (usually none) have their last-seen time read, in one more round trip, so stale drivers are
//! dropped even between sweeps without a lookup per candidate. The answer is exact at every
//! step: a set that filled its `COUNT` only vouches for distances up to its last member, and
//! then `COUNT` grows instead of the radius.
//! It is a read, so it needs no script, and no Redis command on this path is long.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::FieldError;
use crate::domain::GeoPoint;
use crate::drivers::{DriverStatus, VehicleType, driver_bucket};
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::QueryParams;
use crate::store::Store;
use crate::store::scripts::time_ms;

/// Where to start the nearest-k radius, per city and filter, learned from earlier searches in
/// this process: `radius that held exactly k ≈ c·√k`, kept as a moving average of `c`. Drivers
/// cluster (city centres, hot spots), so a learned start beats any city-wide density; a wrong
/// value only costs an extra step, never correctness.
#[derive(Debug, Default)]
pub struct KnnTuning {
    per_filter: Mutex<HashMap<(String, u8, u8), f64>>,
}

/// Start radius when nothing has been learned yet, per √k (metres): 20 drivers in 174 m
/// (×1.3). Small on purpose: a radius that holds too few drivers costs one more small step,
/// one that holds thousands costs a GEOSEARCH of milliseconds (at 1M drivers in 900 km², the
/// 872 m this started from held ~2,600 and took over 2 ms).
const DEFAULT_C: f64 = 30.0;

impl KnnTuning {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn start(&self, key: &(String, u8, u8), k: usize) -> f64 {
        let c = self
            .per_filter
            .lock()
            .expect("not poisoned")
            .get(key)
            .copied()
            .unwrap_or(DEFAULT_C);
        c * (k as f64).sqrt() * 1.3
    }

    fn learn(&self, key: (String, u8, u8), radius: f64, found: usize) {
        if found == 0 || !radius.is_finite() {
            return;
        }
        let observed = radius / (found as f64).sqrt();
        let mut map = self.per_filter.lock().expect("not poisoned");
        let c = map.entry(key).or_insert(observed);
        *c = (*c * 0.8 + observed * 0.2).clamp(0.1, 100_000.0);
    }
}

/// Query of `GET /v1/drivers/nearby`.
/// The tuning key of a search: its city and the filters (status and vehicle masks).
fn tuning_key(city: &str, statuses: &[DriverStatus], vehicles: &[VehicleType]) -> (String, u8, u8) {
    (
        city.to_owned(),
        mask(statuses, &DriverStatus::ALL),
        mask(vehicles, &VehicleType::ALL),
    )
}

/// The steps of one nearest-k query: the radius and `COUNT` of the next step, and how they
/// grow.
struct Probe<'a> {
    tuning: &'a KnnTuning,
    key: (String, u8, u8),
    k: usize,
    area: Area,
    /// Radius of the next step (unused for a box).
    radius: f64,
    /// `COUNT` of the next step's GEOSEARCH.
    count: usize,
}

impl<'a> Probe<'a> {
    /// The first step: the radius that should hold about `k` drivers for this city and filter,
    /// asking each set for `count` members.
    fn new(
        tuning: &'a KnnTuning,
        key: (String, u8, u8),
        k: usize,
        count: usize,
        area: Area,
    ) -> Self {
        let radius = match area {
            Area::Radius(max) => tuning.start(&key, k).clamp(25.0, max),
            Area::Box(..) => 0.0,
        };
        Self {
            tuning,
            key,
            k,
            area,
            radius,
            count,
        }
    }

    /// After a step that found `found` fresh drivers, with `cutoff` the distance of the last
    /// member of a set that filled its `COUNT` (infinite when none did): true when the answer
    /// is complete (and the radius it took is learned), else the next step is set up: a
    /// saturated step doubles `COUNT`, another widens the radius from the count it found.
    fn done_or_widen(&mut self, found: usize, cutoff: f64) -> bool {
        let saturated = cutoff.is_finite();
        let complete = !saturated
            && match self.area {
                Area::Radius(max) => self.radius >= max,
                Area::Box(..) => true,
            };
        if found >= self.k || complete {
            if let Area::Radius(_) = self.area {
                // The drivers found lie within `cutoff` when a set saturated, else within `radius`.
                // The answer is complete: the probe is not used again, its key can move.
                self.tuning.learn(
                    std::mem::take(&mut self.key),
                    self.radius.min(cutoff),
                    found,
                );
            }
            return true;
        }
        if saturated {
            self.count *= 2;
        } else if let Area::Radius(max) = self.area {
            let grow = if found == 0 {
                3.0
            } else {
                ((self.k as f64 / found as f64).sqrt() * 1.2).clamp(1.25, 3.0)
            };
            self.radius = (self.radius * grow).min(max);
        }
        false
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NearbyQuery {
    /// Latitude of the centre.
    #[param(example = 48.8566)]
    pub lat: f64,
    /// Longitude of the centre.
    #[param(example = 2.3522)]
    pub lon: f64,
    /// Maximum distance searched, in metres (default 5000, at most 50000). Not with a box.
    pub radius_m: Option<f64>,
    /// Box width in metres (with `height_m`, instead of `radius_m`).
    pub width_m: Option<f64>,
    /// Box height in metres (with `width_m`).
    pub height_m: Option<f64>,
    /// How many drivers at most (default 20, at most 100).
    pub limit: Option<usize>,
    /// Only drivers with this status (default: every driver that is not offline).
    pub status: Option<DriverStatus>,
    /// Only drivers with this vehicle type (default: all).
    pub vehicle_type: Option<VehicleType>,
}

/// One driver found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NearbyDriver {
    /// Driver id.
    pub driver_id: String,
    /// Latitude of the last reported position.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Distance from the centre in metres (Redis' haversine, earth radius 6372797.560856 m).
    pub distance_m: f64,
    /// Status.
    pub status: DriverStatus,
    /// Vehicle type.
    pub vehicle_type: VehicleType,
}

/// `GET /v1/drivers/nearby` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "drivers": [
    {"driver_id": "drv-1", "lat": 48.8570, "lon": 2.3530, "distance_m": 72.4, "status": "available", "vehicle_type": "scooter"}
]}))]
pub struct NearbyResponse {
    /// City searched (the one containing the centre).
    pub city: String,
    /// Nearest first.
    pub drivers: Vec<NearbyDriver>,
}

/// Search area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    /// Within this many metres.
    Radius(f64),
    /// Within a box of this width and height (metres) centred on the point.
    Box(f64, f64),
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Centre.
    pub center: GeoPoint,
    /// Area.
    pub area: Area,
    /// k.
    pub limit: usize,
    /// Statuses to include.
    pub statuses: Vec<DriverStatus>,
    /// Vehicle types to include.
    pub vehicles: Vec<VehicleType>,
}

impl NearbyQuery {
    /// Validate against the configured bounds.
    pub fn validate(&self, settings: &Settings) -> Result<Search, ApiError> {
        let mut errors: Vec<FieldError> = GeoPoint::parse(self.lat, self.lon, "")
            .err()
            .unwrap_or_default();
        let limit = self.limit.unwrap_or(settings.search_default_limit);
        if limit == 0 || limit > settings.search_max_limit {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {}", settings.search_max_limit),
            ));
        }
        let max = settings.search_max_radius_m;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let area = match (self.radius_m, self.width_m, self.height_m) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                errors.push(FieldError::new(
                    "radius_m",
                    "give either radius_m or width_m and height_m, not both",
                ));
                None
            }
            (r, None, None) => {
                let r = r.unwrap_or(settings.search_default_radius_m);
                if !positive(r) || r > max {
                    errors.push(FieldError::new(
                        "radius_m",
                        format!("must be > 0 and at most {max} m"),
                    ));
                }
                Some(Area::Radius(r))
            }
            (None, Some(w), Some(h)) => {
                for (name, v) in [("width_m", w), ("height_m", h)] {
                    if !positive(v) || v > 2.0 * max {
                        errors.push(FieldError::new(
                            name,
                            format!("must be > 0 and at most {} m", 2.0 * max),
                        ));
                    }
                }
                Some(Area::Box(w, h))
            }
            (None, w, _) => {
                let missing = if w.is_some() { "height_m" } else { "width_m" };
                errors.push(FieldError::new(
                    missing,
                    "a box needs both width_m and height_m",
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Search {
            center: GeoPoint {
                lat: self.lat,
                lon: self.lon,
            },
            area: area.expect("validated"),
            limit,
            statuses: match self.status {
                Some(s) => vec![s],
                None => vec![DriverStatus::Available, DriverStatus::Busy],
            },
            vehicles: match self.vehicle_type {
                Some(v) => vec![v],
                None => VehicleType::ALL.to_vec(),
            },
        })
    }
}

fn mask<T: PartialEq + Copy>(chosen: &[T], all: &[T]) -> u8 {
    all.iter()
        .enumerate()
        .filter(|(_, x)| chosen.contains(x))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// How many of the oldest entries of the liveness bucket index each search reads to learn which
/// buckets hold stale drivers. The sweeper keeps that number small; when all of them are stale
/// (the sweeper is behind), the search checks all its candidates one by one instead.
const STALE_WINDOW: usize = 64;

/// How much earlier than the TTL boundary (by the estimated Redis clock) the search starts to
/// treat drivers as stale, on top of the estimate's own late bias.
const STALE_MARGIN_MS: i64 = 1;

/// One GEO set to search: a status' set (members tagged with their vehicle type).
struct SearchSet {
    key: String,
    status: DriverStatus,
}

/// Run a search in `city` (the caller resolved it). Nearest first; ties by driver id.
pub async fn search(
    store: &Store,
    settings: &Settings,
    tuning: &KnnTuning,
    city: &str,
    search: &Search,
) -> Result<Vec<NearbyDriver>, ApiError> {
    let keys = store.keys();
    let sets: Vec<SearchSet> = search
        .statuses
        .iter()
        .map(|&status| SearchSet {
            key: keys.geo(city, status),
            status,
        })
        .collect();
    // A vehicle filter keeps part of each set's members: ask for proportionally more of them
    // from the start (an even mix assumed; a saturated step doubles `COUNT` anyway).
    let mut probe = Probe::new(
        tuning,
        tuning_key(city, &search.statuses, &search.vehicles),
        search.limit,
        search.limit * VehicleType::ALL.len() / search.vehicles.len().max(1),
        search.area,
    );
    let k = search.limit;
    let seen = keys.seen_index(city);
    let mut conn = store.conn();
    for _ in 0..40 {
        // One round trip: the clock, every set's nearest members, the buckets with the oldest
        // drivers.
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for set in &sets {
            let cmd = pipe
                .cmd("GEOSEARCH")
                .arg(&set.key)
                .arg("FROMLONLAT")
                .arg(search.center.lon)
                .arg(search.center.lat);
            match search.area {
                Area::Radius(_) => cmd.arg("BYRADIUS").arg(probe.radius),
                Area::Box(w, h) => cmd.arg("BYBOX").arg(w).arg(h),
            };
            cmd.arg("m")
                .arg("ASC")
                .arg("COUNT")
                .arg(probe.count)
                .arg("WITHDIST")
                .arg("WITHCOORD");
        }
        // Buckets whose oldest driver was last seen before the cutoff hold stale drivers. The
        // cutoff comes from this process' estimate of Redis' clock, which errs late, so a
        // bucket may be named needlessly (its candidates are then only checked) while a stale
        // one is never missed; the cutoff is checked against the TIME of this very pipeline
        // below.
        let cutoff_ms = store.redis_now_ms() - settings.driver_ttl_ms as i64 + STALE_MARGIN_MS;
        pipe.cmd("ZRANGE")
            .arg(&seen)
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(STALE_WINDOW);
        let sent = store.local_now_ms();
        let mut values: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(redis_error("nearby search"))?;
        let decode_err = |what: &str, e: redis::ParsingError| {
            ApiError::Internal(anyhow::anyhow!("decoding {what}: {e}"))
        };
        let stale_buckets: Vec<u16> =
            redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))
                .map_err(|e| decode_err("ZRANGE", e))?;
        let mut values = values.into_iter();
        let time: (i64, i64) = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))
            .map_err(|e| decode_err("TIME", e))?;
        let redis_now = time_ms(time);
        store.observe_redis_time(redis_now, sent);
        let fresh_after = redis_now - settings.driver_ttl_ms as i64;
        // The bucket list is complete only if it was not cut by the window and the cutoff used
        // was not earlier than the true one; otherwise every candidate is suspect.
        let window_exhausted = stale_buckets.len() == STALE_WINDOW || cutoff_ms < fresh_after;
        let suspect = |c: &NearbyDriver| {
            window_exhausted || stale_buckets.contains(&driver_bucket(&c.driver_id))
        };

        let mut cutoff = f64::INFINITY;
        let mut candidates: Vec<NearbyDriver> = Vec::new();
        for (set, value) in sets.iter().zip(values) {
            let members: Vec<(String, f64, (f64, f64))> =
                redis::from_redis_value(value).map_err(|e| decode_err("GEOSEARCH", e))?;
            // A set that returned `count` members vouches only up to its last member's distance.
            if members.len() == probe.count
                && let Some(last) = members.last()
            {
                cutoff = cutoff.min(last.1);
            }
            for (member, distance_m, (lon, lat)) in members {
                let Some((vehicle_type, id)) = VehicleType::untag(&member) else {
                    continue;
                };
                if !search.vehicles.contains(&vehicle_type) {
                    continue;
                }
                candidates.push(NearbyDriver {
                    driver_id: id.to_owned(),
                    lat,
                    lon,
                    distance_m,
                    status: set.status,
                    vehicle_type,
                });
            }
        }
        candidates.retain(|c| c.distance_m <= cutoff);
        if candidates.iter().any(suspect) {
            candidates =
                drop_stale(&mut conn, keys, city, candidates, suspect, fresh_after).await?;
        }
        if probe.done_or_widen(candidates.len(), cutoff) {
            let mut found = candidates;
            found.sort_by(|a, b| {
                a.distance_m
                    .total_cmp(&b.distance_m)
                    .then_with(|| a.driver_id.cmp(&b.driver_id))
            });
            found.truncate(k);
            return Ok(found);
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "nearby search did not converge"
    )))
}

/// Drop the stale among `candidates` that are `suspect` (in a bucket holding a stale driver, or
/// every candidate when the sweeper is behind): one pipelined `ZSCORE` per suspect, in its
/// liveness bucket.
async fn drop_stale(
    conn: &mut crate::store::RedisConn,
    keys: &crate::store::Keys,
    city: &str,
    candidates: Vec<NearbyDriver>,
    suspect: impl Fn(&NearbyDriver) -> bool,
    fresh_after: i64,
) -> Result<Vec<NearbyDriver>, ApiError> {
    let (suspects, mut kept): (Vec<NearbyDriver>, Vec<NearbyDriver>) =
        candidates.into_iter().partition(|c| suspect(c));
    let mut pipe = redis::pipe();
    for c in &suspects {
        pipe.cmd("ZSCORE")
            .arg(keys.seen_bucket(city, driver_bucket(&c.driver_id)))
            .arg(&c.driver_id);
    }
    let scores: Vec<Option<f64>> = pipe
        .query_async(conn)
        .await
        .map_err(redis_error("nearby freshness"))?;
    kept.extend(
        suspects
            .into_iter()
            .zip(scores)
            .filter(|(_, s)| s.is_some_and(|s| s >= fresh_after as f64))
            .map(|(c, _)| c),
    );
    Ok(kept)
}

/// Drivers near a point, nearest first, with their distance.
///
/// The city is the one containing the point. Without `status`, every driver that is not
/// offline is searched. Only drivers whose last position is younger than `driver_ttl_ms` are
/// returned. Use `radius_m` for a circle or `width_m` and `height_m` for a box.
#[utoipa::path(
    tag = "search",
    params(NearbyQuery),
    responses(
        (status = 200, description = "Drivers, nearest first", body = NearbyResponse),
        (status = 422, description = "Invalid or out-of-bounds parameter, or a point outside every service area (`outside-service-area`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/nearby")]
pub async fn nearby(
    query: QueryParams<NearbyQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
    tuning: web::Data<KnnTuning>,
) -> Result<HttpResponse, ApiError> {
    let search_req = query.0.validate(&settings)?;
    let city = cities.resolve_or_reject(search_req.center)?;
    let drivers = search(&store, &settings, &tuning, city.id.as_str(), &search_req).await?;
    Ok(HttpResponse::Ok().json(NearbyResponse {
        city: city.id.to_string(),
        drivers,
    }))
}

/// Register this module's routes under `/v1` (before the drivers module's `/drivers/{id}`).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(nearby);
}
