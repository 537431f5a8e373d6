//! Request and response types of the drivers API, and the packed state format.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{DriverId, FieldError, GeoPoint, MIN_RECORDED_MS, PackedState};
pub use crate::domain::{DriverStatus, VehicleType};
pub(crate) use crate::domain::{RecordedAt, ShiftStatus, rfc3339_ms};

/// `PUT /v1/drivers/{driver_id}/location` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lat": 48.8566, "lon": 2.3522, "recorded_at": "2026-11-23T18:30:00.250Z", "accuracy_m": 8.5, "heading_deg": 90.0, "speed_mps": 6.2, "vehicle_type": "scooter", "status": "available"}))]
pub(crate) struct LocationUpdate {
    /// Latitude in degrees, within ±85.05112878 (Redis GEO limit); stored rounded to 7 decimal
    /// places (about 1 cm).
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub(crate) lat: f64,
    /// Longitude in degrees, within ±180; stored rounded to 7 decimal places.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub(crate) lon: f64,
    /// When the phone recorded the position: RFC 3339 or epoch milliseconds. Older than the
    /// stored position: 409 `stale-position`; more than the allowed skew in the future: 422.
    pub(crate) recorded_at: RecordedAt,
    /// Horizontal accuracy in metres (0–10000).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 10000.0)]
    pub(crate) accuracy_m: Option<f64>,
    /// Heading in degrees clockwise from north (0 ≤ h < 360).
    #[serde(default)]
    #[schema(minimum = 0.0, exclusive_maximum = 360.0)]
    pub(crate) heading_deg: Option<f64>,
    /// Speed in metres per second (0–150).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 150.0)]
    pub(crate) speed_mps: Option<f64>,
    /// Vehicle type; kept when absent (a new driver defaults to `car`).
    #[serde(default)]
    pub(crate) vehicle_type: Option<VehicleType>,
    /// Go on (`available`) or off (`offline`) shift in the same call; kept when absent (a new
    /// driver starts `available`). Ignored while the driver is `busy` with an order.
    #[serde(default)]
    pub(crate) status: Option<ShiftStatus>,
}

/// One item of a batch: a [`LocationUpdate`] plus its driver id.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchPosition {
    /// Driver id: 1–64 characters of `[A-Za-z0-9_-]`.
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub(crate) driver_id: String,
    /// Latitude in degrees, within ±85.05112878 (stored rounded to 7 decimal places, about
    /// 1 cm).
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub(crate) lat: f64,
    /// Longitude in degrees, within ±180 (stored rounded to 7 decimal places).
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub(crate) lon: f64,
    /// RFC 3339 or epoch milliseconds.
    pub(crate) recorded_at: RecordedAt,
    /// Horizontal accuracy in metres (0–10000).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 10000.0)]
    pub(crate) accuracy_m: Option<f64>,
    /// Heading in degrees clockwise from north (0 ≤ h < 360).
    #[serde(default)]
    #[schema(minimum = 0.0, exclusive_maximum = 360.0)]
    pub(crate) heading_deg: Option<f64>,
    /// Speed in metres per second (0–150).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 150.0)]
    pub(crate) speed_mps: Option<f64>,
    /// Vehicle type.
    #[serde(default)]
    pub(crate) vehicle_type: Option<VehicleType>,
    /// `available` or `offline`.
    #[serde(default)]
    pub(crate) status: Option<ShiftStatus>,
}

impl BatchPosition {
    /// Split into the driver id (unvalidated) and the update.
    pub(crate) fn into_parts(self) -> (String, LocationUpdate) {
        (
            self.driver_id,
            LocationUpdate {
                lat: self.lat,
                lon: self.lon,
                recorded_at: self.recorded_at,
                accuracy_m: self.accuracy_m,
                heading_deg: self.heading_deg,
                speed_mps: self.speed_mps,
                vehicle_type: self.vehicle_type,
                status: self.status,
            },
        )
    }
}

/// `POST /v1/locations/batch` body. Items are validated one by one: a bad item is reported as
/// `invalid` in its result and never blocks the others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"positions": [
    {"driver_id": "drv-1", "lat": 48.8566, "lon": 2.3522, "recorded_at": 1795458600250_i64},
    {"driver_id": "drv-2", "lat": 52.52, "lon": 13.405, "recorded_at": "2026-11-23T18:30:00Z", "vehicle_type": "bike"}
]}))]
pub(crate) struct BatchRequest {
    /// Up to `batch_max_positions` (default 1000) positions.
    #[schema(value_type = Vec<BatchPosition>)]
    pub(crate) positions: Vec<serde_json::Value>,
}

/// Outcome of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BatchStatus {
    /// Stored.
    Accepted,
    /// Older than the stored position (or an earlier item of the same batch): not stored.
    Stale,
    /// Failed validation (see `detail`): not stored.
    Invalid,
}

/// Result of one batch item, in input order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct BatchResult {
    /// The item's driver id as sent (empty when it had none).
    pub(crate) driver_id: String,
    /// What happened to it.
    pub(crate) status: BatchStatus,
    /// Why it was stale or invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

/// `POST /v1/locations/batch` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"results": [
    {"driver_id": "drv-1", "status": "accepted"},
    {"driver_id": "drv-2", "status": "invalid", "detail": "lat: must be between -85.05112878 and 85.05112878 degrees"}
]}))]
pub(crate) struct BatchResponse {
    /// One result per position, in input order.
    pub(crate) results: Vec<BatchResult>,
}

/// `PUT /v1/drivers/{driver_id}/status` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "offline"}))]
pub(crate) struct StatusUpdate {
    /// `available` or `offline` (`busy` is set by dispatch only).
    pub(crate) status: ShiftStatus,
}

/// A validated position ready for the script.
#[derive(Debug, Clone)]
pub(crate) struct ValidPosition {
    /// The point.
    pub(crate) point: GeoPoint,
    /// Epoch milliseconds.
    pub(crate) recorded_ms: i64,
    /// Accuracy in metres.
    pub(crate) accuracy_m: Option<f64>,
    /// Heading in degrees.
    pub(crate) heading_deg: Option<f64>,
    /// Speed in m/s.
    pub(crate) speed_mps: Option<f64>,
    /// Vehicle type to set.
    pub(crate) vehicle_type: Option<VehicleType>,
    /// Status to set.
    pub(crate) status: Option<ShiftStatus>,
}

fn check_range(
    errors: &mut Vec<FieldError>,
    field: String,
    value: Option<f64>,
    min: f64,
    max: f64,
    max_inclusive: bool,
) {
    if let Some(v) = value {
        let ok = v.is_finite() && v >= min && if max_inclusive { v <= max } else { v < max };
        if !ok {
            let bound = if max_inclusive { "<=" } else { "<" };
            errors.push(FieldError::new(
                field,
                format!("must be a number with {min} <= value {bound} {max}"),
            ));
        }
    }
}

impl LocationUpdate {
    /// Validate every field; errors are named `{prefix}field`.
    pub(crate) fn validate(&self, prefix: &str) -> Result<ValidPosition, Vec<FieldError>> {
        let mut errors = Vec::new();
        let point = GeoPoint::parse(self.lat, self.lon, prefix)
            .map_err(|e| errors.extend(e))
            .ok();
        if self.recorded_at.0 < MIN_RECORDED_MS {
            errors.push(FieldError::new(
                format!("{prefix}recorded_at"),
                "is before 2000-01-01: check the device clock (epoch milliseconds, not seconds)",
            ));
        }
        check_range(
            &mut errors,
            format!("{prefix}accuracy_m"),
            self.accuracy_m,
            0.0,
            10_000.0,
            true,
        );
        check_range(
            &mut errors,
            format!("{prefix}heading_deg"),
            self.heading_deg,
            0.0,
            360.0,
            false,
        );
        check_range(
            &mut errors,
            format!("{prefix}speed_mps"),
            self.speed_mps,
            0.0,
            150.0,
            true,
        );
        match point {
            Some(point) if errors.is_empty() => Ok(ValidPosition {
                point: point.rounded_for_storage(),
                recorded_ms: self.recorded_at.0,
                accuracy_m: self.accuracy_m,
                heading_deg: self.heading_deg,
                speed_mps: self.speed_mps,
                vehicle_type: self.vehicle_type,
                status: self.status,
            }),
            _ => Err(errors),
        }
    }
}

/// A driver's stored state, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "driver_id": "drv-1", "city": "paris", "status": "available", "vehicle_type": "scooter",
    "lat": 48.8566, "lon": 2.3522, "recorded_at": "2026-11-23T18:30:00.25Z", "recorded_at_ms": 1795458600250_i64,
    "age_ms": 420, "fresh": true, "accuracy_m": 8.5, "heading_deg": 90.0, "speed_mps": 6.2
}))]
pub(crate) struct DriverState {
    /// Driver id.
    pub(crate) driver_id: String,
    /// City the last position lies in.
    pub(crate) city: String,
    /// Current status.
    pub(crate) status: DriverStatus,
    /// Vehicle type.
    pub(crate) vehicle_type: VehicleType,
    /// Last latitude (rounded to 7 decimal places).
    pub(crate) lat: f64,
    /// Last longitude (rounded to 7 decimal places).
    pub(crate) lon: f64,
    /// When the last position was recorded (RFC 3339, UTC).
    pub(crate) recorded_at: String,
    /// The same as epoch milliseconds.
    pub(crate) recorded_at_ms: i64,
    /// Age of the last position in milliseconds, by Redis' clock.
    pub(crate) age_ms: i64,
    /// Whether the position is younger than `driver_ttl_ms` (only fresh drivers are found by search and dispatch).
    pub(crate) fresh: bool,
    /// Horizontal accuracy in metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) accuracy_m: Option<f64>,
    /// Heading in degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) heading_deg: Option<f64>,
    /// Speed in m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speed_mps: Option<f64>,
}

impl DriverState {
    /// The state of a driver of `city` (whose hash holds it) from its packed state
    /// ([`PackedState`]), with its age and freshness at `now_ms`.
    pub(crate) fn from_packed(
        driver_id: &str,
        city: &str,
        packed: &str,
        now_ms: i64,
        ttl_ms: u64,
    ) -> Option<Self> {
        let p = PackedState::parse(packed)?;
        let age_ms = now_ms - p.recorded_ms;
        Some(DriverState {
            driver_id: driver_id.to_owned(),
            city: city.to_owned(),
            status: p.status,
            vehicle_type: p.vehicle_type,
            lat: p.lat,
            lon: p.lon,
            recorded_at: rfc3339_ms(p.recorded_ms),
            recorded_at_ms: p.recorded_ms,
            age_ms,
            fresh: age_ms < ttl_ms as i64,
            accuracy_m: p.accuracy_m,
            heading_deg: p.heading_deg,
            speed_mps: p.speed_mps,
        })
    }
}

/// Parse a driver id path or body value, naming `field` on failure.
pub(crate) fn parse_driver_id(value: &str, field: &str) -> Result<DriverId, FieldError> {
    DriverId::parse(value).map_err(|e| FieldError::new(field, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_at_accepts_rfc3339_and_epoch_millis() {
        let a: RecordedAt = serde_json::from_str("\"2026-11-23T18:30:00.250Z\"").unwrap();
        let b: RecordedAt = serde_json::from_str("1795458600250").unwrap();
        assert_eq!(a, b);
        let c: RecordedAt = serde_json::from_str("\"2026-11-23T19:30:00.250+01:00\"").unwrap();
        assert_eq!(a, c);
        for bad in ["\"yesterday\"", "1.5", "true", "\"2026-11-23 18:30\""] {
            assert!(serde_json::from_str::<RecordedAt>(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339_ms(1795458600250), "2026-11-23T18:30:00.25Z");
    }

    #[test]
    fn packed_state_round_trips() {
        let s = DriverState::from_packed("d1", "paris", "1000|48.85|2.35|b|v|5|90|", 1500, 60_000)
            .unwrap();
        assert_eq!(s.city, "paris");
        assert_eq!(s.status, DriverStatus::Busy);
        assert_eq!(s.vehicle_type, VehicleType::Van);
        assert_eq!(s.age_ms, 500);
        assert!(s.fresh);
        assert_eq!(s.accuracy_m, Some(5.0));
        assert_eq!(s.speed_mps, None);
        for status in DriverStatus::ALL {
            assert_eq!(DriverStatus::from_code(&status.as_str()[..1]), Some(status));
        }
        for vehicle in VehicleType::ALL {
            assert_eq!(VehicleType::from_code(&vehicle.tag()[..1]), Some(vehicle));
        }
        assert!(DriverState::from_packed("d1", "paris", "1000|48.85|2.35|x|v|||", 1, 1).is_none());
    }

    #[test]
    fn validation_names_every_bad_field() {
        let update = LocationUpdate {
            lat: f64::NAN,
            lon: 200.0,
            recorded_at: RecordedAt(1_000),
            accuracy_m: Some(-1.0),
            heading_deg: Some(360.0),
            speed_mps: Some(f64::INFINITY),
            vehicle_type: None,
            status: None,
        };
        let fields: Vec<String> = update
            .validate("")
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "lat",
                "lon",
                "recorded_at",
                "accuracy_m",
                "heading_deg",
                "speed_mps"
            ]
        );
    }
}
