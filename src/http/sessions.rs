//! Driver sessions (`/v1/sessions`): exchange a driver key for a session token, and log out.

use actix_web::{HttpRequest, HttpResponse, delete, post, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{Session, close_session, open_session};
use crate::http::auth::{Guard, principal};
use crate::http::error::{ApiError, Problem};

/// Exchange a driver API key for a session token (sliding expiration, absolute maximum age).
#[utoipa::path(
    tag = "sessions",
    responses(
        (status = 201, description = "The session", body = Session),
    ),
)]
#[post("/sessions")]
pub(crate) async fn post_session(
    req: HttpRequest,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    let session = open_session(&guard.store, &guard.settings, principal(&req).as_ref()).await?;
    Ok(HttpResponse::Created().json(session))
}

/// Log out: end the session whose token authenticates this request.
#[utoipa::path(
    tag = "sessions",
    responses(
        (status = 204, description = "The session is gone"),
        (status = 422, description = "The request was not made with a session token", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[delete("/sessions/current")]
pub(crate) async fn delete_session(
    req: HttpRequest,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    close_session(&guard.store, principal(&req).as_ref()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register the session routes under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(post_session).service(delete_session);
}
