//! Batched matching (`dispatch_policy = batched`): every `match_interval_ms`, one instance per
//! city (the holder of the city's matching lease) takes the city's due pending orders and its
//! free drivers near them, and assigns them all at once at least total cost.
//!
//! A round:
//! 1. reads the pool (`order → ms from which it is considered`: its ready time less
//!    `match_lookahead_ms`, or its creation), earliest first, at most `match_max_orders`;
//! 2. finds each order's nearest available candidates (the greedy dispatch's search, without
//!    the drivers that rejected it) and reads their scores;
//!    Drivers carrying a picked-up order are candidates too when they are expected to be free
//!    within `match_busy_horizon_ms` (travel to their drop-off, plus
//!    `match_dropoff_service_ms`): *soon free*, they would start from their drop-off, and they
//!    count only where they would reach the pickup before the nearest available driver (at
//!    most [`SOON_FREE_PER_ORDER`] per order). A driver whose delivery takes more than twice
//!    the expected trip is not counted on;
//! 3. keeps the orders that are **due**: the ready time is past, or waiting one more round
//!    would bring even the nearest candidate (soon free ones included) to the pickup later
//!    than `match_pickup_lead_ms` before the ready time (travel at `match_speed_mps`). Other
//!    orders wait: a driver sent now would idle at the pickup;
//! 4. prices each due order × candidate pair in milliseconds: the travel time to the pickup,
//!    plus twice the time the food would wait for the driver (arrival after the ready time),
//!    plus half the time the driver would wait for the food, less the driver's score converted
//!    to travel time by the ranking weights (`ranking_score_weight / ranking_distance_weight`
//!    km per score point; `ranking_unscored_score` for a driver without one). For a soon free
//!    driver the arrival counts from when it is free (plus one round to notice it), the travel
//!    from its drop-off;
//! 5. solves the minimum-cost assignment ([`super::assignment`]), where leaving an order
//!    unassigned costs more than any pair (so as many orders as possible are assigned). An
//!    order given a soon free driver **waits** for it: nothing is committed, and a later round,
//!    once the driver is available, offers it the order at its price then;
//! 6. commits each pair through the greedy path's own steps: the order's lock with a fencing
//!    number, then `claim_offer.lua` with that one driver, which checks everything a greedy
//!    dispatch checks (lock, fence, order pending, driver available, fresh and free). A pair
//!    that fails (a driver taken meanwhile) is a claim conflict: the order stays in the pool
//!    for the next round;
//! 7. counts an attempt for every due order left without a driver (at most one per
//!    `dispatch_retry_ms`; after `dispatch_max_attempts` the order fails, as under greedy).
//!    An order waiting for a soon free driver counts none: a driver is on the way;
//! 8. with `reposition_idle_drivers`, sends idle drivers toward the pickup spots of recent
//!    orders that lack one ([`super::reposition`]). A driver on such a move is priced, in
//!    steps 3–4, from the spot once it is expected there, not from where it reports.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::assignment::Problem;
use super::engine::{Claim, Dispatcher};
use super::error::DispatchError;
use super::order_scripts::{Op, TransitionReply, decode_claim};
use crate::domain::{DriverStatus, GeoPoint, PackedState, VehicleType, haversine_m};
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
    /// Pairs the solver chose with an available driver.
    pub matched: usize,
    /// Due orders the solver gave a soon free driver: they wait for it.
    pub waiting: usize,
    /// Chosen pairs committed as offers.
    pub offered: usize,
    /// Chosen pairs whose claim failed (driver or order taken meanwhile).
    pub conflicts: usize,
    /// Time spent in the solver.
    pub solve: Duration,
    /// Idle drivers sent toward a pickup spot (`reposition_idle_drivers`).
    pub repositioned: usize,
}

/// A pooled order as the round reads it.
struct Pooled {
    id: String,
    center: GeoPoint,
    vehicle: Option<VehicleType>,
    ready_ms: i64,
    excluded: Vec<String>,
}

/// A driver carrying a picked-up order, as a round counts on it.
#[derive(Debug, Clone, PartialEq)]
struct SoonFree {
    driver: String,
    vehicle: VehicleType,
    /// Its order's drop-off, where it will be free.
    at: GeoPoint,
    /// Milliseconds until it is expected to leave the drop-off.
    free_in_ms: f64,
}

/// A soon free driver as one order's row prices it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SoonOption {
    /// Index in the round's soon free drivers.
    soon: usize,
    /// Travel from its drop-off to the order's pickup, ms.
    travel_ms: f64,
    /// When it would reach the pickup, ms from now: free, one round to notice, travel.
    arrival_ms: f64,
}

/// The soon free drivers worth pricing for `order`: of `near` (indices in `soon`, those whose
/// drop-off is near the pickup), the ones of its vehicle type that have not refused it and
/// would reach the pickup before the nearest available candidate (`nearest_ms` away), at most
/// [`SOON_FREE_PER_ORDER`], earliest first.
fn soon_options(
    order: &Pooled,
    soon: &[SoonFree],
    near: &[usize],
    nearest_ms: f64,
    interval_ms: f64,
    travel_ms: impl Fn(f64) -> f64,
) -> Vec<SoonOption> {
    let mut out: Vec<SoonOption> = near
        .iter()
        .map(|&k| (k, &soon[k]))
        .filter(|(_, s)| {
            order.vehicle.is_none_or(|v| v == s.vehicle) && !order.excluded.contains(&s.driver)
        })
        .map(|(k, s)| {
            let travel = travel_ms(haversine_m(s.at, order.center));
            SoonOption {
                soon: k,
                travel_ms: travel,
                arrival_ms: s.free_in_ms + interval_ms + travel,
            }
        })
        .filter(|o| o.arrival_ms < nearest_ms)
        .collect();
    out.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
    out.truncate(SOON_FREE_PER_ORDER);
    out
}

/// Most soon free drivers one order's row prices (those arriving first).
pub(crate) const SOON_FREE_PER_ORDER: usize = 3;

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
            if settings.reposition_idle_drivers {
                report.repositioned = self.reposition(city, now, &[], &HashSet::new()).await?;
            }
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

        // Drivers soon free near each order, and each order's best of them.
        let speed = settings.match_speed_mps;
        let interval = settings.match_interval_ms as f64;
        let travel_ms = |distance_m: f64| distance_m / speed * 1000.0;
        let (soon, near) = if settings.match_busy_horizon_ms > 0 {
            self.soon_free(city, now, &orders).await?
        } else {
            (Vec::new(), vec![Vec::new(); orders.len()])
        };
        // A driver on its way to a reposition spot is expected from the spot, once there.
        let moving = if settings.reposition_idle_drivers {
            self.on_their_way(city, now).await?
        } else {
            std::collections::HashMap::new()
        };
        let arrival_ms = |i: usize, driver: &str, distance_m: f64| match moving.get(driver) {
            Some((spot, left_ms)) => left_ms + travel_ms(haversine_m(*spot, orders[i].center)),
            None => travel_ms(distance_m),
        };
        let nearest: Vec<f64> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.iter()
                    .map(|(driver, d)| arrival_ms(i, driver, *d))
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let soon_rows: Vec<Vec<SoonOption>> = orders
            .iter()
            .zip(&nearest)
            .zip(&near)
            .map(|((o, &nearest), near)| soon_options(o, &soon, near, nearest, interval, travel_ms))
            .collect();

        // Due orders, and the columns (drivers) of their pairs.
        // Time left until the driver should be at the pickup: the ready time less the lead.
        let lead = settings.match_pickup_lead_ms as i64;
        let slack_of = |o: &Pooled| (o.ready_ms - lead - now) as f64;
        let due: Vec<usize> = (0..orders.len())
            .filter(|&i| {
                let slack = slack_of(&orders[i]);
                let first = soon_rows[i]
                    .first()
                    .map_or(nearest[i], |s| s.arrival_ms.min(nearest[i]));
                // Without candidates, an order is due (and counts an attempt) at its ready time.
                let lead = if first.is_finite() { first } else { 0.0 };
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
        // Soon free drivers are columns after the available ones.
        let mut soon_columns: Vec<usize> = due
            .iter()
            .flat_map(|&i| soon_rows[i].iter().map(|s| s.soon))
            .collect();
        soon_columns.sort_unstable();
        soon_columns.dedup();
        report.drivers = columns.len() + soon_columns.len();
        let scored: Vec<&str> = columns
            .iter()
            .copied()
            .chain(soon_columns.iter().map(|&k| soon[k].driver.as_str()))
            .collect();
        let scores = self.scores_of(city, &scored).await?;

        // Prices and the solve.
        let score_km = if settings.ranking_distance_weight > 0.0 {
            settings.ranking_score_weight / settings.ranking_distance_weight
        } else {
            0.0
        };
        let price = |slack: f64, travel: f64, arrival: f64, score: Option<f64>| {
            let late = (arrival - slack).max(0.0);
            let idle = (slack - arrival).max(0.0);
            let score = score.unwrap_or(settings.ranking_unscored_score);
            let bonus = travel_ms(score * score_km * 1000.0);
            travel as i64 + LATE_WEIGHT * late as i64 + idle as i64 / IDLE_DIVISOR - bonus as i64
        };
        let mut problem = Problem::new(scored.len());
        for &i in &due {
            let slack = slack_of(&orders[i]);
            let free = candidates[i].iter().map(|(driver, distance)| {
                let c = columns.binary_search(&driver.as_str()).expect("a column");
                let arrival = arrival_ms(i, driver, *distance);
                (c, price(slack, arrival, arrival, scores[c]))
            });
            let soon_pairs = soon_rows[i].iter().map(|s| {
                let c = columns.len() + soon_columns.binary_search(&s.soon).expect("a column");
                (c, price(slack, s.travel_ms, s.arrival_ms, scores[c]))
            });
            problem.add_row(free.chain(soon_pairs));
        }
        report.pairs = problem.pairs();
        let solve_started = Instant::now();
        let assignment = problem.solve(UNASSIGNED);
        report.solve = solve_started.elapsed();
        // An order given a soon free driver waits for it: no claim, no attempt.
        report.waiting = assignment
            .iter()
            .filter(|c| c.is_some_and(|c| c >= columns.len()))
            .count();

        // Commit: lock every chosen order, then claim each with its one driver.
        let chosen: Vec<(usize, usize)> = due
            .iter()
            .zip(&assignment)
            .filter_map(|(&i, col)| col.filter(|&c| c < columns.len()).map(|c| (i, c)))
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

        // Idle drivers toward the spots of the coming orders, once this round's offers are out.
        if settings.reposition_idle_drivers {
            let pooled: Vec<(&str, GeoPoint)> =
                orders.iter().map(|o| (o.id.as_str(), o.center)).collect();
            let taken: HashSet<&str> = chosen.iter().map(|&(_, c)| columns[c]).collect();
            report.repositioned = self.reposition(city, now, &pooled, &taken).await?;
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
            "geodispatch_match_waiting_total",
            &[],
            report.waiting as f64,
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

    /// The drivers of `city` carrying a picked-up order whose drop-off is near one of
    /// `orders`' pickups (the soon-free set, within `dispatch_radius_m`) and that are expected
    /// to leave it within `match_busy_horizon_ms`; with, for each order, the indices of those
    /// near it.
    async fn soon_free(
        &self,
        city: &str,
        now: i64,
        orders: &[Pooled],
    ) -> Result<(Vec<SoonFree>, Vec<Vec<usize>>), DispatchError> {
        let keys = self.store().keys();
        let settings = self.settings();
        let mut conn = self.store().conn();
        let set = keys.match_soon_free(city);
        let mut pipe = redis::pipe();
        for o in orders {
            pipe.cmd("GEOSEARCH")
                .arg(&set)
                .arg("FROMLONLAT")
                .arg(o.center.lon)
                .arg(o.center.lat)
                .arg("BYRADIUS")
                .arg(settings.dispatch_radius_m)
                .arg("m")
                .arg("ASC")
                .arg("COUNT")
                .arg(3 * SOON_FREE_PER_ORDER);
        }
        let found: Vec<Vec<String>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("soon free drivers"))?;
        let mut drivers: Vec<&str> = found.iter().flatten().map(String::as_str).collect();
        drivers.sort_unstable();
        drivers.dedup();
        if drivers.is_empty() {
            return Ok((Vec::new(), vec![Vec::new(); orders.len()]));
        }

        // Each driver's position and order, then the order.
        let mut pipe = redis::pipe();
        for d in &drivers {
            pipe.cmd("HGET")
                .arg(keys.driver_states(city))
                .arg(d)
                .cmd("HGET")
                .arg(keys.assignments(city))
                .arg(d);
        }
        let rows: Vec<(Option<String>, Option<String>)> = pipe
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("soon free drivers"))?;
        let mut pipe = redis::pipe();
        let mut carrying = Vec::new();
        for (&d, (state, order)) in drivers.iter().zip(rows) {
            let (Some(state), Some(order)) = (state.as_deref().and_then(PackedState::parse), order)
            else {
                continue;
            };
            // A driver whose phone went quiet is not counted on.
            if state.status != DriverStatus::Busy
                || now - state.recorded_ms > settings.driver_ttl_ms as i64
            {
                continue;
            }
            pipe.cmd("HMGET")
                .arg(keys.order(city, &order))
                .arg(&["state", "plat", "plon", "dlat", "dlon", "updated"]);
            carrying.push((d, state));
        }
        let trips: Vec<Vec<Option<String>>> = if carrying.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn)
                .await
                .map_err(DispatchError::redis("soon free drivers"))?
        };
        let travel_ms =
            |a: GeoPoint, b: GeoPoint| haversine_m(a, b) / settings.match_speed_mps * 1000.0;
        let service = settings.match_dropoff_service_ms as f64;
        let horizon = settings.match_busy_horizon_ms as f64;
        let mut soon = Vec::new();
        let mut index = std::collections::HashMap::new();
        for ((d, state), fields) in carrying.into_iter().zip(trips) {
            let [st, plat, plon, dlat, dlon, updated] = fields.as_slice() else {
                continue;
            };
            let num = |v: &Option<String>| v.as_deref()?.parse::<f64>().ok();
            let (Some(plat), Some(plon), Some(dlat), Some(dlon), Some(picked_up)) =
                (num(plat), num(plon), num(dlat), num(dlon), num(updated))
            else {
                continue;
            };
            if st.as_deref() != Some("picked_up") {
                continue;
            }
            let here = GeoPoint {
                lat: state.lat,
                lon: state.lon,
            };
            let drop = GeoPoint {
                lat: dlat,
                lon: dlon,
            };
            let pickup = GeoPoint {
                lat: plat,
                lon: plon,
            };
            let free_in_ms = travel_ms(here, drop) + service;
            // A delivery taking twice its expected trip is not counted on.
            let overdue = (now as f64 - picked_up) > 2.0 * (travel_ms(pickup, drop) + service);
            if free_in_ms > horizon || overdue {
                continue;
            }
            index.insert(d, soon.len());
            soon.push(SoonFree {
                driver: d.to_owned(),
                vehicle: state.vehicle_type,
                at: drop,
                free_in_ms,
            });
        }
        let near = found
            .iter()
            .map(|ids| {
                ids.iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        Ok((soon, near))
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
        // A round that panics is caught like one that fails: the loop, and the city's
        // matching, live on.
        let round = std::panic::AssertUnwindSafe(dispatcher.match_round(&city));
        match futures_util::FutureExt::catch_unwind(round).await {
            Ok(Ok(r)) if r.due > 0 => tracing::debug!(city, ?r, "matching round"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(
                    city,
                    error = &err as &dyn std::error::Error,
                    "matching round failed"
                )
            }
            Err(_) => tracing::error!(
                city,
                "a matching round panicked; the next one runs as usual"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn order(vehicle: Option<VehicleType>, excluded: &[&str]) -> Pooled {
        Pooled {
            id: "o".into(),
            center: GeoPoint {
                lat: 48.85,
                lon: 2.35,
            },
            vehicle,
            ready_ms: 0,
            excluded: excluded.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn soon(driver: &str, vehicle: VehicleType, east_m: f64, free_in_ms: f64) -> SoonFree {
        SoonFree {
            driver: driver.into(),
            vehicle,
            at: GeoPoint {
                lat: 48.85,
                lon: 2.35 + east_m / (111_320.0 * 48.85_f64.to_radians().cos()),
            },
            free_in_ms,
        }
    }

    #[test]
    fn soon_free_drivers_count_only_when_they_arrive_before_the_nearest_free_one() {
        let car = VehicleType::Car;
        let all = [
            soon("late", car, 0.0, 9_000.0),
            soon("b", car, 100.0, 1_000.0),
            soon("a", car, 0.0, 1_000.0),
            soon("bike", VehicleType::Bike, 0.0, 0.0),
            soon("refused", car, 0.0, 0.0),
            soon("c", car, 200.0, 1_000.0),
            soon("d", car, 300.0, 1_000.0),
        ];
        let near: Vec<usize> = (0..all.len()).collect();
        // 1 m per ms, rounds of 500 ms, the nearest free driver 5 s away.
        let got = soon_options(
            &order(Some(car), &["refused"]),
            &all,
            &near,
            5_000.0,
            500.0,
            |m| m,
        );
        let names: Vec<&str> = got.iter().map(|o| all[o.soon].driver.as_str()).collect();
        // "late" arrives after 9.5 s; "bike" is the wrong vehicle; "refused" refused the order;
        // of the rest, the three earliest.
        assert_eq!(names, ["a", "b", "c"]);
        assert!((got[0].arrival_ms - 1_500.0).abs() < 1.0, "{got:?}");
        assert!((got[1].travel_ms - 100.0).abs() < 0.5, "{got:?}");

        // With a free driver 1 s away, only those free now at the pickup (any vehicle, none
        // refused).
        let got = soon_options(&order(None, &[]), &all, &near, 1_000.0, 500.0, |m| m);
        let names: Vec<&str> = got.iter().map(|o| all[o.soon].driver.as_str()).collect();
        assert_eq!(names, ["bike", "refused"]);
    }
}
