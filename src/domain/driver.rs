//! What a driver is in the dispatch domain: its vehicle type and its status, with the one-letter
//! codes and member tags the Redis layout stores them as.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Vehicle type of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VehicleType {
    /// Bicycle.
    Bike,
    /// Scooter or motorbike.
    Scooter,
    /// Car (the default for a new driver).
    Car,
    /// Van.
    Van,
}

impl VehicleType {
    /// Every vehicle type, in the scripts' key order.
    pub(crate) const ALL: [VehicleType; 4] = [
        VehicleType::Bike,
        VehicleType::Scooter,
        VehicleType::Car,
        VehicleType::Van,
    ];

    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VehicleType::Bike => "bike",
            VehicleType::Scooter => "scooter",
            VehicleType::Car => "car",
            VehicleType::Van => "van",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Prefix of a driver's member in a status' all-vehicles GEO set (`c:drv-1`).
    pub fn tag(self) -> &'static str {
        match self {
            VehicleType::Bike => "b:",
            VehicleType::Scooter => "s:",
            VehicleType::Car => "c:",
            VehicleType::Van => "v:",
        }
    }

    /// Its one-letter code in a packed driver state: the tag's letter (`b`, `s`, `c`, `v`).
    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| &v.tag()[..1] == code)
    }

    /// Split a tagged member (`c:drv-1`) into its vehicle type and driver id.
    pub(crate) fn untag(member: &str) -> Option<(Self, &str)> {
        let (tag, id) = member.split_at_checked(2)?;
        Self::ALL
            .into_iter()
            .find(|v| v.tag() == tag)
            .map(|v| (v, id))
    }
}

/// A driver's status. `busy` is set and cleared by dispatch only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriverStatus {
    /// On shift and free: a dispatch candidate while fresh.
    Available,
    /// Holding an order.
    Busy,
    /// Off shift.
    Offline,
}

impl DriverStatus {
    /// Every status, in the scripts' key order.
    pub(crate) const ALL: [DriverStatus; 3] = [
        DriverStatus::Available,
        DriverStatus::Busy,
        DriverStatus::Offline,
    ];

    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DriverStatus::Available => "available",
            DriverStatus::Busy => "busy",
            DriverStatus::Offline => "offline",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Its one-letter code in a packed driver state: the name's first letter (`a`, `b`, `o`).
    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| &v.as_str()[..1] == code)
    }
}

/// The statuses a driver's phone may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ShiftStatus {
    /// Going on shift.
    Available,
    /// Going off shift.
    Offline,
}

impl ShiftStatus {
    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ShiftStatus::Available => "available",
            ShiftStatus::Offline => "offline",
        }
    }
}
