//! Driver sessions: a driver key exchanged for a token with sliding expiration and an absolute
//! maximum age. The record holds no secret; `lua/touch_session.lua` extends it on each use
//! (see [`super::authenticate`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AuthError, Principal, digest, new_secret, redis_failed};
use crate::config::Settings;
use crate::store::Store;

/// A new driver session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"token": "gds_5b1e0c9d8a7f6e5d4c3b2a1908f7e6d5", "driver_id": "drv-1", "expires_at": "2026-11-25T10:00:00Z", "idle_timeout_ms": 1800000}))]
pub(crate) struct Session {
    /// The session token: send it as `Authorization: Bearer <token>`.
    pub(crate) token: String,
    /// The driver it acts for.
    pub(crate) driver_id: String,
    /// Absolute expiry, however much the session is used.
    pub(crate) expires_at: String,
    /// The session ends after this long without use.
    pub(crate) idle_timeout_ms: u64,
}

/// Open a session for `caller` (`None` when authentication is disabled, which leaves no key
/// to bind a session to).
pub(crate) async fn open_session(
    store: &Store,
    settings: &Settings,
    caller: Option<&Principal>,
) -> Result<Session, AuthError> {
    let Some(p) = caller else {
        return Err(AuthError::SessionsNeedAuthentication);
    };
    if p.session.is_some() {
        return Err(AuthError::SessionFromSession);
    }
    let driver = p.driver_id.clone().unwrap_or_default();
    let token = new_secret("gds_");
    let now = store.redis_now_ms();
    let expires = now + settings.session_max_age_ms as i64;
    let mut conn = store.conn();
    let key = store.keys().session(digest(&token));
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
        .arg(settings.session_idle_ms.min(settings.session_max_age_ms))
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("create session"))?;
    Ok(Session {
        token,
        driver_id: driver,
        expires_at: crate::domain::rfc3339_ms(expires),
        idle_timeout_ms: settings.session_idle_ms,
    })
}

/// End the session `caller` authenticated with; refused when it used an API key.
pub(crate) async fn close_session(
    store: &Store,
    caller: Option<&Principal>,
) -> Result<(), AuthError> {
    let Some(session) = caller.and_then(|p| p.session.as_deref()) else {
        return Err(AuthError::NotASession);
    };
    let mut conn = store.conn();
    let _: i64 = redis::cmd("DEL")
        .arg(store.keys().session(session))
        .query_async(&mut conn)
        .await
        .map_err(redis_failed("delete session"))?;
    Ok(())
}
