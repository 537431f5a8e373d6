//! Webhooks: order events POSTed to the endpoints administrators register, signed the
//! Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! - [`endpoints`]: registration, listing, changes, deletion; the secret is derived from
//!   `webhook_signing_key` and a salt, never stored ([`signing`]).
//! - [`safety`]: where messages may go (https, public addresses), checked at creation and by
//!   the delivery client's resolver.
//! - [`fanout`]: each city's event stream, read from a cursor in Redis, queued on the lanes
//!   of the endpoints that want each event.
//! - [`log`]: each endpoint's recent attempts, and the manual re-send of one message.
//! - [`delivery`]: senders that take due lanes under a lease, POST the head, retry on the
//!   schedule, dead-letter, disable failing endpoints.

pub(crate) mod delivery;
pub(crate) mod endpoints;
pub(crate) mod fanout;
pub(crate) mod log;
pub(crate) mod safety;
mod scripts;
pub(crate) mod signing;

pub use delivery::spawn;

use std::sync::Arc;

use crate::config::Settings;
use crate::domain::FieldError;
use crate::store::Store;

/// Every event type an endpoint may ask for (besides `*`): `order.` then the event stream's
/// type of an order transition, a driver's arrival events as the stream names them
/// (`driver.arrived_pickup`, `driver.arrived_dropoff`, `driver.left_pickup`), an idle
/// driver's `driver.reposition`, and `endpoint.disabled` (the service disabled another
/// endpoint).
pub const EVENT_TYPES: [&str; 14] = [
    "order.created",
    "order.offered",
    "order.accepted",
    "order.rejected",
    "order.expired",
    "order.picked_up",
    "order.delivered",
    "order.cancelled",
    "order.failed",
    "driver.arrived_pickup",
    "driver.arrived_dropoff",
    "driver.left_pickup",
    "driver.reposition",
    "endpoint.disabled",
];

/// Whether `id` has the form of an endpoint id (`wh_` and 16 hex digits); any other is
/// unknown without asking Redis.
pub(crate) fn valid_id(id: &str) -> bool {
    id.strip_prefix("wh_")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The member naming lane `lane` of endpoint `id` in the due set and the lease hash.
pub(crate) fn lane_member(id: &str, lane: u32) -> String {
    format!("{id}:{lane}")
}

/// Why a webhook request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebhookError {
    /// Invalid fields; nothing was written.
    #[error("invalid webhook request")]
    Validation(Vec<FieldError>),
    /// No endpoint (or delivery) has this id.
    #[error("no webhook endpoint or delivery {0}")]
    NotFound(String),
    /// The endpoint's backlog is full (`webhook_max_backlog`).
    #[error("the backlog of webhook endpoint {0} is full")]
    BacklogFull(String),
    /// `webhook_signing_key` is not set, so no secret can be made.
    #[error("webhooks need the webhook_signing_key setting")]
    NotConfigured,
    /// A Redis command failed; `context` names the step.
    #[error("Redis failed: {context}")]
    Redis {
        /// The step that failed.
        context: &'static str,
        /// Redis' error.
        #[source]
        source: redis::RedisError,
    },
}

impl WebhookError {
    /// Wrap a Redis error of step `context`.
    pub(crate) fn redis(context: &'static str) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| WebhookError::Redis { context, source }
    }
}

/// The webhook service: endpoints and their deliveries (cheap to clone).
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    settings: Arc<Settings>,
}

impl Webhooks {
    /// Webhooks stored in `store`, under `settings`.
    pub fn new(store: Store, settings: Arc<Settings>) -> Self {
        Self { store, settings }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }
}
