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
//!
//! Files: `service.rs` and `batch.rs` hold the operations the HTTP layer and other
//! capabilities call (one position, a batch, reads, shift status, deletion, a city's indexed
//! drivers); `ingest.rs` stores positions, `moves.rs` brings a driver into a city that does not
//! hold it yet, `directory.rs` reads and compare-and-sets the directory; `scripts.rs` holds the
//! typed arguments and replies of the driver scripts; `model.rs` holds the
//! request and response types and their validation, `error.rs` what can go wrong;
//! `sweeper.rs` and `migrate.rs` are the liveness sweeper and the layout migration.
//!
//! [`DRIVER_BUCKETS`]: crate::store::keys::DRIVER_BUCKETS

mod batch;
mod directory;
mod error;
mod ingest;
mod migrate;
mod model;
mod moves;
mod scripts;
mod service;
mod sweeper;

pub(crate) use batch::{BatchItem, store_batch};
pub(crate) use directory::load_city;
pub(crate) use error::{DriverError, ahead_of_clock};
pub(crate) use ingest::PositionOutcome;
pub use migrate::{MigrateReport, migrate_layout};
pub(crate) use model::{
    BatchRequest, BatchResponse, DriverState, LocationUpdate, RecordedAt, ShiftStatus,
    StatusUpdate, parse_driver_id,
};
pub use model::{DriverStatus, VehicleType};
pub(crate) use service::{
    delete_driver, indexed_drivers, load_driver, run_on_driver_city, set_status, store_positions,
    update_position,
};
pub(crate) use sweeper::spawn_sweeper;
pub use sweeper::sweep_city;

pub use crate::store::keys::driver_bucket;
