//! Key administration (`/v1/admin/keys`, admin role): create, list and revoke API keys.

use actix_web::{HttpResponse, delete, get, post, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{CreatedKey, KeyList, NewKey, issue_key, list_keys, revoke_key};
use crate::http::auth::Guard;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::JsonBody;

/// Create an API key.
#[utoipa::path(
    tag = "admin",
    request_body = NewKey,
    responses(
        (status = 201, description = "Created; the key is shown only now", body = CreatedKey),
        (status = 422, description = "Invalid role or driver binding", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[post("/admin/keys")]
pub(crate) async fn post_key(
    body: JsonBody<NewKey>,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    let created = issue_key(&guard.store, body.0).await?;
    Ok(HttpResponse::Created().json(created))
}

/// List API keys (metadata only; keys are never stored in clear).
#[utoipa::path(tag = "admin", responses((status = 200, description = "Every key", body = KeyList)))]
#[get("/admin/keys")]
pub(crate) async fn get_keys(guard: web::Data<Guard>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_keys(&guard.store).await?))
}

/// Revoke an API key; its sessions stop working at their next use. Other instances may accept
/// the key for up to `auth_cache_ms` more.
#[utoipa::path(
    tag = "admin",
    params(("key_id" = String, Path, example = "key_3f2a9c1d7e5b4a60")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/admin/keys/{key_id}")]
pub(crate) async fn delete_key(
    path: web::Path<String>,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    revoke_key(&guard.store, &guard.cache, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register the key administration routes under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(post_key).service(get_keys).service(delete_key);
}
