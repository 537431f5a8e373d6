//! geodispatch: a delivery-dispatch microservice on Redis.
//!
//! Driver phones post GPS positions; the service keeps them in Redis GEO indexes, answers
//! "who is near this point", ranks candidates with sorted sets and assigns each order to exactly
//! one driver under an atomic Redis lock.
//!
//! # Layout
//! Layers, bottom to top; a module imports only from its own layer or a lower one
//! (`tests/architecture.rs` checks it; docs/ARCHITECTURE.md draws it):
//! - [`domain`]: validated value types (ids, coordinates, vehicle types, states, policies,
//!   time on the wire). Imports nothing from the crate.
//! - Redis access and plumbing: [`store`] (connections and topologies, the one key schema in
//!   `store::keys`, the script registry of `lua/`, a supervised local `redis-server`),
//!   [`config`] (defaults < TOML < `GEODISPATCH_*`), `metrics` (the Prometheus registry).
//! - Capabilities, each a service with its own error type: [`cities`] (service areas),
//!   [`drivers`] (position ingest, status, directory, liveness sweeper), `search` (nearest-k),
//!   `ranking` (scores, leaderboard, candidate ranking), [`lock`] (leases with fencing numbers,
//!   Redlock), [`dispatch`] (orders, locked greedy dispatch, batched matching rounds, offers,
//!   queue workers and timers), `auth`, [`ratelimit`], [`events`] (the per-city event stream
//!   and the invariant checker that replays it), [`webhooks`] (endpoints, signed at-least-once
//!   delivery of order events).
//! - [`http`]: thin handlers, problem+json errors, extractors, request-id middleware, health
//!   probes, the live map, `/metrics` and the OpenAPI document.
//! - [`app`]: wiring, `serve` (own local Redis when none is configured, seed loading, graceful
//!   shutdown) and `migrate`.
//!
//! The benchmarks, the simulator and the seed generator live in the `geodispatch-tools` crate
//! (`tools/`), the real-process Redis harness in `geodispatch-testkit` (`testkit/`).
//!
//! # A request's path
//! actix-web → the request-id middleware of `http` (id, span, access log) → an `http` handler
//! (extractors validate into `domain` types) → a capability service → one script or command on
//! the shared multiplexed Redis connection → JSON answer, or the capability's error mapped to
//! problem+json.

pub mod app;
pub(crate) mod auth;
pub mod cities;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod drivers;
pub mod events;
pub mod http;
pub mod lock;
pub(crate) mod metrics;
pub(crate) mod ranking;
pub mod ratelimit;
pub(crate) mod search;
pub mod store;
pub mod webhooks;
