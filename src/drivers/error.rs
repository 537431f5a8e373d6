//! What can go wrong in the drivers capability, in its own words; the HTTP layer decides how
//! each case is answered.

use crate::domain::{DriverId, FieldError, rfc3339_ms};

/// Every failure of a drivers operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    /// One or more input fields are invalid.
    #[error("invalid input: {0:?}")]
    Validation(Vec<FieldError>),
    /// A batch holds more positions than `batch_max_positions`; none of them was written.
    #[error("{count} positions exceed the limit of {max} per batch; nothing was written")]
    BatchTooLarge {
        /// Positions in the batch.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// The position lies outside every service area, so no city can hold the driver.
    #[error("the point ({lat}, {lon}) lies outside every service area")]
    OutsideServiceArea {
        /// Latitude of the position.
        lat: f64,
        /// Longitude of the position.
        lon: f64,
    },
    /// `recorded_at` lies further ahead of Redis' clock than `max_clock_skew_ms`.
    #[error("recorded_at: {}", ahead_of_clock(*sent_ms, *now_ms, *max_skew_ms))]
    FuturePosition {
        /// `recorded_at` as sent (epoch ms).
        sent_ms: i64,
        /// Redis' clock when the script ran (epoch ms).
        now_ms: i64,
        /// The allowed skew.
        max_skew_ms: u64,
    },
    /// The directory knows no such driver.
    #[error("driver {0} does not exist")]
    DriverNotFound(DriverId),
    /// The position is older than the one stored for the driver.
    #[error(
        "recorded_at {} is older than the stored position of driver {driver} ({}); nothing was written",
        rfc3339_ms(*sent_ms),
        rfc3339_ms(*stored_ms)
    )]
    StalePosition {
        /// The driver.
        driver: DriverId,
        /// `recorded_at` as sent (epoch ms).
        sent_ms: i64,
        /// `recorded_at` of the stored position (epoch ms).
        stored_ms: i64,
    },
    /// The driver is busy with an order: only dispatch changes its status.
    #[error("driver {0} is busy with an order; its status is changed by dispatch")]
    StatusOwnedByDispatch(DriverId),
    /// The driver holds an order, so it cannot be deleted.
    #[error("driver {0} holds an order; cancel or finish it first; nothing was deleted")]
    HoldsOrder(DriverId),
    /// Concurrent updates kept moving the driver between cities; the caller may retry.
    #[error(
        "driver {0} is being moved between cities by concurrent updates; nothing was written, retry"
    )]
    MoveContended(DriverId),
    /// A Redis command failed; `context` names the step.
    #[error("redis failed ({context})")]
    Redis {
        /// The step that failed.
        context: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// Anything unexpected: an undecodable reply or stored state.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DriverError {
    /// Wrap a Redis error of the step `context` (for `map_err`).
    pub(crate) fn redis(context: &'static str) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| DriverError::Redis { context, source }
    }
}

/// Why a `recorded_at` too far in the future is refused (the message of its field error).
pub(crate) fn ahead_of_clock(sent_ms: i64, now_ms: i64, max_skew_ms: u64) -> String {
    format!(
        "is {} ms ahead of the server clock; at most {max_skew_ms} ms is allowed",
        sent_ms - now_ms
    )
}
