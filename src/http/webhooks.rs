//! Webhook administration (`/v1/admin/webhooks`, admin role): register, list, change and
//! delete endpoints; list an endpoint's delivery attempts and send one message again.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::{JsonBody, QueryParams};
use crate::webhooks::endpoints::{
    CreatedEndpoint, Endpoint, EndpointList, EndpointPatch, NewEndpoint,
};
use crate::webhooks::log::{DeliveryList, MAX_LIST, RetryQueued};
use crate::webhooks::{WebhookError, Webhooks};

impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Validation(fields) => ApiError::Validation(fields),
            WebhookError::NotFound(id) => {
                ApiError::NotFound(format!("no webhook endpoint or delivery {id}"))
            }
            WebhookError::BacklogFull(id) => ApiError::Conflict {
                code: "webhook-backlog-full",
                detail: format!(
                    "the backlog of webhook endpoint {id} is full (webhook_max_backlog)"
                ),
            },
            WebhookError::NotConfigured => ApiError::Conflict {
                code: "webhooks-not-configured",
                detail: "webhooks need the webhook_signing_key setting".to_owned(),
            },
            WebhookError::Redis { context, source } => redis_error(context)(source),
        }
    }
}

/// Register a webhook endpoint.
#[utoipa::path(
    tag = "webhooks",
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Created; the signing secret is shown only now", body = CreatedEndpoint),
        (status = 409, description = "`webhook_signing_key` is not set (`/problems/webhooks-not-configured`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL (scheme, credentials, internal or unresolvable host), event type or description", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/admin/webhooks")]
pub(crate) async fn post_webhook(
    body: JsonBody<NewEndpoint>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(hooks.create(body.0).await?))
}

/// List webhook endpoints (never their secrets).
#[utoipa::path(tag = "webhooks", responses((status = 200, description = "Every endpoint", body = EndpointList)))]
#[get("/admin/webhooks")]
pub(crate) async fn get_webhooks(hooks: web::Data<Webhooks>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks.list().await?))
}

/// One webhook endpoint.
#[utoipa::path(
    tag = "webhooks",
    params(("webhook_id" = String, Path, example = "wh_3f2a9c1d7e5b4a60")),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/admin/webhooks/{webhook_id}")]
pub(crate) async fn get_webhook(
    path: web::Path<String>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks.get(&path).await?))
}

/// Enable or disable an endpoint, or change its event types.
#[utoipa::path(
    tag = "webhooks",
    params(("webhook_id" = String, Path, example = "wh_3f2a9c1d7e5b4a60")),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The endpoint as changed", body = Endpoint),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event type", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[patch("/admin/webhooks/{webhook_id}")]
pub(crate) async fn patch_webhook(
    path: web::Path<String>,
    body: JsonBody<EndpointPatch>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks.patch(&path, body.0).await?))
}

/// Delete an endpoint, its backlog and its delivery log.
#[utoipa::path(
    tag = "webhooks",
    params(("webhook_id" = String, Path, example = "wh_3f2a9c1d7e5b4a60")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/admin/webhooks/{webhook_id}")]
pub(crate) async fn delete_webhook(
    path: web::Path<String>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    hooks.delete(&path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /v1/admin/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// Most attempts to return, newest first (default 50).
    #[param(minimum = 1, maximum = 1000, example = 50)]
    pub(crate) limit: Option<usize>,
}

/// An endpoint's recent delivery attempts (status, latency, response code, next retry).
#[utoipa::path(
    tag = "webhooks",
    params(("webhook_id" = String, Path, example = "wh_3f2a9c1d7e5b4a60"), DeliveriesQuery),
    responses(
        (status = 200, description = "Recent attempts, newest first", body = DeliveryList),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` outside 1..=1000", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/admin/webhooks/{webhook_id}/deliveries")]
pub(crate) async fn get_deliveries(
    path: web::Path<String>,
    query: QueryParams<DeliveriesQuery>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.0.limit.unwrap_or(50);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIST}"),
        ));
    }
    Ok(HttpResponse::Ok().json(hooks.deliveries(&path, limit).await?))
}

/// Send one message again (from the endpoint's log): it is queued behind the messages already
/// waiting in its lane.
#[utoipa::path(
    tag = "webhooks",
    params(
        ("webhook_id" = String, Path, example = "wh_3f2a9c1d7e5b4a60"),
        ("delivery_id" = String, Path, description = "The message's `webhook-id`", example = "evt_paris_1795458600310-0"),
    ),
    responses(
        (status = 202, description = "Queued", body = RetryQueued),
        (status = 404, description = "No such endpoint, or no such message in its log", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint's backlog is full (`/problems/webhook-backlog-full`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")]
pub(crate) async fn retry_delivery(
    path: web::Path<(String, String)>,
    hooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery) = path.into_inner();
    Ok(HttpResponse::Accepted().json(hooks.retry(&id, &delivery).await?))
}

/// Register the webhook administration routes under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(post_webhook)
        .service(get_webhooks)
        .service(get_webhook)
        .service(patch_webhook)
        .service(delete_webhook)
        .service(get_deliveries)
        .service(retry_delivery);
}
