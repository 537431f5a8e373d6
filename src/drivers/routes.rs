//! HTTP handlers of the drivers API and the Redis calls behind them.

use actix_web::{HttpResponse, delete, get, post, put, web};
use redis::aio::ConnectionManager;
use utoipa_actix_web::service_config::ServiceConfig;

use super::model::{DriverState, ValidPosition, parse_driver_id};
use super::{
    BatchRequest, BatchResponse, BatchResult, BatchStatus, DELETE_DRIVER, LocationUpdate,
    SET_POSITION, SET_STATUS, StatusUpdate, all_geo_keys, city_script_keys, scores_key, seen_key,
    state_key,
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

/// Positions stored per `set_position` call in a batch: large enough to amortise the script
/// call, small enough that one call blocks Redis for well under a millisecond.
const POSITIONS_PER_CALL: usize = 20;

/// The `EVALSHA set_position` command for positions of drivers in `city`.
pub fn position_cmd(
    keys: &Keys,
    settings: &Settings,
    city: &CityId,
    items: &[(&DriverId, &ValidPosition)],
    prev_city: Option<&str>,
) -> redis::Cmd {
    let mut k = city_script_keys(keys, city.as_str());
    if let Some(prev) = prev_city {
        k.push(seen_key(keys, prev));
        k.push(scores_key(keys, prev));
        k.extend(all_geo_keys(keys, prev));
    }
    let mut args = Vec::with_capacity(3 + 9 * items.len());
    args.push(settings.max_clock_skew_ms.to_string());
    args.push(prev_city.unwrap_or("").to_owned());
    args.push(city.to_string());
    for (id, pos) in items {
        args.push(id.to_string());
        args.push(pos.point.lon.to_string());
        args.push(pos.point.lat.to_string());
        args.push(pos.recorded_ms.to_string());
        args.push(pos.status.map(|s| s.as_str()).unwrap_or("").to_owned());
        args.push(
            pos.vehicle_type
                .map(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
        );
        args.push(fmt_opt(pos.accuracy_m));
        args.push(fmt_opt(pos.heading_deg));
        args.push(fmt_opt(pos.speed_mps));
    }
    evalsha(&SET_POSITION, &k, &args)
}

/// Decode a `set_position` reply: three entries per position, in order.
pub fn decode_positions(
    ids: &[&DriverId],
    reply: &[String],
    ttl_ms: u64,
) -> anyhow::Result<Vec<PositionOutcome>> {
    anyhow::ensure!(
        reply.len() == 3 * ids.len(),
        "set_position reply {reply:?} does not match {} positions",
        ids.len()
    );
    ids.iter()
        .zip(reply.chunks_exact(3))
        .map(|(id, r)| {
            let num = |s: &str| -> anyhow::Result<i64> {
                s.parse::<f64>()
                    .map(|f| f as i64)
                    .map_err(|_| anyhow::anyhow!("set_position reply {r:?}: {s:?} is not a number"))
            };
            match r[0].as_str() {
                "ok" => DriverState::from_packed(id.as_str(), &r[1], num(&r[2])?, ttl_ms)
                    .map(PositionOutcome::Accepted)
                    .ok_or_else(|| anyhow::anyhow!("undecodable state {:?}", r[1])),
                "stale" => Ok(PositionOutcome::Stale {
                    stored_ms: num(&r[1])?,
                }),
                "future" => Ok(PositionOutcome::Future {
                    now_ms: num(&r[1])?,
                }),
                "moved" => Ok(PositionOutcome::Moved(r[1].clone())),
                other => anyhow::bail!("unexpected set_position outcome {other:?}"),
            }
        })
        .collect()
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
        let cmd = position_cmd(keys, settings, city, &[(id, pos)], prev.as_deref());
        let reply: Vec<String> = scripts::run(conn, &SET_POSITION, &cmd)
            .await
            .map_err(redis_error("set_position"))?;
        match decode_positions(&[id], &reply, settings.driver_ttl_ms)?.pop() {
            Some(PositionOutcome::Moved(from)) => prev = Some(valid_city(&from)?),
            Some(outcome) => return Ok(outcome),
            None => break,
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "driver {id} kept moving between cities during {MOVE_RETRIES} attempts"
    )))
}

/// Store many positions: grouped by city (input order kept within a city), up to
/// `POSITIONS_PER_CALL` per script call, every call in one pipeline, so a batch of 1000 costs
/// one round trip; drivers that changed city are then stored one by one (rare).
pub async fn store_positions(
    conn: &mut ConnectionManager,
    keys: &Keys,
    settings: &Settings,
    items: &[(DriverId, CityId, ValidPosition)],
) -> Result<Vec<PositionOutcome>, ApiError> {
    let mut by_city: Vec<(&CityId, Vec<usize>)> = Vec::new();
    for (i, (_, city, _)) in items.iter().enumerate() {
        match by_city.iter_mut().find(|(c, _)| *c == city) {
            Some((_, list)) => list.push(i),
            None => by_city.push((city, vec![i])),
        }
    }
    let mut pipe = redis::pipe();
    let mut calls: Vec<&[usize]> = Vec::new();
    for (city, indexes) in &by_city {
        for chunk in indexes.chunks(POSITIONS_PER_CALL) {
            let call: Vec<(&DriverId, &ValidPosition)> =
                chunk.iter().map(|&i| (&items[i].0, &items[i].2)).collect();
            pipe.add_command(position_cmd(keys, settings, city, &call, None));
            calls.push(chunk);
        }
    }
    let replies: Vec<Vec<String>> = scripts::run_pipeline(conn, &SET_POSITION, &pipe)
        .await
        .map_err(redis_error("set_position batch"))?;
    let mut outcomes: Vec<Option<PositionOutcome>> = (0..items.len()).map(|_| None).collect();
    for (chunk, reply) in calls.iter().zip(&replies) {
        let ids: Vec<&DriverId> = chunk.iter().map(|&i| &items[i].0).collect();
        for (&i, outcome) in
            chunk
                .iter()
                .zip(decode_positions(&ids, reply, settings.driver_ttl_ms)?)
        {
            outcomes[i] = Some(outcome);
        }
    }
    for (i, (id, city, pos)) in items.iter().enumerate() {
        if matches!(outcomes[i], Some(PositionOutcome::Moved(_))) {
            outcomes[i] = Some(set_position(conn, keys, settings, id, city, pos).await?);
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every item has an outcome"))
        .collect())
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

pub fn path_driver(raw: &str) -> Result<DriverId, ApiError> {
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
        apply_batch(&store, &settings, prepared, &mut results).await?;
    }
    Ok(HttpResponse::Ok().json(BatchResponse { results }))
}

async fn apply_batch(
    store: &Store,
    settings: &Settings,
    prepared: Vec<Prepared>,
    results: &mut [BatchResult],
) -> Result<(), ApiError> {
    let mut indexes = Vec::with_capacity(prepared.len());
    let items: Vec<(DriverId, CityId, ValidPosition)> = prepared
        .into_iter()
        .map(|p| {
            indexes.push(p.index);
            (p.id, p.city, p.pos)
        })
        .collect();
    let mut conn = store.conn();
    let outcomes = store_positions(&mut conn, store.keys(), settings, &items).await?;
    for ((index, (_, _, pos)), outcome) in indexes.into_iter().zip(&items).zip(outcomes) {
        record(
            &mut results[index],
            index,
            pos.recorded_ms,
            outcome,
            settings,
        );
    }
    Ok(())
}

fn record(
    result: &mut BatchResult,
    index: usize,
    sent_ms: i64,
    outcome: PositionOutcome,
    settings: &Settings,
) {
    match outcome {
        PositionOutcome::Accepted(_) => result.status = BatchStatus::Accepted,
        PositionOutcome::Stale { stored_ms } => {
            result.status = BatchStatus::Stale;
            result.detail = Some(format!(
                "recorded_at {} is older than the stored position ({})",
                super::model::rfc3339_ms(sent_ms),
                super::model::rfc3339_ms(stored_ms)
            ));
        }
        PositionOutcome::Future { now_ms } => {
            let e = future_error("recorded_at", sent_ms, now_ms, settings.max_clock_skew_ms);
            result.status = BatchStatus::Invalid;
            result.detail = Some(format!("positions[{index}].recorded_at: {}", e.message));
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

/// The city a driver is in, or `None` for an unknown driver.
pub async fn load_city(store: &Store, id: &DriverId) -> Result<Option<String>, ApiError> {
    let mut conn = store.conn();
    let packed: Option<String> = redis::cmd("HGET")
        .arg(state_key(store.keys()))
        .arg(id.as_str())
        .query_async(&mut conn)
        .await
        .map_err(redis_error("driver city"))?;
    Ok(packed.map(|p| p.split('|').next().unwrap_or_default().to_owned()))
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

/// Run a one-city script on a driver, following it if it moves city meanwhile: the script gets
/// `keys_for(city)` as KEYS and `driver_id, city, extra_args…` as ARGV, and answers
/// `{'missing'}`, `{'moved', city}` or anything else. Returns the city and that reply, or
/// `None` when the driver does not exist.
pub async fn run_on_driver_city(
    store: &Store,
    script: &'static redis::Script,
    keys_for: fn(&Keys, &str) -> Vec<String>,
    id: &DriverId,
    extra_args: &[&str],
) -> Result<Option<(String, Vec<String>)>, ApiError> {
    let mut conn = store.conn();
    let keys = store.keys();
    let mut city = load_city(store, id).await?;
    for _ in 0..MOVE_RETRIES {
        let Some(c) = city.take() else {
            return Ok(None);
        };
        let c = valid_city(&c)?;
        let mut args = vec![id.as_str(), c.as_str()];
        args.extend_from_slice(extra_args);
        let cmd = evalsha(script, &keys_for(keys, &c), &args);
        let reply: Vec<String> = scripts::run(&mut conn, script, &cmd)
            .await
            .map_err(redis_error("driver script"))?;
        match reply.first().map(String::as_str) {
            Some("missing") => return Ok(None),
            Some("moved") => city = reply.get(1).cloned(),
            _ => return Ok(Some((c, reply))),
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
    let (_, reply) = run_on_driver_city(
        &store,
        &SET_STATUS,
        city_script_keys,
        &id,
        &[body.0.status.as_str()],
    )
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

/// Remove a driver from every index and forget its state (not while it holds an order).
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", example = "drv-1")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The driver holds an order (`driver-busy`); nothing deleted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/drivers/{driver_id}")]
pub async fn delete_driver(
    path: web::Path<String>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let (_, reply) = run_on_driver_city(&store, &DELETE_DRIVER, city_script_keys, &id, &[])
        .await?
        .ok_or_else(|| not_found(&id))?;
    if reply.first().map(String::as_str) == Some("busy") {
        return Err(ApiError::Conflict {
            code: "driver-busy",
            detail: format!(
                "driver {id} holds an order; cancel or finish it first; nothing was deleted"
            ),
        });
    }
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
