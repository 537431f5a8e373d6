//! HTTP handlers of the drivers API and the Redis calls behind them.

use crate::store::scripts::{CITY_CAS, DELETE_DRIVER, SET_POSITION, SET_STATUS};
use actix_web::{HttpResponse, delete, get, post, put, web};
use utoipa_actix_web::service_config::ServiceConfig;

use super::model::{DriverState, ValidPosition, parse_driver_id};
use super::{
    BatchRequest, BatchResponse, BatchResult, BatchStatus, LocationUpdate, StatusUpdate,
    driver_bucket,
};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::FieldError;
use crate::domain::{CityId, DriverId};
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::JsonBody;
use crate::store::scripts::{self, evalsha, time_ms};
use crate::store::{Keys, RedisConn, Store};

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
    /// The driver has no state in the city the call was for (nothing written).
    Unknown,
    /// Nothing written: concurrent updates kept moving the driver between cities; retry.
    Contended,
    /// (mode `leave`) The driver was removed from the city; its previous packed state and
    /// score, to carry to the new city.
    Left {
        /// The packed state it had.
        packed: String,
        /// Its score, if it had one.
        score: Option<String>,
    },
}

/// How `set_position.lua` treats a driver (see the script's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionMode {
    /// Update a driver the city knows; answer `Unknown` otherwise.
    Known,
    /// Create the driver in the city when it is not there.
    Create,
    /// The position lies in another city: remove the driver from this one (unless busy).
    Leave,
}

impl PositionMode {
    fn as_str(self) -> &'static str {
        match self {
            PositionMode::Known => "",
            PositionMode::Create => "create",
            PositionMode::Leave => "leave",
        }
    }
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
    city: &str,
    items: &[(&DriverId, &ValidPosition)],
    mode: PositionMode,
) -> redis::Cmd {
    let mut k = keys.city_script(city);
    k.extend(
        items
            .iter()
            .map(|(id, _)| keys.seen_bucket(city, driver_bucket(id.as_str()))),
    );
    let mut args = Vec::with_capacity(2 + 9 * items.len());
    args.push(settings.max_clock_skew_ms.to_string());
    args.push(mode.as_str().to_owned());
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
    city: &str,
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
                "ok" => DriverState::from_packed(id.as_str(), city, &r[1], num(&r[2])?, ttl_ms)
                    .map(PositionOutcome::Accepted)
                    .ok_or_else(|| anyhow::anyhow!("undecodable state {:?}", r[1])),
                "stale" => Ok(PositionOutcome::Stale {
                    stored_ms: num(&r[1])?,
                }),
                "future" => Ok(PositionOutcome::Future {
                    now_ms: num(&r[1])?,
                }),
                "unknown" => Ok(PositionOutcome::Unknown),
                "left" => Ok(PositionOutcome::Left {
                    packed: r[1].clone(),
                    score: Some(r[2].clone()).filter(|s| !s.is_empty()),
                }),
                other => anyhow::bail!("unexpected set_position outcome {other:?}"),
            }
        })
        .collect()
}

async fn run_one(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &str,
    pos: &ValidPosition,
    mode: PositionMode,
) -> Result<PositionOutcome, ApiError> {
    let cmd = position_cmd(keys, settings, city, &[(id, pos)], mode);
    let reply: Vec<String> = scripts::run(conn, &SET_POSITION, &cmd)
        .await
        .map_err(redis_error("set_position"))?;
    decode_positions(city, &[id], &reply, settings.driver_ttl_ms)?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("empty set_position reply")))
}

/// A directory entry: `city|recorded_ms` of the position that last moved (or created) the
/// driver.
fn entry(city: &str, ms: i64) -> String {
    format!("{city}|{ms}")
}

/// Split a directory entry into its city and time (0 when absent).
fn parse_entry(value: &str) -> (&str, i64) {
    match value.split_once('|') {
        Some((city, ms)) => (city, ms.parse().unwrap_or(0)),
        None => (value, 0),
    }
}

/// The directory entries of `ids`, in order (one pipelined `HGET` each: they lie in different
/// buckets).
async fn directory_entries(
    conn: &mut RedisConn,
    keys: &Keys,
    ids: &[&str],
) -> Result<Vec<Option<String>>, ApiError> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET").arg(keys.driver_directory(id)).arg(*id);
    }
    pipe.query_async(conn)
        .await
        .map_err(redis_error("driver directory"))
}

/// Compare-and-set directory entries: `(driver, expected, new)` as `lua/driver_city_cas.lua`
/// takes them; one `true` per entry that was as expected and was set.
async fn city_cas(
    conn: &mut RedisConn,
    keys: &Keys,
    entries: &[(&str, &str, &str)],
) -> Result<Vec<bool>, ApiError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<&str> = entries.iter().flat_map(|(a, b, c)| [*a, *b, *c]).collect();
    let k: Vec<String> = entries
        .iter()
        .map(|(id, _, _)| keys.driver_directory(id))
        .collect();
    let cmd = evalsha(&CITY_CAS, &k, &args);
    let applied: Vec<i64> = scripts::run(conn, &CITY_CAS, &cmd)
        .await
        .map_err(redis_error("driver directory"))?;
    Ok(applied.into_iter().map(|a| a == 1).collect())
}

/// Store one position, following the driver across a city change.
///
/// The common case (a driver the city already holds) is one script call. A driver the city
/// does not hold goes through the directory first ([`arrive`]).
pub async fn set_position(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, ApiError> {
    match run_one(
        conn,
        keys,
        settings,
        id,
        city.as_str(),
        pos,
        PositionMode::Known,
    )
    .await?
    {
        PositionOutcome::Unknown => arrive(conn, keys, settings, id, city, pos).await,
        other => Ok(other),
    }
}

/// Bring a driver that `city` does not hold into it. The directory decides who may: a driver
/// is created in a city only by a caller that found the directory naming that city, or made it
/// name it with a compare-and-set (from no entry, or from the previous city, which the caller
/// then leaves: stale and busy checks there, status, vehicle type and score carried over).
/// A move that cannot happen (stale, or busy in its order's city) sets the entry back. After
/// creating, the entry is read again: if a concurrent move took it elsewhere meanwhile, the
/// driver is removed from this city again, so it ends up in one city. Each step is atomic in
/// its own slot; a crash between leaving and creating drops the driver (its score too) until
/// its next position, which recreates it.
async fn arrive(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, ApiError> {
    // One arrival per driver at a time (a short lease on a per-driver key, `SET NX PX` with a
    // random token, released by compare-and-delete): two concurrent moves of one driver could
    // otherwise each leave and create and interleave. Positions within a city never take it.
    let lease_key = keys.driver_move_lease(id);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let deadline = std::time::Instant::now() + MOVE_LEASE;
    loop {
        if crate::lock::take(conn, &lease_key, &token, MOVE_LEASE)
            .await
            .map_err(redis_error("driver move lease"))?
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Ok(PositionOutcome::Contended);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let result = arrive_leased(conn, keys, settings, id, city, pos).await;
    if let Err(err) = crate::lock::release_token(conn, &lease_key, &token).await {
        tracing::warn!(driver = %id, error = %err, "releasing a move lease failed; it expires by itself");
    }
    result
}

/// How long a driver's move lease lasts if its holder dies.
const MOVE_LEASE: std::time::Duration = std::time::Duration::from_secs(2);

async fn arrive_leased(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, ApiError> {
    let mut pos = pos.clone();
    let mut score = None;
    let mut claimed = false;
    let mine = entry(city.as_str(), pos.recorded_ms);
    for _ in 0..MOVE_RETRIES {
        let known: Option<String> = redis::cmd("HGET")
            .arg(keys.driver_directory(id.as_str()))
            .arg(id.as_str())
            .query_async(conn)
            .await
            .map_err(redis_error("driver directory"))?;
        let Some(known) = known else {
            if city_cas(conn, keys, &[(id.as_str(), "", &mine)]).await?[0] {
                claimed = true;
                break;
            }
            continue;
        };
        let (known_city, known_ms) = parse_entry(&known);
        // A later position already moved the driver (perhaps into this very city, its
        // creation still under way): this one is out of order.
        if pos.recorded_ms < known_ms {
            return Ok(PositionOutcome::Stale {
                stored_ms: known_ms,
            });
        }
        if known_city == city.as_str() {
            claimed = true;
            break;
        }
        let prev = valid_city(known_city)?;
        if !city_cas(conn, keys, &[(id.as_str(), &known, &mine)]).await?[0] {
            continue;
        }
        claimed = true;
        match run_one(conn, keys, settings, id, &prev, &pos, PositionMode::Leave).await? {
            PositionOutcome::Unknown => {}
            PositionOutcome::Left { packed, score: s } => {
                // The packed state's status and vehicle codes (see `DriverState::from_packed`).
                let mut f = packed.split('|').skip(3);
                if pos.status.is_none()
                    && f.next().and_then(super::DriverStatus::from_code)
                        == Some(super::DriverStatus::Offline)
                {
                    pos.status = Some(super::ShiftStatus::Offline);
                }
                if pos.vehicle_type.is_none() {
                    pos.vehicle_type = f.next().and_then(super::VehicleType::from_code);
                }
                score = s;
            }
            // Stale, too far ahead, or busy (kept in its order's city): it stays there.
            other => {
                city_cas(conn, keys, &[(id.as_str(), &mine, &known)]).await?;
                return Ok(other);
            }
        }
        break;
    }
    if !claimed {
        return Ok(PositionOutcome::Contended);
    }
    let mut pipe = redis::pipe();
    pipe.add_command(position_cmd(
        keys,
        settings,
        city.as_str(),
        &[(id, &pos)],
        PositionMode::Create,
    ));
    if let Some(score) = &score {
        pipe.cmd("ZADD")
            .arg(keys.scores(city.as_str()))
            .arg("NX")
            .arg(score)
            .arg(id.as_str())
            .ignore();
    }
    let (reply,): (Vec<String>,) = scripts::run_pipeline(conn, &SET_POSITION, &pipe)
        .await
        .map_err(redis_error("set_position"))?;
    let outcome = decode_positions(city.as_str(), &[id], &reply, settings.driver_ttl_ms)?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("empty set_position reply")))?;
    if matches!(outcome, PositionOutcome::Accepted(_)) {
        confirm_created(conn, keys, settings, &[(id, city.as_str(), &pos)]).await?;
    }
    Ok(outcome)
}

/// After creating drivers, check that the directory still names the city each was created
/// in; where a concurrent move took the entry elsewhere meanwhile, remove the driver from the
/// city again (`leave`), so that no driver is held by two cities.
async fn confirm_created(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    created: &[(&DriverId, &str, &ValidPosition)],
) -> Result<(), ApiError> {
    if created.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = created.iter().map(|(id, _, _)| id.as_str()).collect();
    let now = directory_entries(conn, keys, &ids).await?;
    for ((id, city, pos), now) in created.iter().zip(now) {
        if now.as_deref().map(|e| parse_entry(e).0) != Some(*city) {
            tracing::info!(driver = %id, city, now = ?now, "driver moved elsewhere while created; removing it from this city");
            run_one(conn, keys, settings, id, city, pos, PositionMode::Leave).await?;
        }
    }
    Ok(())
}

/// Run `mode` calls for `items` (indexes into `all`), grouped by city, every city's calls in
/// one pipeline (a pipeline stays in one Cluster slot), the cities concurrently.
async fn run_grouped(
    conn: &RedisConn,
    keys: &Keys,
    settings: &Settings,
    all: &[(DriverId, CityId, ValidPosition)],
    items: &[usize],
    mode: PositionMode,
) -> Result<Vec<(usize, PositionOutcome)>, ApiError> {
    let mut by_city: Vec<(&CityId, Vec<usize>)> = Vec::new();
    for &i in items {
        let city = &all[i].1;
        match by_city.iter_mut().find(|(c, _)| *c == city) {
            Some((_, list)) => list.push(i),
            None => by_city.push((city, vec![i])),
        }
    }
    let calls = by_city.into_iter().map(|(city, indexes)| {
        let mut conn = conn.clone();
        async move {
            let mut pipe = redis::pipe();
            let chunks: Vec<&[usize]> = indexes.chunks(POSITIONS_PER_CALL).collect();
            for chunk in &chunks {
                let call: Vec<(&DriverId, &ValidPosition)> =
                    chunk.iter().map(|&i| (&all[i].0, &all[i].2)).collect();
                pipe.add_command(position_cmd(keys, settings, city.as_str(), &call, mode));
            }
            let replies: Vec<Vec<String>> = scripts::run_pipeline(&mut conn, &SET_POSITION, &pipe)
                .await
                .map_err(redis_error("set_position batch"))?;
            let mut out = Vec::with_capacity(indexes.len());
            for (chunk, reply) in chunks.iter().zip(&replies) {
                let ids: Vec<&DriverId> = chunk.iter().map(|&i| &all[i].0).collect();
                let decoded = decode_positions(city.as_str(), &ids, reply, settings.driver_ttl_ms)?;
                out.extend(chunk.iter().copied().zip(decoded));
            }
            Ok::<_, ApiError>(out)
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for part in futures_util::future::join_all(calls).await {
        out.extend(part?);
    }
    Ok(out)
}

/// Store many positions: grouped by city (input order kept within a city), up to
/// `POSITIONS_PER_CALL` per script call, one pipeline per city, so a batch of 1000 drivers the
/// cities already hold costs one round trip per city. Drivers new to every city then cost
/// four more (directory `HMGET`, one compare-and-set claiming their entries, the creations,
/// the directory re-check); drivers changing city are moved one by one ([`arrive`]; rare).
pub async fn store_positions(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    items: &[(DriverId, CityId, ValidPosition)],
) -> Result<Vec<PositionOutcome>, ApiError> {
    let mut outcomes: Vec<Option<PositionOutcome>> = (0..items.len()).map(|_| None).collect();
    let every: Vec<usize> = (0..items.len()).collect();
    let mut unknown = Vec::new();
    for (i, outcome) in
        run_grouped(conn, keys, settings, items, &every, PositionMode::Known).await?
    {
        match outcome {
            PositionOutcome::Unknown => unknown.push(i),
            other => outcomes[i] = Some(other),
        }
    }
    if !unknown.is_empty() {
        let ids: Vec<&str> = unknown.iter().map(|&i| items[i].0.as_str()).collect();
        let known = directory_entries(conn, keys, &ids).await?;
        // New drivers claim their directory entry in one call; drivers the directory already
        // places in their city are created directly; the rest (moves, lost claims) go one by one.
        let mut create = Vec::new();
        let mut claims = Vec::new();
        let mut one_by_one = Vec::new();
        for (&i, known) in unknown.iter().zip(known) {
            match known.as_deref().map(parse_entry) {
                Some((c, ms)) if c == items[i].1.as_str() && items[i].2.recorded_ms >= ms => {
                    create.push(i)
                }
                None => claims.push(i),
                Some(_) => one_by_one.push(i),
            }
        }
        let values: Vec<String> = claims
            .iter()
            .map(|&i| entry(items[i].1.as_str(), items[i].2.recorded_ms))
            .collect();
        let entries: Vec<(&str, &str, &str)> = claims
            .iter()
            .zip(&values)
            .map(|(&i, v)| (items[i].0.as_str(), "", v.as_str()))
            .collect();
        for (&i, won) in claims.iter().zip(city_cas(conn, keys, &entries).await?) {
            if won {
                create.push(i);
            } else {
                one_by_one.push(i);
            }
        }
        if !create.is_empty() {
            let created =
                run_grouped(conn, keys, settings, items, &create, PositionMode::Create).await?;
            let mut check = Vec::new();
            for (i, outcome) in created {
                if matches!(outcome, PositionOutcome::Accepted(_)) {
                    check.push((&items[i].0, items[i].1.as_str(), &items[i].2));
                }
                outcomes[i] = Some(outcome);
            }
            confirm_created(conn, keys, settings, &check).await?;
        }
        for i in one_by_one {
            let (id, city, pos) = &items[i];
            outcomes[i] = Some(arrive(conn, keys, settings, id, city, pos).await?);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a position got no outcome"))))
        .collect()
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
/// status, the driver's state and the last-seen index together.
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
        PositionOutcome::Contended => Err(ApiError::Unavailable(format!(
            "driver {id} is being moved between cities by concurrent updates; nothing was written, retry"
        ))),
        PositionOutcome::Unknown | PositionOutcome::Left { .. } => Err(ApiError::Internal(
            anyhow::anyhow!("set_position left driver {id} unresolved"),
        )),
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
        let parsed = crate::http::extract::parse_json_value::<super::BatchPosition>(item)
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
        PositionOutcome::Contended | PositionOutcome::Unknown | PositionOutcome::Left { .. } => {
            result.status = BatchStatus::Invalid;
            result.detail = Some(format!(
                "positions[{index}]: concurrent updates were moving the driver between cities; nothing was written for it, retry"
            ));
        }
    }
}

/// Read a driver's state and Redis' clock: the directory names the city, then one round trip
/// to the city's slot.
pub async fn load_driver(
    store: &Store,
    settings: &Settings,
    id: &DriverId,
) -> Result<Option<DriverState>, ApiError> {
    let Some(city) = load_city(store, id).await? else {
        return Ok(None);
    };
    let mut conn = store.conn();
    let (packed, time): (Option<String>, (i64, i64)) = redis::pipe()
        .cmd("HGET")
        .arg(store.keys().driver_states(&city))
        .arg(id.as_str())
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(redis_error("load driver"))?;
    match packed {
        None => Ok(None),
        Some(packed) => DriverState::from_packed(
            id.as_str(),
            &city,
            &packed,
            time_ms(time),
            settings.driver_ttl_ms,
        )
        .map(Some)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("undecodable state {packed:?} of {id}"))),
    }
}

/// The city a driver is in (from the directory), or `None` for an unknown driver.
pub async fn load_city(store: &Store, id: &DriverId) -> Result<Option<String>, ApiError> {
    let mut conn = store.conn();
    let city: Option<String> = redis::cmd("HGET")
        .arg(store.keys().driver_directory(id.as_str()))
        .arg(id.as_str())
        .query_async(&mut conn)
        .await
        .map_err(redis_error("driver city"))?;
    city.map(|c| valid_city(parse_entry(&c).0)).transpose()
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
/// `keys_for(city)` as KEYS and `driver_id, extra_args…` as ARGV, and answers
/// `{'missing'}` (no state in that city: the directory is read again) or anything else.
/// Returns the city and that reply, or `None` when the driver does not exist.
pub async fn run_on_driver_city(
    store: &Store,
    script: &'static redis::Script,
    keys_for: impl Fn(&Keys, &str) -> Vec<String>,
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
        let mut args = vec![id.as_str()];
        args.extend_from_slice(extra_args);
        let cmd = evalsha(script, &keys_for(keys, &c), &args);
        let reply: Vec<String> = scripts::run(&mut conn, script, &cmd)
            .await
            .map_err(redis_error("driver script"))?;
        match reply.first().map(String::as_str) {
            // Not in that city: it may have moved since the directory was read.
            Some("missing") => {
                city = load_city(store, id).await?.filter(|now| *now != c);
            }
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
    let (city, reply) = run_on_driver_city(
        &store,
        &SET_STATUS,
        Keys::city_script,
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
                .and_then(|p| {
                    DriverState::from_packed(id.as_str(), &city, p, now, settings.driver_ttl_ms)
                })
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
    let (city, reply) = run_on_driver_city(
        &store,
        &DELETE_DRIVER,
        |k, c| k.driver_script(c, id.as_str()),
        &id,
        &[],
    )
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
    city_cas(
        &mut store.conn(),
        store.keys(),
        &[(id.as_str(), city.as_str(), "")],
    )
    .await?;
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
