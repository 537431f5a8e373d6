use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest latitude Redis GEO can store (its Web Mercator limit), in degrees.
pub(crate) const REDIS_MAX_LAT: f64 = 85.05112878;

/// The earth radius Redis uses for GEODIST and GEOSEARCH, in metres.
pub(crate) const REDIS_EARTH_RADIUS_M: f64 = 6_372_797.560856;

/// A latitude in degrees that Redis GEO can store: finite and within ±85.05112878.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub(crate) struct Latitude(f64);

/// A longitude in degrees: finite and within ±180.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub(crate) struct Longitude(f64);

impl Latitude {
    /// Accept `value` if it is finite and within Redis' GEO range.
    pub(crate) fn parse(value: f64) -> Result<Self, String> {
        if !value.is_finite() {
            return Err("must be a finite number".to_owned());
        }
        if !(-REDIS_MAX_LAT..=REDIS_MAX_LAT).contains(&value) {
            return Err(if (-90.0..=90.0).contains(&value) {
                format!(
                    "must be between -{REDIS_MAX_LAT} and {REDIS_MAX_LAT} (Redis GEO cannot store latitudes nearer the poles)"
                )
            } else {
                format!("must be between -{REDIS_MAX_LAT} and {REDIS_MAX_LAT} degrees")
            });
        }
        Ok(Latitude(value))
    }
}

impl Longitude {
    /// Accept `value` if it is finite and within ±180.
    pub(crate) fn parse(value: f64) -> Result<Self, String> {
        if !value.is_finite() {
            return Err("must be a finite number".to_owned());
        }
        if !(-180.0..=180.0).contains(&value) {
            return Err("must be between -180 and 180 degrees".to_owned());
        }
        Ok(Longitude(value))
    }
}

/// A validated point (WGS 84 degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"lat": 48.8566, "lon": 2.3522}))]
pub struct GeoPoint {
    /// Latitude in degrees, within ±85.05112878 (Redis GEO limit).
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub lat: f64,
    /// Longitude in degrees, within ±180.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lon: f64,
}

impl GeoPoint {
    /// Validate both coordinates; errors name `{prefix}lat` / `{prefix}lon`.
    pub(crate) fn parse(lat: f64, lon: f64, prefix: &str) -> Result<Self, Vec<super::FieldError>> {
        let mut errors = Vec::new();
        if let Err(e) = Latitude::parse(lat) {
            errors.push(super::FieldError::new(format!("{prefix}lat"), e));
        }
        if let Err(e) = Longitude::parse(lon) {
            errors.push(super::FieldError::new(format!("{prefix}lon"), e));
        }
        if errors.is_empty() {
            Ok(GeoPoint { lat, lon })
        } else {
            Err(errors)
        }
    }
}

/// Decimal places a stored driver position keeps: 1e-7 degree is about 1.1 cm, finer than
/// any phone's GPS and than Redis GEO's own resolution (about 0.6 m), while a double's full
/// 15–17 digits would cost every stored driver about 16 more bytes of Redis memory.
pub(crate) const STORED_DECIMALS: i32 = 7;

impl GeoPoint {
    /// This point with each coordinate rounded to [`STORED_DECIMALS`] places (a coordinate
    /// that rounding would push past its limit, within 5e-8 degree of it, is kept as is).
    pub(crate) fn rounded_for_storage(self) -> Self {
        let scale = 10f64.powi(STORED_DECIMALS);
        let round = |v: f64, limit: f64| {
            let r = (v * scale).round() / scale;
            if r.abs() <= limit { r } else { v }
        };
        GeoPoint {
            lat: round(self.lat, REDIS_MAX_LAT),
            lon: round(self.lon, 180.0),
        }
    }
}

/// Great-circle distance in metres on Redis' sphere, so it agrees with GEODIST and GEOSEARCH.
pub fn haversine_m(a: GeoPoint, b: GeoPoint) -> f64 {
    use geo::{Distance, HaversineMeasure, Point};
    HaversineMeasure::new(REDIS_EARTH_RADIUS_M)
        .distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_positions_keep_seven_decimals_and_stay_within_the_limits() {
        let p = GeoPoint {
            lat: 48.806310682188766,
            lon: -2.311791870367106,
        }
        .rounded_for_storage();
        assert_eq!((p.lat, p.lon), (48.8063107, -2.3117919));
        assert_eq!(p.lat.to_string(), "48.8063107");
        let short = GeoPoint {
            lat: 0.3,
            lon: 2.3522,
        }
        .rounded_for_storage();
        assert_eq!((short.lat, short.lon), (0.3, 2.3522));
        let edge = GeoPoint {
            lat: REDIS_MAX_LAT - 1e-9,
            lon: -180.0 + 1e-9,
        }
        .rounded_for_storage();
        assert!(edge.lat <= REDIS_MAX_LAT && edge.lon >= -180.0, "{edge:?}");
        assert!(Latitude::parse(edge.lat).is_ok());
    }

    #[test]
    fn latitude_boundaries() {
        for ok in [0.0, REDIS_MAX_LAT, -REDIS_MAX_LAT, 48.85, -33.9] {
            assert!(Latitude::parse(ok).is_ok(), "{ok} must be accepted");
        }
        for (bad, why) in [
            (85.06, "Redis cannot store it"),
            (-85.0512288, "just past the Redis limit"),
            (90.0, "pole"),
            (91.0, "out of range"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "infinite"),
            (f64::NEG_INFINITY, "infinite"),
        ] {
            assert!(
                Latitude::parse(bad).is_err(),
                "{bad} must be rejected: {why}"
            );
        }
    }

    #[test]
    fn longitude_boundaries() {
        for ok in [0.0, 180.0, -180.0, 2.35] {
            assert!(Longitude::parse(ok).is_ok());
        }
        for bad in [180.000001, -181.0, f64::NAN, f64::INFINITY] {
            assert!(Longitude::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn haversine_matches_redis_geodist_for_a_known_pair() {
        // GEODIST between Palermo (13.361389 38.115556) and Catania (15.087269 37.502669)
        // is 166274.1516 m in the Redis documentation.
        let d = haversine_m(
            GeoPoint {
                lat: 38.115556,
                lon: 13.361389,
            },
            GeoPoint {
                lat: 37.502669,
                lon: 15.087269,
            },
        );
        assert!((d - 166_274.151_6).abs() < 1.0, "{d}");
    }
}
