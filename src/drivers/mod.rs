//! Driver positions: ingest (single and batch), shift status, reads, deletion and the liveness
//! sweeper. Owns the driver keys and the scripts that change them.
//!
//! Redis layout (prefix `gd`, city `paris`):
//! - `gd:{paris}:drivers`: hash `driver_id → "city|recorded_ms|lat|lon|status|vehicle|accuracy|heading|speed"`,
//!   the state of every driver in the city (one packed field per driver keeps memory small);
//! - `gd:drivers:city`: hash `driver_id → city`, the directory that finds a driver's city (the
//!   only global driver key; no script touches it, so every script stays in one city's slot);
//! - `gd:{paris}:seen`: sorted set `driver_id → recorded_ms`, the liveness index;
//! - `gd:{paris}:geo:<status>`: one GEO set per status (members tagged with the vehicle type,
//!   `c:drv-1`), so that "available drivers near X" is one GEOSEARCH with no per-driver status
//!   filtering; a vehicle type is filtered from the tags.
//!
//! Every change goes through one Lua script (`lua/set_position.lua`, `set_status.lua`,
//! `delete_driver.lua`, `sweep_stale.lua`) that checks the stored state and writes all indexes
//! at once, so a stale or concurrent update can never leave the indexes half-moved.

mod model;
mod routes;
mod sweeper;

use std::sync::LazyLock;

pub use model::{
    BatchPosition, BatchRequest, BatchResponse, BatchResult, BatchStatus, DriverState,
    DriverStatus, LocationUpdate, RecordedAt, ShiftStatus, StatusUpdate, ValidPosition,
    VehicleType, rfc3339_ms,
};
use redis::Script;
pub use routes::{
    PositionMode, PositionOutcome, configure, decode_positions, load_city, load_driver,
    path_driver, position_cmd, run_on_driver_city, set_position, store_positions,
};
pub use sweeper::{spawn_sweeper, sweep_city};

use crate::store::Keys;

/// `lua/set_position.lua`.
pub static SET_POSITION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/set_position.lua")));
/// `lua/set_status.lua`.
pub static SET_STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/set_status.lua")));
/// `lua/delete_driver.lua`.
pub static DELETE_DRIVER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/delete_driver.lua")));
/// `lua/driver_city_cas.lua`.
pub static CITY_CAS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/driver_city_cas.lua")));
/// `lua/sweep_stale.lua`.
pub static SWEEP_STALE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/sweep_stale.lua")));

/// This module's scripts (for the readiness registry).
pub fn scripts() -> [&'static Script; 5] {
    [
        &SET_POSITION,
        &SET_STATUS,
        &DELETE_DRIVER,
        &CITY_CAS,
        &SWEEP_STALE,
    ]
}

/// A city's driver state hash.
pub fn state_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "drivers")
}

/// The driver directory: driver id → city (global; read and written outside scripts).
pub fn directory_key(keys: &Keys) -> String {
    keys.global("drivers:city")
}

/// A city's last-seen sorted set.
pub fn seen_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "seen")
}

/// A city's GEO set of drivers with `status`, every vehicle type: members are tagged with the
/// vehicle type ([`VehicleType::tag`], `c:drv-1`), so a search learns each driver's type and
/// filters by it. One set per status (not per status and vehicle type) keeps a driver to one
/// GEO entry: about 100 B of Redis memory and one GEOADD per position.
pub fn geo_key(keys: &Keys, city: &str, status: DriverStatus) -> String {
    keys.city(city, &format!("geo:{}", status.as_str()))
}

/// A city's 3 GEO sets in the order the scripts expect: available, busy, offline.
pub fn all_geo_keys(keys: &Keys, city: &str) -> Vec<String> {
    DriverStatus::ALL
        .iter()
        .map(|&status| geo_key(keys, city, status))
        .collect()
}

/// A city's driver score sorted set (the leaderboard; owned by [`crate::ranking`]).
pub fn scores_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "scores")
}

/// KEYS of a script that works on one city: state hash, seen set, score set, the 3 GEO sets.
pub fn city_script_keys(keys: &Keys, city: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(6);
    out.push(state_key(keys, city));
    out.push(seen_key(keys, city));
    out.push(scores_key(keys, city));
    out.extend(all_geo_keys(keys, city));
    out
}
