//! `/healthz` (the process is up) and `/readyz` (Redis answers and every script is loaded).

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, Problem};
use crate::store::Store;

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub(crate) struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    pub(crate) status: &'static str,
}

/// Liveness: answers 200 while the process serves HTTP, whatever the state of Redis.
#[utoipa::path(tag = "health", responses((status = 200, description = "The process is up", body = Health)))]
#[get("/healthz")]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: 200 when Redis answers and every Lua script is loaded (missing ones are loaded on
/// the way), else 503 problem+json. Load balancers should route on this.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "Redis is unreachable or scripts could not be loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub(crate) async fn readyz(store: web::Data<Store>) -> Result<HttpResponse, ApiError> {
    match store.check_ready().await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health { status: "ready" })),
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), "not ready");
            Err(ApiError::Unavailable(
                "Redis is not reachable or not ready".to_owned(),
            ))
        }
    }
}
