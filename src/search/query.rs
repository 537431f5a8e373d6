//! What a nearby search asks for: the query of `GET /v1/drivers/nearby`, its validation against
//! the configured bounds, and the drivers it answers.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::SearchError;
use crate::config::Settings;
use crate::domain::{DriverStatus, FieldError, GeoPoint, VehicleType};

/// Query of `GET /v1/drivers/nearby`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NearbyQuery {
    /// Latitude of the centre.
    #[param(example = 48.8566, minimum = -85.05112878, maximum = 85.05112878)]
    pub(crate) lat: f64,
    /// Longitude of the centre.
    #[param(example = 2.3522, minimum = -180.0, maximum = 180.0)]
    pub(crate) lon: f64,
    /// Maximum distance searched, in metres (default `search_default_radius_m`, 5000; more
    /// than 0 and at most `search_max_radius_m`, 50000 by default). Not with a box.
    #[param(exclusive_minimum = 0.0, maximum = 50000.0)]
    pub(crate) radius_m: Option<f64>,
    /// Box width in metres (with `height_m`, instead of `radius_m`; more than 0 and at most
    /// twice `search_max_radius_m`).
    #[param(exclusive_minimum = 0.0, maximum = 100000.0)]
    pub(crate) width_m: Option<f64>,
    /// Box height in metres (with `width_m`; same bounds).
    #[param(exclusive_minimum = 0.0, maximum = 100000.0)]
    pub(crate) height_m: Option<f64>,
    /// How many drivers at most (default `search_default_limit`, 20; at most
    /// `search_max_limit`, 100 by default).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) limit: Option<usize>,
    /// Only drivers with this status (default: every driver that is not offline).
    pub(crate) status: Option<DriverStatus>,
    /// Only drivers with this vehicle type (default: all).
    pub(crate) vehicle_type: Option<VehicleType>,
}

/// One driver found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct NearbyDriver {
    /// Driver id.
    pub(crate) driver_id: String,
    /// Latitude of the last reported position.
    pub(crate) lat: f64,
    /// Longitude.
    pub(crate) lon: f64,
    /// Distance from the centre in metres (Redis' haversine, earth radius 6372797.560856 m).
    pub(crate) distance_m: f64,
    /// Status.
    pub(crate) status: DriverStatus,
    /// Vehicle type.
    pub(crate) vehicle_type: VehicleType,
}

/// `GET /v1/drivers/nearby` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "drivers": [
    {"driver_id": "drv-1", "lat": 48.8570, "lon": 2.3530, "distance_m": 72.4, "status": "available", "vehicle_type": "scooter"}
], "partial": false}))]
pub(crate) struct NearbyResponse {
    /// City searched (the one containing the centre).
    pub(crate) city: String,
    /// Nearest first.
    pub(crate) drivers: Vec<NearbyDriver>,
    /// True when the search read its most members (`search_max_members`) before finding
    /// `limit` fresh drivers, as when most drivers around are stale (their phones stopped
    /// reporting): `drivers` are every fresh driver within `radius_covered_m`, and nothing is
    /// known beyond it. Ask again later, or with a smaller area.
    pub(crate) partial: bool,
    /// With `partial`: the distance from the centre, in metres, up to which the search looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 850.0, minimum = 0.0)]
    pub(crate) radius_covered_m: Option<f64>,
}

/// Search area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Area {
    /// Within this many metres.
    Radius(f64),
    /// Within a box of this width and height (metres) centred on the point.
    Box(f64, f64),
}

/// A validated search.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    /// Centre.
    pub(crate) center: GeoPoint,
    /// Area.
    pub(crate) area: Area,
    /// k.
    pub(crate) limit: usize,
    /// Statuses to include.
    pub(crate) statuses: Vec<DriverStatus>,
    /// Vehicle types to include.
    pub(crate) vehicles: Vec<VehicleType>,
}

impl NearbyQuery {
    /// Validate against the configured bounds.
    pub(crate) fn validate(&self, settings: &Settings) -> Result<Search, SearchError> {
        let mut errors: Vec<FieldError> = GeoPoint::parse(self.lat, self.lon, "")
            .err()
            .unwrap_or_default();
        let limit = self.limit.unwrap_or(settings.search_default_limit);
        if limit == 0 || limit > settings.search_max_limit {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {}", settings.search_max_limit),
            ));
        }
        let max = settings.search_max_radius_m;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let area = match (self.radius_m, self.width_m, self.height_m) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                errors.push(FieldError::new(
                    "radius_m",
                    "give either radius_m or width_m and height_m, not both",
                ));
                None
            }
            (r, None, None) => {
                let r = r.unwrap_or(settings.search_default_radius_m);
                if !positive(r) || r > max {
                    errors.push(FieldError::new(
                        "radius_m",
                        format!("must be > 0 and at most {max} m"),
                    ));
                }
                Some(Area::Radius(r))
            }
            (None, Some(w), Some(h)) => {
                for (name, v) in [("width_m", w), ("height_m", h)] {
                    if !positive(v) || v > 2.0 * max {
                        errors.push(FieldError::new(
                            name,
                            format!("must be > 0 and at most {} m", 2.0 * max),
                        ));
                    }
                }
                Some(Area::Box(w, h))
            }
            (None, w, _) => {
                let missing = if w.is_some() { "height_m" } else { "width_m" };
                errors.push(FieldError::new(
                    missing,
                    "a box needs both width_m and height_m",
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(SearchError::Validation(errors));
        }
        Ok(Search {
            center: GeoPoint {
                lat: self.lat,
                lon: self.lon,
            },
            area: area.expect("validated"),
            limit,
            statuses: match self.status {
                Some(s) => vec![s],
                None => vec![DriverStatus::Available, DriverStatus::Busy],
            },
            vehicles: match self.vehicle_type {
                Some(v) => vec![v],
                None => VehicleType::ALL.to_vec(),
            },
        })
    }
}
