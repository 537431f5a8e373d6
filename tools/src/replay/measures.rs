//! The measures of a day, as the MDRP authors define them (per delivered order: click-to-door,
//! its overage over the target, ready-to-door, ready-to-pickup; per courier: utilisation,
//! earnings, compensation), each summarised by mean, standard deviation, min, 10th
//! percentile, median, 90th percentile and max; and the dispatch-quality figures built on
//! them: each order's ideal click-to-door (ready − placement + half the pickup service + the
//! ride + half the drop-off service, what a courier waiting at the restaurant would achieve)
//! and its excess over it.

use std::collections::HashMap;

use serde::Serialize;

use super::instance::Instance;
use super::solution::Solution;

/// Mean, standard deviation (sample), min, 10th percentile, median, 90th percentile, max.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Values summarised.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub sd: f64,
    /// Smallest.
    pub min: f64,
    /// 10th percentile (linear interpolation).
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Summarise `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let q = |p: f64| {
            let pos = p * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Self {
            n,
            mean,
            sd,
            min: v[0],
            p10: q(0.1),
            median: q(0.5),
            p90: q(0.9),
            max: v[n - 1],
        }
    }
}

/// Everything measured on a day's solution.
#[derive(Debug, Clone, Serialize)]
pub struct Measures {
    /// Orders in the instance.
    pub orders: usize,
    /// Orders delivered.
    pub delivered: usize,
    /// Click-to-door (drop-off − placement), minutes.
    pub click_to_door: Stats,
    /// Click-to-door over the target, minutes (0 when within).
    pub click_to_door_overage: Stats,
    /// Ready-to-door (drop-off − ready).
    pub ready_to_door: Stats,
    /// Ready-to-pickup (pickup − ready).
    pub ready_to_pickup: Stats,
    /// Per courier: share of its duty time driving or in service.
    pub utilisation: Stats,
    /// Per courier: pay per order × orders.
    pub earnings: Stats,
    /// Per courier: max(earnings, guaranteed pay per hour × duty hours).
    pub compensation: Stats,
    /// Per delivered order: ideal click-to-door.
    pub ideal_click_to_door: Stats,
    /// Per delivered order: click-to-door − ideal.
    pub excess: Stats,
    /// The target click-to-door, minutes.
    pub target: f64,
    /// Delivered orders over the target click-to-door.
    pub over_target: usize,
    /// Of those, orders over the target even at their ideal click-to-door.
    pub over_target_at_ideal: usize,
    /// Driving and service minutes over all duty minutes, all couriers together.
    pub fleet_utilisation: f64,
    /// Delivered orders per courier duty hour.
    pub orders_per_courier_hour: f64,
    /// Sum of the couriers' compensation.
    pub total_compensation: f64,
}

/// Measure a solution of `inst`.
pub fn measure(inst: &Instance, s: &Solution) -> Measures {
    let p = &inst.params;
    let orders = inst.order_index();
    let (mut ctd, mut over, mut rtd, mut rtp, mut ideal, mut excess) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut over_target, mut over_target_at_ideal) = (0, 0);
    for d in &s.deliveries {
        let o = &inst.orders[orders[d.order.as_str()]];
        let c = d.dropoff - o.placement;
        let best = inst.ideal_click_to_door(o);
        ctd.push(c);
        over.push((c - p.target).max(0.0));
        rtd.push(d.dropoff - o.ready);
        rtp.push(d.pickup - o.ready);
        ideal.push(best);
        excess.push(c - best);
        if c > p.target {
            over_target += 1;
            if best > p.target {
                over_target_at_ideal += 1;
            }
        }
    }
    // Per courier, as the authors count it: driving minutes plus a full service time per
    // pickup and per drop-off, over the shift.
    let mut driving: HashMap<&str, f64> = HashMap::new();
    let point = |name: &str, courier: usize| {
        if name == "0" {
            Some(inst.couriers[courier].at)
        } else if let Some(r) = inst.restaurants.iter().find(|r| r.id == name) {
            Some(r.at)
        } else {
            orders.get(name).map(|&o| inst.orders[o].at)
        }
    };
    let couriers: HashMap<&str, usize> = inst
        .couriers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    for m in &s.moves {
        let Some(&c) = couriers.get(m.courier.as_str()) else {
            continue;
        };
        if let (Some(a), Some(b)) = (point(&m.origin, c), point(&m.destination, c)) {
            *driving.entry(m.courier.as_str()).or_default() += inst.travel(a, b);
        }
    }
    let mut delivered_by: HashMap<&str, usize> = HashMap::new();
    for d in &s.deliveries {
        *delivered_by.entry(d.courier.as_str()).or_default() += 1;
    }
    let (mut util, mut earn, mut comp) = (vec![], vec![], vec![]);
    let (mut busy_all, mut duty_all) = (0.0, 0.0);
    for c in &inst.couriers {
        let duty = c.off - c.on;
        let n = delivered_by.get(c.id.as_str()).copied().unwrap_or(0) as f64;
        let busy = driving.get(c.id.as_str()).copied().unwrap_or(0.0)
            + n * (p.pickup_service + p.dropoff_service);
        util.push(if duty > 0.0 { busy / duty } else { 0.0 });
        let e = n * p.pay_per_order;
        earn.push(e);
        comp.push(e.max(p.pay_per_hour * duty / 60.0));
        busy_all += busy;
        duty_all += duty;
    }
    Measures {
        orders: inst.orders.len(),
        delivered: s.deliveries.len(),
        click_to_door: Stats::of(&ctd),
        click_to_door_overage: Stats::of(&over),
        ready_to_door: Stats::of(&rtd),
        ready_to_pickup: Stats::of(&rtp),
        utilisation: Stats::of(&util),
        earnings: Stats::of(&earn),
        compensation: Stats::of(&comp),
        ideal_click_to_door: Stats::of(&ideal),
        excess: Stats::of(&excess),
        target: p.target,
        over_target,
        over_target_at_ideal,
        fleet_utilisation: if duty_all > 0.0 {
            busy_all / duty_all
        } else {
            0.0
        },
        orders_per_courier_hour: if duty_all > 0.0 {
            s.deliveries.len() as f64 / (duty_all / 60.0)
        } else {
            0.0
        },
        total_compensation: comp.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_pandas_describe() {
        let s = Stats::of(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(s.mean, 4.0);
        assert!((s.sd - 3.535_533_905_932_737_6).abs() < 1e-12);
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 10.0));
        assert!((s.p10 - 1.4).abs() < 1e-12);
        assert!((s.p90 - 7.6).abs() < 1e-12);
        assert_eq!(Stats::of(&[]).n, 0);
    }
}
