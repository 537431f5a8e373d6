//! Driver positions: ingest (single and batch), shift status, reads, deletion and the liveness
//! sweeper. Owns the driver keys and the scripts that change them.
//!
//! Redis layout (prefix `gd`, city `paris`):
//! - `gd:{paris}:drivers`: hash `driver_id → "city|recorded_ms|lat|lon|status|vehicle|accuracy|heading|speed"`,
//!   the state of every driver in the city (one packed field per driver keeps memory small);
//! - `gd:drivers:city`: hash `driver_id → city`, the directory that finds a driver's city (the
//!   only global driver key; no script touches it, so every script stays in one city's slot);
//! - `gd:{paris}:seen`: sorted set `driver_id → recorded_ms`, the liveness index;
//! - `gd:{paris}:geo:<status>:<vehicle>`: one GEO set per status and vehicle type, so that
//!   "available cars near X" is one GEOSEARCH with no per-driver filtering.
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

/// A city's GEO set of drivers with `status` and `vehicle` (plain driver ids), or with
/// `status` and any vehicle when `vehicle` is `None` (members tagged with the vehicle type, see
/// [`VehicleType::tag`]). Both exist so that a search, filtered by vehicle or not, is one
/// GEOSEARCH per status.
pub fn geo_key(
    keys: &Keys,
    city: &str,
    status: DriverStatus,
    vehicle: Option<VehicleType>,
) -> String {
    match vehicle {
        Some(v) => keys.city(city, &format!("geo:{}:{}", status.as_str(), v.as_str())),
        None => keys.city(city, &format!("geo:{}", status.as_str())),
    }
}

/// A city's 15 GEO sets in the order the scripts expect: per status (available, busy,
/// offline), the all-vehicles set, then bike, scooter, car, van.
pub fn all_geo_keys(keys: &Keys, city: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(15);
    for status in DriverStatus::ALL {
        out.push(geo_key(keys, city, status, None));
        for vehicle in VehicleType::ALL {
            out.push(geo_key(keys, city, status, Some(vehicle)));
        }
    }
    out
}

/// A city's driver score sorted set (the leaderboard; owned by [`crate::ranking`]).
pub fn scores_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "scores")
}

/// KEYS of a script that works on one city: state hash, seen set, score set, the 15 GEO sets.
pub fn city_script_keys(keys: &Keys, city: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(18);
    out.push(state_key(keys, city));
    out.push(seen_key(keys, city));
    out.push(scores_key(keys, city));
    out.extend(all_geo_keys(keys, city));
    out
}
