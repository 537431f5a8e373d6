//! HTTP handlers of the drivers API and the Redis calls behind them.

use actix_web::{HttpResponse, delete, get, post, put, web};
use redis::aio::ConnectionManager;
use utoipa_actix_web::service_config::ServiceConfig;

use super::model::{DriverState, ValidPosition, parse_driver_id};
use super::{
    BatchRequest, BatchResponse, BatchResult, BatchStatus, DELETE_DRIVER, LocationUpdate,
    SET_POSITION, SET_STATUS, StatusUpdate, all_geo_keys, city_script_keys, seen_key, state_key,
};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{CityId, DriverId};
use crate::error::{ApiError, FieldError, Problem, redis_error};
use crate::extract::JsonBody;
use crate::scripts::{self, evalsha, time_ms};
use crate::store::{Keys, Store};

/// How often a script is re-run after it reports that the driver moved city meanwhile.
const MOVE_RETRIES: usize = 4;

/// Result of one `set_position` call.
#[derive(Debug)]
pub enum PositionOutcome {
    /// Stored; the new state.
    Accepted(DriverState),
    /// Older than the stored position (epoch ms of the stored one).
    Stale {
        /// `recorded_at` of the stored position.
        stored_ms: i64,
    },
    /// Too far in the future by Redis' clock.
    Future {
        /// Redis' clock.
        now_ms: i64,
    },
    /// The driver is in another city than the caller passed keys for.
    Moved(String),
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The `EVALSHA set_position` command for one position.
pub fn position_cmd(
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
    prev_city: Option<&str>,
) -> redis::Cmd {
    let mut k = vec![state_key(keys), seen_key(keys, city.as_str())];
    k.extend(all_geo_keys(keys, city.as_str()));
    if let Some(prev) = prev_city {
        k.push(seen_key(keys, prev));
        k.extend(all_geo_keys(keys, prev));
    }
    let args = [
        id.to_string(),
        city.to_string(),
        pos.point.lon.to_string(),
        pos.point.lat.to_string(),
        pos.recorded_ms.to_string(),
        pos.status.map(|s| s.as_str()).unwrap_or("").to_owned(),
        pos.vehicle_type
            .map(|v| v.as_str())
            .unwrap_or("")
            .to_owned(),
        fmt_opt(pos.accuracy_m),
        fmt_opt(pos.heading_deg),
        fmt_opt(pos.speed_mps),
        settings.max_clock_skew_ms.to_string(),
        prev_city.unwrap_or("").to_owned(),
    ];
    evalsha(&SET_POSITION, &k, &args)
}

/// Decode a `set_position` reply.
pub fn decode_position(
    id: &DriverId,
    reply: &[String],
    ttl_ms: u64,
) -> anyhow::Result<PositionOutcome> {
    let num = |i: usize| -> anyhow::Result<i64> {
        reply
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .ok_or_else(|| anyhow::anyhow!("set_position reply {reply:?} lacks a number at {i}"))
    };
    match reply.first().map(String::as_str) {
        Some("ok") => {
            let packed = reply
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("no state in {reply:?}"))?;
            DriverState::from_packed(id.as_str(), packed, num(2)?, ttl_ms)
                .map(PositionOutcome::Accepted)
                .ok_or_else(|| anyhow::anyhow!("undecodable state {packed:?}"))
        }
        Some("stale") => Ok(PositionOutcome::Stale { stored_ms: num(1)? }),
        Some("future") => Ok(PositionOutcome::Future { now_ms: num(1)? }),
        Some("moved") => Ok(PositionOutcome::Moved(
            reply.get(1).cloned().unwrap_or_default(),
        )),
        _ => anyhow::bail!("unexpected set_position reply {reply:?}"),
    }
}

/// Store one position, following the driver across a city change.
pub async fn set_position(
    conn: &mut ConnectionManager,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, ApiError> {
    let mut prev: Option<String> = None;
    for _ in 0..MOVE_RETRIES {
        let cmd = position_cmd(keys, settings, id, city, pos, prev.as_deref());
        let reply: Vec<String> = scripts::run(conn, &SET_POSITION, &cmd)
            .await
            .map_err(redis_error("set_position"))?;
        match decode_position(id, &reply, settings.driver_ttl_ms)? {
            PositionOutcome::Moved(from) => prev = Some(valid_city(&from)?),
            outcome => return Ok(outcome),
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "driver {id} kept moving between cities during {MOVE_RETRIES} attempts"
    )))
}

fn valid_city(name: &str) -> Result<String, ApiError> {
    CityId::parse(name)
        .map(|c| c.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored city {name:?} is invalid: {e}")))
}

fn stale_error(id: &DriverId, sent_ms: i64, stored_ms: i64) -> ApiError {
    ApiError::Conflict {
        code: "stale-position",
        detail: format!(
            "recorded_at {} is older than the stored position of driver {id} ({}); nothing was written",
            super::model::rfc3339_ms(sent_ms),
            super::model::rfc3339_ms(stored_ms)
        ),
    }
}

fn future_error(field: &str, sent_ms: i64, now_ms: i64, skew_ms: u64) -> FieldError {
    FieldError::new(
        field,
        format!(
            "is {} ms ahead of the server clock; at most {skew_ms} ms is allowed",
            sent_ms - now_ms
        ),
    )
}

fn path_driver(raw: &str) -> Result<DriverId, ApiError> {
    parse_driver_id(raw, "driver_id").map_err(|e| ApiError::Validation(vec![e]))
}

/// Store a driver's position (and optionally vehicle type and shift status).
///
/// One Lua script checks the stored `recorded_at` and updates the GEO index of the driver's
/// status and vehicle type, the driver's state and the last-seen index together.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", example = "drv-1")),
    request_body = LocationUpdate,
    responses(
        (status = 200, description = "Stored; the driver's new state", body = DriverState),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Older than the stored position (`stale-position`); nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, `recorded_at` too far in the future, or a point outside every service area (`outside-service-area`); nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/location")]
pub async fn put_location(
    path: web::Path<String>,
    body: JsonBody<LocationUpdate>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let pos = body.0.validate("").map_err(ApiError::Validation)?;
    let city = cities.resolve_or_reject(pos.point)?.id.clone();
    let mut conn = store.conn();
    match set_position(&mut conn, store.keys(), &settings, &id, &city, &pos).await? {
        PositionOutcome::Accepted(state) => Ok(HttpResponse::Ok().json(state)),
        PositionOutcome::Stale { stored_ms } => Err(stale_error(&id, pos.recorded_ms, stored_ms)),
        PositionOutcome::Future { now_ms } => Err(ApiError::Validation(vec![future_error(
            "recorded_at",
            pos.recorded_ms,
            now_ms,
            settings.max_clock_skew_ms,
        )])),
        PositionOutcome::Moved(_) => unreachable!("set_position follows moves"),
    }
}

/// One validated batch item.
struct Prepared {
    index: usize,
    id: DriverId,
    city: CityId,
    pos: ValidPosition,
}

fn item_error(index: usize, errors: Vec<FieldError>) -> String {
    errors
        .into_iter()
        .map(|e| format!("positions[{index}].{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Store many positions in one call.
///
/// Each item is validated on its own (a bad item is `invalid` and never blocks the others);
/// valid items go to Redis in one pipeline of `set_position` scripts, in input order, so a
/// batch costs one round trip (plus one per driver that changed city). A batch over the limit
/// is rejected whole and writes nothing.
#[utoipa::path(
    tag = "drivers",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per position, in input order", body = BatchResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "More positions than `batch_max_positions`, or not a `{positions: [...]}` object; nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/locations/batch")]
pub async fn post_batch(
    body: JsonBody<BatchRequest>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let items = body.0.positions;
    if items.len() > settings.batch_max_positions {
        return Err(ApiError::field(
            "positions",
            format!(
                "{} positions exceed the limit of {} per batch; nothing was written",
                items.len(),
                settings.batch_max_positions
            ),
        ));
    }
    let mut results: Vec<BatchResult> = Vec::with_capacity(items.len());
    let mut prepared: Vec<Prepared> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let raw_id = item
            .get("driver_id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let parsed = crate::extract::parse_json_value::<super::BatchPosition>(item)
            .map_err(|e| item_error(index, e))
            .and_then(|p| {
                let (raw, update) = p.into_parts();
                let id =
                    parse_driver_id(&raw, "driver_id").map_err(|e| item_error(index, vec![e]))?;
                let pos = update.validate("").map_err(|e| item_error(index, e))?;
                let city = cities
                    .resolve(pos.point)
                    .ok_or_else(|| {
                        format!("positions[{index}]: the point lies outside every service area")
                    })?
                    .id
                    .clone();
                Ok(Prepared {
                    index,
                    id,
                    city,
                    pos,
                })
            });
        match parsed {
            Ok(p) => prepared.push(p),
            Err(detail) => {
                results.push(BatchResult {
                    driver_id: raw_id.clone(),
                    status: BatchStatus::Invalid,
                    detail: Some(detail),
                });
                continue;
            }
        }
        results.push(BatchResult {
            driver_id: raw_id,
            status: BatchStatus::Accepted,
            detail: None,
        });
    }
    if !prepared.is_empty() {
        apply_batch(&store, &settings, &prepared, &mut results).await?;
    }
    Ok(HttpResponse::Ok().json(BatchResponse { results }))
}

async fn apply_batch(
    store: &Store,
    settings: &Settings,
    prepared: &[Prepared],
    results: &mut [BatchResult],
) -> Result<(), ApiError> {
    let keys = store.keys();
    let mut pipe = redis::pipe();
    for p in prepared {
        pipe.add_command(position_cmd(keys, settings, &p.id, &p.city, &p.pos, None));
    }
    let mut conn = store.conn();
    let replies: Vec<Vec<String>> = scripts::run_pipeline(&mut conn, &SET_POSITION, &pipe)
        .await
        .map_err(redis_error("batch set_position"))?;
    let mut moved = Vec::new();
    for (p, reply) in prepared.iter().zip(&replies) {
        match decode_position(&p.id, reply, settings.driver_ttl_ms)? {
            PositionOutcome::Moved(_) => moved.push(p),
            outcome => record(results, p, outcome, settings),
        }
    }
    // Drivers that changed city: rare; one script call each, in input order.
    for p in moved {
        let outcome = set_position(&mut conn, keys, settings, &p.id, &p.city, &p.pos).await?;
        record(results, p, outcome, settings);
    }
    Ok(())
}

fn record(
    results: &mut [BatchResult],
    p: &Prepared,
    outcome: PositionOutcome,
    settings: &Settings,
) {
    let result = &mut results[p.index];
    match outcome {
        PositionOutcome::Accepted(_) => result.status = BatchStatus::Accepted,
        PositionOutcome::Stale { stored_ms } => {
            result.status = BatchStatus::Stale;
            result.detail = Some(format!(
                "recorded_at {} is older than the stored position ({})",
                super::model::rfc3339_ms(p.pos.recorded_ms),
                super::model::rfc3339_ms(stored_ms)
            ));
        }
        PositionOutcome::Future { now_ms } => {
            let e = future_error(
                "recorded_at",
                p.pos.recorded_ms,
                now_ms,
                settings.max_clock_skew_ms,
            );
            result.status = BatchStatus::Invalid;
            result.detail = Some(format!("positions[{}].recorded_at: {}", p.index, e.message));
        }
        PositionOutcome::Moved(_) => unreachable!("moves are resolved before recording"),
    }
}

/// Read a driver's state and Redis' clock in one round trip.
pub async fn load_driver(
    store: &Store,
    settings: &Settings,
    id: &DriverId,
) -> Result<Option<DriverState>, ApiError> {
    let mut conn = store.conn();
    let (packed, time): (Option<String>, (i64, i64)) = redis::pipe()
        .cmd("HGET")
        .arg(state_key(store.keys()))
        .arg(id.as_str())
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(redis_error("load driver"))?;
    match packed {
        None => Ok(None),
        Some(packed) => {
            DriverState::from_packed(id.as_str(), &packed, time_ms(time), settings.driver_ttl_ms)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("undecodable state {packed:?} of {id}"))
                })
        }
    }
}

fn not_found(id: &DriverId) -> ApiError {
    ApiError::NotFound(format!("driver {id} does not exist"))
}

/// A driver's state: city, status, last position, when it was recorded and its age.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", example = "drv-1")),
    responses(
        (status = 200, description = "The driver's state", body = DriverState),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/{driver_id}")]
pub async fn get_driver(
    path: web::Path<String>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    match load_driver(&store, &settings, &id).await? {
        Some(state) => Ok(HttpResponse::Ok().json(state)),
        None => Err(not_found(&id)),
    }
}

/// Run a one-city script on a driver, following it if it moves city meanwhile. Returns the
/// script's reply, or `None` when the driver does not exist.
async fn run_on_driver_city(
    store: &Store,
    script: &'static redis::Script,
    id: &DriverId,
    extra_args: &[&str],
) -> Result<Option<Vec<String>>, ApiError> {
    let mut conn = store.conn();
    let keys = store.keys();
    let mut city: Option<String> = redis::cmd("HGET")
        .arg(state_key(keys))
        .arg(id.as_str())
        .query_async::<Option<String>>(&mut conn)
        .await
        .map_err(redis_error("driver city"))?
        .map(|packed| packed.split('|').next().unwrap_or_default().to_owned());
    for _ in 0..MOVE_RETRIES {
        let Some(c) = city.take() else {
            return Ok(None);
        };
        let c = valid_city(&c)?;
        let mut args = vec![id.as_str(), c.as_str()];
        args.extend_from_slice(extra_args);
        let cmd = evalsha(script, &city_script_keys(keys, &c), &args);
        let reply: Vec<String> = scripts::run(&mut conn, script, &cmd)
            .await
            .map_err(redis_error("driver script"))?;
        match reply.first().map(String::as_str) {
            Some("missing") => return Ok(None),
            Some("moved") => city = reply.get(1).cloned(),
            _ => return Ok(Some(reply)),
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "driver {id} kept moving between cities"
    )))
}

/// Set a driver's shift status: `available` or `offline`.
///
/// A driver holding an order (`busy`) cannot change its status (409 `driver-busy`); dispatch
/// frees it. A driver that stopped reporting is not re-indexed until its next position.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", example = "drv-1")),
    request_body = StatusUpdate,
    responses(
        (status = 200, description = "The driver's new state", body = DriverState),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The driver is busy with an order (`driver-busy`); nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or status (`busy` is set by dispatch only)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/status")]
pub async fn put_status(
    path: web::Path<String>,
    body: JsonBody<StatusUpdate>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let reply = run_on_driver_city(&store, &SET_STATUS, &id, &[body.0.status.as_str()])
        .await?
        .ok_or_else(|| not_found(&id))?;
    match reply.first().map(String::as_str) {
        Some("ok") => {
            let now = reply
                .get(2)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0) as i64;
            let state = reply
                .get(1)
                .and_then(|p| DriverState::from_packed(id.as_str(), p, now, settings.driver_ttl_ms))
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("bad set_status reply {reply:?}"))
                })?;
            Ok(HttpResponse::Ok().json(state))
        }
        Some("busy") => Err(ApiError::Conflict {
            code: "driver-busy",
            detail: format!("driver {id} is busy with an order; its status is changed by dispatch"),
        }),
        _ => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected set_status reply {reply:?}"
        ))),
    }
}

/// Remove a driver from every index and forget its state.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", example = "drv-1")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/drivers/{driver_id}")]
pub async fn delete_driver(
    path: web::Path<String>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    run_on_driver_city(&store, &DELETE_DRIVER, &id, &[])
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register this module's routes under `/v1` (after the search routes, so that
/// `/drivers/nearby` is not taken for a driver id).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_location)
        .service(post_batch)
        .service(get_driver)
        .service(put_status)
        .service(delete_driver);
}
