//! A batch of positions: each item is validated on its own and gets its own result, so a bad
//! item never blocks the others; the valid ones are stored together ([`ingest::set_positions`]).

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{CityId, DriverId, FieldError, rfc3339_ms};
use crate::store::Store;

use super::DriverError;
use super::error::ahead_of_clock;
use super::ingest::{self, PositionOutcome};
use super::model::{
    BatchPosition, BatchResponse, BatchResult, BatchStatus, ValidPosition, parse_driver_id,
};

/// One item of a batch as the caller decoded it.
#[derive(Debug)]
pub(crate) struct BatchItem {
    /// The item's `driver_id` as sent (empty when it had none), echoed in its result.
    pub(crate) driver_id: String,
    /// The decoded item, or why it could not be decoded (fields named from the item's root).
    pub(crate) position: Result<BatchPosition, Vec<FieldError>>,
}

/// One validated item and its place in the batch.
struct Prepared {
    index: usize,
    id: DriverId,
    city: CityId,
    pos: ValidPosition,
}

/// Store a batch: items are decoded lazily, so a batch over `batch_max_positions` is refused
/// whole ([`DriverError::BatchTooLarge`]) before any work; otherwise one result per item, in
/// input order.
pub(crate) async fn store_batch(
    store: &Store,
    settings: &Settings,
    cities: &CityIndex,
    items: impl ExactSizeIterator<Item = BatchItem>,
) -> Result<BatchResponse, DriverError> {
    if items.len() > settings.batch_max_positions {
        return Err(DriverError::BatchTooLarge {
            count: items.len(),
            max: settings.batch_max_positions,
        });
    }
    let mut results: Vec<BatchResult> = Vec::with_capacity(items.len());
    let mut prepared: Vec<Prepared> = Vec::with_capacity(items.len());
    for (index, item) in items.enumerate() {
        match prepare(cities, index, item.position) {
            Ok(p) => {
                prepared.push(p);
                results.push(BatchResult {
                    driver_id: item.driver_id,
                    status: BatchStatus::Accepted,
                    detail: None,
                });
            }
            Err(detail) => results.push(BatchResult {
                driver_id: item.driver_id,
                status: BatchStatus::Invalid,
                detail: Some(detail),
            }),
        }
    }
    if !prepared.is_empty() {
        apply(store, settings, prepared, &mut results).await?;
    }
    Ok(BatchResponse { results })
}

/// Validate item `index` and find its city; the `invalid` detail otherwise.
fn prepare(
    cities: &CityIndex,
    index: usize,
    position: Result<BatchPosition, Vec<FieldError>>,
) -> Result<Prepared, String> {
    let (raw, update) = position.map_err(|e| item_error(index, e))?.into_parts();
    let id = parse_driver_id(&raw, "driver_id").map_err(|e| item_error(index, vec![e]))?;
    let pos = update.validate("").map_err(|e| item_error(index, e))?;
    let city = cities
        .resolve(pos.point)
        .ok_or_else(|| format!("positions[{index}]: the point lies outside every service area"))?
        .id
        .clone();
    Ok(Prepared {
        index,
        id,
        city,
        pos,
    })
}

fn item_error(index: usize, errors: Vec<FieldError>) -> String {
    errors
        .into_iter()
        .map(|e| format!("positions[{index}].{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Store the prepared items and record each outcome in its result.
async fn apply(
    store: &Store,
    settings: &Settings,
    prepared: Vec<Prepared>,
    results: &mut [BatchResult],
) -> Result<(), DriverError> {
    let mut indexes = Vec::with_capacity(prepared.len());
    let items: Vec<(DriverId, CityId, ValidPosition)> = prepared
        .into_iter()
        .map(|p| {
            indexes.push(p.index);
            (p.id, p.city, p.pos)
        })
        .collect();
    let outcomes = ingest::set_positions(&mut store.conn(), store.keys(), settings, &items).await?;
    for ((index, (_, _, pos)), outcome) in indexes.into_iter().zip(&items).zip(outcomes) {
        record(
            &mut results[index],
            index,
            pos.recorded_ms,
            outcome,
            settings,
        );
    }
    Ok(())
}

fn record(
    result: &mut BatchResult,
    index: usize,
    sent_ms: i64,
    outcome: PositionOutcome,
    settings: &Settings,
) {
    match outcome {
        PositionOutcome::Accepted(_) => result.status = BatchStatus::Accepted,
        PositionOutcome::Stale { stored_ms } => {
            result.status = BatchStatus::Stale;
            result.detail = Some(format!(
                "recorded_at {} is older than the stored position ({})",
                rfc3339_ms(sent_ms),
                rfc3339_ms(stored_ms)
            ));
        }
        PositionOutcome::Future { now_ms } => {
            result.status = BatchStatus::Invalid;
            result.detail = Some(format!(
                "positions[{index}].recorded_at: {}",
                ahead_of_clock(sent_ms, now_ms, settings.max_clock_skew_ms)
            ));
        }
        PositionOutcome::Contended | PositionOutcome::Unknown | PositionOutcome::Left { .. } => {
            result.status = BatchStatus::Invalid;
            result.detail = Some(format!(
                "positions[{index}]: concurrent updates were moving the driver between cities; nothing was written for it, retry"
            ));
        }
    }
}
