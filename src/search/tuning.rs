//! The learned starting radius of nearest-k search: per city and filter, how far the first
//! step reaches, and how each step grows when it found too few drivers.

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
    per_filter: Mutex<HashMap<(String, u8, u8), f64>>,
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

    fn start(&self, key: &(String, u8, u8), k: usize) -> f64 {
        let c = self
            .per_filter
            .lock()
            .expect("not poisoned")
            .get(key)
            .copied()
            .unwrap_or(DEFAULT_C);
        c * (k as f64).sqrt() * 1.3
    }

    fn learn(&self, key: (String, u8, u8), radius: f64, found: usize) {
        if found == 0 || !radius.is_finite() {
            return;
        }
        let observed = radius / (found as f64).sqrt();
        let mut map = self.per_filter.lock().expect("not poisoned");
        let c = map.entry(key).or_insert(observed);
        *c = (*c * 0.8 + observed * 0.2).clamp(0.1, 100_000.0);
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
            Area::Radius(max) => tuning.start(&key, k).clamp(25.0, max),
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

    /// After a step that found `found` fresh drivers, with `cutoff` the distance of the last
    /// member of a set that filled its `COUNT` (infinite when none did): true when the answer
    /// is complete (and the radius it took is learned), else the next step is set up: a
    /// saturated step doubles `COUNT`, another widens the radius from the count it found.
    pub(super) fn done_or_widen(&mut self, found: usize, cutoff: f64) -> bool {
        let saturated = cutoff.is_finite();
        let complete = !saturated
            && match self.area {
                Area::Radius(max) => self.radius >= max,
                Area::Box(..) => true,
            };
        if found >= self.k || complete {
            if let Area::Radius(_) = self.area {
                // The drivers found lie within `cutoff` when a set saturated, else within `radius`.
                // The answer is complete: the probe is not used again, its key can move.
                self.tuning.learn(
                    std::mem::take(&mut self.key),
                    self.radius.min(cutoff),
                    found,
                );
            }
            return true;
        }
        if saturated {
            self.count *= 2;
        } else if let Area::Radius(max) = self.area {
            let grow = if found == 0 {
                3.0
            } else {
                ((self.k as f64 / found as f64).sqrt() * 1.2).clamp(1.25, 3.0)
            };
            self.radius = (self.radius * grow).min(max);
        }
        false
    }
}

/// The bit set of `chosen` among `all`, in `all`'s order.
fn mask<T: PartialEq + Copy>(chosen: &[T], all: &[T]) -> u8 {
    all.iter()
        .enumerate()
        .filter(|(_, x)| chosen.contains(x))
        .fold(0, |m, (i, _)| m | (1 << i))
}
