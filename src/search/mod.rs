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
//! (usually none) have their last-seen time read (one `HMGET` of their packed states), in one
//! more round trip, so stale drivers are dropped even between sweeps without a lookup per
//! candidate. The answer is exact at every
//! step: a set that filled its `COUNT` only vouches for distances up to its last member, and
//! then `COUNT` grows instead of the radius.
//! It is a read, so it needs no script, and no Redis command on this path is long: a
//! GEOSEARCH costs in proportion to the members inside its radius, fresh or stale, so each
//! step's radius is kept to what should hold its `COUNT` members (see `tuning.rs`), and a
//! search reads at most `search_max_members` members over all its steps. When a stale majority
//! (a fleet whose phones all stopped, not yet swept) makes it reach that cap before `k` fresh
//! drivers, it answers the fresh drivers it found as a partial answer, with the distance up to
//! which it looked ([`Found::partial_radius_m`]).

mod query;
mod tuning;

pub(crate) use query::{Area, NearbyDriver, NearbyQuery, NearbyResponse, Search};
pub(crate) use tuning::KnnTuning;

use crate::config::Settings;
use crate::domain::{DriverStatus, FieldError, PackedState, VehicleType};
use crate::store::Store;
use crate::store::keys::driver_bucket;
use crate::store::scripts::time_ms;
use tuning::{Probe, tuning_key};

/// What a search found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// Fresh drivers, nearest first, at most `limit`.
    pub(crate) drivers: Vec<NearbyDriver>,
    /// `Some(distance)` when the search reached `search_max_members` before finding `limit`
    /// fresh drivers in its area (a partial answer): `drivers` are every fresh driver within
    /// `distance` metres, and nothing is known beyond it.
    pub(crate) partial_radius_m: Option<f64>,
}

/// Why a nearby search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query is invalid or out of the configured bounds; every offending field is listed.
    #[error("invalid search: {}", FieldError::list(.0))]
    Validation(Vec<FieldError>),
    /// A Redis round trip failed.
    #[error("Redis failed: {context}")]
    Redis {
        /// Which step of the search.
        context: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis reply did not have the shape of the command's answer.
    #[error("decoding {what}")]
    Decode {
        /// The command whose reply could not be decoded.
        what: &'static str,
        /// Why.
        #[source]
        source: redis::ParsingError,
    },
    /// The widening steps neither found `k` drivers nor reached the search's bound within
    /// their limit (a widening that never ends would be a bug, not a slow answer).
    #[error("nearby search did not converge")]
    NotConverged,
}

/// The [`SearchError`] of a failed Redis round trip, with the step it happened in.
fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> SearchError {
    move |source| SearchError::Redis { context, source }
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
pub(crate) async fn search(
    store: &Store,
    settings: &Settings,
    tuning: &KnnTuning,
    city: &str,
    search: &Search,
) -> Result<Found, SearchError> {
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
    // Members read so far (fresh or stale, every set, every step), against the cap.
    let mut read = 0usize;
    for _ in 0..40 {
        // A first step asks for no more members than the cap allows (later ones stop before).
        if read == 0 {
            let most = settings.search_max_members / sets.len();
            probe.count = probe.count.min(most.max(1));
        }
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
        let decode_err =
            |what: &'static str, source: redis::ParsingError| SearchError::Decode { what, source };
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
        let (mut step_read, mut step_most) = (0usize, 0usize);
        for (set, value) in sets.iter().zip(values) {
            let members: Vec<(String, f64, (f64, f64))> =
                redis::from_redis_value(value).map_err(|e| decode_err("GEOSEARCH", e))?;
            step_read += members.len();
            step_most = step_most.max(members.len());
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
        read += step_read;
        let covered = probe.covered(cutoff);
        let most = step_most as f64;
        // The next step may read from one set up to half of what the cap leaves.
        let step_budget = settings.search_max_members.saturating_sub(read) as f64 / 2.0;
        let done = probe.done_or_widen(candidates.len(), most, cutoff, step_budget);
        // The next step asks for no more members than the cap leaves; when that is no more
        // than this step read from one set, it would only read again the nearest members this
        // one had (a step re-reads everything nearer than its radius), so the search stops.
        let left = settings.search_max_members.saturating_sub(read) / sets.len();
        probe.count = probe.count.min(left);
        if done || probe.count <= step_most {
            let mut found = candidates;
            found.sort_by(|a, b| {
                a.distance_m
                    .total_cmp(&b.distance_m)
                    .then_with(|| a.driver_id.cmp(&b.driver_id))
            });
            found.truncate(k);
            return Ok(Found {
                drivers: found,
                partial_radius_m: (!done).then_some(covered),
            });
        }
    }
    Err(SearchError::NotConverged)
}

/// Drop the stale among `candidates` that are `suspect` (in a bucket holding a stale driver, or
/// every candidate when the sweeper is behind): one `HMGET` of the suspects' packed states in
/// the city's drivers hash, whose `recorded_ms` is the last-seen time (written with the
/// liveness bucket by the same script). One command, not one `ZSCORE` per suspect: with a
/// stale majority every member a search reads is a suspect.
async fn drop_stale(
    conn: &mut crate::store::RedisConn,
    keys: &crate::store::Keys,
    city: &str,
    candidates: Vec<NearbyDriver>,
    suspect: impl Fn(&NearbyDriver) -> bool,
    fresh_after: i64,
) -> Result<Vec<NearbyDriver>, SearchError> {
    let (suspects, mut kept): (Vec<NearbyDriver>, Vec<NearbyDriver>) =
        candidates.into_iter().partition(|c| suspect(c));
    let ids: Vec<&str> = suspects.iter().map(|c| c.driver_id.as_str()).collect();
    let states: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(keys.driver_states(city))
        .arg(&ids)
        .query_async(conn)
        .await
        .map_err(redis_error("nearby freshness"))?;
    kept.extend(
        suspects
            .into_iter()
            .zip(states)
            .filter(|(_, s)| {
                s.as_deref()
                    .and_then(PackedState::parse)
                    .is_some_and(|s| s.recorded_ms >= fresh_after)
            })
            .map(|(c, _)| c),
    );
    Ok(kept)
}
