//! Request and response types of the orders API, and the stored order format.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{FieldError, GeoPoint, OrderState, RecordedAt, VehicleType, rfc3339_ms};

/// A point given as latitude and longitude.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PickupPoint {
    /// Latitude in degrees, within ±85.05112878.
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub(crate) lat: f64,
    /// Longitude in degrees, within ±180.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub(crate) lon: f64,
}

/// How an order is dispatched after creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DispatchMode {
    /// In the request itself: the answer already carries the offer when a driver was found
    /// (otherwise the order waits for a retry by the queue workers).
    #[default]
    Now,
    /// Appended to the city's dispatch stream and dispatched by a queue worker.
    Queued,
}

impl DispatchMode {
    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DispatchMode::Now => "now",
            DispatchMode::Queued => "queued",
        }
    }
}

/// `POST /v1/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "ord-1001", "pickup": {"lat": 48.8566, "lon": 2.3522}, "dropoff": {"lat": 48.8606, "lon": 2.3376}, "vehicle_type": "scooter", "dispatch": "now"}))]
pub(crate) struct CreateOrder {
    /// Order id (1–64 characters of `[A-Za-z0-9_-]`); generated when absent.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub(crate) order_id: Option<String>,
    /// Where the driver picks the order up; decides the city.
    pub(crate) pickup: PickupPoint,
    /// Where it goes.
    #[serde(default)]
    pub(crate) dropoff: Option<PickupPoint>,
    /// Only drivers with this vehicle type (any when absent).
    #[serde(default)]
    pub(crate) vehicle_type: Option<VehicleType>,
    /// `now` (default) or `queued`. Under `dispatch_policy = batched` both put the order in its
    /// city's matching pool, and the next round offers it.
    #[serde(default)]
    pub(crate) dispatch: DispatchMode,
    /// When the food (or parcel) is ready to be picked up: RFC 3339 or epoch milliseconds, not
    /// before the order's creation (422; up to `max_clock_skew_ms` before it is read as the
    /// creation). Absent: ready at once. The batched policy times the pickup to it; the greedy
    /// policy stores and shows it only.
    #[serde(default)]
    pub(crate) ready_at: Option<RecordedAt>,
}

/// What an order is created with, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderSpec {
    /// Pickup point.
    pub pickup: GeoPoint,
    /// Drop-off point.
    pub dropoff: Option<GeoPoint>,
    /// Required vehicle type.
    pub vehicle: Option<VehicleType>,
    /// How it is dispatched.
    pub mode: DispatchMode,
    /// When it is ready (epoch ms); `None`: at once.
    pub ready_ms: Option<i64>,
}

impl OrderSpec {
    /// An order ready at once, with no drop-off or vehicle requirement.
    pub fn at(pickup: GeoPoint, mode: DispatchMode) -> Self {
        Self {
            pickup,
            dropoff: None,
            vehicle: None,
            mode,
            ready_ms: None,
        }
    }
}

impl CreateOrder {
    /// Validate the points; errors name `pickup.lat`, `dropoff.lon`, …
    pub(crate) fn validate(&self) -> Result<(GeoPoint, Option<GeoPoint>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let pickup = GeoPoint::parse(self.pickup.lat, self.pickup.lon, "pickup.")
            .map_err(|e| errors.extend(e))
            .ok();
        let dropoff = match self.dropoff {
            Some(d) => GeoPoint::parse(d.lat, d.lon, "dropoff.")
                .map_err(|e| errors.extend(e))
                .ok(),
            None => None,
        };
        match pickup {
            Some(p) if errors.is_empty() => Ok((p, dropoff)),
            _ => Err(errors),
        }
    }
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "order_id": "ord-1001", "city": "paris", "state": "offered",
    "pickup": {"lat": 48.8566, "lon": 2.3522}, "dropoff": {"lat": 48.8606, "lon": 2.3376},
    "vehicle_type": "scooter", "dispatch": "now",
    "created_at": "2026-11-23T18:30:00.25Z", "ready_at": "2026-11-23T18:45:00Z",
    "updated_at": "2026-11-23T18:30:00.31Z",
    "driver_id": "drv-1", "fencing_token": 42, "offer_expires_at": "2026-11-23T18:30:20.31Z",
    "distance_m": 420.5, "driver_score": 4.9, "composite": 4.4795, "attempts": 0
}))]
pub(crate) struct Order {
    /// Order id.
    pub(crate) order_id: String,
    /// City of the pickup.
    pub(crate) city: String,
    /// Current state.
    pub(crate) state: OrderState,
    /// Pickup point.
    pub(crate) pickup: PickupPoint,
    /// Drop-off point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dropoff: Option<PickupPoint>,
    /// Required vehicle type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vehicle_type: Option<VehicleType>,
    /// How it is dispatched.
    pub(crate) dispatch: DispatchMode,
    /// Creation time (RFC 3339, Redis' clock).
    pub(crate) created_at: String,
    /// When it is ready to be picked up (the creation time when none was given).
    pub(crate) ready_at: String,
    /// Time of the last transition.
    pub(crate) updated_at: String,
    /// The driver the order is offered to or held by (offered, accepted, picked_up, delivered,
    /// and cancelled after an offer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver_id: Option<String>,
    /// The fencing number of the current offer: the driver sends it back with every answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fencing_token: Option<u64>,
    /// When the current offer expires (offered only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offer_expires_at: Option<String>,
    /// Distance between the driver and the pickup when offered, in metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) distance_m: Option<f64>,
    /// The driver's score when offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver_score: Option<f64>,
    /// The composite the driver was ranked by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) composite: Option<f64>,
    /// Dispatch attempts that found no driver.
    pub(crate) attempts: u32,
    /// Why the order failed: no driver within the dispatch radius after the last attempt, or
    /// its dispatch failed on every delivery from the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_reason: Option<String>,
    /// When the driver arrived at the pickup (RFC 3339; the `recorded_at` of its first position
    /// within `arrival_radius_m` of a visit that lasted `arrival_dwell_ms`); absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arrived_pickup_at: Option<String>,
    /// When the driver arrived at the drop-off (as `arrived_pickup_at`); absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arrived_dropoff_at: Option<String>,
}

impl Order {
    /// Decode an order hash (`HGETALL`); `None` when a field is missing or malformed.
    pub(crate) fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).map(String::as_str);
        let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let state = OrderState::parse(get("state")?)?;
        let point = |lat: &str, lon: &str| {
            Some(PickupPoint {
                lat: num(lat)?,
                lon: num(lon)?,
            })
        };
        let offered = !matches!(state, OrderState::Pending | OrderState::Failed);
        let driver_id = nonempty("driver").map(str::to_owned);
        let fence = num("fence")
            .map(|f| f as u64)
            .filter(|_| driver_id.is_some());
        Some(Order {
            order_id: get("id")?.to_owned(),
            city: get("city")?.to_owned(),
            state,
            pickup: point("plat", "plon")?,
            dropoff: point("dlat", "dlon"),
            vehicle_type: nonempty("vehicle").and_then(VehicleType::parse),
            dispatch: if get("mode")? == "queued" {
                DispatchMode::Queued
            } else {
                DispatchMode::Now
            },
            created_at: rfc3339_ms(num("created")? as i64),
            ready_at: rfc3339_ms(num("ready").or(num("created"))? as i64),
            updated_at: rfc3339_ms(num("updated")? as i64),
            fencing_token: fence,
            offer_expires_at: (state == OrderState::Offered)
                .then(|| num("expires").map(|ms| rfc3339_ms(ms as i64)))
                .flatten(),
            distance_m: num("dist").filter(|_| offered && driver_id.is_some()),
            driver_score: num("dscore").filter(|_| offered && driver_id.is_some()),
            composite: num("comp").filter(|_| offered && driver_id.is_some()),
            driver_id,
            attempts: num("attempts").unwrap_or(0.0) as u32,
            failure_reason: nonempty("reason").map(str::to_owned),
            arrived_pickup_at: num("arrived_p").map(|ms| rfc3339_ms(ms as i64)),
            arrived_dropoff_at: num("arrived_d").map(|ms| rfc3339_ms(ms as i64)),
        })
    }
}

/// `POST /v1/orders/{order_id}/dispatch` answer: who got the offer and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"order_id": "ord-1001", "driver_id": "drv-1", "fencing_token": 42, "distance_m": 420.5, "driver_score": 4.9, "composite": 4.4795, "offer_expires_at": "2026-11-23T18:30:20.31Z"}))]
pub struct DispatchResult {
    /// Order id.
    pub(crate) order_id: String,
    /// The driver offered the order.
    pub driver_id: String,
    /// Fencing number of this offer (strictly increasing per city); the driver sends it back.
    pub fencing_token: u64,
    /// Distance from the pickup in metres.
    pub(crate) distance_m: f64,
    /// The driver's score.
    pub(crate) driver_score: f64,
    /// Composite the driver was ranked by.
    pub(crate) composite: f64,
    /// When the offer expires unless accepted.
    pub(crate) offer_expires_at: String,
}

/// Body of a driver's answer (`accept`, `reject`, `pickup`, `deliver`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"driver_id": "drv-1", "fencing_token": 42}))]
pub(crate) struct TokenBody {
    /// The driver the order was offered to.
    pub(crate) driver_id: String,
    /// The offer's fencing number, as received with the offer.
    pub(crate) fencing_token: u64,
}
