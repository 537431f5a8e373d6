//! `GET /v1/cities` and `POST /v1/cities/resolve` over [`crate::cities`], and how a
//! [`CityError`] is answered.

use actix_web::{HttpResponse, get, post, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::{CityError, CityIndex, CityList, ResolveRequest, ResolveResponse};
use crate::domain::GeoPoint;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::JsonBody;

impl From<CityError> for ApiError {
    fn from(err: CityError) -> Self {
        match err {
            CityError::OutsideServiceArea { lat, lon } => ApiError::OutsideServiceArea { lat, lon },
        }
    }
}

/// List the service areas with their bounding boxes.
#[utoipa::path(
    tag = "cities",
    responses((status = 200, description = "Every service area", body = CityList)),
)]
#[get("/cities")]
pub(crate) async fn list_cities(cities: web::Data<CityIndex>) -> HttpResponse {
    HttpResponse::Ok().json(CityList::from(cities.get_ref()))
}

/// Resolve a point to the service area that contains it.
#[utoipa::path(
    tag = "cities",
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "The city containing the point", body = ResolveResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid coordinates, unknown field, or a point outside every service area (`outside-service-area`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/cities/resolve")]
pub(crate) async fn resolve_city(
    cities: web::Data<CityIndex>,
    body: JsonBody<ResolveRequest>,
) -> Result<HttpResponse, ApiError> {
    let point = GeoPoint::parse(body.0.lat, body.0.lon, "").map_err(ApiError::Validation)?;
    let city = cities.resolve_or_reject(point)?;
    Ok(HttpResponse::Ok().json(ResolveResponse {
        city: city.id.to_string(),
    }))
}

/// Register the cities routes under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_cities).service(resolve_city);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_outside_every_service_area_is_answered_as_before() {
        let problem = ApiError::from(CityError::OutsideServiceArea {
            lat: 1.5,
            lon: -2.25,
        })
        .problem();
        assert_eq!(problem.type_, "/problems/outside-service-area");
        assert_eq!(problem.status, 422);
        assert_eq!(
            problem.detail,
            "the point (1.5, -2.25) lies outside every service area"
        );
        assert_eq!(problem.errors.len(), 2);
    }
}
