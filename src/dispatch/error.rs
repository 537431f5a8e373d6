//! Why an order operation failed, in the order's own terms. The HTTP layer decides what each
//! case is answered with; nothing here knows about statuses.

use crate::domain::FieldError;
use crate::store::ReplicationError;

use super::transitions::Transition;

/// The error of every dispatch operation: creating, reading, dispatching and answering orders.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Fields of the request are invalid; nothing was written.
    #[error("invalid order: {}", FieldError::list(.0))]
    Validation(Vec<FieldError>),
    /// The pickup lies outside every service area; nothing was written.
    #[error("the point ({lat}, {lon}) lies outside every service area")]
    OutsideServiceArea {
        /// Latitude of the pickup.
        lat: f64,
        /// Longitude of the pickup.
        lon: f64,
    },
    /// An idempotency key was sent again with another request body; nothing was written.
    #[error("the idempotency key was already used with a different request body")]
    IdempotencyKeyReused,
    /// No order has this id.
    #[error("order {0} does not exist")]
    OrderNotFound(String),
    /// The order id is taken (create); nothing was written.
    #[error("order {0} already exists; nothing was written")]
    OrderExists(String),
    /// The transition does not leave from the order's current state; nothing was changed.
    #[error(
        "order {order} is {state}; {} needs it {}; nothing was changed",
        .transition.name(),
        .transition.needs()
    )]
    InvalidTransition {
        /// The order.
        order: String,
        /// Its current state.
        state: String,
        /// The transition asked for.
        transition: Transition,
    },
    /// The answering driver and fencing number are not the order's current offer (a stale,
    /// foreign or superseded one); nothing was changed.
    #[error(
        "order {0} is not currently offered to this driver with this fencing token (a stale, foreign or superseded offer); nothing was changed"
    )]
    StaleFencingToken(String),
    /// The offer expired before the driver accepted it; nothing was changed.
    #[error("the offer of order {0} expired; nothing was changed")]
    OfferExpired(String),
    /// `deliver` before the driver's arrival at the drop-off was detected, with
    /// `require_arrival_for_delivery` on; nothing was changed.
    #[error(
        "order {0} cannot be delivered yet: no arrival of its driver at the drop-off was detected (require_arrival_for_delivery); nothing was changed"
    )]
    NotArrived(String),
    /// Nobody eligible within the dispatch radius; the order stays pending.
    #[error(
        "no available driver within {radius_m} m of the pickup of order {order}; it stays pending"
    )]
    NoDriverAvailable {
        /// The order.
        order: String,
        /// The dispatch radius searched.
        radius_m: f64,
    },
    /// Another dispatch holds the order's lock.
    #[error("another dispatch of order {0} is running")]
    DispatchInProgress(String),
    /// The dispatch lost the order's lock before its claim (a pause longer than the lock's
    /// time to live); nothing was changed.
    #[error("the dispatch of order {0} lost its lock to another dispatch; nothing was changed")]
    LockLost(String),
    /// The order is no longer pending, so there is nothing to dispatch; nothing was changed.
    #[error("order {order} is {state}, not pending; nothing was changed")]
    OrderNotPending {
        /// The order.
        order: String,
        /// Its current state.
        state: String,
    },
    /// Too few Redlock nodes answered to take the dispatch lock.
    #[error("the dispatch lock service has too few nodes; retry shortly")]
    LockQuorumLost,
    /// The write was made but too few replicas confirmed it, so it must not be acknowledged.
    #[error(transparent)]
    NotReplicated(#[from] ReplicationError),
    /// The search for candidate drivers failed.
    #[error("the candidate search failed")]
    Search(#[source] crate::search::SearchError),
    /// A Redis command failed; `context` names the step.
    #[error("Redis failed: {context}")]
    Redis {
        /// The step that failed.
        context: &'static str,
        /// Redis' error.
        #[source]
        source: redis::RedisError,
    },
    /// Anything unexpected (an undecodable stored order or script reply, …).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DispatchError {
    /// Wrap a Redis error of the step `context` (for `map_err`).
    pub(crate) fn redis(context: &'static str) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| DispatchError::Redis { context, source }
    }
}
