//! Validated value types. Each is built only through a fallible `parse`, so every value that
//! passes a handler's boundary is valid and the rest of the code never re-checks it.

mod city_id;
mod coords;
mod driver_id;
mod order_id;

pub use city_id::CityId;
pub use coords::{GeoPoint, Latitude, Longitude, REDIS_EARTH_RADIUS_M, REDIS_MAX_LAT, haversine_m};
pub use driver_id::DriverId;
pub use order_id::OrderId;
