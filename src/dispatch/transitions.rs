//! An order's life outside a dispatch: creating it, reading it, a driver's answers, a
//! cancellation and the timers, each one run of `lua/order_transition.lua` that checks the
//! order's state (and the answering driver's fencing number) before it writes.

use std::collections::HashMap;
use std::time::Duration;

use super::engine::Dispatcher;
use super::error::DispatchError;
use super::model::{Order, OrderSpec};
use super::order_scripts::{NewOrder, Op, QueueEntry, TransitionArgs, TransitionReply};
use crate::domain::OrderId;
use crate::lock::Lease;
use crate::metrics;
use crate::store::keys::DISPATCH_GROUP;
use crate::store::scripts::{self, ORDER_TRANSITION, evalsha};

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
    /// The script's op for this transition.
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
    /// The ready time is before the order's creation (create).
    #[error("the ready time is before the order's creation")]
    ReadyEarly,
    /// The dispatch lock was lost (attempt).
    #[error("the dispatch lock was lost")]
    LockLost,
    /// No arrival at the drop-off was detected (deliver with `require_arrival_for_delivery`).
    #[error("no arrival at the drop-off was detected")]
    NotArrived,
    /// Redis or decoding failed.
    #[error(transparent)]
    Failed(#[from] DispatchError),
}

impl Dispatcher {
    /// The ARGV of `order_transition.lua` for `op` on `order` of `city`, with the settings'
    /// slots filled and the op-specific ones empty.
    pub(super) fn transition_args<'a>(
        &self,
        op: Op,
        order: &'a str,
        city: &'a str,
    ) -> TransitionArgs<'a> {
        let keys = self.store().keys();
        TransitionArgs {
            op,
            order_id: order,
            city,
            answer: None,
            retry_ms: self.settings().dispatch_retry_ms,
            max_attempts: self.settings().dispatch_max_attempts,
            score_per_delivery: self.settings().score_per_delivery,
            events_maxlen: self.settings().events_maxlen,
            ops_channel: keys.ops_channel(city),
            driver_channel_prefix: keys.driver_channel_prefix(),
            lock_token: None,
            lock_ttl_ms: None,
            unscored_score: self.settings().ranking_unscored_score,
            require_arrival: self.settings().require_arrival_for_delivery,
            new_order: None,
            queue_entry: None,
        }
    }

    /// Run `order_transition.lua`. The order's driver is in the order's city: a busy driver
    /// stays in its order's city until the order lets go of it (`lua/set_position.lua`).
    pub(super) async fn run_transition(
        &self,
        args: &TransitionArgs<'_>,
    ) -> Result<TransitionReply, DispatchError> {
        let mut conn = self.store().conn();
        let keys = self.store().keys().order_script(args.city, args.order_id);
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
        spec: &OrderSpec,
    ) -> Result<(), TransitionError> {
        self.create_inner(id, city, spec, false).await.map(|_| ())
    }

    /// [`Self::create`]; with `lock`, the script also takes the new order's dispatch lock and
    /// the lease is returned.
    pub(super) async fn create_inner(
        &self,
        id: &OrderId,
        city: &str,
        spec: &OrderSpec,
        lock: bool,
    ) -> Result<Option<Lease>, TransitionError> {
        let mut conn = self.store().conn();
        let (_, owner): (i64, String) = redis::pipe()
            .cmd("HSETNX")
            .arg(self.store().keys().order_directory())
            .arg(id.as_str())
            .arg(city)
            .cmd("HGET")
            .arg(self.store().keys().order_directory())
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
            spec,
            policy: self.settings().dispatch_policy,
            lookahead_ms: self.settings().match_lookahead_ms,
            skew_ms: self.settings().max_clock_skew_ms,
        });
        if lock {
            args.lock_token = Some(&token);
            args.lock_ttl_ms = Some(self.settings().lock_ttl_ms);
        }
        let fencing = match self.run_transition(&args).await? {
            TransitionReply::Created { fencing } => fencing,
            other => return Err(refusal(other)),
        };
        Ok(fencing.filter(|_| lock).map(|fencing| Lease {
            key: self.store().keys().order_lock(city, id.as_str()),
            token,
            fencing,
            ttl: Duration::from_millis(self.settings().lock_ttl_ms),
        }))
    }

    /// The city of an order (from the directory).
    pub(crate) async fn order_city(&self, id: &OrderId) -> Result<String, DispatchError> {
        let mut conn = self.store().conn();
        let city: Option<String> = redis::cmd("HGET")
            .arg(self.store().keys().order_directory())
            .arg(id.as_str())
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("order directory"))?;
        city.ok_or_else(|| DispatchError::OrderNotFound(id.to_string()))
    }

    /// Read an order.
    pub(crate) async fn load(&self, id: &OrderId) -> Result<Order, DispatchError> {
        let city = self.order_city(id).await?;
        self.load_in(&city, id.as_str()).await
    }

    /// Read an order of a known city.
    pub(crate) async fn load_in(&self, city: &str, id: &str) -> Result<Order, DispatchError> {
        let mut conn = self.store().conn();
        let keys = self.store().keys();
        // The arrival times detected while the order is open live beside it (positions write
        // them without knowing the order's key); one round trip reads both.
        let (mut h, times): (HashMap<String, String>, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(keys.order(city, id))
            .cmd("HGET")
            .arg(keys.arrival_times(city))
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("load order"))?;
        if h.is_empty() {
            return Err(DispatchError::OrderNotFound(id.to_owned()));
        }
        if let Some((pickup, dropoff)) = times.as_deref().and_then(|t| t.split_once('|')) {
            for (field, ms) in [("arrived_p", pickup), ("arrived_d", dropoff)] {
                if !ms.is_empty() {
                    h.entry(field.to_owned()).or_insert_with(|| ms.to_owned());
                }
            }
        }
        Order::from_hash(&h).ok_or_else(|| {
            DispatchError::Internal(anyhow::anyhow!("undecodable order {id}: {h:?}"))
        })
    }

    /// Apply a driver's answer or a cancellation; returns the order afterwards. A driver's
    /// answer repeated (the same driver, fencing number and step as the answer that produced
    /// the order's state, e.g. a retry after a lost reply) returns the order and writes nothing.
    pub(crate) async fn transition(
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
            Err(TransitionError::NotArrived) => Err(DispatchError::NotArrived(order)),
            Err(TransitionError::Failed(e)) => Err(e),
            Err(other) => Err(DispatchError::Internal(anyhow::anyhow!(
                "unexpected transition outcome {other:?}"
            ))),
        }
    }

    /// Expire a due offer or re-queue a waiting order (timer scan); `true` when something was due.
    pub(crate) async fn fire_timer(&self, city: &str, order: &str) -> Result<bool, DispatchError> {
        let args = self.transition_args(Op::Timer, order, city);
        Ok(matches!(
            self.run_transition(&args).await?,
            TransitionReply::Changed { .. }
        ))
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
        let keys = self.store().keys().order_script(city, id);
        for step in steps {
            let mut args = self.transition_args(step.op(), id, city);
            args.answer = driver;
            pipe.add_command(evalsha(&ORDER_TRANSITION, &keys, &args.argv()));
        }
        let mut conn = self.store().conn();
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
}

/// What [`Dispatcher::dead_letter`] decided about a queue entry a worker took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetter {
    /// Its deliveries reached `queue_max_deliveries`: the entry is in the city's dead-letter
    /// stream, acknowledged, and the order failed (`failed` event), in one step.
    Moved,
    /// Below the limit: dispatch the order, as for a new entry.
    Deliverable,
    /// The order is gone or no longer pending: acknowledge the entry, as a dispatch would.
    Settled,
    /// The entry is no longer pending under this consumer (acknowledged, or taken over by
    /// another since): leave it to its holder.
    NotHeld,
}

impl Dispatcher {
    /// Look at queue entry `entry` of `order` that `consumer` just took over: dead-letter it
    /// (and fail the order) when its deliveries reached `queue_max_deliveries`. One run of
    /// `order_transition.lua` (`dead_letter`) reads the delivery count and writes, so no other
    /// take-over can slip between.
    pub(crate) async fn dead_letter(
        &self,
        city: &str,
        order: &str,
        entry: &str,
        consumer: &str,
    ) -> Result<DeadLetter, DispatchError> {
        let mut args = self.transition_args(Op::DeadLetter, order, city);
        args.queue_entry = Some(QueueEntry {
            group: DISPATCH_GROUP,
            id: entry,
            consumer,
            max_deliveries: self.settings().queue_max_deliveries,
        });
        Ok(match self.run_transition(&args).await? {
            TransitionReply::Changed { .. } => DeadLetter::Moved,
            TransitionReply::NotDue => DeadLetter::Deliverable,
            TransitionReply::Missing | TransitionReply::State(_) => DeadLetter::Settled,
            TransitionReply::NotHeld => DeadLetter::NotHeld,
            other => {
                return Err(DispatchError::Internal(anyhow::anyhow!(
                    "unexpected dead_letter reply {other:?}"
                )));
            }
        })
    }
}

/// Why `order_transition.lua` did not apply a change (a reply other than the one expected).
fn refusal(reply: TransitionReply) -> TransitionError {
    match reply {
        TransitionReply::Missing => TransitionError::Missing,
        TransitionReply::Exists => TransitionError::Exists,
        TransitionReply::ReadyEarly => TransitionError::ReadyEarly,
        TransitionReply::State(state) => TransitionError::State(state),
        TransitionReply::Fence => TransitionError::Fence,
        TransitionReply::Expired => TransitionError::Expired,
        TransitionReply::LockLost => TransitionError::LockLost,
        TransitionReply::NotArrived => TransitionError::NotArrived,
        other => TransitionError::Failed(DispatchError::Internal(anyhow::anyhow!(
            "unexpected order_transition reply {other:?}"
        ))),
    }
}
