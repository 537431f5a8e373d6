//! Arrival events of a replayed day against its pickups and drop-offs: every pickup should
//! follow one `driver.arrived_pickup` of its order, every drop-off one
//! `driver.arrived_dropoff`, and no order should see its driver arrive at the same place twice
//! (arrived, left, arrived: a flap).

use std::collections::HashMap;

use serde::Serialize;

use geodispatch::events::OrderEvent;

/// The arrival events of a day and how they match its pickups and drop-offs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Arrivals {
    /// Orders picked up (events `picked_up`).
    pub pickups: u64,
    /// Orders delivered (events `delivered`).
    pub dropoffs: u64,
    /// `driver.arrived_pickup` events.
    pub arrived_pickup: u64,
    /// `driver.arrived_dropoff` events.
    pub arrived_dropoff: u64,
    /// `driver.left_pickup` events.
    pub left_pickup: u64,
    /// Pickups with no `driver.arrived_pickup` of their order before them.
    pub pickups_without_arrival: u64,
    /// Drop-offs with no `driver.arrived_dropoff` of their order before them.
    pub dropoffs_without_arrival: u64,
    /// Arrivals of an order's driver at a place it had already arrived at for that order
    /// (each one after the first is a flap).
    pub flaps: u64,
}

/// Count the arrivals of an event history (one city, stream order).
pub fn count(events: &[OrderEvent]) -> Arrivals {
    #[derive(Default)]
    struct Seen {
        at_pickup: u64,
        at_dropoff: u64,
    }
    let mut out = Arrivals::default();
    let mut orders: HashMap<&str, Seen> = HashMap::new();
    for e in events {
        let seen = orders.entry(e.order_id.as_str()).or_default();
        match e.kind.as_str() {
            "driver.arrived_pickup" => {
                out.arrived_pickup += 1;
                seen.at_pickup += 1;
                if seen.at_pickup > 1 {
                    out.flaps += 1;
                }
            }
            "driver.arrived_dropoff" => {
                out.arrived_dropoff += 1;
                seen.at_dropoff += 1;
                if seen.at_dropoff > 1 {
                    out.flaps += 1;
                }
            }
            "driver.left_pickup" => out.left_pickup += 1,
            "picked_up" => {
                out.pickups += 1;
                if seen.at_pickup == 0 {
                    out.pickups_without_arrival += 1;
                }
            }
            "delivered" => {
                out.dropoffs += 1;
                if seen.at_dropoff == 0 {
                    out.dropoffs_without_arrival += 1;
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, order: &str) -> OrderEvent {
        serde_json::from_value(
            serde_json::json!({"id": "0-1", "type": kind, "order_id": order,
            "driver_id": "c1", "state": "", "fencing_token": 1, "at_ms": 0, "city": "mdrp"}),
        )
        .unwrap()
    }

    #[test]
    fn arrivals_are_matched_to_pickups_and_drop_offs_and_repeats_are_flaps() {
        let events = [
            ev("accepted", "o1"),
            ev("driver.arrived_pickup", "o1"),
            ev("picked_up", "o1"),
            ev("driver.arrived_dropoff", "o1"),
            ev("delivered", "o1"),
            ev("driver.arrived_pickup", "o2"),
            ev("driver.left_pickup", "o2"),
            ev("driver.arrived_pickup", "o2"),
            ev("picked_up", "o2"),
            ev("delivered", "o2"),
        ];
        assert_eq!(
            count(&events),
            Arrivals {
                pickups: 2,
                dropoffs: 2,
                arrived_pickup: 3,
                arrived_dropoff: 1,
                left_pickup: 1,
                pickups_without_arrival: 0,
                dropoffs_without_arrival: 1,
                flaps: 1,
            }
        );
    }
}
