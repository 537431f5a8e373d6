//! Storing positions: the `set_position` command and its reply, one position, and many
//! positions grouped by city. A driver its city does not hold yet goes through the directory
//! ([`super::moves`]).

use crate::config::Settings;
use crate::domain::{CityId, DriverId};
use crate::store::scripts::{self, SET_POSITION, evalsha};
use crate::store::{Keys, RedisConn};

use super::directory::{city_cas, directory_entries, entry, parse_entry};
use super::model::{DriverState, ValidPosition};
use super::moves::{arrive, confirm_created};
pub(super) use super::scripts::PositionMode;
use super::scripts::{CasEntry, PositionReply, SetPositionArgs};
use super::{DriverError, driver_bucket};

/// Result of storing one position.
#[derive(Debug)]
pub(crate) enum PositionOutcome {
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

/// Positions stored per `set_position` call in a batch: large enough to amortise the script
/// call, small enough that one call blocks Redis for well under a millisecond.
const POSITIONS_PER_CALL: usize = 20;

/// The `EVALSHA set_position` command for positions of drivers in `city`.
pub(super) fn position_cmd(
    keys: &Keys,
    settings: &Settings,
    city: &str,
    items: &[(&DriverId, &ValidPosition)],
    mode: PositionMode,
) -> redis::Cmd {
    let mut k = keys.position_script(city);
    k.extend(
        items
            .iter()
            .map(|(id, _)| keys.seen_bucket(city, driver_bucket(id.as_str()))),
    );
    let (ops_channel, prefix) = (keys.ops_channel(city), keys.driver_channel_prefix());
    let args = SetPositionArgs {
        max_clock_skew_ms: settings.max_clock_skew_ms,
        mode,
        arrival: settings
            .arrival_detection
            .then_some((settings.arrival_radius_m, settings.arrival_dwell_ms)),
        events_maxlen: settings.events_maxlen,
        ops_channel: &ops_channel,
        driver_channel_prefix: &prefix,
        city,
        positions: items,
    }
    .argv();
    evalsha(&SET_POSITION, &k, &args)
}

/// Decode a `set_position` reply: three entries per position, in order.
pub(super) fn decode_positions(
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
            Ok(match PositionReply::decode(r)? {
                PositionReply::Ok { state, now_ms } => {
                    DriverState::from_packed(id.as_str(), city, state, now_ms, ttl_ms)
                        .map(PositionOutcome::Accepted)
                        .ok_or_else(|| anyhow::anyhow!("undecodable state {state:?}"))?
                }
                PositionReply::Stale { stored_ms, .. } => PositionOutcome::Stale { stored_ms },
                PositionReply::Future { now_ms } => PositionOutcome::Future { now_ms },
                PositionReply::Unknown => PositionOutcome::Unknown,
                PositionReply::Left { packed, score } => PositionOutcome::Left {
                    packed: packed.to_owned(),
                    score: score.map(str::to_owned),
                },
            })
        })
        .collect()
}

/// One `set_position` call for one position in `city`.
pub(super) async fn run_one(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &str,
    pos: &ValidPosition,
    mode: PositionMode,
) -> Result<PositionOutcome, DriverError> {
    let cmd = position_cmd(keys, settings, city, &[(id, pos)], mode);
    let reply: Vec<String> = scripts::run(conn, &SET_POSITION, &cmd)
        .await
        .map_err(DriverError::redis("set_position"))?;
    decode_positions(city, &[id], &reply, settings.driver_ttl_ms)?
        .pop()
        .ok_or_else(|| DriverError::Internal(anyhow::anyhow!("empty set_position reply")))
}

/// Store one position, following the driver across a city change.
///
/// The common case (a driver the city already holds) is one script call. A driver the city
/// does not hold goes through the directory first ([`arrive`]).
pub(super) async fn set_position(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, DriverError> {
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

/// Run `mode` calls for `items` (indexes into `all`), grouped by city, every city's calls in
/// one pipeline (a pipeline stays in one Cluster slot), the cities concurrently.
async fn run_grouped(
    conn: &RedisConn,
    keys: &Keys,
    settings: &Settings,
    all: &[(DriverId, CityId, ValidPosition)],
    items: &[usize],
    mode: PositionMode,
) -> Result<Vec<(usize, PositionOutcome)>, DriverError> {
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
                .map_err(DriverError::redis("set_position batch"))?;
            let mut out = Vec::with_capacity(indexes.len());
            for (chunk, reply) in chunks.iter().zip(&replies) {
                let ids: Vec<&DriverId> = chunk.iter().map(|&i| &all[i].0).collect();
                let decoded = decode_positions(city.as_str(), &ids, reply, settings.driver_ttl_ms)?;
                out.extend(chunk.iter().copied().zip(decoded));
            }
            Ok::<_, DriverError>(out)
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
pub(super) async fn set_positions(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    items: &[(DriverId, CityId, ValidPosition)],
) -> Result<Vec<PositionOutcome>, DriverError> {
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
        let entries: Vec<CasEntry> = claims
            .iter()
            .zip(&values)
            .map(|(&i, v)| CasEntry {
                driver_id: items[i].0.as_str(),
                expected: "",
                new: v.as_str(),
            })
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
        .map(|o| {
            o.ok_or_else(|| DriverError::Internal(anyhow::anyhow!("a position got no outcome")))
        })
        .collect()
}
