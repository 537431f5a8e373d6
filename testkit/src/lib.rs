//! The real-process harness of geodispatch, shared by the integration tests and the tools.
//!
//! - [`topology`]: Redis topologies of real `redis-server` processes on loopback ports (a
//!   standalone server, a Sentinel group, a Cluster), for the topology tests and the failover
//!   benchmark;
//! - [`faults`]: dispatch load over real `geodispatch serve` processes while a fault is
//!   injected (instances killed or paused, Redis restarted from its AOF, a Sentinel failover),
//!   with the safety report (lost acknowledged writes, double assignments, stuck orders);
//! - [`load`]: a small keep-alive HTTP/1.1 client and closed-loop load generator;
//! - [`rng`]: a seeded, dependency-free random generator, so a seed always gives the same data.
//!
//! Nothing here is linked into the service binary.

pub mod faults;
pub mod fleet;
pub mod load;
pub mod rng;
pub mod topology;

/// Epoch milliseconds by this machine's clock (local test Redis servers share it).
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
