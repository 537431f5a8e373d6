//! The dispatch engine: lock an order, rank candidates, claim one with the fencing check. The
//! order's other transitions are in `transitions.rs`; the order operations, the HTTP handlers
//! and the queue workers all run on the [`Dispatcher`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::error::DispatchError;
use super::model::{DispatchResult, OrderSpec};
use super::order_scripts::{ClaimArgs, Op, TransitionReply, decode_claim};
use super::transitions::TransitionError;
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{DriverStatus, GeoPoint, OrderId, VehicleType};
use crate::lock::{Lease, Locks};
use crate::metrics;
use crate::search::{Area, KnnTuning, Search};
use crate::store::Store;
use crate::store::scripts::{self, CLAIM_OFFER, LOCK_ORDER, evalsha};

/// What one claim call did (see `lua/claim_offer.lua`).
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The order was offered.
    Offered(DispatchResult),
    /// No candidate was eligible; the order is still pending.
    NoDriver,
    /// The lease no longer holds the lock: nothing written.
    LockLost,
    /// A later fencing number already touched the order: nothing written.
    StaleFence,
    /// The order is no longer pending.
    NotPending(String),
    /// No such order.
    Missing,
}

/// Outcome of one whole dispatch.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOutcome {
    /// Offered to a driver.
    Offered(DispatchResult),
    /// Nobody eligible within the dispatch radius; the order stays pending.
    NoDriver,
    /// Another dispatch holds the order's lock.
    Locked,
    /// The order is not pending (its current state).
    NotPending(String),
    /// The lock was lost before the claim (a pause longer than its TTL); nothing written.
    LockLost,
}

/// What trying to lock an order found.
enum Locked {
    /// The lock is ours.
    Taken(Lease, Target),
    /// Another dispatch holds it.
    Held,
    /// The order is not pending (its state); no lock was taken.
    NotPending(String),
    /// No such order.
    Missing,
}

/// Runs dispatches and order transitions (cheap to clone).
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    settings: Arc<Settings>,
    tuning: Arc<KnnTuning>,
    cities: Arc<CityIndex>,
    locks: Locks,
    redlock: Option<crate::lock::redlock::Redlock>,
}

/// Fields of an order a dispatch needs.
struct Target {
    center: GeoPoint,
    vehicle: Option<VehicleType>,
    excluded: Vec<String>,
}

impl Dispatcher {
    /// A dispatcher over `store`.
    pub(crate) fn new(
        store: Store,
        settings: Arc<Settings>,
        tuning: Arc<KnnTuning>,
        cities: Arc<CityIndex>,
    ) -> Self {
        let locks = Locks::new(store.clone());
        Self {
            store,
            settings,
            tuning,
            cities,
            locks,
            redlock: None,
        }
    }

    /// Also take a Redlock over independent nodes before each contended dispatch (explicit
    /// `…/dispatch` and queue workers), on top of the order's own lock.
    pub(crate) fn with_redlock(mut self, redlock: crate::lock::redlock::Redlock) -> Self {
        self.redlock = Some(redlock);
        self
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The learned starting radii of nearby searches.
    pub(crate) fn tuning(&self) -> &KnnTuning {
        &self.tuning
    }

    /// The service areas.
    pub(crate) fn cities(&self) -> &CityIndex {
        &self.cities
    }

    /// Create an order and dispatch it at once: the creating script also takes the new order's
    /// lock (one round trip fewer than create, then dispatch).
    pub async fn create_and_dispatch(
        &self,
        id: &OrderId,
        city: &str,
        spec: &OrderSpec,
        count_attempt: bool,
    ) -> Result<Result<DispatchOutcome, DispatchError>, TransitionError> {
        let lease = self
            .create_inner(id, city, spec, true)
            .await?
            .ok_or_else(|| {
                DispatchError::Internal(anyhow::anyhow!(
                    "create with a lock returned no fencing number"
                ))
            })?;
        let target = Target {
            center: spec.pickup,
            vehicle: spec.vehicle,
            excluded: Vec::new(),
        };
        metrics::inc(
            "geodispatch_lock_acquisitions_total",
            &[("result", "acquired")],
        );
        tracing::debug!(order = %id, city, fencing = lease.fencing, "created and locked");
        let result = self
            .dispatch_locked(city, id.as_str(), lease, target, count_attempt)
            .await;
        record_outcome(&result, count_attempt);
        Ok(result)
    }

    /// Try to take an order's lock (never waits; only while the order is pending), reading
    /// what the dispatch needs of the order in the same round trip.
    async fn lock_and_read(&self, city: &str, order: &str) -> Result<Locked, DispatchError> {
        use crate::lock::scripts::{self as lock_scripts, LockOrderReply};
        let keys = self.store.keys();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl = Duration::from_millis(self.settings.lock_ttl_ms);
        let lock = keys.order_lock(city, order);
        let okey = keys.order(city, order);
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(
            &LOCK_ORDER,
            &[lock.as_str(), keys.fence(city).as_str(), okey.as_str()],
            &lock_scripts::LockOrderArgs {
                token: &token,
                ttl_ms: self.settings.lock_ttl_ms,
            }
            .argv(),
        ))
        .cmd("HMGET")
        .arg(&okey)
        .arg(&["plat", "plon", "vehicle"])
        .cmd("SMEMBERS")
        .arg(keys.order_excluded(city, order));
        let mut conn = self.store.conn();
        let (reply, fields, excluded): ((i64, String), Vec<Option<String>>, Vec<String>) =
            scripts::run_pipeline(&mut conn, &LOCK_ORDER, &pipe)
                .await
                .map_err(DispatchError::redis("lock order"))?;
        let fencing =
            match LockOrderReply::decode(reply).map_err(DispatchError::redis("lock order"))? {
                LockOrderReply::Locked(fencing) => fencing,
                LockOrderReply::Missing => return Ok(Locked::Missing),
                LockOrderReply::NotPending(state) => return Ok(Locked::NotPending(state)),
                LockOrderReply::Contended => {
                    metrics::inc(
                        "geodispatch_lock_acquisitions_total",
                        &[("result", "contended")],
                    );
                    return Ok(Locked::Held);
                }
            };
        metrics::inc(
            "geodispatch_lock_acquisitions_total",
            &[("result", "acquired")],
        );
        tracing::debug!(order, city, fencing, "lock acquired");
        let lease = Lease {
            key: lock,
            token,
            fencing,
            ttl,
        };
        let pickup = match fields.as_slice() {
            [Some(lat), Some(lon), vehicle] => lat
                .parse()
                .context("order plat")
                .and_then(|lat| Ok((lat, lon.parse().context("order plon")?)))
                .map(|(lat, lon)| (GeoPoint { lat, lon }, vehicle.as_deref())),
            _ => Err(anyhow::anyhow!("order {order} has no pickup: {fields:?}")),
        };
        match pickup {
            Ok((center, vehicle)) => Ok(Locked::Taken(
                lease,
                Target {
                    center,
                    vehicle: vehicle.and_then(VehicleType::parse),
                    excluded,
                },
            )),
            // A lock is never left behind an order that cannot be dispatched.
            Err(err) => {
                self.release(&lease).await;
                Err(DispatchError::Internal(err))
            }
        }
    }

    /// Take an order's lock (never waits): the first step of a dispatch, public so that tests
    /// can play a worker that stalls between its steps.
    pub async fn lock_order(
        &self,
        city: &str,
        order: &str,
    ) -> Result<Option<Lease>, DispatchError> {
        Ok(match self.lock_and_read(city, order).await? {
            Locked::Taken(lease, _) => Some(lease),
            _ => None,
        })
    }

    /// Release a lease (compare-and-delete).
    pub(crate) async fn release(&self, lease: &Lease) {
        if let Err(err) = self.locks.release(lease).await {
            tracing::warn!(key = %lease.key, error = %err, "releasing a dispatch lock failed; it expires by itself");
        }
    }

    /// The nearest available, fresh drivers of an order (at most `dispatch_candidates` after
    /// leaving out excluded ones), as `(driver_id, distance_m)`: the claim script ranks them.
    /// None when the search was partial.
    pub async fn candidates(
        &self,
        city: &str,
        center: GeoPoint,
        vehicle: Option<VehicleType>,
        excluded: &[String],
    ) -> Result<Vec<(String, f64)>, DispatchError> {
        let want = self.settings.dispatch_candidates;
        let pool = (want + excluded.len()).clamp(1, self.settings.search_max_limit.max(want));
        let search = Search {
            center,
            area: Area::Radius(self.settings.dispatch_radius_m),
            limit: pool,
            statuses: vec![DriverStatus::Available],
            vehicles: vehicle
                .map(|v| vec![v])
                .unwrap_or_else(|| VehicleType::ALL.to_vec()),
        };
        let found = crate::search::search(&self.store, &self.settings, &self.tuning, city, &search)
            .await
            .map_err(DispatchError::Search)?;
        // A partial answer (the search reached its member cap among stale drivers) may miss
        // nearer drivers: it counts as no driver nearby yet, and the order is retried as then.
        if found.partial_radius_m.is_some() {
            return Ok(Vec::new());
        }
        Ok(found
            .drivers
            .into_iter()
            .filter(|d| !excluded.contains(&d.driver_id))
            .take(want)
            .map(|d| (d.driver_id, d.distance_m))
            .collect())
    }

    /// Rank `candidates` (driver, distance) by distance and driver score and offer the order
    /// to the best one still eligible, under `lease` (`lua/claim_offer.lua`).
    /// With `release`, the lock is released in the same script unless no driver was found and
    /// `keep_on_none` is set (the caller then records the attempt under the lock).
    pub async fn claim(
        &self,
        city: &str,
        order: &str,
        lease: &Lease,
        candidates: &[(String, f64)],
        keep_on_none: bool,
    ) -> Result<Claim, DispatchError> {
        let keys = self.store.keys();
        let args = self.claim_args(city, lease, candidates, keep_on_none);
        let cmd = evalsha(&CLAIM_OFFER, &keys.order_script(city, order), &args.argv());
        let mut conn = self.store.conn();
        let reply: Vec<String> = scripts::run(&mut conn, &CLAIM_OFFER, &cmd)
            .await
            .map_err(DispatchError::redis("claim offer"))?;
        Ok(decode_claim(&reply, order, lease.fencing)?)
    }

    /// The ARGV of `claim_offer.lua` for `candidates` under `lease`.
    pub(super) fn claim_args<'a>(
        &self,
        city: &str,
        lease: &'a Lease,
        candidates: &'a [(String, f64)],
        keep_on_none: bool,
    ) -> ClaimArgs<'a> {
        let keys = self.store.keys();
        ClaimArgs {
            token: &lease.token,
            fencing: lease.fencing,
            driver_ttl_ms: self.settings.driver_ttl_ms,
            offer_ttl_ms: self.settings.offer_ttl_ms,
            events_maxlen: self.settings.events_maxlen,
            ops_channel: keys.ops_channel(city),
            driver_channel_prefix: keys.driver_channel_prefix(),
            keep_lock_on_none: keep_on_none,
            distance_weight: self.settings.ranking_distance_weight,
            score_weight: self.settings.ranking_score_weight,
            unscored_score: self.settings.ranking_unscored_score,
            candidates,
        }
    }

    /// Dispatch one order of `city`: lock it (or answer `Locked` at once), rank candidates
    /// with the lease kept alive, claim the best eligible one. With `count_attempt` (queue
    /// workers), a dispatch that finds nobody counts an attempt, and the order fails after
    /// `dispatch_max_attempts`; a request's dispatch leaves the order pending.
    pub(crate) async fn dispatch_in(
        &self,
        city: &str,
        order: &str,
        count_attempt: bool,
    ) -> Result<DispatchOutcome, DispatchError> {
        let result = self.dispatch_in_inner(city, order, count_attempt).await;
        record_outcome(&result, count_attempt);
        result
    }

    async fn dispatch_in_inner(
        &self,
        city: &str,
        order: &str,
        count_attempt: bool,
    ) -> Result<DispatchOutcome, DispatchError> {
        let Some(redlock) = &self.redlock else {
            return self.dispatch_in_locked(city, order, count_attempt).await;
        };
        let key = self.store.keys().order_lock(city, order);
        let ttl = Duration::from_millis(self.settings.lock_ttl_ms);
        let outer = match redlock.try_acquire(&key, ttl).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(DispatchOutcome::Locked),
            Err(reachable) => {
                tracing::warn!(
                    order,
                    city,
                    reachable,
                    quorum = redlock.quorum(),
                    "Redlock has no quorum"
                );
                return Err(DispatchError::LockQuorumLost);
            }
        };
        let result = self.dispatch_in_locked(city, order, count_attempt).await;
        redlock.release(&outer).await;
        result
    }

    async fn dispatch_in_locked(
        &self,
        city: &str,
        order: &str,
        count_attempt: bool,
    ) -> Result<DispatchOutcome, DispatchError> {
        let (lease, target) = match self.lock_and_read(city, order).await? {
            Locked::Taken(lease, target) => (lease, target),
            Locked::Held => return Ok(DispatchOutcome::Locked),
            Locked::NotPending(state) => return Ok(DispatchOutcome::NotPending(state)),
            Locked::Missing => return Err(DispatchError::OrderNotFound(order.to_owned())),
        };
        self.dispatch_locked(city, order, lease, target, count_attempt)
            .await
    }

    /// The part of a dispatch that runs under the lock: rank with the lease kept alive, claim.
    async fn dispatch_locked(
        &self,
        city: &str,
        order: &str,
        lease: Lease,
        target: Target,
        count_attempt: bool,
    ) -> Result<DispatchOutcome, DispatchError> {
        let renewal = self.locks.keep_alive(lease.clone());
        let ranked = self
            .candidates(city, target.center, target.vehicle, &target.excluded)
            .await;
        let ranked = match ranked {
            Ok(r) => r,
            Err(e) => {
                drop(renewal);
                self.release(&lease).await;
                return Err(e);
            }
        };
        let claim = self
            .claim(city, order, &lease, &ranked, count_attempt)
            .await;
        drop(renewal);
        let claim = claim?;
        // Offers and empty claims are every dispatch's routine outcomes (hundreds a second under
        // load, or right after a seed): debug, so that info stays readable.
        match &claim {
            Claim::Offered(r) => {
                tracing::debug!(order, city, driver = %r.driver_id, fencing = lease.fencing, distance_m = r.distance_m, "claim: offered (event appended)")
            }
            Claim::NoDriver => tracing::debug!(
                order,
                city,
                fencing = lease.fencing,
                candidates = ranked.len(),
                "claim: no eligible driver"
            ),
            Claim::LockLost => {
                metrics::inc("geodispatch_lock_lost_total", &[("stage", "claim")]);
                tracing::warn!(
                    order,
                    city,
                    fencing = lease.fencing,
                    "claim refused: the lease expired while held"
                );
            }
            Claim::StaleFence => {
                metrics::inc("geodispatch_fence_rejections_total", &[("stage", "claim")]);
                tracing::warn!(
                    order,
                    city,
                    fencing = lease.fencing,
                    "claim refused: a later fencing number touched the order"
                );
            }
            Claim::NotPending(state) => {
                tracing::debug!(order, city, state = %state, "claim: order no longer pending")
            }
            Claim::Missing => {}
        }
        match claim {
            Claim::Offered(result) => Ok(DispatchOutcome::Offered(result)),
            Claim::NoDriver if count_attempt => {
                let mut args = self.transition_args(Op::Attempt, order, city);
                args.lock_token = Some(&lease.token);
                match self.run_transition(&args).await? {
                    TransitionReply::Changed { state, .. } if state == "failed" => {
                        tracing::info!(
                            order,
                            city,
                            "no driver after the last attempt: order failed"
                        )
                    }
                    TransitionReply::Changed { .. } => {
                        tracing::debug!(order, city, "no driver yet: retry scheduled")
                    }
                    other => {
                        tracing::debug!(order, city, outcome = ?other, "no-driver attempt not counted")
                    }
                }
                Ok(DispatchOutcome::NoDriver)
            }
            Claim::NoDriver => Ok(DispatchOutcome::NoDriver),
            Claim::LockLost | Claim::StaleFence => Ok(DispatchOutcome::LockLost),
            Claim::NotPending(state) => Ok(DispatchOutcome::NotPending(state)),
            Claim::Missing => Err(DispatchError::OrderNotFound(order.to_owned())),
        }
    }

    /// Dispatch an order by id (looks its city up first).
    pub(crate) async fn dispatch(&self, id: &OrderId) -> Result<DispatchOutcome, DispatchError> {
        let city = self.order_city(id).await?;
        self.dispatch_in(&city, id.as_str(), false).await
    }
}

/// Count a dispatch's outcome.
fn record_outcome(result: &Result<DispatchOutcome, DispatchError>, worker: bool) {
    let outcome = match result {
        Ok(DispatchOutcome::Offered(_)) => "offered",
        Ok(DispatchOutcome::NoDriver) => "no_driver",
        Ok(DispatchOutcome::Locked) => "locked",
        Ok(DispatchOutcome::NotPending(_)) => "not_pending",
        Ok(DispatchOutcome::LockLost) => "lock_lost",
        Err(_) => "error",
    };
    let source = if worker { "worker" } else { "request" };
    metrics::inc(
        "geodispatch_dispatch_outcomes_total",
        &[("outcome", outcome), ("source", source)],
    );
}
