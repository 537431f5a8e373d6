//! `GET /v1/drivers/nearby` over [`crate::search`], and how a [`SearchError`] is answered.

use actix_web::{HttpResponse, get, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::QueryParams;
use crate::search::{KnnTuning, NearbyQuery, NearbyResponse, SearchError, search};
use crate::store::Store;

impl From<SearchError> for ApiError {
    fn from(err: SearchError) -> Self {
        match err {
            SearchError::Validation(errors) => ApiError::Validation(errors),
            SearchError::Redis { context, source } => redis_error(context)(source),
            // Logged with the cause chain by the response path, never shown.
            err @ (SearchError::Decode { .. } | SearchError::NotConverged) => {
                ApiError::Internal(err.into())
            }
        }
    }
}

/// Drivers near a point, nearest first, with their distance.
///
/// The city is the one containing the point. Without `status`, every driver that is not
/// offline is searched. Only drivers whose last position is younger than `driver_ttl_ms` are
/// returned. Use `radius_m` for a circle or `width_m` and `height_m` for a box. A search reads
/// at most `search_max_members` drivers' entries; when most drivers around are stale and it
/// reaches that bound first, the answer is `partial` and says how far it looked.
#[utoipa::path(
    tag = "search",
    params(NearbyQuery),
    responses(
        (status = 200, description = "Drivers, nearest first", body = NearbyResponse),
        (status = 422, description = "Invalid or out-of-bounds parameter, or a point outside every service area (`outside-service-area`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/nearby")]
pub(crate) async fn nearby(
    query: QueryParams<NearbyQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
    tuning: web::Data<KnnTuning>,
) -> Result<HttpResponse, ApiError> {
    let search_req = query.0.validate(&settings)?;
    let city = cities.resolve_or_reject(search_req.center)?;
    let found = search(&store, &settings, &tuning, city.id.as_str(), &search_req).await?;
    Ok(HttpResponse::Ok().json(NearbyResponse {
        city: city.id.to_string(),
        drivers: found.drivers,
        partial: found.partial_radius_m.is_some(),
        radius_covered_m: found.partial_radius_m,
    }))
}

/// Register the search route under `/v1` (before the drivers' `/drivers/{driver_id}`, which
/// would take `nearby` for a driver id).
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(nearby);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;

    #[test]
    fn search_errors_are_answered_as_validation_or_a_generic_internal_error() {
        let invalid = ApiError::from(SearchError::Validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )]))
        .problem();
        assert_eq!(
            (
                invalid.status,
                invalid.type_.as_str(),
                invalid.detail.as_str()
            ),
            (
                422,
                "/problems/validation-error",
                "limit: must be between 1 and 100"
            )
        );
        let stuck = ApiError::from(SearchError::NotConverged).problem();
        assert_eq!(
            (stuck.status, stuck.type_.as_str()),
            (500, "/problems/internal-error")
        );
        assert!(!stuck.detail.contains("converge"), "{}", stuck.detail);
    }
}
