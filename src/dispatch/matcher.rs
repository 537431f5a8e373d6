//! Batched matching (`dispatch_policy = batched`): every `match_interval_ms`, one instance per
//! city (the holder of the city's matching lease) takes the city's due pending orders and its
//! free drivers near them, and assigns them all at once at least total cost.
//!
//! A round:
//! 1. reads the pool (`order → ms from which it is considered`: its ready time less
//!    `match_lookahead_ms`, or its creation), earliest first, at most `match_max_orders`;
//! 2. finds each order's nearest available candidates (the greedy dispatch's search, without
//!    the drivers that rejected it) and reads their scores;
//! 3. keeps the orders that are **due**: the ready time is past, or waiting one more round
//!    would bring even the nearest candidate to the pickup later than `match_pickup_lead_ms`
//!    before the ready time (travel at `match_speed_mps`). Other orders wait: a driver sent
//!    now would idle at the pickup;
//! 4. prices each due order × candidate pair in milliseconds: the travel time to the pickup,
//!    plus twice the time the food would wait for the driver (arrival after the ready time),
//!    plus half the time the driver would wait for the food, less the driver's score converted
//!    to travel time by the ranking weights (`ranking_score_weight / ranking_distance_weight`
//!    km per score point; `ranking_unscored_score` for a driver without one);
//! 5. solves the minimum-cost assignment ([`super::assignment`]), where leaving an order
//!    unassigned costs more than any pair (so as many orders as possible are assigned);
//! 6. commits each pair through the greedy path's own steps: the order's lock with a fencing
//!    number, then `claim_offer.lua` with that one driver, which checks everything a greedy
//!    dispatch checks (lock, fence, order pending, driver available, fresh and free). A pair
//!    that fails (a driver taken meanwhile) is a claim conflict: the order stays in the pool
//!    for the next round;
//! 7. counts an attempt for every due order left without a driver (at most one per
//!    `dispatch_retry_ms`; after `dispatch_max_attempts` the order fails, as under greedy).

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::assignment::Problem;
use super::engine::{Claim, Dispatcher};
use super::error::DispatchError;
use super::order_scripts::{Op, TransitionReply, decode_claim};
use crate::domain::{GeoPoint, VehicleType};
use crate::lock::Lease;
use crate::metrics;
use crate::store::scripts::{self, CLAIM_OFFER, LOCK_ORDER, ORDER_TRANSITION, evalsha};

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    /// Orders read from the pool.
    pub pooled: usize,
    /// Of those, the orders due in this round.
    pub due: usize,
    /// Distinct candidate drivers of the due orders.
    pub drivers: usize,
    /// Order × driver pairs priced.
    pub pairs: usize,
    /// Pairs the solver chose.
    pub matched: usize,
    /// Chosen pairs committed as offers.
    pub offered: usize,
    /// Chosen pairs whose claim failed (driver or order taken meanwhile).
    pub conflicts: usize,
    /// Time spent in the solver.
    pub solve: Duration,
}

/// A pooled order as the round reads it.
struct Pooled {
    id: String,
    center: GeoPoint,
    vehicle: Option<VehicleType>,
    ready_ms: i64,
    excluded: Vec<String>,
}

/// Multiplier of the time food waits for a driver (after its ready time), and divisor of the
/// time a driver waits for food, in a pair's cost (see the module docs).
const LATE_WEIGHT: i64 = 2;
const IDLE_DIVISOR: i64 = 2;
/// Cost of leaving a due order unassigned: above any pair's.
const UNASSIGNED: i64 = 1_000_000_000_000;

impl Dispatcher {
    /// Run one matching round of `city` (the caller holds the city's matching lease).
    pub async fn match_round(&self, city: &str) -> Result<RoundReport, DispatchError> {
        let started = Instant::now();
        let keys = self.store().keys();
        let settings = self.settings();
        let mut conn = self.store().conn();
        let time: (i64, i64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("round clock"))?;
        let now = scripts::time_ms(time);
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.match_pool(city))
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(settings.match_max_orders)
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("match pool"))?;
        let mut report = RoundReport {
            pooled: ids.len(),
            ..RoundReport::default()
        };
        if ids.is_empty() {
            return Ok(report);
        }

        // The orders, as one pipeline.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(keys.order(city, id))
                .arg(&["state", "plat", "plon", "vehicle", "ready", "created"])
                .cmd("SMEMBERS")
                .arg(keys.order_excluded(city, id));
        }
        let rows: Vec<(Vec<Option<String>>, Vec<String>)> = pipe
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("match orders"))?;
        let orders: Vec<Pooled> = ids
            .into_iter()
            .zip(rows)
            .filter_map(|(id, (fields, excluded))| {
                let [state, lat, lon, vehicle, ready, created] = fields.as_slice() else {
                    return None;
                };
                if state.as_deref() != Some("pending") {
                    return None;
                }
                let num = |v: &Option<String>| v.as_deref()?.parse::<f64>().ok();
                Some(Pooled {
                    id,
                    center: GeoPoint {
                        lat: num(lat)?,
                        lon: num(lon)?,
                    },
                    vehicle: vehicle.as_deref().and_then(VehicleType::parse),
                    ready_ms: num(ready).or(num(created))? as i64,
                    excluded,
                })
            })
            .collect();

        // Candidates of every order, searched concurrently over the shared connection.
        let searches = orders
            .iter()
            .map(|o| self.candidates(city, o.center, o.vehicle, &o.excluded));
        let mut candidates = Vec::with_capacity(orders.len());
        for found in join_all(searches).await {
            candidates.push(found?);
        }

        // Due orders, and the columns (drivers) of their pairs.
        let speed = settings.match_speed_mps;
        let interval = settings.match_interval_ms as f64;
        let travel_ms = |distance_m: f64| distance_m / speed * 1000.0;
        // Time left until the driver should be at the pickup: the ready time less the lead.
        let lead = settings.match_pickup_lead_ms as i64;
        let slack_of = |o: &Pooled| (o.ready_ms - lead - now) as f64;
        let due: Vec<usize> = (0..orders.len())
            .filter(|&i| {
                let slack = slack_of(&orders[i]);
                // Without candidates, an order is due (and counts an attempt) at its ready time.
                let nearest = candidates[i]
                    .iter()
                    .map(|(_, d)| travel_ms(*d))
                    .fold(f64::INFINITY, f64::min);
                let lead = if nearest.is_finite() { nearest } else { 0.0 };
                slack - lead <= interval
            })
            .collect();
        report.due = due.len();
        let mut columns: Vec<&str> = due
            .iter()
            .flat_map(|&i| candidates[i].iter().map(|(d, _)| d.as_str()))
            .collect();
        columns.sort_unstable();
        columns.dedup();
        report.drivers = columns.len();
        let scores = self.scores_of(city, &columns).await?;

        // Prices and the solve.
        let score_km = if settings.ranking_distance_weight > 0.0 {
            settings.ranking_score_weight / settings.ranking_distance_weight
        } else {
            0.0
        };
        let mut problem = Problem::new(columns.len());
        for &i in &due {
            let slack = slack_of(&orders[i]);
            let pairs = candidates[i].iter().map(|(driver, distance)| {
                let c = columns.binary_search(&driver.as_str()).expect("a column");
                let travel = travel_ms(*distance);
                let late = (travel - slack).max(0.0);
                let idle = (slack - travel).max(0.0);
                let score = scores[c].unwrap_or(settings.ranking_unscored_score);
                let bonus = travel_ms(score * score_km * 1000.0);
                let cost = travel as i64 + LATE_WEIGHT * late as i64 + idle as i64 / IDLE_DIVISOR
                    - bonus as i64;
                (c, cost)
            });
            problem.add_row(pairs);
        }
        report.pairs = problem.pairs();
        let solve_started = Instant::now();
        let assignment = problem.solve(UNASSIGNED);
        report.solve = solve_started.elapsed();

        // Commit: lock every chosen order, then claim each with its one driver.
        let chosen: Vec<(usize, usize)> = due
            .iter()
            .zip(&assignment)
            .filter_map(|(&i, col)| col.map(|c| (i, c)))
            .collect();
        report.matched = chosen.len();
        let unmatched: Vec<usize> = due
            .iter()
            .zip(&assignment)
            .filter(|(_, col)| col.is_none())
            .map(|(&i, _)| i)
            .collect();
        let leases = self
            .lock_many(city, chosen.iter().map(|&(i, _)| orders[i].id.as_str()))
            .await?;
        let mut claims = redis::pipe();
        let mut claimed = Vec::new();
        for (&(i, c), lease) in chosen.iter().zip(&leases) {
            let Some(lease) = lease else {
                report.conflicts += 1;
                continue;
            };
            let distance = candidates[i]
                .iter()
                .find(|(d, _)| d == columns[c])
                .map(|(_, d)| *d)
                .expect("a chosen driver is a candidate");
            let pair = [(columns[c].to_owned(), distance)];
            let args = self.claim_args(city, lease, &pair, false);
            claims.add_command(evalsha(
                &CLAIM_OFFER,
                &keys.order_script(city, &orders[i].id),
                &args.argv(),
            ));
            claimed.push((i, lease.fencing));
        }
        if !claimed.is_empty() {
            let replies: Vec<Vec<String>> = scripts::run_pipeline(&mut conn, &CLAIM_OFFER, &claims)
                .await
                .map_err(DispatchError::redis("match claims"))?;
            for ((i, fencing), reply) in claimed.iter().zip(replies) {
                match decode_claim(&reply, &orders[*i].id, *fencing)? {
                    Claim::Offered(r) => {
                        report.offered += 1;
                        tracing::debug!(city, order = %r.order_id, driver = %r.driver_id, fencing, "round: offered");
                    }
                    other => {
                        report.conflicts += 1;
                        tracing::debug!(city, order = %orders[*i].id, outcome = ?other, "round: claim refused");
                    }
                }
            }
        }

        // Due orders nobody could take count an attempt.
        if !unmatched.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &unmatched {
                let args = self.transition_args(Op::Attempt, &orders[i].id, city);
                pipe.add_command(evalsha(
                    &ORDER_TRANSITION,
                    &keys.order_script(city, &orders[i].id),
                    &args.argv(),
                ));
            }
            let replies: Vec<Vec<String>> =
                scripts::run_pipeline(&mut conn, &ORDER_TRANSITION, &pipe)
                    .await
                    .map_err(DispatchError::redis("match attempts"))?;
            for (&i, reply) in unmatched.iter().zip(replies) {
                if let TransitionReply::Changed { state, .. } = TransitionReply::decode(&reply)?
                    && state == "failed"
                {
                    tracing::info!(city, order = %orders[i].id, "no driver after the last attempt: order failed");
                }
            }
        }

        metrics::inc("geodispatch_match_rounds_total", &[]);
        metrics::add("geodispatch_match_orders_total", &[], report.due as f64);
        metrics::add(
            "geodispatch_match_drivers_total",
            &[],
            report.drivers as f64,
        );
        metrics::add(
            "geodispatch_match_matched_total",
            &[],
            report.matched as f64,
        );
        metrics::add(
            "geodispatch_match_claims_total",
            &[("result", "offered")],
            report.offered as f64,
        );
        metrics::add(
            "geodispatch_match_claims_total",
            &[("result", "conflict")],
            report.conflicts as f64,
        );
        metrics::observe(
            "geodispatch_match_solve_seconds",
            &[],
            report.solve.as_secs_f64(),
        );
        metrics::observe(
            "geodispatch_match_round_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
        Ok(report)
    }

    /// The scores of `drivers` in `city` (`None`: no score).
    async fn scores_of(
        &self,
        city: &str,
        drivers: &[&str],
    ) -> Result<Vec<Option<f64>>, DispatchError> {
        let mut out = Vec::with_capacity(drivers.len());
        let mut conn = self.store().conn();
        for chunk in drivers.chunks(1_000) {
            let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                .arg(self.store().keys().scores(city))
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .map_err(DispatchError::redis("match scores"))?;
            out.extend(scores);
        }
        Ok(out)
    }

    /// Take the dispatch locks of `orders` in one pipeline; `None` where the order is locked by
    /// another dispatch or no longer pending.
    async fn lock_many<'a>(
        &self,
        city: &str,
        orders: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<Lease>>, DispatchError> {
        use crate::lock::scripts::{LockOrderArgs, LockOrderReply};
        let keys = self.store().keys();
        let ttl_ms = self.settings().lock_ttl_ms;
        let mut pipe = redis::pipe();
        let mut pending = Vec::new();
        for order in orders {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let lock = keys.order_lock(city, order);
            pipe.add_command(evalsha(
                &LOCK_ORDER,
                &[
                    lock.as_str(),
                    keys.fence(city).as_str(),
                    keys.order(city, order).as_str(),
                ],
                &LockOrderArgs {
                    token: &token,
                    ttl_ms,
                }
                .argv(),
            ));
            pending.push((lock, token));
        }
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<(i64, String)> =
            scripts::run_pipeline(&mut self.store().conn(), &LOCK_ORDER, &pipe)
                .await
                .map_err(DispatchError::redis("match locks"))?;
        let mut out = Vec::with_capacity(replies.len());
        for ((key, token), reply) in pending.into_iter().zip(replies) {
            out.push(
                match LockOrderReply::decode(reply).map_err(DispatchError::redis("match locks"))? {
                    LockOrderReply::Locked(fencing) => Some(Lease {
                        key,
                        token,
                        fencing,
                        ttl: Duration::from_millis(ttl_ms),
                    }),
                    _ => None,
                },
            );
        }
        Ok(out)
    }
}

/// Run `city`'s rounds while this instance holds the city's matching lease: try to take the
/// lease every `match_interval_ms`; while held, renew it and run a round each interval. When
/// the holder dies, its lease expires and another instance's loop takes it.
async fn run_city(dispatcher: Dispatcher, city: String) {
    let settings = dispatcher.settings();
    let keys = dispatcher.store().keys();
    let locks = crate::lock::Locks::new(dispatcher.store().clone());
    let lease_key = keys.match_lease(&city);
    let fence_key = keys.fence(&city);
    let ttl = Duration::from_millis(settings.match_lease_ttl_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(settings.match_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Option<Lease> = None;
    loop {
        tick.tick().await;
        held = match held.take() {
            Some(lease) => match locks.extend(&lease, ttl).await {
                Ok(true) => Some(lease),
                Ok(false) => {
                    tracing::warn!(city, fencing = lease.fencing, "matching lease lost");
                    None
                }
                Err(err) => {
                    tracing::warn!(city, error = %err, "renewing the matching lease failed");
                    None
                }
            },
            None => match locks.acquire(&lease_key, &fence_key, ttl).await {
                Ok(Some(lease)) => {
                    tracing::info!(city, fencing = lease.fencing, "took the matching lease");
                    Some(lease)
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::warn!(city, error = %err, "taking the matching lease failed");
                    None
                }
            },
        };
        if held.is_none() {
            continue;
        }
        match dispatcher.match_round(&city).await {
            Ok(r) if r.due > 0 => tracing::debug!(city, ?r, "matching round"),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(
                    city,
                    error = &err as &dyn std::error::Error,
                    "matching round failed"
                )
            }
        }
    }
}

/// Start the matching loop of every city (batched policy).
pub fn spawn_matchers(dispatcher: Dispatcher) -> Vec<tokio::task::JoinHandle<()>> {
    dispatcher
        .cities()
        .all()
        .iter()
        .map(|c| tokio::spawn(run_city(dispatcher.clone(), c.id.to_string())))
        .collect()
}
