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

pub(crate) use city_id::CityId;
pub(crate) use coords::REDIS_MAX_LAT;
pub use coords::{GeoPoint, haversine_m};
pub(crate) use driver::ShiftStatus;
pub use driver::{DriverStatus, VehicleType};
pub(crate) use driver_id::DriverId;
pub(crate) use field_error::FieldError;
pub use order_id::OrderId;
pub use order_state::DispatchPolicy;
pub(crate) use order_state::OrderState;
pub(crate) use packed_state::PackedState;
pub use rate_policy::Policy;
pub(crate) use time::{MIN_RECORDED_MS, RecordedAt, rfc3339_ms};
