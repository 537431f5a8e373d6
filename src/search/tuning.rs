//! The learned starting radius of nearest-k search: per city and filter, how far the first
//! step reaches, and how each step grows when it found too few drivers.
//!
//! A GEOSEARCH costs Redis time in proportion to the members inside its radius, fresh or stale,
//! whatever its `COUNT`. So each step's radius is kept to what should hold the members the
//! step may read (half of what the search's member cap leaves; the density is learned from
//! the members earlier steps and searches saw),
//! not only to what should hold `k` fresh drivers: when most members are stale, a search
//! takes more small steps instead of one that reads thousands of stale members, and the
//! search's member cap ends it.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Area;
use crate::domain::{DriverStatus, VehicleType};

/// Where to start the nearest-k radius, per city and filter, learned from earlier searches in
/// this process: `radius that held exactly k ≈ c·√k`, kept as a moving average of `c`. Drivers
/// cluster (city centres, hot spots), so a learned start beats any city-wide density; a wrong
/// value only costs an extra step, never correctness.
#[derive(Debug, Default)]
pub(crate) struct KnnTuning {
    per_filter: Mutex<HashMap<(String, u8, u8), Learned>>,
}

/// What is learned per city and filter: `radius ≈ c·√n` for `n` fresh drivers found, and for
/// `n` members read per searched set (fresh or stale).
#[derive(Debug, Clone, Copy)]
struct Learned {
    fresh: f64,
    members: f64,
}

/// Start radius when nothing has been learned yet, per √k (metres): 20 drivers in 174 m
/// (×1.3). Small on purpose: a radius that holds too few drivers costs one more small step,
/// one that holds thousands costs a GEOSEARCH of milliseconds (at 1M drivers in 900 km², the
/// 872 m this started from held ~2,600 and took over 2 ms).
const DEFAULT_C: f64 = 30.0;

impl KnnTuning {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The first radius for `k` fresh drivers, read with `count` members per set: the smaller
    /// of what should hold `k` fresh drivers and what should hold a few times `count` members.
    fn start(&self, key: &(String, u8, u8), k: usize, count: usize) -> f64 {
        let learned = self
            .per_filter
            .lock()
            .expect("not poisoned")
            .get(key)
            .copied();
        let fresh = learned.map_or(DEFAULT_C, |l| l.fresh) * (k as f64).sqrt() * 1.3;
        match learned {
            // The first step may read a few times `count` members.
            Some(l) => fresh.min(l.members * (4.0 * count as f64).sqrt()),
            None => fresh,
        }
    }

    /// Learn `radius ≈ c·√found` for fresh drivers (`found` > 0) and for members per set.
    fn learn(&self, key: &(String, u8, u8), radius: f64, found: usize, members: f64) {
        if !radius.is_finite() || radius <= 0.0 {
            return;
        }
        let mut map = self.per_filter.lock().expect("not poisoned");
        let fresh = (found > 0).then(|| radius / (found as f64).sqrt());
        let member = (members > 0.0).then(|| radius / members.sqrt());
        let entry = map.entry(key.clone()).or_insert(Learned {
            fresh: fresh.unwrap_or(DEFAULT_C),
            members: member.unwrap_or(DEFAULT_C),
        });
        if let Some(f) = fresh {
            entry.fresh = (entry.fresh * 0.8 + f * 0.2).clamp(0.1, 100_000.0);
        }
        if let Some(m) = member {
            entry.members = (entry.members * 0.8 + m * 0.2).clamp(0.1, 100_000.0);
        }
    }
}

/// The tuning key of a search: its city and the filters (status and vehicle masks).
pub(super) fn tuning_key(
    city: &str,
    statuses: &[DriverStatus],
    vehicles: &[VehicleType],
) -> (String, u8, u8) {
    (
        city.to_owned(),
        mask(statuses, &DriverStatus::ALL),
        mask(vehicles, &VehicleType::ALL),
    )
}

/// The steps of one nearest-k query: the radius and `COUNT` of the next step, and how they
/// grow.
pub(super) struct Probe<'a> {
    tuning: &'a KnnTuning,
    key: (String, u8, u8),
    k: usize,
    area: Area,
    /// Radius of the next step (unused for a box).
    pub(super) radius: f64,
    /// `COUNT` of the next step's GEOSEARCH.
    pub(super) count: usize,
}

impl<'a> Probe<'a> {
    /// The first step: the radius that should hold about `k` drivers for this city and filter,
    /// asking each set for `count` members.
    pub(super) fn new(
        tuning: &'a KnnTuning,
        key: (String, u8, u8),
        k: usize,
        count: usize,
        area: Area,
    ) -> Self {
        let radius = match area {
            Area::Radius(max) => tuning.start(&key, k, count).clamp(25.0, max),
            Area::Box(..) => 0.0,
        };
        Self {
            tuning,
            key,
            k,
            area,
            radius,
            count,
        }
    }

    /// After a step that found `found` fresh drivers and read `members` members of one set at
    /// most, with `cutoff` the distance of the last member of a set that filled its `COUNT`
    /// (infinite when none did), and `step_budget` the members the next step may read from one
    /// set: true when the answer is complete, else the next step is set up. A saturated step
    /// raises `COUNT` (×4 while fewer than half the fresh drivers wanted were found, else ×2)
    /// and, where the set was dense (`COUNT` members within `cutoff`), brings the radius in to
    /// what should hold `step_budget` members; another step widens the radius by the lesser of
    /// what should hold `k` fresh drivers and what should hold `step_budget` members. Every
    /// step teaches the tuning how far members and fresh drivers reach.
    pub(super) fn done_or_widen(
        &mut self,
        found: usize,
        members: f64,
        cutoff: f64,
        step_budget: f64,
    ) -> bool {
        let saturated = cutoff.is_finite();
        let complete = !saturated
            && match self.area {
                Area::Radius(max) => self.radius >= max,
                Area::Box(..) => true,
            };
        let done = found >= self.k || complete;
        if let Area::Radius(_) = self.area {
            // The members read lie within `cutoff` when a set saturated, else within `radius`.
            let reach = self.radius.min(cutoff);
            self.tuning
                .learn(&self.key, reach, if done { found } else { 0 }, members);
        }
        if done {
            return true;
        }
        let step_budget = step_budget.max(self.count as f64);
        if saturated {
            if let Area::Radius(_) = self.area {
                let dense = cutoff * (step_budget / self.count as f64).sqrt();
                self.radius = self.radius.min(dense.max(cutoff * 1.1));
            }
            self.count *= if 2 * found < self.k { 4 } else { 2 };
        } else if let Area::Radius(max) = self.area {
            let for_fresh = if found == 0 {
                3.0
            } else {
                (self.k as f64 / found as f64).sqrt() * 1.2
            };
            let for_members = (step_budget / members.max(1.0)).sqrt();
            let grow = for_fresh.min(for_members).clamp(1.25, 3.0);
            self.radius = (self.radius * grow).min(max);
        }
        false
    }

    /// The distance up to which a search that stops after this step has seen every member:
    /// the radius (or, for a box, half its smaller side), or less when a set saturated.
    pub(super) fn covered(&self, cutoff: f64) -> f64 {
        let reach = match self.area {
            Area::Radius(_) => self.radius,
            Area::Box(w, h) => w.min(h) / 2.0,
        };
        reach.min(cutoff)
    }
}

/// The bit set of `chosen` among `all`, in `all`'s order.
fn mask<T: PartialEq + Copy>(chosen: &[T], all: &[T]) -> u8 {
    all.iter()
        .enumerate()
        .filter(|(_, x)| chosen.contains(x))
        .fold(0, |m, (i, _)| m | (1 << i))
}
