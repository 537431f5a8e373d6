//! Driver positions: ingest (single and batch), shift status, reads, deletion and the liveness
//! sweeper. Owns the driver keys and the scripts that change them.
//!
//! Redis layout (prefix `gd`, city `paris`):
//! - `gd:{paris}:drivers`: hash `driver_id → "recorded_ms|lat|lon|S|V|accuracy|heading|speed"`,
//!   the state of every driver in the city, `S` and `V` one-letter codes of the status and the
//!   vehicle type (one short packed field per driver keeps memory small: without optional
//!   fields it fits a 48-byte allocation; the city is the hash's);
//! - `gd:{drivers}:city:<bucket>`: hashes `driver_id → city|recorded_ms`, the directory that
//!   finds a driver's city, split into [`DRIVER_BUCKETS`] buckets like the liveness index (the
//!   only global driver keys; no city script touches them, so every city script stays in one
//!   city's slot);
//! - `gd:{paris}:seen:<bucket>`: the liveness index, split into [`DRIVER_BUCKETS`] small
//!   sorted sets `driver_id → recorded_ms` (a driver's bucket is CRC16 of its id, see
//!   [`driver_bucket`]). Redis keeps a sorted set of up to 128 short members as one compact
//!   listpack, about 23 B per driver against about 105 B in one big sorted set;
//! - `gd:{paris}:seen:oldest`: sorted set `bucket → lower bound of its oldest recorded_ms`, so
//!   that search and the sweeper find the buckets that may hold stale drivers with one range
//!   query. A position keeps the bound (its driver only moves forward in time; a driver added to
//!   a bucket lowers it with `ZADD LT`), and the sweeper makes it exact ahead of the TTL, so a
//!   position costs one more command per bucket, not three;
//! - `gd:{paris}:geo:<status>`: one GEO set per status (members tagged with the vehicle type,
//!   `c:drv-1`), so that "available drivers near X" is one GEOSEARCH with no per-driver status
//!   filtering; a vehicle type is filtered from the tags.
//!
//! Every change goes through one Lua script (`lua/set_position.lua`, `set_status.lua`,
//! `delete_driver.lua`, `sweep_stale.lua`) that checks the stored state and writes all indexes
//! at once, so a stale or concurrent update can never leave the indexes half-moved.

mod migrate;
mod model;
mod routes;
mod sweeper;

pub use migrate::{MigrateReport, migrate_layout};
pub use model::{
    BatchPosition, BatchRequest, BatchResponse, BatchResult, BatchStatus, DriverState,
    DriverStatus, LocationUpdate, RecordedAt, ShiftStatus, StatusUpdate, ValidPosition,
    VehicleType, rfc3339_ms,
};
pub use routes::{
    PositionMode, PositionOutcome, configure, decode_positions, load_city, load_driver,
    path_driver, position_cmd, run_on_driver_city, set_position, store_positions,
};
pub use sweeper::{spawn_sweeper, sweep_city};

use crate::store::Keys;

/// A city's driver state hash.
pub fn state_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "drivers")
}

/// The bucket of the driver directory holding `id`'s entry (driver id → `city|recorded_ms`;
/// read outside scripts and written by `lua/driver_city_cas.lua`). The directory is split into
/// [`DRIVER_BUCKETS`] small hashes, which Redis keeps as compact listpacks (about 35 B per
/// driver against about 88 B in one big hash); all share the `{drivers}` hash tag, so the
/// compare-and-set script may take several.
pub fn directory_key(keys: &Keys, id: &str) -> String {
    keys.tagged("drivers", &format!("city:{}", driver_bucket(id)))
}

/// Buckets the per-driver liveness index and the driver directory are split into (see the
/// module doc). Sized so that a
/// city of 1M drivers averages 61 per bucket, well under the 128 entries Redis keeps in the
/// compact listpack encoding (`zset-max-listpack-entries`, `hash-max-listpack-entries`); beyond
/// about 1.5M drivers in one city (liveness) or in all (directory) buckets turn into ordinary
/// sorted sets and hashes: still correct, with the memory of one big key.
/// Changing it orphans existing buckets, so it is a constant, not a setting.
pub const DRIVER_BUCKETS: u16 = 16384;

/// The bucket of a driver's liveness and directory entries: CRC16 of its id, modulo
/// [`DRIVER_BUCKETS`].
pub fn driver_bucket(id: &str) -> u16 {
    crate::store::crc16(id.as_bytes()) % DRIVER_BUCKETS
}

/// A city's index of liveness buckets: bucket number → lower bound of the recorded_ms of its
/// oldest driver (exact after a sweep).
pub fn seen_key(keys: &Keys, city: &str) -> String {
    keys.city(city, "seen:oldest")
}

/// A city's liveness bucket `bucket`: driver id → recorded_ms.
pub fn seen_bucket_key(keys: &Keys, city: &str, bucket: u16) -> String {
    keys.city(city, &format!("seen:{bucket}"))
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

/// KEYS of a script that works on one city: state hash, liveness bucket index, score set, the
/// 3 GEO sets (scripts that write liveness buckets take those after these).
pub fn city_script_keys(keys: &Keys, city: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(7);
    out.push(state_key(keys, city));
    out.push(seen_key(keys, city));
    out.push(scores_key(keys, city));
    out.extend(all_geo_keys(keys, city));
    out
}

/// KEYS of a script that works on one driver of a city: [`city_script_keys`], then the
/// driver's liveness bucket.
pub fn driver_script_keys(keys: &Keys, city: &str, id: &str) -> Vec<String> {
    let mut out = city_script_keys(keys, city);
    out.push(seen_bucket_key(keys, city, driver_bucket(id)));
    out
}
