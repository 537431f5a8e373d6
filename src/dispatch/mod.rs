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
//!    them (the composite of `ranking::rank_candidates`) and checks
//!    in one step that the token still holds the lock, that no later fencing number touched the
//!    order, that the order is pending and that the driver is available and fresh, and only then
//!    moves the driver to `busy` and records the offer with its fencing number.
//! 3. The driver answers with its `driver_id` and `fencing_token`; `order_transition.lua`
//!    refuses any other pair (`stale-fencing-token`), so a late or foreign answer changes
//!    nothing. An unanswered offer expires (timer scan in [`workers`]), the driver is freed and
//!    excluded, and the order is queued again.
//! 4. Every transition appends to the city's event stream and publishes on Pub/Sub in the same
//!    script (`GET /v1/events` serves them as SSE), so the stream is an exact history that the
//!    invariant checker ([`crate::events::check_invariants`]) can replay.
//!
//! The operations clients ask for (`operations.rs`: create, with idempotency keys in
//! `idempotency.rs`; cancel; dispatch now; a driver's answer) fail with a [`DispatchError`]
//! that names what went wrong; the HTTP layer decides how each is answered.

mod assignment;
pub mod engine;
mod error;
mod idempotency;
pub mod matcher;
mod model;
mod operations;
mod order_scripts;
mod reposition;
mod transitions;
pub mod workers;

pub use engine::Claim;
pub(crate) use engine::Dispatcher;
pub(crate) use error::DispatchError;
pub use model::DispatchMode;
pub use model::DispatchResult;
pub use model::OrderSpec;
pub(crate) use model::{CreateOrder, Order, TokenBody};
pub(crate) use operations::CreatedOrder;
pub use transitions::Transition;
pub(crate) use transitions::TransitionError;
