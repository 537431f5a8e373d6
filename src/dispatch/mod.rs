//! Orders and locked dispatch: exactly one driver per order, and at most one order per driver,
//! under any number of workers in any number of service instances.
//!
//! An order lives in its pickup city's hash slot (`{prefix}:{city}:order:<id>`); a global
//! directory (`{prefix}:orders`) maps order ids to cities. Its life:
//!
//! 1. `POST /v1/orders` creates it with `lua/order_transition.lua` (`create`). `dispatch: now`
//!    dispatches it in the request; `queued` appends it to the city's dispatch stream, which a
//!    consumer group of workers ([`workers`]) reads.
//! 2. A dispatch ([`engine::Dispatcher::dispatch`]) takes the order's lock (`SET NX PX`, random
//!    token, a fencing number from the city's counter; see [`crate::lock`]) and keeps it renewed,
//!    finds the nearest candidates ([`crate::search::search`]), then `lua/claim_offer.lua` ranks
//!    them (the composite of [`crate::ranking::rank_candidates`]) and checks
//!    in one step that the token still holds the lock, that no later fencing number touched the
//!    order, that the order is pending and that the driver is available and fresh, and only then
//!    moves the driver to `busy` and records the offer with its fencing number.
//! 3. The driver answers with its `driver_id` and `fencing_token`; `order_transition.lua`
//!    refuses any other pair (`stale-fencing-token`), so a late or foreign answer changes
//!    nothing. An unanswered offer expires (timer scan in [`workers`]), the driver is freed and
//!    excluded, and the order is queued again.
//! 4. Every transition appends to the city's event stream and publishes on Pub/Sub in the same
//!    script ([`crate::events`] serves them as SSE), so the stream is an exact history that the
//!    invariant checker ([`crate::events::check_invariants`]) can replay.

pub mod engine;
mod model;
mod order_scripts;
mod routes;
pub mod workers;

pub use engine::{Claim, Dispatcher, Transition, TransitionError};
pub use model::{
    CreateOrder, DispatchMode, DispatchResult, Order, OrderState, PickupPoint, TokenBody,
};
pub use routes::configure;

use crate::drivers::{all_geo_keys, scores_key, state_key};
use crate::store::Keys;

/// The global order directory: order id → city.
pub fn directory_key(keys: &Keys) -> String {
    keys.global("orders")
}

/// An order's hash.
pub fn order_key(keys: &Keys, city: &str, order: &str) -> String {
    keys.city(city, &format!("order:{order}"))
}

/// The drivers an order may not be offered to again (they rejected it or let it expire).
pub fn excluded_key(keys: &Keys, city: &str, order: &str) -> String {
    keys.city(city, &format!("order:{order}:excluded"))
}

/// An order's dispatch lock.
pub fn lock_key(keys: &Keys, city: &str, order: &str) -> String {
    keys.city(city, &format!("lock:order:{order}"))
}

/// A city's fencing counter (INCR per lock acquisition).
pub fn fence_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "fence")
}

/// A city's active assignments: driver id → order id.
pub fn assignments_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "assignments")
}

/// A city's timers: order id → due time in ms (offer expiry, dispatch retry).
pub fn timers_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "timers")
}

/// A city's dispatch queue stream.
pub fn queue_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "dispatch")
}

/// A city's event stream.
pub fn events_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "events")
}

/// A city's Pub/Sub channel for ops (every order event of the city).
pub fn ops_channel(keys: &Keys, city: &str) -> String {
    keys.global(&format!("events:{city}"))
}

/// Prefix of the per-driver Pub/Sub channels (`{prefix}:driver:<id>`, offers and their fate).
pub fn driver_channel_prefix(keys: &Keys) -> String {
    keys.global("driver:")
}

/// The idempotency record of an `Idempotency-Key`.
pub fn idempotency_key(keys: &Keys, key: &str) -> String {
    keys.global(&format!("idem:{key}"))
}

/// The consumer group of the dispatch workers.
pub const GROUP: &str = "dispatchers";

/// KEYS of `claim_offer.lua` and `order_transition.lua` for `order` in `city` (the driver keys
/// are the city's too: a busy driver stays in its order's city).
pub fn order_script_keys(keys: &Keys, city: &str, order: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(13);
    out.push(order_key(keys, city, order));
    out.push(state_key(keys, city));
    out.push(assignments_key(keys, city));
    out.push(excluded_key(keys, city, order));
    out.push(timers_key(keys, city));
    out.push(events_key(keys, city));
    out.push(queue_key(keys, city));
    out.push(lock_key(keys, city, order));
    out.push(scores_key(keys, city));
    out.extend(all_geo_keys(keys, city));
    out.push(fence_key(keys, city));
    out
}
