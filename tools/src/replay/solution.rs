//! A day's solution in the three files the MDRP authors' evaluator reads, and the feasibility
//! check over them: every courier's moves are continuous and consistent in time with the
//! travel rule and the service times, every pickup is at or after the ready time and at or
//! before the courier's off-time, every order is in at most one instruction, and a courier
//! carries one order at a time.
//!
//! - `solution_info_assignments.txt`: `assignment_time pickup_time courier order`;
//! - `solution_info_orders.txt`: `order placement_time restaurant latitude longitude
//!   ready_time pickup_time dropoff_time courier` (latitude and longitude are the instance's
//!   x and y), one line per delivered order;
//! - `solution_info_couriers.txt`: `courier departure_time origin destination`, one line per
//!   move, grouped by courier in the order executed (origin `0` is the start location). A
//!   move to a restaurant followed by another move to a restaurant is a reposition (an idle
//!   courier sent there without an order): it departs once the courier is free and takes the
//!   travel time like any move.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::instance::{Instance, Point};
use super::schedule::{Leg, Place, Reposition};

/// One instruction: a courier told at `assignment` to pick `order` up at `pickup`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Minute the courier was told.
    pub assignment: f64,
    /// Minute of the pickup.
    pub pickup: f64,
    /// Courier id.
    pub courier: String,
    /// Order id.
    pub order: String,
}

/// One delivered order.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Order id.
    pub order: String,
    /// Pickup minute.
    pub pickup: f64,
    /// Drop-off minute.
    pub dropoff: f64,
    /// Courier id.
    pub courier: String,
}

/// One move of a courier.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Courier id.
    pub courier: String,
    /// Departure minute.
    pub departure: f64,
    /// `0` (the start), a restaurant id or an order id (its customer).
    pub origin: String,
    /// A restaurant id or an order id.
    pub destination: String,
}

/// A whole day's solution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Solution {
    /// Instructions, by assignment time.
    pub assignments: Vec<Assignment>,
    /// Delivered orders.
    pub deliveries: Vec<Delivery>,
    /// Moves, grouped by courier in the order executed.
    pub moves: Vec<Move>,
}

/// A minute as the files write it (`12`, or `12.5` for a half service time).
fn minute(t: f64) -> String {
    format!("{t}")
}

fn place_name(inst: &Instance, place: Place) -> String {
    match place {
        Place::Start => "0".to_owned(),
        Place::Restaurant(r) => inst.restaurants[r].id.clone(),
        Place::Customer(o) => inst.orders[o].id.clone(),
    }
}

impl Solution {
    /// The solution of the legs each courier executed (`legs[c]`: courier `c`'s legs in
    /// order; every leg is delivered) and the reposition moves it made between them
    /// (`moves[c]`, in order; empty when there were none).
    pub fn from_legs(inst: &Instance, legs: &[Vec<Leg>], moves: &[Vec<Reposition>]) -> Self {
        let mut s = Solution::default();
        for (c, legs) in legs.iter().enumerate() {
            let courier = &inst.couriers[c].id;
            let repositions = moves.get(c).map(Vec::as_slice).unwrap_or_default();
            let mut next_move = 0;
            let mut moves_before = |s: &mut Solution, k: usize| {
                while let Some(m) = repositions.get(next_move).filter(|m| m.before_leg <= k) {
                    s.moves.push(Move {
                        courier: courier.clone(),
                        departure: m.departure,
                        origin: place_name(inst, m.origin),
                        destination: inst.restaurants[m.restaurant].id.clone(),
                    });
                    next_move += 1;
                }
            };
            for (k, leg) in legs.iter().enumerate() {
                moves_before(&mut s, k);
                let o = &inst.orders[leg.order];
                let restaurant = inst.restaurants[o.restaurant].id.clone();
                s.assignments.push(Assignment {
                    assignment: leg.assignment,
                    pickup: leg.pickup,
                    courier: courier.clone(),
                    order: o.id.clone(),
                });
                s.deliveries.push(Delivery {
                    order: o.id.clone(),
                    pickup: leg.pickup,
                    dropoff: leg.dropoff,
                    courier: courier.clone(),
                });
                s.moves.push(Move {
                    courier: courier.clone(),
                    departure: leg.departure,
                    origin: place_name(inst, leg.origin),
                    destination: restaurant.clone(),
                });
                s.moves.push(Move {
                    courier: courier.clone(),
                    departure: leg.leave_restaurant,
                    origin: restaurant,
                    destination: o.id.clone(),
                });
            }
            moves_before(&mut s, usize::MAX);
        }
        s.assignments
            .sort_by(|a, b| a.assignment.total_cmp(&b.assignment));
        s
    }

    /// Write the three files into `dir`.
    pub fn write(&self, inst: &Instance, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut a = String::from("assignment_time pickup_time courier order\n");
        for x in &self.assignments {
            let _ = writeln!(
                a,
                "{} {} {} {}",
                minute(x.assignment),
                minute(x.pickup),
                x.courier,
                x.order
            );
        }
        std::fs::write(dir.join("solution_info_assignments.txt"), a)?;
        let orders = inst.order_index();
        let mut o = String::from(
            "order placement_time restaurant latitude longitude ready_time pickup_time dropoff_time courier\n",
        );
        for d in &self.deliveries {
            let order = &inst.orders[orders[d.order.as_str()]];
            let _ = writeln!(
                o,
                "{} {} {} {} {} {} {} {} {}",
                d.order,
                minute(order.placement),
                inst.restaurants[order.restaurant].id,
                order.at.x,
                order.at.y,
                minute(order.ready),
                minute(d.pickup),
                minute(d.dropoff),
                d.courier
            );
        }
        std::fs::write(dir.join("solution_info_orders.txt"), o)?;
        let mut m = String::from("courier departure_time origin destination\n");
        for x in &self.moves {
            let _ = writeln!(
                m,
                "{} {} {} {}",
                x.courier,
                minute(x.departure),
                x.origin,
                x.destination
            );
        }
        std::fs::write(dir.join("solution_info_couriers.txt"), m)?;
        Ok(())
    }

    /// Read the three files back from `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        fn lines(dir: &Path, file: &str, columns: usize) -> anyhow::Result<Vec<Vec<String>>> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate().skip(1) {
                let f: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                if f.is_empty() {
                    continue;
                }
                anyhow::ensure!(
                    f.len() >= columns,
                    "{}:{}: expected {columns} columns",
                    path.display(),
                    n + 1
                );
                out.push(f);
            }
            Ok(out)
        }
        let t = |s: &str| -> anyhow::Result<f64> {
            s.parse().with_context(|| format!("{s:?} is not a minute"))
        };
        let mut s = Solution::default();
        for f in lines(dir, "solution_info_assignments.txt", 4)? {
            anyhow::ensure!(
                f.len() == 4,
                "an instruction of {} carries {} orders; this replay writes one order per instruction",
                f[2],
                f.len() - 3
            );
            s.assignments.push(Assignment {
                assignment: t(&f[0])?,
                pickup: t(&f[1])?,
                courier: f[2].clone(),
                order: f[3].clone(),
            });
        }
        for f in lines(dir, "solution_info_orders.txt", 9)? {
            s.deliveries.push(Delivery {
                order: f[0].clone(),
                pickup: t(&f[6])?,
                dropoff: t(&f[7])?,
                courier: f[8].clone(),
            });
        }
        for f in lines(dir, "solution_info_couriers.txt", 4)? {
            s.moves.push(Move {
                courier: f[0].clone(),
                departure: t(&f[1])?,
                origin: f[2].clone(),
                destination: f[3].clone(),
            });
        }
        Ok(s)
    }

    /// Every rule of the problem this solution breaks, described (empty: feasible).
    pub fn violations(&self, inst: &Instance) -> Vec<String> {
        let mut v = Vec::new();
        let orders = inst.order_index();
        let restaurants: HashMap<&str, Point> = inst
            .restaurants
            .iter()
            .map(|r| (r.id.as_str(), r.at))
            .collect();
        let couriers: HashMap<&str, usize> = inst
            .couriers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let half_pickup = inst.params.pickup_service / 2.0;
        let half_dropoff = inst.params.dropoff_service / 2.0;

        // Instructions: known orders, each in at most one, told after placement, picked up
        // after ready and no later than the courier's off-time.
        let mut seen = HashSet::new();
        for a in &self.assignments {
            let (Some(&o), Some(&c)) = (
                orders.get(a.order.as_str()),
                couriers.get(a.courier.as_str()),
            ) else {
                v.push(format!(
                    "instruction {} → {}: unknown order or courier",
                    a.courier, a.order
                ));
                continue;
            };
            let order = &inst.orders[o];
            if !seen.insert(a.order.as_str()) {
                v.push(format!("order {} is in more than one instruction", a.order));
            }
            if a.assignment < order.placement {
                v.push(format!(
                    "order {} assigned at {} before its placement at {}",
                    a.order, a.assignment, order.placement
                ));
            }
            if a.pickup < order.ready {
                v.push(format!(
                    "order {} picked up at {} before it is ready at {}",
                    a.order, a.pickup, order.ready
                ));
            }
            if a.pickup > inst.couriers[c].off {
                v.push(format!(
                    "courier {} picks order {} up at {}, after its off-time {}",
                    a.courier, a.order, a.pickup, inst.couriers[c].off
                ));
            }
        }
        let by_order: HashMap<&str, &Assignment> = self
            .assignments
            .iter()
            .map(|a| (a.order.as_str(), a))
            .collect();
        let deliveries: HashMap<&str, &Delivery> = self
            .deliveries
            .iter()
            .map(|d| (d.order.as_str(), d))
            .collect();
        for d in &self.deliveries {
            match by_order.get(d.order.as_str()) {
                None => v.push(format!("order {} delivered without an instruction", d.order)),
                Some(a) if a.courier != d.courier || a.pickup != d.pickup => v.push(format!(
                    "order {}: the orders file ({} at {}) disagrees with its instruction ({} at {})",
                    d.order, d.courier, d.pickup, a.courier, a.pickup
                )),
                Some(_) => {}
            }
        }

        // Each courier's moves: continuous, departures after arrivals (travel rule), pickups
        // and drop-offs where and when the courier is, with their service times, one order at
        // a time (restaurant of an order, then its customer, in instruction order).
        let mut moves_of: HashMap<&str, Vec<&Move>> = HashMap::new();
        let mut order_of_couriers = Vec::new();
        for m in &self.moves {
            if !moves_of.contains_key(m.courier.as_str()) {
                order_of_couriers.push(m.courier.as_str());
            }
            moves_of.entry(m.courier.as_str()).or_default().push(m);
        }
        for courier in order_of_couriers {
            let moves = &moves_of[courier];
            let Some(&c) = couriers.get(courier) else {
                v.push(format!("moves of unknown courier {courier}"));
                continue;
            };
            let shift = &inst.couriers[c];
            let mut instructions: Vec<&Assignment> = self
                .assignments
                .iter()
                .filter(|a| a.courier == courier)
                .collect();
            instructions.sort_by(|a, b| a.pickup.total_cmp(&b.pickup));
            let point = |name: &str| -> Option<Point> {
                if name == "0" {
                    Some(shift.at)
                } else if let Some(p) = restaurants.get(name) {
                    Some(*p)
                } else {
                    orders.get(name).map(|&o| inst.orders[o].at)
                }
            };
            let mut place = "0".to_owned();
            let mut free = shift.on;
            let mut next = 0;
            // Reposition moves from `place`: to a restaurant, then on to a restaurant again (or
            // the last moves of the day).
            let repositions = |next: &mut usize,
                               place: &mut String,
                               free: &mut f64,
                               v: &mut Vec<String>,
                               last: bool| {
                while let Some(&m) = moves.get(*next) {
                    let then = moves.get(*next + 1);
                    let to_restaurant = |m: &Move| restaurants.contains_key(m.destination.as_str());
                    if !to_restaurant(m)
                        || !(then.is_some_and(|t| to_restaurant(t)) || (last && then.is_none()))
                    {
                        break;
                    }
                    if m.origin != *place {
                        v.push(format!(
                            "courier {courier}: move {} → {} starts away from {place}",
                            m.origin, m.destination
                        ));
                    }
                    if m.departure < *free {
                        v.push(format!(
                            "courier {courier} leaves {} at {}, before it is free ({free})",
                            m.origin, m.departure
                        ));
                    }
                    if let (Some(from), Some(to)) = (point(&m.origin), point(&m.destination)) {
                        *free = m.departure + inst.travel(from, to);
                    }
                    *place = m.destination.clone();
                    *next += 1;
                }
            };
            for a in instructions.iter() {
                repositions(&mut next, &mut place, &mut free, &mut v, false);
                let o = orders[a.order.as_str()];
                let restaurant = inst.restaurants[inst.orders[o].restaurant].id.as_str();
                let (Some(&to_r), Some(&to_c)) = (moves.get(next), moves.get(next + 1)) else {
                    v.push(format!(
                        "courier {courier}: no moves for order {} (one order per instruction: two moves each)",
                        a.order
                    ));
                    break;
                };
                next += 2;
                if to_r.origin != place || to_r.destination != restaurant {
                    v.push(format!(
                        "courier {courier}: move {} → {} where {place} → {restaurant} (order {}) was due",
                        to_r.origin, to_r.destination, a.order
                    ));
                    break;
                }
                if to_c.origin != restaurant || to_c.destination != a.order {
                    v.push(format!(
                        "courier {courier}: move {} → {} where {restaurant} → {} was due",
                        to_c.origin, to_c.destination, a.order
                    ));
                    break;
                }
                let (Some(from), Some(r_at)) = (point(&to_r.origin), point(restaurant)) else {
                    v.push(format!("courier {courier}: unknown place in its moves"));
                    break;
                };
                if to_r.departure < free || to_r.departure < a.assignment {
                    v.push(format!(
                        "courier {courier} leaves for order {} at {}, before it is free ({free}) or told ({})",
                        a.order, to_r.departure, a.assignment
                    ));
                }
                let arrive_r = to_r.departure + inst.travel(from, r_at);
                if a.pickup < arrive_r + half_pickup {
                    v.push(format!(
                        "courier {courier} picks order {} up at {}, arriving at {arrive_r} with a {} minute service",
                        a.order, a.pickup, inst.params.pickup_service
                    ));
                }
                if to_c.departure < a.pickup + half_pickup {
                    v.push(format!(
                        "courier {courier} leaves the restaurant of order {} at {}, before the pickup service ends ({})",
                        a.order,
                        to_c.departure,
                        a.pickup + half_pickup
                    ));
                }
                let arrive_c = to_c.departure + inst.travel(r_at, inst.orders[o].at);
                match deliveries.get(a.order.as_str()) {
                    Some(d) if d.dropoff == arrive_c + half_dropoff => {}
                    Some(d) => v.push(format!(
                        "order {} dropped off at {}, but its courier arrives at {arrive_c} (drop-off is arrival + {half_dropoff})",
                        a.order, d.dropoff
                    )),
                    None => v.push(format!(
                        "order {} has an instruction and moves but no drop-off",
                        a.order
                    )),
                }
                place = a.order.clone();
                free = arrive_c + inst.params.dropoff_service;
            }
            repositions(&mut next, &mut place, &mut free, &mut v, true);
            if next < moves.len() {
                v.push(format!(
                    "courier {courier}: {} moves left after its instructions",
                    moves.len() - next
                ));
            }
        }
        for a in &self.assignments {
            if !moves_of.contains_key(a.courier.as_str()) {
                v.push(format!(
                    "courier {} has instructions but no moves",
                    a.courier
                ));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::schedule::plan;

    /// A way to break a solution.
    type Breakage = fn(&mut Solution);

    fn planned(inst: &Instance) -> Solution {
        let leg = plan(inst, Place::Start, inst.couriers[0].at, 0.0, 3.0, 0);
        Solution::from_legs(inst, &[vec![leg]], &[])
    }

    #[test]
    fn a_planned_day_written_and_read_back_is_feasible() {
        let inst = Instance::one_order(20.0);
        let dir = std::env::temp_dir().join(format!("gd-solution-{}", uuid::Uuid::new_v4()));
        planned(&inst).write(&inst, &dir).unwrap();
        let back = Solution::read(&dir).unwrap();
        assert_eq!(back, planned(&inst));
        assert_eq!(back.violations(&inst), Vec::<String>::new());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reposition_moves_around_an_instruction_are_feasible_and_checked() {
        use crate::replay::schedule::plan_reposition;
        let inst = Instance::one_order(20.0);
        // Sent to the restaurant before the order, then back to it after the drop-off.
        let before = plan_reposition(&inst, Place::Start, inst.couriers[0].at, 0.0, 1.0, 0, 0);
        assert_eq!((before.departure, before.arrive), (1.0, 11.0));
        let leg = plan(
            &inst,
            Place::Restaurant(0),
            inst.restaurants[0].at,
            11.0,
            3.0,
            0,
        );
        assert_eq!((leg.departure, leg.pickup), (11.0, 20.0));
        let after = plan_reposition(
            &inst,
            Place::Customer(0),
            inst.orders[0].at,
            leg.free,
            leg.free,
            0,
            1,
        );
        let s = Solution::from_legs(&inst, &[vec![leg]], &[vec![before, after]]);
        let names: Vec<(&str, &str)> = s
            .moves
            .iter()
            .map(|m| (m.origin.as_str(), m.destination.as_str()))
            .collect();
        let (r, o) = (inst.restaurants[0].id.as_str(), inst.orders[0].id.as_str());
        assert_eq!(names, [("0", r), (r, r), (r, o), (o, r)]);
        assert_eq!(s.violations(&inst), Vec::<String>::new());

        let mut early = s.clone();
        early.moves[3].departure = leg.free - 1.0;
        let v = early.violations(&inst);
        assert!(v.iter().any(|m| m.contains("before it is free")), "{v:?}");
        // The order's move leaves before the reposition has arrived.
        let mut early = s.clone();
        early.moves[1].departure = 10.0;
        let v = early.violations(&inst);
        assert!(v.iter().any(|m| m.contains("before it is free")), "{v:?}");
    }

    #[test]
    fn each_broken_rule_is_named() {
        let inst = Instance::one_order(20.0);
        let cases: [(&str, Breakage); 6] = [
            ("before it is ready", |s| {
                s.assignments[0].pickup = 19.0;
                s.deliveries[0].pickup = 19.0;
            }),
            ("before its placement", |s| {
                s.assignments[0].assignment = 2.0
            }),
            ("after its off-time", |s| {
                s.assignments[0].pickup = 101.0;
                s.deliveries[0].pickup = 101.0;
            }),
            ("but its courier arrives", |s| {
                s.deliveries[0].dropoff = 29.0
            }),
            ("before the pickup service ends", |s| {
                s.moves[1].departure = 21.0
            }),
            ("more than one instruction", |s| {
                let a = s.assignments[0].clone();
                s.assignments.push(a);
            }),
        ];
        for (expected, break_it) in cases {
            let mut s = planned(&inst);
            break_it(&mut s);
            let v = s.violations(&inst);
            assert!(
                v.iter().any(|m| m.contains(expected)),
                "{expected:?} not in {v:?}"
            );
        }
    }
}
