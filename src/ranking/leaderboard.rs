//! Reading the leaderboards: a city's page, highest score first, and a driver's rank with its
//! neighbours. Ties follow Redis: among equal scores, the driver id that sorts last (byte
//! order) ranks first.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::scripts::{RankAroundArgs, RankAroundReply};
use super::{RankingError, redis_error};
use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::{DriverId, FieldError};
use crate::store::Store;
use crate::store::scripts::{self, RANK_AROUND, evalsha};

/// One leaderboard line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct RankedDriver {
    /// 1-based rank, highest score first.
    pub(crate) rank: u64,
    /// Driver id.
    pub(crate) driver_id: String,
    /// Score.
    pub(crate) score: f64,
}

/// Leaderboard page query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    pub(crate) page: Option<u64>,
    /// Entries per page (default 10, at most `page_max_size`, 100 by default).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) size: Option<u64>,
}

/// `GET /v1/cities/{city}/leaderboard` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"entries": [{"rank": 1, "driver_id": "drv-7", "score": 4.99}], "page": 1, "size": 10, "total": 2000}))]
pub(crate) struct Leaderboard {
    /// This page's entries, highest score first.
    pub(crate) entries: Vec<RankedDriver>,
    /// Page number.
    pub(crate) page: u64,
    /// Page size.
    pub(crate) size: u64,
    /// Drivers on the leaderboard.
    pub(crate) total: u64,
}

/// Leaderboard lines from a flat `member, score, …` reply whose first line has the 0-based
/// rank `first_rank0`.
fn pairs(flat: &[String], first_rank0: u64) -> Result<Vec<RankedDriver>, RankingError> {
    flat.chunks_exact(2)
        .enumerate()
        .map(|(i, c)| {
            Ok(RankedDriver {
                rank: first_rank0 + i as u64 + 1,
                driver_id: c[0].clone(),
                score: c[1]
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad score {:?}", c[1]))?,
            })
        })
        .collect()
}

/// One page of `city`'s leaderboard.
pub(crate) async fn leaderboard(
    store: &Store,
    settings: &Settings,
    cities: &CityIndex,
    city: &str,
    query: &PageQuery,
) -> Result<Leaderboard, RankingError> {
    let city = cities
        .get(city)
        .ok_or_else(|| RankingError::CityNotFound(city.to_owned()))?;
    let page = query.page.unwrap_or(1);
    let size = query.size.unwrap_or(10);
    let mut errors = Vec::new();
    if page == 0 || page > 1_000_000 {
        errors.push(FieldError::new("page", "must be between 1 and 1000000"));
    }
    if size == 0 || size > settings.page_max_size {
        errors.push(FieldError::new(
            "size",
            format!("must be between 1 and {}", settings.page_max_size),
        ));
    }
    if !errors.is_empty() {
        return Err(RankingError::Validation(errors));
    }
    let start = (page - 1) * size;
    let key = store.keys().scores(city.id.as_str());
    let mut conn = store.conn();
    let (flat, total): (Vec<String>, u64) = redis::pipe()
        .cmd("ZREVRANGE")
        .arg(&key)
        .arg(start)
        .arg(start + size - 1)
        .arg("WITHSCORES")
        .cmd("ZCARD")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(redis_error("leaderboard"))?;
    Ok(Leaderboard {
        entries: pairs(&flat, start)?,
        page,
        size,
        total,
    })
}

/// Rank query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AroundQuery {
    /// Neighbours to show above and below (default 5, at most 50).
    #[param(minimum = 0, maximum = 50)]
    pub(crate) around: Option<u64>,
}

/// `GET /v1/drivers/{driver_id}/rank` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"driver_id": "drv-1", "city": "paris", "rank": 3, "score": 4.9, "neighbors": [
    {"rank": 2, "driver_id": "drv-9", "score": 4.95}, {"rank": 3, "driver_id": "drv-1", "score": 4.9}, {"rank": 4, "driver_id": "drv-4", "score": 4.8}
]}))]
pub(crate) struct RankView {
    /// Driver id.
    pub(crate) driver_id: String,
    /// City of the leaderboard.
    pub(crate) city: String,
    /// 1-based rank.
    pub(crate) rank: u64,
    /// Score.
    pub(crate) score: f64,
    /// The drivers ranked up to `around` places above and below, the driver itself included.
    pub(crate) neighbors: Vec<RankedDriver>,
}

/// A driver's rank, score and neighbours on its city's leaderboard (ZREVRANK + ZREVRANGE, read
/// atomically by one script).
pub(crate) async fn rank(
    store: &Store,
    id: &DriverId,
    query: &AroundQuery,
) -> Result<RankView, RankingError> {
    let around = query.around.unwrap_or(5);
    if around > 50 {
        return Err(RankingError::Validation(vec![FieldError::new(
            "around",
            "must be at most 50",
        )]));
    }
    let city = crate::drivers::load_city(store, id)
        .await?
        .ok_or_else(|| RankingError::DriverNotFound(id.clone()))?;
    let args = RankAroundArgs {
        driver_id: id.as_str(),
        around,
    };
    let cmd = evalsha(&RANK_AROUND, &[store.keys().scores(&city)], &args.argv());
    let mut conn = store.conn();
    let reply: Vec<String> = scripts::run(&mut conn, &RANK_AROUND, &cmd)
        .await
        .map_err(redis_error("rank"))?;
    match RankAroundReply::decode(&reply)? {
        RankAroundReply::Ranked {
            rank0,
            score,
            first_rank0,
            neighbours,
        } => Ok(RankView {
            driver_id: id.to_string(),
            city,
            rank: rank0 + 1,
            score,
            neighbors: neighbours
                .into_iter()
                .zip(first_rank0 + 1..)
                .map(|((driver_id, score), rank)| RankedDriver {
                    rank,
                    driver_id,
                    score,
                })
                .collect(),
        }),
        RankAroundReply::NoScore => Err(RankingError::NoScore {
            driver: id.clone(),
            city,
        }),
    }
}
