//! The registry of every Lua script the service runs.
//!
//! Each capability module owns its scripts (a `static` [`redis::Script`] built from a file in
//! `lua/` with `include_str!`, so each is hashed once per process); this list is what readiness
//! checks and loads into Redis.

use redis::Script;

/// Every script of every module.
pub fn all() -> Vec<&'static Script> {
    Vec::new()
}
