//! geodispatch: a delivery-dispatch microservice on Redis.
//!
//! Driver phones post GPS positions; the service keeps them in Redis GEO indexes, answers
//! "who is near this point", ranks candidates with sorted sets and assigns each order to exactly
//! one driver under an atomic Redis lock.
//!
//! # Layout
//! - [`startup`] builds the actix-web application: middleware, app data, routes of every
//!   capability module under `/v1`, Swagger UI at `/docs/`; [`startup::serve`] is the `serve`
//!   command (own local Redis when none is configured, seed loading, graceful shutdown).
//! - Plumbing: [`config`] (defaults < TOML < `GEODISPATCH_*`), [`telemetry`] (tracing, request
//!   ids), [`error`] (the problem+json error type), [`extract`] (JSON bodies with limits and
//!   field-precise errors), [`store`] (Redis connections and key names), [`scripts`] (registry
//!   of the Lua scripts in `lua/`), [`redis_local`] (a supervised `redis-server` child),
//!   [`openapi`] (the spec).
//! - Domain: [`domain`] holds the validated value types (coordinates, ids).
//! - Capabilities, each owning its routes, types, keys and scripts: [`cities`] (service areas),
//!   [`health`] (liveness/readiness), [`drivers`] (position ingest, status, liveness sweeper),
//!   [`search`] (nearest-k search), [`ranking`] (scores, leaderboard, candidate ranking),
//!   [`seed`] (seed data generation and loading), [`lock`] (leases with fencing numbers and
//!   renewal), [`dispatch`] (orders, locked dispatch, offers, queue workers and timers),
//!   [`events`] (the per-city event stream as SSE, and the invariant checker that replays it).
//! - [`map`] (the live map page) and [`metrics`] (`/metrics`); [`auth`] and [`ratelimit`]
//!   (protection of `/v1`).
//!
//! The benchmarks, the simulator and the seed generator live in the `geodispatch-tools` crate
//! (`tools/`), the real-process Redis harness in `geodispatch-testkit` (`testkit/`).
//!
//! # A request's path
//! actix-web → `telemetry::request_id_middleware` (id, span, access log) → a capability handler
//! (extractors validate into `domain` types, errors become problem+json) → one script or
//! command on the shared multiplexed Redis connection → JSON answer.

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
