//! A courier's instruction, timed by the instance's rules in simulated minutes: leave when
//! told (or when free), drive to the restaurant (whole minutes, rounded up), pick up at
//! `max(ready, arrival + half the pickup service)`, leave half a service later, drive to the
//! customer, drop off half a drop-off service after arriving, be free half a service later.
//! A schedule built from these legs is feasible by construction.

use super::instance::{Instance, Point};

/// Where a courier is between moves, as the solution files name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Its start location (`0` in the solution files).
    Start,
    /// A restaurant (index).
    Restaurant(usize),
    /// An order's customer (order index).
    Customer(usize),
}

/// One instruction (one order) of one courier, in simulated minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leg {
    /// The order (index).
    pub order: usize,
    /// When the courier was told (a whole minute).
    pub assignment: f64,
    /// Where it left from.
    pub origin: Place,
    /// The point it left from.
    pub origin_at: Point,
    /// When it left for the restaurant.
    pub departure: f64,
    /// When it arrived at the restaurant.
    pub arrive_restaurant: f64,
    /// Pickup time.
    pub pickup: f64,
    /// When it left the restaurant.
    pub leave_restaurant: f64,
    /// When it arrived at the customer.
    pub arrive_customer: f64,
    /// Drop-off time.
    pub dropoff: f64,
    /// When it is free for the next instruction (at the customer).
    pub free: f64,
}

/// Plan `order` for a courier at `origin` (`origin_at`), free from `free_at`, told at
/// `assignment`.
pub fn plan(
    inst: &Instance,
    origin: Place,
    origin_at: Point,
    free_at: f64,
    assignment: f64,
    order: usize,
) -> Leg {
    let o = &inst.orders[order];
    let restaurant = inst.pickup_of(o);
    let half_pickup = inst.params.pickup_service / 2.0;
    let half_dropoff = inst.params.dropoff_service / 2.0;
    let departure = assignment.max(free_at);
    let arrive_restaurant = departure + inst.travel(origin_at, restaurant);
    let pickup = o.ready.max(arrive_restaurant + half_pickup);
    let leave_restaurant = pickup + half_pickup;
    let arrive_customer = leave_restaurant + inst.travel(restaurant, o.at);
    let dropoff = arrive_customer + half_dropoff;
    Leg {
        order,
        assignment,
        origin,
        origin_at,
        departure,
        arrive_restaurant,
        pickup,
        leave_restaurant,
        arrive_customer,
        dropoff,
        free: dropoff + half_dropoff,
    }
}

/// A move of an idle courier to a restaurant, told by a `driver.reposition` event, in
/// simulated minutes. It cannot be diverted: an instruction received on the way starts from
/// the restaurant once the courier is there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reposition {
    /// Where it left from.
    pub origin: Place,
    /// The point it left from.
    pub origin_at: Point,
    /// The restaurant (index) it drives to.
    pub restaurant: usize,
    /// When it left (a whole minute).
    pub departure: f64,
    /// When it arrives.
    pub arrive: f64,
    /// How many legs the courier had delivered before it (the move comes before the next).
    pub before_leg: usize,
}

/// Plan a move to `restaurant` for a courier at `origin` (`origin_at`), free from `free_at`,
/// told at `told`.
pub fn plan_reposition(
    inst: &Instance,
    origin: Place,
    origin_at: Point,
    free_at: f64,
    told: f64,
    restaurant: usize,
    before_leg: usize,
) -> Reposition {
    let departure = told.max(free_at);
    Reposition {
        origin,
        origin_at,
        restaurant,
        departure,
        arrive: departure + inst.travel(origin_at, inst.restaurants[restaurant].at),
        before_leg,
    }
}

impl Reposition {
    /// Where the courier is at simulated minute `t`, or `None` outside the move.
    pub fn position_at(&self, inst: &Instance, t: f64) -> Option<Point> {
        (t > self.departure && t < self.arrive).then(|| {
            self.origin_at.towards(
                inst.restaurants[self.restaurant].at,
                (t - self.departure) / (self.arrive - self.departure),
            )
        })
    }
}

impl Leg {
    /// Where the courier is at simulated minute `t` (straight lines at constant speed).
    pub fn position_at(&self, inst: &Instance, t: f64) -> Point {
        let o = &inst.orders[self.order];
        let restaurant = inst.pickup_of(o);
        let share = |from: f64, to: f64| {
            if to > from {
                (t - from) / (to - from)
            } else {
                1.0
            }
        };
        if t <= self.departure {
            self.origin_at
        } else if t < self.arrive_restaurant {
            self.origin_at
                .towards(restaurant, share(self.departure, self.arrive_restaurant))
        } else if t <= self.leave_restaurant {
            restaurant
        } else if t < self.arrive_customer {
            restaurant.towards(o.at, share(self.leave_restaurant, self.arrive_customer))
        } else {
            o.at
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_courier_waits_for_the_food_then_drives_and_serves_by_the_rules() {
        let inst = Instance::one_order(20.0);
        let leg = plan(&inst, Place::Start, Point { x: 0.0, y: 0.0 }, 0.0, 3.0, 0);
        // 10 minutes to the restaurant, the food is ready at 20, 6 minutes (550 m) to the door.
        assert_eq!(leg.departure, 3.0);
        assert_eq!(leg.arrive_restaurant, 13.0);
        assert_eq!(leg.pickup, 20.0);
        assert_eq!(leg.leave_restaurant, 22.0);
        assert_eq!(leg.arrive_customer, 28.0);
        assert_eq!(leg.dropoff, 30.0);
        assert_eq!(leg.free, 32.0);
        assert_eq!(leg.position_at(&inst, 8.0), Point { x: 500.0, y: 0.0 });
    }

    #[test]
    fn a_courier_still_serving_leaves_when_free_and_food_waits_for_it() {
        let inst = Instance::one_order(5.0);
        let leg = plan(&inst, Place::Start, Point { x: 0.0, y: 0.0 }, 7.0, 3.0, 0);
        assert_eq!(leg.departure, 7.0);
        assert_eq!(leg.arrive_restaurant, 17.0);
        assert_eq!(leg.pickup, 19.0);
    }
}
