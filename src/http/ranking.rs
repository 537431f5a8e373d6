//! Scores, leaderboards, ranks and candidate ranking over [`crate::ranking`], and how a
//! [`RankingError`] is answered.

use actix_web::{HttpResponse, get, post, put, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::http::drivers::path_driver;
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::{JsonBody, QueryParams};
use crate::ranking::{
    self, AroundQuery, Candidates, CandidatesQuery, Leaderboard, PageQuery, RankView, RankingError,
    ScoreIncrement, ScoreUpdate, ScoreView,
};
use crate::search::KnnTuning;
use crate::store::Store;

impl From<RankingError> for ApiError {
    fn from(err: RankingError) -> Self {
        match err {
            RankingError::Validation(errors) => ApiError::Validation(errors),
            err @ (RankingError::DriverNotFound(_)
            | RankingError::NoScore { .. }
            | RankingError::CityNotFound(_)) => ApiError::NotFound(err.to_string()),
            RankingError::City(err) => err.into(),
            RankingError::Search(err) => err.into(),
            RankingError::Driver(err) => err.into(),
            RankingError::Redis { context, source } => redis_error(context)(source),
            RankingError::Internal(err) => ApiError::Internal(err),
        }
    }
}

const DRIVER_PARAM: &str = "1–64 characters of [A-Za-z0-9_-]";

/// Set a driver's score (`mode: set`) or raise it only (`mode: gt`, ZADD GT).
///
/// The score lives in the sorted set of the city the driver is in; it is the leaderboard and an
/// input of candidate ranking.
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    request_body = ScoreUpdate,
    responses(
        (status = 200, description = "The score now", body = ScoreView),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or score", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/score")]
pub(crate) async fn put_score(
    path: web::Path<String>,
    body: JsonBody<ScoreUpdate>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    Ok(HttpResponse::Ok().json(ranking::set_score(&store, &id, &body.0).await?))
}

/// Add to a driver's score (ZINCRBY); answers the new score.
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    request_body = ScoreIncrement,
    responses(
        (status = 200, description = "The new score", body = ScoreView),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or amount", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/drivers/{driver_id}/score/increment")]
pub(crate) async fn increment_score(
    path: web::Path<String>,
    body: JsonBody<ScoreIncrement>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    Ok(HttpResponse::Ok().json(ranking::increment_score(&store, &id, &body.0).await?))
}

/// A city's leaderboard, highest score first, paginated. Ties: among equal scores the driver id
/// that sorts last (byte order) ranks first, as Redis orders them.
#[utoipa::path(
    tag = "ranking",
    params(("city" = String, Path, description = "City id: 1–32 characters of [a-z0-9_-]", pattern = r"^[a-z0-9_-]{1,32}$", min_length = 1, max_length = 32, example = "paris"), PageQuery),
    responses(
        (status = 200, description = "One page of the leaderboard (empty past the end)", body = Leaderboard),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid page or size", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/cities/{city}/leaderboard")]
pub(crate) async fn leaderboard(
    path: web::Path<String>,
    query: QueryParams<PageQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let page = ranking::leaderboard(&store, &settings, &cities, &path, &query.0).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A driver's rank and score on its city's leaderboard, with its neighbours (ZREVRANK +
/// ZREVRANGE, read atomically by one script).
#[utoipa::path(
    tag = "ranking",
    params(("driver_id" = String, Path, description = DRIVER_PARAM, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1"), AroundQuery),
    responses(
        (status = 200, description = "Rank, score and neighbours", body = RankView),
        (status = 404, description = "No such driver, or the driver has no score", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or `around`", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/{driver_id}/rank")]
pub(crate) async fn rank(
    path: web::Path<String>,
    query: QueryParams<AroundQuery>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    Ok(HttpResponse::Ok().json(ranking::rank(&store, &id, &query.0).await?))
}

/// Rank the nearest available drivers by a composite of distance and driver score.
///
/// Takes the `limit × ranking_pool_factor` nearest available, fresh drivers (nearby search),
/// then Redis computes `score_weight × score − distance_weight × km` with sorted sets
/// (ZADD, ZINTERSTORE with WEIGHTS against the score set, ZADD NX for drivers without a
/// score, into a temporary set deleted in the same MULTI/EXEC) and reads it back best first.
/// A driver without a score counts `ranking_unscored_score` (default 4.25), shown as its
/// `driver_score`. Ties: the driver id that sorts last ranks first.
#[utoipa::path(
    tag = "ranking",
    params(CandidatesQuery),
    responses(
        (status = 200, description = "Ranked candidates with distance, score and composite", body = Candidates),
        (status = 422, description = "Invalid parameter, or a point outside every service area", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/candidates")]
pub(crate) async fn candidates(
    query: QueryParams<CandidatesQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
    tuning: web::Data<KnnTuning>,
) -> Result<HttpResponse, ApiError> {
    let answer = ranking::candidates(&store, &settings, &cities, &tuning, &query.0).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Register the ranking routes under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_score)
        .service(increment_score)
        .service(rank)
        .service(leaderboard)
        .service(candidates);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cities::CityError;
    use crate::domain::{DriverId, FieldError};

    fn answer(err: RankingError) -> (u16, String, String) {
        let problem = ApiError::from(err).problem();
        (problem.status, problem.type_, problem.detail)
    }

    #[test]
    fn each_ranking_error_is_answered_with_its_status_code_and_detail() {
        let id = DriverId::parse("drv-1").unwrap();
        let cases = [
            (
                RankingError::Validation(vec![FieldError::new("around", "must be at most 50")]),
                422,
                "validation-error",
                "around: must be at most 50",
            ),
            (
                RankingError::DriverNotFound(id.clone()),
                404,
                "not-found",
                "driver drv-1 does not exist",
            ),
            (
                RankingError::NoScore {
                    driver: id,
                    city: "paris".to_owned(),
                },
                404,
                "not-found",
                "driver drv-1 has no score in paris",
            ),
            (
                RankingError::CityNotFound("atlantis".to_owned()),
                404,
                "not-found",
                "city \"atlantis\" does not exist",
            ),
            (
                RankingError::City(CityError::OutsideServiceArea { lat: 1.0, lon: 2.0 }),
                422,
                "outside-service-area",
                "the point (1, 2) lies outside every service area",
            ),
            (
                RankingError::Driver(crate::drivers::DriverError::MoveContended(
                    crate::domain::DriverId::parse("drv-1").unwrap(),
                )),
                503,
                "unavailable",
                "driver drv-1 is being moved between cities by concurrent updates; nothing was written, retry",
            ),
            (
                RankingError::Internal(anyhow::anyhow!("bad score \"x\"")),
                500,
                "internal-error",
                "an unexpected error occurred; it has been logged with this request's id",
            ),
        ];
        for (err, status, code, detail) in cases {
            let (s, t, d) = answer(err);
            assert_eq!(
                (s, t.as_str(), d.as_str()),
                (status, format!("/problems/{code}").as_str(), detail)
            );
        }
    }
}
