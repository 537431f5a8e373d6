//! Bringing a driver into a city that does not hold it yet: a new driver, or one whose position
//! now lies in another city. Every city's keys share one Cluster slot and the directory lies
//! in others, so no single script can move a driver; the directory's compare-and-set and a
//! per-driver lease order the steps instead.

use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::domain::{CityId, DriverId, DriverStatus, ShiftStatus, VehicleType};
use crate::store::scripts::{self, SET_POSITION};
use crate::store::{Keys, RedisConn};

use super::DriverError;
use super::directory::{
    city_cas, directory_entries, directory_entry, entry, parse_entry, valid_city,
};
use super::ingest::{PositionOutcome, decode_positions, position_cmd, run_one};
use super::model::ValidPosition;
use super::scripts::{CasEntry, PositionMode};

/// How often a step is retried after the directory changed under it (the driver moved city
/// meanwhile).
pub(super) const MOVE_RETRIES: usize = 4;

/// How long a driver's move lease lasts if its holder dies.
const MOVE_LEASE: Duration = Duration::from_secs(2);

/// Bring a driver that `city` does not hold into it. The directory decides who may: a driver
/// is created in a city only by a caller that found the directory naming that city, or made it
/// name it with a compare-and-set (from no entry, or from the previous city, which the caller
/// then leaves: stale and busy checks there, status, vehicle type and score carried over).
/// A move that cannot happen (stale, or busy in its order's city) sets the entry back. After
/// creating, the entry is read again: if a concurrent move took it elsewhere meanwhile, the
/// driver is removed from this city again, so it ends up in one city. Each step is atomic in
/// its own slot; a crash between leaving and creating drops the driver (its score too) until
/// its next position, which recreates it.
pub(super) async fn arrive(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, DriverError> {
    // One arrival per driver at a time (a short lease on a per-driver key, `SET NX PX` with a
    // random token, released by compare-and-delete): two concurrent moves of one driver could
    // otherwise each leave and create and interleave. Positions within a city never take it.
    let lease_key = keys.driver_move_lease(id);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + MOVE_LEASE;
    loop {
        if crate::lock::take(conn, &lease_key, &token, MOVE_LEASE)
            .await
            .map_err(DriverError::redis("driver move lease"))?
        {
            break;
        }
        if Instant::now() > deadline {
            return Ok(PositionOutcome::Contended);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = arrive_leased(conn, keys, settings, id, city, pos).await;
    if let Err(err) = crate::lock::release_token(conn, &lease_key, &token).await {
        tracing::warn!(driver = %id, error = %err, "releasing a move lease failed; it expires by itself");
    }
    result
}

/// [`arrive`], holding the driver's move lease.
async fn arrive_leased(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    id: &DriverId,
    city: &CityId,
    pos: &ValidPosition,
) -> Result<PositionOutcome, DriverError> {
    let mut pos = pos.clone();
    let mut score = None;
    let mut claimed = false;
    let mine = entry(city.as_str(), pos.recorded_ms);
    for _ in 0..MOVE_RETRIES {
        let Some(known) = directory_entry(conn, keys, id.as_str()).await? else {
            if city_cas(
                conn,
                keys,
                &[CasEntry {
                    driver_id: id.as_str(),
                    expected: "",
                    new: &mine,
                }],
            )
            .await?[0]
            {
                claimed = true;
                break;
            }
            continue;
        };
        let (known_city, known_ms) = parse_entry(&known);
        // A later position already moved the driver (perhaps into this very city, its
        // creation still under way): this one is out of order.
        if pos.recorded_ms < known_ms {
            return Ok(PositionOutcome::Stale {
                stored_ms: known_ms,
            });
        }
        if known_city == city.as_str() {
            claimed = true;
            break;
        }
        let prev = valid_city(known_city)?;
        if !city_cas(
            conn,
            keys,
            &[CasEntry {
                driver_id: id.as_str(),
                expected: &known,
                new: &mine,
            }],
        )
        .await?[0]
        {
            continue;
        }
        claimed = true;
        match run_one(conn, keys, settings, id, &prev, &pos, PositionMode::Leave).await? {
            PositionOutcome::Unknown => {}
            PositionOutcome::Left { packed, score: s } => {
                // The packed state's status and vehicle codes (see `domain::PackedState`).
                let mut f = packed.split('|').skip(3);
                if pos.status.is_none()
                    && f.next().and_then(DriverStatus::from_code) == Some(DriverStatus::Offline)
                {
                    pos.status = Some(ShiftStatus::Offline);
                }
                if pos.vehicle_type.is_none() {
                    pos.vehicle_type = f.next().and_then(VehicleType::from_code);
                }
                score = s;
            }
            // Stale, too far ahead, or busy (kept in its order's city): it stays there.
            other => {
                city_cas(
                    conn,
                    keys,
                    &[CasEntry {
                        driver_id: id.as_str(),
                        expected: &mine,
                        new: &known,
                    }],
                )
                .await?;
                return Ok(other);
            }
        }
        break;
    }
    if !claimed {
        return Ok(PositionOutcome::Contended);
    }
    let mut pipe = redis::pipe();
    pipe.add_command(position_cmd(
        keys,
        settings,
        city.as_str(),
        &[(id, &pos)],
        PositionMode::Create,
    ));
    if let Some(score) = &score {
        pipe.cmd("ZADD")
            .arg(keys.scores(city.as_str()))
            .arg("NX")
            .arg(score)
            .arg(id.as_str())
            .ignore();
    }
    let (reply,): (Vec<String>,) = scripts::run_pipeline(conn, &SET_POSITION, &pipe)
        .await
        .map_err(DriverError::redis("set_position"))?;
    let outcome = decode_positions(city.as_str(), &[id], &reply, settings.driver_ttl_ms)?
        .pop()
        .ok_or_else(|| DriverError::Internal(anyhow::anyhow!("empty set_position reply")))?;
    if matches!(outcome, PositionOutcome::Accepted(_)) {
        confirm_created(conn, keys, settings, &[(id, city.as_str(), &pos)]).await?;
    }
    Ok(outcome)
}

/// After creating drivers, check that the directory still names the city each was created
/// in; where a concurrent move took the entry elsewhere meanwhile, remove the driver from the
/// city again (`leave`), so that no driver is held by two cities.
pub(super) async fn confirm_created(
    conn: &mut RedisConn,
    keys: &Keys,
    settings: &Settings,
    created: &[(&DriverId, &str, &ValidPosition)],
) -> Result<(), DriverError> {
    if created.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = created.iter().map(|(id, _, _)| id.as_str()).collect();
    let now = directory_entries(conn, keys, &ids).await?;
    for ((id, city, pos), now) in created.iter().zip(now) {
        if now.as_deref().map(|e| parse_entry(e).0) != Some(*city) {
            tracing::info!(driver = %id, city, now = ?now, "driver moved elsewhere while created; removing it from this city");
            run_one(conn, keys, settings, id, city, pos, PositionMode::Leave).await?;
        }
    }
    Ok(())
}
