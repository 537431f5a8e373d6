//! The packed state of a driver, as the drivers hash of its city stores it:
//! `recorded_ms|lat|lon|S|V|accuracy_m|heading_deg|speed_mps`, `S` and `V` the one-letter codes
//! of the status and the vehicle type ([`DriverStatus::from_code`],
//! [`VehicleType::from_code`]), the last three empty when unknown. One short field per driver
//! keeps Redis memory small: without the optional fields it fits a 48-byte allocation. The
//! scripts write it (`lua/prelude/codes.lua`, `pack_state`); this is how Rust reads it.

use super::{DriverStatus, VehicleType};

/// A decoded packed driver state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PackedState {
    /// When the phone recorded the position, epoch ms.
    pub(crate) recorded_ms: i64,
    /// Latitude in degrees.
    pub(crate) lat: f64,
    /// Longitude in degrees.
    pub(crate) lon: f64,
    /// The driver's status.
    pub(crate) status: DriverStatus,
    /// The driver's vehicle type.
    pub(crate) vehicle_type: VehicleType,
    /// Horizontal accuracy in metres, when the phone sent it.
    pub(crate) accuracy_m: Option<f64>,
    /// Heading in degrees, when the phone sent it.
    pub(crate) heading_deg: Option<f64>,
    /// Speed in metres per second, when the phone sent it.
    pub(crate) speed_mps: Option<f64>,
}

impl PackedState {
    /// Decode `packed`; `None` when it is not a packed state of the current layout.
    pub(crate) fn parse(packed: &str) -> Option<Self> {
        let mut f = packed.split('|');
        let recorded_ms: i64 = f.next()?.parse().ok()?;
        let lat: f64 = f.next()?.parse().ok()?;
        let lon: f64 = f.next()?.parse().ok()?;
        let status = DriverStatus::from_code(f.next()?)?;
        let vehicle_type = VehicleType::from_code(f.next()?)?;
        let opt = |s: Option<&str>| s.and_then(|s| s.parse::<f64>().ok());
        Some(Self {
            recorded_ms,
            lat,
            lon,
            status,
            vehicle_type,
            accuracy_m: opt(f.next()),
            heading_deg: opt(f.next()),
            speed_mps: opt(f.next()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_state_decodes_with_and_without_its_optional_fields() {
        let full = PackedState::parse("1000|48.85|2.35|b|v|5|90|").unwrap();
        assert_eq!(
            full,
            PackedState {
                recorded_ms: 1000,
                lat: 48.85,
                lon: 2.35,
                status: DriverStatus::Busy,
                vehicle_type: VehicleType::Van,
                accuracy_m: Some(5.0),
                heading_deg: Some(90.0),
                speed_mps: None,
            }
        );
        let bare = PackedState::parse("1|0|0|a|c|||").unwrap();
        assert_eq!(
            (bare.status, bare.accuracy_m),
            (DriverStatus::Available, None)
        );
    }

    #[test]
    fn what_is_not_a_current_packed_state_is_refused() {
        for bad in [
            "",
            "x|48.85|2.35|a|c|||",
            "1000|48.85|2.35|x|v|||",
            "1000|48.85|2.35|a|q|||",
            "paris|1000|48.85|2.35|available|van|5||",
        ] {
            assert!(PackedState::parse(bad).is_none(), "{bad:?}");
        }
    }
}
