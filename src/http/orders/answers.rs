//! A driver's answers to an offer: accept, reject, pickup and deliver, each with the driver id
//! and the fencing token the offer carried.

use actix_web::{HttpRequest, HttpResponse, post, web};

use super::{ID_DOC, path_order};
use crate::dispatch::{Dispatcher, Order, TokenBody, Transition};
use crate::domain::DriverId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::JsonBody;

/// Apply `transition` as the answer of the driver named in the body.
async fn answer(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
    transition: Transition,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    let driver = DriverId::parse(&body.0.driver_id).map_err(|e| ApiError::field("driver_id", e))?;
    // A driver key answers only its own offers (403 before anything is read or written).
    if let Some(p) = crate::http::auth::principal(&req) {
        p.check_driver(driver.as_str())?;
    }
    let order: Order = dispatcher
        .answer_offer(&id, transition, &driver, body.0.fencing_token)
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The offered driver accepts the order.
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Accepted, or this driver's accept with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` (not this driver's current offer), `offer-expired`, or `invalid-transition` (the order is not offered, e.g. it was picked up since); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/accept")]
pub(crate) async fn accept(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Accept).await
}

/// The offered driver declines: it is freed and never offered this order again; the order is
/// dispatched again at once.
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Rejected; the order is pending again. Also a repeat of this rejection while the order is still pending after it (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` or `invalid-transition`; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/reject")]
pub(crate) async fn reject(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Reject).await
}

/// The driver picked the order up.
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Picked up, or this driver's pickup with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` or `invalid-transition`; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/pickup")]
pub(crate) async fn pickup_order(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Pickup).await
}

/// The driver delivered the order: the driver is available again and its score rises by
/// `score_per_delivery`. With `require_arrival_for_delivery`, an order with a drop-off is
/// delivered only after the driver's arrival there was detected (409 `not-arrived` before).
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Delivered, or this driver's delivery with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token`, `invalid-transition`, or `not-arrived` (with `require_arrival_for_delivery`: no arrival of the driver at the drop-off was detected yet); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/deliver")]
pub(crate) async fn deliver(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Deliver).await
}
