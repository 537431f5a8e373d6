//! The drivers API: positions (one or a batch), a driver's state, its shift status, deletion.
//! Each handler extracts, calls [`crate::drivers`] and maps the answer; [`DriverError`]s become
//! problem+json here.

use actix_web::{HttpResponse, delete, get, post, put, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::DriverId;
use crate::drivers::{
    BatchItem, BatchRequest, BatchResponse, DriverError, DriverState, LocationUpdate, StatusUpdate,
    ahead_of_clock, parse_driver_id,
};
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::{JsonBody, parse_json_value};
use crate::store::Store;

impl From<DriverError> for ApiError {
    fn from(err: DriverError) -> Self {
        match err {
            DriverError::Validation(errors) => ApiError::Validation(errors),
            DriverError::BatchTooLarge { .. } => ApiError::field("positions", err.to_string()),
            DriverError::OutsideServiceArea { lat, lon } => {
                ApiError::OutsideServiceArea { lat, lon }
            }
            DriverError::FuturePosition {
                sent_ms,
                now_ms,
                max_skew_ms,
            } => ApiError::field("recorded_at", ahead_of_clock(sent_ms, now_ms, max_skew_ms)),
            DriverError::DriverNotFound(_) => ApiError::NotFound(err.to_string()),
            DriverError::StalePosition { .. } => ApiError::Conflict {
                code: "stale-position",
                detail: err.to_string(),
            },
            DriverError::StatusOwnedByDispatch(_) | DriverError::HoldsOrder(_) => {
                ApiError::Conflict {
                    code: "driver-busy",
                    detail: err.to_string(),
                }
            }
            DriverError::MoveContended(_) => ApiError::Unavailable(err.to_string()),
            DriverError::Redis { context, source } => redis_error(context)(source),
            DriverError::Internal(err) => ApiError::Internal(err),
        }
    }
}

/// The driver id of a `/drivers/{driver_id}…` path, or the validation error naming
/// `driver_id`.
pub(crate) fn path_driver(raw: &str) -> Result<DriverId, ApiError> {
    parse_driver_id(raw, "driver_id").map_err(|e| ApiError::Validation(vec![e]))
}

/// Store a driver's position (and optionally vehicle type and shift status).
///
/// One Lua script checks the stored `recorded_at` and updates the GEO index of the driver's
/// status, the driver's state and the last-seen index together.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    request_body = LocationUpdate,
    responses(
        (status = 200, description = "Stored; the driver's new state", body = DriverState),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Older than the stored position (`stale-position`); nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, `recorded_at` too far in the future, or a point outside every service area (`outside-service-area`); nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/location")]
pub(crate) async fn put_location(
    path: web::Path<String>,
    body: JsonBody<LocationUpdate>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let state = crate::drivers::update_position(&store, &settings, &cities, &id, &body.0).await?;
    Ok(HttpResponse::Ok().json(state))
}

/// Store many positions in one call.
///
/// Each item is validated on its own (a bad item is `invalid` and never blocks the others);
/// valid items go to Redis in one pipeline of `set_position` scripts, in input order, so a
/// batch costs one round trip (plus one per driver that changed city). A batch over the limit
/// is rejected whole and writes nothing.
#[utoipa::path(
    tag = "drivers",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per position, in input order", body = BatchResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "More positions than `batch_max_positions`, or not a `{positions: [...]}` object; nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/locations/batch")]
pub(crate) async fn post_batch(
    body: JsonBody<BatchRequest>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    // Items are decoded one by one (lazily, so an oversized batch costs no decoding), each
    // error naming its field from the item's root.
    let items = body.0.positions.into_iter().map(|item| BatchItem {
        driver_id: item
            .get("driver_id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned(),
        position: parse_json_value(item),
    });
    let response: BatchResponse =
        crate::drivers::store_batch(&store, &settings, &cities, items).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// A driver's state: city, status, last position, when it was recorded and its age.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    responses(
        (status = 200, description = "The driver's state", body = DriverState),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/{driver_id}")]
pub(crate) async fn get_driver(
    path: web::Path<String>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    match crate::drivers::load_driver(&store, &settings, &id).await? {
        Some(state) => Ok(HttpResponse::Ok().json(state)),
        None => Err(DriverError::DriverNotFound(id).into()),
    }
}

/// Set a driver's shift status: `available` or `offline`.
///
/// A driver holding an order (`busy`) cannot change its status (409 `driver-busy`); dispatch
/// frees it. A driver that stopped reporting is not re-indexed until its next position.
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    request_body = StatusUpdate,
    responses(
        (status = 200, description = "The driver's new state", body = DriverState),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The driver is busy with an order (`driver-busy`); nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id or status (`busy` is set by dispatch only)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[put("/drivers/{driver_id}/status")]
pub(crate) async fn put_status(
    path: web::Path<String>,
    body: JsonBody<StatusUpdate>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    let state = crate::drivers::set_status(&store, &settings, &id, body.0.status).await?;
    Ok(HttpResponse::Ok().json(state))
}

/// Remove a driver from every index and forget its state (not while it holds an order).
#[utoipa::path(
    tag = "drivers",
    params(("driver_id" = String, Path, description = "1–64 characters of [A-Za-z0-9_-]", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "drv-1")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such driver", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The driver holds an order (`driver-busy`); nothing deleted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid driver id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/drivers/{driver_id}")]
pub(crate) async fn delete_driver(
    path: web::Path<String>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path_driver(&path)?;
    crate::drivers::delete_driver(&store, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register the drivers routes under `/v1` (after the search routes, so that
/// `/drivers/nearby` is not taken for a driver id).
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(put_location)
        .service(post_batch)
        .service(get_driver)
        .service(put_status)
        .service(delete_driver);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;

    fn problem(err: DriverError) -> (u16, String, String, Vec<FieldError>) {
        let p = ApiError::from(err).problem();
        (p.status, p.type_, p.detail, p.errors)
    }

    #[test]
    fn a_future_position_is_a_validation_error_of_recorded_at() {
        let (status, type_, detail, errors) = problem(DriverError::FuturePosition {
            sent_ms: 10_500,
            now_ms: 10_000,
            max_skew_ms: 300,
        });
        assert_eq!(status, 422);
        assert_eq!(type_, "/problems/validation-error");
        let message = "is 500 ms ahead of the server clock; at most 300 ms is allowed";
        assert_eq!(detail, format!("recorded_at: {message}"));
        assert_eq!(errors, [FieldError::new("recorded_at", message)]);
    }

    #[test]
    fn a_busy_driver_is_a_driver_busy_conflict_whatever_was_refused() {
        let id = DriverId::parse("drv-1").unwrap();
        for err in [
            DriverError::StatusOwnedByDispatch(id.clone()),
            DriverError::HoldsOrder(id.clone()),
        ] {
            let (status, type_, _, _) = problem(err);
            assert_eq!((status, type_.as_str()), (409, "/problems/driver-busy"));
        }
    }

    #[test]
    fn an_oversized_batch_names_the_positions_field() {
        let (status, _, detail, errors) = problem(DriverError::BatchTooLarge { count: 3, max: 2 });
        assert_eq!(status, 422);
        let message = "3 positions exceed the limit of 2 per batch; nothing was written";
        assert_eq!(detail, format!("positions: {message}"));
        assert_eq!(errors, [FieldError::new("positions", message)]);
    }
}
