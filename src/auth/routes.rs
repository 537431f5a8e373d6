//! Key administration and driver sessions.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{
    Guard, KeyInfo, Principal, Role, create_key, digest, list_keys, new_secret, revoke_key,
};
use crate::domain::DriverId;
use crate::http::error::{ApiError, Problem, redis_error};
use crate::http::extract::JsonBody;

/// The caller as established by the middleware.
pub fn principal(req: &HttpRequest) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}

/// `POST /v1/admin/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "driver", "driver_id": "drv-1", "name": "phone of drv-1"}))]
pub struct NewKey {
    /// `admin`, `dispatcher` or `driver`.
    pub role: Role,
    /// The driver a `driver` key is bound to (required for, and only for, driver keys).
    #[serde(default)]
    pub driver_id: Option<String>,
    /// Free-form label (at most 100 characters).
    #[serde(default)]
    pub name: Option<String>,
}

/// A created key: the secret is shown this once and stored only as its SHA-256.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"key": "gdk_0f6c1d8a9b2e4f7a8c3d5e6f7a8b9c0d", "key_id": "key_3f2a9c1d7e5b4a60", "role": "driver", "driver_id": "drv-1", "name": "phone of drv-1", "created_at": "2026-11-24T10:00:00Z"}))]
pub struct CreatedKey {
    /// The API key: send it as `Authorization: Bearer <key>`.
    pub key: String,
    /// Its metadata.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `GET /v1/admin/keys` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Every key, oldest first (metadata only).
    pub keys: Vec<KeyInfo>,
}

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
pub async fn post_key(
    body: JsonBody<NewKey>,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    let b = body.0;
    let driver = match (b.role, b.driver_id) {
        (Role::Driver, Some(d)) => Some(
            DriverId::parse(&d)
                .map_err(|e| ApiError::field("driver_id", e))?
                .to_string(),
        ),
        (Role::Driver, None) => {
            return Err(ApiError::field(
                "driver_id",
                "a driver key must name its driver",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::field(
                "driver_id",
                "only driver keys are bound to a driver",
            ));
        }
        (_, None) => None,
    };
    let name = b.name.unwrap_or_default();
    if name.chars().count() > 100 {
        return Err(ApiError::field("name", "at most 100 characters"));
    }
    let (key, info) = create_key(&guard.store, b.role, driver, &name).await?;
    Ok(HttpResponse::Created().json(CreatedKey { key, info }))
}

/// List API keys (metadata only; keys are never stored in clear).
#[utoipa::path(tag = "admin", responses((status = 200, description = "Every key", body = KeyList)))]
#[get("/admin/keys")]
pub async fn get_keys(guard: web::Data<Guard>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(KeyList {
        keys: list_keys(&guard.store).await?,
    }))
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
pub async fn delete_key(
    path: web::Path<String>,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    if revoke_key(&guard.store, &guard.cache, &path).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no key {}", path.as_str())))
    }
}

/// A new driver session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"token": "gds_5b1e0c9d8a7f6e5d4c3b2a1908f7e6d5", "driver_id": "drv-1", "expires_at": "2026-11-25T10:00:00Z", "idle_timeout_ms": 1800000}))]
pub struct Session {
    /// The session token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// The driver it acts for.
    pub driver_id: String,
    /// Absolute expiry, however much the session is used.
    pub expires_at: String,
    /// The session ends after this long without use.
    pub idle_timeout_ms: u64,
}

/// Exchange a driver API key for a session token (sliding expiration, absolute maximum age).
#[utoipa::path(
    tag = "sessions",
    responses(
        (status = 201, description = "The session", body = Session),
    ),
)]
#[post("/sessions")]
pub async fn post_session(
    req: HttpRequest,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    let Some(p) = principal(&req) else {
        return Err(ApiError::Forbidden(
            "sessions need authentication to be enabled".to_owned(),
        ));
    };
    if p.session.is_some() {
        return Err(ApiError::Forbidden(
            "a session cannot open another session; use the driver's API key".to_owned(),
        ));
    }
    let driver = p.driver_id.clone().unwrap_or_default();
    let token = new_secret("gds_");
    let s = &guard.settings;
    let now = guard.store.redis_now_ms();
    let expires = now + s.session_max_age_ms as i64;
    let mut conn = guard.store.conn();
    let key = guard.store.keys().session(digest(&token));
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&key)
        .arg("key_id")
        .arg(&p.key_id)
        .arg("role")
        .arg(p.role.as_str())
        .arg("driver")
        .arg(&driver)
        .arg("created")
        .arg(now)
        .arg("expires")
        .arg(expires)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(s.session_idle_ms.min(s.session_max_age_ms))
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(redis_error("create session"))?;
    Ok(HttpResponse::Created().json(Session {
        token,
        driver_id: driver,
        expires_at: crate::domain::rfc3339_ms(expires),
        idle_timeout_ms: s.session_idle_ms,
    }))
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
pub async fn delete_session(
    req: HttpRequest,
    guard: web::Data<Guard>,
) -> Result<HttpResponse, ApiError> {
    let Some(session) = principal(&req).and_then(|p| p.session) else {
        return Err(ApiError::field(
            "Authorization",
            "log out with the session token, not an API key",
        ));
    };
    let mut conn = guard.store.conn();
    let _: i64 = redis::cmd("DEL")
        .arg(guard.store.keys().session(&session))
        .query_async(&mut conn)
        .await
        .map_err(redis_error("delete session"))?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register this module's routes under `/v1`.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(post_key)
        .service(get_keys)
        .service(delete_key)
        .service(post_session)
        .service(delete_session);
}
