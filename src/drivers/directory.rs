//! The driver directory: which city holds a driver. Entries live in the bucketed hashes
//! `gd:{drivers}:city:<bucket>` as `driver_id → city|recorded_ms`, the time being that of the
//! position that last moved (or created) the driver; a move changes an entry only by
//! compare-and-set, so two concurrent moves cannot both win.

use crate::domain::{CityId, DriverId};
use crate::store::scripts::{self, CITY_CAS, evalsha};
use crate::store::{Keys, RedisConn, Store};

use super::DriverError;
use super::scripts::{CasEntry, CityCasArgs, CityCasReply};

/// A directory entry for a driver in `city` since the position recorded at `ms`.
pub(super) fn entry(city: &str, ms: i64) -> String {
    format!("{city}|{ms}")
}

/// Split a directory entry into its city and time (0 when absent).
pub(super) fn parse_entry(value: &str) -> (&str, i64) {
    match value.split_once('|') {
        Some((city, ms)) => (city, ms.parse().unwrap_or(0)),
        None => (value, 0),
    }
}

/// The directory entry of one driver.
pub(super) async fn directory_entry(
    conn: &mut RedisConn,
    keys: &Keys,
    id: &str,
) -> Result<Option<String>, DriverError> {
    redis::cmd("HGET")
        .arg(keys.driver_directory(id))
        .arg(id)
        .query_async(conn)
        .await
        .map_err(DriverError::redis("driver directory"))
}

/// The directory entries of `ids`, in order (one pipelined `HGET` each: they lie in different
/// buckets).
pub(super) async fn directory_entries(
    conn: &mut RedisConn,
    keys: &Keys,
    ids: &[&str],
) -> Result<Vec<Option<String>>, DriverError> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET").arg(keys.driver_directory(id)).arg(*id);
    }
    pipe.query_async(conn)
        .await
        .map_err(DriverError::redis("driver directory"))
}

/// Compare-and-set directory entries as `lua/driver_city_cas.lua` takes them (see
/// [`CasEntry`]); one `true` per entry that was as expected and was set.
pub(super) async fn city_cas(
    conn: &mut RedisConn,
    keys: &Keys,
    entries: &[CasEntry<'_>],
) -> Result<Vec<bool>, DriverError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let k: Vec<String> = entries
        .iter()
        .map(|e| keys.driver_directory(e.driver_id))
        .collect();
    let cmd = evalsha(&CITY_CAS, &k, &CityCasArgs { entries }.argv());
    let reply: Vec<i64> = scripts::run(conn, &CITY_CAS, &cmd)
        .await
        .map_err(DriverError::redis("driver directory"))?;
    let CityCasReply(applied) =
        CityCasReply::decode(&reply, entries.len()).map_err(DriverError::Internal)?;
    Ok(applied)
}

/// The city a driver is in (from the directory), or `None` for an unknown driver.
pub(crate) async fn load_city(store: &Store, id: &DriverId) -> Result<Option<String>, DriverError> {
    let mut conn = store.conn();
    let city: Option<String> = redis::cmd("HGET")
        .arg(store.keys().driver_directory(id.as_str()))
        .arg(id.as_str())
        .query_async(&mut conn)
        .await
        .map_err(DriverError::redis("driver city"))?;
    city.map(|c| valid_city(parse_entry(&c).0)).transpose()
}

/// A city name read back from Redis; one that is not a valid city id means corrupt data.
pub(super) fn valid_city(name: &str) -> Result<String, DriverError> {
    CityId::parse(name)
        .map(|c| c.to_string())
        .map_err(|e| DriverError::Internal(anyhow::anyhow!("stored city {name:?} is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_splits_into_the_city_and_time_it_was_written_with() {
        assert_eq!(parse_entry(&entry("paris", 1_700)), ("paris", 1_700));
        // A time that is absent or unreadable orders before every position.
        assert_eq!(parse_entry("paris"), ("paris", 0));
        assert_eq!(parse_entry("paris|garbage"), ("paris", 0));
    }
}
