//! Driver ranking with sorted sets: per-city driver scores (set, raise-only, increment)
//! ([`scores`]), the paginated leaderboard and a driver's rank with its neighbours
//! ([`leaderboard`]), and explainable candidate ranking that combines distance (from nearby
//! search) with the driver score ([`candidates`]).
//!
//! Keys: `{prefix}:{city}:scores` (driver → score; the leaderboard). A driver changing city
//! takes its score along (`lua/set_position.lua`). Ties on the leaderboard follow Redis: among
//! equal scores, the driver id that sorts last (byte order) ranks first.

mod candidates;
mod leaderboard;
mod scores;
mod scripts;

pub(crate) use candidates::{Candidates, CandidatesQuery, candidates};
pub(crate) use leaderboard::{AroundQuery, Leaderboard, PageQuery, RankView, leaderboard, rank};
pub(crate) use scores::{ScoreIncrement, ScoreUpdate, ScoreView, increment_score, set_score};

use crate::cities::CityError;
use crate::domain::{DriverId, FieldError};
use crate::search::SearchError;

/// Why a ranking request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RankingError {
    /// A parameter or body field is invalid; every offending field is listed. Nothing was
    /// written.
    #[error("invalid ranking request: {}", FieldError::list(.0))]
    Validation(Vec<FieldError>),
    /// No driver has this id.
    #[error("driver {0} does not exist")]
    DriverNotFound(DriverId),
    /// The driver exists but is not on its city's leaderboard.
    #[error("driver {driver} has no score in {city}")]
    NoScore {
        /// The driver.
        driver: DriverId,
        /// The city it is in.
        city: String,
    },
    /// No service area has this id.
    #[error("city {0:?} does not exist")]
    CityNotFound(String),
    /// The pickup of a candidate ranking lies outside every service area.
    #[error(transparent)]
    City(#[from] CityError),
    /// The nearby search under a candidate ranking failed.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// A function of the drivers capability failed (finding a driver's city, running the score
    /// script there). Its error is kept whole so that it is answered exactly as the drivers
    /// capability's own.
    #[error(transparent)]
    Driver(#[from] crate::drivers::DriverError),
    /// A Redis round trip failed.
    #[error("Redis failed: {context}")]
    Redis {
        /// Which step of the request.
        context: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// A reply that cannot be (a score that is not a number, an unexpected script answer).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The [`RankingError`] of a failed Redis round trip, with the step it happened in.
fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> RankingError {
    move |source| RankingError::Redis { context, source }
}
