//! The operations other layers call: store a position, read a driver, change its shift status,
//! delete it, run another capability's one-city script on it, and list a city's indexed
//! drivers. Each takes the shared [`Store`] and answers in [`DriverError`].

use crate::cities::{City, CityIndex};
use crate::config::Settings;
use crate::domain::{CityId, DriverId, DriverStatus, ShiftStatus, VehicleType};
use crate::store::scripts::{self, DELETE_DRIVER, SET_STATUS, evalsha, time_ms};
use crate::store::{Keys, Store};

use super::DriverError;
use super::directory::{city_cas, load_city, valid_city};
use super::ingest::{self, PositionOutcome};
use super::model::{DriverState, LocationUpdate, ValidPosition};
use super::moves::MOVE_RETRIES;
use super::scripts::{CasEntry, DeleteArgs, DeleteReply, SetStatusArgs, SetStatusReply};

/// Validate and store one driver's position in the city it lies in, following the driver if
/// it comes from another city. Returns the driver's new state.
pub(crate) async fn update_position(
    store: &Store,
    settings: &Settings,
    cities: &CityIndex,
    id: &DriverId,
    update: &LocationUpdate,
) -> Result<DriverState, DriverError> {
    let pos = update.validate("").map_err(DriverError::Validation)?;
    let city = cities
        .resolve(pos.point)
        .ok_or(DriverError::OutsideServiceArea {
            lat: pos.point.lat,
            lon: pos.point.lon,
        })?
        .id
        .clone();
    let mut conn = store.conn();
    match ingest::set_position(&mut conn, store.keys(), settings, id, &city, &pos).await? {
        PositionOutcome::Accepted(state) => Ok(state),
        PositionOutcome::Stale { stored_ms } => Err(DriverError::StalePosition {
            driver: id.clone(),
            sent_ms: pos.recorded_ms,
            stored_ms,
        }),
        PositionOutcome::Future { now_ms } => Err(DriverError::FuturePosition {
            sent_ms: pos.recorded_ms,
            now_ms,
            max_skew_ms: settings.max_clock_skew_ms,
        }),
        PositionOutcome::Contended => Err(DriverError::MoveContended(id.clone())),
        PositionOutcome::Unknown | PositionOutcome::Left { .. } => Err(DriverError::Internal(
            anyhow::anyhow!("set_position left driver {id} unresolved"),
        )),
    }
}

/// Store validated positions, each in the city given with it, as a batch does (see
/// [`ingest::set_positions`]); one outcome per position, in order.
pub(crate) async fn store_positions(
    store: &Store,
    settings: &Settings,
    items: &[(DriverId, CityId, ValidPosition)],
) -> Result<Vec<PositionOutcome>, DriverError> {
    ingest::set_positions(&mut store.conn(), store.keys(), settings, items).await
}

/// Read a driver's state and Redis' clock: the directory names the city, then one round trip
/// to the city's slot. `None` for an unknown driver.
pub(crate) async fn load_driver(
    store: &Store,
    settings: &Settings,
    id: &DriverId,
) -> Result<Option<DriverState>, DriverError> {
    let Some(city) = load_city(store, id).await? else {
        return Ok(None);
    };
    let mut conn = store.conn();
    let (packed, time): (Option<String>, (i64, i64)) = redis::pipe()
        .cmd("HGET")
        .arg(store.keys().driver_states(&city))
        .arg(id.as_str())
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(DriverError::redis("load driver"))?;
    match packed {
        None => Ok(None),
        Some(packed) => DriverState::from_packed(
            id.as_str(),
            &city,
            &packed,
            time_ms(time),
            settings.driver_ttl_ms,
        )
        .map(Some)
        .ok_or_else(|| {
            DriverError::Internal(anyhow::anyhow!("undecodable state {packed:?} of {id}"))
        }),
    }
}

/// Run a one-city script on a driver, following it if it moves city meanwhile: the script gets
/// `keys_for(city)` as KEYS and `driver_id, extra_args…` as ARGV, and answers
/// `{'missing'}` (no state in that city: the directory is read again) or anything else.
/// Returns the city and that reply, or `None` when the driver does not exist.
pub(crate) async fn run_on_driver_city(
    store: &Store,
    script: &'static redis::Script,
    keys_for: impl Fn(&Keys, &str) -> Vec<String>,
    id: &DriverId,
    extra_args: &[&str],
) -> Result<Option<(String, Vec<String>)>, DriverError> {
    let mut argv = vec![id.as_str()];
    argv.extend_from_slice(extra_args);
    run_in_driver_city(store, script, keys_for, id, &argv).await
}

/// [`run_on_driver_city`] with the script's whole ARGV given (`argv`, built by the script's
/// typed arguments).
async fn run_in_driver_city(
    store: &Store,
    script: &'static redis::Script,
    keys_for: impl Fn(&Keys, &str) -> Vec<String>,
    id: &DriverId,
    argv: &[&str],
) -> Result<Option<(String, Vec<String>)>, DriverError> {
    let mut conn = store.conn();
    let keys = store.keys();
    let mut city = load_city(store, id).await?;
    for _ in 0..MOVE_RETRIES {
        let Some(c) = city.take() else {
            return Ok(None);
        };
        let c = valid_city(&c)?;
        let cmd = evalsha(script, &keys_for(keys, &c), argv);
        let reply: Vec<String> = scripts::run(&mut conn, script, &cmd)
            .await
            .map_err(DriverError::redis("driver script"))?;
        match reply.first().map(String::as_str) {
            // Not in that city: it may have moved since the directory was read.
            Some("missing") => {
                city = load_city(store, id).await?.filter(|now| *now != c);
            }
            _ => return Ok(Some((c, reply))),
        }
    }
    Err(DriverError::Internal(anyhow::anyhow!(
        "driver {id} kept moving between cities"
    )))
}

/// Set a driver's shift status; a driver busy with an order keeps its status (dispatch frees
/// it). Returns the driver's new state.
pub(crate) async fn set_status(
    store: &Store,
    settings: &Settings,
    id: &DriverId,
    status: ShiftStatus,
) -> Result<DriverState, DriverError> {
    let args = SetStatusArgs {
        driver_id: id.as_str(),
        status,
    };
    let (city, reply) = run_in_driver_city(store, &SET_STATUS, Keys::city_script, id, &args.argv())
        .await?
        .ok_or_else(|| DriverError::DriverNotFound(id.clone()))?;
    match SetStatusReply::decode(&reply)? {
        SetStatusReply::Ok { state, now_ms } => {
            DriverState::from_packed(id.as_str(), &city, &state, now_ms, settings.driver_ttl_ms)
                .ok_or_else(|| {
                    DriverError::Internal(anyhow::anyhow!("bad set_status reply {reply:?}"))
                })
        }
        SetStatusReply::Busy { .. } => Err(DriverError::StatusOwnedByDispatch(id.clone())),
        // Only after the driver kept leaving the cities the directory named.
        SetStatusReply::Missing => Err(DriverError::DriverNotFound(id.clone())),
    }
}

/// Remove a driver from every index of its city and from the directory (not while it holds
/// an order).
pub(crate) async fn delete_driver(store: &Store, id: &DriverId) -> Result<(), DriverError> {
    let args = DeleteArgs {
        driver_id: id.as_str(),
    };
    let (city, reply) = run_in_driver_city(
        store,
        &DELETE_DRIVER,
        |k, c| k.driver_script(c, id.as_str()),
        id,
        &args.argv(),
    )
    .await?
    .ok_or_else(|| DriverError::DriverNotFound(id.clone()))?;
    match DeleteReply::decode(&reply)? {
        DeleteReply::Deleted => {}
        DeleteReply::Busy => return Err(DriverError::HoldsOrder(id.clone())),
        DeleteReply::Missing => return Err(DriverError::DriverNotFound(id.clone())),
    }
    // Only an entry still naming this city goes: a concurrent move may own it by now.
    let entry = CasEntry {
        driver_id: id.as_str(),
        expected: city.as_str(),
        new: "",
    };
    city_cas(&mut store.conn(), store.keys(), &[entry]).await?;
    Ok(())
}

/// A driver as its city's GEO indexes hold it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IndexedDriver {
    /// Driver id.
    pub(crate) driver_id: String,
    /// Latitude (as the GEO index stores it).
    pub(crate) lat: f64,
    /// Longitude (as the GEO index stores it).
    pub(crate) lon: f64,
    /// The status whose index holds it.
    pub(crate) status: DriverStatus,
    /// Vehicle type, from its member tag.
    pub(crate) vehicle_type: VehicleType,
}

/// Every indexed driver of a city, up to a limit per status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IndexedDrivers {
    /// The drivers, status by status.
    pub(crate) drivers: Vec<IndexedDriver>,
    /// Whether a status held more drivers than the limit.
    pub(crate) truncated: bool,
}

/// The drivers of `city`'s GEO indexes, at most `limit` per status (whichever `limit` Redis
/// finds first: one `GEOSEARCH … ANY` per status over the city's bounding box). Stale drivers
/// show until the sweeper removes them.
pub(crate) async fn indexed_drivers(
    store: &Store,
    city: &City,
    limit: usize,
) -> Result<IndexedDrivers, DriverError> {
    let b = city.bbox;
    let (clat, clon) = ((b.min_lat + b.max_lat) / 2.0, (b.min_lon + b.max_lon) / 2.0);
    let height_m = (b.max_lat - b.min_lat) * 111_320.0 * 1.05;
    let width_m = (b.max_lon - b.min_lon) * 111_320.0 * clat.to_radians().cos().max(0.01) * 1.05;
    let mut pipe = redis::pipe();
    for status in DriverStatus::ALL {
        pipe.cmd("GEOSEARCH")
            .arg(store.keys().geo(city.id.as_str(), status))
            .arg("FROMLONLAT")
            .arg(clon)
            .arg(clat)
            .arg("BYBOX")
            .arg(width_m)
            .arg(height_m)
            .arg("m")
            .arg("COUNT")
            .arg(limit + 1)
            .arg("ANY")
            .arg("WITHCOORD");
    }
    let mut conn = store.conn();
    let replies: Vec<Vec<(String, (f64, f64))>> = pipe
        .query_async(&mut conn)
        .await
        .map_err(DriverError::redis("map snapshot"))?;
    let mut truncated = false;
    let mut drivers = Vec::new();
    for (status, members) in DriverStatus::ALL.into_iter().zip(replies) {
        truncated |= members.len() > limit;
        for (member, (lon, lat)) in members.into_iter().take(limit) {
            if let Some((vehicle_type, id)) = VehicleType::untag(&member) {
                drivers.push(IndexedDriver {
                    driver_id: id.to_owned(),
                    lat,
                    lon,
                    status,
                    vehicle_type,
                });
            }
        }
    }
    Ok(IndexedDrivers { drivers, truncated })
}
