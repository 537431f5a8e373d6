//! `geodispatch migrate`: bring driver keys written in layout 1 (one big last-seen set and
//! directory hash per deployment, city-prefixed packed states) to the current layout 2. Run it with every service instance stopped (it is not atomic against live writes);
//! every step is idempotent, so it can be run again after an interruption.
//!
//! - the packed states of `gd:{city}:drivers` written as
//!   `city|recorded_ms|lat|lon|status|vehicle|accuracy|heading|speed` are rewritten as
//!   `recorded_ms|lat|lon|S|V|accuracy|heading|speed` (see [`crate::domain::PackedState`]);
//! - the last-seen sorted set `gd:{city}:seen` is split into the liveness buckets and their
//!   index, then deleted;
//! - the per-vehicle GEO sets `gd:{city}:geo:<status>:<vehicle>` (the oldest builds kept them
//!   beside the status sets, which hold every driver) are deleted;
//! - the directory hash `gd:drivers:city` is split into its buckets, then deleted.

use std::collections::HashMap;

use serde::Serialize;

use super::{DriverStatus, VehicleType, driver_bucket};
use crate::cities::CityIndex;
use crate::store::{RedisConn, Store};

/// What a migration changed.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct MigrateReport {
    /// Packed states rewritten.
    pub states_rewritten: u64,
    /// Last-seen entries moved into buckets.
    pub seen_moved: u64,
    /// Per-vehicle GEO sets deleted.
    pub per_vehicle_sets_deleted: u64,
    /// Directory entries moved into buckets.
    pub directory_moved: u64,
}

/// Entries read per `HSCAN`/`ZSCAN` step.
const SCAN_COUNT: usize = 1_000;

/// A packed state of layout 1, rewritten in the current one; `None` when
/// `packed` is not in the old layout (already current, or unreadable).
pub(crate) fn convert_state(packed: &str) -> Option<String> {
    let f: Vec<&str> = packed.split('|').collect();
    if f.len() != 9 || f[1].parse::<i64>().is_err() {
        return None;
    }
    let status = DriverStatus::parse(f[4])?;
    let vehicle = VehicleType::parse(f[5])?;
    Some(
        [
            f[1],
            f[2],
            f[3],
            &status.as_str()[..1],
            &vehicle.tag()[..1],
            f[6],
            f[7],
            f[8],
        ]
        .join("|"),
    )
}

/// The pages of an `HSCAN` or `ZSCAN` of one key (none when the key does not exist).
struct Scan<'a> {
    cmd: &'static str,
    key: &'a str,
    /// `None` once the scan is complete.
    cursor: Option<u64>,
}

impl<'a> Scan<'a> {
    fn new(cmd: &'static str, key: &'a str) -> Self {
        Scan {
            cmd,
            key,
            cursor: Some(0),
        }
    }

    /// The next page, or `None` after the last.
    async fn next<T: redis::FromRedisValue>(
        &mut self,
        conn: &mut RedisConn,
    ) -> redis::RedisResult<Option<Vec<T>>> {
        let Some(cursor) = self.cursor else {
            return Ok(None);
        };
        let (next, page): (u64, Vec<T>) = redis::cmd(self.cmd)
            .arg(self.key)
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        self.cursor = (next != 0).then_some(next);
        Ok(Some(page))
    }
}

/// Migrate every city of `cities` and the directory. See the module doc.
pub async fn migrate_layout(store: &Store, cities: &CityIndex) -> anyhow::Result<MigrateReport> {
    let mut conn = store.conn();
    let keys = store.keys();
    let mut report = MigrateReport::default();
    for city in cities.all() {
        let c = city.id.as_str();

        let states = keys.driver_states(c);
        let mut scan = Scan::new("HSCAN", &states);
        while let Some(page) = scan.next::<(String, String)>(&mut conn).await? {
            let converted: Vec<(String, String)> = page
                .into_iter()
                .filter_map(|(id, packed)| convert_state(&packed).map(|s| (id, s)))
                .collect();
            if !converted.is_empty() {
                report.states_rewritten += converted.len() as u64;
                let () = redis::cmd("HSET")
                    .arg(&states)
                    .arg(&converted)
                    .query_async(&mut conn)
                    .await?;
            }
        }

        let old_seen = keys.legacy_seen(c);
        let mut oldest: HashMap<u16, f64> = HashMap::new();
        let mut scan = Scan::new("ZSCAN", &old_seen);
        while let Some(page) = scan.next::<(String, f64)>(&mut conn).await? {
            let mut pipe = redis::pipe();
            for (id, ms) in &page {
                let bucket = driver_bucket(id);
                pipe.cmd("ZADD")
                    .arg(keys.seen_bucket(c, bucket))
                    .arg(*ms)
                    .arg(id)
                    .ignore();
                let low = oldest.entry(bucket).or_insert(*ms);
                *low = low.min(*ms);
            }
            report.seen_moved += page.len() as u64;
            if !page.is_empty() {
                let () = pipe.query_async(&mut conn).await?;
            }
        }
        let mut pipe = redis::pipe();
        for (bucket, ms) in oldest {
            pipe.cmd("ZADD")
                .arg(keys.seen_index(c))
                .arg("LT")
                .arg(ms)
                .arg(bucket)
                .ignore();
        }
        pipe.cmd("DEL").arg(&old_seen).ignore();
        let () = pipe.query_async(&mut conn).await?;

        for status in DriverStatus::ALL {
            for vehicle in VehicleType::ALL {
                let old = keys.legacy_geo_vehicle(c, status.as_str(), vehicle.as_str());
                let deleted: u64 = redis::cmd("DEL").arg(&old).query_async(&mut conn).await?;
                report.per_vehicle_sets_deleted += deleted;
            }
        }
    }

    let old_directory = keys.legacy_driver_directory();
    let mut scan = Scan::new("HSCAN", &old_directory);
    while let Some(page) = scan.next::<(String, String)>(&mut conn).await? {
        let mut pipe = redis::pipe();
        for (id, entry) in &page {
            // HSETNX: an entry the current build already wrote in the buckets is newer.
            pipe.cmd("HSETNX")
                .arg(keys.driver_directory(id))
                .arg(id)
                .arg(entry)
                .ignore();
        }
        report.directory_moved += page.len() as u64;
        if !page.is_empty() {
            let () = pipe.query_async(&mut conn).await?;
        }
    }
    let () = redis::cmd("DEL")
        .arg(&old_directory)
        .query_async(&mut conn)
        .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_packed_states_are_converted_and_current_ones_left_alone() {
        assert_eq!(
            convert_state("paris|1000|48.85|2.35|busy|van|5|90|").as_deref(),
            Some("1000|48.85|2.35|b|v|5|90|")
        );
        assert_eq!(
            convert_state("paris|1000|48.85|2.35|available|car|||").as_deref(),
            Some("1000|48.85|2.35|a|c|||")
        );
        assert_eq!(convert_state("1000|48.85|2.35|b|v|5|90|"), None);
        assert_eq!(convert_state("paris|x|48.85|2.35|busy|van|||"), None);
    }
}
