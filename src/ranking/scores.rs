//! Writing a driver's score: set, raise only (ZADD GT) or increment, in the sorted set of the
//! city the driver is in (`lua/set_score.lua`, run in the driver's city and following it if it
//! moves meanwhile).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::RankingError;
use super::scripts::{ScoreOp, SetScoreArgs, SetScoreReply};
use crate::domain::{DriverId, FieldError};
use crate::store::scripts::SET_SCORE;
use crate::store::{Keys, Store};

/// How a score is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScoreMode {
    /// Replace the score.
    #[default]
    Set,
    /// Only raise it (ZADD GT): a lower score is ignored.
    Gt,
}

/// `PUT /v1/drivers/{driver_id}/score` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"score": 4.8, "mode": "gt"}))]
pub(crate) struct ScoreUpdate {
    /// The score: a finite number below 1e15 in magnitude.
    #[schema(exclusive_minimum = -1e15, exclusive_maximum = 1e15)]
    pub(crate) score: f64,
    /// `set` (default) or `gt` (only raise).
    #[serde(default)]
    pub(crate) mode: ScoreMode,
}

/// `POST /v1/drivers/{driver_id}/score/increment` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"by": 0.1}))]
pub(crate) struct ScoreIncrement {
    /// Amount to add (negative subtracts): a finite number below 1e15 in magnitude.
    #[schema(exclusive_minimum = -1e15, exclusive_maximum = 1e15)]
    pub(crate) by: f64,
}

/// A driver's score after a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"driver_id": "drv-1", "city": "paris", "score": 4.8, "changed": true}))]
pub(crate) struct ScoreView {
    /// Driver id.
    pub(crate) driver_id: String,
    /// City whose leaderboard holds the score.
    pub(crate) city: String,
    /// The score now.
    pub(crate) score: f64,
    /// Whether this call changed it (false when `gt` met a higher score).
    pub(crate) changed: bool,
}

/// Scores are kept finite and below 1e15 so that a composite of them (in micro-points) stays an
/// exact double.
fn finite(field: &str, v: f64) -> Result<f64, RankingError> {
    if v.is_finite() && v.abs() < 1e15 {
        Ok(v)
    } else {
        Err(RankingError::Validation(vec![FieldError::new(
            field,
            "must be a finite number below 1e15 in magnitude",
        )]))
    }
}

/// Set a driver's score, or only raise it (`mode: gt`).
pub(crate) async fn set_score(
    store: &Store,
    id: &DriverId,
    update: &ScoreUpdate,
) -> Result<ScoreView, RankingError> {
    let score = finite("score", update.score)?;
    let op = match update.mode {
        ScoreMode::Set => ScoreOp::Set,
        ScoreMode::Gt => ScoreOp::Gt,
    };
    write_score(store, id, SetScoreArgs { op, value: score }).await
}

/// Add to a driver's score (ZINCRBY; a negative amount subtracts).
pub(crate) async fn increment_score(
    store: &Store,
    id: &DriverId,
    increment: &ScoreIncrement,
) -> Result<ScoreView, RankingError> {
    let by = finite("by", increment.by)?;
    let args = SetScoreArgs {
        op: ScoreOp::Incr,
        value: by,
    };
    write_score(store, id, args).await
}

async fn write_score(
    store: &Store,
    id: &DriverId,
    args: SetScoreArgs,
) -> Result<ScoreView, RankingError> {
    let argv = args.argv();
    let extra_args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (city, reply) =
        crate::drivers::run_on_driver_city(store, &SET_SCORE, Keys::score_script, id, &extra_args)
            .await?
            .ok_or_else(|| RankingError::DriverNotFound(id.clone()))?;
    match SetScoreReply::decode(&reply)? {
        SetScoreReply::Ok { score, changed } => Ok(ScoreView {
            driver_id: id.to_string(),
            city,
            score,
            changed,
        }),
        // run_on_driver_city follows a driver that moved and answers `None` when it has no
        // city any more, so this only comes back if the driver vanished mid-call.
        SetScoreReply::Missing => Err(RankingError::DriverNotFound(id.clone())),
    }
}
