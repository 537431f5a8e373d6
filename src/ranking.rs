//! Driver ranking with sorted sets: per-city driver scores (set, raise-only, increment), the
//! paginated leaderboard, a driver's rank with its neighbours, and explainable candidate
//! ranking that combines distance (from nearby search) with the driver score.
//!
//! Keys: `{prefix}:{city}:scores` (driver → score; the leaderboard). A driver changing city
//! takes its score along (`lua/set_position.lua`). Ties on the leaderboard follow Redis: among
//! equal scores, the driver id that sorts last (byte order) ranks first.

use crate::store::scripts::{RANK_AROUND, SET_SCORE};

use actix_web::{HttpResponse, get, post, put, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::DriverId;
use crate::domain::FieldError;
use crate::drivers::{DriverStatus, VehicleType, run_on_driver_city};
use crate::http::drivers::path_driver;
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::{JsonBody, QueryParams};
use crate::search::{Area, KnnTuning, Search};
use crate::store::scripts::{self, evalsha};
use crate::store::{Keys, Store};

/// Composite values are kept in Redis in millionths of a point.
const MICRO: f64 = 1_000_000.0;

/// How a score is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScoreMode {
    /// Replace the score.
    #[default]
    Set,
    /// Only raise it (ZADD GT): a lower score is ignored.
    Gt,
}

/// `PUT /v1/drivers/{driver_id}/score` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"score": 4.8, "mode": "gt"}))]
pub struct ScoreUpdate {
    /// The score (finite).
    pub score: f64,
    /// `set` (default) or `gt` (only raise).
    #[serde(default)]
    pub mode: ScoreMode,
}

/// `POST /v1/drivers/{driver_id}/score/increment` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"by": 0.1}))]
pub struct ScoreIncrement {
    /// Amount to add (negative subtracts).
    pub by: f64,
}

/// A driver's score after a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"driver_id": "drv-1", "city": "paris", "score": 4.8, "changed": true}))]
pub struct ScoreView {
    /// Driver id.
    pub driver_id: String,
    /// City whose leaderboard holds the score.
    pub city: String,
    /// The score now.
    pub score: f64,
    /// Whether this call changed it (false when `gt` met a higher score).
    pub changed: bool,
}

fn finite(field: &str, v: f64) -> Result<f64, ApiError> {
    if v.is_finite() && v.abs() < 1e15 {
        Ok(v)
    } else {
        Err(ApiError::field(
            field,
            "must be a finite number below 1e15 in magnitude",
        ))
    }
}

async fn write_score(
    store: &Store,
    id: &DriverId,
    mode: &str,
    value: f64,
) -> Result<ScoreView, ApiError> {
    let value = value.to_string();
    let (city, reply) =
        run_on_driver_city(store, &SET_SCORE, Keys::score_script, id, &[mode, &value])
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("driver {id} does not exist")))?;
    match (
        reply.first().map(String::as_str),
        reply.get(1),
        reply.get(2),
    ) {
        (Some("ok"), Some(score), Some(changed)) => Ok(ScoreView {
            driver_id: id.to_string(),
            city,
            score: score
                .parse()
                .map_err(|_| ApiError::Internal(anyhow::anyhow!("bad score {score:?}")))?,
            changed: changed == "1",
        }),
        _ => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected set_score reply {reply:?}"
        ))),
    }
}

const DRIVER_PARAM: &str = "1–64 characters of [A-Za-z0-9_-]";

/// Set a driver's score (`mode: set`) or raise it only (`mode: gt`, ZADD GT).
///
/// The score lives in the sorted set of the city the driver is in; it is the leaderboard and an
/// input of candidate ranking.
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, example = "drv-1")),
    request_body = ScoreUpdate,
    responses(
        (status = 200, description = "The score now", body = ScoreView),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or score", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/score")]
pub async fn put_score(
    path: web::Path<String>,
    body: JsonBody<ScoreUpdate>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let score = finite("score", body.0.score)?;
    let mode = match body.0.mode {
        ScoreMode::Set => "set",
        ScoreMode::Gt => "gt",
    };
    Ok(HttpResponse::Ok().json(write_score(&store, &id, mode, score).await?))
}

/// Add to a driver's score (ZINCRBY); answers the new score.
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, example = "drv-1")),
    request_body = ScoreIncrement,
    responses(
        (status = 200, description = "The new score", body = ScoreView),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or amount", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/drivers/{driver_id}/score/increment")]
pub async fn increment_score(
    path: web::Path<String>,
    body: JsonBody<ScoreIncrement>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let by = finite("by", body.0.by)?;
    Ok(HttpResponse::Ok().json(write_score(&store, &id, "incr", by).await?))
}

/// One leaderboard line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RankedDriver {
    /// 1-based rank, highest score first.
    pub rank: u64,
    /// Driver id.
    pub driver_id: String,
    /// Score.
    pub score: f64,
}

/// Leaderboard page query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page (default 1).
    pub page: Option<u64>,
    /// Entries per page (default 10, at most 100).
    pub size: Option<u64>,
}

/// `GET /v1/cities/{city}/leaderboard` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"entries": [{"rank": 1, "driver_id": "drv-7", "score": 4.99}], "page": 1, "size": 10, "total": 2000}))]
pub struct Leaderboard {
    /// This page's entries, highest score first.
    pub entries: Vec<RankedDriver>,
    /// Page number.
    pub page: u64,
    /// Page size.
    pub size: u64,
    /// Drivers on the leaderboard.
    pub total: u64,
}

fn pairs(flat: &[String], first_rank0: u64) -> Result<Vec<RankedDriver>, ApiError> {
    flat.chunks_exact(2)
        .enumerate()
        .map(|(i, c)| {
            Ok(RankedDriver {
                rank: first_rank0 + i as u64 + 1,
                driver_id: c[0].clone(),
                score: c[1]
                    .parse()
                    .map_err(|_| ApiError::Internal(anyhow::anyhow!("bad score {:?}", c[1])))?,
            })
        })
        .collect()
}

/// A city's leaderboard, highest score first, paginated. Ties: among equal scores the driver id
/// that sorts last (byte order) ranks first, as Redis orders them.
#[utoipa::path(
    tag = "ranking",
    params(("city" = String, Path, description = "City id", example = "paris"), PageQuery),
    responses(
        (status = 200, description = "One page of the leaderboard (empty past the end)", body = Leaderboard),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid page or size", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/cities/{city}/leaderboard")]
pub async fn leaderboard(
    path: web::Path<String>,
    query: QueryParams<PageQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let city = cities
        .get(&path)
        .ok_or_else(|| ApiError::NotFound(format!("city {:?} does not exist", path.as_str())))?;
    let page = query.0.page.unwrap_or(1);
    let size = query.0.size.unwrap_or(10);
    let mut errors = Vec::new();
    if page == 0 || page > 1_000_000 {
        errors.push(FieldError::new("page", "must be between 1 and 1000000"));
    }
    if size == 0 || size > settings.page_max_size {
        errors.push(FieldError::new(
            "size",
            format!("must be between 1 and {}", settings.page_max_size),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let start = (page - 1) * size;
    let key = store.keys().scores(city.id.as_str());
    let mut conn = store.conn();
    let (flat, total): (Vec<String>, u64) = redis::pipe()
        .cmd("ZREVRANGE")
        .arg(&key)
        .arg(start)
        .arg(start + size - 1)
        .arg("WITHSCORES")
        .cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(redis_error("leaderboard"))?;
    Ok(HttpResponse::Ok().json(Leaderboard {
        entries: pairs(&flat, start)?,
        page,
        size,
        total,
    }))
}

/// Rank query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AroundQuery {
    /// Neighbours to show above and below (default 5, at most 50).
    pub around: Option<u64>,
}

/// `GET /v1/drivers/{driver_id}/rank` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"driver_id": "drv-1", "city": "paris", "rank": 3, "score": 4.9, "neighbors": [
    {"rank": 2, "driver_id": "drv-9", "score": 4.95}, {"rank": 3, "driver_id": "drv-1", "score": 4.9}, {"rank": 4, "driver_id": "drv-4", "score": 4.8}
]}))]
pub struct RankView {
    /// Driver id.
    pub driver_id: String,
    /// City of the leaderboard.
    pub city: String,
    /// 1-based rank.
    pub rank: u64,
    /// Score.
    pub score: f64,
    /// The drivers ranked up to `around` places above and below, the driver itself included.
    pub neighbors: Vec<RankedDriver>,
}

/// A driver's rank and score on its city's leaderboard, with its neighbours (ZREVRANK +
/// ZREVRANGE, read atomically by one script).
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, example = "drv-1"), AroundQuery),
    responses(
        (status = 200, description = "Rank, score and neighbours", body = RankView),
        (status = 404, description = "No such driver, or the driver has no score", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or `around`", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/{driver_id}/rank")]
pub async fn rank(
    path: web::Path<String>,
    query: QueryParams<AroundQuery>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let around = query.0.around.unwrap_or(5);
    if around > 50 {
        return Err(ApiError::field("around", "must be at most 50"));
    }
    let city = crate::drivers::load_city(&store, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("driver {id} does not exist")))?;
    let cmd = evalsha(
        &RANK_AROUND,
        &[store.keys().scores(&city)],
        &[id.to_string(), around.to_string()],
    );
    let mut conn = store.conn();
    let reply: Vec<String> = scripts::run(&mut conn, &RANK_AROUND, &cmd)
        .await
        .map_err(redis_error("rank"))?;
    if reply.len() < 3 {
        return Err(ApiError::NotFound(format!(
            "driver {id} has no score in {city}"
        )));
    }
    let bad = |s: &str| ApiError::Internal(anyhow::anyhow!("bad rank reply value {s:?}"));
    let rank0: u64 = reply[0].parse().map_err(|_| bad(&reply[0]))?;
    let first0: u64 = reply[2].parse().map_err(|_| bad(&reply[2]))?;
    Ok(HttpResponse::Ok().json(RankView {
        driver_id: id.to_string(),
        city,
        rank: rank0 + 1,
        score: reply[1].parse().map_err(|_| bad(&reply[1]))?,
        neighbors: pairs(&reply[3..], first0)?,
    }))
}

/// Candidates query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CandidatesQuery {
    /// Latitude of the pickup.
    #[param(example = 48.8566)]
    pub lat: f64,
    /// Longitude of the pickup.
    #[param(example = 2.3522)]
    pub lon: f64,
    /// How many ranked candidates (default 10, at most `search_max_limit`).
    pub limit: Option<usize>,
    /// Only this vehicle type.
    pub vehicle_type: Option<VehicleType>,
    /// Maximum distance in metres (default `search_default_radius_m`).
    pub radius_m: Option<f64>,
    /// Override of `ranking_distance_weight` (composite points lost per km).
    pub distance_weight: Option<f64>,
    /// Override of `ranking_score_weight` (composite points per score point).
    pub score_weight: Option<f64>,
}

/// One ranked candidate, with what its rank is made of.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// 1-based position in the ranking.
    pub rank: u64,
    /// Driver id.
    pub driver_id: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Vehicle type.
    pub vehicle_type: VehicleType,
    /// Distance from the pickup in metres.
    pub distance_m: f64,
    /// The driver's score (0 when it has none).
    pub driver_score: f64,
    /// `score_weight × driver_score − distance_weight × distance_km`; higher ranks first.
    pub composite: f64,
}

/// Weights used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Weights {
    /// Composite points lost per km of distance.
    pub distance_weight: f64,
    /// Composite points per point of driver score.
    pub score_weight: f64,
}

/// `GET /v1/candidates` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "weights": {"distance_weight": 1.0, "score_weight": 1.0}, "candidates": [
    {"rank": 1, "driver_id": "drv-1", "lat": 48.857, "lon": 2.353, "vehicle_type": "car", "distance_m": 420.5, "driver_score": 4.9, "composite": 4.4795}
]}))]
pub struct Candidates {
    /// City searched.
    pub city: String,
    /// Weights used.
    pub weights: Weights,
    /// Best first.
    pub candidates: Vec<Candidate>,
}

/// Rank the nearest available drivers by a composite of distance and driver score.
///
/// Takes the `limit × ranking_pool_factor` nearest available, fresh drivers (nearby search),
/// then Redis computes `score_weight × score − distance_weight × km` with sorted sets
/// (ZADD, ZINTERSTORE with WEIGHTS against the score set, ZADD NX for drivers without a
/// score, into a temporary set deleted in the same MULTI/EXEC) and reads it back best first.
/// Ties: the driver id that sorts last ranks first.
#[utoipa::path(
    tag = "ranking",
    params(CandidatesQuery),
    responses(
        (status = 200, description = "Ranked candidates with distance, score and composite", body = Candidates),
        (status = 422, description = "Invalid parameter, or a point outside every service area", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/candidates")]
pub async fn candidates(
    query: QueryParams<CandidatesQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
    tuning: web::Data<KnnTuning>,
) -> Result<HttpResponse, ApiError> {
    let q = query.0;
    let limit = q.limit.unwrap_or(10);
    let weights = Weights {
        distance_weight: q
            .distance_weight
            .unwrap_or(settings.ranking_distance_weight),
        score_weight: q.score_weight.unwrap_or(settings.ranking_score_weight),
    };
    let mut errors: Vec<FieldError> = crate::domain::GeoPoint::parse(q.lat, q.lon, "")
        .err()
        .unwrap_or_default();
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
        return Err(ApiError::Validation(errors));
    }
    let center = crate::domain::GeoPoint {
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
    let candidates = rank_candidates(&store, &settings, &tuning, &request).await?;
    Ok(HttpResponse::Ok().json(Candidates {
        city: city.id.to_string(),
        weights,
        candidates,
    }))
}

/// What to rank: the `pool` nearest available, fresh drivers within `radius_m` of `center`
/// in `city`, of which the best `limit` are returned.
#[derive(Debug, Clone, Copy)]
pub struct RankRequest<'a> {
    /// City searched (the one containing `center`).
    pub city: &'a str,
    /// Pickup point.
    pub center: crate::domain::GeoPoint,
    /// Largest distance in metres.
    pub radius_m: f64,
    /// How many nearest drivers are ranked (at least `limit`).
    pub pool: usize,
    /// How many ranked candidates are returned.
    pub limit: usize,
    /// Only this vehicle type.
    pub vehicle: Option<VehicleType>,
    /// Weights of the composite.
    pub weights: Weights,
}

/// Rank the nearest available drivers by `score_weight × score − distance_weight × km`, best
/// first (used by `GET /v1/candidates` and by dispatch).
pub async fn rank_candidates(
    store: &Store,
    settings: &Settings,
    tuning: &KnnTuning,
    request: &RankRequest<'_>,
) -> Result<Vec<Candidate>, ApiError> {
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
    let nearby = crate::search::search(store, settings, tuning, city, &search).await?;
    if nearby.is_empty() {
        return Ok(Vec::new());
    }
    // The composite is computed by Redis with sorted sets, in one MULTI/EXEC (one round trip,
    // atomic; the temporary set is deleted in the same transaction, so it never outlives the
    // call):
    //   s = {driver: -distance_weight × km}                    (ZADD)
    //   s = s ∩ scores, WEIGHTS 1 score_weight                 (ZINTERSTORE: the composite of
    //                                                            every driver with a score)
    //   s += {driver: -distance_weight × km} for the others    (ZADD NX: no score counts 0)
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
        .arg(&distance_part)
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
            return Err(ApiError::Internal(anyhow::anyhow!(
                "ranked {id} was not a candidate"
            )));
        };
        let d = &nearby[pos];
        out.push(Candidate {
            rank: i as u64 + 1,
            driver_id: id,
            lat: d.lat,
            lon: d.lon,
            vehicle_type: d.vehicle_type,
            distance_m: d.distance_m,
            driver_score: driver_scores.get(pos).copied().flatten().unwrap_or(0.0),
            composite: composite / MICRO,
        });
    }
    Ok(out)
}

/// Register this module's routes under `/v1` (before the drivers module's `/drivers/{id}`).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_score)
        .service(increment_score)
        .service(rank)
        .service(leaderboard)
        .service(candidates);
}
