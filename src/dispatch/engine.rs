//! The dispatch engine: lock an order, rank candidates, claim one with the fencing check, and
//! run the order's other transitions. The HTTP handlers and the queue workers both use it.

use crate::store::scripts::{CLAIM_OFFER, LOCK_ORDER, ORDER_TRANSITION};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::error::DispatchError;
use super::model::{DispatchResult, Order};
use super::order_scripts::{
    ClaimArgs, NewOrder, Op, TransitionArgs, TransitionReply, decode_claim,
};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{DriverStatus, VehicleType};
use crate::domain::{GeoPoint, OrderId};
use crate::lock::{Lease, Locks};
use crate::metrics;
use crate::search::{Area, KnnTuning, Search};
use crate::store::Store;
use crate::store::scripts::{self, evalsha};

/// A transition of an order after its offer (see `lua/order_transition.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The offered driver accepts (offered → accepted).
    Accept,
    /// The offered driver declines (offered → pending; the driver is excluded).
    Reject,
    /// The driver picked the order up (accepted → picked_up).
    Pickup,
    /// The driver delivered it (picked_up → delivered; the driver is free and scores).
    Deliver,
    /// The client or ops cancel (pending, offered, accepted or picked_up → cancelled; the
    /// driver is freed).
    Cancel,
}

impl Transition {
    pub(super) fn op(self) -> Op {
        match self {
            Transition::Accept => Op::Accept,
            Transition::Reject => Op::Reject,
            Transition::Pickup => Op::Pickup,
            Transition::Deliver => Op::Deliver,
            Transition::Cancel => Op::Cancel,
        }
    }

    /// The step's name (`accept`, `reject`, `pickup`, `deliver`, `cancel`).
    pub(crate) fn name(self) -> &'static str {
        self.op().as_str()
    }

    /// The states the transition leaves from, as a phrase.
    pub(crate) fn needs(self) -> &'static str {
        match self {
            Transition::Accept | Transition::Reject => "offered",
            Transition::Pickup => "accepted",
            Transition::Deliver => "picked_up",
            Transition::Cancel => "pending, offered, accepted or picked_up",
        }
    }
}

/// Why `lua/order_transition.lua` refused a change (nothing was written), or why it could not
/// be run. Callers that apply several steps, or create orders in bulk, look at the refusal
/// itself; the order operations turn it into a [`DispatchError`] that names the order.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such order.
    #[error("no such order")]
    Missing,
    /// The order is in a state this transition does not leave from.
    #[error("not allowed from state {0}")]
    State(String),
    /// The driver or fencing number is not the current offer's.
    #[error("not the current offer's driver and fencing number")]
    Fence,
    /// The offer expired before it was accepted.
    #[error("the offer expired")]
    Expired,
    /// The order id is taken (create).
    #[error("the order id is taken")]
    Exists,
    /// The dispatch lock was lost (attempt).
    #[error("the dispatch lock was lost")]
    LockLost,
    /// Redis or decoding failed.
    #[error(transparent)]
    Failed(#[from] DispatchError),
}

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
    pub fn new(
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
    pub fn with_redlock(mut self, redlock: crate::lock::redlock::Redlock) -> Self {
        self.redlock = Some(redlock);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The service areas.
    pub fn cities(&self) -> &CityIndex {
        &self.cities
    }

    /// The ARGV of `order_transition.lua` for `op` on `order` of `city`, with the settings'
    /// slots filled and the op-specific ones empty.
    fn transition_args<'a>(&self, op: Op, order: &'a str, city: &'a str) -> TransitionArgs<'a> {
        let keys = self.store.keys();
        TransitionArgs {
            op,
            order_id: order,
            city,
            answer: None,
            retry_ms: self.settings.dispatch_retry_ms,
            max_attempts: self.settings.dispatch_max_attempts,
            score_per_delivery: self.settings.score_per_delivery,
            events_maxlen: self.settings.events_maxlen,
            ops_channel: keys.ops_channel(city),
            driver_channel_prefix: keys.driver_channel_prefix(),
            lock_token: None,
            lock_ttl_ms: None,
            new_order: None,
        }
    }

    /// Run `order_transition.lua`. The order's driver is in the order's city: a busy driver
    /// stays in its order's city until the order lets go of it (`lua/set_position.lua`).
    async fn run_transition(
        &self,
        args: &TransitionArgs<'_>,
    ) -> Result<TransitionReply, DispatchError> {
        let mut conn = self.store.conn();
        let keys = self.store.keys().order_script(args.city, args.order_id);
        let cmd = evalsha(&ORDER_TRANSITION, &keys, &args.argv());
        let reply: Vec<String> = scripts::run(&mut conn, &ORDER_TRANSITION, &cmd)
            .await
            .map_err(DispatchError::redis("order transition"))?;
        Ok(TransitionReply::decode(&reply)?)
    }

    /// Create an order (state `pending`) in `city`; `queued` orders are appended to the city's
    /// dispatch stream in the same script. The directory entry is written first (HSETNX), so
    /// an id is never reused across cities.
    pub async fn create(
        &self,
        id: &OrderId,
        city: &str,
        pickup: GeoPoint,
        dropoff: Option<GeoPoint>,
        vehicle: Option<VehicleType>,
        mode: super::DispatchMode,
    ) -> Result<(), TransitionError> {
        self.create_inner(id, city, pickup, dropoff, vehicle, mode, false)
            .await
            .map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_inner(
        &self,
        id: &OrderId,
        city: &str,
        pickup: GeoPoint,
        dropoff: Option<GeoPoint>,
        vehicle: Option<VehicleType>,
        mode: super::DispatchMode,
        lock: bool,
    ) -> Result<Option<Lease>, TransitionError> {
        let mut conn = self.store.conn();
        let (_, owner): (i64, String) = redis::pipe()
            .cmd("HSETNX")
            .arg(self.store.keys().order_directory())
            .arg(id.as_str())
            .arg(city)
            .cmd("HGET")
            .arg(self.store.keys().order_directory())
            .arg(id.as_str())
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("order directory"))?;
        if owner != city {
            return Err(TransitionError::Exists);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut args = self.transition_args(Op::Create, id.as_str(), city);
        args.new_order = Some(NewOrder {
            pickup,
            dropoff,
            vehicle,
            mode,
        });
        if lock {
            args.lock_token = Some(&token);
            args.lock_ttl_ms = Some(self.settings.lock_ttl_ms);
        }
        let fencing = match self.run_transition(&args).await? {
            TransitionReply::Created { fencing } => fencing,
            other => return Err(refusal(other)),
        };
        Ok(fencing.filter(|_| lock).map(|fencing| Lease {
            key: self.store.keys().order_lock(city, id.as_str()),
            token,
            fencing,
            ttl: Duration::from_millis(self.settings.lock_ttl_ms),
        }))
    }

    /// Create an order and dispatch it at once: the creating script also takes the new order's
    /// lock (one round trip fewer than create, then dispatch).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_and_dispatch(
        &self,
        id: &OrderId,
        city: &str,
        pickup: GeoPoint,
        dropoff: Option<GeoPoint>,
        vehicle: Option<VehicleType>,
        count_attempt: bool,
    ) -> Result<Result<DispatchOutcome, DispatchError>, TransitionError> {
        let lease = self
            .create_inner(
                id,
                city,
                pickup,
                dropoff,
                vehicle,
                super::DispatchMode::Now,
                true,
            )
            .await?
            .ok_or_else(|| {
                DispatchError::Internal(anyhow::anyhow!(
                    "create with a lock returned no fencing number"
                ))
            })?;
        let target = Target {
            center: pickup,
            vehicle,
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

    /// The city of an order (from the directory).
    pub async fn order_city(&self, id: &OrderId) -> Result<String, DispatchError> {
        let mut conn = self.store.conn();
        let city: Option<String> = redis::cmd("HGET")
            .arg(self.store.keys().order_directory())
            .arg(id.as_str())
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("order directory"))?;
        city.ok_or_else(|| DispatchError::OrderNotFound(id.to_string()))
    }

    /// Read an order.
    pub async fn load(&self, id: &OrderId) -> Result<Order, DispatchError> {
        let city = self.order_city(id).await?;
        self.load_in(&city, id.as_str()).await
    }

    /// Read an order of a known city.
    pub async fn load_in(&self, city: &str, id: &str) -> Result<Order, DispatchError> {
        let mut conn = self.store.conn();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.store.keys().order(city, id))
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("load order"))?;
        if h.is_empty() {
            return Err(DispatchError::OrderNotFound(id.to_owned()));
        }
        Order::from_hash(&h).ok_or_else(|| {
            DispatchError::Internal(anyhow::anyhow!("undecodable order {id}: {h:?}"))
        })
    }

    /// Apply a driver's answer or a cancellation; returns the order afterwards. A driver's
    /// answer repeated (the same driver, fencing number and step as the answer that produced
    /// the order's state, e.g. a retry after a lost reply) returns the order and writes nothing.
    pub async fn transition(
        &self,
        id: &OrderId,
        transition: Transition,
        driver: Option<(&str, u64)>,
    ) -> Result<Order, DispatchError> {
        let city = self.order_city(id).await?;
        // The script answers with the order's fields: no read-back needed.
        let fields = self
            .transition_reply(&city, id.as_str(), transition, driver)
            .await?;
        match Order::from_hash(&fields) {
            Some(order) => Ok(order),
            None => self.load_in(&city, id.as_str()).await,
        }
    }

    /// Apply a transition to an order of a known city (no directory lookup, no read-back).
    pub async fn transition_in(
        &self,
        city: &str,
        id: &str,
        transition: Transition,
        driver: Option<(&str, u64)>,
    ) -> Result<(), DispatchError> {
        self.transition_reply(city, id, transition, driver)
            .await
            .map(|_| ())
    }

    /// [`Self::transition_in`], returning the order's fields after the transition.
    async fn transition_reply(
        &self,
        city: &str,
        id: &str,
        transition: Transition,
        driver: Option<(&str, u64)>,
    ) -> Result<HashMap<String, String>, DispatchError> {
        let mut args = self.transition_args(transition.op(), id, city);
        args.answer = driver;
        let op = transition.op().as_str();
        let decoded = match self.run_transition(&args).await? {
            TransitionReply::Changed { order, .. } => Ok(order),
            TransitionReply::Repeated { order, .. } => {
                // The answer that produced the order's state, sent again (its reply was lost):
                // answered with the order as it is; nothing was written.
                tracing::info!(order = id, city, op, "repeated answer: nothing written");
                return Ok(order);
            }
            other => Err(refusal(other)),
        };
        match &decoded {
            Ok(_) => tracing::info!(order = id, city, op, "transition (event appended)"),
            Err(TransitionError::Fence) => {
                metrics::inc("geodispatch_fence_rejections_total", &[("stage", "answer")]);
                tracing::info!(
                    order = id,
                    city,
                    op,
                    "transition refused: stale or foreign fencing token"
                );
            }
            Err(_) => {}
        }
        let order = id.to_owned();
        match decoded {
            Ok(fields) => Ok(fields),
            Err(TransitionError::Missing) => Err(DispatchError::OrderNotFound(order)),
            Err(TransitionError::State(state)) => Err(DispatchError::InvalidTransition {
                order,
                state,
                transition,
            }),
            Err(TransitionError::Fence) => Err(DispatchError::StaleFencingToken(order)),
            Err(TransitionError::Expired) => Err(DispatchError::OfferExpired(order)),
            Err(TransitionError::Failed(e)) => Err(e),
            Err(other) => Err(DispatchError::Internal(anyhow::anyhow!(
                "unexpected transition outcome {other:?}"
            ))),
        }
    }

    /// Expire a due offer or re-queue a waiting order (timer scan); `true` when something was due.
    pub async fn fire_timer(&self, city: &str, order: &str) -> Result<bool, DispatchError> {
        let args = self.transition_args(Op::Timer, order, city);
        Ok(matches!(
            self.run_transition(&args).await?,
            TransitionReply::Changed { .. }
        ))
    }

    /// Try to take an order's lock (never waits; only while the order is pending), reading
    /// what the dispatch needs of the order in the same round trip.
    async fn lock_and_read(&self, city: &str, order: &str) -> Result<Locked, DispatchError> {
        let keys = self.store.keys();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl = Duration::from_millis(self.settings.lock_ttl_ms);
        let lock = keys.order_lock(city, order);
        let okey = keys.order(city, order);
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(
            &LOCK_ORDER,
            &[lock.as_str(), keys.fence(city).as_str(), okey.as_str()],
            &[token.clone(), self.settings.lock_ttl_ms.to_string()],
        ))
        .cmd("HMGET")
        .arg(&okey)
        .arg(&["plat", "plon", "vehicle"])
        .cmd("SMEMBERS")
        .arg(keys.order_excluded(city, order));
        let mut conn = self.store.conn();
        let ((fencing, state), fields, excluded): (
            (u64, String),
            Vec<Option<String>>,
            Vec<String>,
        ) = scripts::run_pipeline(&mut conn, &LOCK_ORDER, &pipe)
            .await
            .map_err(DispatchError::redis("lock order"))?;
        if state.is_empty() {
            return Ok(Locked::Missing);
        }
        if state != "pending" {
            return Ok(Locked::NotPending(state));
        }
        if fencing == 0 {
            metrics::inc(
                "geodispatch_lock_acquisitions_total",
                &[("result", "contended")],
            );
            return Ok(Locked::Held);
        }
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
        let target = match fields.as_slice() {
            [Some(lat), Some(lon), vehicle] => Target {
                center: GeoPoint {
                    lat: lat.parse().context("order plat")?,
                    lon: lon.parse().context("order plon")?,
                },
                vehicle: vehicle.as_deref().and_then(VehicleType::parse),
                excluded,
            },
            _ => {
                self.release(&lease).await;
                return Err(DispatchError::Internal(anyhow::anyhow!(
                    "order {order} has no pickup: {fields:?}"
                )));
            }
        };
        Ok(Locked::Taken(lease, target))
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
    pub async fn release(&self, lease: &Lease) {
        if let Err(err) = self.locks.release(lease).await {
            tracing::warn!(key = %lease.key, error = %err, "releasing a dispatch lock failed; it expires by itself");
        }
    }

    /// The nearest available, fresh drivers of an order (at most `dispatch_candidates` after
    /// leaving out excluded ones), as `(driver_id, distance_m)`: the claim script ranks them.
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
        Ok(found
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
        let args = ClaimArgs {
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
            candidates,
        };
        let cmd = evalsha(&CLAIM_OFFER, &keys.order_script(city, order), &args.argv());
        let mut conn = self.store.conn();
        let reply: Vec<String> = scripts::run(&mut conn, &CLAIM_OFFER, &cmd)
            .await
            .map_err(DispatchError::redis("claim offer"))?;
        Ok(decode_claim(&reply, order, lease.fencing)?)
    }

    /// Dispatch one order of `city`: lock it (or answer `Locked` at once), rank candidates
    /// with the lease kept alive, claim the best eligible one. With `count_attempt` (queue
    /// workers), a dispatch that finds nobody counts an attempt, and the order fails after
    /// `dispatch_max_attempts`; a request's dispatch leaves the order pending.
    pub async fn dispatch_in(
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

    /// Apply several transitions of one order in order, in one round trip (each is still its
    /// own script call that checks the state left by the previous one). Used by drivers that
    /// report several steps at once, e.g. a phone that was offline. A step repeating the answer
    /// that produced the order's state is `Ok` and writes nothing.
    pub async fn transitions_in(
        &self,
        city: &str,
        id: &str,
        steps: &[Transition],
        driver: Option<(&str, u64)>,
    ) -> Result<Vec<Result<(), TransitionError>>, DispatchError> {
        let mut pipe = redis::pipe();
        let keys = self.store.keys().order_script(city, id);
        for step in steps {
            let mut args = self.transition_args(step.op(), id, city);
            args.answer = driver;
            pipe.add_command(evalsha(&ORDER_TRANSITION, &keys, &args.argv()));
        }
        let mut conn = self.store.conn();
        let replies: Vec<Vec<String>> = scripts::run_pipeline(&mut conn, &ORDER_TRANSITION, &pipe)
            .await
            .map_err(DispatchError::redis("order transitions"))?;
        Ok(replies
            .iter()
            .map(|reply| match TransitionReply::decode(reply) {
                Ok(TransitionReply::Changed { .. } | TransitionReply::Repeated { .. }) => Ok(()),
                Ok(other) => Err(refusal(other)),
                Err(e) => Err(TransitionError::Failed(e.into())),
            })
            .collect())
    }

    /// Dispatch an order by id (looks its city up first).
    pub async fn dispatch(&self, id: &OrderId) -> Result<DispatchOutcome, DispatchError> {
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

/// Why `order_transition.lua` did not apply a change (a reply other than the one expected).
fn refusal(reply: TransitionReply) -> TransitionError {
    match reply {
        TransitionReply::Missing => TransitionError::Missing,
        TransitionReply::Exists => TransitionError::Exists,
        TransitionReply::State(state) => TransitionError::State(state),
        TransitionReply::Fence => TransitionError::Fence,
        TransitionReply::Expired => TransitionError::Expired,
        TransitionReply::LockLost => TransitionError::LockLost,
        other => TransitionError::Failed(DispatchError::Internal(anyhow::anyhow!(
            "unexpected order_transition reply {other:?}"
        ))),
    }
}
