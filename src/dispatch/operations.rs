//! The order operations clients ask for: create (with safe retries), cancel, dispatch now, and
//! a driver's answer. Each validates what it was given, changes the order through the engine
//! and succeeds only once `redis_wait_replicas` replicas confirmed the write, so an
//! acknowledged change survives a failover.

use super::engine::{DispatchOutcome, Dispatcher};
use super::error::DispatchError;
use super::idempotency::{Idempotency, Reservation};
use super::model::{CreateOrder, DispatchMode, DispatchResult, Order, OrderSpec};
use super::transitions::{Transition, TransitionError};
use crate::domain::{DispatchPolicy, DriverId, FieldError, OrderId};

/// What creating an order answers.
#[derive(Debug)]
pub(crate) enum CreatedOrder {
    /// The order as created (with `dispatch: now`, already offered when a driver was found).
    New(Box<Order>),
    /// The recorded answer to the first request with the same idempotency key and body.
    Replayed(serde_json::Value),
}

impl Dispatcher {
    /// Create an order in the city of its pickup and, with `dispatch: now`, dispatch it in the
    /// same call. With an `idempotency_key`, a repeat of the same request is answered with the
    /// first answer (or completes the first request if it never answered) and another request
    /// with that key is refused.
    pub(crate) async fn create_order(
        &self,
        request: CreateOrder,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedOrder, DispatchError> {
        let generation = self.generation();
        let mut errors: Vec<FieldError> = Vec::new();
        let id = match &request.order_id {
            Some(raw) => OrderId::parse(raw)
                .map_err(|e| errors.push(FieldError::new("order_id", e)))
                .ok(),
            None => Some(OrderId::generate()),
        };
        let points = request.validate().map_err(|e| errors.extend(e)).ok();
        let (Some(mut id), Some((pickup, dropoff))) = (id, points) else {
            return Err(DispatchError::Validation(errors));
        };
        let city = self
            .cities()
            .resolve(pickup)
            .ok_or(DispatchError::OutsideServiceArea {
                lat: pickup.lat,
                lon: pickup.lon,
            })?
            .id
            .to_string();
        let idempotency = match idempotency_key {
            Some(key) => {
                let body = serde_json::to_string(&request).map_err(anyhow::Error::from)?;
                Some(Idempotency::new(self.store(), key, body))
            }
            None => None,
        };
        let mut resumed = false;
        if let Some(idempotency) = &idempotency {
            let ttl_ms = self.settings().idempotency_ttl_ms;
            match idempotency.reserve(self.store(), ttl_ms, &id).await? {
                Reservation::First => {}
                Reservation::Answered(answer) => return Ok(CreatedOrder::Replayed(answer)),
                Reservation::Unfinished(first) => {
                    resumed = true;
                    id = first;
                }
            }
        }
        let spec = OrderSpec {
            pickup,
            dropoff,
            vehicle: request.vehicle_type,
            mode: request.dispatch,
            ready_ms: request.ready_at.map(|t| t.0),
        };
        // Under the batched policy every order waits for its city's next round.
        let now = request.dispatch == DispatchMode::Now
            && self.settings().dispatch_policy == DispatchPolicy::Greedy;
        let created = if now {
            // Created and locked in one script, then dispatched; a dispatch failure leaves a
            // pending order that the retry timer re-queues.
            self.create_and_dispatch(&id, &city, &spec, false)
                .await
                .map(|dispatched| {
                    if let Err(err) = dispatched {
                        tracing::warn!(order = %id, error = &err as &dyn std::error::Error, "dispatch at creation failed; the order waits for a retry");
                    }
                })
        } else {
            self.create(&id, &city, &spec).await
        };
        match created {
            Ok(()) => {}
            Err(TransitionError::Exists) if resumed => {
                // A repeat of a request that did not finish: complete its dispatch.
                if now && let Err(err) = self.dispatch_in(&city, id.as_str(), false).await {
                    tracing::warn!(order = %id, error = &err as &dyn std::error::Error, "dispatch of a repeated request failed");
                }
            }
            Err(TransitionError::Exists) => return Err(DispatchError::OrderExists(id.to_string())),
            Err(TransitionError::ReadyEarly) => {
                return Err(DispatchError::Validation(vec![FieldError::new(
                    "ready_at",
                    "must not be before the order's creation",
                )]));
            }
            Err(TransitionError::Failed(e)) => return Err(e),
            Err(other) => {
                return Err(DispatchError::Internal(anyhow::anyhow!(
                    "unexpected create outcome {other:?}"
                )));
            }
        }
        let order = self.load_in(&city, id.as_str()).await?;
        // Confirmed on the replicas before the answer is recorded for replays: a replay of an
        // unconfirmed creation goes through the whole path (and this wait) again.
        self.replicated(generation).await?;
        if let Some(idempotency) = &idempotency {
            idempotency.record(self.store(), &id, &order).await?;
        }
        Ok(CreatedOrder::New(Box::new(order)))
    }

    /// Cancel an order (pending, offered, accepted or picked up), freeing its driver if any;
    /// the order afterwards.
    pub(crate) async fn cancel_order(&self, id: &OrderId) -> Result<Order, DispatchError> {
        let generation = self.generation();
        let order = self.transition(id, Transition::Cancel, None).await?;
        self.replicated(generation).await?;
        Ok(order)
    }

    /// Dispatch a pending order now; anything but an offer is an error that says why not.
    pub(crate) async fn dispatch_order(
        &self,
        id: &OrderId,
    ) -> Result<DispatchResult, DispatchError> {
        let generation = self.generation();
        let order = id.to_string();
        match self.dispatch(id).await? {
            DispatchOutcome::Offered(result) => {
                self.replicated(generation).await?;
                Ok(result)
            }
            DispatchOutcome::NoDriver => Err(DispatchError::NoDriverAvailable {
                order,
                radius_m: self.settings().dispatch_radius_m,
            }),
            DispatchOutcome::Locked => Err(DispatchError::DispatchInProgress(order)),
            DispatchOutcome::NotPending(state) => {
                Err(DispatchError::OrderNotPending { order, state })
            }
            DispatchOutcome::LockLost => Err(DispatchError::LockLost(order)),
        }
    }

    /// A driver's answer to its offer (`transition` is accept, reject, pickup or deliver),
    /// with the fencing number it received; the order afterwards.
    pub(crate) async fn answer_offer(
        &self,
        id: &OrderId,
        transition: Transition,
        driver: &DriverId,
        fencing_token: u64,
    ) -> Result<Order, DispatchError> {
        let generation = self.generation();
        let order = self
            .transition(id, transition, Some((driver.as_str(), fencing_token)))
            .await?;
        self.replicated(generation).await?;
        Ok(order)
    }

    /// The current connection generation ([`crate::store::RedisConn::generation`]), read
    /// before an operation writes.
    fn generation(&self) -> u64 {
        self.store().conn().generation()
    }

    /// Wait for `redis_wait_replicas` replicas to confirm the writes made since `generation`.
    async fn replicated(&self, generation: u64) -> Result<(), DispatchError> {
        let s = self.settings();
        self.store()
            .wait_replicas(
                s.redis_wait_replicas,
                std::time::Duration::from_millis(s.redis_wait_timeout_ms),
                generation,
            )
            .await?;
        Ok(())
    }
}
