//! HTTP handlers of the orders API.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa_actix_web::service_config::ServiceConfig;

use super::engine::{DispatchOutcome, Dispatcher, Transition, TransitionError};
use super::model::{CreateOrder, DispatchResult, Order, TokenBody};
use crate::domain::FieldError;
use crate::domain::{DriverId, OrderId};
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::JsonBody;

const ID_DOC: &str = "1–64 characters of [A-Za-z0-9_-]";

fn path_order(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|e| ApiError::field("order_id", e))
}

/// What an `Idempotency-Key` remembers: the request it was first used with and, once known,
/// the answer given.
#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyRecord {
    body: String,
    order_id: String,
    #[serde(default)]
    response: Option<serde_json::Value>,
}

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
/// `dispatch: queued` appends it to the city's dispatch stream. With an `Idempotency-Key`, a
/// repeat of the same body answers the first answer again; another body with the same key is
/// 422 `idempotency-key-reused`.
#[utoipa::path(
    tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1–255 visible ASCII characters, remembered for `idempotency_ttl_ms`")),
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Created (and, with `dispatch: now`, offered when a driver was found)", body = Order),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order id is taken (`order-exists`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, pickup outside every service area, or an `Idempotency-Key` reused with another body (`idempotency-key-reused`); nothing written", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders")]
pub async fn create_order(
    req: HttpRequest,
    body: JsonBody<CreateOrder>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let idem = idempotency_header(&req)?;
    let gen0 = generation(&dispatcher);
    let mut errors: Vec<FieldError> = Vec::new();
    let id = match &request.order_id {
        Some(raw) => OrderId::parse(raw)
            .map_err(|e| errors.push(FieldError::new("order_id", e)))
            .ok(),
        None => Some(OrderId::generate()),
    };
    let points = request.validate().map_err(|e| errors.extend(e)).ok();
    let (Some(mut id), Some((pickup, dropoff))) = (id, points) else {
        return Err(ApiError::Validation(errors));
    };
    let city = dispatcher
        .cities()
        .resolve_or_reject(pickup)?
        .id
        .to_string();
    let store = dispatcher.store().clone();
    let mut conn = store.conn();
    let canonical = serde_json::to_string(&request).map_err(anyhow::Error::from)?;
    let idem_key = idem.as_deref().map(|k| store.keys().idempotency(k));
    let mut replay = false;
    if let Some(key) = &idem_key {
        let record = IdempotencyRecord {
            body: canonical.clone(),
            order_id: id.to_string(),
            response: None,
        };
        let (set, existing): (Option<String>, String) = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(serde_json::to_string(&record).map_err(anyhow::Error::from)?)
            .arg("NX")
            .arg("PX")
            .arg(dispatcher.settings().idempotency_ttl_ms)
            .cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error("idempotency key"))?;
        if set.is_none() {
            let first: IdempotencyRecord = serde_json::from_str(&existing)
                .map_err(|e| anyhow::anyhow!("undecodable idempotency record: {e}"))?;
            if first.body != canonical {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "was already used with a different request body; nothing was written",
                ));
            }
            if let Some(response) = first.response {
                return Ok(HttpResponse::Created().json(response));
            }
            // The first request did not finish (or is still running): complete it with its id.
            replay = true;
            id = OrderId::parse(&first.order_id)
                .map_err(|e| anyhow::anyhow!("bad order id in idempotency record: {e}"))?;
        }
    }
    let now = request.dispatch == super::DispatchMode::Now;
    let created = if now {
        // Created and locked in one script, then dispatched; a dispatch failure leaves a
        // pending order that the retry timer re-queues.
        dispatcher
            .create_and_dispatch(&id, &city, pickup, dropoff, request.vehicle_type, false)
            .await
            .map(|dispatched| {
                if let Err(err) = dispatched {
                    tracing::warn!(order = %id, error = %err, "dispatch at creation failed; the order waits for a retry");
                }
            })
    } else {
        dispatcher
            .create(
                &id,
                &city,
                pickup,
                dropoff,
                request.vehicle_type,
                request.dispatch,
            )
            .await
    };
    match created {
        Ok(()) => {}
        Err(TransitionError::Exists) if replay => {
            // A repeat of a request that did not finish: complete its dispatch.
            if now && let Err(err) = dispatcher.dispatch_in(&city, id.as_str(), false).await {
                tracing::warn!(order = %id, error = %err, "dispatch of a repeated request failed");
            }
        }
        Err(TransitionError::Exists) => {
            return Err(ApiError::Conflict {
                code: "order-exists",
                detail: format!("order {id} already exists; nothing was written"),
            });
        }
        Err(TransitionError::Api(e)) => return Err(e),
        Err(other) => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "unexpected create outcome {other:?}"
            )));
        }
    }
    let order = dispatcher.load_in(&city, id.as_str()).await?;
    // Confirmed on the replicas before the answer is recorded for replays: a replay of an
    // unconfirmed creation goes through the whole path (and this wait) again.
    replicated(&dispatcher, gen0).await?;
    if let Some(key) = &idem_key {
        let record = IdempotencyRecord {
            body: canonical,
            order_id: id.to_string(),
            response: Some(serde_json::to_value(&order).map_err(anyhow::Error::from)?),
        };
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(serde_json::to_string(&record).map_err(anyhow::Error::from)?)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await
            .map_err(redis_error("idempotency key"))?;
    }
    Ok(HttpResponse::Created().json(order))
}

/// Wait for `redis_wait_replicas` replicas before acknowledging a write made since
/// `generation` ([`crate::store::RedisConn::generation`], read before writing).
async fn replicated(dispatcher: &Dispatcher, generation: u64) -> Result<(), ApiError> {
    let s = dispatcher.settings();
    dispatcher
        .store()
        .wait_replicas(
            s.redis_wait_replicas,
            std::time::Duration::from_millis(s.redis_wait_timeout_ms),
            generation,
        )
        .await?;
    Ok(())
}

/// The current connection generation, read before a handler writes.
fn generation(dispatcher: &Dispatcher) -> u64 {
    dispatcher.store().conn().generation()
}

/// Read an order.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/orders/{order_id}")]
pub async fn get_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    Ok(HttpResponse::Ok().json(dispatcher.load(&id).await?))
}

/// Cancel an order (pending, offered, accepted or picked up); its driver, if any, is freed.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    responses(
        (status = 200, description = "Cancelled", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished (`invalid-transition`); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/cancel")]
pub async fn cancel_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    let gen0 = generation(&dispatcher);
    let order = dispatcher.transition(&id, Transition::Cancel, None).await?;
    replicated(&dispatcher, gen0).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// Dispatch a pending order now.
///
/// Takes the order's lock (never waits for it), ranks the nearest available drivers by
/// distance and score, and offers the order to the best one still available, checked and
/// written in one script together with the lock token and the fencing number.
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    responses(
        (status = 200, description = "Offered to a driver", body = DispatchResult),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no-driver-available` (the order stays pending), `dispatch-in-progress` (another dispatch holds the order's lock) or `order-not-pending`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order id", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/dispatch")]
pub async fn dispatch_order(
    path: web::Path<String>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let id = path_order(&path)?;
    let gen0 = generation(&dispatcher);
    match dispatcher.dispatch(&id).await? {
        DispatchOutcome::Offered(result) => {
            replicated(&dispatcher, gen0).await?;
            Ok(HttpResponse::Ok().json(result))
        }
        DispatchOutcome::NoDriver => Err(ApiError::Conflict {
            code: "no-driver-available",
            detail: format!(
                "no available driver within {} m of the pickup of order {id}; it stays pending",
                dispatcher.settings().dispatch_radius_m
            ),
        }),
        DispatchOutcome::Locked => Err(ApiError::Conflict {
            code: "dispatch-in-progress",
            detail: format!("another dispatch of order {id} is running"),
        }),
        DispatchOutcome::NotPending(state) => Err(ApiError::Conflict {
            code: "order-not-pending",
            detail: format!("order {id} is {state}, not pending; nothing was changed"),
        }),
        DispatchOutcome::LockLost => Err(ApiError::Conflict {
            code: "dispatch-in-progress",
            detail: format!(
                "the dispatch of order {id} lost its lock to another dispatch; nothing was changed"
            ),
        }),
    }
}

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
    let gen0 = generation(&dispatcher);
    let order = dispatcher
        .transition(
            &id,
            transition,
            Some((driver.as_str(), body.0.fencing_token)),
        )
        .await?;
    replicated(&dispatcher, gen0).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The offered driver accepts the order.
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Accepted, or this driver's accept with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` (not this driver's current offer), `offer-expired`, or `invalid-transition` (the order is not offered, e.g. it was picked up since); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/accept")]
pub async fn accept(
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
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Rejected; the order is pending again. Also a repeat of this rejection while the order is still pending after it (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` or `invalid-transition`; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/reject")]
pub async fn reject(
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
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Picked up, or this driver's pickup with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` or `invalid-transition`; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/pickup")]
pub async fn pickup_order(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Pickup).await
}

/// The driver delivered the order: the driver is available again and its score rises by
/// `score_per_delivery`.
///
/// Idempotent: repeating the answer that produced the order's current state (the same driver,
/// fencing token and step, e.g. a retry after a lost reply) is answered 200 with the order as
/// it is and writes nothing (no event, no score or timer change).
#[utoipa::path(
    tag = "orders",
    params(("order_id" = String, Path, description = ID_DOC, example = "ord-1001")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "Delivered, or this driver's delivery with this token repeated (answered without effect)", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stale-fencing-token` or `invalid-transition`; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/orders/{order_id}/deliver")]
pub async fn deliver(
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<TokenBody>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    answer(req, path, body, dispatcher, Transition::Deliver).await
}

/// Register this module's routes under `/v1`.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_order)
        .service(get_order)
        .service(cancel_order)
        .service(dispatch_order)
        .service(accept)
        .service(reject)
        .service(pickup_order)
        .service(deliver);
}
