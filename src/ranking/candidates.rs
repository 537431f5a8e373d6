//! Candidate ranking: the nearest available, fresh drivers of a pickup ranked by a composite of
//! distance and driver score, computed by Redis with sorted sets.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{RankingError, redis_error};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{DriverStatus, FieldError, GeoPoint, VehicleType};
use crate::search::{Area, KnnTuning, Search};
use crate::store::Store;

/// Composite values are kept in Redis in millionths of a point.
const MICRO: f64 = 1_000_000.0;

/// Candidates query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CandidatesQuery {
    /// Latitude of the pickup.
    #[param(example = 48.8566, minimum = -85.05112878, maximum = 85.05112878)]
    pub(crate) lat: f64,
    /// Longitude of the pickup.
    #[param(example = 2.3522, minimum = -180.0, maximum = 180.0)]
    pub(crate) lon: f64,
    /// How many ranked candidates (default 10, at most `search_max_limit`, 100 by default).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) limit: Option<usize>,
    /// Only this vehicle type.
    pub(crate) vehicle_type: Option<VehicleType>,
    /// Maximum distance in metres (default `search_default_radius_m`; more than 0 and at most
    /// `search_max_radius_m`, 50000 by default).
    #[param(exclusive_minimum = 0.0, maximum = 50000.0)]
    pub(crate) radius_m: Option<f64>,
    /// Override of `ranking_distance_weight` (composite points lost per km).
    #[param(minimum = 0.0, maximum = 1000000.0)]
    pub(crate) distance_weight: Option<f64>,
    /// Override of `ranking_score_weight` (composite points per score point).
    #[param(minimum = 0.0, maximum = 1000000.0)]
    pub(crate) score_weight: Option<f64>,
}

/// One ranked candidate, with what its rank is made of.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Candidate {
    /// 1-based position in the ranking.
    pub(crate) rank: u64,
    /// Driver id.
    pub(crate) driver_id: String,
    /// Latitude.
    pub(crate) lat: f64,
    /// Longitude.
    pub(crate) lon: f64,
    /// Vehicle type.
    pub(crate) vehicle_type: VehicleType,
    /// Distance from the pickup in metres.
    pub(crate) distance_m: f64,
    /// The driver's score, or `ranking_unscored_score` when it has none: the score the
    /// composite was computed with.
    pub(crate) driver_score: f64,
    /// `score_weight × driver_score − distance_weight × distance_km`; higher ranks first.
    pub(crate) composite: f64,
}

/// Weights used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub(crate) struct Weights {
    /// Composite points lost per km of distance.
    pub(crate) distance_weight: f64,
    /// Composite points per point of driver score.
    pub(crate) score_weight: f64,
}

/// `GET /v1/candidates` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "weights": {"distance_weight": 1.0, "score_weight": 1.0}, "candidates": [
    {"rank": 1, "driver_id": "drv-1", "lat": 48.857, "lon": 2.353, "vehicle_type": "car", "distance_m": 420.5, "driver_score": 4.9, "composite": 4.4795}
], "partial": false}))]
pub(crate) struct Candidates {
    /// City searched.
    pub(crate) city: String,
    /// Weights used.
    pub(crate) weights: Weights,
    /// Best first.
    pub(crate) candidates: Vec<Candidate>,
    /// True when the nearest-driver search read its most members (`search_max_members`)
    /// before finding the drivers to rank, as when most drivers around are stale: the
    /// candidates are ranked among the fresh drivers within `radius_covered_m` only.
    pub(crate) partial: bool,
    /// With `partial`: the distance from the pickup, in metres, up to which drivers were
    /// searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 850.0, minimum = 0.0)]
    pub(crate) radius_covered_m: Option<f64>,
}

/// Ranked candidates and, for a partial search, how far it looked.
#[derive(Debug, Clone)]
pub(crate) struct Ranked {
    /// Best first.
    pub(crate) candidates: Vec<Candidate>,
    /// See [`crate::search::Found::partial_radius_m`].
    pub(crate) partial_radius_m: Option<f64>,
}

/// Validate a `GET /v1/candidates` query, resolve its city and rank its candidates.
pub(crate) async fn candidates(
    store: &Store,
    settings: &Settings,
    cities: &CityIndex,
    tuning: &KnnTuning,
    q: &CandidatesQuery,
) -> Result<Candidates, RankingError> {
    let limit = q.limit.unwrap_or(10);
    let weights = Weights {
        distance_weight: q
            .distance_weight
            .unwrap_or(settings.ranking_distance_weight),
        score_weight: q.score_weight.unwrap_or(settings.ranking_score_weight),
    };
    let mut errors: Vec<FieldError> = GeoPoint::parse(q.lat, q.lon, "").err().unwrap_or_default();
    if limit == 0 || limit > settings.search_max_limit {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {}", settings.search_max_limit),
        ));
    }
    let radius = q.radius_m.unwrap_or(settings.search_default_radius_m);
    if !(radius.is_finite() && radius > 0.0 && radius <= settings.search_max_radius_m) {
        errors.push(FieldError::new(
            "radius_m",
            format!("must be > 0 and at most {} m", settings.search_max_radius_m),
        ));
    }
    for (name, w) in [
        ("distance_weight", weights.distance_weight),
        ("score_weight", weights.score_weight),
    ] {
        if !(w.is_finite() && (0.0..=1e6).contains(&w)) {
            errors.push(FieldError::new(name, "must be between 0 and 1000000"));
        }
    }
    if !errors.is_empty() {
        return Err(RankingError::Validation(errors));
    }
    let center = GeoPoint {
        lat: q.lat,
        lon: q.lon,
    };
    let city = cities.resolve_or_reject(center)?;
    let pool =
        (limit * settings.ranking_pool_factor).clamp(limit, settings.search_max_limit.max(limit));
    let request = RankRequest {
        city: city.id.as_str(),
        center,
        radius_m: radius,
        pool,
        limit,
        vehicle: q.vehicle_type,
        weights,
    };
    let ranked = rank_candidates(store, settings, tuning, &request).await?;
    Ok(Candidates {
        city: city.id.to_string(),
        weights,
        candidates: ranked.candidates,
        partial: ranked.partial_radius_m.is_some(),
        radius_covered_m: ranked.partial_radius_m,
    })
}

/// What to rank: the `pool` nearest available, fresh drivers within `radius_m` of `center`
/// in `city`, of which the best `limit` are returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RankRequest<'a> {
    /// City searched (the one containing `center`).
    pub(crate) city: &'a str,
    /// Pickup point.
    pub(crate) center: GeoPoint,
    /// Largest distance in metres.
    pub(crate) radius_m: f64,
    /// How many nearest drivers are ranked (at least `limit`).
    pub(crate) pool: usize,
    /// How many ranked candidates are returned.
    pub(crate) limit: usize,
    /// Only this vehicle type.
    pub(crate) vehicle: Option<VehicleType>,
    /// Weights of the composite.
    pub(crate) weights: Weights,
}

/// Rank the nearest available drivers by `score_weight × score − distance_weight × km`, best
/// first, a driver without a score counting `ranking_unscored_score` (used by
/// `GET /v1/candidates`; dispatch ranks with the same composite in `lua/claim_offer.lua`).
pub(crate) async fn rank_candidates(
    store: &Store,
    settings: &Settings,
    tuning: &KnnTuning,
    request: &RankRequest<'_>,
) -> Result<Ranked, RankingError> {
    let RankRequest {
        city,
        center,
        radius_m,
        pool,
        limit,
        vehicle,
        weights,
    } = *request;
    let search = Search {
        center,
        area: Area::Radius(radius_m),
        limit: pool,
        statuses: vec![DriverStatus::Available],
        vehicles: vehicle
            .map(|v| vec![v])
            .unwrap_or_else(|| VehicleType::ALL.to_vec()),
    };
    let found = crate::search::search(store, settings, tuning, city, &search).await?;
    let partial_radius_m = found.partial_radius_m;
    let nearby = found.drivers;
    if nearby.is_empty() {
        return Ok(Ranked {
            candidates: Vec::new(),
            partial_radius_m,
        });
    }
    // The composite is computed by Redis with sorted sets, in one MULTI/EXEC (one round trip,
    // atomic; the temporary set is deleted in the same transaction, so it never outlives the
    // call):
    //   s = {driver: -distance_weight × km}                    (ZADD)
    //   s = s ∩ scores, WEIGHTS 1 score_weight                 (ZINTERSTORE: the composite of
    //                                                            every driver with a score)
    //   s += {driver: -distance_weight × km                    (ZADD NX: every other driver
    //         + score_weight × ranking_unscored_score}          counts the unscored score)
    // (The ZUNIONSTORE this replaced took ~15 µs per call in a redis-benchmark here, a ZADD of
    // 20 members ~3 µs.)
    let keys = store.keys();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let s_key = keys.rank_scratch(city, &suffix);
    let scores = keys.scores(city);
    let ids: Vec<&str> = nearby.iter().map(|d| d.driver_id.as_str()).collect();
    // Values in micro-points: integral doubles are parsed and printed by Redis much faster.
    let distance_part: Vec<(i64, &str)> = nearby
        .iter()
        .map(|d| {
            (
                (-weights.distance_weight * d.distance_m * 1_000.0).round() as i64,
                d.driver_id.as_str(),
            )
        })
        .collect();
    // Summed as ZINTERSTORE sums (the distance part, then score × weight), so that an unscored
    // driver's composite is exactly that of a driver whose score is the unscored one.
    // When that sum is integral (the default: 4,250,000 micro-points), it is sent as an
    // integer, which is cheaper to format and to parse; the value is the same.
    let unscored_part = settings.ranking_unscored_score * (weights.score_weight * MICRO);
    let integral = unscored_part.fract() == 0.0 && unscored_part.abs() < 9.0e15;
    let unscored_int: Vec<(i64, &str)> = if integral {
        let part = unscored_part as i64;
        distance_part
            .iter()
            .map(|&(d, id)| (d + part, id))
            .collect()
    } else {
        Vec::new()
    };
    let unscored_float: Vec<(f64, &str)> = if integral {
        Vec::new()
    } else {
        distance_part
            .iter()
            .map(|&(d, id)| (d as f64 + unscored_part, id))
            .collect()
    };
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZADD")
        .arg(&s_key)
        .arg(&distance_part)
        .ignore()
        .cmd("ZINTERSTORE")
        .arg(&s_key)
        .arg(2)
        .arg(&s_key)
        .arg(&scores)
        .arg("WEIGHTS")
        .arg(1)
        .arg(weights.score_weight * MICRO)
        .ignore()
        .cmd("ZADD")
        .arg(&s_key)
        .arg("NX")
        .arg(&unscored_int)
        .arg(&unscored_float)
        .ignore()
        .cmd("ZREVRANGE")
        .arg(&s_key)
        .arg(0)
        .arg(limit - 1)
        .arg("WITHSCORES")
        .cmd("ZMSCORE")
        .arg(&scores)
        .arg(&ids)
        .cmd("DEL")
        .arg(&s_key)
        .ignore();
    let mut conn = store.conn();
    let (ranked, driver_scores): (Vec<(String, f64)>, Vec<Option<f64>>) = pipe
        .query_async(&mut conn)
        .await
        .map_err(redis_error("rank candidates"))?;
    let mut out = Vec::with_capacity(ranked.len());
    for (i, (id, composite)) in ranked.into_iter().enumerate() {
        let Some(pos) = nearby.iter().position(|d| d.driver_id == id) else {
            return Err(anyhow::anyhow!("ranked {id} was not a candidate").into());
        };
        let d = &nearby[pos];
        out.push(Candidate {
            rank: i as u64 + 1,
            driver_id: id,
            lat: d.lat,
            lon: d.lon,
            vehicle_type: d.vehicle_type,
            distance_m: d.distance_m,
            driver_score: driver_scores
                .get(pos)
                .copied()
                .flatten()
                .unwrap_or(settings.ranking_unscored_score),
            composite: composite / MICRO,
        });
    }
    Ok(Ranked {
        candidates: out,
        partial_radius_m,
    })
}
