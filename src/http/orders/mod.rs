//! The orders API: create, read, cancel and dispatch orders here, the driver's answers to an
//! offer in [`answers`]. Each handler reads the request, calls the dispatch capability
//! ([`crate::dispatch::Dispatcher`]) and answers; [`DispatchError`]s become problem+json here.

mod answers;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::dispatch::{
    CreateOrder, CreatedOrder, DispatchError, DispatchResult, Dispatcher, Order,
};
use crate::domain::OrderId;
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::JsonBody;

const ID_DOC: &str = "1–64 characters of [A-Za-z0-9_-]";

/// The order id of a path.
fn path_order(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|e| ApiError::field("order_id", e))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Create an order.
///
/// The pickup decides the city. `dispatch: now` (default) dispatches in this request: the
/// answer already shows the offer when a driver was found, otherwise the order stays `pending`
/// and the queue workers retry it every `dispatch_retry_ms` until `dispatch_max_attempts`.
/// `dispatch: queued` appends it to the city's dispatch stream. Under `dispatch_policy =
/// batched`, both answer the order `pending`: it waits in its city's matching pool and a round
/// (every `match_interval_ms`) offers it, timed to its `ready_at`. With an `Idempotency-Key`, a
/// repeat of the same body answers the first answer again; another body with the same key is
/// a 422 `validation-error` naming the `Idempotency-Key` field.
#[utoipa::path(
    tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1–255 visible ASCII characters, remembered for `idempotency_ttl_ms`")),
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Created (and, with `dispatch: now`, offered when a driver was found)", body = Order),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order id is taken (`order-exists`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, pickup outside every service area, or an `Idempotency-Key` reused with another body (a `validation-error` naming `Idempotency-Key`); nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders")]
pub(crate) async fn create_order(
    req: HttpRequest,
    body: JsonBody<CreateOrder>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let idempotency_key = idempotency_header(&req)?;
    let answer = match dispatcher
        .create_order(body.0, idempotency_key.as_deref())
        .await?
    {
        CreatedOrder::New(order) => HttpResponse::Created().json(order),
        CreatedOrder::Replayed(first) => HttpResponse::Created().json(first),
    };
    Ok(answer)
}

/// Read an order.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/orders/{order_id}")]
pub(crate) async fn get_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    Ok(HttpResponse::Ok().json(dispatcher.load(&id).await?))
}

/// Cancel an order (pending, offered, accepted or picked up); its driver, if any, is freed.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    responses(
        (status = 200, description = "Cancelled", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished (`invalid-transition`); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/cancel")]
pub(crate) async fn cancel_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    Ok(HttpResponse::Ok().json(dispatcher.cancel_order(&id).await?))
}

/// Dispatch a pending order now.
///
/// Takes the order's lock (never waits for it), ranks the nearest available drivers by
/// distance and score, and offers the order to the best one still available, checked and
/// written in one script together with the lock token and the fencing number. Under
/// `dispatch_policy = batched` too: it pushes this one order ahead of the next round.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64, example = "ord-1001")),
    responses(
        (status = 200, description = "Offered to a driver", body = DispatchResult),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no-driver-available` (the order stays pending), `dispatch-in-progress` (another dispatch holds the order's lock) or `order-not-pending`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/dispatch")]
pub(crate) async fn dispatch_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    let offered: DispatchResult = dispatcher.dispatch_order(&id).await?;
    Ok(HttpResponse::Ok().json(offered))
}

/// Register the orders routes under `/v1`, in the order actix tries them.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_order)
        .service(get_order)
        .service(cancel_order)
        .service(dispatch_order)
        .service(answers::accept)
        .service(answers::reject)
        .service(answers::pickup_order)
        .service(answers::deliver);
}

/// How each dispatch failure is answered. Conflicts with the order's state are 409 with a code
/// that says which; the detail texts are the errors' own.
impl From<DispatchError> for ApiError {
    fn from(err: DispatchError) -> Self {
        let conflict = |code: &'static str, err: DispatchError| ApiError::Conflict {
            code,
            detail: err.to_string(),
        };
        match err {
            DispatchError::Validation(errors) => ApiError::Validation(errors),
            DispatchError::OutsideServiceArea { lat, lon } => {
                ApiError::OutsideServiceArea { lat, lon }
            }
            DispatchError::IdempotencyKeyReused => ApiError::field(
                "Idempotency-Key",
                "was already used with a different request body; nothing was written",
            ),
            err @ DispatchError::OrderNotFound(_) => ApiError::NotFound(err.to_string()),
            err @ DispatchError::OrderExists(_) => conflict("order-exists", err),
            err @ DispatchError::InvalidTransition { .. } => conflict("invalid-transition", err),
            err @ DispatchError::StaleFencingToken(_) => conflict("stale-fencing-token", err),
            err @ DispatchError::OfferExpired(_) => conflict("offer-expired", err),
            err @ DispatchError::NotArrived(_) => conflict("not-arrived", err),
            err @ DispatchError::NoDriverAvailable { .. } => conflict("no-driver-available", err),
            err @ (DispatchError::DispatchInProgress(_) | DispatchError::LockLost(_)) => {
                conflict("dispatch-in-progress", err)
            }
            err @ DispatchError::OrderNotPending { .. } => conflict("order-not-pending", err),
            err @ DispatchError::LockQuorumLost => ApiError::Unavailable(err.to_string()),
            DispatchError::NotReplicated(err) => err.into(),
            DispatchError::Search(err) => err.into(),
            DispatchError::Redis { context, source } => redis_error(context)(source),
            DispatchError::Internal(err) => ApiError::Internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Transition;
    use crate::domain::FieldError;

    /// The problem body of `err` as JSON, without the request id.
    fn problem(err: DispatchError) -> serde_json::Value {
        serde_json::to_value(ApiError::from(err).problem()).unwrap()
    }

    #[test]
    fn order_conflicts_are_409_with_their_code_and_a_detail_naming_the_order() {
        let cases = [
            (
                DispatchError::OrderExists("o-1".to_owned()),
                "order-exists",
                "order o-1 already exists; nothing was written",
            ),
            (
                DispatchError::InvalidTransition {
                    order: "o-1".to_owned(),
                    state: "delivered".to_owned(),
                    transition: Transition::Cancel,
                },
                "invalid-transition",
                "order o-1 is delivered; cancel needs it pending, offered, accepted or picked_up; nothing was changed",
            ),
            (
                DispatchError::InvalidTransition {
                    order: "o-1".to_owned(),
                    state: "pending".to_owned(),
                    transition: Transition::Pickup,
                },
                "invalid-transition",
                "order o-1 is pending; pickup needs it accepted; nothing was changed",
            ),
            (
                DispatchError::StaleFencingToken("o-1".to_owned()),
                "stale-fencing-token",
                "order o-1 is not currently offered to this driver with this fencing token (a stale, foreign or superseded offer); nothing was changed",
            ),
            (
                DispatchError::OfferExpired("o-1".to_owned()),
                "offer-expired",
                "the offer of order o-1 expired; nothing was changed",
            ),
            (
                DispatchError::NotArrived("o-1".to_owned()),
                "not-arrived",
                "order o-1 cannot be delivered yet: no arrival of its driver at the drop-off was detected (require_arrival_for_delivery); nothing was changed",
            ),
            (
                DispatchError::NoDriverAvailable {
                    order: "o-1".to_owned(),
                    radius_m: 5000.0,
                },
                "no-driver-available",
                "no available driver within 5000 m of the pickup of order o-1; it stays pending",
            ),
            (
                DispatchError::DispatchInProgress("o-1".to_owned()),
                "dispatch-in-progress",
                "another dispatch of order o-1 is running",
            ),
            (
                DispatchError::LockLost("o-1".to_owned()),
                "dispatch-in-progress",
                "the dispatch of order o-1 lost its lock to another dispatch; nothing was changed",
            ),
            (
                DispatchError::OrderNotPending {
                    order: "o-1".to_owned(),
                    state: "cancelled".to_owned(),
                },
                "order-not-pending",
                "order o-1 is cancelled, not pending; nothing was changed",
            ),
        ];
        for (err, code, detail) in cases {
            let p = problem(err);
            assert_eq!(p["status"], 409, "{p}");
            assert_eq!(p["type"], format!("/problems/{code}"), "{p}");
            assert_eq!(p["title"], "Conflict with the current state", "{p}");
            assert_eq!(p["detail"], detail, "{p}");
        }
    }

    #[test]
    fn input_errors_are_422_with_the_offending_fields() {
        let p = problem(DispatchError::Validation(vec![FieldError::new(
            "pickup.lat",
            "must be between -90 and 90",
        )]));
        assert_eq!(p["status"], 422);
        assert_eq!(p["errors"][0]["field"], "pickup.lat");
        let p = problem(DispatchError::IdempotencyKeyReused);
        assert_eq!(p["type"], "/problems/validation-error");
        assert_eq!(
            p["detail"],
            "Idempotency-Key: was already used with a different request body; nothing was written"
        );
        assert_eq!(p["errors"][0]["field"], "Idempotency-Key");
        let p = problem(DispatchError::OutsideServiceArea { lat: 1.0, lon: 2.0 });
        assert_eq!(p["type"], "/problems/outside-service-area");
        assert_eq!(p["errors"][1]["field"], "lon");
    }

    #[test]
    fn a_missing_order_is_404_and_a_lost_quorum_503_with_a_retry_hint() {
        let p = problem(DispatchError::OrderNotFound("o-9".to_owned()));
        assert_eq!(
            (p["status"].as_u64(), p["detail"].as_str()),
            (Some(404), Some("order o-9 does not exist"))
        );
        let p = problem(DispatchError::LockQuorumLost);
        assert_eq!(p["status"], 503);
        assert_eq!(p["retry_after"], 1);
        assert_eq!(
            p["detail"],
            "the dispatch lock service has too few nodes; retry shortly"
        );
    }

    #[test]
    fn unexpected_errors_are_500_without_their_cause() {
        let p = problem(DispatchError::Internal(anyhow::anyhow!(
            "undecodable order o-1: secret"
        )));
        assert_eq!(p["status"], 500);
        assert!(!p["detail"].as_str().unwrap().contains("secret"), "{p}");
    }
}
