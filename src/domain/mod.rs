//! Validated value types. Each is built only through a fallible `parse`, so every value that
//! passes a handler's boundary is valid and the rest of the code never re-checks it. Nothing
//! here imports from the rest of the crate; a validation failure is a [`FieldError`].

mod city_id;
mod coords;
mod driver;
pub(crate) mod driver_id;
mod field_error;
mod order_id;
mod order_state;
mod packed_state;
mod rate_policy;
mod time;

pub use city_id::CityId;
pub use coords::{GeoPoint, Latitude, Longitude, REDIS_EARTH_RADIUS_M, REDIS_MAX_LAT, haversine_m};
pub use driver::{DriverStatus, ShiftStatus, VehicleType};
pub use driver_id::DriverId;
pub use field_error::FieldError;
pub use order_id::OrderId;
pub use order_state::{DispatchPolicy, OrderState};
pub use packed_state::PackedState;
pub use rate_policy::Policy;
pub use time::{MIN_RECORDED_MS, RecordedAt, rfc3339_ms};
