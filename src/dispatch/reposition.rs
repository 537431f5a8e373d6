//! Repositioning idle drivers (`dispatch_policy = batched` with `reposition_idle_drivers`):
//! after its matching, a round sends idle drivers toward the pickup spots where the next
//! orders are likely, so that an order placed there finds a driver near instead of one a
//! quarter of an hour away.
//!
//! - **Demand.** Every order a round reads from the pool is recorded once in the city's demand
//!   set (`match:demand`, `"order|lat|lon" → ms first seen`); entries older than
//!   `reposition_window_ms` are dropped. Orders with the same pickup (to about a metre) make one
//!   spot; a spot with `n` orders in the window asks for `ceil(n × reposition_horizon_ms /
//!   reposition_window_ms)` drivers near it, at most [`MAX_SLOTS`]: the orders expected there
//!   within the horizon. Spots are served breadth first: every spot's first driver, busiest
//!   spot first, then every spot's second, and so on.
//! - **Supply.** The idle drivers near each spot: the nearest available, fresh drivers within
//!   `reposition_max_m` (the search every dispatch uses, bounded by `search_max_members`),
//!   less those offered an order in this round and those already on their way to a spot. A
//!   driver on its way (an instruction younger than its travel time and a round) fills a slot
//!   of the spot it was sent to.
//! - **Choice.** A minimum-cost assignment ([`super::assignment`]) of the open slots, at most
//!   as many as there are idle drivers, to those drivers, priced by distance: as many slots
//!   filled as possible, then the least total distance. A driver given a slot within
//!   `reposition_cover_m` of its spot stays where it is (it covers the spot); a farther one is
//!   sent there by `reposition.lua`, which checks in the same step that it is still available,
//!   fresh and free, records the instruction and appends a `driver.reposition` event (the
//!   spot's coordinates) to the stream, Pub/Sub, SSE and webhooks.
//!
//! An instruction is advice: the driver stays available, and a round may offer it an order on
//! the way (it is priced from where it reports, like any driver).

use std::collections::{HashMap, HashSet};

use super::assignment::Problem;
use super::engine::Dispatcher;
use super::error::DispatchError;
use crate::domain::{DriverStatus, GeoPoint, VehicleType, haversine_m};
use crate::metrics;
use crate::search::{Area, Search};
use crate::store::scripts::{self, REPOSITION, evalsha};

/// Most drivers one spot asks for.
pub(crate) const MAX_SLOTS: usize = 3;
/// Most spots a round provides for (the busiest), and most demand entries it reads.
const MAX_SPOTS: usize = 100;
const MAX_DEMAND: usize = 5_000;
/// Cost of leaving a slot open: above any distance.
const UNASSIGNED: i64 = 1_000_000_000;

/// A pickup spot with recent orders.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spot {
    pub(crate) at: GeoPoint,
    pub(crate) orders: usize,
}

/// The spots of the demand entries (`"order|lat|lon"`), busiest first (ties by position).
pub(crate) fn spots(entries: &[String]) -> Vec<Spot> {
    let mut by_place: HashMap<(i64, i64), Spot> = HashMap::new();
    for entry in entries {
        let mut parts = entry.rsplitn(3, '|');
        let (Some(lon), Some(lat)) = (
            parts.next().and_then(|v| v.parse::<f64>().ok()),
            parts.next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let key = ((lat * 1e5).round() as i64, (lon * 1e5).round() as i64);
        by_place
            .entry(key)
            .or_insert(Spot {
                at: GeoPoint { lat, lon },
                orders: 0,
            })
            .orders += 1;
    }
    let mut out: Vec<((i64, i64), Spot)> = by_place.into_iter().collect();
    out.sort_by(|(ka, a), (kb, b)| b.orders.cmp(&a.orders).then(ka.cmp(kb)));
    out.into_iter().map(|(_, s)| s).collect()
}

/// The slots of `spots` (each slot names its spot), breadth first: every spot's first slot,
/// busiest first, then every second slot, and so on.
pub(crate) fn slots(spots: &[Spot], horizon_ms: u64, window_ms: u64) -> Vec<usize> {
    let wanted: Vec<usize> = spots
        .iter()
        .map(|s| {
            let expected = s.orders as f64 * horizon_ms as f64 / window_ms.max(1) as f64;
            (expected.ceil() as usize).clamp(1, MAX_SLOTS)
        })
        .collect();
    let wanted = &wanted;
    (0..MAX_SLOTS)
        .flat_map(|j| (0..spots.len()).filter(move |&s| wanted[s] > j))
        .collect()
}

/// An idle driver near one or more spots: `near[spot] = distance_m`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Idle {
    pub(crate) driver: String,
    pub(crate) near: HashMap<usize, f64>,
}

/// The moves of a round: `(idle index, spot index, distance_m)` for each driver to send.
/// `moving` are the targets of drivers already on their way (each fills a slot of a spot
/// within `cover_m` of it).
pub(crate) fn plan(
    spots: &[Spot],
    slots: &[usize],
    idle: &[Idle],
    moving: &[GeoPoint],
    cover_m: f64,
) -> Vec<(usize, usize, f64)> {
    let mut open: Vec<usize> = slots.to_vec();
    for target in moving {
        if let Some(k) = open
            .iter()
            .position(|&s| haversine_m(spots[s].at, *target) <= cover_m)
        {
            open.remove(k);
        }
    }
    open.truncate(idle.len());
    let mut problem = Problem::new(idle.len());
    for &s in &open {
        problem.add_row(
            idle.iter()
                .enumerate()
                .filter_map(|(c, d)| d.near.get(&s).map(|&m| (c, m.round() as i64))),
        );
    }
    problem
        .solve(UNASSIGNED)
        .into_iter()
        .zip(&open)
        .filter_map(|(c, &s)| {
            let c = c?;
            let distance = idle[c].near[&s];
            (distance > cover_m).then_some((c, s, distance))
        })
        .collect()
}

/// A recorded instruction (`"lat|lon|until_ms"`): the spot, and until when it holds.
pub(crate) fn parse_instruction(value: &str) -> Option<(GeoPoint, i64)> {
    let parts: Vec<f64> = value.split('|').filter_map(|v| v.parse().ok()).collect();
    match parts.as_slice() {
        [lat, lon, until] => Some((
            GeoPoint {
                lat: *lat,
                lon: *lon,
            },
            *until as i64,
        )),
        _ => None,
    }
}

impl Dispatcher {
    /// The drivers of `city` on their way to a spot at Redis time `now`: driver → (spot, ms
    /// until it is expected there). A round prices such a driver from the spot, from then: a
    /// driver app may let it turn at once, but one that finishes the move must not be
    /// expected earlier.
    pub(super) async fn on_their_way(
        &self,
        city: &str,
        now: i64,
    ) -> Result<HashMap<String, (GeoPoint, f64)>, DispatchError> {
        let instructions: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.store().keys().match_repositions(city))
            .query_async(&mut self.store().conn())
            .await
            .map_err(DispatchError::redis("reposition instructions"))?;
        let interval = self.settings().match_interval_ms as i64;
        Ok(instructions
            .into_iter()
            .filter_map(|(driver, value)| {
                let (spot, until) = parse_instruction(&value)?;
                // The instruction holds a round longer than the expected travel.
                let left = until - interval - now;
                (until > now).then_some((driver, (spot, left.max(0) as f64)))
            })
            .collect())
    }

    /// The repositioning step of a round of `city` at Redis time `now`: record the pickups of
    /// `pooled` (order id, pickup) as demand, then send idle drivers, not among `taken` (offered
    /// an order in this round), toward the spots that lack them. Returns the drivers sent.
    pub(super) async fn reposition(
        &self,
        city: &str,
        now: i64,
        pooled: &[(&str, GeoPoint)],
        taken: &HashSet<&str>,
    ) -> Result<usize, DispatchError> {
        let settings = self.settings();
        let keys = self.store().keys();
        let demand = keys.match_demand(city);
        let repositions = keys.match_repositions(city);
        let mut conn = self.store().conn();

        let mut pipe = redis::pipe();
        if !pooled.is_empty() {
            let cmd = pipe.cmd("ZADD").arg(&demand).arg("NX");
            for (id, at) in pooled {
                cmd.arg(now).arg(format!("{id}|{}|{}", at.lat, at.lon));
            }
            cmd.ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&demand)
            .arg("-inf")
            .arg(format!("({}", now - settings.reposition_window_ms as i64))
            .ignore();
        pipe.cmd("ZRANGE")
            .arg(&demand)
            .arg("+inf")
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_DEMAND)
            .cmd("HGETALL")
            .arg(&repositions);
        let (entries, instructions): (Vec<String>, HashMap<String, String>) = pipe
            .query_async(&mut conn)
            .await
            .map_err(DispatchError::redis("reposition demand"))?;

        // Drivers on their way, and instructions that no longer hold.
        let mut moving: Vec<GeoPoint> = Vec::new();
        let mut on_the_way: HashSet<&str> = HashSet::new();
        let mut ended: Vec<&str> = Vec::new();
        for (driver, value) in &instructions {
            match parse_instruction(value) {
                Some((spot, until)) if until > now => {
                    moving.push(spot);
                    on_the_way.insert(driver.as_str());
                }
                _ => ended.push(driver.as_str()),
            }
        }
        if !ended.is_empty() {
            let _: () = redis::cmd("HDEL")
                .arg(&repositions)
                .arg(&ended)
                .query_async(&mut conn)
                .await
                .map_err(DispatchError::redis("reposition instructions"))?;
        }

        let mut spots = spots(&entries);
        spots.truncate(MAX_SPOTS);
        if spots.is_empty() {
            return Ok(0);
        }
        let slots = slots(
            &spots,
            settings.reposition_horizon_ms,
            settings.reposition_window_ms,
        );
        let per_spot = |s: usize| slots.iter().filter(|&&x| x == s).count();

        // The idle drivers near each spot.
        let searches = spots.iter().enumerate().map(|(s, spot)| {
            let search = Search {
                center: spot.at,
                area: Area::Radius(settings.reposition_max_m),
                limit: (per_spot(s) + 2 * MAX_SLOTS).min(settings.search_max_limit),
                statuses: vec![DriverStatus::Available],
                vehicles: VehicleType::ALL.to_vec(),
            };
            async move {
                crate::search::search(self.store(), settings, self.tuning(), city, &search).await
            }
        });
        let mut idle: Vec<Idle> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (s, found) in futures_util::future::join_all(searches)
            .await
            .into_iter()
            .enumerate()
        {
            let found = found.map_err(DispatchError::Search)?;
            for d in found.drivers {
                if taken.contains(d.driver_id.as_str()) || on_the_way.contains(d.driver_id.as_str())
                {
                    continue;
                }
                let k = *index.entry(d.driver_id.clone()).or_insert_with(|| {
                    idle.push(Idle {
                        driver: d.driver_id.clone(),
                        near: HashMap::new(),
                    });
                    idle.len() - 1
                });
                idle[k].near.insert(s, d.distance_m);
            }
        }

        let moves = plan(&spots, &slots, &idle, &moving, settings.reposition_cover_m);
        if moves.is_empty() {
            return Ok(0);
        }
        let script_keys = keys.reposition_script(city);
        let mut pipe = redis::pipe();
        for &(c, s, distance) in &moves {
            // The instruction holds while the driver could be on its way, and one round more.
            let hold_ms =
                distance / settings.match_speed_mps * 1000.0 + settings.match_interval_ms as f64;
            let args = [
                idle[c].driver.clone(),
                spots[s].at.lat.to_string(),
                spots[s].at.lon.to_string(),
                settings.driver_ttl_ms.to_string(),
                (hold_ms.ceil() as u64).to_string(),
                settings.events_maxlen.to_string(),
                keys.ops_channel(city),
                keys.driver_channel_prefix(),
                city.to_owned(),
            ];
            pipe.add_command(evalsha(&REPOSITION, &script_keys, &args));
        }
        let replies: Vec<Vec<String>> = scripts::run_pipeline(&mut conn, &REPOSITION, &pipe)
            .await
            .map_err(DispatchError::redis("reposition"))?;
        let sent = replies
            .iter()
            .filter(|r| r.first().is_some_and(|s| s == "sent"))
            .count();
        metrics::add("geodispatch_match_repositions_total", &[], sent as f64);
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn east(m: f64) -> GeoPoint {
        GeoPoint {
            lat: 48.85,
            lon: 2.35 + m / (111_320.0 * 48.85_f64.to_radians().cos()),
        }
    }

    fn entry(id: &str, at: GeoPoint) -> String {
        format!("{id}|{}|{}", at.lat, at.lon)
    }

    #[test]
    fn orders_at_one_pickup_make_one_spot_and_the_busiest_comes_first() {
        let entries = [
            entry("a", east(0.0)),
            entry("b", east(1_000.0)),
            entry("c", east(1_000.0)),
            entry("d|with|bars", east(0.0)),
            entry("e", east(1_000.0)),
            "broken".to_owned(),
        ];
        let got = spots(&entries);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].orders, got[1].orders), (3, 2));
        assert!(haversine_m(got[0].at, east(1_000.0)) < 1.0);
    }

    #[test]
    fn a_spot_asks_for_the_orders_expected_within_the_horizon_breadth_first() {
        let spot = |orders| Spot {
            at: east(0.0),
            orders,
        };
        // An hour's window and a quarter of an hour ahead: 9 orders → 3 (capped from 2.25 →
        // 3), 5 → 2, 1 → 1.
        let got = slots(&[spot(9), spot(5), spot(1)], 900_000, 3_600_000);
        assert_eq!(got, [0, 1, 2, 0, 1, 0]);
        let got = slots(&[spot(40)], 900_000, 3_600_000);
        assert_eq!(got, [0, 0, 0], "at most {MAX_SLOTS} per spot");
    }

    #[test]
    fn the_nearest_idle_drivers_go_where_no_driver_covers_and_covering_drivers_stay() {
        let spots_ = [
            Spot {
                at: east(0.0),
                orders: 4,
            },
            Spot {
                at: east(2_000.0),
                orders: 2,
            },
        ];
        let near = |pairs: &[(usize, f64)]| pairs.iter().copied().collect::<HashMap<_, _>>();
        let idle = [
            // Covers spot 0 where it is.
            Idle {
                driver: "here".into(),
                near: near(&[(0, 100.0), (1, 1_900.0)]),
            },
            // 800 m from spot 1, 2,800 from spot 0.
            Idle {
                driver: "close".into(),
                near: near(&[(0, 2_800.0), (1, 800.0)]),
            },
            // Far from both.
            Idle {
                driver: "far".into(),
                near: near(&[(0, 2_900.0), (1, 2_950.0)]),
            },
        ];
        // One slot each: "here" stays at 0, "close" goes to 1, "far" has nothing to do.
        let moves = plan(&spots_, &[0, 1], &idle, &[], 500.0);
        assert_eq!(moves, [(1, 1, 800.0)]);
        // A driver already on its way to spot 1 fills its slot: nobody else goes there.
        let moves = plan(&spots_, &[0, 1], &idle, &[east(1_990.0)], 500.0);
        assert_eq!(moves, []);
        // Two slots at spot 0 and one at 1: the farther driver goes to 0 (2,900 + 800 beats
        // 2,800 + 2,950).
        let moves = plan(&spots_, &[0, 1, 0], &idle, &[], 500.0);
        assert_eq!(moves, [(1, 1, 800.0), (2, 0, 2_900.0)]);
    }
}
